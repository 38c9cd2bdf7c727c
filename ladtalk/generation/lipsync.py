"""Wav2Lip inference on face crops and mel windows (:class:`LipSyncer`).

The package's images are RGB uint8, channels last; the released Wav2Lip weights expect BGR
96x96 crops in [0, 1] with the lower half of the target masked. The uint8 API converts with
:mod:`ladtalk.models.wav2lip_io` (numpy), the float API here (docs/generation.md, "Lip-sync
conventions"). A syncer run by a prepared OpenVINO model (:meth:`LipSyncer.prepared`) never
imports torch; everything else here imports it when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Union

import numpy as np

from ladtalk._util.device import DeviceLike, release_memory, resolve_device
from ladtalk.checkpoints import resolve_checkpoint
from ladtalk.errors import CheckpointError, InputError
from ladtalk.models.wav2lip_io import (
    FACE_SIZE,
    MASK_ROW,
    MEL_BINS,
    MEL_STEPS,
    ROUNDING_MODES,
    generator_input,
    to_crops,
)
from ladtalk.runtime.prepared import Prepared
from ladtalk.runtime.select import Runtime, RuntimeHolder, RuntimeSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

#: crops per forward on a CPU: OpenVINO and eager fp32 run as fast at 8 as at 16 and each
#: model thread's activations take half the memory (about 65 MB less per thread in OpenVINO;
#: eager bf16 is about 10 % slower at 8, docs/performance.md)
CPU_BATCH = 8
_CHECKPOINT_HINT = ("Use the Wav2Lip *generator* weights (wav2lip.pth or wav2lip_gan.pth), not "
                    "the lip-sync expert lipsync_expert.pth (that one is models.syncnet.SyncNet).")


def rgb_bgr(x: "torch.Tensor") -> "torch.Tensor":
    """Swap the first and third channel of an NCHW tensor (RGB <-> BGR; its own inverse)."""
    return x.flip(1)


def build_generator_input(faces: "torch.Tensor",
                          references: Optional["torch.Tensor"] = None) -> "torch.Tensor":
    """(N,3,96,96) RGB in [0,1] -> the generator's (N,6,96,96) BGR input.

    Channels 0-2: ``faces`` in BGR with rows 48-95 zeroed; channels 3-5: ``references``
    (default: ``faces``) in BGR, unmasked. (:func:`ladtalk.models.wav2lip_io.generator_input`
    is the same from uint8 crops, in numpy.)
    """
    import torch
    target = rgb_bgr(faces).clone()
    target[:, :, MASK_ROW:] = 0
    ref = rgb_bgr(faces if references is None else references)
    return torch.cat((target, ref), dim=1)


class LipSyncer(RuntimeHolder):
    """Batched Wav2Lip inference on RGB face crops; see the module docstring for conventions.

    ``device``: None/"auto" picks CUDA when available. ``dtype``: None/"fp32" (default,
    upstream's arithmetic), "fp16"/"bf16" autocast on CUDA, "bf16" autocast on CPU, or
    "auto" (the fastest measured, :mod:`ladtalk.runtime.autotune`). ``backend``: "torch"
    (default), "openvino" (CPU, optional extra) or "auto" (measured); ``compile``:
    ``torch.compile`` the generator when torch runs it. ``batch_size``: crops per forward.
    The measurement, when there is one, runs on first use or :meth:`select_runtime`.

    ``first_row``: the model draws the crops' rows from this one down only
    (:class:`~ladtalk.models.wav2lip_rows.Wav2LipRows`: the same values, less arithmetic);
    the rows above are the input crop's. 0 (default): the whole crop.
    """

    def __init__(self, model: "nn.Module", device: DeviceLike = None,
                 dtype: Union[str, "torch.dtype", None] = None, batch_size: int = 64,
                 rounding: str = "nearest", backend: str = "torch",
                 compile: bool = False, first_row: int = 0) -> None:
        import torch
        _check_settings(batch_size, rounding, first_row)
        self._device: Optional["torch.device"] = resolve_device(device)
        self._init_runtime(RuntimeSpec.of(dtype, backend, self._device, compile))
        self.batch_size = batch_size
        self.rounding = rounding
        self.model: Optional["nn.Module"] = model.to(self._device).eval()
        self.memory_format = torch.contiguous_format
        self.first_row = int(first_row)
        self._rows: Optional["nn.Module"] = None

    @classmethod
    def prepared(cls, prepared: Prepared, precision: str, backend: str,
                 batch_size: int = CPU_BATCH, rounding: str = "nearest", first_row: int = 0
                 ) -> Optional["LipSyncer"]:
        """A CPU syncer run by the OpenVINO model of a :class:`Prepared` entry
        (:func:`ladtalk.runtime.prepared.recall`: an earlier process loaded this checkpoint
        and chose its runtime), built without torch and without reading the weights; None
        when its IR is no longer cached. ``precision`` / ``backend``: what was asked (the
        entry's plan is what runs). It holds no torch model: choosing another runtime needs
        :meth:`from_checkpoint`. ``first_row``: the entry's (its model draws from there)."""
        from ladtalk.runtime.openvino_engine import OpenVINOEngine
        _check_settings(batch_size, rounding, first_row)
        plan = prepared.choice.plan
        engines: List[OpenVINOEngine] = []
        for key in prepared.ir_keys:
            engine = OpenVINOEngine.cached(key, plan.precision, prepared.workers *
                                           prepared.threads, prepared.workers)
            if engine is None:
                return None
            engines.append(engine)
        self = cls.__new__(cls)
        self._device = None  # the CPU, resolved (with torch) only if asked for
        self._init_runtime(RuntimeSpec(precision, backend, "cpu"))
        self._runtime = Runtime.openvino(prepared.choice, engines)
        self.batch_size, self.rounding = batch_size, rounding
        self.model = None
        self.memory_format = None
        self.first_row, self._rows = int(first_row), None
        return self

    @property
    def device(self) -> "torch.device":
        """Where the model runs (a prepared syncer: the CPU, as a torch device on request)."""
        if self._device is None:
            self._device = resolve_device("cpu")
        return self._device

    @property
    def ir_keys(self) -> List[str]:
        """The IR cache keys of the OpenVINO engines that run the model (none for torch)."""
        return [e.ir_key for e in self.runtime.engines if e.ir_key is not None]

    @classmethod
    def from_checkpoint(cls, spec_or_path: Union[str, Path] = "wav2lip",
                        device: DeviceLike = None,
                        dtype: Union[str, "torch.dtype", None] = None, batch_size: int = 64,
                        rounding: str = "nearest", backend: str = "torch",
                        compile: bool = False, first_row: int = 0) -> "LipSyncer":
        """Load generator weights (anything ``resolve_checkpoint`` accepts: ``"wav2lip"``,
        a local file or folder, an ``hf://`` reference) safely and strictly; a mismatch
        raises :class:`CheckpointError` listing the offending keys."""
        import torch

        from ladtalk.checkpoints import load_into, load_state_dict
        from ladtalk.models.wav2lip import Wav2Lip
        path = resolve_checkpoint(spec_or_path)
        state = load_state_dict(path)
        with torch.device("meta"):  # shapes only: the checkpoint's tensors become the weights
            shell = Wav2Lip()
        try:
            model = load_into(shell, state, source=path, assign=True)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}\n  {_CHECKPOINT_HINT}") from None
        return cls(model, device=device, dtype=dtype, batch_size=batch_size, rounding=rounding,
                   backend=backend, compile=compile, first_row=first_row)

    # ------------------------------------------------------------------ runtime
    def drop_torch_weights(self) -> None:
        """Free the torch copy of the weights (145 MB) once an OpenVINO runtime, which holds
        its own, runs the model. The module keeps its shapes (on the ``meta`` device); a
        later :meth:`select_runtime` needs the weights again and raises."""
        if self._runtime is None or self._runtime.backend != "openvino":
            raise RuntimeError("drop_torch_weights: the torch weights are what runs the model")
        if self.model is None:  # a prepared syncer never had them
            return
        self.model.to_empty(device="meta")
        release_memory()

    def _runtime_parts(self):
        import torch
        if self.model is None:
            raise RuntimeError("this syncer runs a prepared OpenVINO model and holds no torch "
                               "weights; load the checkpoint (LipSyncer.from_checkpoint) to "
                               "choose another runtime")
        if any(p.is_meta for p in self.model.parameters()):
            raise RuntimeError("the torch weights were dropped (drop_torch_weights); load the "
                               "checkpoint again to choose another runtime")
        mel = torch.zeros((self.batch_size, 1, MEL_BINS, MEL_STEPS), device=self.device)
        face = torch.rand((self.batch_size, 6, FACE_SIZE, FACE_SIZE),
                          generator=torch.Generator().manual_seed(0)).to(self.device)
        face = face.contiguous(memory_format=self.memory_format)
        return "wav2lip", [(self.net, (mel, face))], None

    @property
    def net(self) -> "nn.Module":
        """The torch module that runs: the generator, or its rows from :attr:`first_row`
        (None for a prepared syncer: OpenVINO runs it)."""
        if not self.first_row or self.model is None:
            return self.model
        if self._rows is None or self._rows.model is not self.model:
            from ladtalk.models.wav2lip_rows import Wav2LipRows
            self._rows = Wav2LipRows(self.model, self.first_row)
        return self._rows

    def use_channels_last(self, enable: bool = True) -> "LipSyncer":
        """Run the model channels-last (NHWC; about 2x faster on CPU, equal up to float
        rounding). ``enable=False`` goes back to NCHW, as the golden-parity tests use."""
        import torch
        if self.model is None:
            raise RuntimeError("a prepared syncer runs OpenVINO (NCHW); there is no torch model")
        fmt = torch.channels_last if enable else torch.contiguous_format
        self.model = self.model.to(memory_format=fmt)
        self.memory_format = fmt
        return self

    # ------------------------------------------------------------------ float API
    def predict_tensor(self, faces: "torch.Tensor", mels: "torch.Tensor",
                       references: Optional["torch.Tensor"] = None) -> "torch.Tensor":
        """Float API: ``faces`` (N,3,96,96) RGB in [0,1], ``mels`` (N,80,16) or (N,1,80,16)
        -> (N,3,96,96) float32 RGB in [0,1] on ``self.device`` (the rows above
        :attr:`first_row` are ``faces``'). Runs in batches."""
        import torch
        n = _check_tensor(faces, "faces", (3, FACE_SIZE, FACE_SIZE))
        if isinstance(mels, torch.Tensor) and mels.dim() == 3:
            mels = mels.unsqueeze(1)
        m = _check_tensor(mels, "mels", (1, MEL_BINS, MEL_STEPS))
        if m != n:
            raise InputError(f"got {n} face crops but {m} mel windows; pass one mel window "
                             "per crop")
        if references is not None and _check_tensor(references, "references",
                                                    (3, FACE_SIZE, FACE_SIZE)) != n:
            raise InputError(f"got {n} face crops but {references.shape[0]} references")
        outs: List[torch.Tensor] = []
        for start in range(0, n, self.batch_size):
            sl = slice(start, start + self.batch_size)
            ref = None if references is None else references[sl]
            outs.append(self._forward(faces[sl], mels[sl], ref))
        if not outs:
            return torch.empty((0, 3, FACE_SIZE, FACE_SIZE), device=self.device)
        return torch.cat(outs)

    def _forward(self, faces: "torch.Tensor", mels: "torch.Tensor",
                 references: Optional["torch.Tensor"]) -> "torch.Tensor":
        import torch
        dev = self.device
        faces = faces.to(dev, torch.float32)
        references = None if references is None else references.to(dev, torch.float32)
        # The model's own layout (NCHW by default): the crops arrive channels-last, and a
        # channels-last tensor would pick different (equally valid) conv kernels than a direct
        # model call. OpenVINO takes NCHW.
        x = build_generator_input(faces, references).contiguous(
            memory_format=self.runtime.input_format(self.memory_format))
        y = rgb_bgr(self.runtime.run(0, self.net, mels.to(dev, torch.float32), x))
        if self.first_row:
            y = torch.cat((faces[:, :, :self.first_row].to(y.dtype), y), dim=2)
        return y

    def _forward_arrays(self, x: np.ndarray, mels: np.ndarray) -> np.ndarray:
        """The generator's (N,6,96,96) input and (N,1,80,16) mels, float32 numpy -> its
        (N,3,96-first_row,96) BGR output, float32 numpy (OpenVINO straight from numpy, torch
        on ``self.device`` in the model's layout)."""
        rt = self.runtime
        if rt.engines:
            return rt.engines[0].infer(mels, x)
        import torch
        dev = self.device
        xt = torch.from_numpy(x).to(dev).contiguous(
            memory_format=rt.input_format(self.memory_format))
        return rt.run(0, self.net, torch.from_numpy(mels).to(dev), xt).cpu().numpy()

    # ------------------------------------------------------------------ uint8 API
    def __call__(self, faces: np.ndarray, mels: np.ndarray,
                 references: Optional[np.ndarray] = None) -> np.ndarray:
        """``faces`` (N,96,96,3) uint8 RGB crops, ``mels`` (N,80,16) float mel windows
        -> (N,96,96,3) uint8 RGB generated crops (only the lower half really changes; the rows
        above :attr:`first_row` are ``faces``')."""
        n = _check_crops(faces, "faces")
        mels = _check_mels(mels, n)
        if references is not None and _check_crops(references, "references") != n:
            raise InputError(f"got {n} face crops but {len(references)} references; pass one "
                             "reference crop per face crop")
        out = np.empty((n, FACE_SIZE, FACE_SIZE, 3), np.uint8)
        top = self.first_row
        out[:, :top] = faces[:, :top]
        for start in range(0, n, self.batch_size):
            sl = slice(start, start + self.batch_size)
            x = generator_input(faces[sl], None if references is None else references[sl])
            out[sl, top:] = to_crops(self._forward_arrays(x, mels[sl, None]), self.rounding)
        return out


# ---------------------------------------------------------------------- validation
def _check_settings(batch_size: object, rounding: str, first_row: object = 0) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(first_row, (int, np.integer)) or not 0 <= first_row < FACE_SIZE:
        raise InputError(f"first_row must be a row of the {FACE_SIZE} px crop (0 to "
                         f"{FACE_SIZE - 1}), got {first_row!r}")
    if rounding not in ROUNDING_MODES:
        raise InputError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")


def _check_crops(crops, name: str) -> int:
    if not isinstance(crops, np.ndarray):
        raise InputError(f"{name} must be a numpy array of shape (N, 96, 96, 3), got "
                         f"{type(crops).__name__}")
    if crops.dtype != np.uint8:
        raise InputError(f"{name} must be uint8 RGB crops (0-255), got dtype {crops.dtype}; "
                         "for float images in [0, 1] use LipSyncer.predict_tensor")
    if crops.ndim != 4 or crops.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
        raise InputError(f"{name} must have shape (N, 96, 96, 3) (RGB face crops resized to "
                         f"96x96), got {crops.shape}")
    return crops.shape[0]


def _check_mels(mels, n: int) -> np.ndarray:
    if not isinstance(mels, np.ndarray) or not np.issubdtype(mels.dtype, np.floating):
        raise InputError("mels must be a float numpy array of shape (N, 80, 16), got "
                         f"{getattr(mels, 'dtype', type(mels).__name__)}")
    if mels.ndim != 3 or mels.shape[1:] != (MEL_BINS, MEL_STEPS):
        raise InputError(f"mels must have shape (N, 80, 16) (one 16-step mel window per video "
                         f"frame), got {mels.shape}")
    if mels.shape[0] != n:
        raise InputError(f"got {n} face crops but {mels.shape[0]} mel windows; pass exactly one "
                         "mel window per crop")
    bad = ~np.isfinite(mels).all(axis=(1, 2))
    if bad.any():
        raise InputError(f"mel window {int(np.argmax(bad))} (of {n}) contains NaN or inf; the "
                         "audio is corrupt at that frame's timestamp")
    return np.ascontiguousarray(mels, dtype=np.float32)


def _check_tensor(t, name: str, tail: tuple) -> int:
    import torch
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise InputError(f"{name} must be a float torch tensor, got "
                         f"{getattr(t, 'dtype', type(t).__name__)}")
    if t.dim() != 1 + len(tail) or tuple(t.shape[1:]) != tail:
        raise InputError(f"{name} must have shape (N, {', '.join(map(str, tail))}), got "
                         f"{tuple(t.shape)}")
    return t.shape[0]
