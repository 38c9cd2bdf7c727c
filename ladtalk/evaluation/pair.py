"""Score one generated video G against its reference R (``python -m ladtalk eval``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ladtalk._util.paths import PathLike
from ladtalk.errors import CheckpointError, InputError
from ladtalk.evaluation.config import NEEDS_WEIGHTS, EvalConfig
from ladtalk.evaluation.frame_metrics import (
    fid_metric,
    frame_metric,
    lse_metric,
    mouth_metric,
    temporal_metric,
)
from ladtalk.evaluation.resources import (
    MetricUnavailable,
    Resources,
    Video,
    decode_video,
    resize_frames,
)
from ladtalk.evaluation.results import MetricResult, PairResult, unavailable
from ladtalk.metrics.image import psnr, ssim


def raise_none_computed(errors: Dict[str, Tuple[str, str]]) -> None:
    """Raise for ``{metric: (status, reason)}``: CheckpointError when weights are missing."""
    lines = "; ".join(f"{k}: {status} ({reason})" for k, (status, reason) in errors.items())
    msg = f"none of the requested metrics could be computed - {lines}"
    if any(status == NEEDS_WEIGHTS for status, _ in errors.values()):
        raise CheckpointError(msg)
    raise InputError(msg)


def _align_generated(generated: Path, ref: Video, notes: List[str]) -> Tuple[Video, np.ndarray]:
    """G decoded, and its frames at R's rate and size (each change noted)."""
    gen = decode_video(generated, what="generated video")
    if abs(gen.fps - ref.fps) > 1e-3:
        notes.append(f"generated video resampled from {gen.fps:g} to the reference's "
                     f"{ref.fps:g} fps")
        frames = decode_video(generated, fps=ref.fps, what="generated video").frames
    else:
        frames = gen.frames
    if gen.size != ref.size:
        notes.append(f"generated frames resized from {gen.size[0]}x{gen.size[1]} to the "
                     f"reference's {ref.size[0]}x{ref.size[1]}")
        frames = resize_frames(frames, ref.size)
    return gen, frames


def _metric(name: str, frames_g: np.ndarray, ref: Video, gen: Video, audio, cfg: EvalConfig,
            res: Resources, notes: List[str]) -> MetricResult:
    frames_r = ref.frames
    if name == "psnr":
        return frame_metric(frames_g, frames_r, cfg, psnr)
    if name == "ssim":
        return frame_metric(frames_g, frames_r, cfg, ssim)
    if name == "mouth_psnr":
        return mouth_metric(frames_g, frames_r, res.reference_boxes(), cfg)
    if name == "temporal":
        return temporal_metric(frames_g, frames_r, cfg)
    if name == "fid":
        return fid_metric(frames_g, frames_r, cfg, res)
    if name == "lse":
        return lse_metric(gen, audio[0], audio[1], cfg, res, notes)
    raise InputError(f"unknown metric {name}")


def evaluate_pair(generated: PathLike, reference: PathLike, audio: Optional[PathLike] = None,
                  config: Optional[EvalConfig] = None,
                  resources: Optional[Resources] = None) -> PairResult:
    """Score one generated video against its reference (layout: docs/evaluation.md).

    ``audio``: the driving speech for LSE (default: the generated video's own audio track).
    ``resources``: share detector / SyncNet / reference decoding across calls (batches).
    """
    cfg = config or EvalConfig()
    res = resources or Resources(cfg)
    t0 = time.perf_counter()
    notes: List[str] = []
    generated, reference = Path(generated), Path(reference)
    if audio is not None and not Path(audio).is_file():
        raise InputError(f"audio file not found: {audio}")
    ref = res.reference(reference)
    gen, frames_g = _align_generated(generated, ref, notes)
    if audio is not None:
        audio_in = (Path(audio), "argument")
    elif gen.has_audio:
        audio_in = (gen.path, "generated")
    else:
        audio_in = (None, None)

    metrics: Dict[str, MetricResult] = {}
    errors: Dict[str, Tuple[str, str]] = {}
    for name in cfg.metrics:
        try:
            metrics[name] = _metric(name, frames_g, ref, gen, audio_in, cfg, res, notes)
        except MetricUnavailable as exc:
            errors[name] = (exc.status, exc.reason)
            metrics[name] = unavailable(name, exc.status, exc.reason)
    if cfg.explicit and errors and len(errors) == len(cfg.metrics):
        raise_none_computed(errors)
    return PairResult(
        generated=gen.info(), reference=ref.info(),
        audio_path=audio_in[0], audio_source=audio_in[1], sliding=cfg.sliding,
        min_overlap=cfg.min_overlap if cfg.sliding else None,
        max_offset=cfg.max_offset if cfg.sliding else 0,
        detector=res.detector_name(), metrics=metrics, notes=notes,
        seconds=round(time.perf_counter() - t0, 3))
