"""Face detectors with one interface: ``detect(frames) -> list of (k, 5) arrays``.

``frames`` is a ``(n, H, W, 3)`` uint8 RGB chunk (a single ``(H, W, 3)`` frame is accepted
too). The result has one float array per frame, rows ``x1, y1, x2, y2, score`` in
full-resolution pixel-edge coordinates (see :mod:`ladtalk.face`), an empty ``(0, 5)`` array
when no face was found. Detection runs on a copy downscaled so that its longer side is at most
``max_side`` pixels (faster, and S3FD is more reliable at moderate resolutions); boxes are
mapped back to full resolution. A downscaled frame where no face was found is tried again at
twice the working size, and so on up to ``retry_side`` (never above the frame itself): a face
that fills a sixth of a 4K frame is about 60 px on the 480 px copy, below dlib's 80 px
window, but 120 px at 960 (see :func:`detect_scaled`). So the face-found rate does not depend
on the input resolution, and the cost only grows on frames where the face is small.

Detectors:
    :class:`S3FDDetector`    face-alignment's S3FD (the detector Wav2Lip was trained with);
                             weights from :func:`ladtalk.checkpoints.resolve_checkpoint` ("s3fd").
    :class:`DlibHOGDetector` dlib's HOG frontal detector: offline, no weights, CPU only.
    :class:`FixedBoxDetector` a user-given box (``--box Y1 Y2 X1 X2``) for every frame.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import numpy as np

from ladtalk._util.choices import DEFAULT_DETECTOR, DETECTORS
from ladtalk._util.cores import thread_budget
from ladtalk.errors import CheckpointError, InputError

log = logging.getLogger(__name__)

DEFAULT_MAX_SIDE = 480
#: the largest working size (longer side, px) a missed frame is retried at
DEFAULT_RETRY_SIDE = 1920
#: how many of a chunk's missed frames are retried first at a larger working size; the
#: others follow only when one of these has a face there
RETRY_PROBES = 3
#: the smallest face (px) dlib's HOG window finds on the frame it runs on
DLIB_MIN_FACE = 80
#: the most threads one dlib detector uses by default
DLIB_MAX_THREADS = 4

#: dlib's HOG boxes are tight (eyebrows to chin). S3FD boxes, which Wav2Lip's training crops
#: used, also take in part of the forehead and a little margin. This expansion (fractions of
#: the box height for top/bottom, of its width for left/right) approximates S3FD framing.
#: It is a hand-set heuristic, not calibrated against S3FD output.
DLIB_TO_S3FD_EXPAND = (0.15, 0.05, 0.05, 0.05)  # top, bottom, left, right


@runtime_checkable
class FaceDetector(Protocol):
    """Anything with ``detect(frames) -> list[np.ndarray (k, 5)]`` and a ``name``."""

    name: str

    def detect(self, frames: np.ndarray) -> List[np.ndarray]:
        ...


def _as_batch(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected (n, H, W, 3) RGB frames, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {arr.dtype}")
    return arr


def _empty() -> np.ndarray:
    return np.zeros((0, 5), dtype=np.float64)


def downscale(frames: np.ndarray, max_side: Optional[int]) -> Tuple[np.ndarray, float, float]:
    """Resize a batch so its longer side is <= ``max_side`` (INTER_AREA).

    Returns ``(small, sx, sy)`` with ``sx = small_w / W`` and ``sy = small_h / H``; boxes
    found on ``small`` map back by dividing x by ``sx`` and y by ``sy``.
    """
    n, h, w = frames.shape[:3]
    if not max_side or max(h, w) <= max_side:
        return frames, 1.0, 1.0
    import cv2
    f = max_side / max(h, w)
    nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
    small = np.empty((n, nh, nw, 3), dtype=np.uint8)
    for i in range(n):
        small[i] = cv2.resize(frames[i], (nw, nh), interpolation=cv2.INTER_AREA)
    return small, nw / w, nh / h


def _map_back(boxes: np.ndarray, sx: float, sy: float, w: int, h: int) -> np.ndarray:
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 5).copy()
    out[:, [0, 2]] /= sx
    out[:, [1, 3]] /= sy
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out[keep]


def working_sides(long_side: int, max_side: Optional[int],
                  retry_side: Optional[int] = DEFAULT_RETRY_SIDE) -> List[Optional[int]]:
    """The working sizes (longer side, px; ``None``: full size) a frame of ``long_side`` px
    is tried at: ``max_side``, then doubling up to ``retry_side``, never above the frame. A
    step of less than 1.5x is not worth a retry (dlib's own pyramid steps by 1.2x)."""
    if not max_side or long_side <= max_side:
        return [None]
    side = int(max_side)
    sides: List[Optional[int]] = [side]
    cap = min(long_side, int(retry_side or 0))
    while cap >= 1.5 * side:
        side = cap if side * 2.5 >= cap else side * 2
        sides.append(None if side >= long_side else side)
    return sides


def _spread(idx: Sequence[int], k: int) -> List[int]:
    """Up to ``k`` elements of ``idx``, evenly spread (first and last included)."""
    if len(idx) <= k:
        return list(idx)
    return sorted({idx[int(round(j * (len(idx) - 1) / (k - 1)))] for j in range(k)})


def detect_scaled(frames: np.ndarray, run, max_side: Optional[int],
                  retry_side: Optional[int] = DEFAULT_RETRY_SIDE) -> List[np.ndarray]:
    """Detect on ``frames`` scaled to each working size of :func:`working_sides` in turn.

    ``run(small) -> list of (k, 5)`` finds boxes on a batch in its own pixels. Every frame is
    tried at ``max_side``; at each larger size, :data:`RETRY_PROBES` of the frames still
    without a face are tried first, and the rest only when one of them had a face (a chunk
    with no face at all costs a few retries, not a full pass per size).
    """
    n, h, w = frames.shape[:3]
    out = [_empty() for _ in range(n)]
    todo = list(range(n))
    for k, side in enumerate(working_sides(max(h, w), max_side, retry_side)):
        if not todo:
            break
        first = todo if k == 0 else _spread(todo, RETRY_PROBES)
        groups = [first, [i for i in todo if i not in first]]
        for g, idx in enumerate(groups):
            if not idx or (g == 1 and not any(len(out[i]) for i in first)):
                continue
            small, sx, sy = downscale(frames[idx], side)
            for i, boxes in zip(idx, run(small)):
                out[i] = _map_back(boxes, sx, sy, w, h)
        todo = [i for i in todo if not len(out[i])]
    return out


def expand_boxes(boxes: np.ndarray, expand: Sequence[float]) -> np.ndarray:
    """Grow ``(k, 4+)`` boxes by fractions ``(top, bottom, left, right)`` of their size."""
    out = np.asarray(boxes, dtype=np.float64).copy()
    if out.size == 0:
        return out
    top, bottom, left, right = expand
    w = out[:, 2] - out[:, 0]
    h = out[:, 3] - out[:, 1]
    out[:, 0] -= left * w
    out[:, 2] += right * w
    out[:, 1] -= top * h
    out[:, 3] += bottom * h
    return out


class DlibHOGDetector:
    """dlib's HOG + linear SVM frontal face detector (``dlib.get_frontal_face_detector``).

    Needs no weights and no network. Its 80x80 scanning window means faces smaller than
    about 80 px *on the downscaled copy* are missed; ``upsample=1`` halves that (4x slower).
    ``expand`` grows the tight HOG boxes towards S3FD framing (``None`` disables it).
    ``threshold`` is dlib's SVM score threshold (0 is dlib's default). ``threads``: frames
    detected at once (default the process's thread budget, at most :data:`DLIB_MAX_THREADS`:
    ``_util.cores.thread_budget``); dlib releases the GIL while it scans, and each thread has its
    own detector (one is not safe to share): 1.5x on 2 cores, the same boxes.
    """

    name = "dlib"

    def __init__(self, upsample: int = 0, max_side: Optional[int] = DEFAULT_MAX_SIDE,
                 threshold: float = 0.0,
                 expand: Optional[Sequence[float]] = DLIB_TO_S3FD_EXPAND,
                 retry_side: Optional[int] = DEFAULT_RETRY_SIDE,
                 threads: Optional[int] = None):
        try:
            import dlib
        except ImportError as exc:  # pragma: no cover - dlib-bin is a hard dependency
            raise CheckpointError("the dlib face detector needs the 'dlib-bin' package "
                                  "(pip install dlib-bin)") from exc
        self._new_detector = dlib.get_frontal_face_detector
        self._dets = [self._new_detector()]  # one per thread, made when first needed
        self._lock = threading.Lock()  # one detect() at a time uses the detectors
        self.threads = max(1, int(threads)) if threads else min(thread_budget(),
                                                                DLIB_MAX_THREADS)
        self.upsample = int(upsample)
        self.max_side = max_side
        self.retry_side = retry_side
        self.threshold = float(threshold)
        self.expand = tuple(expand) if expand is not None else None

    def _one(self, det, img: np.ndarray) -> np.ndarray:
        rects, scores, _ = det.run(np.ascontiguousarray(img), self.upsample, self.threshold)
        if len(rects) == 0:
            return _empty()
        # dlib rectangles are inclusive (right/bottom are the last pixel): +1 for edges.
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1, s]
                          for r, s in zip(rects, scores)], dtype=np.float64)
        return expand_boxes(boxes, self.expand) if self.expand is not None else boxes

    def _run(self, small: np.ndarray) -> List[np.ndarray]:
        n = min(self.threads, len(small))
        if n <= 1:
            return [self._one(self._dets[0], img) for img in small]
        while len(self._dets) < n:
            self._dets.append(self._new_detector())
        parts = np.array_split(np.arange(len(small)), n)  # contiguous runs, in order
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="ladtalk-dlib") as pool:
            done = pool.map(lambda k: [self._one(self._dets[k], small[i]) for i in parts[k]],
                            range(n))
            return [boxes for part in done for boxes in part]

    def detect(self, frames: np.ndarray) -> List[np.ndarray]:
        with self._lock:
            return detect_scaled(_as_batch(frames), self._run, self.max_side, self.retry_side)


