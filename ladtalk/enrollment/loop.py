"""The time-budgeted training loop of one enroll run, and the atomic identity save."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from ladtalk._util.atomic import atomic_dir, write_json
from ladtalk._util.dist import DistContext
from ladtalk._util.types import ProgressFn
from ladtalk.enrollment.config import TrainConfig
from ladtalk.enrollment.data import CropSampler
from ladtalk.enrollment.distributed import agree_on_time
from ladtalk.enrollment.trainer import Trainer
from ladtalk.identities.meta import META_JSON, IdentityMeta


def save_identity(target: Path, trainer: Trainer, sampler: Optional[CropSampler],
                  meta: IdentityMeta) -> None:
    """Write weights, trainer state and ``meta.json``; the old identity stays until done."""
    with atomic_dir(target) as tmp:
        trainer.model.save_pretrained(tmp)
        trainer.save_state(tmp, sampler)
        write_json(tmp / META_JSON, meta, sort_keys=True)
    trainer.model.train()


@dataclass
class RunResult:
    """What one run of the loop did (the run's own steps and seconds)."""

    run_seconds: float = 0.0
    run_steps: int = 0
    holdout_psnr_during_training: Optional[float] = None


@dataclass
class _Averages:
    sums: Dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, terms: Dict[str, float]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def take(self) -> Dict[str, float]:
        avg = {k: round(v / max(1, self.count), 5) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return avg


#: the first holdout evaluation of a run comes after this fraction of its budget (time, or
#: steps when ``max_steps`` caps it), then one every ``1 / EVAL_PER_RUN`` of it, at most every
#: ``cfg.eval_seconds``, with a gap of at least ``EVAL_COST_RATIO`` times the last one's cost
#: (so evaluating takes at most a tenth of the training time)
FIRST_EVAL_FRACTION = 0.1
EVAL_PER_RUN = 8
EVAL_COST_RATIO = 9.0


class EvalSchedule:
    """When one run evaluates the holdout: early (so the progress line shows a live holdout
    PSNR from the first tenth of the budget on), then periodically, and at the last step.

    ``due(elapsed, run_steps)`` is asked after each step; ``done(elapsed, run_steps, cost)``
    records an evaluation that took ``cost`` seconds.
    """

    def __init__(self, budget: float, max_steps: int, eval_seconds: float) -> None:
        self.interval = max(1e-3, min(float(eval_seconds), float(budget) / EVAL_PER_RUN))
        self.next_s = min(FIRST_EVAL_FRACTION * float(budget), self.interval)
        self.step_interval = max(1, int(max_steps) // EVAL_PER_RUN) if max_steps else 0
        self.next_step = max(1, round(FIRST_EVAL_FRACTION * max_steps)) if max_steps else 0

    def due(self, elapsed: float, run_steps: int) -> bool:
        return elapsed >= self.next_s or bool(self.next_step and run_steps >= self.next_step)

    def done(self, elapsed: float, run_steps: int, cost: float) -> None:
        self.next_s = elapsed + max(self.interval, EVAL_COST_RATIO * float(cost))
        if self.step_interval:
            self.next_step = run_steps + self.step_interval


def _evaluate(trainer: Trainer, hold_eval: torch.Tensor, elapsed: float,
              avg: _Averages) -> float:
    """Holdout PSNR now, recorded in the trainer's history."""
    psnr = trainer.holdout_psnr(hold_eval)
    trainer.history.append({"step": trainer.step_count,
                            "elapsed": round(trainer.elapsed + elapsed, 1),
                            "holdout_psnr": round(psnr, 3), **avg.take()})
    return psnr


def train_loop(trainer: Trainer, sampler: CropSampler, hold_eval: Optional[torch.Tensor],
               cfg: TrainConfig, on_progress: Optional[ProgressFn], show_progress: bool,
               target: Path, name: str,
               partial_meta: Callable[[RunResult], IdentityMeta],
               ctx: Optional[DistContext] = None) -> RunResult:
    """Step until ``cfg.seconds`` (or ``cfg.max_steps``) is spent; evaluate the holdout as
    :class:`EvalSchedule` says; save a partial identity every ``checkpoint_seconds``.

    With several ranks (``ctx``) rank 0's clock sets the progress and the end for all, and
    only rank 0 evaluates (pass ``hold_eval=None`` elsewhere) and writes checkpoints."""
    from tqdm.auto import tqdm

    main = (ctx or DistContext()).is_main

    budget, start, steps0 = float(cfg.seconds), time.time(), trainer.step_count
    last_ckpt = start
    schedule = EvalSchedule(budget, cfg.max_steps, cfg.eval_seconds)
    psnr: Optional[float] = None
    avg = _Averages()

    def done_steps() -> int:
        return trainer.step_count - steps0

    bar = tqdm(total=round(budget), unit="s", desc=f"enroll {name}",
               disable=not (show_progress and main),
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{postfix}]")
    try:
        while True:
            now = time.time()
            stop = now - start >= budget or bool(cfg.max_steps and done_steps() >= cfg.max_steps)
            progress = (now - start) / budget
            if cfg.max_steps:
                progress = max(progress, done_steps() / cfg.max_steps)
            progress, stop = agree_on_time(progress, stop, trainer.device)
            if stop:
                break
            terms = trainer.step(sampler, progress=progress)
            avg.add(terms)
            now = time.time()
            elapsed = now - start
            info: Dict[str, Any] = {"phase": "train", "step": trainer.step_count,
                                    "run_steps": done_steps(), "elapsed": elapsed,
                                    "budget": budget, **terms}
            last_step = elapsed >= budget or (cfg.max_steps and done_steps() >= cfg.max_steps)
            if hold_eval is not None and (last_step or schedule.due(elapsed, done_steps())):
                psnr = info["holdout_psnr"] = _evaluate(trainer, hold_eval, elapsed, avg)
                schedule.done(time.time() - start, done_steps(), time.time() - now)
            bar.n = min(round(elapsed), bar.total)
            bar.set_postfix_str(f"step {trainer.step_count} rec {terms['rec']:.4f}"
                                + (f" holdout {psnr:.2f} dB" if psnr else ""), refresh=True)
            if on_progress is not None:
                on_progress(dict(info))
            if main and cfg.checkpoint_seconds > 0 and now - last_ckpt >= cfg.checkpoint_seconds:
                trainer.elapsed += now - last_ckpt
                save_identity(target, trainer, sampler,
                              partial_meta(RunResult(now - start, done_steps(), psnr)))
                last_ckpt = time.time()
    finally:
        bar.close()
    trainer.elapsed += time.time() - last_ckpt
    if hold_eval is not None and psnr is None:
        psnr = trainer.holdout_psnr(hold_eval)
    return RunResult(time.time() - start, done_steps(), psnr)


__all__ = ["train_loop", "save_identity", "RunResult", "EvalSchedule"]
