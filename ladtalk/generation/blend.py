"""Paste a generated face crop back into its frame without a visible box.

:func:`match_colour` maps the crop's colours onto the frame's (statistics of an upper-face
band), :func:`blend_face` pastes it through the feathered lower-face mask
(:func:`lower_face_mask`); pixels outside the mask stay bit-exact. docs/generation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np

from ladtalk.face.crop import CropRegion, paste_back


@dataclass(frozen=True)
class BlendConfig:
    """Shape of the lower-face mask and the colour-match settings (fractions of the crop)."""

    top: float = 0.45           # mask is 0 at and above this row (fraction of the crop height)
    full_top: float = 0.62      # ... and reaches 1 here
    full_bottom: float = 0.90   # stays 1 down to here, then falls to 0 at the bottom edge
    side: float = 0.04          # mask is 0 within this fraction of the left / right edges
    full_side: float = 0.20     # ... and 1 from here inwards
    colour_match: bool = True
    #: reference band for the colour statistics, ``(x0, y0, x1, y1)`` fractions of the crop
    reference: Tuple[float, float, float, float] = (0.2, 0.12, 0.8, 0.45)
    max_gain: float = 1.25
    #: rows (fractions of the crop) on which a Wav2Lip crop pasted as it is (no identity) has
    #: its colours measured, instead of the reference band's: the part of the generator's
    #: unmasked upper half nearest the mouth (:meth:`direct`). Wav2Lip then draws the rows
    #: from its top down only, a fifth less arithmetic
    #: (:class:`~ladtalk.models.wav2lip_rows.Wav2LipRows`). None: the reference band, and
    #: the whole crop drawn
    lipsync_band: Optional[Tuple[float, float]] = (1.0 / 3.0, 0.5)

    def __post_init__(self) -> None:
        if not 0.0 <= self.top < self.full_top <= self.full_bottom < 1.0:
            raise ValueError("need 0 <= top < full_top <= full_bottom < 1, got "
                             f"{self.top}, {self.full_top}, {self.full_bottom}")
        if not 0.0 <= self.side < self.full_side < 0.5:
            raise ValueError(f"need 0 <= side < full_side < 0.5, got {self.side}, "
                             f"{self.full_side}")
        x0, y0, x1, y1 = self.reference
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"reference band must lie inside the crop, got {self.reference}")
        b0, b1 = self.lipsync_band or (0.0, 1.0)
        if not 0.0 <= b0 < min(b1, self.top) or b1 > 1.0:
            raise ValueError(f"lipsync_band must be rows (top, bottom) with 0 <= top < bottom <= 1 "
                             f"and top above the mask's top {self.top}, got {self.lipsync_band}")
        if self.max_gain < 1.0:
            raise ValueError(f"max_gain must be >= 1, got {self.max_gain}")

    def from_row(self, top: float) -> "BlendConfig":
        """This config with the colour reference band starting no higher than the fraction
        ``top`` of the crop: for a generated crop whose rows above ``top`` are not the
        generator's (a restored window, :meth:`ladtalk.generation.restore.Restorer.window_top`),
        so that its colours are measured where it drew. Unchanged when the band would vanish."""
        x0, y0, x1, y1 = self.reference
        if top <= y0 or top >= y1:
            return self
        return replace(self, reference=(x0, float(top), x1, y1))

    def direct(self) -> "BlendConfig":
        """This config for Wav2Lip's crop pasted as it is: the colours measured on the rows
        of :attr:`lipsync_band` (the reference band's columns); unchanged without one."""
        if self.lipsync_band is None:
            return self
        x0, _, x1, _ = self.reference
        b0, b1 = self.lipsync_band
        return replace(self, reference=(x0, float(b0), x1, float(b1)))


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Smoothstep from 0 at ``lo`` to 1 at ``hi``."""
    t = np.clip((x - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@lru_cache(maxsize=16)
def _mask_cached(size: int, config: BlendConfig) -> np.ndarray:
    c = (np.arange(size, dtype=np.float64) + 0.5) / size  # pixel centres, fractions
    vertical = _ramp(c, config.top, config.full_top) * _ramp(1.0 - c, 0.0, 1.0 - config.full_bottom)
    edge = np.minimum(c, 1.0 - c)
    horizontal = _ramp(edge, config.side, config.full_side)
    mask = (vertical[:, None] * horizontal[None, :]).astype(np.float32)
    # the outermost pixel ring is exactly 0, so the crop border never shows
    mask[0, :] = mask[-1, :] = 0.0
    mask[:, 0] = mask[:, -1] = 0.0
    mask[mask < 1e-3] = 0.0
    mask.setflags(write=False)
    return mask


def lower_face_mask(size: int, config: BlendConfig = BlendConfig()) -> np.ndarray:
    """The ``(size, size)`` float32 lower-face paste mask in [0, 1] (read-only, cached)."""
    if int(size) < 4:
        raise ValueError(f"mask size must be at least 4 px, got {size}")
    return _mask_cached(int(size), config)


def colour_stats(img: np.ndarray, band: Tuple[float, float, float, float]
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``img`` (H, W, C) over a fractional band."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = band
    r0, r1 = int(round(y0 * h)), max(int(round(y1 * h)), int(round(y0 * h)) + 1)
    c0, c1 = int(round(x0 * w)), max(int(round(x1 * w)), int(round(x0 * w)) + 1)
    region = np.asarray(img[r0:r1, c0:c1], dtype=np.float32).reshape(-1, img.shape[2])
    return region.mean(axis=0), region.std(axis=0)


def match_colour(generated: np.ndarray, original: np.ndarray,
                 config: BlendConfig = BlendConfig()) -> np.ndarray:
    """Map ``generated``'s colours onto ``original``'s (same-size crops, uint8 or float in
    [0, 255]) using the statistics of the reference band; returns float32 in [0, 255]."""
    if generated.shape != original.shape:
        raise ValueError(f"generated crop {generated.shape} and original crop "
                         f"{original.shape} must have the same shape")
    g = np.asarray(generated, dtype=np.float32)
    mg, sg = colour_stats(g, config.reference)
    mo, so = colour_stats(original, config.reference)
    gain = np.clip(so / np.maximum(sg, 1e-3), 1.0 / config.max_gain, config.max_gain)
    out = (g - mg) * gain + mo
    return np.clip(out, 0.0, 255.0, out=out)


def blend_face(frame: np.ndarray, generated: np.ndarray, region: CropRegion,
               original: Optional[np.ndarray] = None, config: BlendConfig = BlendConfig(),
               inplace: bool = True) -> np.ndarray:
    """Paste a square ``generated`` crop (any size) into ``frame`` at ``region``.

    ``original`` is the original crop at the generated crop's size (needed for colour
    matching; pass ``None`` to skip it). Only pixels under the feathered lower-face mask
    change. Returns the frame (modified in place unless ``inplace=False``).
    """
    size = generated.shape[0]
    if generated.shape[1] != size:
        raise ValueError(f"generated crop must be square, got {generated.shape}")
    crop = generated
    if config.colour_match and original is not None:
        crop = match_colour(generated, original, config)
    return paste_back(frame, crop, region, mask=lower_face_mask(size, config), inplace=inplace)
