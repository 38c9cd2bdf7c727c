"""The package's one batched SOVQAE restoration loop (encode -> nearest codes -> decode).

:class:`Restorer` turns face crops into SOVQAE input and back for generation, robustness,
evaluation and the app: uint8 RGB crops (:meth:`Restorer.restore`) or float NCHW [0, 1]
batches (:meth:`Restorer.restore01`, one batch: :meth:`Restorer.restore_tensor`), in batches
under ``no_grad`` and the chosen precision, optionally fused with the input
(:mod:`ladtalk.generation.fusion`; ``fusion=None`` is the plain decode).

Generation pastes only the lower face, so it asks for the rows from the paste mask's top
down (``from_row``): a model without attention then runs on a window of the crop that starts
:data:`WINDOW_REACH` latent rows higher (:meth:`Restorer.window_top`), a quarter less work at
256 px, and those rows come out as from the whole crop (docs/performance.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ladtalk._util.device import DeviceLike, resolve_device
from ladtalk.generation.fusion import FusionConfig, fuse
from ladtalk.identities.meta import IdentityMeta, load_meta
from ladtalk.identities.store import resolve_identity
from ladtalk.media.resample import resize01, to_tensor01, to_uint8
from ladtalk.models.sovqae import SOVQAE
from ladtalk.models.wav2lip import FACE_SIZE
from ladtalk.runtime.select import RuntimeHolder, RuntimeSpec

_UNSET = object()
#: on a CPU, pixels per SOVQAE call: 2 crops at 256 px. Small batches stay in the caches; one
#: model thread restores 256 px crops 1.4-2x faster at batch 1-2 than at 16, with a quarter of
#: the memory (docs/performance.md)
CPU_BATCH_PIXELS = 2 * 256 * 256
GPU_BATCH = 16
#: latent rows a window of the crop starts above the first row asked for (48 px at f = 4).
#: Measured with the demo identity's weights at 256 px: a window's rows 40 px and more below
#: its top equal the whole crop's to 0.5 grey levels (docs/performance.md)
WINDOW_REACH = 12


def default_batch(device: torch.device, resolution: int) -> int:
    """Crops per SOVQAE call: :data:`GPU_BATCH` on CUDA, :data:`CPU_BATCH_PIXELS` worth on a
    CPU (2 at 256 px, 8 at 128 px, at most 16)."""
    if device.type != "cpu":
        return GPU_BATCH
    return int(max(1, min(GPU_BATCH, CPU_BATCH_PIXELS // (resolution * resolution))))


class _Part(nn.Module):
    """One SOVQAE method as a module of its own, for the runtime: ``encode_latent`` (image in
    [-1, 1] -> latent ``h``) or ``decode`` (quantized latent -> image in about [-1, 1])."""

    def __init__(self, model: SOVQAE, method: str, dynamic: bool = False) -> None:
        super().__init__()
        self.model, self.method = model, method
        #: any height and width for OpenVINO too (windows of the crop), else the examples'
        self.openvino_dynamic_axes = (2, 3) if dynamic else ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(x)

    def extra_repr(self) -> str:
        return f"method={self.method}"


@dataclass
class RestoreOutput:
    """One batch through the SOVQAE: ``images`` (B, 3, R, R) in [0, 1] (float32, model
    resolution), ``indices`` (B, h*w) codes, ``h`` (B, D, h, w) pre-quantization latents."""

    images: torch.Tensor
    indices: torch.Tensor
    h: torch.Tensor


class Restorer(RuntimeHolder):
    """Batched, no-grad SOVQAE restoration of face crops on one device.

    ``model``: an :class:`ladtalk.models.sovqae.SOVQAE` (moved to ``device`` and set to eval).
    ``batch_size``: crops per call (default :func:`default_batch`).
    ``precision``: ``None``/"fp16" (default: fp16 autocast on CUDA, fp32 on CPU), "bf16",
    "fp32", or "auto" (the fastest measured; the generation pipeline's default).
    ``backend``: "torch" (default), "openvino" or "auto" (:mod:`ladtalk.runtime`). The
    quantizer always measures distances in float32 torch.
    """

    def __init__(self, model: torch.nn.Module, device: DeviceLike = None,
                 batch_size: Optional[int] = None,
                 precision: Optional[str] = None,
                 fusion: Optional[FusionConfig] = None, backend: str = "torch",
                 compile: bool = False) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = max(1, int(batch_size or default_batch(
            self.device, int(self.model.config.resolution))))
        self._init_runtime(RuntimeSpec.of(precision or "fp16", backend, self.device, compile))
        self._parts = (_Part(self.model, "encode_latent", self.windowable).eval(),
                       _Part(self.model, "decode", self.windowable).eval())
        self.memory_format = torch.contiguous_format
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
        if dev.type == "cpu":  # the restorer owns this model: NHWC convolutions are faster
            restorer.use_channels_last(True)
        return restorer

    def use_channels_last(self, enable: bool = True) -> "Restorer":
        """Run the model channels-last (NHWC: about 1.3x (fp32) to 1.8x (bf16) faster on a
        CPU at 256 px, equal up to float rounding). Changes the model's own tensors: only for
        a model the restorer owns (not one being trained)."""
        fmt = torch.channels_last if enable else torch.contiguous_format
        self.model.to(memory_format=fmt)
        self.memory_format = fmt
        return self

    # ------------------------------------------------------------------ runtime
    def _runtime_parts(self):
        n, r = self.batch_size, self.resolution
        x = torch.rand((n, 3, r, r), generator=torch.Generator().manual_seed(0))
        x = (x * 2 - 1).to(self.device).contiguous(memory_format=self.memory_format)
        with torch.no_grad():
            z_q = self.model.encode(x).z_q.contiguous(memory_format=self.memory_format)
        return ("sovqae", [(self._parts[0], (x,)), (self._parts[1], (z_q,))],
                {"config": self.model.config.to_dict()})

    @property
    def resolution(self) -> int:
        return int(self.model.config.resolution)

    @property
    def windowable(self) -> bool:
        """Whether every output pixel depends on nearby input only (no attention), so that a
        window of the crop's rows can be restored alone (``from_row``)."""
        cfg = self.model.config
        return not cfg.attn_resolutions and not cfg.mid_attn

    def window_top(self, from_row: float,
                   fusion: Optional[FusionConfig] = _UNSET  # type: ignore[assignment]
                   ) -> int:
        """The first crop row (at model resolution) the model sees when only the rows from
        the fraction ``from_row`` of the crop down are wanted: :data:`WINDOW_REACH` latent rows
        above it, on the grid of the latents and of the ``fusion``'s band (default the
        restorer's own); 0 (the whole crop) for ``from_row <= 0`` or a model with attention."""
        if from_row <= 0 or not self.windowable:
            return 0
        fusion = self.fusion if fusion is _UNSET else fusion
        band = fusion.band_size if fusion is not None else FACE_SIZE
        r, f = self.resolution, self.model.config.downsample_factor
        step = math.lcm(f, r // math.gcd(r, int(band)))
        top = int(math.floor(min(float(from_row), 1.0) * r)) - WINDOW_REACH * f
        return max(0, top // step * step)

    @torch.no_grad()
    def restore_tensor(self, x01: torch.Tensor) -> RestoreOutput:
        """One batch of NCHW [0, 1] images at model resolution -> :class:`RestoreOutput`.
        A window of rows of such images (the full width, a height that is a multiple of the
        downsampling factor) is restored as it is; anything else is resized first."""
        x = x01.to(self.device, non_blocking=True).float()
        h, w = x.shape[-2:]
        window = self.windowable and 0 < h < self.resolution \
            and h % self.model.config.downsample_factor == 0
        if w != self.resolution or (h != self.resolution and not window):
            x = resize01(x, self.resolution)
        rt = self.runtime
        fmt = rt.input_format(self.memory_format)
        x = (x * 2.0 - 1.0).contiguous(memory_format=fmt)
        enc = self.model.quantize_latent(rt.run(0, self._parts[0], x))
        y = rt.run(1, self._parts[1], enc.z_q.contiguous(memory_format=fmt))
        images = ((y + 1.0) / 2.0).clamp_(0.0, 1.0)
        return RestoreOutput(images=images, indices=enc.indices.view(x.shape[0], -1),
                             h=enc.h.float())

    @torch.no_grad()
    def restore01(self, x01: torch.Tensor,
                  fusion: Optional[FusionConfig] = _UNSET,  # type: ignore[assignment]
                  size: Optional[Union[int, Tuple[int, int]]] = None,
                  from_row: float = 0.0) -> torch.Tensor:
        """NCHW [0, 1] images of any size -> restored float32 images on the CPU, in batches.

        ``fusion``: default the restorer's own, ``None`` the plain decode. ``size``: output
        ``(H, W)`` (or one side); default the input's size (``self.resolution`` keeps the
        model's resolution). ``from_row``: only the rows from this fraction of the image down
        are wanted; the model runs on the window from :meth:`window_top` (the rows above it
        are returned as given), and the wanted rows equal the whole image's restoration.
        """
        fusion = self.fusion if fusion is _UNSET else fusion
        outs = []
        if size is None:
            size = tuple(x01.shape[-2:])
        elif isinstance(size, int):
            size = (size, size)
        top = self.window_top(from_row, fusion)
        for s in range(0, x01.shape[0], self.batch_size):
            xb = resize01(x01[s:s + self.batch_size].to(self.device).float(), self.resolution)
            window = xb[:, :, top:]
            y = self.restore_tensor(window).images
            if fusion is not None:
                y = fuse(y, window, fusion)
            if top:
                y = torch.cat([xb[:, :, :top], y], dim=2)
            y = resize01(y, size)
            outs.append(y.cpu())
        if not outs:
            return x01.new_zeros((0, x01.shape[1], *size)).float().cpu()
        return torch.cat(outs)

    def restore(self, crops: np.ndarray,
                fusion: Optional[FusionConfig] = _UNSET,  # type: ignore[assignment]
                from_row: float = 0.0) -> np.ndarray:
        """uint8 RGB crops (N, H, W, 3) or (H, W, 3) -> restored uint8 crops of the same shape
        (fused, and only the rows from ``from_row`` down restored, as :meth:`restore01`)."""
        arr = np.asarray(crops)
        if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
            raise ValueError(f"restore expects uint8 RGB crops (N, H, W, 3), got {arr.dtype} "
                             f"{arr.shape}")
        single = arr.ndim == 3
        batch = arr[None] if single else arr
        out = to_uint8(self.restore01(to_tensor01(batch), fusion, from_row=from_row))
        return out[0] if single else out


__all__ = ["Restorer", "RestoreOutput", "WINDOW_REACH"]
