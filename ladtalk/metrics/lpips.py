"""LPIPS (VGG16 variant, as taming uses it) with weights resolved from local paths or the Hub.

``LADTALK_VGG16``: torchvision ``vgg16`` weights; ``LADTALK_LPIPS``: the linear heads
(``vgg.pth``), or one file with both. Without them :func:`load_perceptual` warns once and
returns ``None``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from ladtalk._util.device import resolve_device
from ladtalk.checkpoints import load_state_dict, resolve_checkpoint
from ladtalk.errors import CheckpointError

log = logging.getLogger(__name__)

VGG16_ENV = "LADTALK_VGG16"
LPIPS_ENV = "LADTALK_LPIPS"


# -- perceptual (LPIPS, VGG16) --------------------------------------------------------------
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_SLICE_ENDS = (4, 9, 16, 23, 30)  # torchvision feature indices after relu1_2 ... relu5_3
_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """LPIPS (VGG16 variant) as in taming: scaling layer, five VGG stages, unit-normalised
    features, squared differences, 1x1 linear heads, spatial mean, summed over stages.

    ``features`` uses torchvision's ``vgg16().features`` indices (``features.0.weight`` ...);
    heads are ``lin{k}.model.1.weight`` as in the LPIPS release. Parameters are frozen.
    """

    def __init__(self) -> None:
        super().__init__()
        layers = []
        c_in = 3
        for v in _VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c_in = int(v)
        self.features = nn.Sequential(*layers)
        for k, c in enumerate(_CHANNELS):
            head = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))
            nn.init.constant_(head[1].weight, 1.0 / c)
            setattr(self, f"lin{k}", nn.Module())
            getattr(self, f"lin{k}").model = head
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def _stages(self, x: torch.Tensor):
        h = (x - self.shift) / self.scale
        start = 0
        for end in _SLICE_ENDS:
            h = self.features[start:end](h)
            start = end
            yield h

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distance (B, 1, 1, 1) between images in [-1, 1]."""
        total = 0.0
        for k, (fx, fy) in enumerate(zip(self._stages(x), self._stages(y))):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = getattr(self, f"lin{k}").model((nx - ny) ** 2)
            total = total + d.mean(dim=(2, 3), keepdim=True)
        return total


def _map_lpips_keys(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Accept torchvision (``features.N``), LPIPS-package (``net.sliceK.N``) and taming
    (``net.sliceK.N`` / ``lin{k}.model.1``) key styles; drop the VGG classifier."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        key = k
        for pre in ("perceptual_loss.", "loss.perceptual_loss."):
            if key.startswith(pre):
                key = key[len(pre):]
        if key.startswith("net.slice"):
            parts = key.split(".")  # net, sliceK, N, weight
            key = ".".join(["features"] + parts[2:])
        if key.startswith("features.") or (key.startswith("lin") and ".model.1." in key):
            out[key] = v
    return out


_WARNED = False


def _resolve_env(var: str):
    value = os.environ.get(var, "").strip()
    if not value:
        return None
    return resolve_checkpoint(value)


def load_perceptual(device=None, *, warn: bool = True) -> Tuple[Optional[LPIPS], str]:
    """``(LPIPS module or None, a one-line status)``. See the module doc for the env vars.

    Without VGG16 weights there is no perceptual term (one warning per process). With VGG16
    but no LPIPS heads, uniform heads are used (a plain VGG feature distance) and that is said.
    A file that is set but cannot be loaded raises :class:`~ladtalk.errors.CheckpointError`.
    """
    global _WARNED

    paths = [p for p in (_resolve_env(VGG16_ENV), _resolve_env(LPIPS_ENV)) if p is not None]
    state: Dict[str, torch.Tensor] = {}
    for p in paths:
        state.update(_map_lpips_keys(load_state_dict(p, strip_prefix="module.")))
    has_vgg = any(k.startswith("features.") for k in state)
    if not has_vgg:
        msg = (f"perceptual (LPIPS) loss disabled: no pretrained VGG16 weights (set {VGG16_ENV} "
               f"to torchvision's vgg16 weights and {LPIPS_ENV} to the LPIPS heads 'vgg.pth'); "
               "training uses the pixel, codebook and GAN losses only")
        if warn and not _WARNED:
            print(f"warning: {msg}", file=sys.stderr, flush=True)
            _WARNED = True
        return None, msg
    model = LPIPS()
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing_vgg = [k for k in own if k.startswith("features.") and k not in state]
    if wrong or missing_vgg:
        raise CheckpointError(f"perceptual weights from {', '.join(map(str, paths))} do not fit "
                              f"VGG16/LPIPS (wrong shapes: {wrong[:3]}, missing: "
                              f"{missing_vgg[:3]})")
    model.load_state_dict(state, strict=False)
    has_lin = all(f"lin{k}.model.1.weight" in state for k in range(5))
    status = "perceptual loss: LPIPS (VGG16)" if has_lin else (
        "perceptual loss: VGG16 feature distance with uniform heads (no LPIPS heads in "
        f"{LPIPS_ENV})")
    return model.to(resolve_device(device)), status



__all__ = ["LPIPS", "load_perceptual", "VGG16_ENV", "LPIPS_ENV"]
