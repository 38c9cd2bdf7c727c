"""A content-keyed, size-bounded, least-recently-used disk cache.

An entry is a folder ``ROOT/KEY`` built in a temp folder beside it and renamed in whole
(:func:`ladtalk._util.atomic.atomic_dir`), so a reader sees a complete entry or none. The key
comes from the *content* of the input file plus the parameters (:func:`content_key`), never
its path or modification time: the same video uploaded twice under two temp paths is one
entry. Using an entry (:meth:`DiskCache.get`) sets its folder's modification time; after
each write the least recently used entries are removed until the total is at most
``max_bytes`` (the entry just written always stays). Removal renames an entry aside first, so
it too is all or nothing. Leftovers of a killed writer (``.tmp-*`` / ``.old-*``) older than
:data:`STALE_SECONDS` are removed on the next write. Layout and bounds: ``docs/storage.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from ladtalk._util.atomic import OLD_PREFIX, TMP_PREFIX, atomic_dir
from ladtalk._util.disk import MB, dir_bytes, remove_path
from ladtalk._util.jsonsafe import to_jsonable
from ladtalk._util.paths import PathLike
from ladtalk.errors import InputError

log = logging.getLogger(__name__)

T = TypeVar("T")
#: a ``.tmp-*`` / ``.old-*`` leftover untouched this long belongs to no live writer
STALE_SECONDS = 300.0
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# -- content keys ------------------------------------------------------------------------------
_DIGESTS: Dict[Tuple[str, int, int, int, int], str] = {}
_DIGESTS_MAX = 256
_DIGEST_LOCK = threading.Lock()


def file_digest(path: PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of the bytes of ``path``, read in ``chunk``-byte pieces.

    Remembered per process by (path, inode, size, mtime, ctime), so asking twice for an
    unchanged file reads it once.
    """
    path = Path(path)
    st = path.stat()
    stamp = (str(path.resolve()), int(st.st_ino), int(st.st_size), int(st.st_mtime_ns),
             int(st.st_ctime_ns))
    with _DIGEST_LOCK:
        if stamp in _DIGESTS:
            return _DIGESTS[stamp]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    with _DIGEST_LOCK:
        if len(_DIGESTS) >= _DIGESTS_MAX:
            _DIGESTS.pop(next(iter(_DIGESTS)))
        _DIGESTS[stamp] = digest
    return digest


def content_key(path: PathLike, **params: Any) -> str:
    """Cache key of the file's content plus ``params`` (sorted JSON; dataclasses, tuples,
    numpy values and paths are accepted). Neither the file's path nor its times enter it."""
    text = json.dumps(to_jsonable(params), sort_keys=True, separators=(",", ":"))
    h = hashlib.sha256(file_digest(path).encode())
    h.update(b"\n" + text.encode())
    return h.hexdigest()[:40]


