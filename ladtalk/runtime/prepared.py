"""Models prepared for OpenVINO on this machine, found again without torch (:func:`recall`).

Choosing a runtime needs the model in torch: its weights are loaded, folded and hashed, the
plans are timed or read from the choice cache, and an OpenVINO plan's IR is converted or read
from the IR cache. Once that is done for a checkpoint file, :func:`remember` stores what came
of it: the plan, how it was chosen, the IR's cache key and the model threads. A later process
asking the same of the same file on the same machine :func:`recall`\\ s it and compiles the
cached IR directly: no torch import (1.2 s on a 2-core CPU), no weights read, no hashing.

An entry is keyed by the model's name, the checkpoint file (resolved path, size,
modification time and inode: a changed file is a new key), the request (backend, precision,
batch, model threads asked for), the process's thread budget, the processor and the torch and
OpenVINO versions. It is used only while the IR is still cached and, when the plan was
measured, while the choice cache still holds that choice: deleting
``$LADTALK_HOME/cache/runtime.json`` measures again, as it always did. The entries live in
``$LADTALK_HOME/cache/prepared.json`` (the :data:`MAX_ENTRIES` most recently written).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ladtalk._util.cores import thread_budget
from ladtalk._util.entryfile import read_entries, write_entries
from ladtalk._util.paths import PathLike, ladtalk_home
from ladtalk.runtime.autotune import Plan, RuntimeChoice, cached_choice, cpu_model
from ladtalk.runtime.openvino_engine import openvino_version

log = logging.getLogger(__name__)

CACHE_NAME = "prepared.json"
CACHE_VERSION = 1
MAX_ENTRIES = 64


@dataclass(frozen=True)
class Prepared:
    """What a model was prepared as: its runtime ``choice`` (an OpenVINO plan), the cache
    keys of its parts' IRs, and the ``workers`` (model threads) and ``threads`` (intra-op
    threads each) its engines were built for."""

    choice: RuntimeChoice
    ir_keys: List[str]
    workers: int
    threads: int
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        c = self.choice
        return {"backend": c.backend, "precision": c.precision, "how": c.how,
                "speeds": dict(c.speeds), "cache_key": c.cache_key, "ir_keys": list(self.ir_keys),
                "workers": self.workers, "threads": self.threads, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Prepared":
        choice = RuntimeChoice(Plan(str(d["backend"]), str(d["precision"])), str(d["how"]),
                               {str(k): float(v) for k, v in dict(d.get("speeds") or {}).items()},
                               cache_key=d.get("cache_key"))
        return cls(choice, [str(k) for k in d["ir_keys"]], int(d["workers"]), int(d["threads"]),
                   dict(d.get("extra") or {}))


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def prepared_key(name: str, weights: PathLike, request: Mapping[str, Any]) -> str:
    """The key of ``name``'s entry for the checkpoint file ``weights`` and ``request`` (what
    was asked: backend, precision, batch, model threads) on this machine, as it is now."""
    p = Path(weights).resolve()
    st = p.stat()
    cpu, flags = cpu_model()
    record = {"version": CACHE_VERSION, "name": name,
              "weights": [str(p), st.st_size, st.st_mtime_ns, st.st_ino],
              "request": dict(request), "thread_budget": thread_budget(),
              "cpu": cpu, "flags": flags, "torch": _version("torch"),
              "openvino": openvino_version()}
    return hashlib.sha1(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _path() -> Path:
    return ladtalk_home() / "cache" / CACHE_NAME


def _read() -> Dict[str, dict]:
    return read_entries(_path(), CACHE_VERSION, "prepared-model list")


def _write(entries: Dict[str, dict]) -> None:
    try:
        write_entries(_path(), CACHE_VERSION, entries)
    except OSError as exc:  # costs only speed: the next process goes through torch
        log.warning("could not write %s (%s)", _path(), exc)


def recall(key: str) -> Optional[Prepared]:
    """The entry stored under ``key``, if it is still good: readable, and, when its plan was
    measured, still the plan the choice cache holds. (Whether its IRs are still cached is
    for the caller to find out as it compiles them.)"""
    entry = _read().get(key)
    if not isinstance(entry, dict):
        return None
    try:
        prepared = Prepared.from_dict(entry)
    except (KeyError, TypeError, ValueError):
        return None
    if prepared.choice.backend != "openvino" or not prepared.ir_keys:
        return None
    choice = prepared.choice
    if choice.cache_key is not None and cached_choice(choice.cache_key) != choice.plan:
        return None  # the choice cache was cleared or changed: measure again
    if choice.how == "measured":  # (measured by the process that prepared it)
        choice = replace(choice, how="cached")
    return replace(prepared, choice=choice)


def remember(key: str, prepared: Prepared) -> None:
    """Store ``prepared`` under ``key`` (atomically; a failure to write costs only speed)."""
    entries = _read()
    entries[key] = {**prepared.to_dict(), "written": time.time()}
    if len(entries) > MAX_ENTRIES:
        keep = sorted(entries, key=lambda k: float(entries[k].get("written", 0)))[-MAX_ENTRIES:]
        entries = {k: entries[k] for k in keep}
    _write(entries)


__all__ = ["Prepared", "prepared_key", "recall", "remember", "CACHE_NAME", "MAX_ENTRIES"]
