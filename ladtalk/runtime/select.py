"""One model's forward passes, run the chosen way (:func:`select_runtime`, :class:`Runtime`).

A model is given as its *parts*: torch modules each called on example tensors (Wav2Lip is one
part; the SOVQAE two, encoder and decoder, with the nearest-code search between them kept in
float32 torch). :func:`select_runtime` times the candidate plans on those parts
(:mod:`ladtalk.runtime.autotune`) and returns a :class:`Runtime` whose :meth:`Runtime.run`
calls a part with the winner: eager torch under autocast at the chosen dtype, or the part's
:class:`~ladtalk.runtime.openvino_engine.OpenVINOEngine`. torch is imported where torch runs or
measures: a runtime of OpenVINO engines built without it (:meth:`Runtime.openvino`) never
loads it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ladtalk._util.device import autocast, precision_name, resolve_dtype
from ladtalk.runtime.autotune import Plan, RuntimeChoice, candidate_plans, choose_runtime
from ladtalk.runtime.openvino_engine import OpenVINOEngine, load_ir

if TYPE_CHECKING:
    import torch
    from torch import nn

#: a part: (module, example inputs at the batch size it will run)
Part = Tuple["nn.Module", Sequence["torch.Tensor"]]


@dataclass
class Runtime:
    """How a model's parts run on ``device``: ``choice`` (plan and how it was chosen) and,
    for OpenVINO, one engine per part."""

    choice: RuntimeChoice
    device: Union[str, "torch.device"]
    engines: List[OpenVINOEngine] = field(default_factory=list)
    #: torch.compile'd parts (torch backend with ``compile=True``), by part index
    compiled: Dict[int, "nn.Module"] = field(default_factory=dict)

    @classmethod
    def openvino(cls, choice: RuntimeChoice, engines: List[OpenVINOEngine]) -> "Runtime":
        """A CPU runtime of ready engines (no torch needed to build or call it)."""
        return cls(choice, "cpu", list(engines))

    @property
    def dtype(self) -> "torch.dtype":
        """The torch dtype of the precision (imports torch)."""
        return resolve_dtype(self.precision, self.device)

    @property
    def backend(self) -> str:
        return self.choice.backend

    @property
    def precision(self) -> str:
        return self.choice.precision

    def input_format(self, model_format: "torch.memory_format") -> "torch.memory_format":
        """The layout inputs should have: the torch model's own, NCHW for OpenVINO."""
        import torch
        return model_format if not self.engines else torch.contiguous_format

    def run(self, index: int, module: "nn.Module", *inputs: "torch.Tensor") -> "torch.Tensor":
        """Part ``index`` (``module``) on ``inputs`` -> its float32 output."""
        if self.engines:
            return self.engines[index](*inputs).to(self.device)
        import torch
        module = self.compiled.get(index, module)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            return module(*inputs).float()


def torch_runtime(device: "torch.device", dtype: "torch.dtype", how: str = "forced") -> Runtime:
    """Eager torch at ``dtype``."""
    return Runtime(RuntimeChoice(Plan("torch", precision_name(dtype)), how), device)


def _builder(parts: Sequence[Part], device: "torch.device",
             threads: int) -> Callable[[Plan], Callable[[], None]]:
    import torch
    irs: Dict[int, object] = {}  # one conversion per part, compiled once per precision

    def build(plan: Plan) -> Callable[[], None]:
        engines = []
        if plan.backend == "openvino":
            for i, (m, ex) in enumerate(parts):
                if i not in irs:
                    irs[i] = load_ir(m, ex)
                engines.append(OpenVINOEngine(m, ex, plan.precision, threads=threads,
                                              streams=1, model=irs[i]))
        rt = Runtime(RuntimeChoice(plan, "probe"), device, engines)

        def one_batch() -> None:
            for i, (m, ex) in enumerate(parts):
                rt.run(i, m, *ex)
            if device.type == "cuda":  # kernels run asynchronously: time them, not launches
                torch.cuda.synchronize(device)
        return one_batch
    return build


