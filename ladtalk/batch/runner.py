"""Run the jobs of a batch with one set of models, isolating failures, resumable, sharded.

:func:`run_batch` takes checked jobs (:func:`ladtalk.batch.jobs.read_jobs`) and one
:class:`~ladtalk.generation.pipeline.Pipeline` (its models load once, on the first job, and
serve every job). Per job it removes the job's leftovers of a killed run, generates, and
writes its :class:`~ladtalk.batch.manifest.JobRecord`; an error fails that job only. The face
track of a face file is kept for the next job on the same face (and the on-disk track cache
serves later runs), so three audios on one face detect it once.

Under ``torchrun`` (:mod:`ladtalk._util.dist`) rank 0 decides which jobs still need doing,
the ranks share out the distinct faces and exchange their tracks (each face is detected
once), every rank takes every ``WORLD_SIZE``-th job, and rank 0 merges all records into one
:class:`BatchReport`.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ladtalk._util import dist
from ladtalk._util.atomic import write_json, write_text
from ladtalk._util.dist import DistContext
from ladtalk._util.paths import PathLike
from ladtalk.batch.jobs import BadRow, Job
from ladtalk.batch.manifest import JobRecord, Manifest
from ladtalk.errors import LadTalkError

log = logging.getLogger(__name__)

RESULTS_JSON = "batch-results.json"
RESULTS_CSV = "batch-results.csv"
REPORT_FORMAT = "ladtalk-batch-report/1"
#: job outcomes; the batch succeeded when every job is done or skipped (complete earlier)
STATUSES = ("done", "skipped", "failed", "invalid")
CSV_COLUMNS = ("line", "name", "status", "error", "seconds", "frames", "face", "audio",
               "identity", "rank", "warnings")


@dataclass(frozen=True)
class BatchEvent:
    """Progress of a batch: ``kind`` "job" (a job starts; ``index`` of ``total`` on this
    rank), "frames" (``stage`` ``done`` / ``count`` frames of it) or "end" (``record``)."""

    kind: str
    index: int
    total: int
    name: str
    rank: int = 0
    stage: str = ""
    done: int = 0
    count: int = 0
    record: Optional[JobRecord] = None


@dataclass
class BatchReport:
    """Every job's record (by line), the world size and the wall time of the batch."""

    jobs: List[JobRecord]
    world_size: int = 1
    seconds: float = 0.0
    out_dir: str = ""
    #: what the pipeline had loaded at the end (``Pipeline.loaded_models()``)
    models_loaded: Dict[str, Any] = field(default_factory=dict)
    #: seconds the ranks spent tracking the faces ahead of the jobs (torchrun only)
    track_seconds: float = 0.0

    def counts(self) -> Dict[str, int]:
        return {s: sum(r.status == s for r in self.jobs) for s in STATUSES}

    @property
    def ok(self) -> bool:
        return all(r.status in ("done", "skipped") for r in self.jobs)

    def to_json(self) -> Dict[str, Any]:
        return {"format": REPORT_FORMAT, "ok": self.ok, "counts": self.counts(),
                "world_size": self.world_size, "seconds": round(self.seconds, 3),
                "out_dir": self.out_dir, "models_loaded": self.models_loaded,
                "track_seconds": round(self.track_seconds, 3),
                "jobs": [asdict(r) for r in self.jobs]}

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        for r in self.jobs:
            row = asdict(r)
            row["warnings"] = " | ".join(r.warnings)
            row["seconds"] = round(r.seconds, 3)
            w.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
        return buf.getvalue()

    def write(self, out_dir: PathLike) -> List[Path]:
        """``batch-results.json`` and ``batch-results.csv`` in ``out_dir`` (atomically)."""
        out_dir = Path(out_dir)
        return [write_json(out_dir / RESULTS_JSON, self.to_json()),
                write_text(out_dir / RESULTS_CSV, self.to_csv())]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _base_record(job: Job, status: str, rank: int) -> JobRecord:
    return JobRecord(name=job.name, line=job.line, status=status, face=str(job.face),
                     audio=str(job.audio), identity=job.identity, fingerprint=job.fingerprint,
                     out=job.name, rank=rank)


