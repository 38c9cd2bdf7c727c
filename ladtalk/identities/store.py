"""The identity store: one directory per enrolled person.

An identity directory holds ``config.json`` + ``model.safetensors`` (the SOVQAE) and
``meta.json`` (training time, steps, losses, holdout PSNR, certificate numbers, restoration
gains). Identities live in ``$LADTALK_HOME/identities/NAME``; the demo identities shipped with
the repository live in ``checkpoints/identities/NAME``. Everywhere (CLI, pipeline, app) an
identity is addressed by NAME or by a directory path.

Writes go through :func:`ladtalk._util.atomic.atomic_dir`, so a crash or a kill mid-write leaves
the previous identity intact; :func:`resolve_identity` finishes a swap cut between its renames
(:func:`ladtalk._util.atomic.recover_dir`).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

from ladtalk._util.atomic import OLD_PREFIX, TMP_PREFIX, recover_dir
from ladtalk._util.diskcache import newest_mtime
from ladtalk._util.paths import identities_dir
from ladtalk.errors import InputError
from ladtalk.identities.meta import IdentityMeta, load_meta
from ladtalk.models.sovqae import CONFIG_NAME, WEIGHTS_NAME, SOVQAEConfig

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "checkpoints" / "identities"
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME)


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
    meta: IdentityMeta


def is_identity_dir(path: Path) -> bool:
    """Whether ``path`` is a folder holding a complete identity (:data:`REQUIRED_FILES`)."""
    return path.is_dir() and all((path / f).is_file() for f in REQUIRED_FILES)


def store_path(name: str) -> Path:
    return identities_dir() / validate_name(name)


def resolve_identity(name_or_dir: Union[str, Path]) -> Path:
    """Directory of an identity given a store name, a shipped demo name, or a directory path."""
    text = str(name_or_dir)
    path = Path(text).expanduser()
    looks_like_path = os.sep in text or text.startswith(".") or (os.altsep and os.altsep in text)
    if looks_like_path or path.is_dir():
        if is_identity_dir(path):
            return path
        if looks_like_path:
            raise InputError(f"identity directory {path} is missing or incomplete: it needs "
                             f"{' and '.join(REQUIRED_FILES)} (enroll one with "
                             "`python -m ladtalk enroll`)")
    validate_name(text)
    for base in (identities_dir(), SHIPPED_DIR):
        recover_dir(base / text)
        if is_identity_dir(base / text):
            return base / text
    known = ", ".join(i.name for i in list_identities()) or "none yet"
    raise InputError(f"unknown identity {text!r} (known: {known}); enroll it with "
                     f"`python -m ladtalk enroll --video VIDEO --name {text}` or pass a directory")


def list_identities() -> List[IdentityInfo]:
    """Enrolled identities first, then shipped demo identities not shadowed by a user one."""
    out: List[IdentityInfo] = []
    seen = set()
    for base, shipped in ((identities_dir(), False), (SHIPPED_DIR, True)):
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if child.name.startswith(".") or child.name in seen or not is_identity_dir(child):
                continue
            seen.add(child.name)
            out.append(IdentityInfo(child.name, child, shipped, load_meta(child)))
    return out


def identity_config(name_or_dir: Union[str, Path]) -> SOVQAEConfig:
    """The model config of an identity (its ``config.json``), e.g. the crop size it works at."""
    return SOVQAEConfig.from_file(resolve_identity(name_or_dir) / CONFIG_NAME)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_store(base: Optional[Path] = None, min_age_seconds: float = 0.0) -> List[Path]:
    """Clean what killed writes left in the identity store (default :func:`identities_dir`).

    A ``.old-NAME-*`` folder (an :func:`~ladtalk._util.atomic.atomic_dir` swap cut between its
    renames) is put back as ``NAME`` when ``NAME`` is missing, else deleted; ``.tmp-*``
    leftovers (a write cut before its rename), in the store or inside an identity, are
    deleted. Only leftovers untouched for ``min_age_seconds`` are handled (0, the default,
    suits a start-up with no other writer). Returns the paths removed (not the restored).
    """
    base = Path(base) if base is not None else identities_dir()
    if not base.is_dir():
        return []
    now = time.time()

    def stale(p: Path) -> bool:
        return now - newest_mtime(p) >= min_age_seconds

    for old in sorted(base.glob(f"{OLD_PREFIX}*")):
        name = old.name[len(OLD_PREFIX):].rpartition("-")[0]
        if name and stale(old) and not (base / name).exists():
            recover_dir(base / name)  # the newest copy moved aside comes back
    removed: List[Path] = []
    leftovers = list(base.glob(f"{OLD_PREFIX}*")) + list(base.glob(f"{TMP_PREFIX}*")) + [
        p for p in base.glob(f"*/{TMP_PREFIX}*") if not p.parent.name.startswith(".")]
    for path in sorted(leftovers):
        if stale(path):
            _remove(path)
            removed.append(path)
    return removed


__all__ = ["IdentityInfo", "REQUIRED_FILES", "SHIPPED_DIR", "identity_config", "is_identity_dir",
           "list_identities", "resolve_identity", "store_path", "sweep_store", "validate_name"]
