"""Fusing the identity's restoration with the Wav2Lip input it was computed from.

The correction ``restored - input`` is split into the band a 96 px face carries and the
detail above it, each scaled by a calibrated strength, then a lip-shape guard keeps the
mouth opening Wav2Lip drew (docs/generation.md, "Restoration and fusion"). The settings
import without torch (a Wav2Lip-only run may never load it); the band functions load it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from ladtalk.models.wav2lip_io import FACE_SIZE

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FusionConfig:
    """Strengths of the restoration's low (<= 96 px) and high band; see the module doc."""

    low_strength: float = 1.0
    high_strength: float = 1.0
    band_size: int = FACE_SIZE
    shape_sigma: float = 2.0        # px at band_size scale: what "lip shape" means
    shape_tolerance: float = 0.06   # max departure of that band from the input, [0, 1] units

    def __post_init__(self) -> None:
        for name in ("low_strength", "high_strength"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 2.0:
                raise ValueError(f"{name} must be in [0, 2], got {v}")
        if self.band_size < 4:
            raise ValueError(f"band_size must be >= 4, got {self.band_size}")

    @property
    def identity_off(self) -> bool:
        return self.low_strength == 0.0 and self.high_strength == 0.0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "FusionConfig":
        if not d:
            return cls()
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: (int(v) if k == "band_size" else float(v)) for k, v in d.items()
                      if k in keys})


def parse_strength(text: Union[str, float, Sequence[float], None]) -> Optional[Tuple[float, float]]:
    """``"0.8"`` -> (0.8, 0.8); ``"0.3,1"`` -> (0.3, 1.0); None/"" -> None (use calibrated)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, (int, float)):
        vals = [float(text)]
    elif isinstance(text, str):
        try:
            vals = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
        except ValueError:
            vals = []
    else:
        vals = [float(v) for v in text]
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(0.0 <= v <= 2.0 for v in vals):
        raise ValueError(f"restore strength must be S or LOW,HIGH with values in [0, 2], got "
                         f"{text!r}")
    return vals[0], vals[1]


def band_split(d: "torch.Tensor", band_size: int = FACE_SIZE
               ) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """``(low, high)`` of NCHW ``d`` of width R: ``low = bicubic_up(area_down(d, band))``, the
    width brought to ``band_size`` and the height in proportion (a window of a crop's rows
    that starts on the band's grid splits as those rows of the whole crop do)."""
    import torch

    from ladtalk.media.resample import area_resize
    side = d.shape[-1]
    if side <= band_size:
        return d, torch.zeros_like(d)
    low = area_resize(d, (max(1, round(d.shape[-2] * band_size / side)), band_size))
    low = torch.nn.functional.interpolate(low, size=tuple(d.shape[-2:]), mode="bicubic",
                                          align_corners=False)
    return low, d - low


def fuse(restored: torch.Tensor, inp: torch.Tensor, config: FusionConfig = FusionConfig()
         ) -> torch.Tensor:
    """Fuse NCHW [0, 1] ``restored`` (SOVQAE output) with its ``inp`` (same shape)."""
    if restored.shape != inp.shape:
        raise ValueError(f"restored {tuple(restored.shape)} and input {tuple(inp.shape)} differ")
    if config.low_strength == 1.0 and config.high_strength == 1.0 and config.shape_tolerance <= 0:
        return restored
    d = restored.float() - inp.float()
    low, high = band_split(d, config.band_size)
    out = inp.float() + config.low_strength * low + config.high_strength * high
    if config.shape_tolerance > 0:
        out = _guard_shape(out, inp.float(), config)
    return out.clamp_(0.0, 1.0)


def _guard_shape(out: torch.Tensor, inp: torch.Tensor, config: FusionConfig) -> torch.Tensor:
    """Clip the departure of ``out``'s lip-shape band from ``inp``'s to the tolerance."""
    from ladtalk.media.resample import blur_nchw
    sigma = config.shape_sigma * out.shape[-1] / float(config.band_size)
    if sigma <= 0:
        return out
    dev = blur_nchw(out - inp, sigma)
    excess = dev - dev.clamp(-config.shape_tolerance, config.shape_tolerance)
    return out - excess


__all__ = ["FusionConfig", "fuse", "band_split", "parse_strength"]
