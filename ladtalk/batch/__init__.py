"""Batch dubbing: many (face, audio) jobs with one set of models, resumable, sharded over
``torchrun`` ranks. ``python -m ladtalk batch JOBS.csv --out-dir DIR``; docs/batch.md."""

from ladtalk.batch.jobs import BadRow, Job, JobDefaults, read_jobs
from ladtalk.batch.manifest import JobRecord, Manifest
from ladtalk.batch.runner import BatchEvent, BatchReport, run_batch

__all__ = ["BadRow", "BatchEvent", "BatchReport", "Job", "JobDefaults", "JobRecord", "Manifest",
           "read_jobs", "run_batch"]
