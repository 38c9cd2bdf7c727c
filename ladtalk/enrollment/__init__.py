"""Identity enrollment: per-identity SOVQAE fine-tuning on face crops of one video.

Modules: ``config`` (TrainConfig, presets), ``data`` (crop sampler, degradation augmentation,
patches), ``losses``, ``discriminator`` (PatchGAN), ``trainer`` (one step, resumable state),
``loop`` (the time-budgeted loop, atomic save), ``plan`` (model, train config and crops of a
run; :func:`prepare_crops`), ``evaluate`` / ``calibrate`` (the numbers in ``meta.json``) and
``enroll`` (:func:`enroll`). See docs/enrollment.md.
"""

from ladtalk.enrollment.calibrate import calibrate_and_measure
from ladtalk.enrollment.config import TRAIN_PRESETS, TrainConfig, train_preset
from ladtalk.enrollment.enroll import enroll
from ladtalk.enrollment.evaluate import EVAL_DEGRADATIONS, eval_degradations, evaluate_identity
from ladtalk.enrollment.plan import prepare_crops
from ladtalk.enrollment.trainer import Trainer

__all__ = ["enroll", "prepare_crops", "TrainConfig", "TRAIN_PRESETS", "train_preset", "Trainer",
           "evaluate_identity", "eval_degradations", "EVAL_DEGRADATIONS",
           "calibrate_and_measure"]