def resolve_s3fd_weights(weights=None):
    """Local path of the S3FD weights via :func:`ladtalk.checkpoints.resolve_checkpoint` ("s3fd").

    ``weights`` (a path, directory or Hub reference) overrides the default source. Raises
    :class:`CheckpointError` that says to use ``--detector dlib`` or supply the weights.
    """
    from ladtalk.checkpoints import resolve_checkpoint  # lazy: it loads torch (start-up)
    fix = ("the S3FD face detector is not available here: use '--detector dlib' (offline, "
           "needs no weights) or '--detector auto', or supply the S3FD weights "
           "(face-alignment's s3fd-619a316812.pth, the same file as Wav2Lip's "
           "face_detection/detection/sfd/s3fd.pth)")
    try:
        return Path(resolve_checkpoint("s3fd", override=weights))
    except CheckpointError as exc:
        raise CheckpointError(f"{fix}. {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{fix}. The weights could not be read: {exc}") from None


def s3fd_available(weights=None) -> bool:
    """Whether the S3FD weights can be had here (a local file, the cache, or the Hub)."""
    try:
        resolve_s3fd_weights(weights)
    except CheckpointError:
        return False
    return True


def available_detectors(weights=None) -> Tuple[str, ...]:
    """The detector names that work here: ``DETECTORS`` without "s3fd" when its weights
    cannot be had (so a message never suggests a detector that would fail)."""
    return tuple(d for d in DETECTORS if d != "s3fd" or s3fd_available(weights))


