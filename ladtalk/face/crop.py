"""The crop framing shared by enrollment (training crops) and generation (Wav2Lip input,
SOVQAE restore, paste-back). Both must call :func:`face_region` with the same
:class:`CropConfig` so the SOVQAE sees faces framed exactly as it was trained.

Framing (``CropConfig.square=True``, the default):

1. Start from a (smoothed) detector box ``(x1, y1, x2, y2)`` in full-resolution pixel edges.
2. Add the pads ``(top, bottom, left, right)`` in pixels, upstream Wav2Lip ``--pads`` order
   and default ``(0, 10, 0, 0)`` (a little more chin).
3. Take the centre of the padded box and a side of ``max(w, h) * margin``, rounded to whole
   pixels: an integer square :class:`CropRegion`. The region may extend beyond the frame;
   those pixels are filled by edge replication when cropping, so every crop is square and
   undistorted, and the region still says exactly where the crop sits in the frame.

``square=False`` reproduces upstream Wav2Lip instead: the padded box clipped to the frame
(no margin), resized to the square output size with whatever distortion that implies.

Resampling: :func:`crop_face` uses INTER_AREA when shrinking and INTER_CUBIC when enlarging;
:func:`paste_back` does the same for the way back. Crop pixel coordinates ``(u, v)`` in
``[0, size]`` map to frame coordinates ``x = x1 + u * w / size``, ``y = y1 + v * h / size``
(pixel edges; see :meth:`CropRegion.crop_to_frame`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ladtalk._util.choices import DEFAULT_PADS

SizeLike = Union[int, Tuple[int, int]]


@dataclass(frozen=True)
class CropConfig:
    """How a detector box becomes a crop region (see the module docstring)."""

    pads: Tuple[int, int, int, int] = DEFAULT_PADS  # top, bottom, left, right (pixels)
    margin: float = 1.0  # side = max(padded w, padded h) * margin
    square: bool = True  # False: upstream framing (clipped padded box, no margin)

    def __post_init__(self) -> None:
        if len(self.pads) != 4:
            raise ValueError(f"pads must be (top, bottom, left, right), got {self.pads}")
        if self.margin <= 0:
            raise ValueError(f"margin must be positive, got {self.margin}")


@dataclass(frozen=True)
class CropRegion:
    """An integer pixel-edge rectangle ``[x1, x2) x [y1, y2)`` in a ``frame_w x frame_h``
    frame. It may extend beyond the frame (those pixels are edge-replicated)."""

    x1: int
    y1: int
    x2: int
    y2: int
    frame_w: int
    frame_h: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def is_square(self) -> bool:
        return self.width == self.height

    def clipped(self) -> Tuple[int, int, int, int]:
        """The part inside the frame, ``(x1, y1, x2, y2)`` (may be empty)."""
        return (max(self.x1, 0), max(self.y1, 0),
                min(self.x2, self.frame_w), min(self.y2, self.frame_h))

    def crop_to_frame(self, pts: np.ndarray, size: SizeLike) -> np.ndarray:
        """Map ``(..., 2)`` crop coordinates (pixel edges of a ``size`` crop) to the frame."""
        sw, sh = _wh(size)
        p = np.asarray(pts, dtype=np.float64)
        return np.stack([self.x1 + p[..., 0] * self.width / sw,
                         self.y1 + p[..., 1] * self.height / sh], axis=-1)

    def frame_to_crop(self, pts: np.ndarray, size: SizeLike) -> np.ndarray:
        """Inverse of :meth:`crop_to_frame`."""
        sw, sh = _wh(size)
        p = np.asarray(pts, dtype=np.float64)
        return np.stack([(p[..., 0] - self.x1) * sw / self.width,
                         (p[..., 1] - self.y1) * sh / self.height], axis=-1)

    def as_tuple(self) -> Tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)


def _wh(size: SizeLike) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    return int(size[0]), int(size[1])


def face_region(box: Sequence[float], frame_size: Tuple[int, int],
                config: CropConfig = CropConfig()) -> CropRegion:
    """The crop region for a detector box in a ``frame_size = (width, height)`` frame."""
    fw, fh = int(frame_size[0]), int(frame_size[1])
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    if not np.isfinite([x1, y1, x2, y2]).all():
        raise ValueError("face_region needs a finite box (this frame has no face)")
    top, bottom, left, right = config.pads
    x1, x2, y1, y2 = x1 - left, x2 + right, y1 - top, y2 + bottom
    if not config.square:
        rx1, ry1 = max(0, int(round(x1))), max(0, int(round(y1)))
        rx2, ry2 = min(fw, int(round(x2))), min(fh, int(round(y2)))
        if rx2 - rx1 < 1 or ry2 - ry1 < 1:
            raise ValueError(f"box {box} does not overlap the {fw}x{fh} frame")
        return CropRegion(rx1, ry1, rx2, ry2, fw, fh)
    side = max(2, int(round(max(x2 - x1, y2 - y1) * config.margin)))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rx1 = int(np.floor(cx - side / 2 + 0.5))
    ry1 = int(np.floor(cy - side / 2 + 0.5))
    region = CropRegion(rx1, ry1, rx1 + side, ry1 + side, fw, fh)
    cx1, cy1, cx2, cy2 = region.clipped()
    if cx2 <= cx1 or cy2 <= cy1:
        raise ValueError(f"box {box} does not overlap the {fw}x{fh} frame")
    return region


def _interp(src_w: int, src_h: int, dst_w: int, dst_h: int) -> int:
    import cv2
    return cv2.INTER_AREA if dst_w * dst_h < src_w * src_h else cv2.INTER_CUBIC


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2
    if img.shape[1] == w and img.shape[0] == h:
        return img
    return cv2.resize(img, (w, h), interpolation=_interp(img.shape[1], img.shape[0], w, h))


def extract_region(frame: np.ndarray, region: CropRegion) -> np.ndarray:
    """The region's pixels at native resolution, edge-replicated outside the frame."""
    import cv2
    cx1, cy1, cx2, cy2 = region.clipped()
    if cx2 <= cx1 or cy2 <= cy1:
        raise ValueError(f"crop region {region.as_tuple()} lies outside the frame")
    sub = frame[cy1:cy2, cx1:cx2]
    top, bottom = cy1 - region.y1, region.y2 - cy2
    left, right = cx1 - region.x1, region.x2 - cx2
    if top or bottom or left or right:
        sub = cv2.copyMakeBorder(np.ascontiguousarray(sub), top, bottom, left, right,
                                 cv2.BORDER_REPLICATE)
    return sub


