"""Frame-level quality of LaDTalk (L) against the Wav2Lip proxy (W) on held-out frames of the
enrolled person (``python -m ladtalk eval quality``; what W, L and each score mean:
docs/evaluation.md)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ladtalk._util.paths import PathLike
from ladtalk._util.types import PhaseProgress
from ladtalk.errors import InputError
from ladtalk.evaluation.calibration import Calibration, calibrate_fusion
from ladtalk.evaluation.proxy import (
    bbox,
    prepare_case,
    region_mask,
    soften96,
    wav2lip_proxy,
)
from ladtalk.evaluation.quality_report import QualityReport, QualityStats, SoftenResult
from ladtalk.face.crop import CropConfig
from ladtalk.face.video_crops import extract_crops, split_holdout
from ladtalk.generation.blend import BlendConfig, blend_face
from ladtalk.generation.fusion import FusionConfig
from ladtalk.generation.restore import Restorer
from ladtalk.identities.store import resolve_identity
from ladtalk.media.decode import iter_frames
from ladtalk.metrics.image import MouthRegion, psnr, ssim
from ladtalk.metrics.lpips import load_perceptual
from ladtalk.models.wav2lip import FACE_SIZE

DEFAULT_SOFTEN = (0.0, 0.5, 1.0)
#: the pasted-region PSNR's MSE floor (grey levels squared)
MSE_FLOOR = 1e-10


def laplacian_abs(img: np.ndarray) -> np.ndarray:
    """|Laplacian| (3x3) of the grey image of RGB uint8 ``img``, float32."""
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1))


class FrameScores:
    """Accumulates one method's scores over frames; :meth:`stats` gives the means."""

    def __init__(self) -> None:
        self.psnr: List[float] = []
        self.ssim: List[float] = []
        self.mouth: List[float] = []
        self.lap_out = 0.0
        self.lap_true = 0.0
        self.temporal: List[float] = []
        self.lpips: List[float] = []
        self.prev: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None

    def add(self, out: np.ndarray, truth: np.ndarray, mask: np.ndarray, mouth_box,
            lpips_fn=None) -> None:
        """Score output frame ``out`` against ``truth`` in ``mask`` (and ``mouth_box``)."""
        self.psnr.append(psnr(out, truth, mask=mask, mse_floor=MSE_FLOOR))
        y0, y1, x0, x1 = bbox(mask)
        self.ssim.append(ssim(out[y0:y1, x0:x1], truth[y0:y1, x0:x1], data_range=255.0))
        left, top, right, bottom = mouth_box
        self.mouth.append(psnr(out[top:bottom, left:right], truth[top:bottom, left:right],
                               data_range=255.0))
        self.lap_out += float(laplacian_abs(out)[mask].sum())
        self.lap_true += float(laplacian_abs(truth)[mask].sum())
        if self.prev is not None:
            po, pt, pm = self.prev
            m = mask | pm
            dg = out[m].astype(np.float64) - po[m]
            dt = truth[m].astype(np.float64) - pt[m]
            self.temporal.append(float(np.mean(np.abs(dg - dt))) / 255.0)
        self.prev = (out, truth, mask)
        if lpips_fn is not None:
            self.lpips.append(lpips_fn(out[y0:y1, x0:x1], truth[y0:y1, x0:x1]))

    def break_sequence(self) -> None:
        """The next frame does not follow the last one (no temporal error across)."""
        self.prev = None

    def stats(self) -> QualityStats:
        return QualityStats(
            psnr=float(np.mean(self.psnr)), ssim=float(np.mean(self.ssim)),
            mouth_psnr=float(np.mean(self.mouth)),
            sharpness=self.lap_out / max(self.lap_true, 1e-9),
            temporal=float(np.mean(self.temporal)) if self.temporal else None,
            lpips=float(np.mean(self.lpips)) if self.lpips else None)


def lpips_function(device=None, module: Optional[torch.nn.Module] = None):
    """A callable (uint8 a, uint8 b) -> LPIPS, or None when the weights do not resolve;
    ``module``: an LPIPS module already built (e.g. a trainer's) instead of loading one."""
    if module is None:
        try:
            module, _status = load_perceptual(device or "cpu", warn=False)
        except Exception:  # noqa: BLE001 - any failure to build LPIPS just drops the column
            module = None
    if module is None:
        return None
    dev = next(module.parameters()).device

    def fn(a: np.ndarray, b: np.ndarray) -> float:
        ta = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 127.5 - 1
        tb = torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)[None].float() / 127.5 - 1
        ta, tb = ta.to(dev), tb.to(dev)
        with torch.no_grad():
            return float(module(ta, tb).mean())
    return fn


class _SigmaScores:
    """W and L scores and the 96 px mouth agreement at one softening."""

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma
        self.W, self.L = FrameScores(), FrameScores()
        self.mad: List[float] = []
        self.sync_psnr: List[float] = []

    def add_sync(self, l96: np.ndarray, w96: np.ndarray, box96) -> None:
        left, top, right, bottom = box96
        a, b = l96[top:bottom, left:right], w96[top:bottom, left:right]
        self.mad.append(float(np.abs(a.astype(np.float64) - b).mean()))
        self.sync_psnr.append(psnr(a, b, data_range=255.0))

    def result(self) -> SoftenResult:
        return SoftenResult(self.sigma, self.W.stats(), self.L.stats(),
                            float(np.mean(self.mad)),
                            float(np.mean([min(v, 99.0) for v in self.sync_psnr])))


