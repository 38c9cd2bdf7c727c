"""A torch module's forward pass run by OpenVINO on the CPU (:class:`OpenVINOEngine`).

OpenVINO is an optional extra (``pip install 'ladtalk[openvino]'``); asking for it without it
installed is an :class:`~ladtalk.errors.InputError` that says so. The module is converted once
from torch (traced at batch 1, the batch left dynamic, and any axis the module names in
``openvino_dynamic_axes``: :func:`dynamic_axes`) and its intermediate representation is
kept in ``$LADTALK_HOME/cache/openvino``, keyed by the weights' bytes, the input shapes and the
OpenVINO version: a later process reads it in milliseconds instead of converting again
(about 2 s for Wav2Lip). The weights stay float32 on disk; the precision is a compile-time
hint ("f32" or "bf16"), so one entry serves both. :meth:`OpenVINOEngine.cached` compiles an
entry by its key without torch, which only the conversion and the key's computation need.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple

import numpy as np

from ladtalk._util.diskcache import DiskCache, cache_limit
from ladtalk._util.paths import ladtalk_home
from ladtalk.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

IR_CACHE_ENV = "LADTALK_OPENVINO_CACHE_MB"
IR_CACHE_MB = 1024.0  # Wav2Lip's IR is 145 MB, a 256 px cpu identity's a few MB
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
INSTALL_HINT = ("OpenVINO is an optional extra: pip install 'ladtalk[openvino]' (or pip install "
                "openvino), or use --backend torch")


def openvino_available() -> bool:
    """Whether the optional OpenVINO runtime can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def require_openvino() -> Any:
    """The ``openvino`` module, or an InputError naming the extra to install."""
    try:
        import openvino
    except ImportError:
        raise InputError(f"--backend openvino was asked for but OpenVINO is not installed. "
                         f"{INSTALL_HINT}") from None
    return openvino


def openvino_version() -> Optional[str]:
    if not openvino_available():
        return None
    import openvino
    return str(getattr(openvino, "__version__", "unknown"))


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    return require_openvino().Core()


def ir_cache() -> DiskCache:
    """Converted models: ``$LADTALK_HOME/cache/openvino``, bounded by
    ``LADTALK_OPENVINO_CACHE_MB`` (default :data:`IR_CACHE_MB`), least recently used out first."""
    return DiskCache(ladtalk_home() / "cache" / "openvino", cache_limit(IR_CACHE_ENV, IR_CACHE_MB))


def _bytes_view(t: "torch.Tensor") -> memoryview:
    """The tensor's float32 values in memory order, without a copy when it is dense (NCHW or
    channels-last)."""
    import torch
    t = t.detach().float().cpu()
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
            memory_format=torch.channels_last):
        t = t.permute(0, 2, 3, 1)  # a dense view: the same bytes, no copy
    return np.ascontiguousarray(t.numpy()).data


def ir_key(module: "nn.Module", examples: Sequence["torch.Tensor"]) -> str:
    """Cache key of a module's IR: its class and ``extra_repr``, weights and buffers (values
    and layout), input shapes and dynamic axes, OpenVINO version (sha256: about 0.12 s for
    Wav2Lip's 145 MB)."""
    h = hashlib.sha256()
    h.update(f"{type(module).__qualname__}|{module.extra_repr()}|{openvino_version()}|".encode())
    free = dynamic_axes(module)  # (only when there are any: the other keys stay as they were)
    h.update(repr([tuple(x.shape[1:]) for x in examples] + ([free] if free else [])).encode())
    for name, t in module.state_dict().items():
        h.update(f"{name}|{tuple(t.shape)}|{tuple(t.stride())}|".encode())
        h.update(_bytes_view(t))
    return h.hexdigest()[:40]


def dynamic_axes(module: "nn.Module") -> Tuple[int, ...]:
    """The input axes besides the batch that the module's IR keeps dynamic: its
    ``openvino_dynamic_axes`` attribute (e.g. ``(2, 3)``, any height and width), else none."""
    return tuple(int(a) for a in getattr(module, "openvino_dynamic_axes", ()))


