"""Runtime choice (precision and backend by measurement, cached) and the closeness of every
faster path to the fp32 torch reference: Wav2Lip in grey levels on the golden inputs, the
SOVQAE in holdout PSNR on the shipped demo identity."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from formula import det_state_dict

import ladtalk.runtime.autotune as autotune
from ladtalk.errors import InputError
from ladtalk.generation.lipsync import LipSyncer
from ladtalk.generation.restore import Restorer
from ladtalk.metrics.image import psnr
from ladtalk.models.fuse import fold_batchnorm
from ladtalk.models.wav2lip import Wav2Lip
from ladtalk.runtime.autotune import Plan, candidate_plans, choose_runtime, pick
from ladtalk.runtime.openvino_engine import openvino_available
from ladtalk.runtime.select import select_runtime

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
needs_openvino = pytest.mark.skipif(not openvino_available(),
                                    reason="the optional openvino extra is not installed")


# ------------------------------------------------------------------ the candidates
def test_candidates_follow_the_request(monkeypatch):
    monkeypatch.setattr(autotune, "openvino_available", lambda: True)
    labels = lambda *a: [p.label for p in candidate_plans(*a)]  # noqa: E731
    assert labels("auto", "auto", CPU) == ["torch fp32", "torch bf16", "openvino fp32",
                                           "openvino bf16"]  # the fp32 reference first
    assert labels("torch", "auto", CPU) == ["torch fp32", "torch bf16"]
    assert labels("torch", "bf16", CPU) == ["torch bf16"]
    assert labels("torch", "fp16", CPU) == ["torch fp32"]  # eager CPU fp16 is not offered
    assert labels("auto", "bf16", CPU) == ["torch bf16", "openvino bf16"]
    assert labels("openvino", "fp32", CPU) == ["openvino fp32"]
    with pytest.raises(InputError, match="CPU only"):
        candidate_plans("openvino", "auto", torch.device("cuda"))
    monkeypatch.setattr(autotune, "openvino_available", lambda: False)
    assert labels("auto", "auto", CPU) == ["torch fp32", "torch bf16"]
    with pytest.raises(InputError, match=r"pip install 'ladtalk\[openvino\]'"):
        candidate_plans("openvino", "auto", CPU)
    with pytest.raises(InputError, match="unknown backend 'tpu'"):
        candidate_plans("tpu", "auto", CPU)


def test_pick_is_never_slower_than_the_reference():
    plans = [Plan("torch", "fp32"), Plan("torch", "bf16"), Plan("openvino", "bf16")]
    assert pick(plans, {"torch fp32": 10, "torch bf16": 8, "openvino bf16": 9}) == plans[0]
    assert pick(plans, {"torch fp32": 10, "torch bf16": 10.2, "openvino bf16": 9}) == plans[0]
    assert pick(plans, {"torch fp32": 10, "torch bf16": 30, "openvino bf16": 60}) == plans[2]


def _fake_build(speeds, calls):
    """build(plan) whose one-batch function 'takes' 1/speed seconds (a fake clock)."""
    def build(plan):
        def run():
            calls.append(plan.label)
            _fake_build.now += 1.0 / speeds[plan.label]
        return run
    return build


_fake_build.now = 0.0


def test_measured_once_then_cached_per_machine_and_threads(monkeypatch, caplog):
    monkeypatch.setattr(autotune, "openvino_available", lambda: False)
    monkeypatch.setattr(autotune.time, "perf_counter", lambda: _fake_build.now)
    speeds, calls = {"torch fp32": 10.0, "torch bf16": 25.0}, []
    kw = dict(backend="auto", precision="auto", device=CPU, items=16,
              build=_fake_build(speeds, calls))
    with caplog.at_level(logging.INFO, logger="ladtalk.runtime.autotune"):
        first = choose_runtime("m", {"model": 1}, **kw)
    assert first.plan == Plan("torch", "bf16") and first.how == "measured"
    assert first.speeds == {"torch fp32": pytest.approx(160.0), "torch bf16": pytest.approx(400.0)}
    assert "torch bf16 400.0/s" in caplog.text  # reported
    n_calls = len(calls)
    assert calls.count("torch fp32") >= 2  # warm-up + timed: the reference is always timed
    again = choose_runtime("m", {"model": 1}, **kw)
    assert again.how == "cached" and again.plan == first.plan and len(calls) == n_calls
    other = choose_runtime("m", {"model": 1}, threads=2, **kw)  # another key: measured again
    assert other.how == "measured" and len(calls) > n_calls
    # the cache is one JSON file under $LADTALK_HOME/cache, written atomically
    path = autotune._cache_path()
    data = json.loads(path.read_text())
    assert len(data["entries"]) == 2 and path.parent.name == "cache"
    entry = next(iter(data["entries"].values()))
    assert entry["machine"]["torch"] == torch.__version__ and entry["threads"] in (1, 2)
    # a corrupt cache is ignored with a warning, never trusted, and rewritten
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        redo = choose_runtime("m", {"model": 1}, **kw)
    assert redo.how == "measured" and "unreadable precision cache" in caplog.text
    assert json.loads(path.read_text())["version"] == autotune.CACHE_VERSION


def test_forced_plan_is_not_measured(monkeypatch):
    calls = []
    choice = choose_runtime("m", {}, backend="torch", precision="bf16", device=CPU, items=1,
                            build=_fake_build({}, calls))
    assert choice.how == "forced" and choice.plan == Plan("torch", "bf16") and calls == []
    assert not autotune._cache_path().exists()


def test_slower_precision_never_wins_on_a_real_model():
    """Whatever this machine is, auto's choice is at least as fast as fp32 in its own
    measurement (bf16 is slower than fp32 on some CPUs with the same flags)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 3, 3, padding=1)).eval()
    rt = select_runtime("tiny", [(model, (torch.rand(4, 3, 32, 32),))], backend="torch",
                        precision="auto", device=CPU)
    assert rt.choice.how == "measured" and set(rt.choice.speeds) == {"torch fp32", "torch bf16"}
    s = rt.choice.speeds
    assert rt.choice.precision == "fp32" or s["torch bf16"] >= autotune.MARGIN * s["torch fp32"]
    y = rt.run(0, model, torch.rand(2, 3, 32, 32))
    assert y.dtype == torch.float32 and y.shape == (2, 3, 32, 32)


