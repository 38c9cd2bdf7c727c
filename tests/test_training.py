"""Enrollment (SOVQAE fine-tuning): data, losses, trainer state, refusals, and a real
train -> restore check on a public-domain face (scikit-image's bundled astronaut photo, NASA,
no download), all on CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ladtalk.enrollment import data as tdata
from ladtalk.enrollment.discriminator import NLayerDiscriminator
from ladtalk.enrollment.losses import (
    adaptive_weight,
    codebook_regularizer,
    hinge_d_loss,
    soft_min_distance,
)
from ladtalk.errors import InputError
from ladtalk.face import video_crops
from ladtalk.metrics.lpips import load_perceptual

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
    from ladtalk.media.video import VideoWriter
    with VideoWriter(path, fps, (frames.shape[2], frames.shape[1])) as w:
        w.write(frames)
    return path


@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> Path:
    return _write_video(tmp_path_factory.mktemp("vid") / "astronaut.mp4", _astronaut_frames(48))


# -- data --------------------------------------------------------------------------------------
def test_split_holdout_takes_the_end_of_the_video():
    train, hold = video_crops.split_holdout(100, 0.1)
    assert list(hold) == list(range(90, 100)) and list(train) == list(range(90))
    train, hold = video_crops.split_holdout(20, 0.01)  # at least one frame held out
    assert list(hold) == [19]
    assert len(video_crops.split_holdout(30, 0.0)[1]) == 0
    with pytest.raises(InputError, match="too few frames"):
        video_crops.split_holdout(8, 0.5)
    with pytest.raises(InputError):
        video_crops.split_holdout(100, 1.0)


def test_select_frames_subsamples_evenly():
    keep = video_crops.select_frames(10_000, 500)
    assert len(keep) == 500 and keep[0] == 0 and keep[-1] == 9999
    assert np.all(np.diff(keep) > 0)
    assert len(video_crops.select_frames(40, 500)) == 40


def test_sampler_is_deterministic_and_resumable():
    crops = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    a = tdata.CropSampler(crops, 4, patch=16, seed=3)
    b = tdata.CropSampler(crops, 4, patch=16, seed=3)
    xa = a.sample()
    assert xa.shape == (4, 3, 16, 16) and 0 <= float(xa.min()) and float(xa.max()) <= 1
    assert torch.equal(xa, b.sample())
    assert a.sample(full=True).shape == (4, 3, 32, 32)
    state = a.state()
    nxt = a.sample()
    a.set_state(state)
    assert torch.equal(a.sample(), nxt)


def test_random_degradation_changes_images_within_range():
    x = torch.rand(12, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    y = tdata.random_degradation(x, g)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert all(not torch.equal(y[i], x[i]) for i in range(len(x)))


def test_face_weight_map_has_mean_one_and_peaks_in_the_face():
    w = tdata.face_weight_map(64, 1.0)
    assert abs(float(w.mean()) - 1) < 1e-5
    assert float(w[0, 0, 38, 32]) > float(w[0, 0, 0, 0])
    assert tdata.face_weight_map(64, 0.0) is None


# -- losses ------------------------------------------------------------------------------------
def test_soft_min_is_a_lower_bound_that_tightens():
    codes = torch.randn(30, 8)
    d = torch.cdist(codes, codes) + torch.eye(30) * 1e9
    hard = float(d.min())
    loose, tight = float(soft_min_distance(codes, 0.5)), float(soft_min_distance(codes, 0.005))
    assert loose <= tight <= hard + 1e-5
    assert abs(tight - hard) < 0.05


def test_codebook_regularizer_moves_min_distance_towards_theta():
    torch.manual_seed(0)
    w = (torch.randn(16, 4) * 0.05).requires_grad_(True)  # codes far closer than theta = 1
    opt = torch.optim.SGD([w], lr=0.05)
    used = torch.arange(16)
    before = float(torch.pdist(w.detach()).min())
    for _ in range(200):
        opt.zero_grad()
        codebook_regularizer(w, used, theta=1.0, tau=0.02).backward()
        opt.step()
    after = float(torch.pdist(w.detach()).min())
    assert after > before + 0.3
    assert float(codebook_regularizer(w, used[:1]).detach()) == 0.0  # one code: nothing to separate


def test_hinge_and_adaptive_weight_match_taming_definitions():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake))) = 0.5 * (0.25 + 0.5)
    assert math.isclose(float(hinge_d_loss(real, fake)), 0.375)
    layer = torch.nn.Parameter(torch.randn(5))
    rec = (layer * 3.0).sum()
    g = (layer * -0.5).sum()
    w = adaptive_weight(rec, g, layer, disc_weight=0.5)
    expected = 0.5 * (3.0 * math.sqrt(5)) / (0.5 * math.sqrt(5) + 1e-4)
    assert math.isclose(float(w), expected, rel_tol=1e-5)


def test_discriminator_is_a_patchgan_with_taming_names():
    d = NLayerDiscriminator(ndf=16, n_layers=3)
    keys = set(d.state_dict())
    assert "main.0.weight" in keys and "main.2.weight" in keys and "main.3.running_mean" in keys
    out = d(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 6, 6)  # one logit per 70x70-style patch


def test_perceptual_without_weights_warns_once_and_returns_none(monkeypatch, capsys):
    from ladtalk.metrics import lpips as losses
    monkeypatch.delenv("LADTALK_VGG16", raising=False)
    monkeypatch.delenv("LADTALK_LPIPS", raising=False)
    monkeypatch.setattr(losses, "_WARNED", False)
    model, msg = load_perceptual("cpu")
    model2, _ = load_perceptual("cpu")
    assert model is None and model2 is None and "LADTALK_VGG16" in msg
    assert capsys.readouterr().err.count("perceptual (LPIPS) loss disabled") == 1


def test_perceptual_loads_vgg_weights_from_env(monkeypatch, tmp_path):
    from safetensors.torch import save_file

    from ladtalk.metrics.lpips import LPIPS
    ref = LPIPS()
    sd = {k: torch.randn_like(v) for k, v in ref.state_dict().items() if k.startswith("features.")}
    save_file(sd, str(tmp_path / "vgg16.safetensors"))
    monkeypatch.setenv("LADTALK_VGG16", str(tmp_path / "vgg16.safetensors"))
    monkeypatch.delenv("LADTALK_LPIPS", raising=False)
    model, msg = load_perceptual("cpu")
    assert model is not None and "uniform heads" in msg
    assert torch.equal(model.features[0].weight, sd["features.0.weight"])
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(model(x, x).abs().max()) < 1e-6
    assert float(model(x, x.flip(-1)).min()) > 0


# -- trainer state ---------------------------------------------------------------------------
def _tiny_model():
    from ladtalk.models.sovqae import SOVQAE, get_config
    torch.manual_seed(0)
    return SOVQAE(get_config("tiny", ema=True))


def test_trainer_state_round_trip_is_exact(tmp_path):
    from ladtalk.enrollment.enroll import Trainer, train_preset
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
    from ladtalk.enrollment.enroll import enroll
    with pytest.raises(InputError, match="invalid identity name"):
        enroll(face_video, bad, seconds=1, config="tiny", detector="dlib")


def test_empty_and_undecodable_videos_are_refused(tmp_path):
    from ladtalk.enrollment.enroll import enroll
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
    from ladtalk.enrollment.enroll import enroll
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (1, 160, 160, 3), dtype=np.uint8), 12, axis=0)
    vid = _write_video(tmp_path / "noface.mp4", frames)
    with pytest.raises(InputError, match="no face"):
        enroll(vid, "someone", seconds=1, config="tiny", detector="dlib")


def test_too_few_frames_is_refused(tmp_path):
    from ladtalk.enrollment.enroll import enroll
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
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    return float((10 * torch.log10(1 / mse)).mean())


@pytest.mark.slow
def test_enroll_learns_to_restore_resumes_and_writes_atomically(face_video, tmp_path):
    """~60-90 s on 2 busy cores: train a tiny SOVQAE on the astronaut, check restoration of
    held-out blurred frames, resume, and abort a second run from the progress callback."""
    from ladtalk.analysis.degrade import gaussian_blur
    from ladtalk.enrollment.enroll import enroll
    from ladtalk.face.video_crops import extract_crops, split_holdout, to_tensor01
    from ladtalk.identities.store import store_path
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
    blur_meta = meta["restoration"]["blur:2.0"]  # the same probe through ladtalk.analysis.robustness
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
            if cache.is_dir() and list(cache.glob("*.npz")):
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
    from ladtalk.enrollment.enroll import enroll
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