def select_runtime(name: str, parts: Sequence[Part], *, backend: str, precision: str,
                   device: "torch.device", workers: int = 1, threads: int = 1,
                   signature: Optional[Dict[str, object]] = None,
                   use_cache: bool = True, compile: bool = False) -> Runtime:
    """Choose and build how ``parts`` run (see the module doc). ``workers``: threads that
    will call the parts at once (OpenVINO gets one stream each); ``threads``: intra-op threads
    per worker, also the threads the measurement uses. ``compile``: wrap the parts in
    ``torch.compile`` when torch runs them (the first calls of each shape then compile: tens
    of seconds on a CPU; measured in docs/performance.md)."""
    items = int(parts[0][1][0].shape[0])
    sig = {"parts": [[type(m).__name__, sum(p.numel() for p in m.parameters()),
                      [list(x.shape) for x in ex]] for m, ex in parts], **(signature or {})}
    import torch
    choice = choose_runtime(name, sig, backend=backend, precision=precision, device=device,
                            build=_builder(parts, device, threads), items=items,
                            threads=threads, use_cache=use_cache)
    engines: List[OpenVINOEngine] = []
    if choice.backend == "openvino":
        engines = [OpenVINOEngine(m, ex, choice.precision, threads=workers * threads,
                                  streams=workers) for m, ex in parts]
    compiled = {i: torch.compile(m) for i, (m, _) in enumerate(parts)} \
        if compile and choice.backend == "torch" else {}
    return Runtime(choice, device, engines, compiled)


@dataclass(frozen=True)
class RuntimeSpec:
    """What a model was asked to run with: ``precision`` ("auto", "fp32", "bf16", "fp16"),
    ``backend`` ("auto", "torch", "openvino") on ``device``, and whether torch parts are
    ``torch.compile``'d. Built with :meth:`of`, which checks the names (and that an asked-for
    OpenVINO is installed) at once."""

    precision: str
    backend: str
    device: "torch.device"
    compile: bool = False

    @classmethod
    def of(cls, precision: Union[str, "torch.dtype", None], backend: Optional[str],
           device: "torch.device", compile: bool = False) -> "RuntimeSpec":
        if precision is None:
            name = "fp32"
        elif not isinstance(precision, str):  # a torch dtype
            name = precision_name(precision)
        else:
            name = str(precision).lower()
            name = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(name, name)
        spec = cls(name, (backend or "torch").lower(), device, bool(compile))
        spec.plans()  # validates
        return spec

    def plans(self) -> List[Plan]:
        return candidate_plans(self.backend, self.precision, self.device)

    def fixed(self) -> Optional[Runtime]:
        """The runtime when nothing needs measuring or building (one eager-torch plan)."""
        plans = self.plans()
        if len(plans) == 1 and plans[0].backend == "torch" and not self.compile:
            return torch_runtime(self.device, resolve_dtype(plans[0].precision, self.device))
        return None

    def select(self, name: str, parts: Sequence[Part], workers: int = 1,
               threads: Optional[int] = None, use_cache: bool = True,
               signature: Optional[Dict[str, object]] = None) -> Runtime:
        """:func:`select_runtime` for this spec (``threads`` default: torch's count now)."""
        import torch
        return select_runtime(name, parts, backend=self.backend, precision=self.precision,
                              device=self.device, workers=max(1, int(workers)),
                              threads=max(1, int(threads or torch.get_num_threads())),
                              signature=signature, use_cache=use_cache, compile=self.compile)


class RuntimeHolder:
    """What a model wrapper (``LipSyncer``, ``Restorer``) shares: its :class:`Runtime`,
    chosen when first needed or by :meth:`select_runtime`. A subclass calls
    :meth:`_init_runtime` and implements ``_runtime_parts() -> (name, parts, signature)``
    (the parts with example inputs at the batch it runs)."""

    spec: RuntimeSpec

    def _init_runtime(self, spec: RuntimeSpec) -> None:
        self.spec = spec
        self._runtime: Optional[Runtime] = spec.fixed()
        self._select_lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        """How the model runs (measured on first use when precision or backend is auto)."""
        if self._runtime is None:
            with self._select_lock:
                if self._runtime is None:
                    self._runtime = self._select(1, None, True)
        return self._runtime

    @property
    def dtype(self) -> "torch.dtype":
        return self.runtime.dtype

    def select_runtime(self, workers: int = 1, threads: Optional[int] = None,
                       use_cache: bool = True) -> Runtime:
        """Choose (measure, or read the cached winner) and build how the model runs, for
        ``workers`` threads calling it at once with ``threads`` intra-op threads each
        (default: all of torch's). Call after the model's final rewrites (channels-last)."""
        with self._select_lock:
            self._runtime = self._select(workers, threads, use_cache)
            return self._runtime

    def _select(self, workers: int, threads: Optional[int], use_cache: bool) -> Runtime:
        name, parts, signature = self._runtime_parts()
        return self.spec.select(name, parts, workers=workers, threads=threads,
                                use_cache=use_cache, signature=signature)

    def _runtime_parts(self) -> Tuple[str, List[Part], Optional[Dict[str, object]]]:
        raise NotImplementedError


__all__ = ["Runtime", "RuntimeHolder", "RuntimeSpec", "Part", "select_runtime",
           "torch_runtime"]
