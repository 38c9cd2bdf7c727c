"""The package's one batched SOVQAE restoration loop (encode -> nearest codes -> decode).

:class:`Restorer` turns face crops into SOVQAE input and back for generation, robustness,
evaluation and the app: uint8 RGB crops (:meth:`Restorer.restore`) or float NCHW [0, 1]
batches (:meth:`Restorer.restore01`, one batch: :meth:`Restorer.restore_tensor`), in batches
under ``no_grad`` and the chosen precision, optionally fused with the input
(:mod:`ladtalk.generation.fusion`; ``fusion=None`` is the plain decode).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

from ladtalk._util.device import DeviceLike, autocast, resolve_device, resolve_dtype
from ladtalk.generation.fusion import FusionConfig, fuse
from ladtalk.identities.meta import IdentityMeta, load_meta
from ladtalk.identities.store import resolve_identity
from ladtalk.media.resample import resize01, to_tensor01, to_uint8
from ladtalk.models.sovqae import SOVQAE

_UNSET = object()


@dataclass
class RestoreOutput:
    """One batch through the SOVQAE: ``images`` (B, 3, R, R) in [0, 1] (float32, model
    resolution), ``indices`` (B, h*w) codes, ``h`` (B, D, h, w) pre-quantization latents."""

    images: torch.Tensor
    indices: torch.Tensor
    h: torch.Tensor


class Restorer:
    """Batched, no-grad SOVQAE restoration of face crops on one device.

    ``model``: an :class:`ladtalk.models.sovqae.SOVQAE` (moved to ``device`` and set to eval).
    ``precision``: ``None``/"fp16" (default: fp16 autocast on CUDA, fp32 on CPU), "bf16",
    "fp32", or "auto" (as "fp16", plus bf16 on a CPU with native bf16; the generation
    pipeline's default). The quantizer always measures distances in float32.
    """

    def __init__(self, model: torch.nn.Module, device: DeviceLike = None, batch_size: int = 16,
                 precision: Optional[str] = None,
                 fusion: Optional[FusionConfig] = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = max(1, int(batch_size))
        self.dtype = resolve_dtype(precision or "fp16", self.device)
        self.fusion = fusion
        self.meta: Optional[IdentityMeta] = None  # set by from_identity

    @classmethod
    def from_identity(cls, identity: Union[str, Path], device: DeviceLike = None,
                      fusion: Optional[FusionConfig] = _UNSET,  # type: ignore[assignment]
                      **kwargs) -> "Restorer":
        """Load an identity (store name or directory) and wrap it. ``fusion``: default the
        identity's calibrated strengths from ``meta.json`` (plain decode for identities
        enrolled before fusion existed); ``None`` for the plain decode."""
        dev = resolve_device(device)
        path = resolve_identity(identity)
        meta = load_meta(path)
        if fusion is _UNSET:
            fusion = FusionConfig.from_dict(meta.fusion) if meta.fusion else None
        restorer = cls(SOVQAE.from_pretrained(path, device=dev), dev, fusion=fusion, **kwargs)
        restorer.meta = meta
        return restorer

    @property
    def resolution(self) -> int:
        return int(self.model.config.resolution)

    @torch.no_grad()
    def restore_tensor(self, x01: torch.Tensor) -> RestoreOutput:
        """One batch of NCHW [0, 1] images at model resolution -> :class:`RestoreOutput`."""
        x = x01.to(self.device, non_blocking=True).float()
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = resize01(x, self.resolution)
        with autocast(self.device, self.dtype):
            enc = self.model.encode(x * 2.0 - 1.0)
            y = self.model.decode(enc.z_q)
        images = ((y.float() + 1.0) / 2.0).clamp_(0.0, 1.0)
        return RestoreOutput(images=images, indices=enc.indices.view(x.shape[0], -1),
                             h=enc.h.float())

    @torch.no_grad()
    def restore01(self, x01: torch.Tensor,
                  fusion: Optional[FusionConfig] = _UNSET,  # type: ignore[assignment]
                  size: Optional[Union[int, Tuple[int, int]]] = None) -> torch.Tensor:
        """NCHW [0, 1] images of any size -> restored float32 images on the CPU, in batches.

        ``fusion``: default the restorer's own, ``None`` the plain decode. ``size``: output
        ``(H, W)`` (or one side); default the input's size (``self.resolution`` keeps the
        model's resolution).
        """
        fusion = self.fusion if fusion is _UNSET else fusion
        outs = []
        if size is None:
            size = tuple(x01.shape[-2:])
        elif isinstance(size, int):
            size = (size, size)
        for s in range(0, x01.shape[0], self.batch_size):
            xb = resize01(x01[s:s + self.batch_size].to(self.device).float(), self.resolution)
            y = self.restore_tensor(xb).images
            if fusion is not None:
                y = fuse(y, xb, fusion)
            y = resize01(y, size)
            outs.append(y.cpu())
        if not outs:
            return x01.new_zeros((0, x01.shape[1], *size)).float().cpu()
        return torch.cat(outs)

    def restore(self, crops: np.ndarray,
                fusion: Optional[FusionConfig] = _UNSET  # type: ignore[assignment]
                ) -> np.ndarray:
        """uint8 RGB crops (N, H, W, 3) or (H, W, 3) -> restored uint8 crops of the same shape
        (fused as :meth:`restore01`)."""
        arr = np.asarray(crops)
        if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
            raise ValueError(f"restore expects uint8 RGB crops (N, H, W, 3), got {arr.dtype} "
                             f"{arr.shape}")
        single = arr.ndim == 3
        batch = arr[None] if single else arr
        out = to_uint8(self.restore01(to_tensor01(batch), fusion))
        return out[0] if single else out


__all__ = ["Restorer", "RestoreOutput"]