class S3FDDetector:
    """S3FD from face-alignment (imported lazily), batched over the chunk on ``device``.

    ``threshold`` is the confidence kept after NMS (0.5, as in face-alignment and Wav2Lip).
    ``batch_size`` bounds how many downscaled frames go through the network at once.
    """

    name = "s3fd"

    def __init__(self, device=None, weights=None, max_side: Optional[int] = DEFAULT_MAX_SIDE,
                 threshold: float = 0.5, batch_size: int = 16,
                 retry_side: Optional[int] = DEFAULT_RETRY_SIDE):
        from ladtalk._util.device import resolve_device
        path = resolve_s3fd_weights(weights)
        self.device = resolve_device(device)
        self.max_side = max_side
        self.retry_side = retry_side
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        try:
            from face_alignment.detection.sfd.bbox import nms
            from face_alignment.detection.sfd.detect import batch_detect
            from face_alignment.detection.sfd.net_s3fd import s3fd
        except ImportError as exc:  # pragma: no cover - face-alignment is a hard dependency
            raise CheckpointError("the S3FD detector needs the 'face-alignment' package; "
                                  "install it or use '--detector dlib'") from exc
        self._batch_detect, self._nms = batch_detect, nms
        from ladtalk.checkpoints import read_state_dict  # lazy: it loads torch
        net = s3fd()
        try:
            net.load_state_dict(read_state_dict(path))
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not hold S3FD weights: {exc}") from None
        self.net = net.to(self.device).eval()
        self.weights_path = path

    def _filter(self, cand: np.ndarray) -> np.ndarray:
        cand = np.asarray(cand, dtype=np.float64).reshape(-1, 5)
        if len(cand) == 0:
            return _empty()
        cand = cand[self._nms(cand, 0.3)].reshape(-1, 5)
        return cand[cand[:, 4] > self.threshold]

    def _run(self, small: np.ndarray) -> List[np.ndarray]:
        import torch
        out: List[np.ndarray] = []
        for s in range(0, len(small), self.batch_size):
            part = small[s:s + self.batch_size]
            # face-alignment's batch_detect takes RGB (n, 3, H, W) and flips to BGR itself.
            x = torch.from_numpy(np.ascontiguousarray(part.transpose(0, 3, 1, 2)))
            x = x.to(self.device, dtype=torch.float32)
            with torch.inference_mode():
                cands = self._batch_detect(self.net, x, device=str(self.device))
            out.extend(self._filter(cands[i] if len(cands) else []) for i in range(len(part)))
        return out

    def detect(self, frames: np.ndarray) -> List[np.ndarray]:
        return detect_scaled(_as_batch(frames), self._run, self.max_side, self.retry_side)