# ------------------------------------------------------------------ Wav2Lip closeness
@pytest.fixture(scope="module")
def formula_wav2lip():
    model = Wav2Lip()
    entries = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    model.load_state_dict(det_state_dict(entries), strict=True)
    return fold_batchnorm(model.eval())


def _golden_inputs(golden_dir):
    folder = golden_dir / "wav2lip_generator"
    mel = torch.from_numpy(np.load(folder / "input_mel.npy"))
    face = torch.from_numpy(np.load(folder / "input_face.npy"))
    return mel, face


def _grey_levels(syncer, mel, face):
    """The generator's output on (mel, BGR 6-channel face) in grey levels (0-255)."""
    with torch.no_grad():
        y = syncer.runtime.run(0, syncer.model, mel, face.contiguous(
            memory_format=syncer.memory_format))
    return y.numpy() * 255.0


FAST_PATHS = [("torch", "bf16"), pytest.param("openvino", "fp32", marks=needs_openvino),
              pytest.param("openvino", "bf16", marks=needs_openvino)]


@pytest.mark.parametrize("backend,precision", FAST_PATHS)
def test_fast_wav2lip_close_to_fp32_on_golden_inputs(formula_wav2lip, golden_dir, backend,
                                                      precision):
    """Mean grey-level difference of the 96 px output against fp32 torch on the golden
    inputs and formula weights (activations far beyond trained weights'): below one level."""
    mel, face = _golden_inputs(golden_dir)
    exact = _grey_levels(LipSyncer(formula_wav2lip, device="cpu"), mel, face)
    fast = LipSyncer(formula_wav2lip, device="cpu", dtype=precision, backend=backend,
                     batch_size=len(face)).use_channels_last()
    assert fast.runtime.backend == backend and fast.runtime.precision == precision
    diff = np.abs(_grey_levels(fast, mel, face) - exact)
    assert diff.mean() < 1.0, diff.mean()
    if precision == "fp32":
        assert diff.max() < 0.05, diff.max()


@pytest.mark.parametrize("first_row", [0, 30])
@pytest.mark.parametrize("backend,precision", [("torch", "fp32")] + FAST_PATHS)
def test_fast_wav2lip_close_on_uint8_crops(formula_wav2lip, backend, precision, first_row):
    """The same bound through the uint8 API on random crops (no ../shared needed), for the
    whole crop and for the rows from ``first_row`` (the rows above are the input's)."""
    rng = np.random.default_rng(3)
    faces = rng.integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, (5, 80, 16)).astype(np.float32)
    exact = LipSyncer(formula_wav2lip, device="cpu")(faces, mels).astype(int)
    fast = LipSyncer(formula_wav2lip, device="cpu", dtype=precision, backend=backend,
                     batch_size=4, first_row=first_row).use_channels_last()
    assert fast.runtime.backend == backend and fast.runtime.precision == precision
    out = fast(faces, mels).astype(int)
    np.testing.assert_array_equal(out[:, :first_row], faces[:, :first_row])
    diff = np.abs(out[:, first_row:] - exact[:, first_row:])
    assert diff.mean() < 1.0 and diff.max() <= 16, (diff.mean(), diff.max())
    if precision == "fp32":
        assert diff.max() <= 1, diff.max()


