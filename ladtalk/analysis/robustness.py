"""Robustness of an identity's SOVQAE: degrade clean face crops, restore them, measure.

Library functions (the CLI ``python -m ladtalk robustness``, enrollment's ``meta.json`` and
the app all call these, so their numbers agree):

* :func:`evaluate_robustness` ``(model, crops, degradations)``: for each degradation, PSNR /
  SSIM of the degraded and of the restored crop against the clean crop, plus the clean
  reconstruction and the certificate numbers of :mod:`ladtalk.analysis.certificate`.
* :func:`evaluate_crops`: the same, with the keyword interface enrollment uses.
* :func:`robustness_for_video` ``(identity, video)``: detect / track / crop the face in a video
  with the enrollment framing (:func:`ladtalk.face.video_crops.extract_crops`, same
  :class:`~ladtalk.face.CropConfig`, same crop cache), pick the frames the identity never
  trained on when the video is its enrollment video, and run :func:`evaluate_robustness`.

Conventions: pixel values on the [0, 1] scale; crops at the identity's resolution; blur sigma
in pixels at that resolution; noise sigma on the [0, 1] scale (noise of frame i is seeded with
``seed + i``, so results do not depend on batching). PSNR is computed per frame
(``10 log10(1 / MSE)`` over all pixels and channels, MSE floored at 1e-10, i.e. at most 100 dB)
and averaged over frames; SSIM is :func:`ladtalk.metrics.image.ssim` (Gaussian window) per
frame, averaged.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ladtalk.analysis.certificate import CertificateAccumulator, estimate_lipschitz
from ladtalk.analysis.degrade import Degradation, default_degradations, parse_degradation
from ladtalk.errors import InputError
from ladtalk.generation.restore import Restorer
from ladtalk.media.resample import resize01

ProgressFn = Callable[[str, int, int], None]
CropsLike = Union[np.ndarray, torch.Tensor]


def _as_tensor01(crops: CropsLike) -> torch.Tensor:
    if isinstance(crops, torch.Tensor):
        if crops.dim() != 4 or crops.shape[1] != 3:
            raise ValueError(f"crop tensors must be (N, 3, H, W) in [0, 1], got {tuple(crops.shape)}")
        return crops.detach().float().cpu()
    arr = np.asarray(crops)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"crops must be uint8 RGB (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)


def _psnr_per_frame(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    mse = ((y.double() - x.double()) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10.0 * torch.log10(1.0 / mse)


def _ssim_per_frame(y: torch.Tensor, x: torch.Tensor) -> List[float]:
    from ladtalk.metrics.image import ssim
    a = y.detach().double().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    b = x.detach().double().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return [ssim(p, q, data_range=1.0) for p, q in zip(a, b)]


class _Mean:
    def __init__(self) -> None:
        self.total = 0.0
        self.n = 0

    def add(self, values) -> None:
        v = [float(t) for t in values]
        self.total += sum(v)
        self.n += len(v)

    @property
    def value(self) -> float:
        return self.total / self.n if self.n else float("nan")


def evaluate_robustness(model: torch.nn.Module, crops: CropsLike,
                        degradations: Optional[Sequence[Union[str, Degradation]]] = None, *,
                        device=None, batch_size: int = 16, certificate: bool = True,
                        cert_faces: int = 4, power_iters: int = 6, n_random: int = 4,
                        eps: float = 1e-2, max_positions: int = 4, layerwise: bool = True,
                        seed: int = 0, precision: Optional[str] = None,
                        progress: Optional[ProgressFn] = None) -> Dict[str, Any]:
    """Degrade -> restore -> measure, per degradation (see module docstring).

    ``crops``: uint8 RGB (N, H, W, 3) or float (N, 3, H, W) in [0, 1]; resized to the model's
    resolution if needed. ``degradations``: specs or :class:`Degradation` objects (default
    blur:2.0, noise:0.1, down:96). ``cert_faces`` / ``power_iters`` / ``n_random`` /
    ``max_positions`` / ``layerwise`` bound the cost of the Lipschitz estimate (see
    :func:`ladtalk.analysis.certificate.estimate_lipschitz`). ``progress(phase, done, total)`` is called
    with phase ``"restore"`` per batch and ``"certificate"`` once.

    Returns ``{"frames", "resolution", "reconstruction": {psnr, ssim}, "degradations": {spec:
    {psnr_degraded, psnr_restored, ssim_degraded, ssim_restored, psnr_reconstruction,
    ssim_reconstruction, psnr_gain, ssim_gain}}, "certificate": {...}, "settings": {...}}``.
    """
    degs = [parse_degradation(d) for d in
            (default_degradations() if degradations is None else degradations)]
    if len({d.spec for d in degs}) != len(degs):
        raise InputError(f"duplicate degradations in {[d.spec for d in degs]}")
    restorer = Restorer(model, device, batch_size=batch_size, precision=precision)
    res = restorer.resolution
    x_all = _as_tensor01(crops)
    n = int(x_all.shape[0])
    if n == 0:
        raise InputError("no face crops to evaluate")
    for d in degs:
        if d.name == "down" and int(d.param) >= res:
            raise InputError(f"{d.spec} is not a downscale at this identity's {res} px "
                             f"resolution; use --down with a size below {res}")
    t0 = time.time()
    acc = CertificateAccumulator(restorer.model) if certificate else None
    rec_psnr, rec_ssim = _Mean(), _Mean()
    stats = {d.spec: {k: _Mean() for k in ("psnr_degraded", "psnr_restored", "ssim_degraded",
                                           "ssim_restored")} for d in degs}
    for s in range(0, n, restorer.batch_size):
        x = resize01(x_all[s:s + restorer.batch_size], res)
        clean = restorer.restore_tensor(x)
        rec = clean.images.cpu()
        rec_psnr.add(_psnr_per_frame(rec, x))
        rec_ssim.add(_ssim_per_frame(rec, x))
        if acc is not None:
            acc.add_clean(clean.h, x[0].numel())
        seeds = [seed + s + i for i in range(x.shape[0])]
        for d in degs:
            xd = d(x, seed=seeds)
            out = restorer.restore_tensor(xd)
            yd = out.images.cpu()
            st = stats[d.spec]
            st["psnr_degraded"].add(_psnr_per_frame(xd, x))
            st["psnr_restored"].add(_psnr_per_frame(yd, x))
            st["ssim_degraded"].add(_ssim_per_frame(xd, x))
            st["ssim_restored"].add(_ssim_per_frame(yd, x))
            if acc is not None:
                acc.add_degraded(d.spec, x, xd, clean.h, out.h, clean.indices, out.indices)
        if progress is not None:
            progress("restore", min(n, s + restorer.batch_size), n)
    result: Dict[str, Any] = {
        "frames": n, "resolution": res,
        "reconstruction": {"psnr": rec_psnr.value, "ssim": rec_ssim.value},
        "degradations": {},
    }
    for d in degs:
        st = {k: m.value for k, m in stats[d.spec].items()}
        st["psnr_reconstruction"] = rec_psnr.value
        st["ssim_reconstruction"] = rec_ssim.value
        st["psnr_gain"] = st["psnr_restored"] - st["psnr_degraded"]
        st["ssim_gain"] = st["ssim_restored"] - st["ssim_degraded"]
        result["degradations"][d.spec] = st
    t1 = time.time()
    if acc is not None:
        pick = np.unique(np.round(np.linspace(0, n - 1, min(n, max(1, cert_faces))))).astype(int)
        faces = resize01(x_all[torch.as_tensor(pick)], res)
        lip = estimate_lipschitz(restorer.model, faces, iters=power_iters, n_random=n_random,
                                 eps=eps, max_positions=max_positions, seed=seed,
                                 layerwise=layerwise)
        result["certificate"] = acc.finalize(lip).to_dict()
        if progress is not None:
            progress("certificate", 1, 1)
    result["settings"] = {
        "seed": seed, "device": str(restorer.device), "batch_size": restorer.batch_size,
        "cert_faces": cert_faces, "power_iters": power_iters, "n_random": n_random, "eps": eps,
        "max_positions": max_positions, "layerwise": layerwise,
        "restore_seconds": round(t1 - t0, 2), "certificate_seconds": round(time.time() - t1, 2),
        "psnr": "per-frame 10*log10(1/MSE) on [0,1], MSE floored at 1e-10, mean over frames",
        "ssim": "ladtalk.metrics.image.ssim (Gaussian window, sigma 1.5), mean over frames",
    }
    return result


def evaluate_crops(model: torch.nn.Module, crops01: CropsLike,
                   degradations: Optional[Sequence[str]] = None, certificate: bool = True,
                   device=None, **kwargs: Any) -> Dict[str, Any]:
    """Enrollment's entry point (``meta.json``): :func:`evaluate_robustness` under another name."""
    return evaluate_robustness(model, crops01, degradations, device=device,
                               certificate=certificate, **kwargs)


