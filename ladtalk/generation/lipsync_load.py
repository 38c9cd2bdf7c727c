"""Loading a pipeline's Wav2Lip: from a prepared OpenVINO model when there is one, else from
the checkpoint through torch (:func:`load_lipsyncer`).

From the checkpoint, the model is loaded into torch, rewritten for inference (BatchNorm
folded into the convolutions, NHWC on a CPU: equal up to float rounding) and its runtime is
chosen for the pipeline's model threads. When that runtime is OpenVINO, what came of it is
stored (:mod:`ladtalk.runtime.prepared`), and the next process that asks the same of the same
file on this machine compiles the cached model straight away: no torch import, no weights
read (docs/performance.md: 5.9 -> 4.7 s for a 5 s clip on 2 cores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from ladtalk._util.device import loaded_torch, precision_name, release_memory
from ladtalk.checkpoints import resolve_checkpoint
from ladtalk.generation.lipsync import CPU_BATCH, LipSyncer
from ladtalk.runtime import prepared as prepared_models

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LipSyncRequest:
    """What a pipeline asks of its Wav2Lip: the kind of device, ``precision`` (a name or a
    torch dtype), ``backend``, ``compile``, the batch it would like (a CPU runs at most
    :data:`~ladtalk.generation.lipsync.CPU_BATCH`), the model threads asked for and the first
    row of the crops to draw (``LipSyncer.first_row``)."""

    device_type: str
    precision: Any
    backend: str
    compile: bool
    batch_size: int
    workers: Optional[int] = None
    first_row: int = 0

    @property
    def batch(self) -> int:
        return self.batch_size if self.device_type != "cpu" else min(self.batch_size, CPU_BATCH)

    @property
    def precision_name(self) -> str:
        p = self.precision
        return p.lower() if isinstance(p, str) else "fp32" if p is None else precision_name(p)

    def prepared_key(self, path: Path) -> Optional[str]:
        """The :mod:`~ladtalk.runtime.prepared` key of this request for the checkpoint file
        ``path``, or None when a prepared model cannot serve it (a GPU, torch forced,
        ``compile``)."""
        if self.device_type != "cpu" or self.compile or self.backend == "torch":
            return None
        asked = {"backend": self.backend, "precision": self.precision_name,
                 "batch": self.batch, "workers": self.workers}
        if self.first_row:  # (whole crops keep the keys they had)
            asked["first_row"] = self.first_row
        try:
            return prepared_models.prepared_key("wav2lip", path, asked)
        except OSError:
            return None


def load_lipsyncer(spec: Any, request: LipSyncRequest, *, device: Callable[[], "torch.device"],
                   plan: Callable[[], Tuple[int, int]]) -> LipSyncer:
    """The :class:`LipSyncer` for ``spec`` (None: the default checkpoint; a checkpoint
    reference or path; a torch ``Wav2Lip``; a ready ``LipSyncer``, only rewritten for
    inference). ``device()``: the torch device (resolving it imports torch); ``plan()``:
    the pipeline's ``(model threads, intra-op threads each)``."""
    if isinstance(spec, LipSyncer):
        return _for_inference(spec, copy=True)
    torch = loaded_torch()  # (a module given is a torch module: torch is loaded)
    if torch is not None and isinstance(spec, torch.nn.Module):
        syncer = LipSyncer(spec, device=device(), dtype=request.precision,
                           batch_size=request.batch, backend=request.backend,
                           compile=request.compile, first_row=request.first_row)
        return _select(_for_inference(syncer, copy=True), plan, drop=False)
    path = resolve_checkpoint("wav2lip" if spec is None else spec)
    key = request.prepared_key(path)
    if key is not None:
        found = prepared_models.recall(key)
        syncer = None if found is None else LipSyncer.prepared(
            found, request.precision_name, request.backend, batch_size=request.batch,
            first_row=request.first_row)
        if syncer is not None:
            return syncer
    syncer = LipSyncer.from_checkpoint(path, device=device(), dtype=request.precision,
                                       batch_size=request.batch, backend=request.backend,
                                       compile=request.compile, first_row=request.first_row)
    syncer = _select(_for_inference(syncer, copy=False), plan, drop=True)
    if key is not None and syncer.runtime.backend == "openvino" and syncer.ir_keys:
        workers, intra = plan()
        prepared_models.remember(key, prepared_models.Prepared(
            syncer.runtime.choice, syncer.ir_keys, workers, intra))
    return syncer


#: lip-sync models kept loaded, each drawing other rows (a Wav2Lip-only call and one with an
#: identity ask for different ones; each OpenVINO model holds its own weights, 145 MB)
LIPSYNC_KEPT = 2


class LipSyncers:
    """A pipeline's Wav2Lip models, one per first row drawn (``LipSyncer.first_row``), loaded
    on first use by :func:`load_lipsyncer` with ``request(first_row)``; the last
    :data:`LIPSYNC_KEPT` asked for are kept. A checkpoint (``spec`` None, a reference or a
    path) is loaded once per row; a module or a syncer given is the only model, used for
    every row (it draws what it draws; not kept alive twice)."""

    def __init__(self, spec: Any, request: Callable[[int], LipSyncRequest], *,
                 device: Callable[[], "torch.device"],
                 plan: Callable[[], Tuple[int, int]]) -> None:
        self._spec, self._request, self._device, self._plan = spec, request, device, plan
        self._checkpoint = spec is None or isinstance(spec, (str, os.PathLike))
        self._loaded: Dict[int, LipSyncer] = {}  # by first row, the latest last

    @property
    def rows(self) -> List[int]:
        """The first rows the loaded models draw, the latest used last."""
        return [s.first_row for s in self._loaded.values()]

    def get(self, first_row: int) -> LipSyncer:
        """The model for ``first_row`` (not thread-safe: the pipeline holds its lock)."""
        row = int(first_row) if self._checkpoint else 0
        syncer = self._loaded.pop(row, None)
        if syncer is None:
            syncer = load_lipsyncer(self._spec, self._request(row), device=self._device,
                                    plan=self._plan)
            if not self._checkpoint:
                self._spec = None  # the caller's module is not kept alive twice
        while len(self._loaded) >= LIPSYNC_KEPT:
            self._loaded.pop(next(iter(self._loaded)))
        self._loaded[row] = syncer
        return syncer


def _for_inference(syncer: LipSyncer, copy: bool) -> LipSyncer:
    """BatchNorm folded (into a copy when the model is the caller's), NHWC on a CPU."""
    if syncer.model is None:  # a prepared syncer: nothing in torch to rewrite
        return syncer
    from ladtalk.models.fuse import fold_batchnorm
    syncer.model = fold_batchnorm(syncer.model, copy_model=copy)
    if syncer.device.type == "cpu":
        syncer.use_channels_last(True)
    return syncer


def _select(syncer: LipSyncer, plan: Callable[[], Tuple[int, int]], drop: bool) -> LipSyncer:
    """Choose the runtime for the pipeline's model threads; with OpenVINO and ``drop``, free
    the torch copy of the weights (OpenVINO holds its own)."""
    workers, intra = plan()
    if syncer.select_runtime(workers, intra).backend == "openvino" and drop:
        syncer.drop_torch_weights()
    release_memory()  # the load's freed temporaries back to the OS
    return syncer


__all__ = ["LipSyncRequest", "LipSyncers", "LIPSYNC_KEPT", "load_lipsyncer"]