@needs_openvino
def test_openvino_ir_is_converted_once_and_cached(formula_wav2lip):
    from ladtalk.runtime.openvino_engine import ir_cache, ir_key
    mel, face = torch.zeros(2, 1, 80, 16), torch.rand(2, 6, 96, 96)
    key = ir_key(formula_wav2lip, (mel, face))
    assert ir_cache().get(key) is None
    a = LipSyncer(formula_wav2lip, device="cpu", dtype="fp32", backend="openvino", batch_size=2)
    a.select_runtime()
    entry = ir_cache().get(key)
    assert entry is not None and (entry / "model.xml").is_file()
    stamp = (entry / "model.bin").stat().st_mtime_ns
    LipSyncer(formula_wav2lip, device="cpu", dtype="bf16", backend="openvino",
              batch_size=2).select_runtime()
    assert (entry / "model.bin").stat().st_mtime_ns == stamp  # read, not converted again
    # a corrupt entry is discarded and rebuilt
    (entry / "model.xml").write_text("<broken")
    b = LipSyncer(formula_wav2lip, device="cpu", dtype="fp32", backend="openvino", batch_size=2)
    out = b.runtime.run(0, b.model, mel, face)
    assert out.shape == (2, 3, 96, 96) and (ir_cache().get(key) / "model.xml").read_text() != \
        "<broken"


# ------------------------------------------------------------------ SOVQAE closeness
@pytest.fixture(scope="module")
def demo_holdout():
    """The demo identity's own held-out frames (the last 10 of examples/astronaut.mp4)."""
    from ladtalk.face.video_crops import extract_crops
    crops = extract_crops(ROOT / "examples" / "astronaut.mp4", 128, "dlib", cache=False)
    return crops.crops[-10:]


def _holdout_psnr(restorer, crops):
    out = restorer.restore(crops, fusion=None)
    return float(np.mean([psnr(o, c) for o, c in zip(out, crops)]))


@pytest.mark.parametrize("backend,precision", FAST_PATHS)
def test_fast_sovqae_keeps_holdout_psnr(demo_holdout, backend, precision):
    demo = ROOT / "checkpoints" / "identities" / "demo"
    exact = Restorer.from_identity(demo, device="cpu", precision="fp32", fusion=None)
    exact.use_channels_last(False)
    ref = _holdout_psnr(exact, demo_holdout)
    fast = Restorer.from_identity(demo, device="cpu", precision=precision, backend=backend,
                                  fusion=None)  # channels-last on CPU, as generation runs it
    assert fast.runtime.backend == backend and fast.memory_format == torch.channels_last
    got = _holdout_psnr(fast, demo_holdout)
    assert ref > 28.0  # the identity really reconstructs its own face
    assert abs(got - ref) < 0.1, (ref, got)


@pytest.fixture(scope="module")
def demo_at_256():
    """The demo identity's weights run at 256 px (its ``cpu`` config is convolutional, so any
    size works) and its 10 held-out frames cropped at 256 px."""
    from dataclasses import replace

    from ladtalk.face.video_crops import extract_crops
    from ladtalk.models.sovqae import SOVQAE
    model = SOVQAE.from_pretrained(ROOT / "checkpoints" / "identities" / "demo")
    model.config = replace(model.config, resolution=256)
    crops = extract_crops(ROOT / "examples" / "astronaut.mp4", 256, "dlib", cache=False)
    return model, crops.crops[-10:]


