"""What an enroll run starts from: the model, its config name, the train config, the crops.

:func:`prepare_crops` computes (and caches) exactly the crops :func:`ladtalk.enrollment.enroll`
will train on, so a caller can detect and crop on the CPU before a GPU run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from ladtalk._util.device import resolve_device
from ladtalk._util.paths import PathLike
from ladtalk._util.types import PhaseProgress, ProgressFn
from ladtalk.enrollment.config import TRAIN_PRESETS, TrainConfig
from ladtalk.enrollment.state import read_state_info
from ladtalk.errors import InputError
from ladtalk.face.video_crops import FaceCrops, extract_crops
from ladtalk.identities.meta import load_meta
from ladtalk.identities.store import is_identity_dir, resolve_identity, store_path, validate_name
from ladtalk.models.sovqae import (
    AUTO_RESOLUTION_CONFIGS,
    CONFIG_NAME,
    CONFIGS,
    SOVQAE,
    SOVQAEConfig,
    default_config_name,
    get_config,
)
from ladtalk.models.sovqae_io import load_sovqae

log = logging.getLogger(__name__)

_NON_ARCH = ("ema", "ema_decay", "ema_eps", "legacy", "resolution")


def same_architecture(a: SOVQAEConfig, b: SOVQAEConfig) -> bool:
    """Equal up to the resolution (the networks are convolutional) and codebook options."""
    da, db = a.to_dict(), b.to_dict()
    return all(da[k] == db[k] for k in da if k not in _NON_ARCH)


def config_name_of(cfg: SOVQAEConfig) -> str:
    """The named config an architecture belongs to, else ``"custom"``."""
    for name, known in CONFIGS.items():
        if same_architecture(known, cfg) and (
                name in AUTO_RESOLUTION_CONFIGS or known.resolution == cfg.resolution):
            return name
    return "custom"


def saved_config_name(target: Path, cfg: SOVQAEConfig) -> str:
    """The config name of a saved identity: its ``meta.json`` one while it still fits."""
    name = load_meta(target).config_name or config_name_of(cfg)
    if name in CONFIGS and not same_architecture(CONFIGS[name], cfg):
        name = config_name_of(cfg)  # e.g. an identity from before "cpu" changed
    return name


def resolve_train_config(config_name: str, resolution: int,
                         state_info: Optional[Mapping[str, Any]], **overrides: Any) -> TrainConfig:
    """The saved train config of a resumed identity (``state_info``: its parsed
    ``trainer_state.json``, :func:`read_state_info`), else the preset of its model config
    (custom configs: ``tiny`` up to 64 px, else ``cpu``), with non-None overrides applied.
    A resumed run gets its preset's default budget unless ``seconds`` is given."""
    preset = config_name if config_name in TRAIN_PRESETS else (
        "tiny" if resolution <= 64 else "cpu")
    base = TRAIN_PRESETS[preset]
    if state_info is not None:
        try:
            saved = state_info.get("train_config") or {}
            base = replace(TrainConfig.from_dict(saved), seconds=base.seconds)
        except (ValueError, TypeError):
            pass
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def has_identity(target: Path) -> bool:
    return is_identity_dir(target)


@dataclass(frozen=True)
class CropPlan:
    """The crops an enroll run uses: side in px (or ``"auto"``) and the most frames kept."""

    resolution: Union[int, str]
    max_frames: int


def plan_crops(target: Optional[Path], config: Optional[str], fresh: bool,
               device: torch.device, model_cfg: Optional[SOVQAEConfig] = None,
               resolution: Optional[int] = None, init: Optional[str] = None,
               train_overrides: Optional[Dict[str, Any]] = None) -> Optional[CropPlan]:
    """The crops of an enroll run into ``target`` (None: a new identity), known before
    loading weights; None for an ``--init`` run (its resolution comes with the checkpoint)."""
    overrides = dict(train_overrides or {})
    state_info = None
    if target is not None and has_identity(target) and not fresh:
        model_cfg = SOVQAEConfig.from_file(target / CONFIG_NAME)
        name = saved_config_name(target, model_cfg)
        state_info = read_state_info(target)
    elif init:
        return None
    elif model_cfg is not None:
        name = config_name_of(model_cfg)
    else:
        name = config or default_config_name(device)
        if resolution is None and name in AUTO_RESOLUTION_CONFIGS:
            max_frames = resolve_train_config(name, 0, None, **overrides).max_frames
            return CropPlan("auto", max_frames)
        model_cfg = _named_config(name, resolution)
    res = model_cfg.resolution
    return CropPlan(res, resolve_train_config(name, res, state_info, **overrides).max_frames)


