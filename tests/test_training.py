"""Enrollment (SOVQAE fine-tuning): trainer state, refusals, crops ahead of a run, and a real
train -> restore check on a public-domain face (scikit-image's bundled astronaut photo, NASA,
no download), all on CPU. The building blocks: test_enrollment_data.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ladtalk.enrollment import Trainer, enroll, prepare_crops, train_preset
from ladtalk.enrollment import data as tdata
from ladtalk.errors import InputError
from ladtalk.face import video_crops
from ladtalk.identities.meta import load_meta
from ladtalk.metrics.image import psnr_torch

ROOT = Path(__file__).resolve().parents[1]


# -- fixtures ----------------------------------------------------------------------------------
def _astronaut_frames(n: int, size: int = 320, seed: int = 0) -> np.ndarray:
    """``n`` frames of the astronaut with small random rotation / zoom / shift / brightness,
    like a person moving slightly in front of a camera."""
    import cv2
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    img = cv2.resize(skdata.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-2, 2),
                                    1 + rng.uniform(-0.03, 0.03))
        m[:, 2] += rng.uniform(-4, 4, 2)
        f = cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REFLECT)
        out[i] = np.clip(f.astype(np.float32) * rng.uniform(0.95, 1.05), 0, 255).astype(np.uint8)
    return out


def _write_video(path: Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    from ladtalk.media.encode import VideoWriter
    with VideoWriter(path, fps, (frames.shape[2], frames.shape[1])) as w:
        w.write(frames)
    return path


@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> Path:
    return _write_video(tmp_path_factory.mktemp("vid") / "astronaut.mp4", _astronaut_frames(48))


# -- trainer state ---------------------------------------------------------------------------
def _tiny_model():
    from ladtalk.models.sovqae import SOVQAE, get_config
    torch.manual_seed(0)
    return SOVQAE(get_config("tiny", ema=True))


def test_trainer_state_round_trip_is_exact(tmp_path):
    crops = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    cfg = train_preset("tiny", kmeans_at=2, restart_every=3, disc_start=3, restore_start=0)
    sampler = tdata.CropSampler(crops, 4, seed=1)
    tr = Trainer(_tiny_model(), cfg, torch.device("cpu"))
    for _ in range(5):
        terms = tr.step(sampler)
    assert "d_loss" in terms and "g_loss" in terms  # the PatchGAN is active after disc_start
    tr.save_state(tmp_path, sampler)
    info = json.loads((tmp_path / "trainer_state.json").read_text())
    assert info["step"] == 5
    assert not any(p.suffix in (".pt", ".pth", ".pkl") for p in tmp_path.iterdir())

    sampler2 = tdata.CropSampler(crops, 4, seed=99)
    model2 = _tiny_model()
    model2.load_state_dict(tr.model.state_dict())
    tr2 = Trainer(model2, cfg, torch.device("cpu"))
    tr2.load_state(tmp_path, sampler2)
    assert tr2.step_count == 5 and tr2.kmeans_done
    s1, s2 = tr.opt_g.state_dict()["state"], tr2.opt_g.state_dict()["state"]
    assert s1.keys() == s2.keys() and len(s1) > 10
    for i in s1:
        assert torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"])
        assert torch.equal(s1[i]["exp_avg_sq"], s2[i]["exp_avg_sq"])
    assert torch.equal(tr.model.quantize.ema_embed_sum, tr2.model.quantize.ema_embed_sum)
    for k, v in tr.disc.state_dict().items():
        assert torch.equal(v, tr2.disc.state_dict()[k])
    assert torch.equal(sampler.sample(), sampler2.sample())  # RNG continues identically


# -- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../../etc", "a/b", "..", "", ".hidden", "x" * 80])
def test_bad_identity_names_are_refused(bad, face_video):
    with pytest.raises(InputError, match="invalid identity name"):
        enroll(face_video, bad, seconds=1, config="tiny", detector="dlib")


def test_empty_and_undecodable_videos_are_refused(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        enroll(empty, "someone", seconds=1, config="tiny", detector="dlib")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(InputError):
        enroll(junk, "someone", seconds=1, config="tiny", detector="dlib")
    with pytest.raises(InputError, match="does not exist"):
        enroll(tmp_path / "missing.mp4", "someone", seconds=1, config="tiny", detector="dlib")


def test_video_without_a_face_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (1, 160, 160, 3), dtype=np.uint8), 12, axis=0)
    vid = _write_video(tmp_path / "noface.mp4", frames)
    with pytest.raises(InputError, match="no face"):
        enroll(vid, "someone", seconds=1, config="tiny", detector="dlib")


def test_too_few_frames_is_refused(tmp_path):
    vid = _write_video(tmp_path / "short.mp4", _astronaut_frames(4))
    with pytest.raises(InputError, match="at least"):
        enroll(vid, "someone", seconds=1, config="tiny", detector="dlib")


def test_cli_reports_bad_name_cleanly(face_video):
    out = subprocess.run([sys.executable, "-m", "ladtalk", "enroll", "--video", str(face_video),
                          "--name", "../../etc", "--config", "tiny", "--seconds", "1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert "invalid identity name" in out.stderr and "Traceback" not in out.stderr


# -- end to end --------------------------------------------------------------------------------
def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(psnr_torch(a, b).mean())


@pytest.mark.slow
def test_enroll_learns_to_restore_resumes_and_writes_atomically(face_video, tmp_path):
    """~60-90 s on 2 busy cores: train a tiny SOVQAE on the astronaut, check restoration of
    held-out blurred frames, resume, and abort a second run from the progress callback."""
    from ladtalk.analysis.degrade import gaussian_blur
    from ladtalk.face.video_crops import extract_crops, split_holdout
    from ladtalk.identities.store import store_path
    from ladtalk.media.resample import to_tensor01
    from ladtalk.models.sovqae import SOVQAE, get_config

    events = []
    budget = 80.0  # 200 steps take ~30 s on 2 idle cores; the step cap ends the run there
    t0 = time.time()
    path = enroll(face_video, "astro", seconds=budget, detector="dlib", holdout=0.15,
                  config=get_config("tiny", attn_resolutions=()), device="cpu",
                  show_progress=False, on_progress=events.append,
                  train_overrides={"max_steps": 200})
    assert path == store_path("astro")
    for f in ("config.json", "model.safetensors", "meta.json", "trainer_state.json",
              "trainer_state.safetensors"):
        assert (path / f).is_file(), f
    meta = json.loads((path / "meta.json").read_text())
    # budget respected: training stops at the step cap or within a step (+ one holdout
    # evaluation) of the time budget
    assert meta["run_steps"] == 200 or budget - 0.5 <= meta["run_training_seconds"], meta
    assert meta["run_training_seconds"] <= budget + 8, meta["run_training_seconds"]
    assert time.time() - t0 < budget + 60
    phases = [e["phase"] for e in events]
    assert phases[-1] == "done" and "train" in phases and "detect" in phases
    train_ev = [e for e in events if e["phase"] == "train"]
    assert train_ev[-1]["step"] == meta["steps"] and any("holdout_psnr" in e for e in train_ev)
    assert meta["frames"]["holdout"] >= 5 and meta["certificate"]["d_C"] > 0
    # the fusion strengths calibrated on the holdout, and the W-vs-L quality measure
    fusion = meta["fusion"]
    assert 0 <= fusion["low_strength"] <= 2 and 0 <= fusion["high_strength"] <= 2
    q = meta["quality"]
    assert q["resolution"] == 32 and q["frames"] >= 5 and set(q["soften"]) == {"0", "0.5", "1"}
    for r in q["soften"].values():
        assert r["L"]["psnr"] >= r["W"]["psnr"] - 1.0, q  # never much worse than Wav2Lip
    for key in ("steps", "training_seconds", "losses", "holdout_psnr", "restoration"):
        assert key in meta

    # held-out frames (the last 15 %, never trained on), blurred: the SOVQAE must restore them
    crops = extract_crops(face_video, 32, "dlib")
    _, hold = split_holdout(len(crops), 0.15)
    x = to_tensor01(crops.crops[hold])
    model = SOVQAE.from_pretrained(path)
    xb = gaussian_blur(x, 2.0)
    with torch.no_grad():
        y = ((model(xb * 2 - 1)[0] + 1) / 2).clamp(0, 1)
    p_deg, p_res = _psnr(xb, x), _psnr(y, x)
    assert p_res >= p_deg + 1.5, (p_deg, p_res, meta["steps"])
    blur_meta = meta["restoration"]["blur:2.0"]  # the same probe, via analysis.robustness
    assert abs(blur_meta["psnr_restored"] - p_res) < 0.05
    assert abs(blur_meta["psnr_degraded"] - p_deg) < 0.05

    # resume: the step count continues from the saved state
    steps1 = meta["steps"]
    enroll(face_video, "astro", seconds=20, detector="dlib", holdout=0.15, device="cpu",
           show_progress=False, train_overrides={"max_steps": 5})
    meta2 = json.loads((path / "meta.json").read_text())
    assert meta2["resumed"] and meta2["steps"] > steps1
    assert meta2["steps"] == steps1 + meta2["run_steps"] and meta2["run_steps"] <= 5
    assert meta2["training_seconds"] > meta["training_seconds"]
    typed = load_meta(path)  # the typed record reads what enroll wrote
    assert typed.steps == meta2["steps"] and typed.resumed and typed.quality is not None
    assert typed.frames.holdout == meta2["frames"]["holdout"] and not typed.partial

    # an abort mid-training leaves the previous identity byte-for-byte intact
    before = {f.name: f.read_bytes() for f in path.iterdir()}

    def boom(info):
        if info.get("phase") == "train" and info.get("run_steps", 0) >= 3:
            raise RuntimeError("user cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        enroll(face_video, "astro", seconds=30, detector="dlib", holdout=0.15, device="cpu",
               show_progress=False, on_progress=boom)
    assert {f.name: f.read_bytes() for f in path.iterdir()} == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_killing_enroll_leaves_previous_identity_intact(face_video, tmp_path):
    """SIGKILL a real ``python -m ladtalk enroll`` subprocess while it trains."""
    home = tmp_path / "home"
    env = {**os.environ, "LADTALK_HOME": str(home)}
    target = home / "identities" / "victim"
    target.mkdir(parents=True)
    (target / "config.json").write_text('{"sentinel": true}\n')
    (target / "model.safetensors").write_bytes(b"previous weights")
    before = {f.name: f.read_bytes() for f in target.iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "ladtalk", "enroll", "--video", str(face_video),
                             "--name", "victim", "--config", "tiny", "--seconds", "60",
                             "--detector", "dlib", "--fresh"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        cache = home / "cache" / "crops"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # crops cached -> training next
            if cache.is_dir() and list(cache.glob("*/crops.npz")):
                break
            time.sleep(0.5)
        time.sleep(4)
        assert proc.poll() is None, proc.stdout.read().decode()
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert {f.name: f.read_bytes() for f in target.iterdir()} == before


def test_init_from_a_saved_sovqae_directory(face_video, tmp_path):
    """--init: a fresh identity starts from given weights (config taken from them)."""
    from ladtalk.models.sovqae import SOVQAE, get_config
    torch.manual_seed(1)
    src = SOVQAE(get_config("tiny", attn_resolutions=(), n_embed=64))
    src.save_pretrained(tmp_path / "init")
    path = enroll(face_video, "from_init", seconds=30, init=str(tmp_path / "init"),
                  detector="dlib", holdout=0.15, device="cpu", show_progress=False,
                  train_overrides={"max_steps": 2, "final_frames": 2})
    meta = json.loads((path / "meta.json").read_text())
    assert meta["init"] == str(tmp_path / "init") and meta["steps"] == 2 and not meta["resumed"]
    got = SOVQAE.from_pretrained(path)
    assert got.config.n_embed == 64 and got.config.resolution == 32
    # two small Adam steps: close to, but not equal to, the initial weights
    w0, w1 = src.decoder.conv_out.weight.detach(), got.decoder.conv_out.weight.detach()
    assert not torch.equal(w0, w1) and float((w0 - w1).abs().max()) < 0.05


def test_prepare_crops_makes_the_crops_enroll_uses(face_video):
    """The app crops on the CPU first; enroll must then find every crop in the cache."""
    overrides = {"max_steps": 1, "final_frames": 2, "quality_frames": 0}
    crops = prepare_crops(face_video, "prep", config="tiny", detector="dlib",
                          train_overrides=overrides)
    assert crops.resolution == 32 and len(crops) == 48
    events = []
    path = enroll(face_video, "prep", seconds=30, config="tiny", detector="dlib", holdout=0.15,
                  device="cpu", show_progress=False, on_progress=events.append,
                  train_overrides=overrides)
    phases = {e["phase"] for e in events}
    assert "train" in phases and not phases & {"detect", "crop"}, phases
    # an existing identity keeps its own config and resolution
    again = prepare_crops(face_video, "prep", detector="dlib")
    assert again.resolution == 32 and np.array_equal(again.crops, crops.crops)
    assert load_meta(path).config_name == "tiny"
    # a new identity of an auto-resolution config: the measured face size decides
    auto = prepare_crops(face_video, None, config="cpu", detector="dlib")
    assert auto.resolution == video_crops.choose_resolution(auto.face_px)
    assert prepare_crops(face_video, "other", config="tiny", init="demo") is None


# -- live holdout PSNR -------------------------------------------------------------------------
def test_holdout_psnr_is_live_within_a_short_budget(tmp_path):
    """The progress line gets an early holdout PSNR that then changes during the run (it used
    to be evaluated at step 1 and then only after ``eval_seconds``, so a budget of 60 s or
    less showed one frozen value until the end)."""
    from ladtalk.enrollment.loop import EvalSchedule, train_loop
    from ladtalk.media.resample import to_tensor01

    crops = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    cfg = train_preset("tiny", seconds=600.0, max_steps=16, kmeans_at=0, restore_start=0)
    tr = Trainer(_tiny_model(), cfg, torch.device("cpu"))
    events = []
    res = train_loop(tr, tdata.CropSampler(crops[:8], 4, seed=1),
                     to_tensor01(crops[8:]), cfg, events.append, False, tmp_path, "live",
                     lambda r: None)
    train = [e for e in events if e["phase"] == "train"]
    assert res.run_steps == 16 and len(train) == 16
    psnrs = [(e["run_steps"], e["holdout_psnr"]) for e in train if "holdout_psnr" in e]
    # first evaluation after 10 % of the steps (not at step 1), then periodically
    assert psnrs[0][0] == 2
    before_last = {p for s, p in psnrs if s < 16}
    assert len(before_last) >= 3, psnrs
    assert psnrs[-1][0] == 16 and res.holdout_psnr_during_training == psnrs[-1][1]
    assert [h["step"] for h in tr.history] == [s for s, _ in psnrs]
    assert not list(tmp_path.iterdir())  # no checkpoint_seconds: nothing saved mid-run

    # the time schedule of a 60 s run: first at 6 s, then every budget / 8, but never so
    # often that evaluating (here 3 s each) takes more than a tenth of the time
    sched = EvalSchedule(60.0, 0, eval_seconds=60.0)
    assert not sched.due(5.9, 500) and sched.due(6.0, 1)
    sched.done(6.0, 40, cost=0.1)
    assert not sched.due(13.4, 90) and sched.due(13.6, 91)
    sched.done(13.6, 91, cost=3.0)
    assert not sched.due(40.0, 300) and sched.due(40.7, 301)
    # a long budget is capped by eval_seconds
    long = EvalSchedule(3600.0, 0, eval_seconds=60.0)
    assert long.due(60.0, 1) and not long.due(59.0, 1)
