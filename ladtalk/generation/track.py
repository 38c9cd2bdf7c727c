"""The TRACK step: where the face is in every source frame, and what that depends on.

:func:`track_source` detects and smooths the face boxes over the source frames (or takes the
fixed ``--box``) and returns a :class:`SourceTrack`. A later run on the same face file with
the same framing options can pass that track back (``Pipeline.run(..., track=...)``) and
skip detection; :meth:`SourceTrack.mismatch` says why a track does not fit a call.

Tracks are also cached on disk (:func:`track_cache`, ``$LADTALK_HOME/cache/tracks``), keyed by
the face file's *content* and the framing key without the file's path and times, plus the
detector's settings: a second run on the same content, even a copy at another path, detects
nothing. Only detectors LaDTalk builds itself are cached (an injected detector may depend on
anything). Keys, bound and eviction: ``docs/storage.md``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path, PurePath
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ladtalk._util.diskcache import DiskCache, cache_limit, content_key
from ladtalk._util.jsonsafe import to_jsonable
from ladtalk._util.paths import ladtalk_home
from ladtalk.face.detect import FixedBoxDetector
from ladtalk.face.track import FaceTrack, track_faces
from ladtalk.generation.inputs import SourcePlan
from ladtalk.generation.options import GenerateOptions
from ladtalk.media.framesource import decode_chunks
from ladtalk.media.probe import estimate_frames

Report = Callable[[str, int, int], None]
log = logging.getLogger(__name__)

#: environment variable bounding the face-track cache, in MB, and its default
TRACK_CACHE_ENV = "LADTALK_TRACK_CACHE_MB"
TRACK_CACHE_MB = 256
#: version of the cached track's layout and key
TRACK_CACHE_VERSION = 1
_TRACK_FILE = "track.json"


@dataclass(frozen=True)
class FileStamp:
    """Identity of a file on disk: resolved path, size in bytes, modification time (ns)."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: os.PathLike) -> "FileStamp":
        p = Path(path)
        st = p.stat()
        return cls(path=str(p.resolve()), size=int(st.st_size), mtime_ns=int(st.st_mtime_ns))


def framing_key(face: FileStamp, plan: SourcePlan, opts: GenerateOptions) -> Dict[str, Any]:
    """Everything a track depends on, for one call (compared by :meth:`SourceTrack.mismatch`)."""
    return {
        "face": face, "frame_size": tuple(plan.size), "fps": float(plan.fps),
        "detector": "box" if opts.box is not None else str(opts.detector or "auto").lower(),
        "pads": tuple(int(p) for p in opts.pads), "smooth": bool(opts.smooth),
        "resize_factor": int(opts.resize_factor),
        "box": None if opts.box is None else tuple(float(v) for v in opts.box),
    }


@dataclass
class SourceTrack:
    """Face boxes of the source frames of one face input, with the inputs they came from.

    ``boxes``: per source frame ``(x1, y1, x2, y2)`` in output pixels (NaN: no face), or
    ``None`` with a fixed box (``fixed``). ``message``: the missing-face warning ('' if none).
    """

    face: FileStamp
    frame_size: Tuple[int, int]
    fps: float
    detector: str
    pads: Tuple[int, int, int, int]
    smooth: bool
    resize_factor: int
    box: Optional[Tuple[float, float, float, float]]
    boxes: Optional[np.ndarray] = None
    fixed: Optional[np.ndarray] = None
    n_source_frames: Optional[int] = None
    missing_timestamps: List[float] = field(default_factory=list)
    message: str = ""

    def key(self) -> Dict[str, Any]:
        """This track's :func:`framing_key`: its fields without a default (the ones
        ``SourceTrack(**framing_key(...))`` fills)."""
        key = {name: getattr(self, name) for name in _KEY_FIELDS}
        key.update(frame_size=tuple(self.frame_size), fps=float(self.fps),
                   pads=tuple(self.pads))
        return key

    def mismatch(self, key: Dict[str, Any]) -> Optional[str]:
        """Why this track does not fit a call with ``key`` (:func:`framing_key`), or None."""
        mine = self.key()
        diff = [k for k in key if mine.get(k) != key[k]]
        if not diff:
            return None
        return ", ".join(f"{k} {mine.get(k)!r} != {key[k]!r}" for k in diff)

    def box_of(self, s: int) -> Optional[np.ndarray]:
        """The face box of source frame ``s`` (None: no face there)."""
        if self.fixed is not None:
            return self.fixed
        if self.boxes is None or s >= len(self.boxes) or np.isnan(self.boxes[s]).any():
            return None
        return self.boxes[s]


_KEY_FIELDS = tuple(f.name for f in fields(SourceTrack)
                    if f.default is MISSING and f.default_factory is MISSING)


def track_cache() -> DiskCache:
    """The face-track cache: ``$LADTALK_HOME/cache/tracks``, bounded by
    ``LADTALK_TRACK_CACHE_MB`` (default :data:`TRACK_CACHE_MB`), least recently used out first."""
    return DiskCache(ladtalk_home() / "cache" / "tracks",
                     cache_limit(TRACK_CACHE_ENV, TRACK_CACHE_MB))


