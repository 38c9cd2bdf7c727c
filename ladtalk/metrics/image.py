"""Image metrics: PSNR (optionally masked, and batched on torch tensors), SSIM, mouth PSNR.

Images are ``(H, W)`` or ``(H, W, C)`` arrays (channels last), either uint8 (range 0..255) or
floating point in [0, 1]. The data range is explicit: pass ``data_range``, or leave it ``None``
to use 255 for uint8 and 1.0 for floats - floats outside [0, 1] are then refused rather than
guessed about. Both images must have the same shape and dtype. All arithmetic is float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numpy as np

from ladtalk.errors import InputError

if TYPE_CHECKING:  # torch only for the type hints of psnr_torch
    import torch


def _pair(a: np.ndarray, b: np.ndarray, data_range: Optional[float], name: str):
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"{name}: images differ in shape, {a.shape} vs {b.shape}")
    if a.dtype != b.dtype:
        raise InputError(f"{name}: images differ in dtype, {a.dtype} vs {b.dtype}; convert "
                         "both to uint8 or both to float in [0, 1]")
    if a.ndim not in (2, 3) or a.size == 0:
        raise InputError(f"{name}: expected (H, W) or (H, W, C) images, got shape {a.shape}")
    if data_range is None:
        if a.dtype == np.uint8:
            data_range = 255.0
        elif np.issubdtype(a.dtype, np.floating):
            lo = min(float(a.min()), float(b.min()))
            hi = max(float(a.max()), float(b.max()))
            if lo < -1e-6 or hi > 1 + 1e-6:
                raise InputError(f"{name}: float images must lie in [0, 1] (found values in "
                                 f"[{lo:.3g}, {hi:.3g}]); pass data_range explicitly")
            data_range = 1.0
        else:
            raise InputError(f"{name}: unsupported image dtype {a.dtype}; use uint8 or float "
                             "in [0, 1], or pass data_range")
    if not data_range > 0:
        raise InputError(f"{name}: data_range must be positive, got {data_range}")
    return a.astype(np.float64), b.astype(np.float64), float(data_range)


def psnr(generated: np.ndarray, reference: np.ndarray,
         data_range: Optional[float] = None, mask: Optional[np.ndarray] = None,
         mse_floor: float = 0.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(R^2 / MSE)`` over all pixels and channels.

    ``mask``: boolean ``(H, W)`` (or full-shape) array; only those pixels count (an empty mask
    has MSE 0). ``mse_floor`` caps the result; with the default 0 identical images give ``inf``.
    """
    g, r, rng = _pair(generated, reference, data_range, "psnr")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != g.shape[:mask.ndim]:
            raise InputError(f"psnr: mask of shape {mask.shape} does not fit images of "
                             f"shape {g.shape}")
        g, r = g[mask], r[mask]
    mse = float(np.mean((g - r) ** 2)) if g.size else 0.0
    mse = max(mse, float(mse_floor))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(rng * rng / mse))


def psnr_torch(y: "torch.Tensor", x: "torch.Tensor", data_range: float = 1.0,
               mse_floor: float = 1e-10) -> "torch.Tensor":
    """Per-image PSNR (dB) of two ``(N, ...)`` torch batches, float64, shape ``(N,)``.

    The MSE of each image is floored at ``mse_floor`` (1e-10: at most 100 dB on [0, 1]).
    """
    if y.shape != x.shape:
        raise InputError(f"psnr_torch: batches differ in shape, {tuple(y.shape)} vs "
                         f"{tuple(x.shape)}")
    mse = ((y.double() - x.double()) ** 2).flatten(1).mean(1).clamp_min(mse_floor)
    rng = float(data_range)
    return 10.0 * (rng * rng / mse).log10()


@dataclass(frozen=True)
class SSIMConfig:
    """SSIM variant. The default is the Gaussian-window SSIM of Wang et al. (2004).

    ``gaussian=True`` (default): Gaussian weights with ``sigma`` 1.5 truncated at 3.5 sigma
    (an 11x11 window), population covariances. Equal to ``skimage.metrics.structural_similarity(
    a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=R,
    channel_axis=-1)``.

    ``gaussian=False``: 7x7 uniform window with sample covariances, equal to scikit-image's
    defaults (``structural_similarity(a, b, data_range=R, channel_axis=-1)``).

    In both, filters reflect at the borders, the mean skips a (window-1)/2 border strip, and
    colour images are scored per channel and averaged.
    """

    gaussian: bool = True
    sigma: float = 1.5
    truncate: float = 3.5
    uniform_size: int = 7
    k1: float = 0.01
    k2: float = 0.03