class FixedBoxDetector:
    """The same user-given box for every frame (score 1.0).

    ``box`` uses the upstream Wav2Lip ``--box`` order ``(y1, y2, x1, x2)`` in full-resolution
    pixels. It is clipped to each frame; a box that is empty, or of which less than
    :attr:`MIN_INSIDE` of the area lies inside the frame, is an :class:`InputError` that
    gives the frame size.
    """

    name = "box"
    MIN_INSIDE = 0.5

    def __init__(self, box: Sequence[float]):
        if len(box) != 4:
            raise InputError(f"--box needs 4 numbers Y1 Y2 X1 X2, got {list(box)}")
        y1, y2, x1, x2 = (float(v) for v in box)
        if not np.isfinite([y1, y2, x1, x2]).all():
            raise InputError(f"--box {y1:g} {y2:g} {x1:g} {x2:g}: give 4 finite pixel numbers "
                             "Y1 Y2 X1 X2")
        if not (y2 > y1 and x2 > x1):
            raise InputError(f"--box {y1:g} {y2:g} {x1:g} {x2:g} is empty: the order is "
                             "Y1 Y2 X1 X2 (top, bottom, left, right) with Y2 > Y1 and X2 > X1")
        if min(y1, x1) < 0:
            raise InputError(f"--box {y1:g} {y2:g} {x1:g} {x2:g} has negative coordinates")
        self.box_xyxy = np.array([x1, y1, x2, y2], dtype=np.float64)

    def detect(self, frames: np.ndarray) -> List[np.ndarray]:
        frames = _as_batch(frames)
        h, w = frames.shape[1:3]
        x1, y1, x2, y2 = self.box_xyxy
        cx1, cy1, cx2, cy2 = min(x1, w), min(y1, h), min(x2, w), min(y2, h)
        inside = max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1) / ((x2 - x1) * (y2 - y1))
        if cx2 - cx1 < 2 or cy2 - cy1 < 2 or inside < self.MIN_INSIDE:
            where = "outside" if inside == 0 else f"mostly outside ({inside:.0%} inside)"
            raise InputError(f"--box {y1:g} {y2:g} {x1:g} {x2:g} (Y1 Y2 X1 X2) lies {where} "
                             f"the {w}x{h} frame: Y1 and Y2 must lie within 0-{h} and X1 and "
                             f"X2 within 0-{w} (pixels of the face video)")
        row = np.array([[cx1, cy1, cx2, cy2, 1.0]])
        return [row.copy() for _ in range(len(frames))]


def make_detector(name: str = DEFAULT_DETECTOR, device=None, *,
                  max_side: Optional[int] = DEFAULT_MAX_SIDE,
                  box: Optional[Sequence[float]] = None, weights=None,
                  **kwargs) -> Union[S3FDDetector, DlibHOGDetector, FixedBoxDetector]:
    """Build a detector by name: ``"s3fd"``, ``"dlib"``, ``"auto"`` or ``"box"``.

    ``"auto"`` uses S3FD when its weights resolve and otherwise falls back to dlib with a
    logged warning. A given ``box`` (upstream order Y1 Y2 X1 X2) always wins.
    """
    if box is not None and any(v != -1 for v in box):
        return FixedBoxDetector(box)
    key = (name or DEFAULT_DETECTOR).lower()
    if key == "box":
        raise InputError("detector 'box' needs --box Y1 Y2 X1 X2")
    if key == "s3fd":
        return S3FDDetector(device=device, weights=weights, max_side=max_side, **kwargs)
    if key == "dlib":
        return DlibHOGDetector(max_side=max_side, **kwargs)
    if key == "auto":
        try:
            return S3FDDetector(device=device, weights=weights, max_side=max_side, **kwargs)
        except CheckpointError as exc:
            log.warning("S3FD face detector unavailable (%s); falling back to the offline dlib "
                        "HOG detector, which misses small, profile and low-light faces", exc)
            return DlibHOGDetector(max_side=max_side,
                                   retry_side=kwargs.get("retry_side", DEFAULT_RETRY_SIDE))
    raise InputError(f"unknown face detector '{name}'; use one of "
                     f"{', '.join(available_detectors(weights))}")
