"""Per-frame face boxes over time: selection, gap policy and temporal smoothing.

:func:`track_faces` runs a detector over frames chunk by chunk and keeps only the boxes
(4 floats per frame), so the generation pipeline can detect in a first streaming pass and
stream the pixels again in a second pass without holding the video in memory.

Policy (applied in this order):

1. **Selection** (:func:`select_largest`): when a frame has several detections, the one
   with the largest area wins among those scoring at least half the frame's best score.
2. **Gaps** (:func:`interpolate_gaps`): a run of frames without a face that lies *between*
   two detections and is at most ``max_gap`` frames long (default 0.2 s worth of frames, at
   least 1) is filled by linear interpolation of the two neighbouring boxes, unless those two
   boxes are incompatible (centre moved more than ``jump`` x their mean size, or size changed
   by more than 1.5x; that is a cut or a different face). Longer gaps and gaps at the start or
   end stay missing: those frames are reported (:meth:`FaceTrack.report`) and the pipeline
   passes them through unchanged.
   With ``detect_every=k`` detection runs on every k-th frame only; the skipped frames are
   interpolated the same way (gaps up to ``max(max_gap, k-1)``), and skipped frames before
   the first / after the last detection hold the nearest box.
3. **Smoothing** (:func:`smooth_boxes`): a centred moving mean over ``window`` frames
   (upstream Wav2Lip uses a forward-looking mean over 5, which makes the box lead the face).
   Windows never cross a missing frame or a jump, and shrink symmetrically near segment ends,
   so a face moving at constant speed is not biased at the ends of a segment.

All boxes are ``(x1, y1, x2, y2)`` float, full-resolution pixel edges; a missing box is a
row of NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ladtalk.errors import InputError

FrameSource = Union[np.ndarray, Iterable[np.ndarray]]


def select_largest(detections: Sequence[np.ndarray],
                   rel_score: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
    """Largest-area confident detection per frame -> ``(boxes (n, 4), scores (n,))``.

    Only detections scoring at least ``rel_score`` x the frame's best score compete on area
    (dlib reports weak, often larger false positives next to the real face). NaN if none.
    """
    n = len(detections)
    boxes = np.full((n, 4), np.nan)
    scores = np.full(n, np.nan)
    for i, det in enumerate(detections):
        det = np.asarray(det, dtype=np.float64).reshape(-1, 5)
        if len(det) == 0:
            continue
        area = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
        best = det[:, 4].max()
        cutoff = rel_score * best if best > 0 else best
        area = np.where(det[:, 4] >= cutoff, area, -np.inf)
        j = int(np.argmax(area))
        boxes[i] = det[j, :4]
        scores[i] = det[j, 4]
    return boxes, scores


def _compatible(a: np.ndarray, b: np.ndarray, jump: float) -> bool:
    ca = (a[:2] + a[2:]) / 2
    cb = (b[:2] + b[2:]) / 2
    sa = np.sqrt(max((a[2] - a[0]) * (a[3] - a[1]), 1e-9))
    sb = np.sqrt(max((b[2] - b[0]) * (b[3] - b[1]), 1e-9))
    if max(sa, sb) / min(sa, sb) > 1.5:
        return False
    return float(np.linalg.norm(ca - cb)) <= jump * (sa + sb) / 2


def _runs(mask: np.ndarray) -> List[Tuple[int, int]]:
    """``[start, end)`` runs where ``mask`` is True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def interpolate_gaps(boxes: np.ndarray, max_gap: int, jump: float = 0.5,
                     detected: Optional[np.ndarray] = None,
                     skip_gap: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Fill short interior gaps by linear interpolation (see the module policy).

    ``detected`` marks frames on which detection actually ran (default: all). Runs made
    only of skipped frames may be up to ``max(max_gap, skip_gap)`` long, and at the start /
    end of the track they hold the nearest box. Returns ``(filled, filled_mask)``.
    """
    out = np.array(boxes, dtype=np.float64, copy=True)
    n = len(out)
    filled = np.zeros(n, dtype=bool)
    miss = np.isnan(out).any(axis=1)
    if detected is None:
        detected = np.ones(n, dtype=bool)
    for s, e in _runs(miss):
        only_skipped = not detected[s:e].any()
        limit = max(max_gap, skip_gap) if only_skipped else max_gap
        if s == 0 or e == n:
            if only_skipped and (e - s) <= skip_gap and not (s == 0 and e == n):
                out[s:e] = out[e] if s == 0 else out[s - 1]
                filled[s:e] = True
            continue
        if (e - s) > limit:
            continue
        a, b = out[s - 1], out[e]
        if not _compatible(a, b, jump):
            continue
        t = (np.arange(s, e) - (s - 1)) / (e - (s - 1))
        out[s:e] = a[None] + t[:, None] * (b - a)[None]
        filled[s:e] = True
    return out, filled


def smooth_boxes(boxes: np.ndarray, window: int = 5, jump: float = 0.5) -> np.ndarray:
    """Centred moving mean of the box coordinates (see the module policy).

    NaN rows stay NaN and split segments; so does a jump between consecutive boxes.
    """
    out = np.array(boxes, dtype=np.float64, copy=True)
    n = len(out)
    half = max(0, (int(window) - 1) // 2)
    if n == 0 or half == 0:
        return out
    ok = ~np.isnan(out).any(axis=1)
    seg_breaks = np.zeros(n, dtype=bool)  # True where a new segment starts
    for i in range(1, n):
        if ok[i] and ok[i - 1] and not _compatible(out[i - 1], out[i], jump):
            seg_breaks[i] = True
    src = out.copy()
    for s, e in _runs(ok):
        cuts = [s] + [i for i in range(s + 1, e) if seg_breaks[i]] + [e]
        for a, b in zip(cuts[:-1], cuts[1:]):
            seg = src[a:b]
            cs = np.concatenate([np.zeros((1, 4)), np.cumsum(seg, axis=0)])
            idx = np.arange(b - a)
            r = np.minimum(half, np.minimum(idx, (b - a - 1) - idx))
            out[a:b] = (cs[idx + r + 1] - cs[idx - r]) / (2 * r + 1)[:, None]
    return out


@dataclass
class FaceTrack:
    """Boxes for every frame of a video, plus what was detected, filled and missing.

    ``boxes`` are final (filled and smoothed); ``raw_boxes`` are the selected detections
    (NaN where none, or where detection was skipped). Timestamps are ``frame / fps``.
    """

    boxes: np.ndarray
    raw_boxes: np.ndarray
    scores: np.ndarray
    fps: float
    frame_size: Tuple[int, int]  # (width, height)
    detector: str = ""
    filled: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.filled is None:
            self.filled = np.zeros(len(self.boxes), dtype=bool)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def n_frames(self) -> int:
        return len(self.boxes)

    def has_face(self, i: int) -> bool:
        return not np.isnan(self.boxes[i]).any()

    def box(self, i: int) -> Optional[np.ndarray]:
        """Final ``(x1, y1, x2, y2)`` of frame ``i``, or ``None`` when no face."""
        b = self.boxes[i]
        return None if np.isnan(b).any() else b.copy()

    @property
    def missing_frames(self) -> List[int]:
        return [int(i) for i in np.flatnonzero(np.isnan(self.boxes).any(axis=1))]

    @property
    def missing_timestamps(self) -> List[float]:
        return [i / self.fps for i in self.missing_frames]

    def missing_spans(self) -> List[Tuple[float, float]]:
        """``(start_s, end_s)`` of each run of frames without a face (end exclusive)."""
        return [(s / self.fps, e / self.fps)
                for s, e in _runs(np.isnan(self.boxes).any(axis=1))]

    def report(self, source: str = "the video") -> str:
        """Human-readable summary of frames without a face ('' when every frame has one)."""
        miss = self.missing_frames
        if not miss:
            return ""
        spans = ", ".join(f"{a:.2f}s" if (b - a) * self.fps <= 1 else f"{a:.2f}-{b:.2f}s"
                          for a, b in self.missing_spans()[:20])
        more = " ..." if len(self.missing_spans()) > 20 else ""
        return (f"no face detected in {len(miss)} of {len(self)} frames of {source} at "
                f"{spans}{more}; those frames are left unchanged")

    def require_face(self, source: str = "the video", resize_factor: int = 1) -> None:
        """Raise :class:`InputError` when no frame at all has a face; ``resize_factor``: the
        factor the frames were shrunk by (named as a likely cause when above 1)."""
        if len(self) == 0 or len(self.missing_frames) == len(self):
            raise InputError(no_face_message(len(self), source, self.detector,
                                             self.frame_size, resize_factor))

    def to_json(self) -> dict:
        """The track as JSON values (a frame without a face: null)."""
        def rows(a):
            return [None if np.isnan(r).any() else [round(float(v), 3) for v in r] for r in a]
        return {"fps": self.fps, "frame_size": list(self.frame_size), "detector": self.detector,
                "boxes": rows(self.boxes), "raw_boxes": rows(self.raw_boxes),
                "scores": [None if np.isnan(s) else float(s) for s in self.scores],
                "filled": [bool(v) for v in self.filled]}

    @classmethod
    def from_json(cls, d: dict) -> "FaceTrack":
        def arr(rows):
            return np.array([[np.nan] * 4 if r is None else r for r in rows],
                            dtype=np.float64).reshape(-1, 4)
        return cls(boxes=arr(d["boxes"]), raw_boxes=arr(d["raw_boxes"]),
                   scores=np.array([np.nan if s is None else s for s in d["scores"]], float),
                   fps=float(d["fps"]), frame_size=tuple(d["frame_size"]),
                   detector=d.get("detector", ""), filled=np.array(d["filled"], dtype=bool))


def no_face_message(n_frames: int, source: str, detector: str, frame_size: Tuple[int, int],
                    resize_factor: int = 1) -> str:
    """Why no face was found and what to change: a resize factor or frames too small for
    the detector, a better detector (only when it is available), a fixed box."""
    from ladtalk.face.detect import DLIB_MIN_FACE, s3fd_available
    w, h = (int(v) for v in frame_size)
    msg = (f"no face was detected in any of the {n_frames} frames of {source} "
           f"(detector: {detector or 'unknown'}).")
    if int(resize_factor) > 1:
        msg += (f" The frames were shrunk to {w}x{h} px by --resize-factor "
                f"{int(resize_factor)}, which may make the face too small to detect: set "
                "--resize-factor lower (1 = full size).")
    elif 0 < min(w, h) < 2 * DLIB_MIN_FACE:
        msg += (f" The frames are only {w}x{h} px; a face needs about {DLIB_MIN_FACE} px to "
                "be found, so use a larger video.")
    better = ", try '--detector s3fd'" if detector == "dlib" and s3fd_available() else ""
    return (msg + " Use a video with a clearly visible frontal face" + better
            + ", or give the face position with '--box Y1 Y2 X1 X2'")


def _chunks(frames: FrameSource, chunk_size: int) -> Iterable[np.ndarray]:
    if isinstance(frames, np.ndarray):
        arr = frames[None] if frames.ndim == 3 else frames
        for s in range(0, len(arr), chunk_size):
            yield arr[s:s + chunk_size]
        return
    for chunk in frames:
        chunk = np.asarray(chunk)
        yield chunk[None] if chunk.ndim == 3 else chunk


def track_faces(frames: FrameSource, detector, fps: float, smooth: bool = True,
                window: int = 5, max_gap: Optional[int] = None, detect_every: int = 1,
                chunk_size: int = 16, jump: float = 0.5,
                progress: Optional[Callable[[int], None]] = None) -> FaceTrack:
    """Detect, select, fill and smooth face boxes over a whole video.

    ``frames`` is an ``(n, H, W, 3)`` array or an iterable of such chunks (for example
    :func:`ladtalk.media.decode.iter_frames`); only boxes are kept. ``max_gap`` is in frames
    (default ``round(0.2 * fps)``, at least 1). ``progress(n_done)`` is called per chunk.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    k = max(1, int(detect_every))
    dets: List[np.ndarray] = []
    detected: List[bool] = []
    size: Optional[Tuple[int, int]] = None
    n_done = 0
    for chunk in _chunks(frames, chunk_size):
        if len(chunk) == 0:
            continue
        size = (int(chunk.shape[2]), int(chunk.shape[1]))
        idx = [i for i in range(len(chunk)) if (n_done + i) % k == 0]
        found = detector.detect(chunk[idx]) if idx else []
        per = [np.zeros((0, 5))] * len(chunk)
        for i, d in zip(idx, found):
            per[i] = d
        dets.extend(per)
        detected.extend((n_done + i) % k == 0 for i in range(len(chunk)))
        n_done += len(chunk)
        if progress is not None:
            progress(n_done)
    raw, scores = select_largest(dets)
    gap = max(1, int(round(0.2 * fps))) if max_gap is None else int(max_gap)
    filled_boxes, filled = interpolate_gaps(raw, gap, jump=jump,
                                            detected=np.array(detected, dtype=bool),
                                            skip_gap=k - 1)
    final = smooth_boxes(filled_boxes, window, jump=jump) if smooth else filled_boxes
    return FaceTrack(boxes=final, raw_boxes=raw, scores=scores, fps=float(fps),
                     frame_size=size or (0, 0), detector=getattr(detector, "name", ""),
                     filled=filled)
