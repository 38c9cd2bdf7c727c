"""Restorer, evaluate_robustness and the ``robustness`` command on a synthetic face video."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ladtalk.analysis.degrade import parse_degradation, resolve_specs
from ladtalk.analysis.report import RobustnessReport
from ladtalk.analysis.robustness import (
    evaluate_robustness,
    restoration_pictures,
    robustness_for_video,
)
from ladtalk.errors import InputError
from ladtalk.generation.restore import Restorer
from ladtalk.media.resample import to_tensor01
from ladtalk.metrics.image import psnr, ssim
from ladtalk.models.sovqae import SOVQAE, get_config

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES = 10


@pytest.fixture(scope="module")
def identity_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = SOVQAE(get_config("tiny"))  # 32 px, f = 2
    path = tmp_path_factory.mktemp("ident") / "astro"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> Path:
    """10 frames of a real (public-domain) face moving a few pixels, H.264."""
    from skimage import data

    from ladtalk.media.encode import VideoWriter
    img = data.astronaut()  # face at about x 177-279, y 65-176
    path = tmp_path_factory.mktemp("video") / "astro.mp4"
    with VideoWriter(path, 25, (256, 256)) as w:
        for i in range(N_FRAMES):
            dx, dy = 100 + 2 * i, 10 + i
            w.write(np.ascontiguousarray(img[dy:dy + 256, dx:dx + 256])[None])
    return path


def _crops(n=3, size=32, seed=0) -> np.ndarray:
    import cv2
    from skimage import data
    face = data.astronaut()[60:190, 160:290]
    out = []
    for i in range(n):
        out.append(cv2.resize(face[i:i + 120, i:i + 120], (size, size),
                              interpolation=cv2.INTER_AREA))
    return np.stack(out)


def test_restorer_matches_model_and_handles_other_sizes(identity_dir):
    model = SOVQAE.from_pretrained(identity_dir)
    r = Restorer(model, "cpu", batch_size=2)
    crops = _crops(3)
    out = r.restore(crops)
    assert out.shape == crops.shape and out.dtype == np.uint8
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = ((model(x * 2 - 1)[0] + 1) / 2).clamp(0, 1)
    ref = (ref.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    single = r.restore(crops[0])
    assert single.shape == crops[0].shape and np.array_equal(single, out[0])
    big = r.restore(_crops(2, size=48))
    assert big.shape == (2, 48, 48, 3)
    with pytest.raises(ValueError):
        r.restore(crops.astype(np.float32))


DEG_KEYS = ["psnr_degraded", "psnr_restored", "ssim_degraded", "ssim_restored",
            "psnr_reconstruction", "ssim_reconstruction", "psnr_gain", "ssim_gain"]


def test_evaluate_robustness_numbers_agree_with_metrics(identity_dir):
    from ladtalk.analysis.degrade import gaussian_blur
    model = SOVQAE.from_pretrained(identity_dir)
    crops = _crops(3)
    rep = evaluate_robustness(model, crops, ["blur:1.0", "noise:0.1"], device="cpu",
                              batch_size=2, cert_faces=1, power_iters=2, n_random=2,
                              max_positions=2, layerwise=False)
    x = crops.astype(np.float64) / 255
    xb = gaussian_blur(x, 1.0)
    want = np.mean([psnr(a, b, data_range=1.0) for a, b in zip(xb, x)])
    got = rep.degradations["blur:1.0"]
    assert got.psnr_degraded == pytest.approx(want, abs=1e-3)
    assert got.ssim_degraded == pytest.approx(
        np.mean([ssim(a, b, data_range=1.0) for a, b in zip(xb, x)]), abs=1e-3)
    rec = Restorer(model, "cpu").restore(crops).astype(np.float64) / 255
    assert rep.reconstruction.psnr == pytest.approx(
        np.mean([psnr(a, b, data_range=1.0) for a, b in zip(rec, x)]), abs=0.05)
    noise = rep.degradations["noise:0.1"]
    assert 19.5 < noise.psnr_degraded < 22.5  # 10 log10(1 / 0.1^2) = 20 dB, a bit more clipped
    assert got.psnr_gain == pytest.approx(got.psnr_restored - got.psnr_degraded)
    assert got.psnr_reconstruction == rep.reconstruction.psnr
    assert set(rep.certificate.codes_preserved) == {"blur:1.0", "noise:0.1"}
    assert rep.frames == 3 and rep.resolution == 32
    s = rep.settings
    assert (s.cost.cert_faces, s.cost.power_iters, s.cost.layerwise) == (1, 2, False)
    assert s.batch_size == 2 and s.device == "cpu"
    # batching does not change anything (noise is seeded per frame)
    rep2 = evaluate_robustness(model, crops, ["noise:0.1"], device="cpu", batch_size=3,
                               certificate=False)
    assert rep2.degradations["noise:0.1"].psnr_restored == pytest.approx(
        noise.psnr_restored, abs=1e-6)
    assert rep2.certificate is None and "certificate" not in rep2.to_json()
    with pytest.raises(InputError, match="not a downscale"):
        evaluate_robustness(model, crops, ["down:96"], device="cpu", certificate=False)
    with pytest.raises(InputError, match="duplicate"):
        evaluate_robustness(model, crops, ["noise:0.1", "noise"], device="cpu",
                            certificate=False)
    with pytest.raises(TypeError):
        evaluate_robustness(model, crops, ["noise:0.1"], device="cpu", cert_face=2)


def test_report_json_layout_and_round_trip(identity_dir):
    model = SOVQAE.from_pretrained(identity_dir)
    # with the whole-map chain: the app preset leaves its numbers NaN (not estimated), and
    # NaN != NaN would hide what this compares
    rep = evaluate_robustness(model, _crops(2), ["blur:1.0"], device="cpu", cost="app",
                              global_map=True)
    d = rep.to_json()
    assert list(d) == ["frames", "resolution", "reconstruction", "degradations",
                       "certificate", "settings"]
    assert list(d["degradations"]["blur:1.0"]) == DEG_KEYS
    assert list(d["reconstruction"]) == ["psnr", "ssim"]
    assert list(d["settings"]) == [
        "seed", "device", "batch_size", "cert_faces", "power_iters", "n_random", "eps",
        "max_positions", "layerwise", "global_map", "restore_seconds", "certificate_seconds",
        "psnr", "ssim"]
    assert (d["settings"]["cert_faces"], d["settings"]["layerwise"]) == (1, False)
    assert d["certificate"]["d_C"] == rep.certificate.d_C
    text = json.dumps(d, allow_nan=False)
    back = RobustnessReport.from_json(json.loads(text))
    assert back == rep and back.to_json() == d
    # files written before the one JSON policy had null for non-finite numbers
    old = json.loads(text)
    old["degradations"]["blur:1.0"]["psnr_restored"] = None
    old["certificate"]["radius"] = None
    back = RobustnessReport.from_json(old)
    assert math.isnan(back.degradations["blur:1.0"].psnr_restored)
    assert math.isnan(back.certificate.radius)
    assert back.to_json()["degradations"]["blur:1.0"]["psnr_restored"] == "nan"


def _cli(args, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # one intra-op thread for this child only: a tiny model gains nothing from more, and on a
    # busy shared machine two spinning OpenMP threads per process slow it down many times
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-m", "ladtalk", "robustness", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_robustness_cli_on_face_video(identity_dir, face_video, tmp_path):
    out = tmp_path / "rob.json"
    proc = _cli(["--identity", str(identity_dir), "--video", str(face_video), "--blur", "1",
                 "--noise", "0.1", "--down", "16", "--detector", "dlib", "--max-frames", "4",
                 "--cert-faces", "1", "--power-iters", "2", "--positions", "2", "--device",
                 "cpu", "--json", str(out), "--quiet"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["frames"] == 4 and res["frames_from"] == "all"
    assert res["identity"] == "astro" and res["video"] == str(face_video)
    assert set(res["degradations"]) == {"blur:1.0", "noise:0.1", "down:16"}
    for spec, r in res["degradations"].items():
        for k in ("psnr_degraded", "psnr_restored", "psnr_reconstruction"):
            assert 5.0 < r[k] <= 100.0, (spec, k, r[k])
        for k in ("ssim_degraded", "ssim_restored"):
            assert -1.0 <= r[k] <= 1.0
    # a smooth real face loses little to sigma-1 blur at 32 px; random weights reconstruct badly
    assert res["degradations"]["blur:1.0"]["psnr_degraded"] > res["reconstruction"]["psnr"]
    cert = res["certificate"]
    for k in ("d_C", "gamma", "L_enc", "radius"):
        assert isinstance(cert[k], float) and math.isfinite(cert[k])
    assert cert["d_C"] > 0 and cert["gamma"] > 0 and cert["L_enc"] > 0
    assert cert["radius"] == pytest.approx((cert["d_C"] - 2 * cert["gamma"]) / (2 * cert["L_enc"]))
    assert set(cert["codes_preserved"]) == set(res["degradations"])
    assert all(0.0 <= v <= 1.0 for v in cert["codes_preserved"].values())
    norms = cert["degradation_norms"]
    assert 0 < norms["blur:1.0"]["mean"] and 0 < norms["noise:0.1"]["mean"]
    assert len(res["frame_indices"]) == 4 and res["frame_indices"] == sorted(res["frame_indices"])
    assert {"identity_dir", "enrollment_video", "frame_range_s", "detector", "video_frames",
            "frames_without_face", "settings"} <= set(res)
    assert RobustnessReport.from_json(res).source.identity == "astro"


def test_holdout_frames_and_clear_errors(identity_dir, face_video, tmp_path):
    import shutil
    ident = tmp_path / "enrolled"
    shutil.copytree(identity_dir, ident)
    meta = {"video": face_video.name, "frames": {"video_frames": N_FRAMES, "fps": 25.0,
                                                 "holdout_first_s": 7 / 25.0}}
    (ident / "meta.json").write_text(json.dumps(meta))
    res = robustness_for_video(ident, face_video, ["noise:0.05"], detector="dlib", device="cpu",
                               certificate=False)
    assert res.source.frames_from == "holdout" and res.source.enrollment_video is True
    assert res.source.frame_indices == [7, 8, 9] and res.frames == 3
    res = robustness_for_video(ident, face_video, ["noise:0.05"], frames_from="all",
                               detector="dlib", device="cpu", certificate=False, max_frames=5)
    assert res.frames == 5 and res.source.frames_from == "all"
    assert res.to_json()["frames_from"] == "all" and "notes" not in res.to_json()
    # the enrollment video without a recorded holdout: every frame, with a note saying so
    (ident / "meta.json").write_text(json.dumps({"video": face_video.name}))
    res = robustness_for_video(ident, face_video, ["noise:0.05"], detector="dlib", device="cpu",
                               certificate=False)
    assert res.source.frames_from == "all" and res.frames == N_FRAMES
    assert "seen in training" in res.to_json()["notes"][0]
    with pytest.raises(InputError, match="without a holdout"):
        robustness_for_video(ident, face_video, ["noise:0.05"], frames_from="holdout",
                             detector="dlib", device="cpu", certificate=False)
    (ident / "meta.json").write_text(json.dumps({**meta, "video": "other.mp4"}))
    with pytest.raises(InputError, match="not the enrollment video"):
        robustness_for_video(ident, face_video, ["noise:0.05"], frames_from="holdout",
                             detector="dlib", device="cpu", certificate=False)
    from ladtalk.cli import main
    assert main(["robustness", "--identity", "../../etc", "--video", str(face_video),
                 "--json", str(tmp_path / "x.json")]) == 2
    assert main(["robustness", "--identity", str(ident), "--video", str(face_video),
                 "--down", "64", "--json", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_default_specs_skip_down_at_low_resolution():
    specs, notes = resolve_specs(32)
    assert specs == ["blur:2.0", "noise:0.1"] and "down:96" in notes[0]
    assert resolve_specs(128) == (["blur:2.0", "noise:0.1", "down:96"], [])
    assert resolve_specs(128, blur=[2, 2.0], down=[96]) == (["blur:2.0", "down:96"], [])
    # given values are kept as they are; the check against the resolution comes later
    assert resolve_specs(32, noise=[0.05], down=[64]) == (["noise:0.05", "down:64"], [])


def test_restoration_pictures_are_the_measured_degradations(identity_dir):
    restorer = Restorer(SOVQAE.from_pretrained(identity_dir), "cpu")
    x = to_tensor01(_crops(1))
    pics = restoration_pictures(restorer, x, ["blur:1.0", "noise:0.1"])
    assert list(pics) == ["clean", "reconstructed", "blur:1.0 degraded", "blur:1.0 restored",
                          "noise:0.1 degraded", "noise:0.1 restored"]
    assert np.array_equal(pics["clean"], _crops(1)[0])
    noisy = parse_degradation("noise:0.1")(x, seed=[0])
    want = (noisy[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    assert np.array_equal(pics["noise:0.1 degraded"], want)
    assert all(p.shape == (32, 32, 3) and p.dtype == np.uint8 for p in pics.values())


def test_certificate_progress_reaches_its_end(identity_dir):
    """The app's progress bar follows the certificate step by step (phase "certificate",
    done rising to total) after the restore batches."""
    model = SOVQAE.from_pretrained(identity_dir)
    events = []
    rep = evaluate_robustness(model, _crops(3), ["blur:1.0"], device="cpu", batch_size=2,
                              cost="app", progress=lambda *a: events.append(a))
    phases = [e[0] for e in events]
    assert phases[:2] == ["restore", "restore"] and events[1][1:] == (3, 3)
    cert = [e[1:] for e in events if e[0] == "certificate"]
    assert len(cert) > 2 and cert[-1][0] == cert[-1][1]
    assert [d for d, _ in cert] == sorted(d for d, _ in cert)
    assert phases == ["restore"] * 2 + ["certificate"] * len(cert)
    assert rep.settings.cost.global_map is False
    assert rep.to_json()["settings"]["global_map"] is False


def test_app_progress_follows_the_certificate(identity_dir):
    """What the app's progress bar shows during a robustness call with the certificate."""
    from ladtalk.app.progress import robustness_reporter

    shown = []
    report = robustness_reporter(lambda frac, desc: shown.append((frac, desc)), True)
    evaluate_robustness(SOVQAE.from_pretrained(identity_dir), _crops(2), ["noise:0.1"],
                        device="cpu", cost="app", progress=report)
    fracs = [f for f, _ in shown]
    assert fracs == sorted(fracs) and 0 < fracs[0] and fracs[-1] <= 0.96
    cert = [d for _, d in shown if d.startswith("certificate: estimating L_enc")]
    assert len(cert) >= 3 and cert[-1].endswith(f"(step {len(cert)}/{len(cert)})")
    robustness_reporter(None, True)("certificate", 1, 1)  # no progress bar: silent
