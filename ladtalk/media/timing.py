"""Loop policy: which source frame output frame ``t`` shows (:func:`source_index`).

Frames ``t < n_src`` show frame ``t``; past the end ``pingpong`` runs ``0 .. n-1 n-2 .. 1 0
..``, ``loop`` restarts at 0 and ``hold`` repeats the last frame. See docs/media.md.
"""

from __future__ import annotations

import numpy as np

from ladtalk._util.choices import DEFAULT_LOOP, LOOP_POLICIES


def check_policy(policy: str) -> str:
    """Normalise and validate a policy name (raises :class:`ValueError` naming the choices)."""
    key = str(policy).lower().replace("-", "").replace("_", "")
    if key not in LOOP_POLICIES:
        raise ValueError(f"unknown loop policy {policy!r}; use one of {', '.join(LOOP_POLICIES)}")
    return key


def source_index(t: int, n_src: int, policy: str = DEFAULT_LOOP) -> int:
    """Source frame shown at output frame ``t`` (see the module docstring)."""
    if n_src < 1:
        raise ValueError(f"the source needs at least one frame, got {n_src}")
    if t < 0:
        raise ValueError(f"output frame index must be >= 0, got {t}")
    if t < n_src:
        return int(t)
    policy = check_policy(policy)
    if n_src == 1:
        return 0
    if policy == "loop":
        return int(t % n_src)
    if policy == "hold":
        return n_src - 1
    period = 2 * n_src - 2
    p = t % period
    return int(p if p < n_src else period - p)


def source_indices(n_out: int, n_src: int, policy: str = DEFAULT_LOOP) -> np.ndarray:
    """:func:`source_index` for ``t = 0 .. n_out-1`` as an int64 array."""
    if n_src < 1:
        raise ValueError(f"the source needs at least one frame, got {n_src}")
    t = np.arange(int(n_out), dtype=np.int64)
    policy = check_policy(policy)
    if n_src == 1:
        return np.zeros_like(t)
    if policy == "loop":
        return t % n_src
    if policy == "hold":
        return np.minimum(t, n_src - 1)
    period = 2 * n_src - 2
    p = t % period
    return np.where(p < n_src, p, period - p)


def needs_random_access(n_out: int, n_src: int, policy: str) -> bool:
    """True when the output revisits source frames in reverse order (ping-pong past the end),
    so the decoded frames must be cached for random access."""
    return check_policy(policy) == "pingpong" and n_src > 1 and n_out > n_src
