"""Atomic writes: a temp file (or folder) beside the target, renamed into place on success.

A reader never sees a half-written file, and an error or a kill leaves the old target intact
(at worst a ``.tmp-*`` leftover beside it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ladtalk._util.jsonsafe import to_jsonable
from ladtalk._util.paths import PathLike

TMP_PREFIX = ".tmp-"
#: prefix of the old folder :func:`atomic_dir` moves aside while it swaps the new one in
OLD_PREFIX = ".old-"


@contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path``; on clean exit it replaces ``path`` atomically.

    ``suffix`` keeps an extension writers dispatch on (``.npz``, ``.mp4``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return Path(path)


def dumps_json(obj: Any, sort_keys: bool = False) -> str:
    """Strict, indented JSON of ``obj`` (see :func:`ladtalk._util.jsonsafe.to_jsonable`)."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json(path: PathLike, obj: Any, sort_keys: bool = False) -> Path:
    return write_text(path, dumps_json(obj, sort_keys=sort_keys))


@contextmanager
def atomic_dir(target: PathLike) -> Iterator[Path]:
    """Yield a fresh temp folder; on clean exit it replaces the folder ``target``.

    On an exception (or a kill) the temp folder is discarded and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f"{OLD_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_dir(target: PathLike) -> None:
    """Finish an :func:`atomic_dir` swap cut between its two renames (old moved away, new not in).

    When ``target`` is missing, the newest folder moved aside for it is put back.
    """
    target = Path(target)
    if target.exists():
        return
    backups = sorted(target.parent.glob(f"{OLD_PREFIX}{target.name}-*"),
                     key=lambda p: p.stat().st_mtime)
    if backups:
        os.replace(backups[-1], target)
