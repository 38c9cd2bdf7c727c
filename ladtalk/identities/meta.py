"""Typed ``meta.json`` of an identity: what enrollment measured and recorded.

:meth:`IdentityMeta.from_json` reads every layout written so far (missing keys take their
defaults, unknown keys are kept in ``extra`` and written back by :meth:`IdentityMeta.to_json`).
Sub-records produced by higher layers (certificate, quality, fusion) stay plain dicts here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ladtalk._util.jsonsafe import parse_float, to_jsonable

META_JSON = "meta.json"


def _opt_float(v: Any) -> Optional[float]:
    try:
        return parse_float(v, None)
    except (TypeError, ValueError):
        return None


def _dict(v: Any) -> Dict[str, Any]:
    return dict(v) if isinstance(v, dict) else {}


def _opt_dict(v: Any) -> Optional[Dict[str, Any]]:
    return dict(v) if isinstance(v, dict) else None


@dataclass
class FramesInfo:
    """The ``frames`` record: which crops were used, and where the holdout starts."""

    crops: int = 0
    train: int = 0
    holdout: int = 0
    holdout_first_s: Optional[float] = None
    resolution: Optional[int] = None
    detector: Optional[str] = None
    fps: Optional[float] = None
    face_px: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return to_jsonable({**self.extra, **out})

    @classmethod
    def from_json(cls, d: Any) -> "FramesInfo":
        d = _dict(d)
        known = {f.name for f in fields(cls)} - {"extra"}
        res = d.get("resolution")
        return cls(crops=int(d.get("crops") or 0), train=int(d.get("train") or 0),
                   holdout=int(d.get("holdout") or 0),
                   holdout_first_s=_opt_float(d.get("holdout_first_s")),
                   resolution=int(res) if res is not None else None,
                   detector=d.get("detector"), fps=_opt_float(d.get("fps")),
                   face_px=_opt_float(d.get("face_px")),
                   extra={k: v for k, v in d.items() if k not in known})


@dataclass
class IdentityMeta:
    """One identity's ``meta.json``."""

    name: str = ""
    ladtalk_version: Optional[str] = None
    config_name: Optional[str] = None
    video: Optional[str] = None
    resumed: bool = False
    init: Optional[str] = None
    created: Optional[str] = None
    steps: int = 0
    run_steps: int = 0
    training_seconds: float = 0.0
    run_training_seconds: float = 0.0
    crop_seconds: float = 0.0
    evaluation_seconds: float = 0.0
    total_seconds: float = 0.0
    frames: FramesInfo = field(default_factory=FramesInfo)
    losses: Dict[str, Any] = field(default_factory=dict)
    holdout_psnr: Optional[float] = None
    holdout_ssim: Optional[float] = None
    #: per degradation spec: psnr/ssim of the degraded and restored holdout crops, and gains
    restoration: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: the robustness certificate summary (``Certificate.to_json()`` layout)
    certificate: Optional[Dict[str, Any]] = None
    codebook: Dict[str, Any] = field(default_factory=dict)
    perceptual: Optional[str] = None
    train_config: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    #: calibrated fusion strengths (``FusionConfig.to_dict()``) and how they were chosen
    fusion: Optional[Dict[str, Any]] = None
    fusion_calibration: Optional[Dict[str, Any]] = None
    #: held-out W-vs-L quality report (``QualityReport.to_json()``)
    quality: Optional[Dict[str, Any]] = None
    identity_match_reference: Optional[Dict[str, Any]] = None
    #: how training ran: ``world_size``, ``per_rank_batch``, ``effective_batch``, ``backend``,
    #: ``lr`` (:class:`ladtalk.enrollment.distributed.DistributedSetup`)
    distributed: Optional[Dict[str, Any]] = None
    #: True while training is still going (a periodic checkpoint)
    partial: bool = False
    #: keys this version does not know (from older or newer layouts), written back as they are
    extra: Dict[str, Any] = field(default_factory=dict)

    # keys written only when set, so a fresh enrollment writes the same keys as before
    _OPTIONAL = ("partial", "history", "fusion", "fusion_calibration", "quality", "distributed",
                 "identity_match_reference")

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = dict(self.extra)
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "extra" or (f.name in self._OPTIONAL and not v):
                continue
            out[f.name] = v
        return to_jsonable(out)

    @classmethod
    def from_json(cls, d: Any) -> "IdentityMeta":
        d = _dict(d)
        known = {f.name for f in fields(cls)} - {"extra"}
        opt_str = {k: (str(d[k]) if d.get(k) is not None else None)
                   for k in ("ladtalk_version", "config_name", "video", "init", "created",
                             "perceptual")}
        secs = {k: _opt_float(d.get(k)) or 0.0
                for k in ("training_seconds", "run_training_seconds", "crop_seconds",
                          "evaluation_seconds", "total_seconds")}
        return cls(
            name=str(d.get("name") or ""), resumed=bool(d.get("resumed", False)),
            steps=int(d.get("steps") or 0), run_steps=int(d.get("run_steps") or 0),
            frames=FramesInfo.from_json(d.get("frames")), losses=_dict(d.get("losses")),
            holdout_psnr=_opt_float(d.get("holdout_psnr")),
            holdout_ssim=_opt_float(d.get("holdout_ssim")),
            restoration=_dict(d.get("restoration")),
            certificate=_opt_dict(d.get("certificate")), codebook=_dict(d.get("codebook")),
            train_config=_dict(d.get("train_config")),
            history=list(d.get("history") or []),
            fusion=_opt_dict(d.get("fusion")),
            fusion_calibration=_opt_dict(d.get("fusion_calibration")),
            quality=_opt_dict(d.get("quality")),
            identity_match_reference=_opt_dict(d.get("identity_match_reference")),
            distributed=_opt_dict(d.get("distributed")),
            partial=bool(d.get("partial", False)),
            extra={k: v for k, v in d.items() if k not in known},
            **opt_str, **secs)


def read_meta(path: Union[str, Path]) -> Dict[str, Any]:
    """The raw ``meta.json`` dict of an identity directory (``{}`` when absent or unreadable)."""
    try:
        d = json.loads((Path(path) / META_JSON).read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def load_meta(path: Union[str, Path]) -> IdentityMeta:
    """The typed ``meta.json`` of an identity directory (defaults when absent)."""
    return IdentityMeta.from_json(read_meta(path))


def as_meta(meta: Union[IdentityMeta, Dict[str, Any], None]) -> IdentityMeta:
    """``meta`` as an :class:`IdentityMeta` (a raw ``meta.json`` dict is read; None: empty)."""
    return meta if isinstance(meta, IdentityMeta) else IdentityMeta.from_json(meta or {})
