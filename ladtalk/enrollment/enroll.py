"""Enroll an identity: fine-tune its SOVQAE on face crops of one video, time-budgeted.

The steps (checks, crops, model, training, evaluation, atomic save) and the loss are described
in ``docs/enrollment.md``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from ladtalk import __version__
from ladtalk._util import dist
from ladtalk._util.disk import check_free_space, enroll_disk_need
from ladtalk._util.dist import DistContext
from ladtalk._util.jsonsafe import parse_float
from ladtalk._util.paths import PathLike
from ladtalk._util.types import ProgressFn
from ladtalk.enrollment.calibrate import calibrate_and_measure
from ladtalk.enrollment.config import TrainConfig
from ladtalk.enrollment.data import CropSampler
from ladtalk.enrollment.distributed import rank_seed, setup_of
from ladtalk.enrollment.evaluate import evaluate_identity
from ladtalk.enrollment.loop import RunResult, save_identity, train_loop
from ladtalk.enrollment.plan import (
    CropPlan,
    crop_progress,
    crops_for,
    has_identity,
    load_model,
    plan_crops,
    resolve_train_config,
)
from ladtalk.enrollment.state import STATE_JSON, read_state_info
from ladtalk.enrollment.trainer import Trainer
from ladtalk.errors import InputError
from ladtalk.face.video_crops import FaceCrops, even_subset, split_holdout
from ladtalk.identities.meta import FramesInfo, IdentityMeta
from ladtalk.identities.store import store_path, validate_name
from ladtalk.media.resample import to_tensor01
from ladtalk.metrics.lpips import load_perceptual
from ladtalk.models.quantizer import codebook_min_distance
from ladtalk.models.sovqae import CONFIGS, SOVQAE, SOVQAEConfig


def _check_args(name: str, seconds, batch_size, config, resolution, holdout
                ) -> Tuple[Optional[SOVQAEConfig], Optional[str]]:
    """Refuse bad arguments before anything slow; ``(explicit config object, config name)``."""
    validate_name(name)
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise InputError(f"--seconds must be a positive number, got {seconds}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    model_cfg = config if isinstance(config, SOVQAEConfig) else None
    if model_cfg is not None:
        config = None
    elif config is not None and config not in CONFIGS:
        raise InputError(f"unknown SOVQAE config '{config}'; choose one of "
                         f"{', '.join(sorted(CONFIGS))}")
    if resolution is not None and (not isinstance(resolution, (int, np.integer))
                                   or not 16 <= int(resolution) <= 1024):
        raise InputError(f"--resolution must be a whole number of pixels in [16, 1024], got "
                         f"{resolution!r}")
    if not (0.0 <= holdout < 1.0):
        raise InputError(f"--holdout must be in [0, 1), got {holdout}")
    return model_cfg, config


def _check_model(model: SOVQAE, resolution: Optional[int]) -> None:
    if resolution is not None and int(resolution) != model.config.resolution:
        raise InputError(f"--resolution {resolution} differs from the identity's "
                         f"{model.config.resolution} px; pass --fresh to start it over at "
                         f"{resolution} px, or drop --resolution")
    f = model.downsample_factor
    if model.config.resolution % f:
        raise InputError(f"resolution {model.config.resolution} is not a multiple of the "
                         f"model's downsampling factor {f}")


@dataclass
class _Run:
    """Everything one enroll run carries from step to step."""

    name: str
    video: PathLike
    target: Path
    device: torch.device
    t_start: float
    crops: FaceCrops
    hold: FaceCrops
    cfg: TrainConfig
    config_name: str
    trainer: Trainer
    sampler: CropSampler
    resumed: bool
    init_src: Optional[str]
    perceptual_status: str
    t_crops: float
    distributed: Dict[str, Any] = field(default_factory=dict)


def _perceptual(cfg: TrainConfig, device: torch.device, verbose: bool):
    if cfg.perceptual_weight <= 0:
        return None, "perceptual loss off (weight 0)"
    perceptual, status = load_perceptual(device)
    if perceptual is not None and verbose:
        print(status, file=sys.stderr)
    return perceptual, status


def _trainer(model: SOVQAE, cfg: TrainConfig, dev: torch.device, train_crops: np.ndarray,
             prev_state: Optional[Path], state_info: Optional[Dict[str, Any]],
             pretrained: bool, ctx: DistContext) -> Tuple[Trainer, CropSampler, str]:
    perceptual, status = _perceptual(cfg, dev, ctx.is_main)
    # the trainer cuts patches itself, after degrading whole crops; each rank its own batches
    sampler = CropSampler(train_crops, cfg.batch_size, seed=rank_seed(cfg.seed, ctx))
    trainer = Trainer(model, cfg, dev, perceptual, ctx)
    if prev_state is not None:
        trainer.load_state(prev_state, sampler, state_info)
        trainer.warmup_from = trainer.step_count  # brief warm-up again after a resume
        if not ctx.is_main:  # the saved RNG streams are rank 0's: this rank draws its own
            sampler.gen.manual_seed(rank_seed(cfg.seed, ctx) + trainer.step_count)
            trainer.gen.manual_seed(rank_seed(cfg.seed + 1, ctx) + trainer.step_count)
    elif pretrained:
        trainer.kmeans_done = True  # pretrained codebook: no k-means re-init
    return trainer, sampler, status


def build_meta(run: _Run, result: RunResult, evaluation: Dict[str, Any],
               t_eval: float) -> IdentityMeta:
    """The identity's ``meta.json`` record after (part of) a run."""
    crops, hold, trainer = run.crops, run.hold, run.trainer
    q = trainer.model.quantize
    last = trainer.history[-1] if trainer.history else {}
    rec = evaluation.get("reconstruction", {})
    psnr = rec.get("psnr", result.holdout_psnr_during_training)
    return IdentityMeta(
        name=run.name, ladtalk_version=__version__, config_name=run.config_name,
        video=str(Path(run.video).name), resumed=run.resumed, init=run.init_src,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        steps=trainer.step_count, run_steps=result.run_steps,
        training_seconds=round(trainer.elapsed, 1),
        run_training_seconds=round(result.run_seconds, 1),
        crop_seconds=round(run.t_crops, 1), evaluation_seconds=round(t_eval, 1),
        total_seconds=round(time.time() - run.t_start, 1),
        frames=FramesInfo.from_json({
            **crops.summary(), "train": len(crops) - len(hold), "holdout": len(hold),
            "holdout_first_s": float(hold.timestamps()[0]) if len(hold) else None}),
        losses={k: v for k, v in last.items() if k not in ("step", "elapsed")},
        holdout_psnr=parse_float(psnr), holdout_ssim=parse_float(rec.get("ssim")),
        restoration={spec: {k: round(parse_float(v), 4) for k, v in d.items()}
                     for spec, d in evaluation.get("degradations", {}).items()},
        certificate=evaluation.get("certificate"),
        codebook={"d_C_all": float(codebook_min_distance(q).detach()), "n_embed": q.n_embed},
        perceptual=run.perceptual_status, train_config=run.cfg.to_dict(),
        history=trainer.history[-200:], distributed=dict(run.distributed) or None)


