"""After training: calibrate the fusion strengths and measure W against L on held-out frames."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from ladtalk._util.paths import PathLike
from ladtalk.enrollment.config import TrainConfig
from ladtalk.errors import InputError
from ladtalk.evaluation.quality import (
    DEFAULT_SOFTEN,
    calibrate_fusion,
    holdout_frames,
    measure_quality,
)
from ladtalk.face.video_crops import FaceCrops, even_subset
from ladtalk.generation.identity_match import colour_reference, lipsync_gains
from ladtalk.generation.restore import Restorer
from ladtalk.models.sovqae import SOVQAE

log = logging.getLogger(__name__)


def spread_runs(n: int, total: int, run: int = 8) -> np.ndarray:
    """About ``total`` indices of ``range(n)`` as runs of ``run`` consecutive ones spread
    evenly (consecutive frames for the flicker measure, spread for representativeness)."""
    if n <= total:
        return np.arange(n)
    run = max(1, min(run, total))
    k = max(1, total // run)
    starts = np.round(np.linspace(0, n - run, k)).astype(np.int64)
    return np.unique(np.concatenate([np.arange(s, s + run) for s in starts]))


def _quality(restorer: Restorer, hold: FaceCrops, q_idx, got: Dict[int, Any],
             perceptual: Optional[nn.Module]) -> Dict[str, Any]:
    items, prev = [], None
    for i in q_idx:
        if int(i) in got:
            frame, box, _ = got[int(i)]
            items.append((frame, box, prev is not None and int(i) == prev + 1))
            prev = int(i)
    try:
        rep = measure_quality(restorer, items, DEFAULT_SOFTEN, perceptual=perceptual)
    except InputError as exc:
        log.warning("quality measure skipped: %s", exc)
        return {}
    rep.first_s = float(hold.timestamps()[0])
    return {"quality": rep.to_json()}


def calibrate_and_measure(model: SOVQAE, video: PathLike, hold: FaceCrops,
                          cfg: TrainConfig, device: torch.device,
                          perceptual: Optional[nn.Module] = None) -> Dict[str, Any]:
    """The ``meta.json`` records ``fusion``, ``fusion_calibration``,
    ``identity_match_reference`` and ``quality``, from the held-out crops and frames.
    ``perceptual``: the trainer's LPIPS, reused for the quality scores (computed on the CPU)
    when it is on the CPU; otherwise one is loaded there."""
    model.eval()
    restorer = Restorer(model, device, precision="fp32")
    q_idx = spread_runs(len(hold), cfg.quality_frames) if cfg.quality_frames > 0 else []
    c_idx = even_subset(len(hold), cfg.calibration_frames)
    want = np.union1d(np.asarray(q_idx, dtype=np.int64), c_idx)
    # the held-out frames, decoded once (a few dozen frames)
    got = {int(i): (frame.copy(), box, c) for i, (frame, box, c) in zip(want, holdout_frames(
        video, hold.frame_indices[want], hold.boxes[want]))}
    ref_crops = hold.crops[even_subset(len(hold), cfg.final_frames)]
    mean_rgb = colour_reference(ref_crops)
    ref = lipsync_gains(restorer, ref_crops, mean_rgb)
    cal = calibrate_fusion(restorer, [got[int(i)] for i in c_idx if int(i) in got])
    restorer.fusion = cal.fusion
    out: Dict[str, Any] = {"fusion": cal.fusion.to_dict(), "fusion_calibration": cal.to_json(),
                           "identity_match_reference": {
                               "lipsync_gain_db": round(float(ref.mean()), 4),
                               "mean_rgb": mean_rgb, "frames": int(len(ref))}}
    if len(q_idx):
        on_cpu = perceptual is not None and next(perceptual.parameters()).device.type == "cpu"
        out.update(_quality(restorer, hold, q_idx, got, perceptual if on_cpu else None))
    model.train()
    return out


__all__ = ["calibrate_and_measure", "spread_runs"]
