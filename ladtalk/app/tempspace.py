"""The app's temp space: one folder per session, one per call, removed when no longer needed.

``TempSpace.call_dir(session, prefix)`` gives a call a fresh folder under
``ROOT/<sha256(session)[:16]>/``. On any exception, cancellation included
(``asyncio.CancelledError``, ``GeneratorExit``, ``KeyboardInterrupt``), it is removed at once.
On success it stays for :attr:`TempSpace.grace_seconds`, because Gradio copies the files a
handler returns into its own cache after the handler has returned; the next :meth:`prune`
(run at the start of every call), :meth:`end_session` or :meth:`close` removes it. Sessions
idle longer than ``ttl_seconds`` go whole. :func:`sweep_stale_temp` is the start-up sweep of
what dead processes (and older versions) left in the system temp folder. Imports no gradio.
Where everything is stored: ``docs/storage.md``.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set

from ladtalk._util.diskcache import newest_mtime

#: name of a TempSpace root: ``ladtalk-app-<pid>-<random>``
ROOT_PREFIX = "ladtalk-app-"
_ROOT_RE = re.compile(r"^ladtalk-app-(\d+)-[0-9a-f]+$")
#: per-call folders of older versions (and of the pipeline's own streaming step)
LEGACY_PREFIXES = ("ladtalk-gen-", "ladtalk-rob-", "ladtalk-enroll-")
#: a legacy folder untouched this long belongs to no running call
LEGACY_MIN_AGE_SECONDS = 300.0
#: how long a successful call's folder stays for Gradio to copy its outputs
GRACE_SECONDS = 600.0

_LIVE_ROOTS: Set[Path] = set()   # roots of this process's open TempSpaces
_LIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class TempUsage:
    """What a temp space holds now: files, their bytes, session folders."""

    files: int
    bytes: int
    sessions: int


@dataclass
class _Session:
    last_used: float
    active: Set[Path] = field(default_factory=set)
    done: Dict[Path, float] = field(default_factory=dict)  # folder -> when its call ended


def session_key(session: str) -> str:
    """The folder name of a session: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(str(session).encode("utf-8")).hexdigest()[:16]


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class TempSpace:
    """Per-session temp folders under ``root`` (default
    ``$TMPDIR/ladtalk-app-<pid>-<random>``, created on first use). Thread-safe."""

    def __init__(self, root: Optional[Path] = None, ttl_seconds: float = 3600.0,
                 grace_seconds: float = GRACE_SECONDS):
        if root is None:
            root = Path(tempfile.gettempdir()) / f"{ROOT_PREFIX}{os.getpid()}-" \
                f"{secrets.token_hex(4)}"
        self.root = Path(root)
        self.ttl_seconds = float(ttl_seconds)
        self.grace_seconds = float(grace_seconds)
        self._sessions: Dict[str, _Session] = {}
        self._lock = threading.RLock()

    def _ensure_root(self) -> None:
        with _LIVE_LOCK:  # registered first: a concurrent sweep never takes a new root
            _LIVE_ROOTS.add(self.root.resolve())
        self.root.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def call_dir(self, session: str, prefix: str) -> Iterator[Path]:
        """A fresh folder for one call of ``session``; removed if the call fails or is
        cancelled, kept for :attr:`grace_seconds` if it succeeds (see the module doc)."""
        self.prune()
        key = session_key(session)
        with self._lock:
            self._ensure_root()
            (self.root / key).mkdir(exist_ok=True)
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(prefix))[:40] or "call"
            path = Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=self.root / key))
            state = self._sessions.setdefault(key, _Session(time.time()))
            state.active.add(path)
            state.last_used = time.time()
        try:
            yield path
        except BaseException:
            with self._lock:
                state.active.discard(path)
                state.last_used = time.time()
                _rmtree(path)
                self._drop_if_idle(key)
            raise
        with self._lock:
            state.active.discard(path)
            state.last_used = time.time()
            if self._sessions.get(key) is state:
                state.done[path] = time.time()
            else:  # the session ended while this call ran: nobody will copy its outputs
                _rmtree(path)
                self._drop_if_idle(key)

    def _drop_if_idle(self, key: str) -> None:
        """Remove the folder of an ended session once no call of it runs any more."""
        folder = self.root / key
        if key not in self._sessions and folder.is_dir() and not any(folder.iterdir()):
            _rmtree(folder)

    def prune(self, now: Optional[float] = None) -> List[Path]:
        """Remove successful call folders older than :attr:`grace_seconds` and sessions idle
        longer than ``ttl_seconds`` (never a folder of a running call). Returns them."""
        now = time.time() if now is None else now
        removed: List[Path] = []
        with self._lock:
            for key, state in list(self._sessions.items()):
                if not state.active and now - state.last_used > self.ttl_seconds:
                    removed.append(self.root / key)
                    self._end(key)
                    continue
                for path, ended in list(state.done.items()):
                    if now - ended > self.grace_seconds:
                        _rmtree(path)
                        del state.done[path]
                        removed.append(path)
            removed += self._prune_unknown(now)
        return removed

    def _prune_unknown(self, now: float) -> List[Path]:
        """Session folders on disk this object does not know (another TempSpace on the same
        root): removed when nothing in them changed for ``ttl_seconds``."""
        out: List[Path] = []
        if not self.root.is_dir():
            return out
        for child in self.root.iterdir():
            if child.name not in self._sessions and now - newest_mtime(child) > self.ttl_seconds:
                _rmtree(child)
                out.append(child)
        return out

    def _end(self, key: str) -> None:
        state = self._sessions.pop(key, None)
        if state is None:
            _rmtree(self.root / key)
            return
        for path in state.done:
            _rmtree(path)
        if not state.active:
            _rmtree(self.root / key)
        # a running call's folder goes when it ends (call_dir sees the session gone)

    def end_session(self, session: str) -> None:
        """The session closed (Gradio's ``unload`` / ``delete_callback``): remove its folders
        (a call still running loses its folder when it ends)."""
        with self._lock:
            self._end(session_key(session))

    def close(self) -> None:
        """Remove the whole root (at shut-down)."""
        with self._lock:
            self._sessions.clear()
            _rmtree(self.root)
            with _LIVE_LOCK:
                _LIVE_ROOTS.discard(self.root.resolve())

    def usage(self) -> TempUsage:
        files = size = 0
        if self.root.is_dir():
            for top, _dirs, names in os.walk(self.root):
                for name in names:
                    try:
                        size += os.lstat(os.path.join(top, name)).st_size
                        files += 1
                    except OSError:
                        continue
        sessions = sum(1 for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else 0
        return TempUsage(files, size, sessions)


# -- the start-up sweep ------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def _process_start(pid: int) -> Optional[float]:
    """When process ``pid`` started (epoch seconds; Linux ``/proc``), None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _root_is_stale(path: Path) -> bool:
    """A ``ladtalk-app-<pid>-*`` root whose process is gone (or whose pid now belongs to a
    process that started after the root was last changed). Open roots of this process stay."""
    m = _ROOT_RE.match(path.name)
    if m is None or not path.is_dir():
        return False
    with _LIVE_LOCK:
        if path.resolve() in _LIVE_ROOTS:
            return False
    pid = int(m.group(1))
    if pid == os.getpid():
        return True  # this process's roots are all in _LIVE_ROOTS: a previous process's
    if not _pid_alive(pid):
        return True
    started = _process_start(pid)
    return started is not None and started > path.stat().st_mtime + 2.0


def sweep_stale_temp(tmp: Optional[Path] = None,
                     legacy_min_age: float = LEGACY_MIN_AGE_SECONDS) -> List[Path]:
    """The start-up sweep of the temp folder ``tmp`` (default the system one): TempSpace roots
    of dead processes, and legacy per-call folders (``ladtalk-gen-*``, ``ladtalk-rob-*``,
    ``ladtalk-enroll-*``) in which nothing changed for ``legacy_min_age`` seconds. Never a
    live process's root. Returns what it removed."""
    tmp = Path(tmp) if tmp is not None else Path(tempfile.gettempdir())
    removed: List[Path] = []
    if not tmp.is_dir():
        return removed
    now = time.time()
    for child in tmp.iterdir():
        try:
            if child.is_symlink():
                continue
            if child.name.startswith(ROOT_PREFIX):
                stale = _root_is_stale(child)
            else:
                stale = child.name.startswith(LEGACY_PREFIXES) and \
                    now - newest_mtime(child) >= legacy_min_age
        except OSError:
            continue
        if stale:
            if child.is_dir():
                _rmtree(child)
            else:
                child.unlink(missing_ok=True)
            removed.append(child)
    return removed


__all__ = ["GRACE_SECONDS", "LEGACY_PREFIXES", "TempSpace", "TempUsage", "session_key",
           "sweep_stale_temp"]