def crop_face(frame: np.ndarray, region: CropRegion, size: SizeLike) -> np.ndarray:
    """Crop ``region`` from an ``(H, W, 3)`` frame and resize it to ``size`` (int or (w, h))."""
    if frame.shape[1] != region.frame_w or frame.shape[0] != region.frame_h:
        raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]} but the region was made "
                         f"for {region.frame_w}x{region.frame_h}")
    sw, sh = _wh(size)
    return np.ascontiguousarray(_resize(extract_region(frame, region), sw, sh))


def crop_faces(frames: np.ndarray, regions: Sequence[CropRegion], size: SizeLike) -> np.ndarray:
    """Batch version of :func:`crop_face` -> ``(n, size_h, size_w, 3)``."""
    sw, sh = _wh(size)
    out = np.empty((len(regions), sh, sw) + frames.shape[3:], dtype=frames.dtype)
    for i, (frame, region) in enumerate(zip(frames, regions)):
        out[i] = crop_face(frame, region, (sw, sh))
    return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def feather_mask(size: SizeLike, shape: str = "ellipse", feather: float = 0.15,
                 bounds: Tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)) -> np.ndarray:
    """A soft ``(h, w)`` float32 mask in [0, 1] for pasting a crop back.

    ``bounds = (x0, y0, x1, y1)`` is the rectangle (fractions of the crop) that the mask
    lives in; ``shape`` is ``"ellipse"`` (inscribed in the bounds) or ``"rect"``. The mask is
    1 in the core and falls smoothly (smoothstep) to exactly 0 at the bounds (the outermost
    pixel row / column inside the bounds is already 0) over a band of ``feather`` x the
    half-size of the bounds, so no box edge is visible after blending.
    Values below 1e-3 are set to 0, so pixels outside the soft edge stay untouched.
    """
    w, h = _wh(size)
    x0, y0, x1, y1 = bounds
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"bounds must satisfy 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1: {bounds}")
    if not 0 < feather <= 1:
        raise ValueError(f"feather must be in (0, 1], got {feather}")
    xs = (np.arange(w) + 0.5) / w
    ys = (np.arange(h) + 0.5) / h
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # shrink by one pixel per side so the outermost pixel rows/columns of the bounds are 0
    ax = max((x1 - x0) / 2 - 1.0 / w, 0.5 / w)
    ay = max((y1 - y0) / 2 - 1.0 / h, 0.5 / h)
    u = (xs[None, :] - cx) / ax
    v = (ys[:, None] - cy) / ay
    if shape == "ellipse":
        inner = 1.0 - np.sqrt(u * u + v * v)
    elif shape == "rect":
        inner = np.minimum(1.0 - np.abs(u), 1.0 - np.abs(v))
    else:
        raise ValueError(f"shape must be 'ellipse' or 'rect', got {shape!r}")
    mask = _smoothstep(inner / feather).astype(np.float32)
    mask[mask < 1e-3] = 0.0
    return mask


