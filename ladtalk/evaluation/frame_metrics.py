"""The individual metrics of one pair, each under the Sliding Evaluation (or on G alone for
LSE). Each returns a typed entry or raises :class:`MetricUnavailable` with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ladtalk.errors import InputError
from ladtalk.evaluation.config import LSE_FPS, OK, UNAVAILABLE, EvalConfig
from ladtalk.evaluation.resources import MetricUnavailable, Resources, Video, decode_video
from ladtalk.evaluation.results import LSEMetric, SlidingMetric
from ladtalk.media.audio import load_audio
from ladtalk.metrics.image import mouth_psnr
from ladtalk.metrics.lse import SAMPLES_PER_FRAME, lse_scores, syncnet_crops
from ladtalk.metrics.sliding import (
    sliding_evaluation,
    sliding_frechet,
    sliding_search,
    sliding_sequence,
)
from ladtalk.metrics.temporal import temporal_error


def alignment(cfg: EvalConfig, m: int, n: int, need: int = 1) -> Dict[str, Optional[int]]:
    """``min_overlap`` / ``max_offset`` of the sliding search for G of m and R of n frames."""
    if min(m, n) < need:
        raise MetricUnavailable(UNAVAILABLE, f"needs at least {need} frames in both videos "
                                f"(generated {m}, reference {n})")
    if not cfg.sliding:
        return {"min_overlap": None, "max_offset": 0}
    mo = cfg.min_overlap
    if mo is not None:
        mo = max(need, min(mo, min(m, n)))
    return {"min_overlap": mo, "max_offset": cfg.max_offset}


def frame_metric(gen: np.ndarray, ref: np.ndarray, cfg: EvalConfig,
                 fn: Callable[[np.ndarray, np.ndarray], float]) -> SlidingMetric:
    """A per-frame score (PSNR, SSIM; higher is better) averaged at the best offset."""
    res = sliding_evaluation(gen, ref, fn, higher_is_better=True,
                             **alignment(cfg, len(gen), len(ref)))
    return SlidingMetric.from_sliding(res)


def mouth_metric(gen: np.ndarray, ref: np.ndarray, ref_boxes: np.ndarray,
                 cfg: EvalConfig) -> SlidingMetric:
    """Mouth-region PSNR on the reference's face boxes; frames without a face are skipped."""
    has_face = ~np.isnan(ref_boxes).any(axis=1)
    if not has_face.any():
        raise MetricUnavailable(UNAVAILABLE, "no face was detected in any reference frame")
    region = cfg.mouth_region

    def score_at(k: int, g0: int, g1: int) -> float:
        vals = [mouth_psnr(gen[i], ref[i + k], ref_boxes[i + k], region=region)
                for i in range(g0, g1) if has_face[i + k]]
        return float(np.mean(vals)) if vals else float("nan")

    try:
        res = sliding_search(len(gen), len(ref), score_at, True,
                             **alignment(cfg, len(gen), len(ref)))
    except InputError as exc:   # NaN everywhere: no face in any overlap
        raise MetricUnavailable(UNAVAILABLE, str(exc), exc) from exc
    r0 = max(res.offset, 0)       # first reference frame of the best overlap
    return SlidingMetric.from_sliding(
        res, face_frames=int(has_face[r0:r0 + res.overlap].sum()),
        region={"x0": region.x0, "x1": region.x1, "y0": region.y0, "y1": region.y1})


def temporal_metric(gen: np.ndarray, ref: np.ndarray, cfg: EvalConfig) -> SlidingMetric:
    res = sliding_sequence(gen, ref, temporal_error, higher_is_better=False,
                           **alignment(cfg, len(gen), len(ref), need=2))
    return SlidingMetric.from_sliding(res)


def fid_metric(gen: np.ndarray, ref: np.ndarray, cfg: EvalConfig,
               resources: Resources) -> SlidingMetric:
    align = alignment(cfg, len(gen), len(ref), need=2)
    extractor = resources.inception()
    return SlidingMetric.from_sliding(sliding_frechet(extractor(gen), extractor(ref), **align))


def longest_run(mask: np.ndarray) -> Tuple[int, int]:
    """``(start, stop)`` of the longest run of true values (``(0, 0)`` when none)."""
    best, start = (0, 0), None
    for i, v in enumerate(list(mask) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def lse_metric(gen: Video, audio_path: Optional[Path], audio_source: Optional[str],
               cfg: EvalConfig, resources: Resources, notes: List[str]) -> LSEMetric:
    """LSE-C / LSE-D of G at 25 fps on its longest run of frames with a face."""

    model = resources.syncnet()           # weights first: cheap to fail, and the usual gap
    if audio_path is None:
        raise MetricUnavailable(UNAVAILABLE, f"the generated video {gen.path} has no audio "
                                "track; pass --audio (the driving speech)")
    video = gen
    if abs(gen.fps - LSE_FPS) > 1e-3:
        video = decode_video(gen.path, fps=LSE_FPS, what="generated video")
        notes.append(f"LSE: generated video resampled from {gen.fps:g} to 25 fps for SyncNet")
    track = resources.track(video.frames, LSE_FPS, "generated video (LSE)")
    ok = ~np.isnan(track.boxes).any(axis=1)
    s, e = longest_run(ok)
    if e - s < 6:
        raise MetricUnavailable(UNAVAILABLE, f"the generated video {gen.path} has no run of "
                                f">= 6 frames with a detected face ({int(ok.sum())} of "
                                f"{len(ok)} frames have one)")
    if e - s < len(ok):
        notes.append(f"LSE: scored frames {s}..{e - 1} (the longest run with a face) of "
                     f"{len(ok)}")
    wav = load_audio(audio_path)[s * SAMPLES_PER_FRAME:e * SAMPLES_PER_FRAME]
    crops = syncnet_crops(video.frames[s:e], track.boxes[s:e])
    try:
        out = lse_scores(crops, wav, model, vshift=cfg.lse_vshift, channel_order="rgb")
    except InputError as exc:
        raise MetricUnavailable(UNAVAILABLE, str(exc), exc) from exc
    return LSEMetric(OK, lse_c=out["lse_c"], lse_d=out["lse_d"], offset=int(out["offset"]),
                     n_windows=int(out["n_windows"]), frames=(int(s), int(e)),
                     audio_source=audio_source)
