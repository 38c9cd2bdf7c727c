"""Parsing a checkpoint reference: a local file or directory, or a file on the Hub.

The grammar (``hf://REPO/FILE[@REV][#sha256=HEX]``, ``REPO:FILE...``, paths) is in
docs/models.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Tuple, Union

from ladtalk._util.paths import PathLike
from ladtalk.checkpoints.registry import CHECKPOINT_SUFFIXES, HEX64, CheckpointSpec
from ladtalk.errors import CheckpointError, InputError

_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_COLON_REF = re.compile(rf"^(?P<repo>{_REPO_PART}/{_REPO_PART}):(?P<rest>[^/\\].*)$")


def parse_hub_reference(text: str) -> Optional[CheckpointSpec]:
    """Parse ``hf://REPO/FILE[@REV][#sha256=HEX]`` or ``REPO:FILE[@REV][#sha256=HEX]``.

    Returns None when ``text`` has neither form; raises InputError when it has one of the
    forms but is malformed (e.g. no file part, a bad hash).
    """
    text = text.strip()
    if text.startswith("hf://"):
        body, sha = _split_fragment(text[len("hf://"):], text)
        parts = body.split("/", 2)
        if len(parts) < 3 or not all(parts):
            raise InputError(f"invalid Hub reference {text!r}: expected "
                             "hf://OWNER/REPO/PATH/IN/REPO[@REVISION][#sha256=HEX]")
        repo_id, rest = f"{parts[0]}/{parts[1]}", parts[2]
    else:
        if not _COLON_REF.match(text):
            return None
        body, sha = _split_fragment(text, text)
        m = _COLON_REF.match(body)
        if not m:
            raise InputError(f"invalid Hub reference {text!r}: expected OWNER/REPO:PATH[@REV]")
        repo_id, rest = m.group("repo"), m.group("rest")
    filename, revision = rest, None
    if "@" in rest:
        filename, _, revision = rest.rpartition("@")
        if not filename or not revision:
            raise InputError(f"invalid Hub reference {text!r}: empty file or revision around '@'")
    filename = filename.strip("/")
    if not filename or filename.endswith("/"):
        raise InputError(f"invalid Hub reference {text!r}: it names no file inside {repo_id}")
    return CheckpointSpec(repo_id, filename, revision, sha)


def _split_fragment(body: str, original: str) -> Tuple[str, Optional[str]]:
    if "#" not in body:
        return body, None
    body, _, frag = body.partition("#")
    key, _, value = frag.partition("=")
    if key.strip().lower() != "sha256" or not HEX64.match(value.strip()):
        raise InputError(f"invalid Hub reference {original!r}: the only supported suffix is "
                         "#sha256=<64 hex digits>")
    return body, value.strip().lower()


def parse_checkpoint(text: Union[PathLike, CheckpointSpec], *,
                     known_filename: Optional[str] = None) -> Union[Path, CheckpointSpec]:
    """Turn a user string into an existing local file :class:`Path` or a :class:`CheckpointSpec`.

    ``known_filename`` is the checkpoint's usual file name, used to pick a file inside a
    directory. An existing local path wins over the ``REPO:FILE`` reading of the same text.
    Raises CheckpointError when a local path does not exist or a directory holds no / several
    candidates.
    """
    if isinstance(text, CheckpointSpec):
        return text
    raw = os.fspath(text).strip()
    if not raw:
        raise InputError("empty checkpoint reference: give a file path, a directory, or "
                         "hf://OWNER/REPO/FILE")
    local = Path(raw).expanduser()
    if not raw.startswith("hf://") and local.exists():
        return _resolve_local(local, known_filename)
    spec = parse_hub_reference(raw)
    if spec is not None:
        return spec
    raise CheckpointError(
        f"checkpoint file not found: {local} (it is neither an existing file or directory nor "
        "a Hub reference like hf://OWNER/REPO/FILE or OWNER/REPO:FILE)")


def _resolve_local(path: Path, known_filename: Optional[str]) -> Path:
    """A file as it is; in a directory the converted or known file, else its single one."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is neither a file nor a directory")
    if known_filename:
        known = Path(known_filename).name
        for cand in (path / (Path(known).stem + ".safetensors"), path / known):
            if cand.is_file():
                return cand
    cands = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)
    if len(cands) == 1:
        return cands[0]
    wanted = f"{known_filename} or " if known_filename else ""
    if not cands:
        raise CheckpointError(
            f"no checkpoint in directory {path}: looked for {wanted}a single file with suffix "
            f"{', '.join(CHECKPOINT_SUFFIXES)}")
    names = ", ".join(p.name for p in cands)
    raise CheckpointError(
        f"ambiguous checkpoint directory {path}: it holds {len(cands)} candidate files "
        f"({names}); pass the path of the file you mean instead of the directory")
