"""The batch manifest: what each job left in the output folder, so a re-run can resume.

``OUT_DIR/.ladtalk-batch/jobs/NAME.json`` holds one :class:`JobRecord` per job, written
atomically after the job's output was renamed into place. Each job has its own file, so
parallel ranks never write the same one. A job is complete when its record says ``done``,
its fingerprint (:func:`ladtalk.batch.jobs.fingerprint`) matches the row, and the output file
is there with the recorded size. Anything else (no record, a failure, a changed row, an output
that went missing) is done again, after the job's own ``.tmp-NAME-*`` leftovers of a killed
run are removed.
"""

from __future__ import annotations

import glob
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

from ladtalk._util.atomic import TMP_PREFIX, write_json
from ladtalk._util.disk import remove_path
from ladtalk._util.paths import PathLike
from ladtalk.batch.jobs import Job

log = logging.getLogger(__name__)

STATE_DIR = ".ladtalk-batch"
RECORD_FORMAT = "ladtalk-batch-job/1"


@dataclass
class JobRecord:
    """The outcome of one job (``status``: done, failed, skipped, invalid)."""

    name: str
    line: int
    status: str
    face: str = ""
    audio: str = ""
    identity: Optional[str] = None
    fingerprint: str = ""
    out: str = ""
    out_bytes: int = 0
    error: str = ""
    seconds: float = 0.0
    frames: int = 0
    timings: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    rank: int = 0
    finished: str = ""

    def to_json(self) -> Dict[str, Any]:
        return {"format": RECORD_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "JobRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class Manifest:
    """The per-job records of one output folder."""

    def __init__(self, out_dir: PathLike):
        self.out_dir = Path(out_dir)
        self.root = self.out_dir / STATE_DIR / "jobs"

    def temp_dir(self) -> Path:
        """The parent of the jobs' per-call temp folders (in the batch's own folder, so a
        killed run's leftovers are found and removed by the next run)."""
        path = self.out_dir / STATE_DIR / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clear_temp(self) -> None:
        """Remove every temp folder of earlier runs (call it while no job runs)."""
        shutil.rmtree(self.out_dir / STATE_DIR / "tmp", ignore_errors=True)

    def record_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def read(self, name: str) -> Optional[JobRecord]:
        """The job's record, or None (missing or unreadable: the job runs again)."""
        path = self.record_path(name)
        try:
            return JobRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable batch record %s (%s); the job runs again", path, exc)
            return None

    def write(self, record: JobRecord) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.record_path(record.name), record, sort_keys=True)

    def complete(self, job: Job) -> Optional[JobRecord]:
        """The record of ``job`` when its output is complete and current, else None."""
        rec = self.read(job.name)
        if rec is None or rec.status != "done" or rec.fingerprint != job.fingerprint:
            return None
        out = self.out_dir / job.name
        try:
            size = out.stat().st_size
        except OSError:
            return None
        return rec if size == rec.out_bytes and size > 0 else None

    def clear_leftovers(self, name: str) -> List[Path]:
        """Remove ``.tmp-NAME-*`` files a killed run of this job left beside its output."""
        removed = []
        for p in self.out_dir.glob(f"{TMP_PREFIX}{glob.escape(name)}-*"):
            remove_path(p)
            removed.append(p)
        return removed


__all__ = ["JobRecord", "Manifest", "RECORD_FORMAT", "STATE_DIR"]
