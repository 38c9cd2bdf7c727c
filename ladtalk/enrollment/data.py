"""Training batches for enrollment: augmented crops, degradations, patches, weight maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ladtalk.errors import InputError
from ladtalk.media.resample import blur_nchw, down_up_nchw, lipsync_path, to_tensor01


def _jitter(x: torch.Tensor, gen: torch.Generator, shift: float, scale: float) -> torch.Tensor:
    """Per-image random translation (fraction of the size) and zoom, bilinear, border pad."""
    b = x.shape[0]
    s = 1.0 + (torch.rand(b, generator=gen) * 2 - 1) * scale
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * shift * 2  # in [-1, 1] grid units
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = s
    theta[:, 1, 1] = s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class CropSampler:
    """Random training batches from uint8 crops: flips, small shifts / zooms, colour jitter and
    optional random patches; deterministic per ``seed``, and its RNG state is resumable."""

    def __init__(self, crops: np.ndarray, batch_size: int, *, patch: int = 0, flip: bool = True,
                 shift: float = 0.02, scale: float = 0.03, color: float = 0.05,
                 seed: int = 0) -> None:
        if len(crops) == 0:
            raise InputError("no training crops")
        self.crops = crops
        self.batch_size = int(batch_size)
        self.patch = int(patch) if patch and patch < crops.shape[1] else 0
        self.flip, self.shift = flip, float(shift)
        self.scale, self.color = float(scale), float(color)
        self.gen = torch.Generator().manual_seed(int(seed))

    def sample(self, full: bool = False) -> torch.Tensor:
        """A (B, 3, h, w) batch in [0, 1]; ``full=True`` ignores ``patch``."""
        idx = torch.randint(len(self.crops), (self.batch_size,), generator=self.gen).numpy()
        x = to_tensor01(self.crops[idx])
        b = x.shape[0]
        if self.flip:
            f = torch.rand(b, generator=self.gen) < 0.5
            x[f] = x[f].flip(-1)
        if self.shift > 0 or self.scale > 0:
            x = _jitter(x, self.gen, self.shift, self.scale)
        if self.color > 0:
            gain = 1.0 + (torch.rand(b, 1, 1, 1, generator=self.gen) * 2 - 1) * self.color
            bias = (torch.rand(b, 1, 1, 1, generator=self.gen) * 2 - 1) * self.color * 0.5
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * gain + mean + bias).clamp_(0.0, 1.0)
        if self.patch and not full:
            p = self.patch
            oy, ox = (int(v) for v in torch.randint(x.shape[-1] - p + 1, (2,), generator=self.gen))
            x = x[..., oy:oy + p, ox:ox + p]
        return x.contiguous()

    def state(self) -> torch.Tensor:
        return self.gen.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.gen.set_state(state)


@dataclass(frozen=True)
class DegradationRanges:
    """Strength ranges (uniform draws) and relative frequencies ``weights`` of the (blur,
    noise, down-up, lipsync path) augmentations; units and the lipsync path in
    docs/enrollment.md."""

    blur: Tuple[float, float] = (0.5, 3.0)
    noise: Tuple[float, float] = (0.02, 0.15)
    down: Tuple[float, float] = (0.4, 0.9)
    lipsync_sigma: Tuple[float, float] = (0.0, 1.5)
    lipsync_size: int = 96
    weights: Tuple[float, float, float, float] = (1.0, 1.0, 1.0, 0.0)


def random_degradation(x01: torch.Tensor, gen: torch.Generator,
                       ranges: DegradationRanges = DegradationRanges()) -> torch.Tensor:
    """Degrade each image of a [0, 1] batch with one randomly chosen degradation (blur, noise,
    area-down / bicubic-up, or the generation path :func:`ladtalk.media.resample.lipsync_path`,
    drawn with ``ranges.weights``) of random strength; returns a new tensor."""
    out = torch.empty_like(x01)
    side = x01.shape[-1]
    w = torch.tensor([max(0.0, float(v)) for v in ranges.weights], dtype=torch.float64)
    if float(w.sum()) <= 0:
        raise ValueError(f"degradation weights must not all be zero, got {ranges.weights}")
    for i in range(x01.shape[0]):
        xi = x01[i:i + 1]
        kind = int(torch.multinomial(w, 1, generator=gen))
        u = float(torch.rand(1, generator=gen))
        if kind == 0:
            lo, hi = ranges.blur
            out[i:i + 1] = blur_nchw(xi, lo + (hi - lo) * u)
        elif kind == 1:
            lo, hi = ranges.noise
            noise = torch.randn(xi.shape, generator=gen).to(xi)
            out[i:i + 1] = (xi + (lo + (hi - lo) * u) * noise).clamp(0.0, 1.0)
        elif kind == 2:
            lo, hi = ranges.down
            size = max(4, min(side - 1, int(round(side * (lo + (hi - lo) * u)))))
            out[i:i + 1] = down_up_nchw(xi, size)
        else:
            lo, hi = ranges.lipsync_sigma
            out[i:i + 1] = lipsync_path(xi, lo + (hi - lo) * u, ranges.lipsync_size)
    return out


def patch_windows(batch: int, side: int, patch: int, gen: torch.Generator,
                  area: Tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
                  focus: float = 0.0) -> List[Tuple[int, int]]:
    """Top-left corners ``(y, x)`` of ``batch`` random ``patch``-px windows in a ``side``-px
    crop: with probability ``focus`` the window lies inside ``area`` (fractions ``x0, y0, x1,
    y1`` of the crop, clipped to fit the patch), otherwise anywhere."""
    out = []
    x0, y0, x1, y1 = area
    for _ in range(batch):
        inside = focus > 0 and float(torch.rand(1, generator=gen)) < focus
        if inside:
            lo_y = min(int(round(y0 * side)), side - patch)
            hi_y = max(lo_y, min(int(round(y1 * side)) - patch, side - patch))
            lo_x = min(int(round(x0 * side)), side - patch)
            hi_x = max(lo_x, min(int(round(x1 * side)) - patch, side - patch))
        else:
            lo_y = lo_x = 0
            hi_y = hi_x = side - patch
        oy = lo_y + int(torch.randint(hi_y - lo_y + 1, (1,), generator=gen))
        ox = lo_x + int(torch.randint(hi_x - lo_x + 1, (1,), generator=gen))
        out.append((oy, ox))
    return out


def take_patches(x: torch.Tensor, windows: Sequence[Tuple[int, int]], patch: int) -> torch.Tensor:
    """Stack the ``patch``-px windows (one per image) of a (B, C, S, S) batch."""
    return torch.stack([x[i, :, oy:oy + patch, ox:ox + patch] for i, (oy, ox) in
                        enumerate(windows)]).contiguous()


def face_weight_map(size: int, strength: float, device=None) -> Optional[torch.Tensor]:
    """(1, 1, S, S) per-pixel loss weight, mean 1: ``1 + strength`` in a centred ellipse
    covering the inner face (eyes to chin) falling smoothly to 1 outside; ``None`` if 0."""
    if strength <= 0:
        return None
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    r = ((xx - 0.5) / 0.32) ** 2 + ((yy - 0.58) / 0.38) ** 2
    w = 1.0 + strength * torch.clamp(1.5 - r, 0.0, 1.0)
    w = w / w.mean()
    return w.view(1, 1, size, size).to(device)


__all__ = ["CropSampler", "DegradationRanges", "random_degradation",
           "patch_windows", "take_patches", "face_weight_map"]
