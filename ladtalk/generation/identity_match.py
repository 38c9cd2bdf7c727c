"""Does an identity belong to the face it is asked to restore? ("always the right identity")

An identity's SOVQAE is trained on one person. Given somebody else's face it still decodes
the *identity's* codebook: the restored mouth region gets the enrolled person's skin, teeth
and texture. :func:`check_identity` measures this before any generation work and
:meth:`ladtalk.generation.pipeline.Pipeline.run` acts on it (``GenerateOptions.identity_check``:
``"refuse"``, ``"warn"`` or ``"off"``; the app refuses, ``python -m ladtalk generate`` warns
by default, ``--identity-check`` chooses).

What is measured
----------------
``psnr_input``: the identity's clean reconstruction PSNR on a few face crops of the *input*
(``DEFAULT_FRAMES`` = 8 source frames with a face, spread evenly over the video; a photo gives
1), cropped with the generation framing (:func:`ladtalk.face.crop.face_region` +
:func:`~ladtalk.face.crop.crop_faces` with the call's :class:`~ladtalk.face.crop.CropConfig`,
at the identity's resolution, i.e. the crops :class:`ladtalk.generation.pipeline.Pipeline` restores) and
passed through ``restorer.restore`` (uint8 in, uint8 out; ``fusion=None`` where the restorer
takes it: the model's own reconstruction, as at enrollment). PSNR over the whole crop on the
[0, 1] scale, mean of the per-crop values, as ``holdout_psnr`` in ``meta.json``
(``ladtalk.enrollment.enroll._psnr`` on the held-out last 10 % of the enrollment video), with one
difference: before the PSNR the reconstruction gets one least-squares gain per colour channel
(:func:`match_gains`, no offset). An identity decodes *its own* exposure and white balance
whatever the input's (the trump identity below outputs a mean grey level of 109 for inputs
of 85 and 161), and the pipeline's colour-matched paste-back undoes that, so a darker or
warmer recording of the same person must not count as another person: without the gains
the astronaut photo at 0.8x brightness scores 18.4 dB, as low as strangers. The gains can
only raise the PSNR; on the enrollment video itself they add 0.1-0.2 dB (``psnr_raw`` keeps
the value without them). An autoencoder trained on one face reconstructs that face well and
other faces badly, so this is a cheap identity test that needs no face-recognition model.

Rule
----
``mismatch  <=>  psnr_input < holdout_psnr - margin_db``  (``DEFAULT_MARGIN_DB`` = 4 dB)
``          or   gain_input < gain_reference - gain_margin_db``  (``DEFAULT_GAIN_MARGIN_DB`` = 3 dB)

The second test (identities enrolled since the 256 px recipe, whose ``meta.json`` has
``identity_match_reference``) is the decisive one for those identities. Their
normalisation-free, patch-trained SOVQAE reconstructs *clean* faces of other people well
(on the cnn2 identity Trump reconstructs 1.75 dB *above* its holdout, retalking_face2 at -0.29
dB), so reconstruction PSNR alone no longer separates people. What does is restoration on the
generation path (:func:`lipsync_gains`: the crop reduced to 96 px and back, restored, PSNR
gain over the lower-face paste region, after scaling the crop to the identity's mean colour):
the identity restores its own person (cnn2: +0.13 dB on its holdout, -0.03 dB on 7 other
frames of its video) and paints its own detail onto anyone else (-4.9 to -13 dB relative).
Measured with ``scripts/measure_identity_match.py`` (dB relative to the identity's own gain):

    identity                         cnn2 (256 px)      demo (128 px, rebuilt)
    own video / photo                -0.16              +0.21 / -0.62
    own photo, brightness x0.8/x1.15 -0.77 / -1.50      -0.59 / -1.84
    gamma 1.3, white balance         -2.84, -0.76       -2.10, -1.10
    mirrored, JPEG q30, noise 0.03   -1.01 .. -0.75     -2.75 .. -0.39
    half resolution                  -2.91              -6.79 (refused)
    blur 1.5 (a degraded input)      -7.70 (refused)    -21.4 (refused)
    other people (8 real videos,     -4.90 .. -12.62    -4.21 .. -14.42
      skimage camera(), astronaut)   (all refused)      (all refused)

Both identities refuse every other person and accept every same-person change except a
strongly blurred or (for the 128 px demo) half-resolution input. The first test keeps
its margin and the measurements below (made on identities of the previous, GroupNorm recipe,
for which it was the only test).

Measured: ``python scripts/measure_identity_match.py`` (the shipped ``demo``: 161 steps of the
``cpu`` recipe on ``examples/astronaut.mp4``, holdout 28.13 dB) and the same with an identity
``trump`` enrolled for this measurement (``python -m ladtalk enroll --video
../shared/data/mimictalk_Trump_10s.mp4 --name trump --seconds 180 --config cpu --detector
dlib``: 218 steps, holdout 33.48 dB). dB relative to the identity's holdout PSNR, 8 crops per
video, 1 per photo, dlib detector, fp32 CPU::

    input                                              demo            trump
    its own enrollment video                           +0.54           +0.16
    own person, "new recording" of a photo (the astronaut photo / a holdout frame of Trump):
      brightness x0.8 / x1.15                          +3.50 / +0.39   +1.82 / -1.29
      gamma 1.3 (strong tone change)                   -1.47           -3.67
      white balance R x1.1, B x0.9                     +1.76           -0.14
      mirrored / JPEG q30 / noise 0.03 / blur 1.5      -0.32 .. +3.17  -1.17 .. +2.56
      half resolution                                  -1.90           -1.30
    other people:
      skimage camera() (CC0)                           -5.41           -17.29
      real videos in ../shared/data (demo: 8 people,   -4.97 .. -14.24 -5.50 .. -18.27
        trump: the 7 others): dfrf_cnn2, mimictalk
        German / May / Trump, retalking_face2,
        sadtalker Radio34 / AOC / Markey
      the astronaut video (for trump)                  .               -17.45

Same person: at worst -3.67 dB (a strong gamma change), otherwise within 2 dB. Other people:
at best -4.97 dB (demo on sadtalker_RD_Radio34; single crops of it reach -3.2) and -5.50 dB
(trump on retalking_face2, a man of similar colouring). The classes are only ~1.3 dB apart,
so the margin is a compromise; 4 dB leaves 0.3 dB to the strongest same-person change and
~1 dB to the closest stranger, i.e. it errs towards refusing (a refused user can enroll from
this very video, which always matches, or use Wav2Lip only) rather than painting a stranger.
A per-channel affine fit (gain + offset) separated trump's cases better but let strangers
reach the demo's own level (+0.8 dB); raw PSNR (no gains) did not separate at all.
"""