def ssim(generated: np.ndarray, reference: np.ndarray, data_range: Optional[float] = None,
         config: SSIMConfig = SSIMConfig()) -> float:
    """Mean structural similarity (see :class:`SSIMConfig` for the variant)."""
    from scipy.ndimage import gaussian_filter, uniform_filter  # scipy.ndimage: 0.14 s to load

    g, r, rng = _pair(generated, reference, data_range, "ssim")
    if g.ndim == 2:
        g, r = g[..., None], r[..., None]
    if config.gaussian:
        win = 2 * int(config.truncate * config.sigma + 0.5) + 1

        def filt(x):
            # sigma 0 on the channel axis: each channel is filtered on its own
            return gaussian_filter(x, sigma=(config.sigma, config.sigma, 0),
                                   truncate=config.truncate, mode="reflect")
        cov_norm = 1.0
    else:
        win = config.uniform_size

        def filt(x):
            return uniform_filter(x, size=(win, win, 1), mode="reflect")
        cov_norm = win * win / (win * win - 1.0)
    if min(g.shape[:2]) < win:
        raise InputError(f"ssim: images of {g.shape[0]}x{g.shape[1]} are smaller than the "
                         f"{win}x{win} SSIM window")
    ux, uy = filt(g), filt(r)
    vx = cov_norm * (filt(g * g) - ux * ux)
    vy = cov_norm * (filt(r * r) - uy * uy)
    vxy = cov_norm * (filt(g * r) - ux * uy)
    c1 = (config.k1 * rng) ** 2
    c2 = (config.k2 * rng) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    p = (win - 1) // 2
    inner = s[p:s.shape[0] - p, p:s.shape[1] - p]
    return float(np.mean(inner.reshape(-1, inner.shape[-1]).mean(axis=0)))


@dataclass(frozen=True)
class MouthRegion:
    """The mouth region as fractions of the face box (x1, y1, x2, y2).

    Default: the middle half horizontally (``x0``..``x1`` = 0.25..0.75 of the box width) and
    rows 0.60..0.95 of the box height - with a typical detector box (eyebrows to chin, as
    S3FD / Wav2Lip use) this covers the lips and their corners with some margin and leaves
    out the nose and the jaw line. Pixel bounds are ``floor`` of the start and ``ceil`` of the
    end, clipped to the image.
    """

    x0: float = 0.25
    x1: float = 0.75
    y0: float = 0.60
    y1: float = 0.95

    def pixel_box(self, face_box: Sequence[float], image_shape: Tuple[int, ...]
                  ) -> Tuple[int, int, int, int]:
        """(left, top, right, bottom) integer bounds, right/bottom exclusive."""
        bx1, by1, bx2, by2 = (float(v) for v in face_box)
        w, h = bx2 - bx1, by2 - by1
        if not (w > 0 and h > 0):
            raise InputError(f"mouth region: empty face box {list(face_box)}")
        left = int(np.floor(bx1 + self.x0 * w))
        right = int(np.ceil(bx1 + self.x1 * w))
        top = int(np.floor(by1 + self.y0 * h))
        bottom = int(np.ceil(by1 + self.y1 * h))
        H, W = image_shape[:2]
        left, right = max(0, left), min(W, right)
        top, bottom = max(0, top), min(H, bottom)
        if right <= left or bottom <= top:
            raise InputError(f"mouth region of face box {list(face_box)} lies outside the "
                             f"{W}x{H} image")
        return left, top, right, bottom

    def crop(self, image: np.ndarray, face_box: Sequence[float]) -> np.ndarray:
        left, top, right, bottom = self.pixel_box(face_box, np.shape(image))
        return np.asarray(image)[top:bottom, left:right]


def mouth_psnr(generated: np.ndarray, reference: np.ndarray, face_box: Sequence[float],
               data_range: Optional[float] = None, region: MouthRegion = MouthRegion()) -> float:
    """PSNR over the mouth region of ``face_box`` (x1, y1, x2, y2 in pixels of the frame).

    The same pixel rectangle is cut from both frames (use the reference frame's box).
    """
    return psnr(region.crop(generated, face_box), region.crop(reference, face_box), data_range)
