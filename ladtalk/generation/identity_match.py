"""Does an identity belong to the face it is asked to restore?

An identity's SOVQAE paints its own person's detail onto any face. :func:`check_identity`
measures how well the identity reconstructs (and restores from 96 px) a few crops of the
input against its own held-out numbers; :func:`run_identity_check` is the pipeline's step
("refuse", "warn" or "off"). The rule and its measurements: docs/generation.md.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ladtalk._util.choices import check_mode
from ladtalk._util.jsonsafe import to_jsonable
from ladtalk.errors import InputError
from ladtalk.face.crop import CropConfig
from ladtalk.generation.blend import lower_face_mask
from ladtalk.generation.identity_crops import DEFAULT_FRAMES, sample_face_crops
from ladtalk.generation.restore import Restorer
from ladtalk.identities.meta import IdentityMeta, as_meta, load_meta
from ladtalk.identities.store import resolve_identity
from ladtalk.metrics.image import psnr
from ladtalk.models.wav2lip import FACE_SIZE

log = logging.getLogger(__name__)

DEFAULT_MARGIN_DB = 4.0
#: the restoration test's margin (dB below the identity's own gain on its held-out frames)
DEFAULT_GAIN_MARGIN_DB = 3.0
ABSOLUTE_THRESHOLD_DB = 25.0
NONE_CHOICE = "none (Wav2Lip only)"  # the app's Wav2Lip-only picker value


@dataclass
class IdentityMatch:
    """Result of :func:`check_identity` (all PSNRs in dB, whole crop, [0, 1] scale).

    ``psnr_input``: mean reconstruction PSNR of the identity on the input's face crops
    (``psnr_frames`` per crop, ``frames`` crops). ``psnr_holdout``: the identity's own holdout
    PSNR from ``meta.json`` (None when absent). ``threshold``: ``psnr_holdout - margin_db``,
    or the absolute fallback (``reference`` says which: "holdout" or "absolute").
    ``matches``: ``psnr_input >= threshold``.
    """

    psnr_input: float
    psnr_holdout: Optional[float]
    margin_db: float
    threshold: float
    frames: int
    matches: bool
    reference: str = "holdout"
    identity: Optional[str] = None
    source: Optional[str] = None
    psnr_frames: List[float] = field(default_factory=list)
    psnr_raw: Optional[float] = None
    #: restoration test (identities enrolled with it): the identity's gain in dB on the
    #: input's crops sent through the generation path (96 px and back), against its gain on
    #: its own held-out frames (meta.json ``identity_match_reference``)
    gain_input: Optional[float] = None
    gain_reference: Optional[float] = None
    gain_margin_db: Optional[float] = None

    @property
    def psnr_ok(self) -> bool:
        return self.psnr_input >= self.threshold

    @property
    def gain_ok(self) -> bool:
        if self.gain_input is None or self.gain_reference is None:
            return True
        return self.gain_input >= self.gain_reference - float(self.gain_margin_db or 0.0)

    def to_json(self) -> Dict[str, Any]:
        """The measurement as JSON values (rounded to 1e-3 dB; inf / NaN as strings)."""
        d = asdict(self)
        for k in ("psnr_input", "psnr_holdout", "threshold", "psnr_raw", "gain_input",
                  "gain_reference"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 3)
        d["psnr_frames"] = [round(float(v), 3) for v in self.psnr_frames]
        return to_jsonable(d)

    def message(self) -> str:
        """What was measured and, on a mismatch, what to do."""
        who = f"identity '{self.identity}'" if self.identity else "the identity"
        where = f"the face in '{self.source}'" if self.source else "this face"
        crops = f"{self.frames} face crop{'s' if self.frames != 1 else ''}"
        if self.reference == "holdout":
            bar = (f"{self.psnr_holdout:.2f} dB on its own held-out frames; the bar is "
                   f"{self.psnr_holdout:.2f} - {self.margin_db:g} = {self.threshold:.2f} dB")
        else:
            bar = (f"its meta.json has no holdout PSNR, so the absolute threshold "
                   f"{self.threshold:.2f} dB is used")
        gain = ""
        if self.gain_input is not None and self.gain_reference is not None:
            gain = (f"; restoring them from 96 px it gains {self.gain_input:+.2f} dB against "
                    f"{self.gain_reference:+.2f} dB on its own held-out frames (the bar is "
                    f"{self.gain_reference - float(self.gain_margin_db or 0):+.2f} dB)")
        if self.matches:
            return (f"{who} matches {where}: it reconstructs {crops} of it at "
                    f"{self.psnr_input:.2f} dB PSNR ({bar}){gain}")
        what = (f"it reconstructs {crops} of it at only {self.psnr_input:.2f} dB PSNR ({bar})"
                if not self.psnr_ok else
                f"it reconstructs {crops} of it at {self.psnr_input:.2f} dB PSNR ({bar})")
        return (f"{who} does not match {where}: {what}{gain}. It was trained on a different person "
                "and would paint that person's detail onto this face. Enroll this person "
                "first (`python -m ladtalk enroll --video VIDEO --name NAME`, the Enroll tab, "
                "or tick 'Enroll from this video first') and use that identity, or choose "
                f"Wav2Lip only (`--no-enhance` / identity '{NONE_CHOICE}'). The CLI can still "
                "restore with it using `--identity-check warn` or `off`.")


def _as_restorer(obj: Any):
    """A restorer-like object (``resolution`` + ``restore(uint8 crops)``) or an SOVQAE."""
    if hasattr(obj, "restore") and hasattr(obj, "resolution"):
        return obj
    if isinstance(obj, torch.nn.Module):
        try:
            dev = next(obj.parameters()).device
        except StopIteration:
            dev = torch.device("cpu")
        return Restorer(obj, device=dev, precision="fp32")
    raise TypeError(f"check_identity needs a Restorer-like object (resolution, restore) or an "
                    f"SOVQAE model, got {type(obj).__name__}")


#: MSE floor of the per-crop PSNRs (1e-12 on the [0, 1] scale: at most 120 dB)
_MSE_FLOOR = 1e-12 * 255.0 ** 2


def psnr_uint8(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-image PSNR (dB) of two ``(N, H, W, C)`` batches in [0, 255], on the [0, 1] scale
    (:func:`ladtalk.metrics.image.psnr` per image; ``mask`` (H, W) limits the pixels)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    return np.array([psnr(xi, yi, 255.0, mask=mask, mse_floor=_MSE_FLOOR)
                     for xi, yi in zip(x, y)], dtype=np.float64)


def match_gains(rec: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``rec`` times one least-squares gain per image and colour channel (no offset), clipped
    to [0, 255]: a change of exposure / white balance between two recordings."""
    r = np.asarray(rec, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    gain = (r * t).sum(axis=(1, 2)) / np.maximum((r * r).sum(axis=(1, 2)), 1e-9)  # (N, C)
    return np.clip(r * gain[:, None, None, :], 0.0, 255.0)


def _plain_restore(restorer: Any, crops: np.ndarray) -> np.ndarray:
    """``restorer.restore(crops)`` as uint8, without fusion where the restorer takes it (the
    holdout PSNR is the model's own reconstruction, not one mixed with its input)."""
    try:
        takes_fusion = "fusion" in inspect.signature(restorer.restore).parameters
    except (TypeError, ValueError):
        takes_fusion = False
    rec = np.asarray(restorer.restore(crops, fusion=None) if takes_fusion
                     else restorer.restore(crops))
    if rec.dtype != np.uint8:
        rec = np.clip(np.rint(rec.astype(np.float64)), 0, 255).astype(np.uint8)
    return rec


def _finite(v: Any) -> Optional[float]:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def lipsync_gains(restorer_or_model: Any, crops_uint8: np.ndarray,
                  mean_rgb: Optional[Sequence[float]] = None) -> np.ndarray:
    """Per crop, the PSNR gain (dB, over the paste mask) of restoring the crop from 96 px
    (area down, bicubic up, plain decode) over that 96 px input. ``mean_rgb``: the identity's
    own mean colour; each crop is first scaled to it. See docs/generation.md."""
    restorer = _as_restorer(restorer_or_model)
    crops = np.asarray(crops_uint8)
    if crops.ndim == 3:
        crops = crops[None]
    if mean_rgb is not None:
        own = crops.reshape(len(crops), -1, 3).astype(np.float64).mean(axis=1)  # (N, 3)
        scale = np.asarray(mean_rgb, np.float64)[None] / np.maximum(own, 1.0)
        crops = np.clip(np.rint(crops * scale[:, None, None, :]), 0, 255).astype(np.uint8)
    side = crops.shape[1]
    if side <= FACE_SIZE:
        deg = crops
    else:
        deg = np.stack([cv2.resize(cv2.resize(c, (FACE_SIZE, FACE_SIZE),
                                              interpolation=cv2.INTER_AREA),
                                   (side, side), interpolation=cv2.INTER_CUBIC) for c in crops])
    rec = _plain_restore(restorer, deg)
    mask = np.asarray(lower_face_mask(side)) > 0
    return psnr_uint8(match_gains(rec, crops), crops, mask) - psnr_uint8(deg, crops, mask)


def colour_reference(crops_uint8: np.ndarray) -> List[float]:
    """Mean RGB (0-255) of an identity's held-out crops, for :func:`lipsync_gains`."""
    c = np.asarray(crops_uint8).reshape(-1, 3).astype(np.float64)
    return [round(float(v), 3) for v in c.mean(axis=0)]


def check_identity(restorer_or_model: Any, crops_uint8: np.ndarray, meta: Optional[dict],
                   *, margin_db: float = DEFAULT_MARGIN_DB,
                   absolute_db: float = ABSOLUTE_THRESHOLD_DB, identity: Optional[str] = None,
                   source: Optional[str] = None,
                   gain_margin_db: float = DEFAULT_GAIN_MARGIN_DB) -> IdentityMatch:
    """Does the identity reconstruct (and restore from 96 px) these uint8 RGB crops as well
    as its own held-out frames? The rule: docs/generation.md.

    ``restorer_or_model``: a :class:`Restorer`, any object with ``resolution`` and
    ``restore(uint8 crops)``, or an SOVQAE. ``identity`` / ``source`` only name things in
    :meth:`IdentityMatch.message`.
    """
    restorer = _as_restorer(restorer_or_model)
    crops = np.asarray(crops_uint8)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3 or len(crops) == 0:
        raise ValueError(f"check_identity expects uint8 RGB crops (N, H, W, 3) with N >= 1, got "
                         f"{crops.dtype} {crops.shape}")
    rec = _plain_restore(restorer, crops)
    if rec.shape != crops.shape:
        raise ValueError(f"the restorer returned {rec.shape} for crops of shape {crops.shape}")
    per = psnr_uint8(match_gains(rec, crops), crops)
    psnr_in = float(per.mean())
    psnr_raw = float(psnr_uint8(rec, crops).mean())
    meta = as_meta(meta)
    ref = meta.identity_match_reference or {}
    hold = _finite(meta.holdout_psnr)
    if hold is not None:
        threshold, reference = hold - float(margin_db), "holdout"
    else:
        threshold, reference = float(absolute_db), "absolute"
    gain_ref = _finite(ref.get("lipsync_gain_db"))
    gain_in = None
    if gain_ref is not None:
        mean_rgb = ref.get("mean_rgb")
        gain_in = float(lipsync_gains(restorer, crops, mean_rgb).mean())
    m = IdentityMatch(psnr_input=psnr_in, psnr_holdout=hold, margin_db=float(margin_db),
                      threshold=float(threshold), frames=int(len(crops)), matches=False,
                      reference=reference, identity=identity, source=source,
                      psnr_frames=[float(v) for v in per], psnr_raw=psnr_raw,
                      gain_input=gain_in, gain_reference=gain_ref,
                      gain_margin_db=float(gain_margin_db) if gain_ref is not None else None)
    m.matches = bool(m.psnr_ok and m.gain_ok)
    return m


def _stored_meta(identity: str) -> IdentityMeta:
    """``meta.json`` of a stored identity; empty for a label that is not one (an injected
    restorer's)."""
    try:
        return load_meta(resolve_identity(identity))
    except InputError:
        return IdentityMeta()


def run_identity_check(restorer: Any, identity: Optional[str], mode: str, *, info, fps: float,
                       frame_size: Tuple[int, int], boxes: Optional[np.ndarray] = None,
                       fixed: Optional[np.ndarray] = None, crop_cfg: CropConfig = CropConfig(),
                       resize: Optional[Tuple[int, int]] = None, source: Optional[str] = None,
                       warn: Optional[Callable[[str], None]] = None,
                       n: int = DEFAULT_FRAMES, chunk_size: int = 16,
                       margin_db: float = DEFAULT_MARGIN_DB) -> Optional[IdentityMatch]:
    """The pipeline's step: crops of the input, :func:`check_identity`, then raise
    :class:`InputError` ("refuse") or call ``warn`` ("warn") on a mismatch. Returns the
    result (None when "off" or when no crop could be made)."""
    mode = check_mode(mode)
    if mode == "off" or restorer is None:
        return None
    meta = IdentityMeta()
    name = None
    if identity is not None:
        name = Path(str(identity)).name
        meta = getattr(restorer, "meta", None)  # Restorer.from_identity has read it
        if not isinstance(meta, IdentityMeta):
            meta = _stored_meta(identity)
    crops = sample_face_crops(info, fps, int(restorer.resolution), frame_size, boxes=boxes,
                              fixed=fixed, crop_cfg=crop_cfg, resize=resize, n=n,
                              chunk_size=chunk_size)
    if not len(crops):
        log.info("identity check skipped: no face crop could be made")
        return None
    res = check_identity(restorer, crops, meta, margin_db=margin_db, identity=name,
                         source=Path(source).name if source else None)
    if res.matches:
        log.info("%s", res.message())
    elif mode == "refuse":
        raise InputError(res.message())
    elif warn is not None:
        warn(res.message())
    return res


__all__ = ["IdentityMatch", "check_identity", "run_identity_check", "psnr_uint8", "match_gains",
           "DEFAULT_MARGIN_DB", "ABSOLUTE_THRESHOLD_DB"]
