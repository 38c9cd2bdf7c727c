"""Identity enrollment: per-identity SOVQAE fine-tuning on face crops of one video.

Modules:
    data           face crops with the generation framing, time-ordered holdout, batch sampler,
                   degradation augmentation
    losses         reconstruction, codebook (d_C) regulariser, hinge GAN + adaptive weight, LPIPS
    discriminator  taming's PatchGAN (NLayerDiscriminator)
    enroll         the time-budgeted, resumable training loop and :func:`enroll`
"""

from ladtalk.enrollment.enroll import (
           TRAIN_PRESETS,
           TrainConfig,
           Trainer,
           enroll,
           evaluate_identity,
           train_preset,
)

__all__ = ["enroll", "TrainConfig", "TRAIN_PRESETS", "train_preset", "Trainer",
           "evaluate_identity"]
