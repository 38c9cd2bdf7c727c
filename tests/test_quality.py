"""The frame-level W (Wav2Lip proxy) vs L (LaDTalk) quality measure (ladtalk.evaluation.quality)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ladtalk._util.atomic import write_json
from ladtalk.evaluation.quality import measure_quality, region_mask, soften96
from ladtalk.evaluation.quality_report import QualityReport
from ladtalk.face.crop import crop_face, face_region
from ladtalk.generation.fusion import FusionConfig
from ladtalk.media.resample import lipsync_path

ROOT = Path(__file__).resolve().parents[1]


def _frames(n: int = 4, size: int = 288):
    """Frames of the (public-domain) astronaut photo drifting by a pixel per frame, with a
    fixed face box, as ``(frame, box, consecutive)`` items."""
    import cv2
    from skimage import data as skdata
    img = cv2.resize(skdata.astronaut(), (size + 8, size + 8), interpolation=cv2.INTER_AREA)
    box = np.array([80.0, 40.0, 200.0, 170.0])  # x1, y1, x2, y2 around the face
    return [(np.ascontiguousarray(img[i:i + size, i:i + size]), box, i > 0) for i in range(n)]


class _Oracle:
    """A 'restorer' that returns the true face crop (what a perfect identity would do)."""

    resolution = 128

    def __init__(self, frames):
        self.truth = [crop_face(f, face_region(b, (f.shape[1], f.shape[0])), 128)
                      for f, b, _ in frames]
        self.i = -1
        self.fusion = FusionConfig()

    def restore(self, crops, fusion=None):
        # called once per frame and softening, in order: frame i, sigmas...
        return self.truth[self.i][None]


class _Echo:
    """A 'restorer' that gives back its input (no restoration at all)."""

    resolution = 128
    fusion = FusionConfig()

    def restore(self, crops, fusion=None):
        return crops.copy()


def _with_index(frames, oracle, n_sigma):
    for i, item in enumerate(frames):
        oracle.i = i
        yield item


def test_a_perfect_restoration_beats_the_softened_proxy_and_is_as_sharp_as_the_truth():
    frames = _frames()
    oracle = _Oracle(frames)
    rep = measure_quality(oracle, _with_index(frames, oracle, 2), soften=(0.0, 1.0), lpips=False)
    d = rep.to_json()
    assert d["frames"] == 4 and d["resolution"] == 128 and d["face_px"] > 100
    assert set(d["soften"]) == {"0", "1"}
    for key in ("psnr", "ssim", "mouth_psnr", "sharpness", "temporal"):
        assert key in d["soften"]["1"]["W"] and key in d["soften"]["1"]["L"]
    soft, ideal = rep.soften[1.0], rep.soften[0.0]
    assert soft.W.psnr < ideal.W.psnr            # softening hurts the proxy
    assert soft.gain_db > 3.0                    # the true detail comes back
    assert soft.L.sharpness > soft.W.sharpness + 0.2 and soft.L.sharpness > 0.7
    assert ideal.L.ssim >= ideal.W.ssim - 1e-3
    assert json.loads(json.dumps(d, allow_nan=False)) == d      # strict JSON as it is
    back = QualityReport.from_json(d)
    assert back.to_json() == d
    assert back.soften[1.0].gain_db == pytest.approx(soft.gain_db, abs=1e-3)


def test_quality_report_reads_the_demo_identity_meta_and_old_values(tmp_path):
    meta = json.loads((ROOT / "checkpoints" / "identities" / "demo" / "meta.json").read_text())
    stored = meta["quality"]
    rep = QualityReport.from_json(stored)
    assert rep.frames == stored["frames"] and rep.resolution == stored["resolution"]
    assert sorted(rep.soften) == sorted(float(k) for k in stored["soften"])
    assert rep.fusion == FusionConfig.from_dict(stored["fusion"])
    assert rep.first_s == stored["holdout_first_s"]
    assert rep.to_json() == stored                              # same layout, same values
    assert "gain dB" in rep.format_table()
    # non-finite values (a perfect mouth) are the policy's strings, and read back as floats
    odd = json.loads(json.dumps(stored))
    odd["soften"]["0"]["L"]["mouth_psnr"] = "inf"
    odd["soften"]["0"].pop("sync")                              # a record without sync
    odd["extra_key"] = 1
    rep2 = QualityReport.from_json(odd)
    assert rep2.soften[0.0].L.mouth_psnr == float("inf")
    assert rep2.to_json()["soften"]["0"]["L"]["mouth_psnr"] == "inf"
    assert rep2.to_json()["extra_key"] == 1
    out = write_json(tmp_path / "q.json", rep2)
    assert json.loads(out.read_text())["soften"]["0"]["L"]["mouth_psnr"] == "inf"


def test_summary_rows_are_the_stored_numbers_in_the_stored_order():
    stored = json.loads((ROOT / "checkpoints" / "identities" / "demo" / "meta.json")
                        .read_text())["quality"]
    odd = json.loads(json.dumps(stored))
    odd["soften"]["1"]["gain_db"] = 0.6049  # as stored, even where L - W rounds otherwise
    rows = QualityReport.from_json(odd).summary_rows()
    assert [r.sigma for r in rows] == list(odd["soften"])
    for r in rows:
        raw = odd["soften"][r.sigma]
        assert (r.w_psnr, r.l_psnr, r.gain_db, r.w_sharpness, r.l_sharpness) == (
            raw["W"]["psnr"], raw["L"]["psnr"], raw["gain_db"], raw["W"]["sharpness"],
            raw["L"]["sharpness"])
    assert QualityReport.from_json(odd).to_json() == odd


def test_soften96_is_the_lipsync_path_at_96_px():
    import cv2
    import torch
    crop = _frames(1)[0][0][100:196, 100:196]
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255
    for sigma in (0.5, 1.0):
        y = lipsync_path(x, sigma)
        ours = (y[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(soften96(crop, sigma), ours)
    assert soften96(crop, 0.0) is crop
    np.testing.assert_array_equal((lipsync_path(x, 0.0)[0].permute(1, 2, 0).numpy() * 255)
                                  .round().astype(np.uint8), crop)   # only 8-bit rounding
    # a larger face: area-reduced to 96, softened, rounded, bicubic back (as cv2 would do)
    big = _frames(1)[0][0][40:232, 60:252]
    xb = torch.from_numpy(np.ascontiguousarray(big)).permute(2, 0, 1)[None].float() / 255
    yb = lipsync_path(xb, 1.0)
    ref = cv2.resize(soften96(cv2.resize(big, (96, 96), interpolation=cv2.INTER_AREA), 1.0),
                     (192, 192), interpolation=cv2.INTER_CUBIC)
    assert yb.shape == xb.shape
    assert np.abs(yb[0].permute(1, 2, 0).numpy() * 255 - ref).mean() < 1.5


def test_no_restoration_scores_like_the_proxy():
    frames = _frames(3)
    rep = measure_quality(_Echo(), iter(frames), soften=(0.0, 1.0), lpips=False)
    for r in rep.soften.values():
        assert abs(r.gain_db) < 0.6              # only the 96 -> 128 -> frame resampling
        assert r.sync_mad < 3.5                  # the mouth Wav2Lip drew is kept (resampling)
    # strength (0, 0): generation pastes Wav2Lip's face itself, so L is exactly W
    rep0 = measure_quality(_Echo(), iter(frames), soften=(1.0,), lpips=False,
                           fusion=FusionConfig(0.0, 0.0))
    assert rep0.soften[1.0].gain_db == 0.0


def test_a_given_perceptual_module_scores_the_lpips_column():
    import torch

    from ladtalk.evaluation.quality import lpips_function
    from ladtalk.metrics.lpips import LPIPS
    torch.manual_seed(0)
    module = LPIPS()  # random VGG features: enough to check the module is the one used
    frames = _frames(2)
    rep = measure_quality(_Echo(), iter(frames), soften=(1.0,), perceptual=module,
                          fusion=FusionConfig(0.0, 0.0))
    r = rep.soften[1.0]
    assert r.W.lpips is not None and r.W.lpips > 0 and r.L.lpips == r.W.lpips  # L is W here
    fn = lpips_function(module=module)
    a, b = frames[0][0][:64, :64], frames[1][0][:64, :64]
    with torch.no_grad():
        ref = module(torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1,
                     torch.from_numpy(b).permute(2, 0, 1)[None].float() / 127.5 - 1)
    assert fn(a, b) == float(ref.mean())


def test_region_mask_is_the_lower_face_inside_the_region():
    region = face_region((80, 40, 200, 170), (288, 288))
    m = region_mask(region)
    ys, xs = np.nonzero(m)
    assert ys.min() >= region.y1 + 0.4 * region.height and ys.max() < region.y2
    assert xs.min() > region.x1 and xs.max() < region.x2


def test_bad_soften_values_are_refused():
    with pytest.raises(ValueError):
        measure_quality(_Echo(), iter(_frames(1)), soften=(-1.0,), lpips=False)


@pytest.mark.slow
def test_eval_quality_cli_on_the_shipped_demo(tmp_path):
    out = tmp_path / "q.json"
    proc = subprocess.run([sys.executable, "-m", "ladtalk", "eval", "quality", "--identity",
                           "demo", "--video", str(ROOT / "examples" / "astronaut.mp4"),
                           "--detector", "dlib", "--max-frames", "3", "--soften", "0", "1",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(out.read_text())
    assert d["frames"] == 3 and set(d["soften"]) == {"0", "1"}
    assert "gain dB" in proc.stdout and d["soften"]["1"]["L"]["psnr"] > 0
    bad = subprocess.run([sys.executable, "-m", "ladtalk", "eval", "quality", "--video",
                          str(ROOT / "examples" / "astronaut.mp4")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--identity" in bad.stderr
