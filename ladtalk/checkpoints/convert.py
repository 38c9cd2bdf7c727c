"""Safe reading of checkpoint files and conversion of pickles to ``.safetensors``.

Nothing here unpickles arbitrary objects: pickles are read with
``torch.load(weights_only=True)``, which refuses any pickle that references code.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ladtalk._util.atomic import atomic_path
from ladtalk._util.paths import PathLike
from ladtalk.checkpoints.digest import file_sha256
from ladtalk.checkpoints.registry import (
    CHECKPOINT_SUFFIXES,
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
)
from ladtalk.errors import CheckpointError

_BUFFER_LEAVES = ("running_mean", "running_var", "num_batches_tracked")


def read_safetensors(path: PathLike) -> Dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, on the CPU (CheckpointError when unreadable)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path), device="cpu"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"cannot read safetensors checkpoint {path}: {exc}. The file is truncated or "
            "corrupt; delete it and download / convert it again.") from exc


def _unpickler_detail(msg: str) -> str:
    """The specific reason inside torch's long "Weights only load failed" message."""
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    for ln in lines:
        if re.search(r"global|unsupported|not allowed|blocked", ln, re.I) and \
                not ln.startswith(("Weights only load failed", "Check the documentation",
                                   "Please file an issue")):
            return ln
    return lines[-1] if lines else "no detail"


def read_pickle(path: PathLike) -> Dict[str, torch.Tensor]:
    """The flat state dict in a pickle checkpoint, read with the weights-only unpickler."""
    p = Path(path)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(str(exc))
        if re.search(r"global", detail, re.I):
            raise CheckpointError(
                f"{p} is not a plain tensor checkpoint: it references Python code or objects "
                f"({detail}). The weights-only loader refused it and nothing in it was "
                "executed. If you trust its source, extract its tensors into a plain state dict "
                "or .safetensors file yourself.") from exc
        raise CheckpointError(
            f"cannot read checkpoint {p}: the weights-only loader rejected it ({detail}); it is "
            "corrupt or truncated, or holds pickle content other than tensors. Nothing in it was "
            "executed. Delete it and download it again.") from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise CheckpointError(
            f"cannot read checkpoint {p}: the file is truncated or corrupt ({first}); "
            "delete it and download it again.") from exc
    return extract_state_dict(obj, source=p)


def extract_state_dict(obj: Any, *, source: PathLike = "<memory>") -> Dict[str, torch.Tensor]:
    """Pick the flat tensor dict out of a loaded checkpoint object.

    Accepts a flat ``{str: Tensor}`` mapping or a mapping with a ``state_dict`` entry (upstream
    Wav2Lip training checkpoints, Lightning ``.ckpt``). Any non-tensor leaf is an error.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source} does not hold a state dict (found a {type(obj).__name__}); expected a "
            "mapping of parameter names to tensors")
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = obj["state_dict"]
    else:
        sd = obj
    bad = [(k, type(v).__name__) for k, v in sd.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(f"{k!r} ({t})" for k, t in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        top = ", ".join(repr(k) for k in list(obj.keys())[:8])
        raise CheckpointError(
            f"{source} is not a plain tensor state dict: {len(bad)} entries are not tensors "
            f"({shown}{more}). Top-level keys: {top}. Nothing in it was executed.")
    if not sd:
        raise CheckpointError(f"{source} holds an empty state dict")
    return dict(sd)


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Tensors of any supported checkpoint file, keys as stored (no cache, no renaming)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return read_safetensors(p)
    if suffix in PICKLE_SUFFIXES:
        return read_pickle(p)
    raise CheckpointError(
        f"unsupported checkpoint file type '{p.suffix}' for {p}: expected one of "
        f"{', '.join(CHECKPOINT_SUFFIXES)}")


def strip_key_prefix(sd: Mapping[str, torch.Tensor],
                     prefix: Optional[str] = "module.") -> Dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that starts with it (others are kept as they are)."""
    if not prefix:
        return dict(sd)
    out: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        nk = k[len(prefix):] if k.startswith(prefix) else k
        if nk in out:
            raise CheckpointError(f"key {nk!r} appears both with and without the prefix "
                                  f"{prefix!r}; the checkpoint is inconsistent")
        out[nk] = v
    return out


def save_safetensors(sd: Mapping[str, torch.Tensor], dst: PathLike, *,
                     metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write ``sd`` to ``dst`` atomically (CPU, contiguous, shared storage un-shared)."""
    from safetensors.torch import save_file

    seen = set()
    clean: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:  # safetensors refuses shared storage
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        clean[k] = t
    meta = {"format": "pt"}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    dst = Path(dst)
    with atomic_path(dst, suffix=".safetensors") as tmp:
        save_file(clean, str(tmp), metadata=meta)
    return dst


@dataclass(frozen=True)
class ConversionReport:
    src: Path
    dst: Path
    n_tensors: int
    n_elements: int
    n_parameters: int  # elements excluding BatchNorm running stats / counters


def count_parameters(sd: Mapping[str, torch.Tensor]) -> Tuple[int, int]:
    """(all elements, elements that are not BatchNorm running statistics)."""
    total = sum(int(t.numel()) for t in sd.values())
    params = sum(int(t.numel()) for k, t in sd.items()
                 if k.rsplit(".", 1)[-1] not in _BUFFER_LEAVES)
    return total, params


def convert_to_safetensors(src: PathLike, dst: PathLike, *,
                           strip_prefix: Optional[str] = "module.") -> ConversionReport:
    """Convert a checkpoint file (any supported format) to a clean ``.safetensors`` at ``dst``."""
    src_p = Path(src).expanduser()
    sd = strip_key_prefix(read_state_dict(src_p), strip_prefix)
    dst_p = save_safetensors(sd, Path(dst).expanduser(), metadata={
        "source": src_p.name, "source_sha256": file_sha256(src_p)})
    total, params = count_parameters(sd)
    return ConversionReport(src_p, dst_p, len(sd), total, params)
