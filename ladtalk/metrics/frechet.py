"""Fréchet distance between Gaussians fitted to features, and FID on Inception features.

``d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2))``

computed the way pytorch-fid / the TTUR reference code do it, so numbers are comparable:
``scipy.linalg.sqrtm`` of ``S1 @ S2``; if that is not finite (singular product), both
covariances get ``eps * I`` added and it is retried; the real part of the result is used
(the imaginary part is numerical noise for positive semi-definite inputs). Covariances are
``np.cov(features, rowvar=False)`` (unbiased, N - 1).

FID proper (2048-d pool3 features of the FID Inception-v3) is an optional extra: it needs
``pytorch-fid`` (which brings torchvision) and its weights file
``pt_inception-2015-12-05-6726825d.pth`` (downloaded to the torch hub cache on first use). The
Fréchet formula itself has no such dependency and works on any per-frame features.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Optional, Tuple

import numpy as np
from scipy import linalg

from ladtalk._util.device import resolve_device
from ladtalk.errors import CheckpointError, InputError, LadTalkError

if TYPE_CHECKING:
    from ladtalk._util.device import DeviceLike

FID_EXTRA = "fid"
FID_PIP = "pip install 'ladtalk[fid]'  (= pytorch-fid and torchvision)"
FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/"
                   "fid_weights/" + FID_WEIGHTS)


def feature_statistics(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``(N, D)`` features (N >= 2)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise InputError(f"Fréchet statistics need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (see module docstring)."""
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape \
            or sigma1.shape != (mu1.size, mu1.size):
        raise InputError(f"Fréchet distance: inconsistent shapes mu {mu1.shape}/{mu2.shape}, "
                         f"sigma {sigma1.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3 * max(1.0, abs(np.trace(covmean.real))):
            warnings.warn(f"Fréchet distance: sqrtm has a large imaginary part ({imag:.3g}); "
                          "the covariances are probably ill-conditioned (too few samples)",
                          RuntimeWarning, stacklevel=2)
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _sqrtm(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # singular-matrix chatter; non-finite output is handled
        return linalg.sqrtm(a)


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray,
                                   eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two ``(N, D)`` feature sets."""
    mu1, s1 = feature_statistics(features1)
    mu2, s2 = feature_statistics(features2)
    return frechet_distance(mu1, s1, mu2, s2, eps)


# ----------------------------------------------------------------------------------------------
# Optional: Inception features through pytorch-fid
# ----------------------------------------------------------------------------------------------

def _import_pytorch_fid():
    try:
        from pytorch_fid.inception import InceptionV3  # noqa: WPS433 (lazy optional import)
    except ImportError as exc:
        raise LadTalkError(
            f"FID needs the optional '{FID_EXTRA}' extra, which is not installed ({exc}). "
            f"Install it with: {FID_PIP}. On first use it also downloads the FID Inception "
            f"weights {FID_WEIGHTS} (~92 MB) from {FID_WEIGHTS_URL} into the torch hub cache "
            "($TORCH_HOME/hub/checkpoints); place the file there yourself on offline machines. "
            "PSNR, SSIM, LSE and the Fréchet distance on other features work without it.") from exc
    return InceptionV3


class InceptionFeatures:
    """2048-d pool3 features of the FID Inception-v3 (pytorch-fid), loaded lazily."""

    def __init__(self, device: "DeviceLike" = None, batch_size: int = 32) -> None:
        inception_cls = _import_pytorch_fid()

        self.device = resolve_device(device)
        self.batch_size = batch_size
        try:
            block = inception_cls.BLOCK_INDEX_BY_DIM[2048]
            self.model = inception_cls([block]).to(self.device).eval()
        except Exception as exc:   # download failure (offline), corrupt cache, ...
            raise CheckpointError(
                f"could not load the FID Inception weights {FID_WEIGHTS} ({type(exc).__name__}: "
                f"{exc}); download {FID_WEIGHTS_URL} into $TORCH_HOME/hub/checkpoints/ "
                "(default ~/.cache/torch/hub/checkpoints/) and retry") from exc

    def __call__(self, frames_rgb: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` RGB frames (uint8, or float in [0, 1]) -> ``(N, 2048)`` float64."""
        import torch

        frames = np.asarray(frames_rgb)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f"Inception features need (N, H, W, 3) RGB frames, got {frames.shape}")
        scale = 255.0 if frames.dtype == np.uint8 else 1.0
        out = []
        with torch.no_grad():
            for start in range(0, len(frames), self.batch_size):
                chunk = frames[start:start + self.batch_size]
                batch = torch.from_numpy(np.ascontiguousarray(chunk))
                batch = batch.to(self.device).permute(0, 3, 1, 2).float() / scale
                out.append(self.model(batch)[0].flatten(1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))


def fid(generated_rgb: np.ndarray, reference_rgb: np.ndarray, device: "DeviceLike" = None,
        extractor: Optional[InceptionFeatures] = None) -> float:
    """FID between two frame sets (needs the optional ``fid`` extra, see module docstring)."""
    extractor = extractor or InceptionFeatures(device)
    return frechet_distance_from_features(extractor(generated_rgb), extractor(reference_rgb))