def cache_limit(env: str, default_mb: float) -> int:
    """The byte bound of a cache: environment variable ``env`` in MB (a number >= 0; 0 turns
    the cache off), else ``default_mb``. Raises :class:`InputError` for a malformed value."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return int(default_mb * MB)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value < float("inf")):
        raise InputError(f"{env}={raw!r} is not a size: give the cache bound in MB, a number "
                         f">= 0 (0 turns the cache off; default {default_mb:g})")
    return int(value * MB)


# -- the cache ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheUsage:
    """What a cache holds: complete entries, their bytes, and its bound."""

    entries: int
    bytes: int
    max_bytes: int


@dataclass(frozen=True)
class _Entry:
    path: Path
    used_ns: int
    size: int


class DiskCache:
    """Folders ``root/KEY`` bounded to ``max_bytes`` in total, least recently used out first.

    ``max_bytes`` 0 disables the cache: :meth:`put` still builds (callers get their result)
    but keeps nothing.
    """

    def __init__(self, root: PathLike, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self._last_ns = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def path(self, key: str) -> Path:
        """The folder of entry ``key`` (whether it exists or not)."""
        if not isinstance(key, str) or not _KEY_RE.match(key) or ".." in key:
            raise ValueError(f"bad cache key {key!r}")
        return self.root / key

    def _touch(self, path: Path) -> None:
        """Mark ``path`` used now (explicit nanoseconds, strictly increasing in this
        process: the kernel's own file times are too coarse to order quick successive uses)."""
        with self._lock:
            now = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = now
        os.utime(path, ns=(now, now))

    def get(self, key: str) -> Optional[Path]:
        """The entry's folder, marked used, or None when there is no complete entry."""
        path = self.path(key)
        try:
            self._touch(path)
        except OSError:  # missing, or removed by an eviction just now
            return None
        return path if path.is_dir() else None

    def read(self, key: str, load: Callable[[Path], T]) -> Optional[T]:
        """``load(entry folder)`` of a complete entry, or None. An entry ``load`` cannot read
        (corrupt, or evicted while being read) is dropped and reported as a miss."""
        path = self.get(key)
        if path is None:
            return None
        try:
            return load(path)
        except Exception as exc:  # noqa: BLE001 - a bad entry is rebuilt, never fatal
            log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            self.discard(key)
            return None

    def put(self, key: str, build: Callable[[Path], None]) -> Optional[Path]:
        """Build entry ``key`` with ``build(temp folder)`` and rename it in whole, then evict
        down to ``max_bytes``. An exception in ``build`` (or a kill) leaves no entry. Returns
        the entry's folder (None when the cache is off)."""
        target = self.path(key)
        if not self.enabled:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_dir(target) as tmp:
            build(tmp)
        self._touch(target)
        self.evict(keep=key)
        return target

    def discard(self, key: str) -> bool:
        """Remove entry ``key``; whether there was one."""
        return _remove_whole(self.path(key))

    def _entries(self) -> List[_Entry]:
        out = []
        if not self.root.is_dir():
            return out
        for child in self.root.iterdir():
            if child.name.startswith(".") or not child.is_dir():
                continue
            try:
                used = child.stat().st_mtime_ns
            except OSError:
                continue
            out.append(_Entry(child, used, dir_bytes(child)))
        return sorted(out, key=lambda e: (e.used_ns, e.path.name))

    def evict(self, keep: Optional[str] = None) -> List[Path]:
        """Remove stale leftovers, then least recently used entries (never ``keep``) until
        the total is at most ``max_bytes``. Returns what it removed."""
        removed = self.sweep()
        entries = self._entries()
        total = sum(e.size for e in entries)
        for e in entries:
            if total <= self.max_bytes:
                break
            if e.path.name == keep:
                continue
            if _remove_whole(e.path):
                removed.append(e.path)
                log.info("cache %s over %d bytes: evicted %s (%d bytes)", self.root,
                         self.max_bytes, e.path.name, e.size)
            total -= e.size
        return removed

    def sweep(self, min_age_seconds: float = STALE_SECONDS) -> List[Path]:
        """Remove ``.tmp-*`` / ``.old-*`` leftovers untouched for ``min_age_seconds``."""
        removed: List[Path] = []
        if not self.root.is_dir():
            return removed
        now = time.time()
        for child in self.root.iterdir():
            if not child.name.startswith((TMP_PREFIX, OLD_PREFIX)):
                continue
            if now - newest_mtime(child) >= min_age_seconds:
                remove_path(child)
                removed.append(child)
        return removed

    def usage(self) -> CacheUsage:
        entries = self._entries()
        return CacheUsage(len(entries), sum(e.size for e in entries), self.max_bytes)

    def clear(self) -> None:
        """Remove every entry and leftover (the root folder stays)."""
        for e in self._entries():
            _remove_whole(e.path)
        self.sweep(min_age_seconds=0.0)


def _remove_whole(path: Path) -> bool:
    """Rename ``path`` aside, then delete it: a reader never sees half an entry."""
    aside = path.parent / f"{OLD_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(path, aside)
    except OSError:
        return False
    shutil.rmtree(aside, ignore_errors=True)
    return True


def newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` or anything under it (0 when it vanished):
    a folder a live writer is filling has a recent one."""
    try:
        newest = path.stat().st_mtime
    except OSError:
        return 0.0
    if path.is_dir():
        for top, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(top, name)).st_mtime)
                except OSError:
                    continue
    return newest


__all__ = ["CacheUsage", "DiskCache", "STALE_SECONDS", "cache_limit", "content_key",
           "file_digest", "newest_mtime"]
