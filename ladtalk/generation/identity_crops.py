"""Face crops of an input for the identity check: a few frames spread over the video."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from ladtalk._util.choices import DEFAULT_DETECTOR, DEFAULT_PADS
from ladtalk.errors import InputError
from ladtalk.face.crop import CropConfig, crop_faces, face_region
from ladtalk.face.detect import make_detector
from ladtalk.face.track import select_largest
from ladtalk.face.video_crops import even_subset
from ladtalk.media.framesource import decode_chunks
from ladtalk.media.probe import MediaInfo, estimate_frames, probe

DEFAULT_FRAMES = 8


def spread(indices: Sequence[int], n: int) -> np.ndarray:
    """Up to ``n`` of ``indices``, spread evenly (first and last included)."""
    idx = np.asarray(indices, dtype=np.int64)
    return idx[even_subset(len(idx), n)]


def _candidates(info: MediaInfo, fps: float, boxes: Optional[np.ndarray]) -> np.ndarray:
    if boxes is not None:
        return np.flatnonzero(~np.isnan(np.asarray(boxes, dtype=np.float64)).any(axis=1))
    return np.arange(estimate_frames(info, fps))


def sample_face_crops(info: MediaInfo, fps: float, resolution: int,
                      frame_size: Tuple[int, int], *, boxes: Optional[np.ndarray] = None,
                      fixed: Optional[np.ndarray] = None, crop_cfg: CropConfig = CropConfig(),
                      resize: Optional[Tuple[int, int]] = None, n: int = DEFAULT_FRAMES,
                      chunk_size: int = 16) -> np.ndarray:
    """Crops at ``resolution`` of ``n`` source frames spread over the video, framed as the
    pipeline frames them: per-frame ``boxes`` (NaN = no face) or one ``fixed`` box.
    Returns ``(k, res, res, 3)`` uint8, k <= n."""
    if boxes is None and fixed is None:
        raise ValueError("sample_face_crops needs boxes or a fixed box")
    pick = spread(_candidates(info, fps, boxes), max(1, int(n)))
    empty = np.zeros((0, resolution, resolution, 3), np.uint8)
    if not len(pick):
        return empty
    want = set(int(i) for i in pick)
    out: List[np.ndarray] = []
    tail: Optional[np.ndarray] = None
    start = 0
    with closing(decode_chunks(info, fps, chunk_size, resize)) as chunks:
        for chunk in chunks:
            sel, regions = [], []
            for j in range(len(chunk)):
                if start + j not in want:
                    continue
                box = fixed if boxes is None else boxes[start + j]
                try:
                    regions.append(face_region(box, frame_size, crop_cfg))
                except ValueError:
                    continue
                sel.append(j)
            if sel:
                out.append(crop_faces(chunk[sel], regions, resolution))
            if len(chunk):
                tail = chunk[-1]
            start += len(chunk)
            if start > int(pick[-1]):
                break
    if not out and fixed is not None and tail is not None:  # shorter than estimated
        try:
            out.append(crop_faces(tail[None], [face_region(fixed, frame_size, crop_cfg)],
                                  resolution))
        except ValueError:
            pass
    return np.concatenate(out) if out else empty


def video_face_crops(face: Union[str, Path], resolution: int, *,
                     detector: Any = "dlib", n: int = DEFAULT_FRAMES,
                     box: Optional[Sequence[float]] = None,
                     pads: Tuple[int, int, int, int] = DEFAULT_PADS,
                     fps: Optional[float] = None) -> np.ndarray:
    """Face crops of a video / photo for a stand-alone check: ``n`` frames spread evenly, the
    largest face detected on each (``detector``: a name or an object) or ``box``
    ``(y1, y2, x1, x2)`` for all, and the generation framing."""
    info = probe(face)
    rate = float(fps or (25.0 if info.is_image else (info.fps or 25.0)))
    size = (info.width, info.height)
    cfg = CropConfig(pads=tuple(int(p) for p in pads))
    if box is not None:
        y1, y2, x1, x2 = (float(v) for v in box)
        return sample_face_crops(info, rate, resolution, size, fixed=np.array([x1, y1, x2, y2]),
                                 crop_cfg=cfg, n=n)
    det = make_detector(detector or DEFAULT_DETECTOR) if isinstance(detector, str) else detector
    pick = set(int(i) for i in spread(range(estimate_frames(info, rate)), n))
    crops: List[np.ndarray] = []
    start = 0
    with closing(decode_chunks(info, rate, 16)) as chunks:
        for chunk in chunks:
            sel = [j for j in range(len(chunk)) if start + j in pick]
            if sel:
                found, _ = select_largest(det.detect(chunk[sel]))
                for j, b in zip(sel, found):
                    if np.isnan(b).any():
                        continue
                    try:
                        region = face_region(b, size, cfg)
                    except ValueError:
                        continue
                    crops.append(crop_faces(chunk[j][None], [region], resolution)[0])
            start += len(chunk)
            if pick and start > max(pick):
                break
    if not crops:
        raise InputError(f"no face found in the sampled frames of {face}; pass a fixed box")
    return np.stack(crops)


__all__ = ["DEFAULT_FRAMES", "spread", "sample_face_crops", "video_face_crops"]
