"""Where a checkpoint file comes from: the CLI flag, its env var, or the Hub (via its cache).

:func:`resolve_checkpoint` tries the flag, then the environment variable, then the default
Hub file, and never falls back to a lower source when a higher one fails. Hub files go
through ``hf_hub_download`` into the normal HF cache; with ``HF_HUB_OFFLINE`` set, or when
the Hub does not accept a connection (:func:`hub_reachable`), only the cache is consulted.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Dict, Optional, Tuple, Union
from urllib.parse import urlsplit

from ladtalk._util.paths import PathLike
from ladtalk.checkpoints.digest import verify_sha256
from ladtalk.checkpoints.reference import parse_checkpoint
from ladtalk.checkpoints.registry import DEFAULTS, CheckpointSpec, DefaultCheckpoint
from ladtalk.errors import CheckpointError

#: environment variables that route Hub traffic through a proxy (then no direct probe)
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
#: how long one reachability probe of an endpoint is trusted
REACHABILITY_TTL_S = 60.0

_REACHABLE: Dict[str, Tuple[float, bool]] = {}  # endpoint -> (monotonic time, reachable)


def hub_cache_dir() -> Optional[Path]:
    """The HF hub cache as the environment says *now* (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return None


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    val = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return val.strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    """The Hub endpoint huggingface_hub talks to (``HF_ENDPOINT``, read at its import)."""
    from huggingface_hub import constants
    return str(constants.ENDPOINT)


def reset_reachability() -> None:
    """Forget every remembered probe, so the next :func:`hub_reachable` connects again."""
    _REACHABLE.clear()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint accepts a TCP connection (probed once a minute at most).

    Offline, huggingface_hub retries each download for about 25 s; this probe sends
    :func:`resolve_checkpoint` straight to the cache instead. With a proxy configured a direct
    connection proves nothing, so the answer is True and huggingface_hub decides.
    """
    if any(os.environ.get(v) for v in PROXY_VARS):
        return True
    endpoint = hub_endpoint()
    now = time.monotonic()
    seen = _REACHABLE.get(endpoint)
    if seen is not None and now - seen[0] < REACHABILITY_TTL_S:
        return seen[1]
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            ok = True
    except OSError:
        ok = False
    _REACHABLE[endpoint] = (now, ok)
    return ok


def _pick_source(name_or_spec, override):
    """``(source, origin, registry entry or None, known file name)`` in precedence order."""
    entry = DEFAULTS.get(name_or_spec) if isinstance(name_or_spec, str) else None
    if entry is None:
        source = override if override is not None else name_or_spec
        return source, "argument", None, None
    env_val = os.environ.get(entry.env_var, "").strip()
    if override is not None and (isinstance(override, CheckpointSpec)
                                 or os.fspath(override).strip()):
        return override, entry.flag, entry, entry.basename
    if env_val:
        return env_val, f"${entry.env_var}", entry, entry.basename
    return entry.spec, "default", entry, entry.basename


def resolve_checkpoint(name_or_spec: Union[str, PathLike, CheckpointSpec], *,
                       override: Optional[Union[PathLike, CheckpointSpec]] = None) -> Path:
    """Return a local file for a named default, a reference string, or a spec.

    For a name in :data:`DEFAULTS` the source is ``override`` (the CLI flag), else its env
    var, else the default Hub file. Anything else is resolved as given (``override`` still
    wins). Raises CheckpointError, naming the repo/file/revision and how to supply the file,
    when it cannot be had. Never falls back to another source.
    """
    source, origin, entry, known = _pick_source(name_or_spec, override)
    try:
        target = parse_checkpoint(source, known_filename=known)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{_origin_hint(entry, origin)}") from None
    if isinstance(target, Path):
        return target
    path = _download(target, entry, origin)
    if target.sha256:
        verify_sha256(path, target.sha256, what=str(target))
    if entry is not None and origin == "default" and entry.size is not None:
        size = path.stat().st_size
        if size != entry.size:
            raise CheckpointError(
                f"{path} (from {target}) has {size:,} bytes but the {entry.name} checkpoint "
                f"should have {entry.size:,}: the download is incomplete or the mirror changed. "
                f"Delete it and retry, or supply the file with {entry.flag} PATH / "
                f"{entry.env_var}=PATH.")
    return path


def _origin_hint(entry: Optional[DefaultCheckpoint], origin: str) -> str:
    if entry is None or origin == "default":
        return ""
    return (f" (the {entry.name} checkpoint was set by {origin}; fix that value or unset it "
            f"to use the default {entry.spec})")


def _download(spec: CheckpointSpec, entry: Optional[DefaultCheckpoint], origin: str) -> Path:
    from huggingface_hub import hf_hub_download

    offline = hub_offline()
    unreachable = not offline and not hub_reachable()
    cache = hub_cache_dir()
    try:
        return Path(hf_hub_download(repo_id=spec.repo_id, filename=spec.filename,
                                    revision=spec.revision, cache_dir=cache,
                                    local_files_only=offline or unreachable))
    except Exception as exc:  # network, auth, missing entry, offline cache miss ...
        raise CheckpointError(_missing_message(spec, entry, origin, offline, cache, exc,
                                               unreachable)) from exc


def _missing_message(spec: CheckpointSpec, entry: Optional[DefaultCheckpoint], origin: str,
                     offline: bool, cache: Optional[Path], exc: BaseException,
                     unreachable: bool = False) -> str:
    label = f"the {entry.name} checkpoint ({entry.description})" if entry else "checkpoint"
    rev = spec.revision or "default branch"
    where = cache if cache is not None else "the default Hugging Face cache"
    if offline:
        why = (f"HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache at "
               f"{where}")
    elif unreachable:
        why = (f"the Hub ({hub_endpoint()}) cannot be reached from this machine and the file "
               f"is not in the Hugging Face cache at {where}")
    else:
        text = str(exc).strip()
        why = f"download failed ({type(exc).__name__}: {text.splitlines()[0] if text else '-'})"
    msg = (f"cannot get {label}: file '{spec.filename}' from Hugging Face Hub repo "
           f"'{spec.repo_id}' (revision: {rev}); {why}.")
    if entry is not None:
        msg += (f" To use a local copy, pass {entry.flag} PATH or set {entry.env_var}=PATH "
                f"(PATH: a .pth/.safetensors file such as checkpoints/{entry.basename}, a "
                f"directory holding it, or another Hub reference hf://OWNER/REPO/FILE).")
        if origin != "default":
            msg += f" This reference came from {origin}."
    else:
        msg += " Pass a local file path instead, or make the file available in the cache."
    if offline:
        msg += " Or unset HF_HUB_OFFLINE to let it download."
    return msg
