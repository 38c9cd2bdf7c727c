"""Frame-level quality of LaDTalk against Wav2Lip on held-out frames of the enrolled person.

``python -m ladtalk eval quality --identity NAME --video V.mp4 [--soften 0 0.5 1] [--json OUT]``

For every held-out frame (the last ``holdout`` fraction of the video by time, the frames the
identity never trained on) and every softening ``sigma``:

* **W**, the Wav2Lip proxy: the true face crop (generation framing,
  :func:`ladtalk.face.face_region`) reduced to 96 px by area averaging, softened by a Gaussian
  of ``sigma`` px at 96 px (0: none; Wav2Lip's L1-trained output is softer than a plain
  reduction, about sigma 1), rounded to 8 bits, then pasted back exactly as generation does
  (:func:`ladtalk.generation.blend.blend_face`: colour match, feathered lower-face mask). ``sigma = 0`` is
  the best any Wav2Lip output can be at 96 px.
* **L**, LaDTalk: that same 96 px crop upsampled (bicubic) to the identity's resolution,
  restored by the identity's SOVQAE and fused with its input
  (:mod:`ladtalk.generation.fusion`, the identity's calibrated strengths unless overridden), then pasted
  back the same way.

Both are scored against the original frame at the video's own resolution:

* ``psnr``: over the blended region (every frame pixel where the paste mask is > 0);
* ``ssim``: on the bounding box of that region (7x7 Gaussian SSIM, :func:`ladtalk.metrics.ssim`);
* ``mouth_psnr``: over the mouth box (:class:`ladtalk.metrics.MouthRegion` of the face box);
* ``sharpness``: mean |Laplacian| (grey, 3x3) of the output over that of the truth, in the
  blended region (1.0 = as much fine detail as the truth; below 1 is blurrier; a value far
  above 1 would be noise);
* ``temporal``: flicker, the mean |(G[t+1]-G[t]) - (T[t+1]-T[t])| / 255 over the blended
  region of consecutive frames (lower is better);
* ``lpips``: on the region's bounding box, when the LPIPS weights resolve
  (``LADTALK_VGG16`` + ``LADTALK_LPIPS``; otherwise absent).

``sync`` (per sigma): how far L's mouth moved from W's, at the 96 px scale: the mean absolute
difference in grey levels (0-255) between L's crop reduced to 96 px and W's 96 px crop over
the mouth box. Small values mean the lip shape (the sync) is Wav2Lip's.

Values are means over frames (sharpness: ratio of the summed |Laplacian|). The JSON form
(:meth:`QualityReport.to_dict`)::

    {"frames": N, "resolution": R, "face_px": median crop side, "identity": ..., "video": ...,
     "fusion": {...}, "soften": {"0": {"W": {"psnr": .., "ssim": .., "mouth_psnr": ..,
     "sharpness": .., "temporal": ..}, "L": {..}, "gain_db": L - W, "sync": {..}}, ...}}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ladtalk.face.crop import CropConfig, CropRegion, crop_face, face_region, paste_back
from ladtalk.generation.blend import BlendConfig, blend_face, lower_face_mask
from ladtalk.generation.fusion import FusionConfig

DEFAULT_SOFTEN = (0.0, 0.5, 1.0)
LIPSYNC_SIZE = 96


@dataclass
class QualityStats:
    """Means over frames for one method at one softening (see the module doc)."""

    psnr: float
    ssim: float
    mouth_psnr: float
    sharpness: float
    temporal: Optional[float]
    lpips: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        d = {k: (None if v is None else round(float(v), 4)) for k, v in asdict(self).items()}
        if d["lpips"] is None:
            d.pop("lpips")
        return d


@dataclass
class SoftenResult:
    sigma: float
    W: QualityStats
    L: QualityStats
    sync_mad: float          # mean |L96 - W96| over the mouth box, grey levels
    sync_psnr: float         # PSNR of L96 against W96 over the mouth box

    @property
    def gain_db(self) -> float:
        return self.L.psnr - self.W.psnr

    def to_dict(self) -> Dict[str, Any]:
        return {"W": self.W.to_dict(), "L": self.L.to_dict(), "gain_db": round(self.gain_db, 4),
                "sync": {"mouth_mad_96": round(self.sync_mad, 4),
                         "mouth_psnr_96": round(self.sync_psnr, 4)}}


@dataclass
class QualityReport:
    frames: int
    resolution: int
    face_px: float
    soften: Dict[float, SoftenResult]
    fusion: FusionConfig
    identity: Optional[str] = None
    video: Optional[str] = None
    first_s: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"frames": self.frames, "resolution": self.resolution,
                "face_px": round(float(self.face_px), 1), "identity": self.identity,
                "video": self.video, "holdout_first_s": self.first_s,
                "fusion": self.fusion.to_dict(),
                "soften": {_key(s): r.to_dict() for s, r in sorted(self.soften.items())},
                **self.extra}

    def format_table(self) -> str:
        head = (f"{self.frames} held-out frames, identity {self.resolution} px, face "
                f"{self.face_px:.0f} px; fusion low {self.fusion.low_strength:g} / high "
                f"{self.fusion.high_strength:g}")
        cols = ("psnr", "ssim", "mouth_psnr", "sharpness", "temporal")
        lines = [head, f"{'sigma':>5} {'':>2} " + " ".join(f"{c:>10}" for c in cols)
                 + f" {'gain dB':>8} {'sync MAD':>8}"]
        for s, r in sorted(self.soften.items()):
            for name, st in (("W", r.W), ("L", r.L)):
                vals = [getattr(st, c) for c in cols]
                cells = " ".join(f"{v:>10.4f}" if v is not None else f"{'-':>10}" for v in vals)
                tail = (f" {r.gain_db:>+8.2f} {r.sync_mad:>8.2f}" if name == "L" else "")
                lines.append(f"{s:>5g} {name:>2} {cells}{tail}")
        return "\n".join(lines)


def _key(sigma: float) -> str:
    return f"{float(sigma):g}"


# -- the pieces ---------------------------------------------------------------------------------
def soften96(crop96: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian softening of a uint8 96 px crop (sigma px at 96 px), rounded to uint8."""
    if sigma <= 0:
        return crop96
    import torch

    from ladtalk.media.resample import blur_nchw
    x = torch.from_numpy(np.ascontiguousarray(crop96)).permute(2, 0, 1)[None].float() / 255.0
    y = blur_nchw(x, float(sigma))
    return (y[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)


def region_mask(region: CropRegion, config: BlendConfig = BlendConfig()) -> np.ndarray:
    """Boolean (H, W) frame mask of the pixels the lower-face paste can change."""
    size = max(region.width, 4)
    out = paste_back(np.zeros((region.frame_h, region.frame_w, 3), np.uint8),
                     np.full((size, size, 3), 255, np.uint8), region,
                     mask=lower_face_mask(size, config))
    return out[..., 0] > 0


def _laplacian_abs(img: np.ndarray) -> np.ndarray:
    import cv2
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1))