# -- video ------------------------------------------------------------------------------------
FRAMES_FROM = ("auto", "holdout", "all")


def _enrollment_match(meta: Dict[str, Any], video: Path, n_video_frames: int) -> bool:
    """Is ``video`` the video this identity was enrolled on (by name and frame count)?"""
    name = meta.get("video")
    if not name or Path(str(name)).name != video.name:
        return False
    vf = (meta.get("frames") or {}).get("video_frames")
    return vf is None or int(vf) == int(n_video_frames)


def robustness_for_video(identity: Union[str, Path], video: Union[str, Path],
                         degradations: Optional[Sequence[Union[str, Degradation]]] = None, *,
                         max_frames: Optional[int] = None, frames_from: str = "auto",
                         detector: str = "auto", device=None,
                         progress: Optional[ProgressFn] = None, **kwargs: Any) -> Dict[str, Any]:
    """Crop the face in ``video`` as enrollment does and evaluate ``identity`` on it.

    ``frames_from``: ``"holdout"`` uses only the frames after the identity's training range
    (needs the enrollment video), ``"all"`` every frame with a face, ``"auto"`` holdout when
    ``video`` is the enrollment video (matched by file name and frame count against
    ``meta.json``) and all frames otherwise. ``max_frames`` then keeps that many frames evenly
    spread in time. Other keyword arguments go to :func:`evaluate_robustness`.
    """
    from ladtalk._util.device import resolve_device
    from ladtalk.face.video_crops import even_subset, extract_crops
    from ladtalk.identities.store import read_meta, resolve_identity
    from ladtalk.models.sovqae import SOVQAE

    if frames_from not in FRAMES_FROM:
        raise InputError(f"--frames-from must be one of {', '.join(FRAMES_FROM)}, got "
                         f"{frames_from!r}")
    ident_dir = resolve_identity(identity)
    dev = resolve_device(device)
    model = SOVQAE.from_pretrained(ident_dir, device=dev)
    meta = read_meta(ident_dir)
    res = int(model.config.resolution)
    video = Path(video).expanduser()
    if not video.is_file():
        raise InputError(f"video {video} does not exist; pass a video file with the person's face")
    if video.stat().st_size == 0:
        raise InputError(f"video {video} is empty (0 bytes)")
    degs = [parse_degradation(d) for d in
            (default_degradations() if degradations is None else degradations)]
    for d in degs:  # fail before the (slow) face detection
        if d.name == "down" and int(d.param) >= res:
            raise InputError(f"{d.spec} is not a downscale at the {res} px resolution of "
                             f"identity {ident_dir.name}; use --down with a size below {res}")
    enroll_max = int((meta.get("train_config") or {}).get("max_frames", 3000))

    def crop_progress(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(phase, done, total)

    crops = extract_crops(video, res, detector, device=dev, max_frames=enroll_max,
                          progress=crop_progress)
    is_enroll = _enrollment_match(meta, video, crops.n_video_frames)
    hold_first = (meta.get("frames") or {}).get("holdout_first_s")
    notes: List[str] = []
    if frames_from == "holdout" and not is_enroll:
        raise InputError(f"--frames-from holdout: {video.name} is not the enrollment video of "
                         f"identity {ident_dir.name} (enrolled on {meta.get('video') or 'unknown'}"
                         "); every frame of another video is unseen, use --frames-from all")
    if frames_from == "holdout" and hold_first is None:
        raise InputError(f"identity {ident_dir.name} was enrolled without a holdout "
                         f"(meta.json has no frames.holdout_first_s); use --frames-from all")
    use_holdout = frames_from == "holdout" or (frames_from == "auto" and is_enroll
                                               and hold_first is not None)
    if frames_from == "auto" and is_enroll and hold_first is None:
        notes.append("this is the enrollment video but meta.json records no holdout: the "
                     "evaluated frames were seen in training")
    idx = np.arange(len(crops))
    if use_holdout:
        t = crops.timestamps()
        idx = idx[t >= float(hold_first) - 0.5 / float(crops.fps or 25.0)]
        if len(idx) == 0:
            raise InputError(f"no frames with a face after the holdout start "
                             f"{float(hold_first):.2f}s of {video.name}; use --frames-from all")
    if max_frames:
        idx = idx[even_subset(len(idx), int(max_frames))]
    sub = crops.subset(idx)
    out = evaluate_robustness(model, sub.crops, degs, device=dev, progress=progress, **kwargs)
    ts = sub.timestamps()
    out.update({
        "identity": ident_dir.name, "identity_dir": str(ident_dir), "video": str(video),
        "frames_from": "holdout" if use_holdout else "all",
        "enrollment_video": is_enroll,
        "frame_range_s": [float(ts[0]), float(ts[-1])],
        "frame_indices": [int(v) for v in sub.frame_indices],
        "detector": crops.detector, "video_frames": crops.n_video_frames,
        "frames_without_face": len(crops.missing),
    })
    if notes:
        out.setdefault("notes", []).extend(notes)
    return out


__all__ = ["evaluate_robustness", "evaluate_crops", "robustness_for_video", "FRAMES_FROM"]