@pytest.mark.parametrize("backend,precision", [("torch", "fp32")] + FAST_PATHS)
def test_a_window_restores_the_rows_asked_for_as_the_whole_crop(demo_at_256, backend,
                                                                 precision):
    """Generation asks for the rows from the paste mask's top (0.45) down; the model then
    runs on rows 64-255 (12 latent rows higher, on the 8 px grid) and those rows keep their
    holdout PSNR; the rows above the window come back as given."""
    from ladtalk.generation.fusion import FusionConfig
    model, crops = demo_at_256
    r = Restorer(model, "cpu", precision=precision, backend=backend)
    assert r.windowable and r.window_top(0.45) == 64 and r.window_top(0.0) == 0
    wanted = int(0.45 * 256)
    for fusion in (None, FusionConfig()):
        whole = r.restore(crops, fusion=fusion)
        window = r.restore(crops, fusion=fusion, from_row=0.45)
        assert np.array_equal(window[:, :64], crops[:, :64])
        lower = [np.mean([psnr(o[wanted:], c[wanted:]) for o, c in zip(out, crops)])
                 for out in (whole, window)]
        assert lower[0] > 28.0 and abs(lower[1] - lower[0]) < 0.02, lower
        diff = np.abs(whole[:, wanted:].astype(int) - window[:, wanted:])
        assert diff.mean() < 0.05, diff.mean()
    # pasted as generation pastes it: colours matched on the reference band's restored rows,
    # lower-face mask; Wav2Lip-like input (96 px, bicubic up)
    from ladtalk.generation.blend import BlendConfig, lower_face_mask, match_colour
    small = torch.nn.functional.interpolate(torch.from_numpy(crops).permute(0, 3, 1, 2).float(),
                                            size=(96, 96), mode="area")
    up = torch.nn.functional.interpolate(small, size=(256, 256), mode="bicubic")
    up = up.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    blend, mask = BlendConfig().from_row(64 / 256), lower_face_mask(256) > 0
    pasted = []
    for row in (0.0, 0.45):
        out = r.restore(up, fusion=FusionConfig(), from_row=row)
        matched = [match_colour(o, c, blend).round().astype(np.uint8) for o, c in zip(out, crops)]
        pasted.append(np.mean([psnr(m[mask], c[mask]) for m, c in zip(matched, crops)]))
    assert abs(pasted[1] - pasted[0]) < 0.05, pasted
    # the same call twice gives the same pixels (the model stays in eval mode, its EMA
    # codebook untouched, also in the process that converts it for OpenVINO)
    codebook = model.quantize.embedding.weight.detach().clone()
    again = r.restore(crops, fusion=None, from_row=0.45)
    assert np.array_equal(again, r.restore(crops, fusion=None, from_row=0.45))
    assert not model.training and torch.equal(codebook, model.quantize.embedding.weight)


def test_window_top_follows_the_model_and_the_grids():
    from ladtalk.models.sovqae import SOVQAE, get_config
    cpu = Restorer(SOVQAE(get_config("cpu", resolution=256)), "cpu")
    assert [cpu.window_top(f) for f in (0.0, 0.2, 0.45, 0.62, 1.0)] == [0, 0, 64, 104, 208]
    small = Restorer(SOVQAE(get_config("cpu", resolution=128)), "cpu")
    assert small.window_top(0.45) == 8  # 57 - 48 on the 4 px grid of 128 px
    attention = Restorer(SOVQAE(get_config("tiny")), "cpu")  # attention: every pixel sees all
    assert not attention.windowable and attention.window_top(0.45) == 0


# ------------------------------------------------------------------ the GPU check's dry run
def test_gpu_check_dry_runs_on_cpu(tmp_path):
    """scripts/gpu_check.sh runs end to end with --device cpu --quick and writes its JSON."""
    import subprocess
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu",
                           "--quick"], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "OUT": str(out)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["quick"]
    modes = {(r["mode"].split()[0], r["precision"]) for r in report["generate"]}
    assert modes == {("wav2lip", "fp32"), ("wav2lip", "bf16"), ("identity", "fp32"),
                     ("identity", "bf16")}
    assert all(r["fps_end_to_end"] > 0 and r["frames"] > 0 for r in report["generate"])
    assert report["enroll"]["steps_per_s"] > 0 and report["enroll"]["amp"] is False
    assert report["enroll_ddp"]["steps_per_s"] > 0 and report["enroll_ddp"]["ddp"]
    assert not report["enroll"]["ddp"]
    assert report["tests"]["exit_status"] == 0 and report["tests"]["tests"] >= 1
    assert set(report["zerogpu"]) == {"wav2lip", "identity"}
    assert "| mode |" in (out / "gpu_check.md").read_text()


@needs_openvino
def test_torch_weights_dropped_under_openvino_keep_the_output(formula_wav2lip):
    import copy
    model = copy.deepcopy(formula_wav2lip)
    rng = np.random.default_rng(9)
    faces = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, (3, 80, 16)).astype(np.float32)
    syncer = LipSyncer(model, device="cpu", dtype="fp32", backend="openvino", batch_size=4)
    before = syncer(faces, mels)
    syncer.drop_torch_weights()
    assert all(p.is_meta for p in syncer.model.parameters())
    assert np.array_equal(syncer(faces, mels), before)  # OpenVINO holds its own copy
    with pytest.raises(RuntimeError, match="weights were dropped"):
        syncer.select_runtime()
    torch_only = LipSyncer(copy.deepcopy(formula_wav2lip), device="cpu")
    with pytest.raises(RuntimeError, match="torch weights are what runs"):
        torch_only.drop_torch_weights()
