"""How many CPU cores this process may run on, and how many threads it should keep busy."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS / Windows
        return max(1, os.cpu_count() or 1)


def thread_budget() -> int:
    """Threads this process should keep busy: its usable cores, or fewer when
    ``OMP_NUM_THREADS`` says so (torchrun sets 1 for each of several processes on a machine,
    and torch follows it)."""
    cores = usable_cores()
    try:
        omp = int(os.environ.get("OMP_NUM_THREADS", "").strip())
    except ValueError:
        return cores
    return max(1, min(cores, omp)) if omp > 0 else cores


__all__ = ["usable_cores", "thread_budget"]
