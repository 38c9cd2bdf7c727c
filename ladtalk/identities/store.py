"""The identity store: one directory per enrolled person.

An identity directory holds ``config.json`` + ``model.safetensors`` (the SOVQAE) and
``meta.json`` (training time, steps, losses, holdout PSNR, certificate numbers, restoration
gains). Identities live in ``$LADTALK_HOME/identities/NAME``; the demo identities shipped with
the repository live in ``checkpoints/identities/NAME``. Everywhere (CLI, pipeline, app) an
identity is addressed by NAME or by a directory path.

Writes are atomic: a new version is assembled in a hidden temp directory beside the target and
swapped in with renames, so a crash or kill mid-write leaves the previous identity intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Union

from ladtalk._util.paths import identities_dir
from ladtalk.errors import InputError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "checkpoints" / "identities"
REQUIRED_FILES = ("config.json", "model.safetensors")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe single path component, else raise InputError."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise InputError(
            f"invalid identity name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (no slashes, no '..')")
    return name


@dataclass
class IdentityInfo:
    name: str
    path: Path
    shipped: bool
    meta: dict


def _is_identity_dir(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in REQUIRED_FILES)


def _recover(target: Path) -> None:
    """Finish a swap interrupted between its two renames (old moved away, new not in)."""
    if target.exists():
        return
    backups = sorted(target.parent.glob(f".old-{target.name}-*"), key=lambda p: p.stat().st_mtime)
    if backups:
        os.replace(backups[-1], target)


def store_path(name: str) -> Path:
    return identities_dir() / validate_name(name)


def resolve_identity(name_or_dir: Union[str, Path]) -> Path:
    """Directory of an identity given a store name, a shipped demo name, or a directory path."""
    text = str(name_or_dir)
    path = Path(text).expanduser()
    looks_like_path = os.sep in text or text.startswith(".") or (os.altsep and os.altsep in text)
    if looks_like_path or path.is_dir():
        if _is_identity_dir(path):
            return path
        if looks_like_path:
            raise InputError(f"identity directory {path} is missing or incomplete: it needs "
                             f"{' and '.join(REQUIRED_FILES)} (enroll one with "
                             "`python -m ladtalk enroll`)")
    validate_name(text)
    for base in (identities_dir(), SHIPPED_DIR):
        _recover(base / text)
        if _is_identity_dir(base / text):
            return base / text
    known = ", ".join(i.name for i in list_identities()) or "none yet"
    raise InputError(f"unknown identity {text!r} (known: {known}); enroll it with "
                     f"`python -m ladtalk enroll --video VIDEO --name {text}` or pass a directory")


def read_meta(path: Path) -> dict:
    try:
        return json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def list_identities() -> List[IdentityInfo]:
    """Enrolled identities first, then shipped demo identities not shadowed by a user one."""
    out: List[IdentityInfo] = []
    seen = set()
    for base, shipped in ((identities_dir(), False), (SHIPPED_DIR, True)):
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if child.name.startswith(".") or child.name in seen or not _is_identity_dir(child):
                continue
            seen.add(child.name)
            out.append(IdentityInfo(child.name, child, shipped, read_meta(child)))
    return out


@contextmanager
def atomic_identity_dir(target: Union[str, Path]) -> Iterator[Path]:
    """Yield a fresh temp dir; on clean exit it atomically replaces ``target``.

    On an exception (or a kill) the temp dir is discarded and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Optional[Path] = None
    if target.exists():
        old = target.parent / f".old-{target.name}-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Union[str, Path], data) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
