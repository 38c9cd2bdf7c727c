"""Checkpoint resolution (local files or the Hugging Face Hub) and safe loading.

Where a checkpoint comes from
-----------------------------
Every pretrained network LaDTalk uses has a *named default* in :data:`DEFAULTS` (``wav2lip``,
``s3fd``, ``syncnet_lse``, ``wav2lip_expert``). Each default names a Hub file, an environment
variable and a CLI flag. :func:`resolve_checkpoint` picks the source in this order, and never
falls back silently to a lower one when a higher one fails:

1. the explicit ``override`` (what the user passed with the CLI flag, e.g. ``--wav2lip``);
2. the environment variable (e.g. ``LADTALK_WAV2LIP``);
3. the default Hub reference.

Checkpoint reference grammar (for flags, env vars, ``python -m ladtalk convert SRC``)
-----------------------------------------------------------------------------------
::

    ref      := local | hub
    local    := PATH                      an existing file, or a directory (see below)
    hub      := "hf://" REPO "/" FILE [ "@" REVISION ] [ "#sha256=" HEX64 ]
              | REPO ":" FILE [ "@" REVISION ] [ "#sha256=" HEX64 ]
    REPO     := OWNER "/" NAME            a Hub model repository id
    FILE     := path inside the repository, may contain "/" (e.g. checkpoints/s3fd.pth)
    REVISION := branch, tag or commit hash (text after the last "@" of the FILE part)

Examples: ``checkpoints/wav2lip_gan.pth``, ``~/models/`` (a directory),
``hf://Nekochu/Wav2Lip/wav2lip_gan.pth``, ``hf://owner/repo/sub/dir/w.pth@v1.0#sha256=ab12...``,
``owner/repo:sub/dir/w.pth@0123abcd...``.

An existing local path always wins over the ``REPO:FILE`` reading of the same string. A
directory resolves to, in order: ``<stem>.safetensors`` of the checkpoint's known file name,
the known file name itself, or else the single checkpoint file (``*.safetensors``, ``*.pth``,
``*.pt``, ``*.ckpt``, ``*.model``) directly inside it; several candidates are an error that
lists them.

Hub downloads go through ``huggingface_hub.hf_hub_download`` into the normal HF cache
(``HF_HUB_CACHE``, else ``HF_HOME/hub``, read at call time). With ``HF_HUB_OFFLINE=1`` only
the cache is consulted, and likewise when the Hub endpoint does not accept a connection
(:func:`hub_reachable`: an offline machine gets its answer at once instead of after
huggingface_hub's retries). A ``#sha256=`` suffix is verified after download.

Safe loading
------------
Nothing here ever unpickles arbitrary objects. ``.safetensors`` files are read with
safetensors; ``.pth/.pt/.ckpt/.model/.bin/.tar`` with ``torch.load(..., weights_only=True)``,
which refuses any pickle that references code. The first time a pickle checkpoint is loaded
its tensors are written to ``$LADTALK_HOME/converted/<sha256 of the file>.safetensors``
(keys as stored, prefix not yet stripped) and later loads read that file instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch

from ladtalk.errors import CheckpointError, InputError
from ladtalk._util.paths import converted_dir

PathLike = Union[str, "os.PathLike[str]"]

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".model", ".bin", ".tar")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_COLON_REF = re.compile(rf"^(?P<repo>{_REPO_PART}/{_REPO_PART}):(?P<rest>[^/\\].*)$")


# --------------------------------------------------------------------------------------------
# specs and the registry of defaults


@dataclass(frozen=True)
class CheckpointSpec:
    """A file in a Hugging Face Hub model repository.

    ``revision`` None means the repository's default branch; ``sha256`` (64 hex digits) is
    checked after download when given.
    """

    repo_id: str
    filename: str
    revision: Optional[str] = None
    sha256: Optional[str] = None

    def __post_init__(self) -> None:
        if self.sha256 is not None:
            if not _HEX64.match(self.sha256):
                raise InputError(f"checkpoint reference {self.repo_id}/{self.filename}: sha256 "
                                 f"must be 64 hex digits, got {self.sha256!r}")
            object.__setattr__(self, "sha256", self.sha256.lower())

    def __str__(self) -> str:
        text = f"hf://{self.repo_id}/{self.filename}"
        if self.revision:
            text += f"@{self.revision}"
        if self.sha256:
            text += f"#sha256={self.sha256}"
        return text


@dataclass(frozen=True)
class DefaultCheckpoint:
    """A named checkpoint: its default Hub file and the knobs that override it."""

    name: str
    spec: CheckpointSpec
    env_var: str
    flag: str
    description: str
    size: Optional[int] = None  # expected byte size of the default file (integrity check)
    note: str = ""

    @property
    def basename(self) -> str:
        return self.spec.filename.rsplit("/", 1)[-1]


_WAV2LIP_LICENCE = ("Wav2Lip weights are released for research / non-commercial use only "
                    "(see github.com/Rudrabha/Wav2Lip).")

DEFAULTS: Dict[str, DefaultCheckpoint] = {d.name: d for d in (
    DefaultCheckpoint(
        name="wav2lip",
        spec=CheckpointSpec("Nekochu/Wav2Lip", "wav2lip_gan.pth"),
        env_var="LADTALK_WAV2LIP", flag="--wav2lip",
        description="Wav2Lip generator (GAN variant, upstream wav2lip_gan.pth)",
        size=435_801_865, note=_WAV2LIP_LICENCE),
    DefaultCheckpoint(
        name="s3fd",
        spec=CheckpointSpec("camenduru/Wav2Lip", "checkpoints/s3fd-619a316812.pth"),
        env_var="LADTALK_S3FD", flag="--s3fd",
        description="S3FD face detector (face_alignment s3fd-619a316812.pth)"),
    DefaultCheckpoint(
        name="syncnet_lse",
        # syncnet_python's data/syncnet_v2.model (Oxford VGG). LatentSync mirrors it under
        # auxiliary/ on the Hub; not verified byte-for-byte here, so it stays overridable.
        spec=CheckpointSpec("ByteDance/LatentSync-1.6", "auxiliary/syncnet_v2.model"),
        env_var="LADTALK_SYNCNET", flag="--syncnet",
        description="SyncNet 'S' model for the LSE-C / LSE-D lip-sync metrics (syncnet_v2.model)",
        note="Hub mirror of the Oxford VGG file; point LADTALK_SYNCNET at your own copy of "
             "syncnet_v2.model if in doubt."),
    DefaultCheckpoint(
        name="wav2lip_expert",
        spec=CheckpointSpec("camenduru/Wav2Lip", "checkpoints/lipsync_expert.pth"),
        env_var="LADTALK_WAV2LIP_EXPERT", flag="--wav2lip-expert",
        description="Wav2Lip lip-sync expert discriminator (SyncNet_color, lipsync_expert.pth)",
        note=_WAV2LIP_LICENCE),
)}


# --------------------------------------------------------------------------------------------
# parsing


def parse_hub_reference(text: str) -> Optional[CheckpointSpec]:
    """Parse ``hf://REPO/FILE[@REV][#sha256=HEX]`` or ``REPO:FILE[@REV][#sha256=HEX]``.

    Returns None when ``text`` has neither form; raises InputError when it has one of the
    forms but is malformed (e.g. no file part, a bad hash).
    """
    text = text.strip()
    if text.startswith("hf://"):
        body = text[len("hf://"):]
        body, sha = _split_fragment(body, text)
        parts = body.split("/", 2)
        if len(parts) < 3 or not all(parts):
            raise InputError(f"invalid Hub reference {text!r}: expected "
                             "hf://OWNER/REPO/PATH/IN/REPO[@REVISION][#sha256=HEX]")
        repo_id, rest = f"{parts[0]}/{parts[1]}", parts[2]
    else:
        m = _COLON_REF.match(text)
        if not m:
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
    if key.strip().lower() != "sha256" or not _HEX64.match(value.strip()):
        raise InputError(f"invalid Hub reference {original!r}: the only supported suffix is "
                         "#sha256=<64 hex digits>")
    return body, value.strip().lower()


def parse_checkpoint(text: Union[PathLike, CheckpointSpec], *,
                     known_filename: Optional[str] = None) -> Union[Path, CheckpointSpec]:
    """Turn a user string into an existing local file :class:`Path` or a :class:`CheckpointSpec`.

    ``known_filename`` is the checkpoint's usual file name, used to pick a file inside a
    directory. See the module docstring for the grammar. Raises CheckpointError when a local
    path does not exist or a directory holds no / several candidates.
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


