"""Device and precision helpers: one place that decides where tensors live.

Nothing in the package calls ``.cuda()``; everything takes a ``device`` argument that goes
through :func:`resolve_device`, and mixed precision goes through :func:`autocast`, which is
a no-op on CPU.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Union

import torch

DeviceLike = Union[str, torch.device, None]

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
           "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_device(device: DeviceLike = None) -> torch.device:
    """``None``/"auto" -> CUDA when available else CPU; otherwise validate the request."""
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from .errors import InputError
        raise InputError(f"device '{device}' was requested but CUDA is not available on this "
                         "machine; pass --device cpu (or leave it unset to pick automatically)")
    return dev


def resolve_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """Parse a precision name. Half precision is only honoured on CUDA (CPU stays fp32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        try:
            dtype = _DTYPES[dtype.lower()]
        except KeyError:
            from .errors import InputError
            raise InputError(f"unknown precision '{dtype}'; use one of fp32, fp16, bf16") from None
    if device.type != "cuda":
        return torch.float32
    return dtype


def autocast(device: torch.device, dtype: Optional[torch.dtype] = None):
    """Autocast context on CUDA (fp16 unless ``dtype`` says otherwise); no-op elsewhere."""
    if device.type != "cuda" or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype or torch.float16)
