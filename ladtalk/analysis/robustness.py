"""Robustness of an identity's SOVQAE: degrade clean face crops, restore them, measure.

:func:`evaluate_robustness` works on crops (the CLI, enrollment's ``meta.json`` and the app
all call it, so their numbers agree); :func:`robustness_for_video` crops a video the way
enrollment does first. Both return a :class:`~ladtalk.analysis.report.RobustnessReport`.
Conventions: docs/robustness.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ladtalk._util.choices import CertificateCost
from ladtalk._util.device import resolve_device
from ladtalk.analysis.certificate import CertificateAccumulator, lipschitz_for
from ladtalk.analysis.degrade import Degradation, parse_all
from ladtalk.analysis.report import (
    DegradationResult,
    Reconstruction,
    RobustnessReport,
    RobustnessSettings,
    VideoSource,
)
from ladtalk.errors import InputError
from ladtalk.face.video_crops import FaceCrops, even_subset, extract_crops
from ladtalk.generation.restore import Restorer
from ladtalk.identities.meta import IdentityMeta, load_meta
from ladtalk.identities.store import resolve_identity
from ladtalk.media.resample import resize01, to_tensor01, to_uint8
from ladtalk.metrics.image import psnr_torch, ssim
from ladtalk.models.sovqae import SOVQAE

ProgressFn = Callable[[str, int, int], None]
CropsLike = Union[np.ndarray, torch.Tensor]
DegradationsLike = Optional[Sequence[Union[str, Degradation]]]
FRAMES_FROM = ("auto", "holdout", "all")
_KINDS = ("psnr_degraded", "psnr_restored", "ssim_degraded", "ssim_restored")


def _as_tensor01(crops: CropsLike) -> torch.Tensor:
    if isinstance(crops, torch.Tensor):
        if crops.dim() != 4 or crops.shape[1] != 3:
            raise ValueError("crop tensors must be (N, 3, H, W) in [0, 1], got "
                             f"{tuple(crops.shape)}")
        return crops.detach().float().cpu()
    arr = np.asarray(crops)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"crops must be uint8 RGB (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return to_tensor01(arr)


def _ssim_per_frame(y: torch.Tensor, x: torch.Tensor) -> List[float]:
    a = y.detach().double().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    b = x.detach().double().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return [ssim(p, q, data_range=1.0) for p, q in zip(a, b)]


class _Means:
    """Running means of per-frame values, by key."""

    def __init__(self) -> None:
        self.sums: Dict[str, List[float]] = {}

    def add(self, key: str, values) -> None:
        tot = self.sums.setdefault(key, [0.0, 0.0])
        v = [float(t) for t in values]
        tot[0] += sum(v)
        tot[1] += len(v)

    def __getitem__(self, key: str) -> float:
        tot, n = self.sums.get(key, (0.0, 0))
        return tot / n if n else float("nan")


def _measure_batch(restorer: Restorer, x: torch.Tensor, degs: Sequence[Degradation],
                   seed: int, means: _Means, acc: Optional[CertificateAccumulator]) -> None:
    """Restore clean and degraded versions of one batch ``x`` (model resolution), add the
    per-frame numbers to ``means`` and the latents to ``acc``."""
    clean = restorer.restore_tensor(x)
    rec = clean.images.cpu()
    means.add("rec_psnr", psnr_torch(rec, x))
    means.add("rec_ssim", _ssim_per_frame(rec, x))
    if acc is not None:
        acc.add_clean(clean.h, x[0].numel())
    seeds = [seed + i for i in range(x.shape[0])]
    for d in degs:
        xd = d(x, seed=seeds)
        out = restorer.restore_tensor(xd)
        yd = out.images.cpu()
        means.add(f"{d.spec}/psnr_degraded", psnr_torch(xd, x))
        means.add(f"{d.spec}/psnr_restored", psnr_torch(yd, x))
        means.add(f"{d.spec}/ssim_degraded", _ssim_per_frame(xd, x))
        means.add(f"{d.spec}/ssim_restored", _ssim_per_frame(yd, x))
        if acc is not None:
            acc.add_degraded(d.spec, x, xd, clean.h, out.h, clean.indices, out.indices)


def _results(means: _Means, degs: Sequence[Degradation]) -> Dict[str, DegradationResult]:
    rec = {"psnr_reconstruction": means["rec_psnr"], "ssim_reconstruction": means["rec_ssim"]}
    return {d.spec: DegradationResult(**{k: means[f"{d.spec}/{k}"] for k in _KINDS}, **rec)
            for d in degs}


def _certificate_faces(x_all: torch.Tensor, k: int, res: int) -> torch.Tensor:
    """``k`` crops evenly spread over ``x_all``, at model resolution."""
    pick = even_subset(int(x_all.shape[0]), max(1, k))
    return resize01(x_all[torch.as_tensor(pick)], res)


def evaluate_robustness(model: torch.nn.Module, crops: CropsLike,
                        degradations: DegradationsLike = None, *, device=None,
                        batch_size: int = 16, certificate: bool = True,
                        cost: Union[str, CertificateCost] = "full", seed: int = 0,
                        precision: Optional[str] = None, progress: Optional[ProgressFn] = None,
                        **cost_fields: Any) -> RobustnessReport:
    """Degrade -> restore -> measure each degradation on ``crops``.

    ``crops``: uint8 RGB (N, H, W, 3) or float (N, 3, H, W) in [0, 1], resized to the model's
    resolution. ``degradations``: specs or :class:`Degradation` objects (default blur:2.0,
    noise:0.1, down:96). ``cost``: a preset of ``CERTIFICATE_COSTS`` or a
    :class:`CertificateCost`; ``cost_fields`` (``cert_faces=``, ``power_iters=``, ...)
    override single fields. ``progress(phase, done, total)``: phase "restore" per batch,
    then "certificate" per step of the L_enc estimate (``done == total`` at its end).
    """
    cost = CertificateCost.resolve(cost, **cost_fields)
    restorer = Restorer(model, device, batch_size=batch_size, precision=precision)
    res, bs = restorer.resolution, restorer.batch_size
    x_all = _as_tensor01(crops)
    n = int(x_all.shape[0])
    if n == 0:
        raise InputError("no face crops to evaluate")
    degs = parse_all(degradations, res)
    t0 = time.time()
    acc = CertificateAccumulator(restorer.model) if certificate else None
    means = _Means()
    for s in range(0, n, bs):
        _measure_batch(restorer, resize01(x_all[s:s + bs], res), degs, seed + s, means, acc)
        if progress is not None:
            progress("restore", min(n, s + bs), n)
    t1 = time.time()
    cert = None
    if acc is not None:
        faces = _certificate_faces(x_all, cost.cert_faces, res)
        steps = None if progress is None else (
            lambda done, total: progress("certificate", done, total))
        cert = acc.finalize(lipschitz_for(restorer.model, faces, cost, seed, steps))
    settings = RobustnessSettings(seed=seed, device=str(restorer.device), batch_size=bs,
                                  cost=cost, restore_seconds=round(t1 - t0, 2),
                                  certificate_seconds=round(time.time() - t1, 2))
    return RobustnessReport(frames=n, resolution=res,
                            reconstruction=Reconstruction(means["rec_psnr"], means["rec_ssim"]),
                            degradations=_results(means, degs), settings=settings,
                            certificate=cert)


# -- video ------------------------------------------------------------------------------------
def _enrollment_match(meta: IdentityMeta, video: Path, n_video_frames: int) -> bool:
    """Is ``video`` the video this identity was enrolled on (by name and frame count)?"""
    name = meta.video
    if not name or Path(str(name)).name != video.name:
        return False
    vf = meta.frames.extra.get("video_frames")
    return vf is None or int(vf) == int(n_video_frames)


def _check_video(video: Union[str, Path]) -> Path:
    video = Path(video).expanduser()
    if not video.is_file():
        raise InputError(f"video {video} does not exist; pass a video file with the person's face")
    if video.stat().st_size == 0:
        raise InputError(f"video {video} is empty (0 bytes)")
    return video


def _pick_frames(crops: FaceCrops, meta: IdentityMeta, video: Path, ident: str,
                 frames_from: str, is_enroll: bool, notes: List[str]) -> Tuple[np.ndarray, bool]:
    """Indices into ``crops`` for ``frames_from`` (before ``max_frames``), and whether they
    are the holdout frames."""
    hold_first = meta.frames.holdout_first_s
    if frames_from == "holdout" and not is_enroll:
        raise InputError(f"--frames-from holdout: {video.name} is not the enrollment video of "
                         f"identity {ident} (enrolled on {meta.video or 'unknown'}"
                         "); every frame of another video is unseen, use --frames-from all")
    if frames_from == "holdout" and hold_first is None:
        raise InputError(f"identity {ident} was enrolled without a holdout "
                         f"(meta.json has no frames.holdout_first_s); use --frames-from all")
    if frames_from == "auto" and is_enroll and hold_first is None:
        notes.append("this is the enrollment video but meta.json records no holdout: the "
                     "evaluated frames were seen in training")
    idx = np.arange(len(crops))
    if frames_from == "all" or not is_enroll or hold_first is None:
        return idx, False
    idx = idx[crops.timestamps() >= float(hold_first) - 0.5 / float(crops.fps or 25.0)]
    if len(idx) == 0:
        raise InputError(f"no frames with a face after the holdout start "
                         f"{float(hold_first):.2f}s of {video.name}; use --frames-from all")
    return idx, True


def robustness_for_video(identity: Union[str, Path], video: Union[str, Path],
                         degradations: DegradationsLike = None, *,
                         max_frames: Optional[int] = None, frames_from: str = "auto",
                         detector: str = "auto", device=None,
                         progress: Optional[ProgressFn] = None,
                         **kwargs: Any) -> RobustnessReport:
    """Crop the face in ``video`` as enrollment does and evaluate ``identity`` on it.

    ``frames_from``: "holdout" (frames after the training range of the enrollment video),
    "all", or "auto" (holdout when ``video`` is the enrollment video by name and frame count).
    ``max_frames`` then keeps that many, evenly spread. Other keyword arguments go to
    :func:`evaluate_robustness`.
    """
    if frames_from not in FRAMES_FROM:
        raise InputError(f"--frames-from must be one of {', '.join(FRAMES_FROM)}, got "
                         f"{frames_from!r}")
    ident_dir = resolve_identity(identity)
    dev = resolve_device(device)
    model = SOVQAE.from_pretrained(ident_dir, device=dev)
    meta = load_meta(ident_dir)
    res = int(model.config.resolution)
    video = _check_video(video)
    degs = parse_all(degradations, res, f"identity {ident_dir.name}'s")  # before detection
    enroll_max = int(meta.train_config.get("max_frames", 3000))
    crops = extract_crops(video, res, detector, device=dev, max_frames=enroll_max,
                          progress=progress)
    is_enroll = _enrollment_match(meta, video, crops.n_video_frames)
    notes: List[str] = []
    idx, use_holdout = _pick_frames(crops, meta, video, ident_dir.name, frames_from,
                                    is_enroll, notes)
    if max_frames:
        idx = idx[even_subset(len(idx), int(max_frames))]
    sub = crops.subset(idx)
    report = evaluate_robustness(model, sub.crops, degs, device=dev, progress=progress, **kwargs)
    ts = sub.timestamps()
    report.source = VideoSource(
        identity=ident_dir.name, identity_dir=str(ident_dir), video=str(video),
        frames_from="holdout" if use_holdout else "all", enrollment_video=is_enroll,
        frame_range_s=(float(ts[0]), float(ts[-1])),
        frame_indices=[int(v) for v in sub.frame_indices], detector=crops.detector,
        video_frames=crops.n_video_frames, frames_without_face=len(crops.missing))
    report.notes.extend(notes)
    return report


def restoration_pictures(restorer: Restorer, crop01: torch.Tensor,
                         specs: Sequence[str], seed: int = 0) -> Dict[str, np.ndarray]:
    """``{caption: uint8 picture}`` for one crop (1, 3, H, W): clean, reconstructed, and each
    spec's degraded and restored picture (the same noise seed as the measurement)."""
    def u8(x: torch.Tensor) -> np.ndarray:
        return to_uint8(x)[0]

    pictures = {"clean": u8(crop01), "reconstructed": u8(restorer.restore01(crop01))}
    for d in parse_all(specs, restorer.resolution):
        degraded = d(crop01, seed=[seed])
        pictures[f"{d.spec} degraded"] = u8(degraded)
        pictures[f"{d.spec} restored"] = u8(restorer.restore01(degraded))
    return pictures

__all__ = ["evaluate_robustness", "robustness_for_video", "restoration_pictures", "FRAMES_FROM"]
