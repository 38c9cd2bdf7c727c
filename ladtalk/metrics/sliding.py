"""Sliding Evaluation (LaDTalk paper): score a generated clip at its best alignment.

A generated sequence G (m frames, often shorter than the reference because generation
drops or trims frames) slides over the reference R (n frames). **Offset** k aligns G[i] with
R[i + k]; the overlap is i in [max(0, -k), min(m, n - k)). For every admissible offset the
metric is averaged over the overlapping frame pairs, and the best average is reported - the
maximum for similarities (PSNR, SSIM), the minimum for distances (FID, temporal error) -
together with its offset.

Admissible offsets: those whose overlap has at least ``min_overlap`` frames. The default,
``min(m, n)``, slides the shorter sequence fully inside the longer one (offsets 0..n-m when
m <= n, the paper's setting; -(m-n)..0 when G is longer). ``max_offset`` additionally bounds
``|k|``. Ties go to the smallest offset. NaN scores are skipped.

The search itself is generic (:func:`sliding_search`); wrappers cover per-frame metrics
(:func:`sliding_evaluation`), metrics of aligned sub-sequences (:func:`sliding_sequence`, e.g.
temporal error) and the windowed Fréchet distance on per-frame features
(:func:`sliding_frechet`, i.e. sliding FID when the features are Inception features).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ladtalk.errors import InputError
from ladtalk.metrics.frechet import frechet_distance_from_features


@dataclass
class SlidingResult:
    """Best alignment of a sliding evaluation.

    ``offset``: G[i] is compared with R[i + offset]. ``overlap``: frames averaged there.
    ``offsets`` / ``scores``: every admissible offset and its score (for plots and checks).
    """

    score: float
    offset: int
    overlap: int
    higher_is_better: bool
    offsets: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        return {"score": self.score, "offset": self.offset, "overlap": self.overlap,
                "higher_is_better": self.higher_is_better}


def overlap_range(offset: int, m: int, n: int) -> tuple:
    """Index range ``(g_start, g_stop)`` of G overlapping R at ``offset`` (R index = G index
    + offset)."""
    return max(0, -offset), min(m, n - offset)


def valid_offsets(m: int, n: int, min_overlap: Optional[int] = None,
                  max_offset: Optional[int] = None) -> np.ndarray:
    """Admissible offsets, ascending (see module docstring)."""
    if m < 1 or n < 1:
        raise InputError(f"sliding evaluation needs non-empty sequences (got {m} and {n} frames)")
    need = min(m, n) if min_overlap is None else int(min_overlap)
    if not 1 <= need <= min(m, n):
        raise InputError(f"min_overlap must be in 1..{min(m, n)} for sequences of {m} and {n} "
                         f"frames, got {min_overlap}")
    ks = np.arange(-(m - need), n - need + 1)
    if max_offset is not None:
        ks = ks[np.abs(ks) <= int(max_offset)]
    if ks.size == 0:
        raise InputError(f"no offset within max_offset={max_offset} leaves {need} overlapping "
                         f"frames between sequences of {m} and {n} frames")
    return ks


def sliding_search(m: int, n: int, score_at: Callable[[int, int, int], float],
                   higher_is_better: bool, min_overlap: Optional[int] = None,
                   max_offset: Optional[int] = None) -> SlidingResult:
    """Evaluate ``score_at(offset, g_start, g_stop)`` at every admissible offset; keep the best."""
    ks = valid_offsets(m, n, min_overlap, max_offset)
    scores = np.array([float(score_at(int(k), *overlap_range(int(k), m, n))) for k in ks])
    if np.all(np.isnan(scores)):
        raise InputError("sliding evaluation: the metric returned NaN at every offset")
    best = int(np.nanargmax(scores) if higher_is_better else np.nanargmin(scores))
    k = int(ks[best])
    g0, g1 = overlap_range(k, m, n)
    return SlidingResult(score=float(scores[best]), offset=k, overlap=g1 - g0,
                         higher_is_better=higher_is_better, offsets=ks, scores=scores)


def sliding_evaluation(generated: Sequence[Any], reference: Sequence[Any],
                       metric: Callable[..., float], higher_is_better: bool = True,
                       min_overlap: Optional[int] = None, max_offset: Optional[int] = None,
                       pass_indices: bool = False) -> SlidingResult:
    """Sliding evaluation of a per-frame metric ``metric(g_frame, r_frame) -> float``.

    With ``pass_indices=True`` the metric is called as ``metric(g_frame, r_frame, g_index,
    r_index)`` (e.g. to look up the reference frame's face box for mouth PSNR).
    ``higher_is_better``: True for PSNR/SSIM, False for distances.
    """
    m, n = len(generated), len(reference)

    def score_at(k: int, g0: int, g1: int) -> float:
        if pass_indices:
            vals = [metric(generated[i], reference[i + k], i, i + k) for i in range(g0, g1)]
        else:
            vals = [metric(generated[i], reference[i + k]) for i in range(g0, g1)]
        return float(np.mean(vals))

    return sliding_search(m, n, score_at, higher_is_better, min_overlap, max_offset)


def sliding_sequence(generated: Sequence[Any], reference: Sequence[Any],
                     metric: Callable[[Any, Any], float], higher_is_better: bool = False,
                     min_overlap: Optional[int] = None,
                     max_offset: Optional[int] = None) -> SlidingResult:
    """Sliding evaluation of a metric on aligned sub-sequences, ``metric(G[g0:g1], R[r0:r1])``.

    For metrics that are not per-frame averages, e.g.
    :func:`~ladtalk.metrics.temporal.temporal_error` (give ``min_overlap >= 2`` there).
    """
    m, n = len(generated), len(reference)

    def score_at(k: int, g0: int, g1: int) -> float:
        return metric(generated[g0:g1], reference[g0 + k:g1 + k])

    return sliding_search(m, n, score_at, higher_is_better, min_overlap, max_offset)


def sliding_frechet(generated_features: np.ndarray, reference_features: np.ndarray,
                    min_overlap: Optional[int] = None, max_offset: Optional[int] = None,
                    eps: float = 1e-6) -> SlidingResult:
    """Windowed Fréchet distance: per-frame features ``(m, D)`` and ``(n, D)``; at each offset
    the Fréchet distance between the overlapping generated frames and the reference window.
    Lower is better. With Inception features this is the paper's sliding FID. Needs an
    overlap of >= 2 frames (covariances); with fewer frames than feature dimensions the
    covariances are singular and the eps-offset fallback of the Fréchet formula applies.
    """
    g = np.asarray(generated_features, dtype=np.float64)
    r = np.asarray(reference_features, dtype=np.float64)
    if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1]:
        raise InputError(f"sliding_frechet needs (frames, D) features with equal D, got "
                         f"{g.shape} and {r.shape}")
    if min(len(g), len(r)) < 2 or (min_overlap is not None and min_overlap < 2):
        raise InputError("sliding_frechet needs at least 2 overlapping frames")
    return sliding_search(
        len(g), len(r),
        lambda k, g0, g1: frechet_distance_from_features(g[g0:g1], r[g0 + k:g1 + k], eps),
        False, min_overlap, max_offset)
