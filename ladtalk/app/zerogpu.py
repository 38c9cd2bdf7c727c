"""ZeroGPU: ``spaces`` (imported before torch touches CUDA) and the ``@spaces.GPU`` decorator.

Off ZeroGPU, or without the ``spaces`` package, :func:`gpu` returns the function unchanged.
"""

from __future__ import annotations

from typing import Callable

try:  # pragma: no cover - depends on the environment
    import spaces  # type: ignore
    ZERO_GPU = bool(spaces.config.Config.zero_gpu)
except Exception:  # noqa: BLE001 - ImportError or an incompatible spaces version
    spaces = None
    ZERO_GPU = False


def gpu(duration: Callable[..., int]):
    """``spaces.GPU(duration=...)`` when the package is there (a no-op off ZeroGPU)."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
