"""``python -m ladtalk batch JOBS.csv|JOBS.jsonl --out-dir DIR``: many generate jobs at once.

Example (one presenter, three languages; a ``jobs.csv`` of ``face,audio,out,identity``)::

    python -m ladtalk batch jobs.csv --out-dir dubbed/
    torchrun --nproc-per-node 4 -m ladtalk batch jobs.csv --out-dir dubbed/   # 4 GPUs

Every row is checked before any model loads (all bad rows are listed; ``--strict`` stops
there); the models load once; a failing job is recorded and the rest go on; a re-run skips
complete jobs and redoes the rest; ``DIR/batch-results.json`` / ``.csv`` report every job. The
exit status is 0 when every job is complete, 1 otherwise. Columns and files: docs/batch.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ladtalk.commands.generate import add_shared_arguments, options_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("jobs", metavar="JOBS.csv|JOBS.jsonl",
                        help="one job per row: face, audio, optional out (file name in "
                             "--out-dir), identity ('none': Wav2Lip only) and per-job options "
                             "named like the generate flags (box, pads, fps, loop, detector, "
                             "identity_check, restore_strength, ...)")
    parser.add_argument("--out-dir", required=True, metavar="DIR",
                        help="folder of the outputs, the resume manifest (.ladtalk-batch/) and "
                             "batch-results.json / .csv")
    parser.add_argument("--strict", action="store_true",
                        help="stop before any model work when a row is bad (default: list the "
                             "bad rows, run the others, exit 1)")
    parser.add_argument("--fresh", action="store_true",
                        help="redo every job, also the ones a previous run completed")
    enh = parser.add_argument_group("enhancement")
    enh.add_argument("--identity", default=None, metavar="NAME_OR_DIR|none",
                     help="identity for rows whose identity cell is empty ('none': Wav2Lip "
                          "only); without it such rows are refused")
    add_shared_arguments(parser, enh, box=False)


class _Printer:
    """Progress over jobs (a line per job) and frames (in place on a terminal)."""

    def __init__(self, enabled: bool, rank: int, world: int):
        self.enabled, self.tty = enabled, sys.stderr.isatty()
        self.prefix = f"[rank {rank}] " if world > 1 else ""

    def __call__(self, ev) -> None:
        if not self.enabled:
            return
        head = f"{self.prefix}job {ev.index}/{ev.total} {ev.name}"
        if ev.kind == "job":
            print(f"{head}: started", file=sys.stderr, flush=True)
        elif ev.kind == "frames" and self.tty and ev.stage in ("detect", "generate"):
            end = "\n" if ev.done >= ev.count else ""
            print(f"\r{head}: {ev.stage} {ev.done}/{ev.count} frames", end=end,
                  file=sys.stderr, flush=True)
        elif ev.kind == "end":
            r = ev.record
            what = (f"done, {r.frames} frames in {r.seconds:.1f} s" if r.status == "done"
                    else f"FAILED: {r.error}")
            print(f"{head}: {what}", file=sys.stderr, flush=True)


def _summary(report) -> str:
    c = report.counts()
    lines = [f"batch: {c['done']} done, {c['skipped']} already complete, {c['failed']} failed, "
             f"{c['invalid']} invalid rows, {report.seconds:.1f} s on {report.world_size} "
             f"process{'es' if report.world_size > 1 else ''}; results in "
             f"{report.out_dir}/batch-results.json and .csv"]
    for r in report.jobs:
        if r.status in ("failed", "invalid"):
            lines.append(f"  line {r.line} {r.name or ''}: {r.status}: {r.error}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ladtalk._util import dist
    from ladtalk.batch import JobDefaults, read_jobs, run_batch
    from ladtalk.errors import InputError
    from ladtalk.generation.pipeline import DEFAULT_BATCH_SIZE, Pipeline

    ctx = dist.context()
    logging.basicConfig(level=logging.WARNING if args.quiet or not ctx.is_main else logging.INFO,
                        format="%(levelname)s: %(message)s")
    defaults = JobDefaults(identity=args.identity, options=options_from_args(args))
    jobs, bad = read_jobs(args.jobs, defaults)
    if bad and ctx.is_main:
        print(f"{len(bad)} bad row(s) in {args.jobs}:", file=sys.stderr)
        for row in bad:
            print(f"  {row.message()}", file=sys.stderr)
    if bad and args.strict:
        raise InputError(f"{len(bad)} bad row(s) in {args.jobs} (listed above); fix them or "
                         "drop --strict to run the other rows")
    device = ctx.device(args.device)
    dist.init(ctx, device)
    try:
        pipe = Pipeline(wav2lip=args.wav2lip, device=device, dtype=args.precision,
                        batch_size=args.batch_size or DEFAULT_BATCH_SIZE, backend=args.backend,
                        compile=args.compile)
        report = run_batch(jobs, bad, args.out_dir, pipe, ctx=ctx, fresh=args.fresh,
                           progress=_Printer(not args.quiet, ctx.rank, ctx.world_size))
        if ctx.is_main:
            report.write(args.out_dir)
            print(_summary(report))
        ok = dist.broadcast_object(report.ok)
    except BaseException:
        dist.shutdown(barrier=False)
        raise
    dist.shutdown()
    return 0 if ok else 1
