"""Evaluate generated talking-head videos against their references (``python -m ladtalk eval``).

:func:`evaluate_pair` scores one generated video G against its reference (ground-truth)
video R; :func:`evaluate_batch` scores a CSV of pairs and aggregates them into a table like
Table 1 of the LaDTalk paper (method rows x metric columns, means over clips).

Metrics (names for ``metrics=`` / ``--metrics``)
------------------------------------------------
=============  ===========================================================  ======
name           what                                                         better
=============  ===========================================================  ======
``psnr``       PSNR (dB) of the whole RGB frame, mean over aligned frames   higher
``ssim``       Gaussian-window SSIM of the whole RGB frame, same averaging  higher
``mouth_psnr`` PSNR of the mouth region (:class:`~ladtalk.metrics.MouthRegion` higher
               of the *reference* frame's face box), frames without a
               reference face are left out of the mean
``temporal``   temporal error (flicker, :func:`~ladtalk.metrics.temporal_error`) lower
``fid``        Fréchet distance of Inception features (optional ``fid`` extra) lower
``lse``        LSE-C (higher better) and LSE-D (lower better) of G with the     -
               audio, SyncNet ``syncnet_v2.model`` as in syncnet_python
=============  ===========================================================  ======

Alignment (the paper's Sliding Evaluation, :mod:`ladtalk.metrics.sliding`): G[i] is compared
with R[i + k]; every admissible offset k is scored and the best score is kept, separately for
each metric. By default the shorter sequence slides fully inside the longer one (offsets
0..n-m when G has m <= n frames), so equal lengths give offset 0 only; ``min_overlap`` admits
partial overlaps and ``max_offset`` bounds |k|. ``sliding=False`` compares G[i] with R[i] for
the first min(m, n) frames. LSE needs no reference and is computed on G alone.

Preparation: both videos are decoded fully (uint8 RGB). When their frame rates differ G is
resampled to R's rate; when their sizes differ G is resized to R's size (INTER_AREA when
shrinking, INTER_CUBIC when enlarging); both are recorded in ``notes``. Face boxes come from
our own detector and tracker (:mod:`ladtalk.face`: ``--detector``, S3FD when its weights
resolve under ``auto``, else dlib): on R for the mouth region, on G (resampled to 25 fps) for
the SyncNet crops; LSE uses the longest run of G's frames that have a face.

Metrics whose weights are unavailable (FID without ``pytorch-fid`` / its Inception weights,
LSE without ``syncnet_v2.model``) are reported with status ``"needs weights"`` and the reason,
never as a crash - unless every requested metric was requested explicitly and none could be
computed, which raises the reason (:class:`~ladtalk.errors.CheckpointError` for weights).

JSON of one pair (``evaluate_pair`` return value; ``--json OUT``)
-------------------------------------------------------------------
::

    {
      "format": "ladtalk-eval/1",
      "generated": {"path": str, "frames": int, "fps": float, "size": [w, h]},
      "reference": {"path": str, "frames": int, "fps": float, "size": [w, h]},
      "audio": {"path": str|null, "source": "argument"|"generated"|null},
      "alignment": {"sliding": bool, "min_overlap": int|null, "max_offset": int|null},
      "detector": str|null,                       # face detector actually used
      "metrics": {
        "psnr": {"status": "ok", "value": float, "offset": int, "overlap": int,
                 "higher_is_better": true},
        "ssim": {... same keys ...},
        "mouth_psnr": {... same keys ..., "face_frames": int, "region": {x0, x1, y0, y1}},
        "temporal": {... same keys ...},
        "fid": {"status": "needs weights", "value": null, "reason": str},
        "lse": {"status": "ok", "lse_c": float, "lse_d": float, "offset": int,
                "n_windows": int, "frames": [start, stop], "audio_source": str},
        ...
      },
      "summary": {"psnr": float, "ssim": float, "mouth_psnr": float, "temporal": float,
                  "fid": float|"needs weights"|"unavailable",
                  "lse_c": ..., "lse_d": ...},   # one flat value per table column
      "notes": [str, ...],
      "seconds": float
    }

``status`` is ``"ok"``, ``"needs weights"`` (weights or an optional package are missing;
``reason`` says which and how to get them) or ``"unavailable"`` (the inputs do not allow it:
no audio, no face, too few frames; ``reason`` says why). When the status is not ``"ok"`` the
value fields are ``null``. For ``psnr``/``ssim``/``mouth_psnr``/``temporal``/``fid``,
``offset`` is the best sliding offset k (G[i] ~ R[i + k]) and ``overlap`` the number of frames
averaged there; for ``lse``, ``offset`` is SyncNet's audio-video offset in frames (positive:
audio leads). Only requested metrics appear. Non-finite numbers (PSNR of identical frames)
are written as the strings ``"inf"`` / ``"nan"`` so the file stays strict JSON.

Batch (``evaluate_batch``; ``--pairs pairs.csv``)
-------------------------------------------------
The CSV has a header with columns ``method, generated, reference`` and optionally ``audio``
(relative paths are relative to the CSV's folder). The result's JSON is
``{"format": "ladtalk-eval-batch/1", "columns": [...], "table": {METHOD: {COLUMN: {"mean":
float|null, "n": int, "of": int, "status": str}}}, "clips": [{"method": str, **pair JSON}]}``
where ``n`` counts the clips with a value and ``of`` the method's clips; ``status`` is ``"ok"``
when at least one clip had a value, otherwise the clips' status (e.g. ``"needs weights"``).
The CSV output has one row per method: ``method, clips, <column>...`` with the mean, or the
status text when no clip had a value.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ladtalk.errors import CheckpointError, InputError, LadTalkError
from ladtalk.metrics.image import MouthRegion, mouth_psnr, psnr, ssim
from ladtalk.metrics.sliding import (
    SlidingResult,
    sliding_evaluation,
    sliding_search,
    sliding_sequence,
)
from ladtalk.metrics.temporal import temporal_error

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

METRICS: Tuple[str, ...] = ("psnr", "ssim", "mouth_psnr", "temporal", "fid", "lse")

#: Table columns: key -> (header, higher_is_better, decimals). ``lse`` gives two columns.
COLUMNS: Dict[str, Tuple[str, bool, int]] = {
    "psnr": ("PSNR", True, 2),
    "ssim": ("SSIM", True, 4),
    "mouth_psnr": ("Mouth PSNR", True, 2),
    "temporal": ("Temporal err", False, 4),
    "fid": ("FID", False, 2),
    "lse_c": ("LSE-C", True, 3),
    "lse_d": ("LSE-D", False, 3),
}

OK = "ok"
NEEDS_WEIGHTS = "needs weights"
UNAVAILABLE = "unavailable"

LSE_FPS = 25.0
FORMAT = "ladtalk-eval/1"
BATCH_FORMAT = "ladtalk-eval-batch/1"


def metric_columns(metrics: Sequence[str]) -> List[str]:
    """Table columns of the given metrics, in :data:`COLUMNS` order."""
    cols: List[str] = []
    for key in COLUMNS:
        src = "lse" if key in ("lse_c", "lse_d") else key
        if src in metrics:
            cols.append(key)
    return cols


def parse_metrics(text: Union[str, Sequence[str], None]) -> Tuple[str, ...]:
    """``"psnr,ssim"`` (or a list) -> validated tuple in canonical order; ``None``/"all" -> all."""
    if text is None:
        return METRICS
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip().lower().replace("-", "_") for s in items if s and s.strip()]
    if not names or names == ["all"]:
        return METRICS
    aliases = {"lse_c": "lse", "lse_d": "lse", "mouth": "mouth_psnr", "flicker": "temporal"}
    names = [aliases.get(n, n) for n in names]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(METRICS)} (comma-separated) or 'all'")
    return tuple(m for m in METRICS if m in names)


@dataclass
class EvalConfig:
    """Options of :func:`evaluate_pair` / :func:`evaluate_batch` (CLI flags in brackets).

    ``explicit``: the metrics were chosen by the user; then "none of them could be computed"
    is an error instead of a report. ``syncnet``: SyncNet checkpoint reference (``--syncnet``;
    default ``$LADTALK_SYNCNET`` / the Hub mirror). ``detector``: ``auto``/``s3fd``/``dlib``.
    """

    metrics: Tuple[str, ...] = METRICS
    explicit: bool = False
    sliding: bool = True
    min_overlap: Optional[int] = None
    max_offset: Optional[int] = None
    detector: str = "auto"
    detect_every: int = 1
    s3fd: Optional[str] = None
    syncnet: Optional[str] = None
    device: Optional[str] = None
    mouth_region: MouthRegion = field(default_factory=MouthRegion)
    lse_vshift: int = 15
    progress: bool = False

    def __post_init__(self) -> None:
        self.metrics = parse_metrics(self.metrics)
        if self.min_overlap is not None and self.min_overlap < 1:
            raise InputError(f"--min-overlap must be >= 1, got {self.min_overlap}")
        if self.max_offset is not None and self.max_offset < 0:
            raise InputError(f"--max-offset must be >= 0, got {self.max_offset}")
        if self.detect_every < 1:
            raise InputError(f"--detect-every must be >= 1, got {self.detect_every}")


# ----------------------------------------------------------------------------------------------
# shared resources (detector, SyncNet, Inception) and a one-entry reference cache


class _MetricUnavailable(Exception):
    """Internal: a metric cannot be computed; ``status`` is NEEDS_WEIGHTS or UNAVAILABLE."""

    def __init__(self, status: str, reason: str, error: Optional[BaseException] = None):
        super().__init__(reason)
        self.status, self.reason, self.error = status, reason, error


class Resources:
    """Lazily built, reusable heavy objects; one per batch so pairs share them.

    A failure to build one is remembered, so a batch reports it once per clip without
    retrying the (possibly slow) resolution.
    """

    def __init__(self, config: EvalConfig):
        self.config = config
        self._cache: Dict[str, Any] = {}
        self._reference: Optional[Tuple[tuple, "_Video", Optional[np.ndarray]]] = None

    def _get(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            try:
                self._cache[key] = build()
            except _MetricUnavailable as exc:
                self._cache[key] = exc
        value = self._cache[key]
        if isinstance(value, _MetricUnavailable):
            raise value
        return value

    def detector(self):
        def build():
            from ladtalk.face import make_detector
            try:
                return make_detector(self.config.detector, device=self.config.device,
                                     weights=self.config.s3fd)
            except CheckpointError as exc:
                raise _MetricUnavailable(NEEDS_WEIGHTS, f"face detector: {exc}", exc)
        return self._get("detector", build)

    def syncnet(self):
        def build():
            from ladtalk.metrics.lse import load_syncnet_lse
            try:
                return load_syncnet_lse(self.config.syncnet, device=self.config.device)
            except CheckpointError as exc:
                raise _MetricUnavailable(
                    NEEDS_WEIGHTS, f"SyncNet weights (syncnet_v2.model) unavailable: {str(exc).rstrip('. ')}. "
                    "Pass --syncnet PATH or set LADTALK_SYNCNET to a local copy", exc)
        return self._get("syncnet", build)

    def inception(self):
        def build():
            from ladtalk.metrics.frechet import InceptionFeatures
            try:
                return InceptionFeatures(self.config.device)
            except LadTalkError as exc:   # missing extra, or weights not downloadable
                raise _MetricUnavailable(NEEDS_WEIGHTS, str(exc), exc)
        return self._get("inception", build)


# ----------------------------------------------------------------------------------------------
# decoding


@dataclass
class _Video:
    path: Path
    frames: np.ndarray          # (n, H, W, 3) uint8 RGB
    fps: float
    has_audio: bool

    @property
    def size(self) -> Tuple[int, int]:
        return (int(self.frames.shape[2]), int(self.frames.shape[1]))

    def describe(self) -> dict:
        return {"path": str(self.path), "frames": int(len(self.frames)),
                "fps": round(float(self.fps), 6), "size": list(self.size)}


def _decode(path: PathLike, fps: Optional[float] = None, what: str = "video") -> _Video:
    from ladtalk.media.video import iter_frames, probe

    info = probe(path)
    if info.is_image:
        raise InputError(f"{what} {info.path} is a still image; evaluation needs a video")
    chunks = list(iter_frames(info.path, fps=fps, info=info))
    if not chunks:
        raise InputError(f"{what} {info.path} has no decodable frames")
    frames = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    rate = float(fps) if fps is not None else float(info.fps or LSE_FPS)
    return _Video(path=info.path, frames=frames, fps=rate, has_audio=bool(info.has_audio))


def _file_key(path: Path, fps: Optional[float]) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size, fps)


def _resize_frames(frames: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2
    w, h = size
    shrink = w * h < frames.shape[1] * frames.shape[2]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


def _track(frames: np.ndarray, fps: float, resources: Resources, what: str):
    from ladtalk.face import track_faces

    detector = resources.detector()
    bar = _bar(len(frames), f"faces in {what}", resources.config.progress)
    try:
        track = track_faces(frames, detector, fps, detect_every=resources.config.detect_every,
                            progress=(lambda n: bar.update(n - bar.n)) if bar else None)
    finally:
        if bar:
            bar.close()
    return track


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="frame", leave=False)


# ----------------------------------------------------------------------------------------------
# individual metrics


def _sliding_entry(res: SlidingResult) -> dict:
    return {"status": OK, "value": res.score, "offset": res.offset, "overlap": res.overlap,
            "higher_is_better": res.higher_is_better}


def _alignment(cfg: EvalConfig, m: int, n: int, need: int = 1) -> dict:
    if min(m, n) < need:
        raise _MetricUnavailable(UNAVAILABLE, f"needs at least {need} frames in both videos "
                                 f"(generated {m}, reference {n})")
    if not cfg.sliding:
        return {"min_overlap": None, "max_offset": 0}
    mo = cfg.min_overlap
    if mo is not None:
        mo = max(need, min(mo, min(m, n)))
    return {"min_overlap": mo, "max_offset": cfg.max_offset}


def _frame_metric(gen: np.ndarray, ref: np.ndarray, cfg: EvalConfig,
                  fn: Callable[[np.ndarray, np.ndarray], float]) -> dict:
    res = sliding_evaluation(gen, ref, fn, higher_is_better=True,
                             **_alignment(cfg, len(gen), len(ref)))
    return _sliding_entry(res)


def _mouth(gen: np.ndarray, ref: np.ndarray, ref_boxes: np.ndarray, cfg: EvalConfig) -> dict:
    has_face = ~np.isnan(ref_boxes).any(axis=1)
    if not has_face.any():
        raise _MetricUnavailable(UNAVAILABLE, "no face was detected in any reference frame")
    region = cfg.mouth_region

    def score_at(k: int, g0: int, g1: int) -> float:
        vals = [mouth_psnr(gen[i], ref[i + k], ref_boxes[i + k], region=region)
                for i in range(g0, g1) if has_face[i + k]]
        return float(np.mean(vals)) if vals else float("nan")

    try:
        res = sliding_search(len(gen), len(ref), score_at, True,
                             **_alignment(cfg, len(gen), len(ref)))
    except InputError as exc:   # NaN everywhere: no face in any overlap
        raise _MetricUnavailable(UNAVAILABLE, str(exc), exc)
    entry = _sliding_entry(res)
    r0 = max(res.offset, 0)       # first reference frame of the best overlap
    entry["face_frames"] = int(has_face[r0:r0 + res.overlap].sum())
    entry["region"] = {"x0": region.x0, "x1": region.x1, "y0": region.y0, "y1": region.y1}
    return entry


def _temporal(gen: np.ndarray, ref: np.ndarray, cfg: EvalConfig) -> dict:
    res = sliding_sequence(gen, ref, temporal_error, higher_is_better=False,
                           **_alignment(cfg, len(gen), len(ref), need=2))
    return _sliding_entry(res)


def _fid(gen: np.ndarray, ref: np.ndarray, cfg: EvalConfig, resources: Resources) -> dict:
    from ladtalk.metrics.sliding import sliding_frechet

    align = _alignment(cfg, len(gen), len(ref), need=2)
    extractor = resources.inception()
    res = sliding_frechet(extractor(gen), extractor(ref), **align)
    return _sliding_entry(res)


def _longest_run(mask: np.ndarray) -> Tuple[int, int]:
    best, start = (0, 0), None
    for i, v in enumerate(list(mask) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def _lse(gen: _Video, audio_path: Optional[Path], audio_source: Optional[str],
         cfg: EvalConfig, resources: Resources, notes: List[str]) -> dict:
    from ladtalk.media.audio import load_audio
    from ladtalk.metrics.lse import SAMPLES_PER_FRAME, lse_scores, syncnet_crops

    model = resources.syncnet()           # weights first: cheap to fail, and the usual gap
    if audio_path is None:
        raise _MetricUnavailable(UNAVAILABLE, f"the generated video {gen.path} has no audio "
                                 "track; pass --audio (the driving speech)")
    video = gen
    if abs(gen.fps - LSE_FPS) > 1e-3:
        video = _decode(gen.path, fps=LSE_FPS, what="generated video")
        notes.append(f"LSE: generated video resampled from {gen.fps:g} to 25 fps for SyncNet")
    track = _track(video.frames, LSE_FPS, resources, "generated video (LSE)")
    ok = ~np.isnan(track.boxes).any(axis=1)
    s, e = _longest_run(ok)
    if e - s < 6:
        raise _MetricUnavailable(UNAVAILABLE, f"the generated video {gen.path} has no run of "
                                 f">= 6 frames with a detected face ({int(ok.sum())} of "
                                 f"{len(ok)} frames have one)")
    if e - s < len(ok):
        notes.append(f"LSE: scored frames {s}..{e - 1} (the longest run with a face) of "
                     f"{len(ok)}")
    wav = load_audio(audio_path)
    wav = wav[s * SAMPLES_PER_FRAME:e * SAMPLES_PER_FRAME]
    crops = syncnet_crops(video.frames[s:e], track.boxes[s:e])
    try:
        out = lse_scores(crops, wav, model, vshift=cfg.lse_vshift, channel_order="rgb")
    except InputError as exc:
        raise _MetricUnavailable(UNAVAILABLE, str(exc), exc)
    return {"status": OK, "lse_c": out["lse_c"], "lse_d": out["lse_d"],
            "offset": int(out["offset"]), "n_windows": int(out["n_windows"]),
            "frames": [int(s), int(e)], "audio_source": audio_source}


# ----------------------------------------------------------------------------------------------
# one pair


def _unavailable_entry(metric: str, status: str, reason: str) -> dict:
    if metric == "lse":
        return {"status": status, "lse_c": None, "lse_d": None, "offset": None, "reason": reason}
    return {"status": status, "value": None, "offset": None, "overlap": None, "reason": reason}


def summarize(metrics: Dict[str, dict]) -> Dict[str, Any]:
    """Flat ``{column: value | status}`` from the per-metric entries (see module docstring)."""
    out: Dict[str, Any] = {}
    for col in metric_columns(list(metrics)):
        src = "lse" if col in ("lse_c", "lse_d") else col
        entry = metrics[src]
        if entry["status"] != OK:
            out[col] = entry["status"]
        else:
            out[col] = entry[col] if src == "lse" else entry["value"]
    return out


def evaluate_pair(generated: PathLike, reference: PathLike, audio: Optional[PathLike] = None,
                  config: Optional[EvalConfig] = None,
                  resources: Optional[Resources] = None) -> dict:
    """Score one generated video against its reference; returns the documented JSON dict.

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

    ref = _reference(reference, res)
    gen = _decode(generated, what="generated video")
    if abs(gen.fps - ref.fps) > 1e-3:
        notes.append(f"generated video resampled from {gen.fps:g} to the reference's "
                     f"{ref.fps:g} fps")
        gen_aligned = _decode(generated, fps=ref.fps, what="generated video").frames
    else:
        gen_aligned = gen.frames
    if gen.size != ref.size:
        notes.append(f"generated frames resized from {gen.size[0]}x{gen.size[1]} to the "
                     f"reference's {ref.size[0]}x{ref.size[1]}")
        gen_aligned = _resize_frames(gen_aligned, ref.size)

    if audio is not None:
        audio_path, audio_source = Path(audio), "argument"
    elif gen.has_audio:
        audio_path, audio_source = gen.path, "generated"
    else:
        audio_path, audio_source = None, None

    frames_g, frames_r = gen_aligned, ref.frames
    metrics: Dict[str, dict] = {}
    errors: Dict[str, _MetricUnavailable] = {}
    for name in cfg.metrics:
        try:
            if name == "psnr":
                metrics[name] = _frame_metric(frames_g, frames_r, cfg, psnr)
            elif name == "ssim":
                metrics[name] = _frame_metric(frames_g, frames_r, cfg, ssim)
            elif name == "mouth_psnr":
                metrics[name] = _mouth(frames_g, frames_r, _reference_boxes(reference, res), cfg)
            elif name == "temporal":
                metrics[name] = _temporal(frames_g, frames_r, cfg)
            elif name == "fid":
                metrics[name] = _fid(frames_g, frames_r, cfg, res)
            elif name == "lse":
                metrics[name] = _lse(gen, audio_path, audio_source, cfg, res, notes)
        except _MetricUnavailable as exc:
            errors[name] = exc
            metrics[name] = _unavailable_entry(name, exc.status, exc.reason)

    if cfg.explicit and errors and len(errors) == len(cfg.metrics):
        _raise_none_computed(errors)

    detector = res._cache.get("detector")
    result = {
        "format": FORMAT,
        "generated": gen.describe(),
        "reference": ref.describe(),
        "audio": {"path": str(audio_path) if audio_path else None, "source": audio_source},
        "alignment": {"sliding": cfg.sliding,
                      "min_overlap": cfg.min_overlap if cfg.sliding else None,
                      "max_offset": cfg.max_offset if cfg.sliding else 0},
        "detector": getattr(detector, "name", None) if detector is not None
        and not isinstance(detector, Exception) else None,
        "metrics": metrics,
        "summary": summarize(metrics),
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return result


def _raise_none_computed(errors: Dict[str, _MetricUnavailable]) -> None:
    lines = "; ".join(f"{k}: {v.status} ({v.reason})" for k, v in errors.items())
    msg = f"none of the requested metrics could be computed - {lines}"
    if any(v.status == NEEDS_WEIGHTS for v in errors.values()):
        raise CheckpointError(msg)
    raise InputError(msg)


def _reference(path: Path, res: Resources) -> _Video:
    """Decode the reference, reusing the last one (batches list a reference per method)."""
    if not path.is_file():
        raise InputError(f"reference video not found: {path}")
    key = _file_key(path, None)
    if res._reference is not None and res._reference[0] == key:
        return res._reference[1]
    video = _decode(path, what="reference video")
    res._reference = (key, video, None)
    return video


def _reference_boxes(path: Path, res: Resources) -> np.ndarray:
    key, video, boxes = res._reference
    if boxes is None:
        boxes = _track(video.frames, video.fps, res, "reference video").boxes
        res._reference = (key, video, boxes)
    return boxes


# ----------------------------------------------------------------------------------------------
# JSON helpers


def jsonable(obj: Any) -> Any:
    """Recursively convert numpy types and non-finite floats ("inf"/"nan") for strict JSON."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    return obj


def _atomic_write(path: PathLike, text: str) -> Path:
    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise InputError(f"output folder does not exist: {path.parent}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(obj: Any, path: PathLike) -> Path:
    """Write ``obj`` as strict, indented JSON (atomically)."""
    return _atomic_write(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------------------------
# batch


@dataclass(frozen=True)
class PairSpec:
    """One row of the pairs CSV."""

    method: str
    generated: Path
    reference: Path
    audio: Optional[Path] = None


def read_pairs_csv(path: PathLike) -> List[PairSpec]:
    """Read ``method, generated, reference[, audio]`` rows; relative paths are CSV-relative."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pairs CSV not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        missing = [c for c in ("method", "generated", "reference") if c not in fields]
        if missing:
            raise InputError(f"{path}: the header must name the columns method, generated, "
                             f"reference (and optionally audio); missing {', '.join(missing)}")
        rows = []
        for lineno, raw in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
            if not any(row.values()):
                continue

            def resolve(value: str) -> Path:
                p = Path(value).expanduser()
                return p if p.is_absolute() else path.parent / p

            for col in ("method", "generated", "reference"):
                if not row.get(col):
                    raise InputError(f"{path} line {lineno}: empty '{col}'")
            rows.append(PairSpec(method=row["method"], generated=resolve(row["generated"]),
                                 reference=resolve(row["reference"]),
                                 audio=resolve(row["audio"]) if row.get("audio") else None))
    if not rows:
        raise InputError(f"{path} lists no pairs")
    return rows


@dataclass
class BatchResult:
    """Per-clip results and the per-method table (see the module docstring for the JSON)."""

    columns: List[str]
    methods: List[str]
    table: Dict[str, Dict[str, dict]]
    clips: List[dict]
    n_clips: Dict[str, int]

    def to_dict(self) -> dict:
        return {"format": BATCH_FORMAT, "columns": self.columns, "methods": self.methods,
                "n_clips": self.n_clips, "table": self.table, "clips": self.clips}

    def cell(self, method: str, col: str) -> Union[float, str]:
        c = self.table[method][col]
        return c["mean"] if c["status"] == OK else c["status"]

    def format_table(self, title: Optional[str] = None) -> str:
        """The table as aligned text: method rows x metric columns (means over clips).

        A cell averaged over fewer clips than the method has is marked ``*`` (some clips
        had no value); cells without any value show the status (e.g. ``needs weights``).
        """
        heads = ["Method"] + [f"{COLUMNS[c][0]} {'↑' if COLUMNS[c][1] else '↓'}"
                              for c in self.columns] + ["clips"]
        rows = []
        for m in self.methods:
            row = [m]
            for c in self.columns:
                cell = self.table[m][c]
                if cell["status"] == OK:
                    text = _fmt(cell["mean"], COLUMNS[c][2])
                    if cell["n"] < cell["of"]:
                        text += "*"
                else:
                    text = cell["status"]
                row.append(text)
            row.append(str(self.n_clips[m]))
            rows.append(row)
        widths = [max(len(r[i]) for r in [heads] + rows) for i in range(len(heads))]
        lines = []
        if title:
            lines.append(title)
        fmt_row = lambda r: "| " + " | ".join(  # noqa: E731
            (v.ljust(w) if i == 0 else v.rjust(w)) for i, (v, w) in enumerate(zip(r, widths))
        ) + " |"
        lines.append(fmt_row(heads))
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines.extend(fmt_row(r) for r in rows)
        return "\n".join(lines)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "clips"] + self.columns)
        for m in self.methods:
            w.writerow([m, self.n_clips[m]] + [_csv_cell(self.cell(m, c)) for c in self.columns])
        return buf.getvalue()

    def write_csv(self, path: PathLike) -> Path:
        return _atomic_write(path, self.to_csv())

    def write_json(self, path: PathLike) -> Path:
        return write_json(self.to_dict(), path)