from __future__ import annotations

import math
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ladtalk.errors import InputError
from ladtalk.face.crop import CropConfig, crop_faces, face_region

DEFAULT_FRAMES = 8
DEFAULT_MARGIN_DB = 4.0
#: the restoration test's margin (dB below the identity's own gain on its held-out frames)
DEFAULT_GAIN_MARGIN_DB = 3.0
ABSOLUTE_THRESHOLD_DB = 25.0
CHECK_MODES = ("refuse", "warn", "off")
NONE_CHOICE = "none (Wav2Lip only)"  # the app's Wav2Lip-only picker value


def check_mode(mode: Any) -> str:
    """Validate an ``identity_check`` mode ("refuse", "warn" or "off")."""
    m = str(mode or "").strip().lower()
    if m not in CHECK_MODES:
        raise InputError(f"--identity-check must be one of {', '.join(CHECK_MODES)}, got "
                         f"{mode!r}")
    return m


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

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for k in ("psnr_input", "psnr_holdout", "threshold", "psnr_raw", "gain_input",
                  "gain_reference"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 3)
        d["psnr_frames"] = [round(float(v), 3) for v in self.psnr_frames]
        return d

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
    import torch
    if isinstance(obj, torch.nn.Module):
        from ladtalk.generation.restore import Restorer
        try:
            dev = next(obj.parameters()).device
        except StopIteration:
            dev = torch.device("cpu")
        return Restorer(obj, device=dev, precision="fp32")
    raise TypeError(f"check_identity needs a Restorer-like object (resolution, restore) or an "
                    f"SOVQAE model, got {type(obj).__name__}")


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of two ``(N, H, W, C)`` batches in [0, 255] on the [0, 1] scale."""
    x = np.asarray(a, dtype=np.float64) / 255.0
    y = np.asarray(b, dtype=np.float64) / 255.0
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(axis=1)
    return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))


def match_gains(rec: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``rec`` times one least-squares gain per image and colour channel (no offset), clipped
    to [0, 255]: the von Kries model of a change of exposure / white balance between two
    recordings (the pipeline's colour-matched paste-back undoes such a change too)."""
    r = np.asarray(rec, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    gain = (r * t).sum(axis=(1, 2)) / np.maximum((r * r).sum(axis=(1, 2)), 1e-9)  # (N, C)
    return np.clip(r * gain[:, None, None, :], 0.0, 255.0)


def _plain_restore(restorer: Any, crops: np.ndarray) -> np.ndarray:
    """``restorer.restore(crops)``, without fusion when the restorer has it (a
    :class:`ladtalk.generation.restore.Restorer` with a ``fusion`` config mixes the input back in; the
    holdout PSNR is the model's own reconstruction)."""
    import inspect
    try:
        takes_fusion = "fusion" in inspect.signature(restorer.restore).parameters
    except (TypeError, ValueError):
        takes_fusion = False
    return restorer.restore(crops, fusion=None) if takes_fusion else restorer.restore(crops)


def _holdout(meta: Optional[dict]) -> Optional[float]:
    v = (meta or {}).get("holdout_psnr")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def lipsync_gains(restorer_or_model: Any, crops_uint8: np.ndarray,
                  mean_rgb: Optional[Sequence[float]] = None) -> np.ndarray:
    """Per crop, the identity's restoration gain (dB, lower-face paste mask, [0, 1] scale) on
    the generation path: the crop area-reduced to 96 px and bicubic back up (what the identity
    is fed), restored (no fusion), against that input. An identity restores its own person's
    face from 96 px (a positive gain on its held-out frames); on another person it paints its
    own detail and loses several dB. ``mean_rgb``: the identity's own mean colour (its
    ``identity_match_reference``); each crop is first scaled per channel to it (a darker or
    warmer recording of the same person is the same person), and colour gains as in
    :func:`match_gains` are applied to the restoration."""
    import cv2

    from ladtalk.generation.blend import lower_face_mask
    restorer = _as_restorer(restorer_or_model)
    crops = np.asarray(crops_uint8)
    if crops.ndim == 3:
        crops = crops[None]
    if mean_rgb is not None:
        own = crops.reshape(len(crops), -1, 3).astype(np.float64).mean(axis=1)  # (N, 3)
        scale = np.asarray(mean_rgb, np.float64)[None] / np.maximum(own, 1.0)
        crops = np.clip(np.rint(crops * scale[:, None, None, :]), 0, 255).astype(np.uint8)
    side = crops.shape[1]
    if side <= 96:
        deg = crops
    else:
        deg = np.stack([cv2.resize(cv2.resize(c, (96, 96), interpolation=cv2.INTER_AREA),
                                   (side, side), interpolation=cv2.INTER_CUBIC) for c in crops])
    rec = np.asarray(_plain_restore(restorer, deg))
    if rec.dtype != np.uint8:
        rec = np.clip(np.rint(rec.astype(np.float64)), 0, 255).astype(np.uint8)
    mask = np.asarray(lower_face_mask(side)) > 0

    def masked_psnr(a: np.ndarray) -> np.ndarray:
        d = (np.asarray(a, np.float64) - crops.astype(np.float64))[:, mask] / 255.0
        return 10.0 * np.log10(1.0 / np.maximum((d ** 2).reshape(len(d), -1).mean(1), 1e-12))

    return masked_psnr(match_gains(rec, crops)) - masked_psnr(deg)


def colour_reference(crops_uint8: np.ndarray) -> List[float]:
    """Mean RGB (0-255) of an identity's held-out crops, for :func:`lipsync_gains`."""
    c = np.asarray(crops_uint8).reshape(-1, 3).astype(np.float64)
    return [round(float(v), 3) for v in c.mean(axis=0)]


def _gain_reference(meta: Optional[dict]) -> Optional[float]:
    v = ((meta or {}).get("identity_match_reference") or {}).get("lipsync_gain_db")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def check_identity(restorer_or_model: Any, crops_uint8: np.ndarray, meta: Optional[dict],
                   *, margin_db: float = DEFAULT_MARGIN_DB,
                   absolute_db: float = ABSOLUTE_THRESHOLD_DB, identity: Optional[str] = None,
                   source: Optional[str] = None,
                   gain_margin_db: float = DEFAULT_GAIN_MARGIN_DB) -> IdentityMatch:
    """Reconstruct ``crops_uint8`` (uint8 RGB ``(N, H, W, 3)`` or one ``(H, W, 3)``, framed as
    for generation at the identity's resolution) with the identity and compare the mean PSNR
    with ``meta["holdout_psnr"] - margin_db`` (or ``absolute_db`` when meta has none); when
    meta has ``identity_match_reference`` (identities enrolled since the 256 px recipe) the
    restoration gain on the generation path (:func:`lipsync_gains`) must also be within
    ``gain_margin_db`` of the identity's own. Both must hold.

    ``restorer_or_model``: a :class:`ladtalk.generation.restore.Restorer`, any object with
    ``resolution`` and ``restore(uint8 crops) -> uint8 crops``, or an SOVQAE module.
    ``identity`` / ``source`` only name things in :meth:`IdentityMatch.message`.
    """
    restorer = _as_restorer(restorer_or_model)
    crops = np.asarray(crops_uint8)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3 or len(crops) == 0:
        raise ValueError(f"check_identity expects uint8 RGB crops (N, H, W, 3) with N >= 1, got "
                         f"{crops.dtype} {crops.shape}")
    rec = np.asarray(_plain_restore(restorer, crops))
    if rec.dtype != np.uint8:
        rec = np.clip(np.rint(rec.astype(np.float64)), 0, 255).astype(np.uint8)
    if rec.shape != crops.shape:
        raise ValueError(f"the restorer returned {rec.shape} for crops of shape {crops.shape}")
    per = psnr_uint8(match_gains(rec, crops), crops)
    psnr_in = float(per.mean())
    psnr_raw = float(psnr_uint8(rec, crops).mean())
    hold = _holdout(meta)
    if hold is not None:
        threshold, reference = hold - float(margin_db), "holdout"
    else:
        threshold, reference = float(absolute_db), "absolute"
    gain_ref = _gain_reference(meta)
    gain_in = None
    if gain_ref is not None:
        mean_rgb = (meta.get("identity_match_reference") or {}).get("mean_rgb")
        gain_in = float(lipsync_gains(restorer, crops, mean_rgb).mean())
    m = IdentityMatch(psnr_input=psnr_in, psnr_holdout=hold, margin_db=float(margin_db),
                      threshold=float(threshold), frames=int(len(crops)), matches=False,
                      reference=reference, identity=identity, source=source,
                      psnr_frames=[float(v) for v in per], psnr_raw=psnr_raw,
                      gain_input=gain_in, gain_reference=gain_ref,
                      gain_margin_db=float(gain_margin_db) if gain_ref is not None else None)
    m.matches = bool(m.psnr_ok and m.gain_ok)
    return m


# ------------------------------------------------------------------ crops of an input
def spread(indices: Sequence[int], n: int) -> np.ndarray:
    """Up to ``n`` of ``indices``, spread evenly (first and last included)."""
    idx = np.asarray(indices, dtype=np.int64)
    if len(idx) <= n:
        return idx
    pos = np.unique(np.round(np.linspace(0, len(idx) - 1, n)).astype(np.int64))
    return idx[pos]


def sample_face_crops(info, fps: float, resolution: int, frame_size: Tuple[int, int], *,
                      boxes: Optional[np.ndarray] = None, fixed: Optional[np.ndarray] = None,
                      crop_cfg: CropConfig = CropConfig(),
                      resize: Optional[Tuple[int, int]] = None, n: int = DEFAULT_FRAMES,
                      chunk_size: int = 16) -> np.ndarray:
    """Face crops of ``n`` source frames spread evenly over the video, with the pipeline's
    framing at ``resolution`` px: ``boxes`` (per-frame ``(x1, y1, x2, y2)``, NaN = no face;
    the pass-1 track of :meth:`ladtalk.generation.pipeline.Pipeline.run`) or one ``fixed`` box for every
    frame. Frames are decoded as in pass 1 (``decode_chunks`` at ``fps``, ``resize``);
    decoding stops after the last chosen frame. Returns ``(k, res, res, 3)`` uint8, k <= n."""
    from ladtalk.media.framesource import decode_chunks
    if boxes is None and fixed is None:
        raise ValueError("sample_face_crops needs boxes or a fixed box")
    if boxes is not None:
        candidates = np.flatnonzero(~np.isnan(np.asarray(boxes, dtype=np.float64)).any(axis=1))
    else:
        total = 1 if info.is_image else max(1, int(round((info.duration or 0) * fps))
                                            or int(info.n_frames or 1))
        candidates = np.arange(total)
    pick = spread(candidates, max(1, int(n)))
    if not len(pick):
        return np.zeros((0, resolution, resolution, 3), np.uint8)
    want = set(int(i) for i in pick)
    last = int(pick[-1])
    out: List[np.ndarray] = []
    tail: Optional[Tuple[np.ndarray, int]] = None
    start = 0
    with closing(decode_chunks(info, fps, chunk_size, resize)) as chunks:
        for chunk in chunks:
            sel, regions = [], []
            for j in range(len(chunk)):
                s = start + j
                if s not in want:
                    continue
                box = fixed if boxes is None else boxes[s]
                try:
                    regions.append(face_region(box, frame_size, crop_cfg))
                except ValueError:
                    continue
                sel.append(j)
            if sel:
                out.append(crop_faces(chunk[sel], regions, resolution))
            if len(chunk):
                tail = (chunk[-1], start + len(chunk) - 1)
            start += len(chunk)
            if start > last:
                break
    if not out and fixed is not None and tail is not None:  # shorter than estimated
        try:
            out.append(crop_faces(tail[0][None], [face_region(fixed, frame_size, crop_cfg)],
                                  resolution))
        except ValueError:
            pass
    if not out:
        return np.zeros((0, resolution, resolution, 3), np.uint8)
    return np.concatenate(out)


def video_face_crops(face: Union[str, Path], resolution: int, *, detector: Any = "dlib",
                     n: int = DEFAULT_FRAMES, box: Optional[Sequence[float]] = None,
                     pads: Tuple[int, int, int, int] = (0, 10, 0, 0),
                     fps: Optional[float] = None) -> np.ndarray:
    """Face crops of a video / photo file for a stand-alone check (scripts, notebooks):
    ``n`` frames spread evenly, the face detected on each of them (largest face; ``detector``
    a name or a detector object) or ``box`` ``(y1, y2, x1, x2)`` for all, and the generation
    framing. (:meth:`Pipeline.run` uses its own smoothed pass-1 track instead.)"""
    from ladtalk.face.detect import make_detector
    from ladtalk.face.track import select_largest
    from ladtalk.media.framesource import decode_chunks
    from ladtalk.media.video import probe
    info = probe(face)
    rate = float(fps or (25.0 if info.is_image else (info.fps or 25.0)))
    size = (info.width, info.height)
    cfg = CropConfig(pads=tuple(int(p) for p in pads))
    if box is not None:
        y1, y2, x1, x2 = (float(v) for v in box)
        return sample_face_crops(info, rate, resolution, size, fixed=np.array([x1, y1, x2, y2]),
                                 crop_cfg=cfg, n=n)
    det = make_detector(detector) if isinstance(detector, str) else detector
    total = 1 if info.is_image else max(1, int(round(info.duration * rate)))
    pick = set(int(i) for i in spread(range(total), n))
    crops: List[np.ndarray] = []
    start = 0
    with closing(decode_chunks(info, rate, 16)) as chunks:
        for chunk in chunks:
            sel = [j for j in range(len(chunk)) if start + j in pick]
            if sel:
                boxes, _ = select_largest(det.detect(chunk[sel]))
                for j, b in zip(sel, boxes):
                    if not np.isnan(b).any():
                        try:
                            region = face_region(b, size, cfg)
                        except ValueError:
                            continue
                        crops.append(crop_faces(chunk[j][None], [region], resolution)[0])
            start += len(chunk)
            if pick and start > max(pick):
                break
    if not crops:
        raise InputError(f"no face found in the sampled frames of {face}; pass a fixed box")
    return np.stack(crops)


def run_identity_check(restorer: Any, identity: Optional[str], mode: str, *, info, fps: float,
                       frame_size: Tuple[int, int], boxes: Optional[np.ndarray] = None,
                       fixed: Optional[np.ndarray] = None, crop_cfg: CropConfig = CropConfig(),
                       resize: Optional[Tuple[int, int]] = None, source: Optional[str] = None,
                       warn: Optional[Callable[[str], None]] = None,
                       n: int = DEFAULT_FRAMES, chunk_size: int = 16,
                       margin_db: float = DEFAULT_MARGIN_DB) -> Optional[IdentityMatch]:
    """The pipeline's step: crops of the input, :func:`check_identity` against the identity's
    ``meta.json``, then per ``mode`` raise :class:`InputError` ("refuse"), call ``warn``
    ("warn") or do nothing ("off", which also skips the measurement). Returns the result
    (None when off or when no crop could be made)."""
    import logging
    log = logging.getLogger("ladtalk.generation.identity_match")
    mode = check_mode(mode)
    if mode == "off" or restorer is None:
        return None
    meta: dict = {}
    name = None
    if identity is not None:
        from ladtalk.identities.store import read_meta, resolve_identity
        name = Path(str(identity)).name
        try:
            meta = read_meta(resolve_identity(identity))
        except InputError:  # a custom restorer with a label that is not a stored identity
            meta = {}
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


__all__ = ["IdentityMatch", "check_identity", "check_mode", "sample_face_crops",
           "video_face_crops", "run_identity_check", "psnr_uint8", "match_gains", "spread",
           "CHECK_MODES", "DEFAULT_FRAMES", "DEFAULT_MARGIN_DB", "ABSOLUTE_THRESHOLD_DB"]