def _check_soften(soften: Sequence[float]) -> List[float]:
    sigmas = [float(s) for s in soften]
    if not sigmas or any(s < 0 or not math.isfinite(s) for s in sigmas):
        raise ValueError(f"soften values must be >= 0, got {list(soften)}")
    return sigmas


def measure_quality(restorer, frames: Iterable[Tuple[np.ndarray, Sequence[float], bool]],
                    soften: Sequence[float] = DEFAULT_SOFTEN, *,
                    fusion: Optional[FusionConfig] = None,
                    crop_config: CropConfig = CropConfig(),
                    blend: BlendConfig = BlendConfig(), lpips: bool = True,
                    perceptual: Optional[torch.nn.Module] = None,
                    device=None) -> QualityReport:
    """Score W and L on ``(frame uint8 RGB, face box (x1, y1, x2, y2), consecutive)`` items;
    ``consecutive``: the frame directly follows the previous one (temporal error).
    ``restorer``: anything with ``resolution`` and ``restore(crops, fusion=...)``;
    ``perceptual``: an LPIPS module already built, used for the LPIPS column."""
    scores = {s: _SigmaScores(s) for s in _check_soften(soften)}
    fusion = fusion if fusion is not None else (getattr(restorer, "fusion", None)
                                                or FusionConfig())
    R = int(restorer.resolution)
    lp = lpips_function(device, perceptual) if lpips else None
    mouth = MouthRegion()
    sides: List[int] = []
    m96 = mouth.pixel_box((0, 0, FACE_SIZE, FACE_SIZE), (FACE_SIZE, FACE_SIZE))
    for frame, box, consecutive in frames:
        c = prepare_case(frame, box, R, crop_config, blend)
        sides.append(c.region.width)
        mbox = mouth.pixel_box(box, c.frame.shape)
        for s, sc in scores.items():
            w96, wframe, up = wav2lip_proxy(c, s, R, blend)
            if fusion.identity_off:  # generation then pastes Wav2Lip's face directly
                restored, lframe = up, wframe
            else:
                restored = restorer.restore(up[None], fusion=fusion)[0]
                lframe = blend_face(c.frame.copy(), restored, c.region, c.trueR, blend)
            for acc, out in ((sc.W, wframe), (sc.L, lframe)):
                if not consecutive:
                    acc.break_sequence()
                acc.add(out, c.frame, c.mask, mbox, lp)
            sc.add_sync(cv2.resize(restored, (FACE_SIZE, FACE_SIZE),
                                   interpolation=cv2.INTER_AREA), w96, m96)
    if not sides:
        raise InputError("no held-out frames with a face to score")
    return QualityReport(frames=len(sides), resolution=R, face_px=float(np.median(sides)),
                         soften={s: sc.result() for s, sc in scores.items()}, fusion=fusion)


def holdout_frames(video: PathLike, frame_indices: np.ndarray, boxes: np.ndarray,
                   max_frames: int = 0):
    """Yield ``(frame, box, consecutive)`` for the frames ``frame_indices`` (sorted) of
    ``video``, streaming; ``max_frames`` > 0 keeps the first that many."""
    idx = np.asarray(frame_indices, dtype=np.int64)
    if max_frames and len(idx) > max_frames:
        idx, boxes = idx[:max_frames], boxes[:max_frames]
    want = {int(f): i for i, f in enumerate(idx)}
    last = -2
    n = 0
    done = 0
    for chunk in iter_frames(video, chunk_size=16):
        for frame in chunk:
            if n in want:
                yield frame, boxes[want[n]], n == last + 1
                last = n
                done += 1
            n += 1
        if done == len(idx):
            return


def quality_for_video(identity: PathLike, video: PathLike,
                      soften: Sequence[float] = DEFAULT_SOFTEN, *, holdout: float = 0.1,
                      max_frames: int = 0, detector: str = "auto", device=None,
                      fusion: Optional[FusionConfig] = None, lpips: bool = True,
                      strength: Optional[Tuple[float, float]] = None,
                      progress: Optional[PhaseProgress] = None) -> QualityReport:
    """:func:`measure_quality` on the held-out tail of ``video`` (the frames an identity
    enrolled from it with the same ``holdout`` never trained on), with the identity's
    calibrated fusion unless ``fusion`` is given; ``strength``: ``(low, high)`` fusion
    strengths replacing those of that fusion (its other settings kept)."""

    path = resolve_identity(identity)
    restorer = Restorer.from_identity(path, device=device, precision="fp32")
    if strength is not None:
        base = fusion if fusion is not None else FusionConfig.from_dict(restorer.meta.fusion)
        fusion = replace(base, low_strength=strength[0], high_strength=strength[1])
    crops = extract_crops(video, restorer.resolution, detector, device=device,
                          max_frames=10 ** 9, progress=progress)
    _, hold = split_holdout(len(crops), holdout)
    if len(hold) == 0:
        raise InputError(f"--holdout {holdout} leaves no held-out frames in {video}")
    rep = measure_quality(restorer, holdout_frames(video, crops.frame_indices[hold],
                                                   crops.boxes[hold], max_frames),
                          soften, fusion=fusion, lpips=lpips, device=device)
    rep.identity = str(path)
    rep.video = str(Path(video).name)
    rep.first_s = float(crops.timestamps()[hold[0]])
    return rep


__all__ = ["QualityStats", "SoftenResult", "QualityReport", "FrameScores", "measure_quality",
           "Calibration", "calibrate_fusion", "quality_for_video", "holdout_frames",
           "soften96", "region_mask", "lpips_function", "laplacian_abs", "DEFAULT_SOFTEN"]
