"""The TRACK step: where the face is in every source frame, and what that depends on.

:func:`track_source` detects and smooths the face boxes over the source frames (or takes the
fixed ``--box``) and returns a :class:`SourceTrack`. A later run on the same face file with
the same framing options can pass that track back (``Pipeline.run(..., track=...)``) and
skip detection; :meth:`SourceTrack.mismatch` says why a track does not fit a call.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ladtalk.face.detect import FixedBoxDetector
from ladtalk.face.track import track_faces
from ladtalk.generation.inputs import SourcePlan
from ladtalk.generation.options import GenerateOptions
from ladtalk.media.framesource import decode_chunks
from ladtalk.media.probe import estimate_frames

Report = Callable[[str, int, int], None]


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


def track_source(face: Path, plan: SourcePlan, opts: GenerateOptions, detector: Any,
                 report: Report, stamp: Optional[FileStamp] = None) -> SourceTrack:
    """Detect (or take the fixed box) over the source frames; raises when no face at all."""
    key = framing_key(stamp or FileStamp.of(face), plan, opts)
    track = SourceTrack(**key)
    if isinstance(detector, FixedBoxDetector):
        w, h = plan.size
        track.fixed = detector.detect(np.zeros((1, h, w, 3), np.uint8))[0][0, :4]
        track.n_source_frames = 1 if plan.info.is_image else None
        return track
    info, fps, bs = plan.info, plan.fps, plan.chunk_size
    total = estimate_frames(info, fps)
    faces = track_faces(decode_chunks(info, fps, bs, plan.resize), detector, fps,
                        smooth=opts.smooth, chunk_size=bs,
                        progress=lambda n: report("detect", n, max(n, total)))
    faces.require_face(source=str(face))
    track.boxes = faces.boxes
    track.n_source_frames = len(faces)
    track.missing_timestamps = [float(t) for t in faces.missing_timestamps]
    track.message = faces.report(source=str(face))
    return track


__all__ = ["FileStamp", "SourceTrack", "framing_key", "track_source"]