def _convert(module: "nn.Module", examples: Sequence["torch.Tensor"]) -> Any:
    import torch
    ov = require_openvino()
    first = [x[:1].detach().float().contiguous() for x in examples]
    free = set(dynamic_axes(module)) | {0}
    shapes = [ov.PartialShape([-1 if a in free else int(n) for a, n in enumerate(x.shape)])
              for x in first]
    # each submodule's own mode back afterwards: ``module.train(flag)`` would set them all
    # (a wrapper in training mode around an eval-mode SOVQAE would turn its EMA codebook on)
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():  # (tracing cannot take
            warnings.simplefilter("ignore")               # inference-mode tensors)
            # the IR owns its weights: the torch copy may be freed (drop_torch_weights)
            return ov.convert_model(module, example_input=tuple(first), input=shapes,
                                    share_weights=False)
    finally:
        for m, training in modes:
            m.training = training


def cached_ir(key: str, cache: Optional[DiskCache] = None) -> Any:
    """The cached OpenVINO model stored under ``key`` (:func:`ir_key`), or None."""
    require_openvino()
    cache = ir_cache() if cache is None else cache
    return cache.read(key, lambda d: _core().read_model(str(d / "model.xml")))


def load_ir(module: "nn.Module", examples: Sequence["torch.Tensor"],
            cache: Optional[DiskCache] = None, key: Optional[str] = None) -> Any:
    """The module as an OpenVINO model, from the cache when it holds it (else converted and
    stored, float32, atomically). ``key``: its :func:`ir_key` when already computed."""
    ov = require_openvino()
    cache = ir_cache() if cache is None else cache
    key = ir_key(module, examples) if key is None else key
    model = cached_ir(key, cache)
    if model is not None:
        return model
    model = _convert(module, examples)

    def build(tmp: Path) -> None:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
    try:
        cache.put(key, build)
    except OSError as exc:  # a full disk costs a conversion next time, nothing else
        log.warning("could not cache the converted OpenVINO model (%s)", exc)
    return model


class OpenVINOEngine:
    """``engine(*tensors)`` -> the module's (first) output as a float32 CPU tensor;
    :meth:`infer` the same on numpy arrays.

    ``precision``: "fp32", "bf16" (fast with AVX512-BF16 / AMX) or "fp16". ``streams``:
    requests that may run at once, one per calling thread (the pipeline's model threads);
    ``threads``: OpenVINO's threads in all. ``model``: the module's IR when already loaded
    (:func:`load_ir`); ``ir_key`` is then None, else the IR's cache key.
    """

    backend = "openvino"

    def __init__(self, module: "nn.Module", examples: Sequence["torch.Tensor"],
                 precision: str, threads: int = 1, streams: int = 1,
                 cache: Optional[DiskCache] = None, model: Any = None) -> None:
        self.ir_key: Optional[str] = None
        if model is None:
            self.ir_key = ir_key(module, examples)
            model = load_ir(module, examples, cache, key=self.ir_key)
        self._compile(model, precision, threads, streams)

    @classmethod
    def cached(cls, key: str, precision: str, threads: int = 1, streams: int = 1,
               cache: Optional[DiskCache] = None) -> Optional["OpenVINOEngine"]:
        """The engine of the IR cached under ``key``, or None when the cache no longer holds
        it. Needs neither the torch module nor torch."""
        model = cached_ir(key, cache)
        if model is None:
            return None
        engine = cls.__new__(cls)
        engine.ir_key = key
        engine._compile(model, precision, threads, streams)
        return engine

    def _compile(self, model: Any, precision: str, threads: int, streams: int) -> None:
        if precision not in _HINTS:
            raise InputError(f"OpenVINO precision must be one of {', '.join(_HINTS)}, got "
                             f"{precision!r}")
        self.precision = precision
        config = {"INFERENCE_PRECISION_HINT": _HINTS[precision],
                  "INFERENCE_NUM_THREADS": max(1, int(threads)),
                  "NUM_STREAMS": max(1, int(streams))}
        self.compiled = _core().compile_model(model, "CPU", config)
        self._local = threading.local()

    def infer(self, *arrays: np.ndarray) -> np.ndarray:
        """The (first) output for float32 numpy inputs, as a new float32 array."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer([np.ascontiguousarray(x, dtype=np.float32) for x in arrays])[0]
        return np.array(out, dtype=np.float32, copy=True)

    def __call__(self, *inputs: "torch.Tensor") -> "torch.Tensor":
        import torch
        return torch.from_numpy(self.infer(*(x.detach().float().cpu().numpy() for x in inputs)))


__all__ = ["OpenVINOEngine", "openvino_available", "require_openvino", "openvino_version",
           "ir_cache", "ir_key", "cached_ir", "load_ir", "dynamic_axes", "INSTALL_HINT"]
