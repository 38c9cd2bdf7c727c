"""Where LaDTalk keeps things on disk.

``LADTALK_HOME`` (default: the platform cache dir, e.g. ``~/.cache/ladtalk``) holds the
identity store (``identities/NAME``) and checkpoints converted from ``.pth``
(``converted/``). Hugging Face downloads stay in the normal HF cache.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

#: what functions taking a file or folder accept
PathLike = Union[str, "os.PathLike[str]"]


def ladtalk_home() -> Path:
    env = os.environ.get("LADTALK_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ladtalk"


def identities_dir() -> Path:
    return ladtalk_home() / "identities"


def converted_dir() -> Path:
    return ladtalk_home() / "converted"