def _fmt(v: Any, decimals: int) -> str:
    if isinstance(v, (int, float)) and math.isfinite(v):
        return f"{v:.{decimals}f}"
    return str(jsonable(v))


def _csv_cell(v: Any) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(jsonable(v))
    return str(v)


def aggregate(clips: Sequence[dict], columns: Sequence[str]) -> Tuple[List[str], Dict, Dict]:
    """Per-method means of each column over the clips that have a finite value."""
    methods: List[str] = []
    for c in clips:
        if c["method"] not in methods:
            methods.append(c["method"])
    table: Dict[str, Dict[str, dict]] = {}
    counts: Dict[str, int] = {}
    for m in methods:
        mine = [c for c in clips if c["method"] == m]
        counts[m] = len(mine)
        table[m] = {}
        for col in columns:
            vals, statuses = [], []
            for c in mine:
                v = c["summary"].get(col)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    vals.append(float(v))
                else:
                    statuses.append(str(v))
            finite = [v for v in vals if math.isfinite(v)]
            if vals:
                mean = float(np.mean(finite)) if finite else float(np.mean(vals))
                table[m][col] = {"mean": mean, "n": len(vals), "of": len(mine), "status": OK}
            else:
                status = max(set(statuses), key=statuses.count) if statuses else UNAVAILABLE
                table[m][col] = {"mean": None, "n": 0, "of": len(mine), "status": status}
    return methods, table, counts


