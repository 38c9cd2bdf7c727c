"""The jobs of a batch file (CSV or JSON Lines), each checked before any model is loaded.

One row per job: ``face``, ``audio``, optional ``out`` (the output's file name inside the
output folder; default ``FACE__AUDIO.mp4``), ``identity`` (a name or folder, or ``none`` for
Wav2Lip only; empty: the command's ``--identity``) and per-job options named like the
``generate`` flags (:data:`OPTION_COLUMNS`). Relative paths are read from the batch file's
folder. :func:`read_jobs` returns the good jobs and every bad row with all its problems, so a
user fixes the file once, not row by row.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ladtalk._util.jsonsafe import to_jsonable
from ladtalk._util.paths import PathLike
from ladtalk.errors import InputError, LadTalkError
from ladtalk.generation.options import GenerateOptions
from ladtalk.generation.track import FileStamp
from ladtalk.identities.store import resolve_identity
from ladtalk.media.probe import probe
from ladtalk.models.sovqae import WEIGHTS_NAME

#: "identity" cell meaning Wav2Lip only (as ``generate --no-enhance``)
NO_IDENTITY = ("none", "no-enhance", "wav2lip")
#: the output containers a job may write
OUT_SUFFIXES = (".mp4", ".mov", ".mkv")


def _floats(n: int) -> Callable[[Any], Tuple[float, ...]]:
    def parse(v: Any) -> Tuple[float, ...]:
        vals = v if isinstance(v, (list, tuple)) else str(v).replace(",", " ").split()
        if len(vals) != n:
            raise ValueError(f"needs {n} numbers, got {v!r}")
        return tuple(float(x) for x in vals)
    return parse


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {v!r}")


#: per-job option columns -> (GenerateOptions field, parser of a cell)
OPTION_COLUMNS: Dict[str, Tuple[str, Callable[[Any], Any]]] = {
    "detector": ("detector", str), "box": ("box", _floats(4)),
    "pads": ("pads", lambda v: tuple(int(x) for x in _floats(4)(v))),
    "smooth": ("smooth", _bool), "resize_factor": ("resize_factor", int),
    "fps": ("fps", float), "loop": ("loop", str), "batch_size": ("batch_size", int),
    "identity_check": ("identity_check", str), "restore_strength": ("restore_strength", str),
    "crf": ("crf", int),
}
COLUMNS = ("face", "audio", "out", "identity", *OPTION_COLUMNS)


@dataclass
class Job:
    """One checked job: inputs, output name, identity (None: Wav2Lip only) and options."""

    line: int
    name: str
    face: Path
    audio: Path
    identity: Optional[str]
    options: GenerateOptions
    fingerprint: str = ""

    def to_json(self) -> Dict[str, Any]:
        return {"line": self.line, "name": self.name, "face": str(self.face),
                "audio": str(self.audio), "identity": self.identity}


@dataclass(frozen=True)
class BadRow:
    """A row that cannot run, with every problem found in it."""

    line: int
    name: str
    problems: Tuple[str, ...]

    def message(self) -> str:
        return f"line {self.line}" + (f" ({self.name})" if self.name else "") + ": " + \
            "; ".join(self.problems)


@dataclass
class JobDefaults:
    """What a row leaves out: the command's ``--identity`` and generation options."""

    identity: Optional[str] = None
    options: GenerateOptions = field(default_factory=GenerateOptions)


