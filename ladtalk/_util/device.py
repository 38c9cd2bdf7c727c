"""Device and precision helpers: one place that decides where tensors live.

Nothing in the package calls ``.cuda()``; everything takes a ``device`` argument that goes
through :func:`resolve_device`, and mixed precision goes through :func:`autocast`, which is
a no-op on CPU unless bf16 is asked for. torch is imported by the functions that need it:
:func:`device_type` answers "which kind of device" without it, so a run that torch never
computes for (Wav2Lip alone through a prepared OpenVINO model) does not pay its 1.2 s import.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from ladtalk._util.choices import PRECISIONS
from ladtalk.errors import InputError

if TYPE_CHECKING:
    import torch

DeviceLike = Union[str, "torch.device", None]

#: device files without which no CUDA (or ROCm, which torch also calls "cuda") can be present:
#: NVIDIA's driver, AMD's kernel driver, WSL2's GPU paravirtualisation
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def loaded_torch():
    """The torch module when this process has imported it, else None (without importing it:
    a run through prepared OpenVINO models never does)."""
    return sys.modules.get("torch")


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch where the answer is plainly no
    (a Linux machine without a GPU driver's device files)."""
    if loaded_torch() is None and os.name == "posix" and \
            not any(Path(n).exists() for n in _GPU_NODES):
        return False
    import torch
    return bool(torch.cuda.is_available())


def device_type(device: DeviceLike = None) -> str:
    """The kind of device :func:`resolve_device` picks ("cpu", "cuda", "mps", ...), with the
    same rules, without importing torch for a CPU."""
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return "cuda" if cuda_available() else "cpu"
    if isinstance(device, str) and device.strip().lower() == "cpu":
        return "cpu"
    return resolve_device(device).type


def resolve_device(device: DeviceLike = None) -> "torch.device":
    """``None``/"auto" -> CUDA when available else CPU; otherwise validate the request."""
    import torch
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if cuda_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{device}' was requested but CUDA is not available on this "
                         "machine; pass --device cpu (or leave it unset to pick automatically)")
    return dev


@functools.lru_cache(maxsize=1)
def _dtypes() -> dict:
    import torch
    return {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
            "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: Union[str, "torch.dtype", None],
                  device: Union[str, "torch.device"]) -> "torch.dtype":
    """Parse a precision name for autocast on ``device``.

    ``None`` / "fp32": float32 everywhere. "fp16" / "bf16" are honoured on CUDA; on CPU
    "bf16" is honoured and "fp16" falls back to fp32 (eager torch has no fast fp16
    convolutions on a CPU). "auto" is not a dtype: it is chosen by measurement
    (:func:`ladtalk.runtime.select.select_runtime`), and asking this function for it is an
    error.
    """
    import torch
    kind = getattr(device, "type", device)
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        name = dtype.lower()
        if name == "auto":
            raise ValueError("precision 'auto' is chosen by measurement "
                             "(ladtalk.runtime.select.select_runtime), not parsed")
        try:
            dtype = _dtypes()[name]
        except KeyError:
            raise InputError(f"unknown precision '{dtype}'; use one of "
                             f"{', '.join(PRECISIONS)}") from None
    if kind == "cuda":
        return dtype
    if kind == "cpu" and dtype == torch.bfloat16:
        return dtype
    return torch.float32


def precision_name(dtype: "torch.dtype") -> str:
    """"fp32" / "bf16" / "fp16" for a torch dtype (the names the CLI and reports use)."""
    import torch
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
        dtype, str(dtype).replace("torch.", ""))


def autocast(device: "torch.device", dtype: Optional["torch.dtype"] = None):
    """Autocast context: on CUDA fp16 unless ``dtype`` says otherwise; on CPU bf16 only when
    ``dtype`` is bfloat16; a no-op otherwise."""
    import torch
    if device.type == "cuda" and dtype != torch.float32:
        return torch.autocast(device_type="cuda", dtype=dtype or torch.float16)
    if device.type == "cpu" and dtype == torch.bfloat16:
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc's ``malloc_trim``;
    a no-op elsewhere). Worth it after loading models: glibc keeps the freed temporaries of a
    load (about 50-180 MB for Wav2Lip) in the process otherwise."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)
