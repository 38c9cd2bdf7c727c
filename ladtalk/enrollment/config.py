"""Enrollment hyper-parameters: :class:`TrainConfig` and the per model-config presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Tuple

_TUPLE_FIELDS = ("betas", "patch_area", "degrade_weights", "lipsync_sigma")


@dataclass
class TrainConfig:
    """Enrollment hyper-parameters (the model architecture lives in the SOVQAE config)."""

    seconds: float = 600.0          # training-loop wall-clock budget of one enroll run
    max_steps: int = 0              # also stop after this many steps in one run (0: no limit)
    batch_size: int = 4
    lr: float = 1e-3                # Adam, generator
    disc_lr: float = 2e-4           # Adam, discriminator
    betas: Tuple[float, float] = (0.5, 0.9)
    warmup_steps: int = 20          # linear LR warm-up (fresh runs only)
    decay_start: float = 0.6        # fraction of the run's budget after which the LR decays
    lr_end: float = 0.1             # ... linearly to this fraction of ``lr`` at the budget end
    patch: int = 0                  # train on random patches of this size (0: full crops)
    full_every: int = 0             # ... but every k-th step on full crops (0: never)
    #: where patches come from: with probability ``patch_focus`` inside ``patch_area``
    #: (x0, y0, x1, y1 fractions of the crop: the lower face that generation pastes back)
    patch_area: Tuple[float, float, float, float] = (0.0, 0.4, 1.0, 1.0)
    patch_focus: float = 0.0
    #: degradation augmentation: relative frequency of (blur, noise, down-up, lipsync path)
    #: and the lipsync path's softening sigma range at 96 px (see data.random_degradation)
    degrade_weights: Tuple[float, float, float, float] = (1.0, 1.0, 1.0, 0.0)
    lipsync_sigma: Tuple[float, float] = (0.0, 1.5)
    l1: float = 1.0
    l2: float = 1.0
    face_weight: float = 0.0        # extra loss weight inside the face ellipse (0: uniform)
    perceptual_weight: float = 1.0  # used only when LPIPS weights are available
    codebook_weight: float = 1.0
    dc_weight: float = 0.01         # ||d_C - theta|| regulariser
    dc_theta: float = 1.0
    dc_tau: float = 0.05
    disc_start: int = 1500          # steps before the PatchGAN term starts
    disc_weight: float = 0.1
    disc_ndf: int = 32
    disc_layers: int = 3
    restore_prob: float = 0.5       # fraction of steps trained on degraded inputs
    restore_start: int = 50
    kmeans_at: int = 40             # k-means codebook init after this many steps (0: off)
    kmeans_batches: int = 8
    restart_every: int = 50         # dead-code restart period in steps (0: off)
    eval_seconds: float = 60.0      # holdout PSNR during training, at most this often
    eval_frames: int = 32
    final_frames: int = 64          # holdout frames for the final robustness / certificate
    max_frames: int = 3000          # crops kept from a long video (evenly in time)
    checkpoint_seconds: float = 0.0  # also save the identity every N seconds (0: at the end)
    calibration_frames: int = 16    # holdout frames the fusion strengths are calibrated on
    quality_frames: int = 48        # holdout frames of the final W-vs-L quality measure
    seed: int = 0

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for k in _TUPLE_FIELDS:
            d[k] = list(getattr(self, k))
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in _TUPLE_FIELDS:
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


#: Per model-config defaults (see docs/enrollment.md for how the cpu recipe was chosen).
TRAIN_PRESETS: Dict[str, TrainConfig] = {
    # 256 px (or 128 for small faces), normalisation-free: trained on 96 px patches, mostly
    # from the lower face, fed mostly what generation feeds it (docs/enrollment.md)
    "cpu": TrainConfig(seconds=735.0, batch_size=8, patch=96, patch_focus=0.75,
                       degrade_weights=(1.0, 1.0, 1.0, 8.0), restore_prob=0.9,
                       final_frames=32, calibration_frames=16, quality_frames=32),
    "cpu-gn128": TrainConfig(),
    # retired model configs: identities enrolled with them still resume with this recipe
    "cpu-f8": TrainConfig(),
    "cpu-f4": TrainConfig(),
    "base": TrainConfig(seconds=3600.0, batch_size=8, lr=2e-4, perceptual_weight=1.0,
                        disc_start=5000, disc_weight=0.8, disc_ndf=64, restore_prob=0.5,
                        kmeans_at=100, restart_every=200, max_frames=2000,
                        checkpoint_seconds=900.0),
    "tiny": TrainConfig(seconds=60.0, batch_size=4, lr=3e-3,
                        disc_start=10 ** 9, restore_prob=0.7, restore_start=10, kmeans_at=10,
                        restart_every=25, eval_seconds=15.0, eval_frames=16, final_frames=16),
}


def train_preset(config_name: str, **overrides: Any) -> TrainConfig:
    """The preset of a model config (``cpu`` for unknown names), with non-None overrides."""
    base = TRAIN_PRESETS.get(config_name, TRAIN_PRESETS["cpu"])
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


__all__ = ["TrainConfig", "TRAIN_PRESETS", "train_preset"]
