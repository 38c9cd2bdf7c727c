"""Evaluation metrics of the LaDTalk paper (and one the peers lack).

* :mod:`.image` - PSNR (numpy, masked, batched torch), SSIM (Gaussian-window by default,
  scikit-image-equal), mouth-region PSNR.
* :mod:`.temporal` - temporal error: flicker relative to the reference's own motion.
* :mod:`.frechet` - Fréchet distance on features; FID through the optional ``fid`` extra.
* :mod:`.sliding` - the paper's Sliding Evaluation (best alignment of a shorter generated clip).
* :mod:`.lse` - LSE-C / LSE-D exactly as syncnet_python / Wav2Lip compute them
  (model: :mod:`ladtalk.models.syncnet_lse`, MFCCs: :mod:`.mfcc`).

Importing this package pulls in numpy/scipy only; torch is imported by :mod:`.lse` and FID
dependencies only when FID is requested.
"""

from ladtalk.metrics.frechet import (
                      feature_statistics,
                      frechet_distance,
                      frechet_distance_from_features,
)
from ladtalk.metrics.image import MouthRegion, SSIMConfig, mouth_psnr, psnr, psnr_torch, ssim
from ladtalk.metrics.sliding import (
                      SlidingResult,
                      sliding_evaluation,
                      sliding_frechet,
                      sliding_search,
                      sliding_sequence,
                      valid_offsets,
)
from ladtalk.metrics.temporal import temporal_error

__all__ = [
    "psnr", "psnr_torch", "ssim", "SSIMConfig", "mouth_psnr", "MouthRegion", "temporal_error",
    "frechet_distance", "frechet_distance_from_features", "feature_statistics",
    "SlidingResult", "sliding_evaluation", "sliding_sequence", "sliding_frechet",
    "sliding_search", "valid_offsets",
]
