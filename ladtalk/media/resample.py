"""Resampling and filtering of NCHW image tensors: exact area reduction, Gaussian blur,
bicubic resize. Shared by generation, the degradations, training and evaluation."""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ladtalk.errors import InputError


def gaussian_kernel1d(sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps of radius ``ceil(3 sigma)`` (length 2r+1)."""
    radius = int(math.ceil(3.0 * float(sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def reflect_index(n: int, radius: int, device) -> torch.Tensor:
    """Source indices for reflect padding (edge not repeated) of any radius."""
    idx = torch.arange(-radius, n + radius, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    m = torch.remainder(idx, period)
    return torch.where(m >= n, period - m, m)


def blur_nchw(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of NCHW ``x``, sigma in pixels, reflect padding (edge not
    repeated, any radius); sigma 0 returns a copy."""
    if sigma == 0:
        return x.clone()
    n, c, h, w = x.shape
    k = gaussian_kernel1d(sigma, dtype=x.dtype, device=x.device)
    r = (k.numel() - 1) // 2
    xp = x.index_select(3, reflect_index(w, r, x.device))
    y = F.conv2d(xp.reshape(n * c, 1, h, w + 2 * r), k.view(1, 1, 1, -1))
    y = y.index_select(2, reflect_index(h, r, x.device))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def area_matrix(n_in: int, n_out: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(n_out, n_in) matrix of exact area-averaging weights (rows sum to 1), for n_out <= n_in."""
    scale = n_in / n_out
    edges_in = torch.arange(n_in + 1, dtype=torch.float64)
    lo = torch.arange(n_out, dtype=torch.float64)[:, None] * scale
    hi = lo + scale
    overlap = (torch.minimum(hi, edges_in[None, 1:]) - torch.maximum(lo, edges_in[None, :-1]))
    m = overlap.clamp_min(0.0) / scale
    return m.to(dtype=dtype, device=device)


def area_resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Exact area-averaging downscale of NCHW ``x`` to ``size = (h, w)`` (each <= input)."""
    th, tw = int(size[0]), int(size[1])
    ah = area_matrix(x.shape[-2], th, x.dtype, x.device)
    aw = area_matrix(x.shape[-1], tw, x.dtype, x.device)
    return torch.einsum("ih,nchw,jw->ncij", ah, x, aw)


def down_up_nchw(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area-reduce NCHW [0, 1] ``x`` to ``size`` px on the longer side, bicubic back, clipped."""
    n, c, h, w = x.shape
    longer = max(h, w)
    if size >= longer:
        raise InputError(f"down:{size} needs images larger than {size} px, but these are "
                         f"{w}x{h}; pick a smaller size (Wav2Lip works at 96)")
    th = max(1, round(h * size / longer))
    tw = max(1, round(w * size / longer))
    small = area_resize(x, (th, tw))
    up = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
    return up.clamp(0.0, 1.0)


def resize01(x: torch.Tensor, size) -> torch.Tensor:
    """Resize NCHW [0, 1] images to ``size`` (int or (h, w)): exact area-averaging when
    shrinking both sides, bicubic (clamped) otherwise; unchanged when already that size."""
    th, tw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else map(int, size)
    h, w = x.shape[-2:]
    if (h, w) == (th, tw):
        return x
    if h >= th and w >= tw:
        return area_resize(x, (th, tw))
    return F.interpolate(x, size=(th, tw), mode="bicubic", align_corners=False).clamp(0, 1)


def lipsync_path(x01: torch.Tensor, sigma: float, size: int = 96) -> torch.Tensor:
    """The face as the lip-sync stage sees it: NCHW [0, 1] ``x01`` area-reduced to ``size`` px,
    Gaussian-softened by ``sigma`` px at that size (0: none), rounded to 8 bits and bicubic-
    upsampled back (clamped). Inputs of at most ``size`` px are only softened and rounded."""
    side = x01.shape[-1]
    small = resize01(x01, size) if side > size else x01
    if sigma > 0:
        small = blur_nchw(small, float(sigma))
    small = (small.clamp(0.0, 1.0) * 255.0).round() / 255.0
    return resize01(small, side) if side > size else small


def to_tensor01(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x01: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8: scaled by 255, rounded half to
    even, clipped (the inverse of :func:`to_tensor01`)."""
    y = x01.detach().cpu().permute(0, 2, 3, 1).numpy() * 255.0
    return y.round().clip(0, 255).astype(np.uint8)
