"""The identity-match check: never one person's identity on another person's face.

Two real, freely licensed faces that every clone has: the astronaut (public domain, the
shipped ``demo`` identity was trained on examples/astronaut.mp4) and scikit-image's
``camera()`` cameraman (CC0). No ../shared, no Wav2Lip weights (a stub generator; the check
runs before any lip-sync work).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import (
    OTHER_FACE_BOX,
    StubGenerator,
    make_speech,
    other_person_photo,
    write_png,
)

from ladtalk.errors import InputError
from ladtalk.generation.identity_crops import video_face_crops
from ladtalk.generation.identity_match import (
    ABSOLUTE_THRESHOLD_DB,
    DEFAULT_MARGIN_DB,
    IdentityMatch,
    check_identity,
)
from ladtalk.generation.pipeline import GenerateOptions, Pipeline
from ladtalk.identities.meta import read_meta
from ladtalk.identities.store import SHIPPED_DIR

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DEMO = SHIPPED_DIR / "demo"


@pytest.fixture(scope="module")
def demo():
    from ladtalk.generation.restore import Restorer
    return Restorer.from_identity(DEMO, device="cpu", precision="fp32"), read_meta(DEMO)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("idm")
    return {"other": write_png(d / "cameraman.png", other_person_photo()),
            "speech": make_speech(d / "speech.wav", 0.6)}


def test_demo_identity_matches_its_person_and_not_another(demo, media):
    restorer, meta = demo
    hold = meta["holdout_psnr"]
    own = check_identity(restorer, video_face_crops(EXAMPLES / "astronaut.mp4", 128), meta,
                         identity="demo")
    assert own.frames == 8 and own.reference == "holdout" and own.psnr_holdout == hold
    assert own.threshold == pytest.approx(hold - DEFAULT_MARGIN_DB)
    assert own.matches and own.psnr_input > hold - 1.0
    assert "matches" in own.message()
    # the same person in a new recording (20 % darker): the per-channel gains absorb it
    dark = (video_face_crops(EXAMPLES / "astronaut.png", 128).astype(np.float32) * 0.8)
    assert check_identity(restorer, dark.round().astype(np.uint8), meta).matches

    other = check_identity(restorer, video_face_crops(media["other"], 128, box=OTHER_FACE_BOX),
                           meta, identity="demo", source="cameraman.png")
    assert not other.matches and other.frames == 1
    assert other.psnr_input < own.psnr_input - 4.0
    # the restoration test (generation path: 96 px and back) separates the two as well
    assert own.gain_reference is not None and own.gain_ok and not other.gain_ok
    assert other.gain_input < own.gain_input - 3.0
    msg = other.message()
    for text in (f"{other.psnr_input:.2f} dB", f"{hold:.2f} dB", "does not match",
                 "cameraman.png", "python -m ladtalk enroll --video", "Enroll from this video "
                 "first", "--no-enhance", "none (Wav2Lip only)"):
        assert text in msg, (text, msg)
    d = other.to_json()
    assert d["matches"] is False and d["frames"] == 1 and d["psnr_holdout"] == round(hold, 3)


def test_no_holdout_psnr_falls_back_to_an_absolute_threshold():
    class Identity:  # any object with resolution + restore(uint8 crops) is accepted
        resolution = 32

        def restore(self, crops):
            return np.array(crops, copy=True)

    class Grey(Identity):
        def restore(self, crops):
            return np.full_like(crops, 128)

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    good = check_identity(Identity(), crops, {})
    assert good.matches and good.reference == "absolute" and good.psnr_holdout is None
    bad = check_identity(Grey(), crops, {"holdout_psnr": None})
    assert not bad.matches and bad.threshold == ABSOLUTE_THRESHOLD_DB
    assert "no holdout PSNR" in bad.message() and f"{ABSOLUTE_THRESHOLD_DB:.2f} dB" in bad.message()
    with pytest.raises(ValueError, match="uint8"):
        check_identity(Identity(), crops.astype(np.float32), {})
    # an SOVQAE module works too (wrapped in a Restorer)
    from pipeline_helpers import tiny_sovqae
    res = check_identity(tiny_sovqae(resolution=32), crops, {"holdout_psnr": 30.0})
    assert isinstance(res, IdentityMatch) and res.frames == 3 and res.threshold == 26.0


def test_pipeline_refuses_warns_or_skips(demo, media, tmp_path):
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=8)
    out = tmp_path / "out.mp4"
    opts = dict(identity="demo", box=OTHER_FACE_BOX)
    with pytest.raises(InputError) as err:
        pipe.run(media["other"], media["speech"], out, GenerateOptions(**opts))
    msg = str(err.value)
    assert "identity 'demo' does not match the face in 'cameraman.png'" in msg
    hold = demo[1]["holdout_psnr"]
    assert f"{hold:.2f} dB" in msg and f"{hold - DEFAULT_MARGIN_DB:.2f} dB" in msg
    assert "python -m ladtalk enroll" in msg and "--no-enhance" in msg
    assert not out.exists()  # refused before any output is written

    res = pipe.run(media["other"], media["speech"], out,
                   GenerateOptions(identity_check="warn", **opts))
    assert out.is_file() and res.enhanced
    assert res.identity_match is not None and not res.identity_match.matches
    assert any("does not match" in w for w in res.warnings)

    res = pipe.run(media["other"], media["speech"], tmp_path / "off.mp4",
                   GenerateOptions(identity_check="off", **opts))
    assert res.identity_match is None and res.warnings == []
    with pytest.raises(InputError, match="identity-check"):
        GenerateOptions(identity_check="sometimes").validate()


def test_pipeline_accepts_the_identitys_own_person(media, tmp_path):
    """The check runs on the pipeline's own pass-1 track (dlib) and lets the astronaut
    through with the demo identity (refuse mode, the default)."""
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=8)
    res = pipe.run(EXAMPLES / "astronaut.png", media["speech"], tmp_path / "own.mp4",
                   GenerateOptions(identity="demo", detector="dlib"))
    m = res.identity_match
    assert m is not None and m.matches and m.frames == 1 and m.identity == "demo"
    assert res.warnings == [] and res.timings["identity_check"] > 0


def test_pipeline_check_works_with_a_custom_restorer(media, tmp_path):
    class Flat:  # Pipeline(restorer=...) objects: resolution + restore(uint8 crops)
        resolution = 64

        def restore(self, crops):
            return np.full_like(crops, 90)

    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=8, restorer=Flat())
    with pytest.raises(InputError, match="no holdout PSNR") as err:
        pipe.run(media["other"], media["speech"], tmp_path / "x.mp4",
                 GenerateOptions(identity="my-model", box=OTHER_FACE_BOX))
    assert "identity 'my-model' does not match" in str(err.value)


def test_crop_psnr_is_the_package_psnr():
    """The check's per-crop PSNR is :func:`ladtalk.metrics.image.psnr` on each crop (with an
    optional pixel mask), floored at 120 dB for identical crops."""
    from ladtalk.generation.blend import lower_face_mask
    from ladtalk.generation.identity_match import psnr_uint8
    from ladtalk.metrics.image import psnr
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    got = psnr_uint8(a, b)
    assert got == pytest.approx([psnr(x, y) for x, y in zip(a, b)], abs=1e-9)
    mask = lower_face_mask(32) > 0
    masked = psnr_uint8(a, b, mask)
    assert masked == pytest.approx([psnr(x[mask], y[mask]) for x, y in zip(a, b)], abs=1e-9)
    assert not np.allclose(masked, got)
    assert psnr_uint8(a, a) == pytest.approx([120.0] * 3)