def _rows(path: Path) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """``(line number, row)`` of a CSV (header first) or JSON Lines file."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    yield n, {"__error__": f"not JSON ({exc})"}
                    continue
                yield n, row if isinstance(row, dict) else {"__error__": "not a JSON object"}
        return
    if path.suffix.lower() != ".csv":
        raise InputError(f"{path}: a batch file is .csv (with a header row) or .jsonl (one JSON "
                         "object per line)")
    reader = csv.DictReader(line for line in text.splitlines(True)
                            if line.strip() and not line.lstrip().startswith("#"))
    unknown = [c for c in reader.fieldnames or [] if c and c.strip() not in COLUMNS]
    if unknown or "face" not in (reader.fieldnames or []):
        raise InputError(f"{path}: unknown or missing columns ({', '.join(unknown) or 'face'}); "
                         f"the header names some of: {', '.join(COLUMNS)} (face and audio "
                         "required)")
    for row in reader:
        extra = row.pop(None, None)
        clean = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if extra:
            clean["__error__"] = f"{len(extra)} more cells than the header has columns"
        yield reader.line_num, {k: v for k, v in clean.items() if v != ""}


def _path(base: Path, v: Any) -> Path:
    p = Path(str(v)).expanduser()
    return p if p.is_absolute() else base / p


def _check_name(name: str) -> Optional[str]:
    if Path(name).name != name or name in ("", ".", "..") or name.startswith("."):
        return f"out {name!r} must be a plain file name (no folders, not hidden)"
    if Path(name).suffix.lower() not in OUT_SUFFIXES:
        return f"out {name!r} must end in {' / '.join(OUT_SUFFIXES)}"
    return None


def fingerprint(job: Job) -> str:
    """What a finished output depends on: the inputs' files (path, size, time), the identity's
    weights, and the options. A changed row or input makes its old output stale."""
    ident = None
    if job.identity is not None:
        ident = astuple(FileStamp.of(resolve_identity(job.identity) / WEIGHTS_NAME))
    opts = {k: v for k, v in to_jsonable(job.options).items()
            if k not in ("temp_dir", "track_cache")}  # neither changes the output
    text = json.dumps({"face": astuple(FileStamp.of(job.face)),
                       "audio": astuple(FileStamp.of(job.audio)), "identity": ident,
                       "options": opts, "name": job.name}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _parse_row(row: Dict[str, Any], base: Path, defaults: JobDefaults
               ) -> Tuple[Dict[str, Any], List[str]]:
    problems: List[str] = [row.pop("__error__")] if "__error__" in row else []
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)}")
    parsed: Dict[str, Any] = {}
    for col in ("face", "audio"):
        if not row.get(col):
            problems.append(f"no {col}")
        else:
            parsed[col] = _path(base, row[col])
    changes: Dict[str, Any] = {}
    for col, (attr, parse) in OPTION_COLUMNS.items():
        if col in row:
            try:
                changes[attr] = parse(row[col])
            except (TypeError, ValueError) as exc:
                problems.append(f"{col}: {exc}")
    parsed["options"] = replace(defaults.options, **changes)
    ident = row.get("identity", defaults.identity)
    parsed["identity"] = None if ident is None or str(ident).lower() in NO_IDENTITY else str(ident)
    if ident is None:
        problems.append("no identity: give a name or folder, or 'none' for Wav2Lip only (or "
                        "pass --identity for every row that leaves it empty)")
    parsed["out"] = row.get("out")
    return parsed, problems


def _check_inputs(parsed: Dict[str, Any], problems: List[str],
                  seen: Dict[Tuple[str, Path], Optional[str]]) -> None:
    """Probe the files, resolve the identity and validate the options (all problems kept).
    ``seen``: the problem (or None) of each (column, file) probed already, so a face shared
    by many rows is probed once."""
    checks = {"face": lambda p: probe(p),
              "audio": lambda p: _require_audio(probe(p, require_video=False))}
    for col, check in checks.items():
        if col not in parsed:
            continue
        key = (col, parsed[col])
        if key not in seen:
            try:
                check(parsed[col])
                seen[key] = None
            except LadTalkError as exc:
                seen[key] = f"{col}: {exc}"
        if seen[key]:
            problems.append(seen[key])
    if parsed["identity"] is not None:
        try:
            resolve_identity(parsed["identity"])
        except LadTalkError as exc:
            problems.append(f"identity: {exc}")
    try:
        parsed["options"] = replace(parsed["options"], identity=parsed["identity"]).validate()
    except LadTalkError as exc:
        problems.append(str(exc))


def _require_audio(info) -> None:
    if not info.has_audio:
        raise InputError(f"'{info.path}' has no audio stream")


def read_jobs(path: PathLike, defaults: Optional[JobDefaults] = None
              ) -> Tuple[List[Job], List[BadRow]]:
    """Every job of the batch file at ``path`` and every bad row (nothing is loaded or run).

    Raises :class:`InputError` for a file that is not a batch file at all (missing, unknown
    format, unknown CSV columns, no rows)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"batch file '{path}' does not exist")
    defaults = defaults or JobDefaults()
    base = path.resolve().parent
    jobs: List[Job] = []
    bad: List[BadRow] = []
    names: Dict[str, int] = {}
    seen: Dict[Tuple[str, Path], Optional[str]] = {}
    rows = list(_rows(path))
    if not rows:
        raise InputError(f"batch file '{path}' has no jobs")
    for line, row in rows:
        parsed, problems = _parse_row(dict(row), base, defaults)
        _check_inputs(parsed, problems, seen)
        name = parsed["out"] or (f"{parsed['face'].stem}__{parsed['audio'].stem}.mp4"
                                 if "face" in parsed and "audio" in parsed else "")
        if name and (why := _check_name(name)):
            problems.append(why)
        if name in names:
            problems.append(f"out {name!r} is already written by line {names[name]}")
        elif name:
            names[name] = line
        if problems:
            bad.append(BadRow(line, name, tuple(problems)))
            continue
        job = Job(line, name, parsed["face"], parsed["audio"], parsed["identity"],
                  parsed["options"])
        job.fingerprint = fingerprint(job)
        jobs.append(job)
    return jobs, bad


__all__ = ["BadRow", "COLUMNS", "Job", "JobDefaults", "NO_IDENTITY", "OPTION_COLUMNS",
           "fingerprint", "read_jobs"]