def _plain(v: Any) -> Any:
    """A detector setting as a JSON value, or None when it is no plain setting."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (tuple, list)) and all(isinstance(x, (int, float)) for x in v):
        return [float(x) for x in v]
    if isinstance(v, PurePath) or type(v).__name__ == "device":
        return str(v)
    if type(v).__module__.startswith("ladtalk."):  # a wrapped LaDTalk detector
        return detector_signature(v)
    return None


def detector_signature(detector: Any) -> Optional[Dict[str, Any]]:
    """What a detector's boxes depend on (class and its plain settings: max side, retry side,
    threshold, upsampling, device, weights path and that file's size and time), or None when
    its tracks must not be cached: a fixed box (nothing to detect) or a detector LaDTalk did
    not build."""
    cls = type(detector)
    if isinstance(detector, FixedBoxDetector) or not cls.__module__.startswith("ladtalk."):
        return None
    sig: Dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}",
                           "name": str(getattr(detector, "name", ""))}
    for k, v in sorted(getattr(detector, "__dict__", {}).items()):
        if not k.startswith("_") and (value := _plain(v)) is not None:
            sig[k] = value
    weights = getattr(detector, "weights_path", None)
    if weights is not None and Path(weights).is_file():  # the weights' file, not only its name
        st = Path(weights).stat()
        sig["weights_file"] = [int(st.st_size), int(st.st_mtime_ns)]
    return sig


def track_cache_key(face: Path, key: Dict[str, Any], detector: Any,
                    chunk_size: int) -> Optional[str]:
    """The cache key of a track (None: not cacheable): the face file's content, the framing
    key without ``face`` (path and times), the detection chunk size (a detector's retries
    at larger sizes are decided per chunk) and :func:`detector_signature`."""
    sig = detector_signature(detector)
    if sig is None:
        return None
    params = {k: v for k, v in key.items() if k != "face"}
    return content_key(face, version=TRACK_CACHE_VERSION, framing=params, detector=sig,
                       chunk_size=int(chunk_size))


def _rows(boxes: np.ndarray) -> List[Optional[List[float]]]:
    """Boxes as JSON rows, exact (Python writes floats that read back bit for bit)."""
    return [None if np.isnan(r).any() else [float(v) for v in r] for r in boxes]


def _store_track(cache: DiskCache, ckey: str, track: SourceTrack, fps: float) -> None:
    record = {"version": TRACK_CACHE_VERSION, "fps": fps, "detector": track.detector,
              "frame_size": list(track.frame_size), "n_source_frames": track.n_source_frames,
              "boxes": _rows(track.boxes)}
    text = json.dumps(to_jsonable(record), separators=(",", ":"), allow_nan=False)
    cache.put(ckey, lambda tmp: (tmp / _TRACK_FILE).write_text(text, encoding="utf-8"))


def _load_track(entry: Path) -> Dict[str, Any]:
    record = json.loads((entry / _TRACK_FILE).read_text(encoding="utf-8"))
    if record.get("version") != TRACK_CACHE_VERSION:
        raise ValueError(f"track cache version {record.get('version')!r}")
    rows = record["boxes"]
    record["boxes"] = np.array([[np.nan] * 4 if r is None else r for r in rows],
                               dtype=np.float64).reshape(-1, 4)
    return record


def _fill(track: SourceTrack, faces: FaceTrack, n_frames: Optional[int], face: Path) -> None:
    track.boxes = faces.boxes
    track.n_source_frames = n_frames
    track.missing_timestamps = [float(t) for t in faces.missing_timestamps]
    track.message = faces.report(source=str(face))


def _cached_track(cache: DiskCache, ckey: str, track: SourceTrack, face: Path,
                  report: Report) -> bool:
    """Fill ``track`` from the cache; whether it was there."""
    record = cache.read(ckey, _load_track)
    if record is None:
        return False
    boxes = record["boxes"]
    faces = FaceTrack(boxes=boxes, raw_boxes=boxes, scores=np.zeros(len(boxes)),
                      fps=float(record["fps"]), frame_size=tuple(record["frame_size"]),
                      detector=str(record.get("detector", "")))
    _fill(track, faces, record.get("n_source_frames"), face)
    n = track.n_source_frames or len(boxes) or 1
    report("detect", n, n)
    log.info("face track of %s from the track cache", face)
    return True


def track_source(face: Path, plan: SourcePlan, opts: GenerateOptions, detector: Any,
                 report: Report, stamp: Optional[FileStamp] = None) -> SourceTrack:
    """Detect (or take the fixed box) over the source frames; raises when no face at all.

    A track of the same content and framing in :func:`track_cache` is used instead of
    detecting; a new one is stored there."""
    key = framing_key(stamp or FileStamp.of(face), plan, opts)
    track = SourceTrack(**key)
    if isinstance(detector, FixedBoxDetector):
        w, h = plan.size
        track.fixed = detector.detect(np.zeros((1, h, w, 3), np.uint8))[0][0, :4]
        track.n_source_frames = 1 if plan.info.is_image else None
        return track
    cache = track_cache()
    use = cache.enabled and opts.track_cache
    ckey = track_cache_key(face, key, detector, plan.chunk_size) if use else None
    if ckey is not None and _cached_track(cache, ckey, track, face, report):
        return track
    info, fps, bs = plan.info, plan.fps, plan.chunk_size
    total = estimate_frames(info, fps)
    faces = track_faces(decode_chunks(info, fps, bs, plan.resize), detector, fps,
                        smooth=opts.smooth, chunk_size=bs,
                        progress=lambda n: report("detect", n, max(n, total)))
    faces.require_face(source=str(face), resize_factor=int(opts.resize_factor))
    _fill(track, faces, len(faces), face)
    if ckey is not None:
        _store_track(cache, ckey, track, float(faces.fps))
    return track


__all__ = ["FileStamp", "SourceTrack", "TRACK_CACHE_ENV", "TRACK_CACHE_MB", "detector_signature",
           "framing_key", "track_cache", "track_cache_key", "track_source"]
