"""A small JSON file of keyed entries with a format version, written atomically
(``$LADTALK_HOME/cache/runtime.json``, ``prepared.json``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict

from ladtalk._util.atomic import write_json

log = logging.getLogger(__name__)


def read_entries(path: Path, version: int, what: str) -> Dict[str, dict]:
    """The entries of ``path``; none when it is missing, of another ``version`` or unreadable
    (that one with a warning naming ``what`` the file is)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable %s %s (%s)", what, path, exc)
        return {}
    if not isinstance(data, dict) or data.get("version") != version:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def write_entries(path: Path, version: int, entries: Dict[str, dict]) -> None:
    """Replace ``path`` with ``entries`` (atomically; raises OSError)."""
    write_json(path, {"version": version, "entries": entries})


__all__ = ["read_entries", "write_entries"]