def paste_back(frame: np.ndarray, crop: np.ndarray, region: CropRegion,
               mask: Optional[np.ndarray] = None, inplace: bool = False) -> np.ndarray:
    """Blend a (processed) crop back into its region of ``frame``.

    ``crop`` is ``(s_h, s_w, 3)`` uint8 (or float in [0, 255]) of any size; it is resized to
    the region (INTER_AREA down / INTER_CUBIC up). ``mask`` is a float ``(m_h, m_w)`` in
    [0, 1] in crop coordinates of any size (resized bilinearly to the region), ``None`` for a
    hard rectangular paste. Only the part of the region inside the frame is written; pixels
    where the mask is 0, and all pixels outside the region, are left exactly as they were.
    Returns the new frame (``frame`` itself when ``inplace``).
    """
    import cv2
    out = frame if inplace else frame.copy()
    cx1, cy1, cx2, cy2 = region.clipped()
    if cx2 <= cx1 or cy2 <= cy1:
        return out
    src = _resize(np.asarray(crop), region.width, region.height)
    ox, oy = cx1 - region.x1, cy1 - region.y1
    src = src[oy:oy + (cy2 - cy1), ox:ox + (cx2 - cx1)]
    dst = out[cy1:cy2, cx1:cx2]
    if mask is None:
        out[cy1:cy2, cx1:cx2] = np.clip(np.rint(src.astype(np.float32)), 0, 255).astype(out.dtype)
        return out
    m = np.asarray(mask, dtype=np.float32)
    if m.shape[:2] != (region.height, region.width):
        m = cv2.resize(m, (region.width, region.height), interpolation=cv2.INTER_LINEAR)
    m = np.clip(m[oy:oy + (cy2 - cy1), ox:ox + (cx2 - cx1)], 0.0, 1.0)
    # only the mask's bounding box can change (d + 0 * (s - d) == d): a lower-face mask
    # covers about half of the region, and the arithmetic below is most of a paste's time
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return out
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    d = dst[r0:r1, c0:c1].astype(np.float32)
    blended = src[r0:r1, c0:c1].astype(np.float32)
    blended -= d
    blended *= m[r0:r1, c0:c1, None]
    blended += d  # d + m * (s - d), in place
    np.rint(blended, out=blended)
    np.clip(blended, 0, 255, out=blended)
    dst[r0:r1, c0:c1] = blended.astype(out.dtype)
    return out
