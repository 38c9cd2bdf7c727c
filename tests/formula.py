"""The deterministic weight formula of ../shared/golden/README.md, reimplemented for tests.

Weights depend only on key names and shapes, so tests can build full-size "pretrained"
state dicts without downloading anything and compare against the upstream outputs.
"""

from __future__ import annotations

from typing import Dict, Iterable, Sequence

import numpy as np

_M = np.uint64((1 << 32) - 1)


def hash_uniform(n: int, k: int) -> np.ndarray:
    """h in (-1, 1), float64, for flat element indices 0..n-1 of the key with rank k."""
    x = (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B1)
         + np.uint64((k * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF)) & _M
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & _M
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & _M
    x ^= x >> np.uint64(16)
    return (x.astype(np.float64) + 0.5) / 2.0 ** 32 * 2.0 - 1.0


def det_weights(entries: Iterable[Sequence], fan_in_all: bool = False) -> Dict[str, np.ndarray]:
    """Formula weights for manifest entries ``[key, shape, ...]``.

    ``fan_in_all``: apply the fan-in rule to every weight with >= 2 dims (syncnet_lse variant);
    otherwise only 4-D conv weights get it.
    """
    shapes = {e[0]: tuple(e[1]) for e in entries}
    out: Dict[str, np.ndarray] = {}
    for k, key in enumerate(sorted(shapes)):
        shape = shapes[key]
        n = int(np.prod(shape, dtype=np.int64))
        leaf = key.split(".")[-1]
        if leaf == "num_batches_tracked":
            out[key] = np.zeros(shape, np.int64)
            continue
        h = hash_uniform(n, k)
        if leaf == "weight" and (len(shape) == 4 or (fan_in_all and len(shape) >= 2)):
            v = (2.0 / np.sqrt(float(np.prod(shape[1:])))) * h
        elif leaf == "weight":
            v = 1.0 + 0.1 * h
        elif leaf in ("bias", "running_mean"):
            v = 0.05 * h
        elif leaf == "running_var":
            v = 1.0 + 0.25 * h
        else:
            raise ValueError(f"formula has no rule for key {key!r}")
        out[key] = v.reshape(shape).astype(np.float32)
    return out


def det_state_dict(entries, fan_in_all: bool = False):
    """Same as :func:`det_weights` but as torch tensors."""
    import torch
    return {k: torch.from_numpy(v) for k, v in det_weights(entries, fan_in_all).items()}
