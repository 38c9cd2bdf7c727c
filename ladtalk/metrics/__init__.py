"""Evaluation metrics of the LaDTalk paper (and one the peers lack).

* :mod:`.image` - PSNR (numpy, masked, batched torch), SSIM (Gaussian-window by default,
  scikit-image-equal), mouth-region PSNR.
* :mod:`.temporal` - temporal error: flicker relative to the reference's own motion.
* :mod:`.frechet` - Fréchet distance on features; FID through the optional ``fid`` extra.
* :mod:`.sliding` - the paper's Sliding Evaluation (best alignment of a shorter generated clip).
* :mod:`.lse` - LSE-C / LSE-D exactly as syncnet_python / Wav2Lip compute them
  (model: :mod:`ladtalk.models.syncnet_lse`, MFCCs: :mod:`.mfcc`).

Importing this package imports nothing else: each name loads its submodule on first use
(numpy / scipy); torch is imported by :mod:`.lse`, and FID's dependencies only when FID is
requested.
"""

import importlib
from typing import Any, List

#: public name -> the submodule that defines it; loaded on first use (PEP 562), so that a
#: caller of one metric (the generation pipeline's PSNR) does not import scipy.linalg & co.
_EXPORTS = {
    "psnr": "image", "psnr_torch": "image", "ssim": "image", "SSIMConfig": "image",
    "mouth_psnr": "image", "MouthRegion": "image", "temporal_error": "temporal",
    "frechet_distance": "frechet", "frechet_distance_from_features": "frechet",
    "feature_statistics": "frechet", "SlidingResult": "sliding",
    "sliding_evaluation": "sliding", "sliding_sequence": "sliding",
    "sliding_frechet": "sliding", "sliding_search": "sliding", "valid_offsets": "sliding",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))
