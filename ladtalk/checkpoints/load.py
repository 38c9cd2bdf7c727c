"""Loading a checkpoint's tensors (pickles converted once and cached) and fitting a model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional

import torch

from ladtalk._util.paths import PathLike, converted_dir
from ladtalk.checkpoints.convert import (
    read_pickle,
    read_safetensors,
    read_state_dict,
    save_safetensors,
    strip_key_prefix,
)
from ladtalk.checkpoints.digest import file_sha256
from ladtalk.checkpoints.registry import PICKLE_SUFFIXES
from ladtalk.errors import CheckpointError


def converted_cache_path(path: PathLike) -> Path:
    """Where the safetensors copy of pickle checkpoint ``path`` is cached."""
    return converted_dir() / f"{file_sha256(path)}.safetensors"


def load_state_dict(path: PathLike, *, strip_prefix: Optional[str] = "module.",
                    use_cache: bool = True) -> Dict[str, torch.Tensor]:
    """Load a flat ``{key: tensor}`` state dict from ``path`` without executing any code.

    A pickle's unwrapped tensors are cached as safetensors under ``$LADTALK_HOME/converted``
    (keyed by the file's sha256) when ``use_cache``, and later loads read that copy.
    ``strip_prefix`` is removed from every key that has it; None keeps keys as stored.
    """
    p = Path(path).expanduser()
    if use_cache and p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES:
        sd = _load_pickle_cached(p)
    else:
        sd = read_state_dict(p)
    return strip_key_prefix(sd, strip_prefix)


def _load_pickle_cached(p: Path) -> Dict[str, torch.Tensor]:
    cached = converted_cache_path(p)
    if cached.is_file():
        try:
            return read_safetensors(cached)
        except CheckpointError:
            warnings.warn(f"ignoring unreadable converted cache {cached}; re-converting {p}",
                          stacklevel=3)
    sd = read_pickle(p)
    try:
        save_safetensors(sd, cached, metadata={"source": p.name, "source_sha256":
                                               file_sha256(p)})
    except OSError as exc:
        warnings.warn(f"could not cache the converted checkpoint at {cached} ({exc}); {p} will "
                      "be converted again next time", stacklevel=3)
    return sd


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *,
              source: PathLike, max_listed: int = 10, assign: bool = False) -> torch.nn.Module:
    """Strictly load ``state_dict`` into ``model``.

    On any mismatch raises CheckpointError naming ``source`` and listing (the first
    ``max_listed`` of) missing keys, unexpected keys and shape mismatches with their counts.
    ``assign=True`` makes the given tensors the model's own (for a model built on the
    ``meta`` device: no random initialisation, no second copy of the weights).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [(k, tuple(state_dict[k].shape), tuple(own[k].shape))
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        lines = [f"checkpoint {source} does not fit {type(model).__name__} "
                 f"({len(own)} tensors expected, {len(state_dict)} given):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_listing(missing, max_listed)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): "
                         f"{_listing(unexpected, max_listed)}")
        if shapes:
            shown = [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in shapes]
            lines.append(f"  shape mismatches ({len(shapes)}): {_listing(shown, max_listed)}")
        hint = _prefix_hint(missing, unexpected)
        lines.append(hint or "  Is this the right checkpoint for this model?")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(dict(state_dict), strict=True, assign=assign)
    return model


def _listing(items: List[str], n: int) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def _prefix_hint(missing: Iterable[str], unexpected: Iterable[str]) -> str:
    missing, unexpected = set(missing), list(unexpected)
    if not missing or not unexpected:
        return ""
    heads = {k.split(".", 1)[0] for k in unexpected if "." in k}
    if len(heads) == 1:
        head = next(iter(heads)) + "."
        if all(k.startswith(head) and k[len(head):] in missing for k in unexpected):
            return f"  hint: every checkpoint key has the extra prefix '{head}'; strip it."
    return ""