def _run_one(job: Job, pipeline: Any, manifest: Manifest, tracks: Dict[str, Any],
             rank: int, frames: Callable[[str, int, int], None]) -> JobRecord:
    """Generate one job; any error becomes a failed record (the batch goes on)."""
    manifest.clear_leftovers(job.name)
    rec = _base_record(job, "failed", rank)
    out = manifest.out_dir / job.name
    face_key = str(job.face.resolve())
    options = replace(job.options, temp_dir=manifest.temp_dir())  # beside the outputs
    t0 = time.perf_counter()
    try:
        res = pipeline.run(job.face, job.audio, out, options, progress=frames,
                           track=tracks.get(face_key))
        tracks[face_key] = res.track
        rec.status, rec.frames, rec.out_bytes = "done", int(res.n_frames), out.stat().st_size
        rec.timings = {k: round(float(v), 4) for k, v in res.timings.items()}
        rec.warnings = list(res.warnings)
    except LadTalkError as exc:
        rec.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one job's failure must not end the batch
        log.exception("job %s (line %d) failed", job.name, job.line)
        rec.error = f"{type(exc).__name__}: {exc}"
    rec.seconds = time.perf_counter() - t0
    rec.finished = _now()
    manifest.write(rec)
    return rec


def _invalid(row: BadRow) -> JobRecord:
    return JobRecord(name=row.name, line=row.line, status="invalid",
                     error="; ".join(row.problems))


def _skipped(job: Job, manifest: Manifest) -> JobRecord:
    earlier = manifest.read(job.name)
    rec = _base_record(job, "skipped", earlier.rank if earlier else 0)
    if earlier is not None:
        for k in ("out_bytes", "frames", "timings", "seconds", "finished", "warnings"):
            setattr(rec, k, getattr(earlier, k))
    return rec


def run_batch(jobs: Sequence[Job], bad: Sequence[BadRow], out_dir: PathLike, pipeline: Any, *,
              ctx: Optional[DistContext] = None, fresh: bool = False,
              progress: Optional[Callable[[BatchEvent], None]] = None) -> BatchReport:
    """Run ``jobs`` into ``out_dir`` (this rank's share under torchrun); the merged report
    on rank 0 (the other ranks get their own part). ``fresh``: redo complete jobs too."""
    t0 = time.time()
    ctx = ctx or DistContext()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir)
    emit = progress or (lambda event: None)
    pending = None
    if ctx.is_main:
        manifest.clear_temp()  # what a killed run's generate calls left (no rank runs yet)
        pending = [j.name for j in jobs if fresh or manifest.complete(j) is None]
    pending = set(dist.broadcast_object(pending))  # every rank shards the same list
    todo = [j for j in jobs if j.name in pending]
    mine = todo[ctx.rank::ctx.world_size]
    if mine and hasattr(pipeline, "lipsyncer"):
        pipeline.lipsyncer  # noqa: B018 - load Wav2Lip now: a missing checkpoint stops the batch
    t_tracks = time.time()
    tracks = _shared_tracks(todo, pipeline, ctx) if ctx.enabled else {}
    t_tracks = time.time() - t_tracks
    records: List[JobRecord] = []
    for k, job in enumerate(mine, 1):
        emit(BatchEvent("job", k, len(mine), job.name, ctx.rank))

        def frames(stage: str, done: int, count: int, _k=k, _job=job) -> None:
            emit(BatchEvent("frames", _k, len(mine), _job.name, ctx.rank, stage, done, count))

        rec = _run_one(job, pipeline, manifest, tracks, ctx.rank, frames)
        records.append(rec)
        emit(BatchEvent("end", k, len(mine), job.name, ctx.rank, record=rec))
    gathered = dist.all_gather_object([asdict(r) for r in records])
    ran = {d["name"]: JobRecord(**d) for part in gathered for d in part}
    merged = [ran[j.name] if j.name in ran else _skipped(j, manifest) for j in jobs]
    merged += [_invalid(b) for b in bad]
    merged.sort(key=lambda r: r.line)
    if not ctx.is_main:
        merged = records
    loaded = pipeline.loaded_models() if hasattr(pipeline, "loaded_models") else {}
    return BatchReport(merged, ctx.world_size, time.time() - t0, str(out_dir), loaded,
                       t_tracks)


def _shared_tracks(todo: Sequence[Job], pipeline: Any, ctx: DistContext) -> Dict[str, Any]:
    """Under torchrun: every distinct face of the remaining jobs is tracked by one rank, and
    every rank gets every track, so a face shared by jobs on several ranks is detected once
    (also with ``--no-cache``, and across nodes that share no cache)."""
    firsts: Dict[str, Job] = {}
    for job in todo:
        firsts.setdefault(str(job.face.resolve()), job)
    local: Dict[str, Any] = {}
    for key, job in list(firsts.items())[ctx.rank::ctx.world_size]:
        try:
            local[key] = pipeline.track(job.face, job.options)
        except Exception as exc:  # noqa: BLE001 - the job itself reports it when it runs
            log.info("no face track of %s ahead of its jobs (%s)", job.face, exc)
    merged: Dict[str, Any] = {}
    for part in dist.all_gather_object(local):
        merged.update(part)
    return merged


__all__ = ["BatchEvent", "BatchReport", "CSV_COLUMNS", "RESULTS_CSV", "RESULTS_JSON",
           "STATUSES", "run_batch"]