def _evaluate(run: _Run, result: RunResult, on_progress: Optional[ProgressFn]) -> IdentityMeta:
    """Holdout evaluation, fusion calibration and the W-vs-L measure, into the meta record."""
    t_eval = time.time()
    _emit(on_progress, {"phase": "evaluate", "step": run.trainer.step_count,
                        "elapsed": time.time() - run.t_start})
    evaluation: Dict[str, Any] = {}
    fusion_info: Dict[str, Any] = {}
    if len(run.hold):
        hold_final = to_tensor01(run.hold.crops[even_subset(len(run.hold), run.cfg.final_frames)])
        evaluation = evaluate_identity(run.trainer.model, hold_final, run.device)
        fusion_info = calibrate_and_measure(run.trainer.model, run.video, run.hold, run.cfg,
                                            run.device, run.trainer.perceptual)
    meta = build_meta(run, result, evaluation, time.time() - t_eval)
    return replace(meta, **fusion_info)


def _emit(on_progress: Optional[ProgressFn], info: Dict[str, Any]) -> None:
    if on_progress is not None:
        on_progress(dict(info))


def enroll(video: PathLike, name: str, seconds: Optional[float] = None,
           config: Optional[Union[str, SOVQAEConfig]] = None, init: Optional[str] = None,
           holdout: float = 0.1, out: Optional[PathLike] = None,
           detector: str = "auto", device=None, on_progress: Optional[ProgressFn] = None,
           batch_size: Optional[int] = None, fresh: bool = False, show_progress: bool = True,
           train_overrides: Optional[Dict[str, Any]] = None,
           resolution: Optional[int] = None) -> Path:
    """Enroll (or continue enrolling) identity ``name`` from ``video``; returns its directory.

    Arguments, progress phases and the resume / abort guarantees: ``docs/enrollment.md``.
    """
    t_start = time.time()
    model_cfg, config = _check_args(name, seconds, batch_size, config, resolution, holdout)
    target = Path(out).expanduser() if out is not None else store_path(name)
    ctx = dist.context()
    dev = ctx.device(device)  # cuda:LOCAL_RANK under torchrun
    dist.init(ctx, dev)
    progress = crop_progress(on_progress, t_start)
    with dist.rank_zero_first(ctx):  # detection and crops once, into the cache the others read
        prep = _prepare(video, target, config, fresh, dev, model_cfg, resolution, init,
                        dict(train_overrides or {}), detector, progress, seconds, batch_size)
    model, cfg, crops = prep.model, prep.cfg, prep.crops
    t_crops = time.time() - t_start
    # 3. data and trainer
    train_idx, hold_idx = split_holdout(len(crops), holdout)
    hold = crops.subset(hold_idx)
    hold_eval = to_tensor01(hold.crops[even_subset(len(hold), cfg.eval_frames)]) \
        if len(hold) and ctx.is_main else None
    if cfg.patch and cfg.patch % model.downsample_factor:
        cfg = replace(cfg, patch=0)
    trainer, sampler, status = _trainer(model, cfg, dev, crops.crops[train_idx],
                                        prep.prev_state, prep.state_info,
                                        prep.resumed or bool(prep.init_src), ctx)
    setup = setup_of(ctx, cfg.batch_size, cfg.lr, cfg.disc_lr)
    if ctx.enabled and ctx.is_main:
        print(f"distributed: {setup.world_size} processes ({setup.backend}), batch "
              f"{setup.per_rank_batch} per process = effective batch {setup.effective_batch}, "
              f"lr {setup.lr:g} (discriminator {setup.disc_lr:g}); rank 0 writes the identity",
              file=sys.stderr)
    run = _Run(name, video, target, dev, t_start, crops, hold, cfg, prep.config_name, trainer,
               sampler, prep.resumed, prep.init_src, status, t_crops, setup.to_json())
    # 4. train, 5. evaluate, 6. save (rank 0; the others wait for it)
    result = train_loop(trainer, sampler, hold_eval, cfg, on_progress, show_progress, target,
                        name, lambda r: replace(build_meta(run, r, {}, 0.0), partial=True), ctx)
    if ctx.is_main:
        meta = _evaluate(run, result, on_progress)
        _emit(on_progress, {"phase": "save", "step": trainer.step_count,
                            "elapsed": time.time() - t_start})
        save_identity(target, trainer, sampler, meta)
        _emit(on_progress, {"phase": "done", "step": trainer.step_count, "path": str(target),
                            "elapsed": time.time() - t_start, "holdout_psnr": meta.holdout_psnr})
    dist.barrier()
    return target