def _named_config(name: str, resolution: Optional[int]) -> SOVQAEConfig:
    overrides = {"resolution": int(resolution)} if resolution else {}
    try:
        return get_config(name, **overrides)
    except ValueError as exc:
        raise InputError(f"--resolution {resolution} does not fit config '{name}': "
                         f"{exc}") from None


def crops_for(video: PathLike, plan: CropPlan, detector: str, device,
              progress: Optional[PhaseProgress] = None) -> FaceCrops:
    """The cached face crops of ``plan``: one call for :func:`prepare_crops` and enroll."""
    return extract_crops(video, plan.resolution, detector, device=device,
                         max_frames=plan.max_frames, progress=progress)


def prepare_crops(video: PathLike, name: Optional[str] = None,
                  config: Optional[Union[str, SOVQAEConfig]] = "auto",
                  detector: str = "auto", fresh: bool = False, device="cpu", *,
                  out: Optional[PathLike] = None, resolution: Optional[int] = None,
                  init: Optional[str] = None, train_overrides: Optional[Dict[str, Any]] = None,
                  progress: Optional[PhaseProgress] = None) -> Optional[FaceCrops]:
    """Detect and crop the face exactly as ``enroll`` with these arguments will (same
    resolution choice, same frames, same cache), so the later run reuses the cached crops.

    ``name`` None: a new identity. ``config`` "auto"/None: the default for ``device``
    (``cpu`` on CPU), as in enroll; ``device`` also runs the detector. Returns None for an
    ``init`` run (its crop size is known only once the checkpoint is loaded).
    """
    target = Path(out).expanduser() if out is not None else (
        store_path(validate_name(name)) if name is not None else None)
    cfg_name = None if config in (None, "", "auto") else config
    model_cfg = cfg_name if isinstance(cfg_name, SOVQAEConfig) else None
    plan = plan_crops(target, None if model_cfg else cfg_name, fresh, resolve_device(device),
                      model_cfg, resolution, init, train_overrides)
    if plan is None:
        return None
    return crops_for(video, plan, detector, device, progress)


def load_model(target: Path, fresh: bool, config: Optional[str], init: Optional[str],
               device: torch.device, model_cfg: Optional[SOVQAEConfig] = None,
               resolution: Optional[int] = None) -> Tuple[SOVQAE, str, bool, Optional[str]]:
    """``(model, config_name, resumed, init_source)`` of an enroll run."""
    if has_identity(target) and not fresh:
        model = SOVQAE.from_pretrained(target, device="cpu")
        name = saved_config_name(target, model.config)
        if config and config in CONFIGS and not same_architecture(get_config(config),
                                                                  model.config):
            raise InputError(f"identity at {target} was enrolled with config '{name}', not "
                             f"'{config}'; drop --config to continue training it, pass --fresh "
                             "to start it over, or use another --name")
        if init:
            log.warning("--init %s ignored: continuing the existing identity at %s (pass "
                        "--fresh to start over from --init)", init, target)
        return model, name, True, None
    if init:
        src: Union[str, Path] = init
        try:
            src = resolve_identity(init)
        except InputError:
            pass
        model = load_sovqae(src, device="cpu", config=get_config(config) if config else None)
        return model, config or config_name_of(model.config), False, str(init)
    if model_cfg is not None:
        return SOVQAE(model_cfg), config_name_of(model_cfg), False, None
    name = config or default_config_name(device)
    return SOVQAE(_named_config(name, resolution)), name, False, None


def crop_progress(on_progress: Optional[ProgressFn], t_start: float) -> PhaseProgress:
    """Adapt ``on_progress(dict)`` to ``extract_crops``' ``progress(phase, done, total)``."""
    def report(phase: str, done: int, total: int) -> None:
        if on_progress is not None:
            on_progress({"phase": phase, "done": done, "total": total,
                         "elapsed": time.time() - t_start})
    return report


__all__ = ["CropPlan", "plan_crops", "prepare_crops", "crops_for", "load_model",
           "resolve_train_config", "config_name_of", "same_architecture", "saved_config_name"]
