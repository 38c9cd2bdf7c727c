"""sha256 of checkpoint files (memoised within the process) and its verification."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Tuple

from ladtalk._util.paths import PathLike
from ladtalk.errors import CheckpointError

_SHA_MEMO: Dict[Tuple[str, int, int], str] = {}


def file_sha256(path: PathLike) -> str:
    """sha256 hex digest of a file (memoised per path, size and mtime within the process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def verify_sha256(path: PathLike, expected: str, *, what: str = "") -> None:
    """Raise CheckpointError when ``path`` does not hash to ``expected``."""
    actual = file_sha256(path)
    if actual != expected.lower():
        src = f" (from {what})" if what else ""
        raise CheckpointError(
            f"sha256 mismatch for {path}{src}: expected {expected.lower()}, got {actual}. The "
            "file is corrupt or not the one the reference names; delete it and download again, "
            "or correct the #sha256= part of the reference.")
