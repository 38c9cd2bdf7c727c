"""Disk space: how much a folder holds, and a clear refusal when a disk is nearly full.

What LaDTalk stores where, and the bounds: ``docs/storage.md``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ladtalk._util.paths import PathLike
from ladtalk.errors import InputError

MB = 1 << 20
#: free space kept on top of what a step says it needs (logs, the OS, other writers)
SAFETY_MARGIN_BYTES = 128 * MB
#: the least an enrollment asks for (a small identity with its trainer state is ~20 MB, but
#: the crop cache and a second copy during the atomic swap need room too)
ENROLL_MIN_FREE_BYTES = 512 * MB
#: an identity on disk is the weights, trainer state (Adam moments of the generator and the
#: discriminator, EMA statistics) and, during the atomic swap, the previous copy: about
#: 8x the SOVQAE's parameter bytes for the ``base`` config
ENROLL_MODEL_FACTOR = 8


def dir_bytes(path: PathLike) -> int:
    """Bytes of the regular files under ``path`` (a file: its size; missing: 0). Files that
    vanish while it walks (another process removing them) are skipped."""
    path = Path(path)
    try:
        if not path.is_dir():
            return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            total += st.st_size
    return total


def remove_path(path: PathLike) -> None:
    """Remove a file or a whole folder; nothing happens when it is gone already."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (a folder that will be created later)."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def format_bytes(n: float) -> str:
    """``n`` bytes for a person: ``'120 MB'``, ``'3.2 GB'``."""
    if n >= 10 * 1024 * MB:
        return f"{n / (1024 * MB):.0f} GB"
    if n >= 1024 * MB:
        return f"{n / (1024 * MB):.1f} GB"
    return f"{max(0.0, n) / MB:.0f} MB"


def free_bytes(path: PathLike) -> int:
    """Free bytes (for this user) on the disk that holds ``path`` or would hold it."""
    return int(shutil.disk_usage(_existing(Path(path))).free)


def check_free_space(path: PathLike, need_bytes: int, what: str, action: str = "this step",
                     fix: str = "free some space on it, or set LADTALK_HOME to a folder on a "
                               "larger disk") -> None:
    """Raise :class:`InputError` when the disk holding ``path`` has less than ``need_bytes``
    plus :data:`SAFETY_MARGIN_BYTES` free.

    ``what`` names the folder for a person ("the identity store"), ``action`` the step
    ("enrolling"); the message names neither the path nor a flag, so the app can show it.
    """
    free = free_bytes(path)
    if free >= int(need_bytes) + SAFETY_MARGIN_BYTES:
        return
    raise InputError(f"the disk holding {what} has {format_bytes(free)} free; {action} needs "
                     f"about {format_bytes(need_bytes + SAFETY_MARGIN_BYTES)}: {fix}")


def enroll_disk_need(model: Any) -> int:
    """Bytes an enrollment of ``model`` (a torch module) may write: the larger of
    :data:`ENROLL_MIN_FREE_BYTES` and :data:`ENROLL_MODEL_FACTOR` x its parameter bytes."""
    params = sum(int(p.numel()) * int(p.element_size()) for p in model.parameters())
    return max(ENROLL_MIN_FREE_BYTES, ENROLL_MODEL_FACTOR * params)


__all__ = ["MB", "SAFETY_MARGIN_BYTES", "ENROLL_MIN_FREE_BYTES", "dir_bytes",
           "check_free_space", "enroll_disk_need", "format_bytes", "free_bytes"]