@dataclass
class _Prepared:
    crops: FaceCrops
    model: SOVQAE
    config_name: str
    resumed: bool
    init_src: Optional[str]
    prev_state: Optional[Path]
    state_info: Optional[Dict[str, Any]]
    cfg: TrainConfig


def _prepare(video, target: Path, config, fresh: bool, dev: torch.device, model_cfg,
             resolution, init, overrides: Dict[str, Any], detector: str, progress,
             seconds, batch_size) -> _Prepared:
    """Steps 1 and 2: the face crops, the model (new or resumed) and the train config."""
    # 1. crops first only for a new identity whose resolution follows the measured face size
    # (an existing identity keeps its own: its files are read once, by load_model below)
    plan = None if has_identity(target) and not fresh else plan_crops(
        target, config, fresh, dev, model_cfg, resolution, init, overrides)
    crops = crops_for(video, plan, detector, dev, progress) \
        if plan is not None and plan.resolution == "auto" else None
    resolution = crops.resolution if crops is not None else resolution
    # 2. model and train config
    model, config_name, resumed, init_src = load_model(target, fresh, config, init, dev,
                                                       model_cfg, resolution)
    _check_model(model, resolution)
    check_free_space(target.parent, enroll_disk_need(model), "the identity store", "enrolling")
    prev_state = target if resumed and (target / STATE_JSON).is_file() else None
    state_info = read_state_info(prev_state) if prev_state is not None else None
    cfg = resolve_train_config(config_name, model.config.resolution, state_info,
                               seconds=seconds, batch_size=batch_size, **overrides)
    if crops is None or crops.resolution != model.config.resolution:
        crops = crops_for(video, CropPlan(model.config.resolution, cfg.max_frames), detector,
                          dev, progress)
    return _Prepared(crops, model, config_name, resumed, init_src, prev_state, state_info, cfg)


__all__ = ["enroll", "build_meta"]