def evaluate_batch(pairs: Union[PathLike, Sequence[PairSpec]],
                   config: Optional[EvalConfig] = None) -> BatchResult:
    """Evaluate every pair of a CSV (or a list of :class:`PairSpec`) and aggregate per method.

    Pairs are processed grouped by reference so each reference is decoded and tracked once.
    """
    cfg = config or EvalConfig()
    specs = read_pairs_csv(pairs) if isinstance(pairs, (str, os.PathLike)) else list(pairs)
    if not specs:
        raise InputError("no pairs to evaluate")
    order = sorted(range(len(specs)), key=lambda i: (str(specs[i].reference), i))
    res = Resources(cfg)
    clips: List[Optional[dict]] = [None] * len(specs)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(specs), desc="evaluating pairs", unit="pair")
    # a batch never raises "none computed" per pair; the table shows the statuses instead
    pair_cfg = EvalConfig(**{**cfg.__dict__, "explicit": False})
    try:
        for i in order:
            s = specs[i]
            out = evaluate_pair(s.generated, s.reference, s.audio, pair_cfg, res)
            clips[i] = {"method": s.method, **out}
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
    done = [c for c in clips if c is not None]
    columns = metric_columns(cfg.metrics)
    if cfg.explicit:
        computed = any(c["metrics"][k]["status"] == OK for c in done for k in c["metrics"])
        if not computed:
            errs = {k: _MetricUnavailable(v["status"], v.get("reason", ""))
                    for k, v in done[0]["metrics"].items()}
            _raise_none_computed(errs)
    methods, table, counts = aggregate(done, columns)
    return BatchResult(columns=columns, methods=methods, table=table, clips=done,
                       n_clips=counts)


def single_table(result: dict, method: str = "generated") -> BatchResult:
    """A one-row :class:`BatchResult` of one :func:`evaluate_pair` result (for printing)."""
    clip = {"method": method, **result}
    columns = metric_columns(list(result["metrics"]))
    methods, table, counts = aggregate([clip], columns)
    return BatchResult(columns=columns, methods=methods, table=table, clips=[clip],
                       n_clips=counts)


__all__ = ["METRICS", "COLUMNS", "NEEDS_WEIGHTS", "UNAVAILABLE", "OK", "EvalConfig",
           "Resources", "evaluate_pair", "evaluate_batch", "read_pairs_csv", "PairSpec",
           "BatchResult", "aggregate", "summarize", "single_table", "parse_metrics",
           "metric_columns", "jsonable", "write_json"]