# --------------------------------------------------------------------------------------------
# resolution


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


#: endpoint -> (monotonic time of the probe, reachable); see :func:`hub_reachable`
_REACHABLE: Dict[str, Tuple[float, bool]] = {}
REACHABILITY_TTL_S = 60.0
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_endpoint() -> str:
    """The Hub endpoint huggingface_hub talks to (``HF_ENDPOINT``, read at its import)."""
    from huggingface_hub import constants
    return str(constants.ENDPOINT)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint accepts a TCP connection (probed once a minute at most).

    On a machine without network huggingface_hub retries every download for ~25 s before it
    gives up; this probe lets :func:`resolve_checkpoint` go straight to the cache there. With
    a proxy configured a direct connection says nothing, so the answer is True and
    huggingface_hub decides.
    """
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return True
    endpoint = hub_endpoint()
    now = time.monotonic()
    seen = _REACHABLE.get(endpoint)
    if seen is not None and now - seen[0] < REACHABILITY_TTL_S:
        return seen[1]
    from urllib.parse import urlsplit
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            ok = True
    except OSError:
        ok = False
    _REACHABLE[endpoint] = (now, ok)
    return ok


def resolve_checkpoint(name_or_spec: Union[str, PathLike, CheckpointSpec], *,
                       override: Optional[Union[PathLike, CheckpointSpec]] = None) -> Path:
    """Return a local file for a named default, a reference string, or a spec.

    For a name in :data:`DEFAULTS` the source is ``override`` (the CLI flag), else its env
    var, else the default Hub file. Anything else is resolved as given (``override`` still
    wins). Hub files are downloaded into the HF cache (cache only when ``HF_HUB_OFFLINE``).
    Raises CheckpointError, naming the repo/file/revision and how to supply the file, when it
    cannot be had. Never falls back to another source.
    """
    entry = DEFAULTS.get(name_or_spec) if isinstance(name_or_spec, str) else None
    if entry is not None:
        env_val = os.environ.get(entry.env_var, "").strip()
        if override is not None and (isinstance(override, CheckpointSpec)
                                     or os.fspath(override).strip()):
            source, origin = override, f"{entry.flag}"
        elif env_val:
            source, origin = env_val, f"${entry.env_var}"
        else:
            source, origin = entry.spec, "default"
        known = entry.basename
    else:
        source = override if override is not None else name_or_spec
        origin, known = "argument", None
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
    if entry is None:
        return ""
    if origin == "default":
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


# --------------------------------------------------------------------------------------------
# safe loading


def load_state_dict(path: PathLike, *, strip_prefix: Optional[str] = "module.",
                    use_cache: bool = True) -> Dict[str, torch.Tensor]:
    """Load a flat ``{key: tensor}`` state dict from ``path`` without executing any code.

    ``.safetensors`` is read directly. Pickle formats (``.pth/.pt/.ckpt/.model/...``) are read
    with ``weights_only=True``; a dict holding ``state_dict`` (upstream Wav2Lip training
    checkpoints, Lightning ``.ckpt``) is unwrapped, everything else in it is ignored. The
    unwrapped tensors are cached as safetensors under ``$LADTALK_HOME/converted`` (keyed by
    the file's sha256) when ``use_cache``. ``strip_prefix`` is removed from every key that
    has it (DataParallel's ``module.``); pass None to keep keys as stored.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        sd = _read_safetensors(p)
    elif suffix in PICKLE_SUFFIXES:
        sd = _load_pickle_cached(p) if use_cache else _load_pickle(p)
    else:
        raise CheckpointError(
            f"unsupported checkpoint file type '{p.suffix}' for {p}: expected one of "
            f"{', '.join(CHECKPOINT_SUFFIXES)}")
    return strip_key_prefix(sd, strip_prefix)


def converted_cache_path(path: PathLike) -> Path:
    """Where the safetensors copy of pickle checkpoint ``path`` is cached."""
    return converted_dir() / f"{file_sha256(path)}.safetensors"


def _load_pickle_cached(p: Path) -> Dict[str, torch.Tensor]:
    cached = converted_cache_path(p)
    if cached.is_file():
        try:
            return _read_safetensors(cached)
        except CheckpointError:
            warnings.warn(f"ignoring unreadable converted cache {cached}; re-converting {p}")
    sd = _load_pickle(p)
    try:
        save_safetensors(sd, cached, metadata={"source": p.name, "source_sha256":
                                               file_sha256(p)})
    except OSError as exc:
        warnings.warn(f"could not cache the converted checkpoint at {cached} ({exc}); {p} will "
                      "be converted again next time")
    return sd


def _read_safetensors(p: Path) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(p), device="cpu"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"cannot read safetensors checkpoint {p}: {exc}. The file is truncated or "
            "corrupt; delete it and download / convert it again.") from exc


def _unpickler_detail(msg: str) -> str:
    """The specific reason inside torch's long "Weights only load failed" message."""
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    for ln in lines:
        if re.search(r"global|unsupported|not allowed|blocked", ln, re.I) and \
                not ln.startswith(("Weights only load failed", "Check the documentation",
                                   "Please file an issue")):
            return ln
    return lines[-1] if lines else "no detail"


def _load_pickle(p: Path) -> Dict[str, torch.Tensor]:
    import pickle

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(str(exc))
        if re.search(r"global", detail, re.I):
            raise CheckpointError(
                f"{p} is not a plain tensor checkpoint: it references Python code or objects "
                f"({detail}). The weights-only loader refused it and nothing in it was "
                "executed. If you trust its source, extract its tensors into a plain state dict "
                "or .safetensors file yourself.") from exc
        raise CheckpointError(
            f"cannot read checkpoint {p}: the weights-only loader rejected it ({detail}); it is "
            "corrupt or truncated, or holds pickle content other than tensors. Nothing in it was "
            "executed. Delete it and download it again.") from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise CheckpointError(
            f"cannot read checkpoint {p}: the file is truncated or corrupt ({first}); "
            "delete it and download it again.") from exc
    return extract_state_dict(obj, source=p)


def extract_state_dict(obj: Any, *, source: PathLike = "<memory>") -> Dict[str, torch.Tensor]:
    """Pick the flat tensor dict out of a loaded checkpoint object.

    Accepts a flat ``{str: Tensor}`` mapping or a mapping with a ``state_dict`` entry (upstream
    Wav2Lip ``{"state_dict", "optimizer", "global_step", ...}``, Lightning ``.ckpt``). Any
    non-tensor leaf in the chosen dict is an error.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source} does not hold a state dict (found a {type(obj).__name__}); expected a "
            "mapping of parameter names to tensors")
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = obj["state_dict"]
    else:
        sd = obj
    bad = [(k, type(v).__name__) for k, v in sd.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(f"{k!r} ({t})" for k, t in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        top = ", ".join(repr(k) for k in list(obj.keys())[:8])
        raise CheckpointError(
            f"{source} is not a plain tensor state dict: {len(bad)} entries are not tensors "
            f"({shown}{more}). Top-level keys: {top}. Nothing in it was executed.")
    if not sd:
        raise CheckpointError(f"{source} holds an empty state dict")
    return dict(sd)


def strip_key_prefix(sd: Mapping[str, torch.Tensor],
                     prefix: Optional[str] = "module.") -> Dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that starts with it (others are kept as they are)."""
    if not prefix:
        return dict(sd)
    out: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        nk = k[len(prefix):] if k.startswith(prefix) else k
        if nk in out:
            raise CheckpointError(f"key {nk!r} appears both with and without the prefix "
                                  f"{prefix!r}; the checkpoint is inconsistent")
        out[nk] = v
    return out


def save_safetensors(sd: Mapping[str, torch.Tensor], dst: PathLike, *,
                     metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write ``sd`` to ``dst`` atomically (temp file in the same directory + os.replace)."""
    from safetensors.torch import save_file

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    seen = set()
    clean: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:  # safetensors refuses shared storage
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        clean[k] = t
    meta = {"format": "pt"}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        save_file(clean, str(tmp), metadata=meta)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dst


@dataclass(frozen=True)
class ConversionReport:
    src: Path
    dst: Path
    n_tensors: int
    n_elements: int
    n_parameters: int  # elements excluding BatchNorm running stats / counters


_BUFFER_LEAVES = ("running_mean", "running_var", "num_batches_tracked")


def count_parameters(sd: Mapping[str, torch.Tensor]) -> Tuple[int, int]:
    """(all elements, elements that are not BatchNorm running statistics)."""
    total = sum(int(t.numel()) for t in sd.values())
    params = sum(int(t.numel()) for k, t in sd.items()
                 if k.rsplit(".", 1)[-1] not in _BUFFER_LEAVES)
    return total, params


def convert_to_safetensors(src: PathLike, dst: PathLike, *,
                           strip_prefix: Optional[str] = "module.") -> ConversionReport:
    """Convert a checkpoint file (any supported format) to a clean ``.safetensors`` at ``dst``."""
    src_p = Path(src).expanduser()
    sd = load_state_dict(src_p, strip_prefix=strip_prefix, use_cache=False)
    dst_p = save_safetensors(sd, Path(dst).expanduser(), metadata={
        "source": src_p.name, "source_sha256": file_sha256(src_p)})
    total, params = count_parameters(sd)
    return ConversionReport(src_p, dst_p, len(sd), total, params)


# --------------------------------------------------------------------------------------------
# loading into a model


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *,
              source: PathLike, max_listed: int = 10) -> torch.nn.Module:
    """Strictly load ``state_dict`` into ``model``.

    On any mismatch raises CheckpointError naming ``source`` and listing (the first
    ``max_listed`` of) missing keys, unexpected keys and shape mismatches with their counts.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [(k, tuple(state_dict[k].shape), tuple(own[k].shape))
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        lines = [f"checkpoint {source} does not fit {type(model).__name__} "
                 f"({len(own)} tensors expected, {len(state_dict)} given):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_listing(missing, max_listed)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): "
                         f"{_listing(unexpected, max_listed)}")
        if shapes:
            shown = [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in shapes]
            lines.append(f"  shape mismatches ({len(shapes)}): {_listing(shown, max_listed)}")
        hint = _prefix_hint(missing, unexpected)
        lines.append(hint or "  Is this the right checkpoint for this model?")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(dict(state_dict), strict=True)
    return model


def _listing(items: List[str], n: int) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def _prefix_hint(missing: Iterable[str], unexpected: Iterable[str]) -> str:
    missing, unexpected = set(missing), list(unexpected)
    if not missing or not unexpected:
        return ""
    heads = {k.split(".", 1)[0] for k in unexpected if "." in k}
    if len(heads) == 1:
        head = next(iter(heads)) + "."
        if all(k.startswith(head) and k[len(head):] in missing for k in unexpected):
            return f"  hint: every checkpoint key has the extra prefix '{head}'; strip it."
    return ""


# --------------------------------------------------------------------------------------------
# CLI helper


def add_checkpoint_argument(parser: Any, name: str) -> None:
    """Add the override flag of default ``name`` (e.g. ``--wav2lip``) to an argparse parser.

    The value lands in ``args.<name>`` (None when not given); pass it to
    ``resolve_checkpoint(name, override=args.<name>)``.
    """
    entry = DEFAULTS[name]
    parser.add_argument(entry.flag, dest=name, default=None, metavar="CKPT",
                        help=f"{entry.description}: a file, a directory or a Hub reference "
                             f"(default: ${entry.env_var} if set, else {entry.spec})")
