"""CUDA-marked tests: they run on a GPU machine (``pytest -m cuda``, scripts/gpu_check.sh)
and skip elsewhere. Each compares the GPU path with the CPU fp32 reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from formula import det_state_dict

from ladtalk.generation.lipsync import LipSyncer
from ladtalk.generation.restore import Restorer
from ladtalk.metrics.image import psnr
from ladtalk.models.wav2lip import Wav2Lip

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def formula_wav2lip():
    model = Wav2Lip()
    entries = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    model.load_state_dict(det_state_dict(entries), strict=True)
    return model.eval()


def _inputs(n=6):
    rng = np.random.default_rng(5)
    return (rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8),
            rng.uniform(-4, 4, (n, 80, 16)).astype(np.float32))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_wav2lip_on_cuda_close_to_cpu_fp32(formula_wav2lip, precision):
    faces, mels = _inputs()
    exact = LipSyncer(formula_wav2lip, device="cpu")(faces, mels).astype(int)
    gpu = LipSyncer(formula_wav2lip, device="cuda", dtype=precision, batch_size=4)
    diff = np.abs(gpu(faces, mels).astype(int) - exact)
    assert diff.mean() < (0.05 if precision == "fp32" else 1.0), diff.mean()


def test_auto_precision_is_measured_on_cuda(formula_wav2lip):
    syncer = LipSyncer(formula_wav2lip, device="cuda", dtype="auto", batch_size=8)
    choice = syncer.runtime.choice
    assert choice.how in ("measured", "cached") and "torch fp32" in choice.speeds
    assert {"torch fp16"} <= set(choice.speeds)
    faces, mels = _inputs(3)
    assert syncer(faces, mels).shape == (3, 96, 96, 3)


def test_restorer_on_cuda_keeps_holdout_psnr():
    from ladtalk.face.video_crops import extract_crops
    crops = extract_crops(ROOT / "examples" / "astronaut.mp4", 128, "dlib", cache=False).crops[-6:]
    demo = ROOT / "checkpoints" / "identities" / "demo"
    ref = Restorer.from_identity(demo, device="cpu", precision="fp32", fusion=None)
    gpu = Restorer.from_identity(demo, device="cuda", fusion=None)  # fp16 autocast
    a = np.mean([psnr(o, c) for o, c in zip(ref.restore(crops), crops)])
    b = np.mean([psnr(o, c) for o, c in zip(gpu.restore(crops), crops)])
    assert abs(a - b) < 0.1, (a, b)


def test_enrollment_step_on_cuda_uses_amp():
    from ladtalk.enrollment.data import CropSampler
    from ladtalk.enrollment.plan import resolve_train_config
    from ladtalk.enrollment.trainer import Trainer
    from ladtalk.models.sovqae import SOVQAE, get_config
    model = SOVQAE(get_config("tiny"))
    cfg = resolve_train_config("tiny", 32, None)
    crops = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), np.uint8)
    trainer = Trainer(model, cfg, torch.device("cuda"))
    assert trainer.scaler is not None  # AMP on CUDA
    terms = trainer.step(CropSampler(crops, cfg.batch_size, seed=0), 0.0)
    assert all(np.isfinite(v) for v in terms.values() if isinstance(v, float))