def _psnr_masked(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    d = a[mask].astype(np.float64) - b[mask].astype(np.float64)
    mse = float(np.mean(d * d)) if d.size else 0.0
    return 10.0 * math.log10(255.0 ** 2 / max(mse, 1e-10))


def _bbox(mask: np.ndarray) -> Tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


class _Acc:
    """Per-method accumulators over frames."""

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
        from ladtalk.metrics.image import psnr, ssim
        self.psnr.append(_psnr_masked(out, truth, mask))
        y0, y1, x0, x1 = _bbox(mask)
        self.ssim.append(ssim(out[y0:y1, x0:x1], truth[y0:y1, x0:x1], data_range=255.0))
        l, t, r, b = mouth_box
        self.mouth.append(psnr(out[t:b, l:r], truth[t:b, l:r], data_range=255.0))
        self.lap_out += float(_laplacian_abs(out)[mask].sum())
        self.lap_true += float(_laplacian_abs(truth)[mask].sum())
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
        self.prev = None

    def stats(self) -> QualityStats:
        return QualityStats(
            psnr=float(np.mean(self.psnr)), ssim=float(np.mean(self.ssim)),
            mouth_psnr=float(np.mean(self.mouth)),
            sharpness=self.lap_out / max(self.lap_true, 1e-9),
            temporal=float(np.mean(self.temporal)) if self.temporal else None,
            lpips=float(np.mean(self.lpips)) if self.lpips else None)


def _lpips_function(device=None):
    """A callable (uint8 a, uint8 b) -> LPIPS, or None when the weights do not resolve."""
    try:
        from ladtalk.metrics.lpips import load_perceptual
        module, _status = load_perceptual(device or "cpu", warn=False)
    except TypeError:
        module = None
    except Exception:  # noqa: BLE001 - any failure to build LPIPS just drops the column
        module = None
    if module is None:
        return None
    import torch

    def fn(a: np.ndarray, b: np.ndarray) -> float:
        ta = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 127.5 - 1
        tb = torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            return float(module(ta, tb).mean())
    return fn


@dataclass
class _Case:
    """One held-out frame prepared for scoring: its crop region, the pasted-region mask and
    the true face at 96 px and at the identity's resolution."""

    frame: np.ndarray
    region: CropRegion
    mask: np.ndarray
    true96: np.ndarray
    trueR: np.ndarray


def _case(frame: np.ndarray, box, resolution: int, crop_config: CropConfig,
          blend: BlendConfig) -> _Case:
    frame = np.ascontiguousarray(frame)
    region = face_region(box, (frame.shape[1], frame.shape[0]), crop_config)
    return _Case(frame, region, region_mask(region, blend),
                 crop_face(frame, region, LIPSYNC_SIZE), crop_face(frame, region, resolution))


def _proxy(case: _Case, sigma: float, resolution: int, blend: BlendConfig):
    """``(w96, W frame, w96 bicubic-up to the identity's resolution)`` at softening sigma."""
    import cv2
    w96 = soften96(case.true96, sigma)
    wframe = blend_face(case.frame.copy(), w96, case.region, case.true96, blend)
    up = cv2.resize(w96, (resolution, resolution), interpolation=cv2.INTER_CUBIC)
    return w96, wframe, up


def measure_quality(restorer, frames: Iterable[Tuple[np.ndarray, Sequence[float], bool]],
                    soften: Sequence[float] = DEFAULT_SOFTEN, *,
                    fusion: Optional[FusionConfig] = None,
                    crop_config: CropConfig = CropConfig(),
                    blend: BlendConfig = BlendConfig(), lpips: bool = True,
                    device=None) -> QualityReport:
    """Score W and L (module doc) on ``frames``: ``(frame uint8 RGB (H, W, 3), face box
    (x1, y1, x2, y2), consecutive)`` items, where ``consecutive`` says the frame directly
    follows the previous one (for the temporal error). ``restorer`` is a
    :class:`ladtalk.generation.restore.Restorer` (or any object with ``resolution`` and
    ``restore(crops, fusion=...)``)."""
    import cv2

    from ladtalk.metrics.image import MouthRegion, psnr

    sigmas = [float(s) for s in soften]
    if not sigmas or any(s < 0 or not math.isfinite(s) for s in sigmas):
        raise ValueError(f"soften values must be >= 0, got {list(soften)}")
    fusion = fusion if fusion is not None else (getattr(restorer, "fusion", None)
                                                or FusionConfig())
    R = int(restorer.resolution)
    acc = {s: {"W": _Acc(), "L": _Acc()} for s in sigmas}
    sync = {s: ([], []) for s in sigmas}
    lp = _lpips_function(device) if lpips else None
    mouth = MouthRegion()
    sides: List[int] = []
    n = 0
    m96 = mouth.pixel_box((0, 0, LIPSYNC_SIZE, LIPSYNC_SIZE), (LIPSYNC_SIZE, LIPSYNC_SIZE))
    for frame, box, consecutive in frames:
        c = _case(frame, box, R, crop_config, blend)
        frame, mask = c.frame, c.mask
        sides.append(c.region.width)
        mbox = mouth.pixel_box(box, frame.shape)
        for s in sigmas:
            w96, wframe, up = _proxy(c, s, R, blend)
            if fusion.identity_off:  # generation then pastes Wav2Lip's face directly
                restored, lframe = up, wframe
            else:
                restored = restorer.restore(up[None], fusion=fusion)[0]
                lframe = blend_face(frame.copy(), restored, c.region, c.trueR, blend)
            for name, out in (("W", wframe), ("L", lframe)):
                a = acc[s][name]
                if not consecutive:
                    a.break_sequence()
                a.add(out, frame, mask, mbox, lp)
            l96 = cv2.resize(restored, (LIPSYNC_SIZE, LIPSYNC_SIZE), interpolation=cv2.INTER_AREA)
            l, t, r, b = m96
            diff = np.abs(l96[t:b, l:r].astype(np.float64) - w96[t:b, l:r])
            sync[s][0].append(float(diff.mean()))
            sync[s][1].append(psnr(l96[t:b, l:r], w96[t:b, l:r], data_range=255.0))
        n += 1
    if n == 0:
        from ladtalk.errors import InputError
        raise InputError("no held-out frames with a face to score")
    results = {s: SoftenResult(s, acc[s]["W"].stats(), acc[s]["L"].stats(),
                               float(np.mean(sync[s][0])),
                               float(np.mean([min(v, 99.0) for v in sync[s][1]])))
               for s in sigmas}
    return QualityReport(frames=n, resolution=R, face_px=float(np.median(sides)),
                         soften=results, fusion=fusion)


def holdout_frames(video: Union[str, Path], frame_indices: np.ndarray, boxes: np.ndarray,
                   max_frames: int = 0):
    """Yield ``(frame, box, consecutive)`` for the frames ``frame_indices`` (sorted) of
    ``video``, streaming; ``max_frames`` > 0 keeps the first that many."""
    from ladtalk.media.video import iter_frames

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


def quality_for_video(identity: Union[str, Path], video: Union[str, Path],
                      soften: Sequence[float] = DEFAULT_SOFTEN, *, holdout: float = 0.1,
                      max_frames: int = 0, detector: str = "auto", device=None,
                      fusion: Optional[FusionConfig] = None, lpips: bool = True,
                      progress=None) -> QualityReport:
    """:func:`measure_quality` on the held-out tail of ``video`` (the frames an identity
    enrolled from it with the same ``holdout`` never trained on), with the identity's
    calibrated fusion unless ``fusion`` is given."""
    from ladtalk.face.video_crops import extract_crops, split_holdout
    from ladtalk.generation.restore import Restorer
    from ladtalk.identities.store import resolve_identity

    path = resolve_identity(identity)
    restorer = Restorer.from_identity(path, device=device, precision="fp32")
    crops = extract_crops(video, restorer.resolution, detector, device=device,
                          max_frames=10 ** 9, progress=progress)
    _, hold = split_holdout(len(crops), holdout)
    if len(hold) == 0:
        from ladtalk.errors import InputError
        raise InputError(f"--holdout {holdout} leaves no held-out frames in {video}")
    rep = measure_quality(restorer, holdout_frames(video, crops.frame_indices[hold],
                                                   crops.boxes[hold], max_frames),
                          soften, fusion=fusion, lpips=lpips, device=device)
    rep.identity = str(path)
    rep.video = str(Path(video).name)
    rep.first_s = float(crops.timestamps()[hold[0]])
    return rep


# -- calibration of the fusion strengths (enrollment) -----------------------------------------
LOW_GRID = (0.0, 0.5, 0.75, 1.0)
HIGH_GRID = (0.0, 0.75, 1.0, 1.25)
CALIBRATION_SOFTEN = (0.0, 0.5, 1.0, 1.5)
#: the ideal (sigma 0) proxy may lose at most this much against Wav2Lip
IDEAL_TOLERANCE_DB = 0.5


@dataclass
class Calibration:
    """The chosen fusion and the gains (dB, pasted region) it was chosen from."""

    fusion: FusionConfig
    gains: Dict[str, Dict[str, float]]        # "low,high" -> {sigma: gain}
    chosen_gains: Dict[str, float]
    frames: int
    rule: str

    def to_dict(self) -> Dict[str, Any]:
        return {"fusion": self.fusion.to_dict(), "chosen_gains_db": self.chosen_gains,
                "gains_db": self.gains, "frames": self.frames, "rule": self.rule}


def calibrate_fusion(restorer, frames: Iterable[Tuple[np.ndarray, Sequence[float], bool]],
                     soften: Sequence[float] = CALIBRATION_SOFTEN,
                     low_grid: Sequence[float] = LOW_GRID,
                     high_grid: Sequence[float] = HIGH_GRID,
                     tolerance_db: float = IDEAL_TOLERANCE_DB,
                     base: FusionConfig = FusionConfig(),
                     crop_config: CropConfig = CropConfig(),
                     blend: BlendConfig = BlendConfig()) -> Calibration:
    """Choose the fusion strengths on held-out ``(frame, box, consecutive)`` items, exactly as
    :func:`measure_quality` scores them: W and L pasted back into the frame, PSNR over the
    pasted region at the video's resolution (so the resampling of the identity path is
    counted), for every (low, high) on the grid and every softening.

    Rule: among the grid points whose gain at sigma 0 (the ideal Wav2Lip proxy) is at least
    ``-tolerance_db``, take the one with the largest mean gain over the softened proxies
    (sigma > 0). (0, 0), Wav2Lip's face pasted directly, always qualifies (gain 0), so the
    result is never worse than the baseline on these frames.
    """
    import torch

    from ladtalk.generation.fusion import fuse

    R = int(restorer.resolution)
    sig = [float(s) for s in soften]
    items = list(frames)
    if R <= LIPSYNC_SIZE:
        # the identity sees less than the 96 px Wav2Lip face already has: leave it alone
        off = replace(base, low_strength=0.0, high_strength=0.0)
        return Calibration(fusion=off, gains={}, chosen_gains={}, frames=len(items),
                           rule=f"identity resolution {R} px <= the {LIPSYNC_SIZE} px Wav2Lip "
                                "face: restoring could only lose detail, strength 0")
    grid = [(float(lo), float(hi)) for lo in low_grid for hi in high_grid
            if (lo, hi) != (0.0, 0.0)]
    cfgs = {g: replace(base, low_strength=g[0], high_strength=g[1]) for g in grid}
    # summed squared error and pixel count over the pasted regions, per method and sigma
    err_w = {s: 0.0 for s in sig}
    err_l = {(g, s): 0.0 for g in grid for s in sig}
    for frame, box, _consecutive in items:
        c = _case(frame, box, R, crop_config, blend)
        mask = c.mask
        truth = c.frame[mask].astype(np.float64)
        for s in sig:
            _w96, wframe, up = _proxy(c, s, R, blend)
            err_w[s] += float(np.sum((wframe[mask] - truth) ** 2))
            up_t = torch.from_numpy(up).permute(2, 0, 1)[None].float() / 255.0
            dec = restorer.restore01(up_t, fusion=None)
            for g in grid:
                fused = fuse(dec, up_t, cfgs[g])[0].permute(1, 2, 0).numpy()
                crop = (fused * 255.0).round().clip(0, 255).astype(np.uint8)
                lframe = blend_face(c.frame.copy(), crop, c.region, c.trueR, blend)
                err_l[(g, s)] += float(np.sum((lframe[mask] - truth) ** 2))
    gains: Dict[str, Dict[str, float]] = {"0,0": {_key(s): 0.0 for s in sig}}
    best, best_score = (0.0, 0.0), 0.0
    for g in grid:
        gd = {_key(s): 10.0 * math.log10(max(err_w[s], 1e-9) / max(err_l[(g, s)], 1e-9))
              for s in sig}
        gains[f"{g[0]:g},{g[1]:g}"] = {k: round(v, 3) for k, v in gd.items()}
        ideal = gd.get(_key(0.0), 0.0)
        soft = [v for k, v in gd.items() if float(k) > 0] or [ideal]
        score = float(np.mean(soft))
        if ideal >= -tolerance_db and score > best_score:
            best, best_score = g, score
    chosen = replace(base, low_strength=best[0], high_strength=best[1])
    rule = (f"max mean gain over sigma {[s for s in sig if s > 0]} with the sigma-0 gain >= "
            f"-{tolerance_db:g} dB (frame-level PSNR over the pasted region)")
    return Calibration(fusion=chosen, gains=gains,
                       chosen_gains=gains[f"{best[0]:g},{best[1]:g}"], frames=len(items),
                       rule=rule)


def write_report(report: QualityReport, path: Union[str, Path]) -> Path:
    from ladtalk.evaluation.report import write_json
    return write_json(report.to_dict(), path)


__all__ = ["QualityStats", "SoftenResult", "QualityReport", "measure_quality", "Calibration",
           "calibrate_fusion",
           "quality_for_video", "holdout_frames", "soften96", "region_mask", "DEFAULT_SOFTEN"]
