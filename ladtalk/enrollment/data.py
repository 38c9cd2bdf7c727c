"""Training data for enrollment: face crops of one video, a time-ordered holdout, batches.

Crops
-----
:func:`extract_crops` makes the crops the SOVQAE trains on with exactly the framing the
generation stage uses: the video is streamed twice (pass 1 detects and tracks the face with
temporal box smoothing, :func:`ladtalk.face.track_faces`; pass 2 crops each kept frame with
:func:`ladtalk.face.face_region` + :func:`ladtalk.face.crop_face` under the same
:class:`~ladtalk.face.CropConfig`), so memory is bounded by one decoded chunk plus the crops
themselves. Long videos are subsampled evenly in time to at most ``max_frames`` crops. Frames
without a face are skipped (their timestamps are reported). The result is a ``uint8``
``(N, S, S, 3)`` RGB array, cached as ``.npz`` (plain arrays, never pickles) under
``$LADTALK_HOME/cache/crops`` keyed by the video's path, size and mtime and every framing
parameter, so resuming an enrollment does not detect faces again.

Holdout
-------
:func:`split_holdout` holds out the **last** fraction of the crops (by time, not at random):
neighbouring video frames are nearly identical, so a random split would measure memorisation.

Batches
-------
:class:`CropSampler` draws training batches as NCHW float tensors in ``[0, 1]`` with light,
generation-consistent augmentation (horizontal flip, a few pixels of shift / a few percent of
scale as box jitter, small brightness / contrast changes) and optional random patches
(the networks are convolutional, so a 64 px patch costs a quarter of a 128 px crop).
:func:`random_degradation` is the degradation augmentation: the restoration task (degraded
input -> clean target) with blur / noise / down-up strengths drawn from ranges around the ones
we evaluate.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ladtalk.errors import InputError
from ladtalk._util.paths import ladtalk_home

log = logging.getLogger(__name__)

#: Fewest face crops enrollment accepts (after holdout there must be something to train on).
MIN_FRAMES = 8
CACHE_VERSION = 1


@dataclass
class FaceCrops:
    """Face crops of one video in time order.

    ``crops`` (N, S, S, 3) uint8 RGB; ``frame_indices`` (N,) index of each crop's frame in the
    decoded video; ``boxes`` (N, 4) smoothed detector boxes (x1, y1, x2, y2, frame pixels);
    ``regions`` (N, 4) integer crop regions (x1, y1, x2, y2); ``fps`` of the video;
    ``n_video_frames`` decoded frames; ``missing`` frame indices without a face.
    """

    crops: np.ndarray
    frame_indices: np.ndarray
    boxes: np.ndarray
    regions: np.ndarray
    fps: float
    n_video_frames: int
    missing: List[int] = field(default_factory=list)
    detector: str = ""

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    @property
    def resolution(self) -> int:
        return int(self.crops.shape[1])

    def timestamps(self) -> np.ndarray:
        return self.frame_indices / float(self.fps or 25.0)

    @property
    def face_px(self) -> float:
        """Median crop side in source pixels (the measured face size)."""
        if len(self.regions) == 0:
            return 0.0
        return float(np.median(self.regions[:, 2] - self.regions[:, 0]))

    def subset(self, idx: Sequence[int]) -> "FaceCrops":
        idx = np.asarray(idx, dtype=np.int64)
        return FaceCrops(self.crops[idx], self.frame_indices[idx], self.boxes[idx],
                         self.regions[idx], self.fps, self.n_video_frames, list(self.missing),
                         self.detector)

    def summary(self) -> dict:
        ts = self.timestamps()
        return {"crops": len(self), "resolution": self.resolution, "fps": self.fps,
                "video_frames": self.n_video_frames, "frames_without_face": len(self.missing),
                "face_px": round(self.face_px, 1),
                "first_s": float(ts[0]) if len(ts) else None,
                "last_s": float(ts[-1]) if len(ts) else None, "detector": self.detector}


# -- extraction --------------------------------------------------------------------------------
def _cache_key(video: Path, resolution, detector: str, crop_config, max_frames: int,
               detect_every: int) -> str:
    st = video.stat()
    text = repr((CACHE_VERSION, str(video.resolve()), st.st_size, st.st_mtime_ns, resolution,
                 detector, repr(crop_config), int(max_frames), int(detect_every)))
    return hashlib.sha1(text.encode()).hexdigest()[:20]


#: identity resolution by measured face size (median crop side in source pixels): the
#: largest entry whose threshold the face reaches (see :func:`choose_resolution`)
RESOLUTION_STEPS: Tuple[Tuple[float, int], ...] = ((200.0, 256), (0.0, 128))


def choose_resolution(face_px: float, steps: Sequence[Tuple[float, int]] = RESOLUTION_STEPS
                      ) -> int:
    """The identity resolution for faces of ``face_px`` source pixels (median crop side):
    256 px from 200 px up (restoring a 300 px face at 128 px throws its detail away), 128 px
    below (upsampling a small face buys nothing but compute)."""
    if not (face_px > 0 and np.isfinite(face_px)):
        raise ValueError(f"face size must be a positive number of pixels, got {face_px}")
    for threshold, res in sorted(steps, reverse=True):
        if face_px >= threshold:
            return int(res)
    return int(min(r for _, r in steps))


def crop_cache_dir() -> Path:
    return ladtalk_home() / "cache" / "crops"


def _save_npz_atomic(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_cache(path: Path) -> Optional[FaceCrops]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return FaceCrops(crops=z["crops"], frame_indices=z["frame_indices"], boxes=z["boxes"],
                             regions=z["regions"], fps=float(z["fps"]),
                             n_video_frames=int(z["n_video_frames"]),
                             missing=[int(v) for v in z["missing"]], detector=str(z["detector"]))
    except Exception as exc:  # noqa: BLE001 - a bad cache is just rebuilt
        log.warning("ignoring unreadable crop cache %s (%s)", path, exc)
        return None


def select_frames(n_with_face: int, max_frames: int) -> np.ndarray:
    """Positions (into the frames that have a face) to keep: all, or ``max_frames`` evenly."""
    if max_frames <= 0 or n_with_face <= max_frames:
        return np.arange(n_with_face)
    return np.unique(np.round(np.linspace(0, n_with_face - 1, max_frames)).astype(np.int64))


def _load_boxes(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["boxes"], float(z["fps"]), str(z["detector"])
    except Exception as exc:  # noqa: BLE001 - a bad cache is just rebuilt
        log.warning("ignoring unreadable box cache %s (%s)", path, exc)
        return None


def extract_crops(video, resolution: Union[int, str], detector="auto", *, device=None,
                  crop_config=None, max_frames: int = 3000, detect_every: Optional[int] = None,
                  cache: bool = True,
                  progress: Optional[Callable[[str, int, int], None]] = None) -> FaceCrops:
    """Detect, track and crop the face in every (kept) frame of ``video`` (see module doc).

    ``resolution``: crop side in px, or ``"auto"``: :func:`choose_resolution` of the measured
    face size (median crop side of the kept frames). ``detector`` is a name for
    :func:`ladtalk.face.make_detector` (``dlib``, ``s3fd``, ``auto``) or a detector object.
    ``detect_every`` (default: 1 up to 1500 frames, then 2) runs the detector on every k-th
    frame and interpolates between. ``progress(phase, done, total)`` is called with phase
    ``"detect"`` / ``"crop"``. The smoothed boxes and the crops are cached separately, so
    cropping the same video at another resolution does not detect again. Raises
    :class:`InputError` for a missing / empty / undecodable video, a still image, no face, or
    fewer than :data:`MIN_FRAMES` frames with a face.
    """
    from ladtalk.face import CropConfig, crop_face, face_region, make_detector, track_faces
    from ladtalk.face.track import FaceTrack
    from ladtalk.media.video import iter_frames, probe

    path = Path(video).expanduser()
    if not path.is_file():
        raise InputError(f"enrollment video {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"enrollment video {path} is empty (0 bytes); pass a video of the "
                         "person talking (ideally 1-5 minutes, frontal face)")
    auto = isinstance(resolution, str)
    if auto and resolution != "auto":
        raise ValueError(f"resolution must be a number of pixels or 'auto', got {resolution!r}")
    info = probe(path)
    if info.is_image:
        raise InputError(f"{path} is a still image; enrollment needs a video of the person "
                         f"(at least {MIN_FRAMES} frames with a visible face)")
    crop_config = crop_config or CropConfig()
    det_name = detector if isinstance(detector, str) else getattr(detector, "name", "custom")
    est = max(1, info.n_frames)
    k = int(detect_every) if detect_every else (1 if est <= 1500 else 2)
    use_cache = cache and isinstance(detector, str)

    def crops_cache(res: int) -> Path:
        return crop_cache_dir() / (_cache_key(path, int(res), det_name, crop_config,
                                              max_frames, k) + ".npz")

    def cached(res: int) -> Optional[FaceCrops]:
        if not use_cache or not crops_cache(res).is_file():
            return None
        got = _load_cache(crops_cache(res))
        if got is not None and len(got) >= MIN_FRAMES:
            log.info("using cached face crops %s", crops_cache(res))
            return got
        return None

    if not auto:
        got = cached(int(resolution))
        if got is not None:
            return got
    boxes_path = crop_cache_dir() / (_cache_key(path, "boxes", det_name, crop_config, 0, k)
                                     + ".boxes.npz")
    track = None
    got_boxes = _load_boxes(boxes_path) if use_cache and boxes_path.is_file() else None
    if got_boxes is not None:
        boxes, fps, det_used = got_boxes
        track = FaceTrack(boxes=boxes, raw_boxes=boxes, scores=np.zeros(len(boxes)), fps=fps,
                          frame_size=(info.width, info.height), detector=det_used)
    else:
        det = make_detector(detector, device=device) if isinstance(detector, str) else detector
        fps = float(info.fps or 25.0)

        def _detect_progress(n: int) -> None:
            if progress is not None:
                progress("detect", n, est)

        track = track_faces(iter_frames(path, chunk_size=16), det, fps=fps, detect_every=k,
                            progress=_detect_progress)
        if len(track) == 0:
            raise InputError(f"no frames could be decoded from {path}")
        track.detector = getattr(det, "name", det_name)
        if use_cache:
            _save_npz_atomic(boxes_path, {"boxes": track.boxes, "fps": np.float64(track.fps),
                                          "detector": np.str_(track.detector)})
    track.require_face(str(path))
    has = ~np.isnan(track.boxes).any(axis=1)
    face_frames = np.flatnonzero(has)
    keep = face_frames[select_frames(len(face_frames), max_frames)]
    if len(keep) < MIN_FRAMES:
        raise InputError(f"{path}: only {len(keep)} frames with a detectable face (of "
                         f"{len(track)}); enrollment needs at least {MIN_FRAMES}. "
                         f"{track.report(str(path))}. Use a longer video with the face visible")
    if auto:
        sides = [face_region(track.boxes[n], (info.width, info.height), crop_config).width
                 for n in keep]
        resolution = choose_resolution(float(np.median(sides)))
        log.info("face %.0f px -> identity resolution %d px", float(np.median(sides)),
                 resolution)
        got = cached(int(resolution))
        if got is not None:
            return got
    resolution = int(resolution)
    keep_set = np.zeros(len(track), dtype=bool)
    keep_set[keep] = True
    crops = np.empty((len(keep), resolution, resolution, 3), dtype=np.uint8)
    regions = np.empty((len(keep), 4), dtype=np.int64)
    j = 0
    n = 0
    for chunk in iter_frames(path, chunk_size=16):
        for frame in chunk:
            if n < len(keep_set) and keep_set[n]:
                region = face_region(track.boxes[n], (frame.shape[1], frame.shape[0]), crop_config)
                crops[j] = crop_face(frame, region, resolution)
                regions[j] = region.as_tuple()
                j += 1
            n += 1
        if progress is not None:
            progress("crop", n, len(track))
    if j != len(keep):
        raise InputError(f"{path} decoded to a different number of frames on the second pass "
                         f"({n} vs {len(track)}); re-export it (e.g. as H.264 MP4)")
    if track.missing_frames:
        log.warning(track.report(str(path)))
    out = FaceCrops(crops=crops, frame_indices=keep.astype(np.int64), boxes=track.boxes[keep],
                    regions=regions, fps=float(track.fps), n_video_frames=len(track),
                    missing=track.missing_frames, detector=track.detector or det_name)
    if use_cache:
        _save_npz_atomic(crops_cache(resolution), {
            "crops": out.crops, "frame_indices": out.frame_indices, "boxes": out.boxes,
            "regions": out.regions, "fps": np.float64(out.fps),
            "n_video_frames": np.int64(out.n_video_frames),
            "missing": np.asarray(out.missing, dtype=np.int64), "detector": np.str_(out.detector)})
    return out


# -- holdout ----------------------------------------------------------------------------------
def split_holdout(n: int, fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(train, holdout)`` index arrays: the last ``fraction`` of ``n`` time-ordered items.

    At least one item is held out when ``fraction > 0`` and at least :data:`MIN_FRAMES` - 1
    remain for training; ``fraction = 0`` holds out nothing.
    """
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"holdout fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return np.arange(n), np.arange(0)
    k = max(1, int(round(n * fraction)))
    if n - k < max(1, MIN_FRAMES - 1):
        raise InputError(f"too few frames ({n}) to hold out {fraction:.0%} and still train; "
                         "use a longer video or a smaller --holdout")
    return np.arange(n - k), np.arange(n - k, n)


# -- batches ----------------------------------------------------------------------------------
def to_tensor01(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)


def _jitter(x: torch.Tensor, gen: torch.Generator, shift: float, scale: float) -> torch.Tensor:
    """Per-image random translation (fraction of the size) and zoom, bilinear, border pad."""
    b = x.shape[0]
    s = 1.0 + (torch.rand(b, generator=gen) * 2 - 1) * scale
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * shift * 2  # in [-1, 1] grid units
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = s
    theta[:, 1, 1] = s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class CropSampler:
    """Random training batches from uint8 crops (see module doc); deterministic per ``seed``."""

    def __init__(self, crops: np.ndarray, batch_size: int, *, patch: int = 0, flip: bool = True,
                 shift: float = 0.02, scale: float = 0.03, color: float = 0.05,
                 seed: int = 0) -> None:
        if len(crops) == 0:
            raise InputError("no training crops")
        self.crops = crops
        self.batch_size = int(batch_size)
        self.patch = int(patch) if patch and patch < crops.shape[1] else 0
        self.flip, self.shift, self.scale, self.color = flip, float(shift), float(scale), float(color)
        self.gen = torch.Generator().manual_seed(int(seed))

    def sample(self, full: bool = False) -> torch.Tensor:
        """A (B, 3, h, w) batch in [0, 1]; ``full=True`` ignores ``patch``."""
        idx = torch.randint(len(self.crops), (self.batch_size,), generator=self.gen).numpy()
        x = to_tensor01(self.crops[idx])
        b = x.shape[0]
        if self.flip:
            f = torch.rand(b, generator=self.gen) < 0.5
            x[f] = x[f].flip(-1)
        if self.shift > 0 or self.scale > 0:
            x = _jitter(x, self.gen, self.shift, self.scale)
        if self.color > 0:
            gain = 1.0 + (torch.rand(b, 1, 1, 1, generator=self.gen) * 2 - 1) * self.color
            bias = (torch.rand(b, 1, 1, 1, generator=self.gen) * 2 - 1) * self.color * 0.5
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * gain + mean + bias).clamp_(0.0, 1.0)
        if self.patch and not full:
            p = self.patch
            oy, ox = (int(v) for v in torch.randint(x.shape[-1] - p + 1, (2,), generator=self.gen))
            x = x[..., oy:oy + p, ox:ox + p]
        return x.contiguous()

    def state(self) -> torch.Tensor:
        return self.gen.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.gen.set_state(state)


@dataclass(frozen=True)
class DegradationRanges:
    """Strength ranges of the degradation augmentation (uniform draws) and how often each
    kind is drawn.

    Blur sigma in pixels at the crop resolution; noise sigma on the [0, 1] scale; down-up
    target size as a fraction of the crop side. ``lipsync`` is the generation path itself:
    area-down to ``lipsync_size`` px (Wav2Lip's 96), a Gaussian of sigma drawn from
    ``lipsync_sigma`` *at that size* (Wav2Lip's L1-trained output is softer than a plain
    reduction), rounding to 8 bits (Wav2Lip writes uint8), then bicubic back up to the crop
    side. ``weights`` are the relative frequencies of (blur, noise, down-up, lipsync).
    """

    blur: Tuple[float, float] = (0.5, 3.0)
    noise: Tuple[float, float] = (0.02, 0.15)
    down: Tuple[float, float] = (0.4, 0.9)
    lipsync_sigma: Tuple[float, float] = (0.0, 1.5)
    lipsync_size: int = 96
    weights: Tuple[float, float, float, float] = (1.0, 1.0, 1.0, 0.0)


def lipsync_degradation(x01: torch.Tensor, sigma: float, size: int = 96) -> torch.Tensor:
    """What the identity stage is fed at generation: ``x01`` (B, 3, S, S) in [0, 1] reduced
    to ``size`` px by area averaging, softened by a Gaussian of ``sigma`` px at that size,
    rounded to 8 bits, and bicubic-upsampled back to S (clamped). For S <= ``size`` only the
    softening and rounding apply."""
    from ladtalk.analysis.degrade import _blur_canonical
    from ladtalk.generation.restore import resize01

    side = x01.shape[-1]
    small = resize01(x01, size) if side > size else x01
    if sigma > 0:
        small = _blur_canonical(small, float(sigma))
    small = (small.clamp(0.0, 1.0) * 255.0).round() / 255.0
    return resize01(small, side) if side > size else small


def random_degradation(x01: torch.Tensor, gen: torch.Generator,
                       ranges: DegradationRanges = DegradationRanges()) -> torch.Tensor:
    """Degrade each image of a [0, 1] batch with one randomly chosen degradation (blur, noise,
    area-down / bicubic-up, or the generation path :func:`lipsync_degradation`, drawn with
    ``ranges.weights``) of random strength; returns a new tensor."""
    from ladtalk.analysis.degrade import _blur_canonical, _down_up_canonical

    out = torch.empty_like(x01)
    side = x01.shape[-1]
    w = torch.tensor([max(0.0, float(v)) for v in ranges.weights], dtype=torch.float64)
    if float(w.sum()) <= 0:
        raise ValueError(f"degradation weights must not all be zero, got {ranges.weights}")
    for i in range(x01.shape[0]):
        xi = x01[i:i + 1]
        kind = int(torch.multinomial(w, 1, generator=gen))
        u = float(torch.rand(1, generator=gen))
        if kind == 0:
            lo, hi = ranges.blur
            out[i:i + 1] = _blur_canonical(xi, lo + (hi - lo) * u)
        elif kind == 1:
            lo, hi = ranges.noise
            noise = torch.randn(xi.shape, generator=gen).to(xi)
            out[i:i + 1] = (xi + (lo + (hi - lo) * u) * noise).clamp(0.0, 1.0)
        elif kind == 2:
            lo, hi = ranges.down
            size = max(4, min(side - 1, int(round(side * (lo + (hi - lo) * u)))))
            out[i:i + 1] = _down_up_canonical(xi, size)
        else:
            lo, hi = ranges.lipsync_sigma
            out[i:i + 1] = lipsync_degradation(xi, lo + (hi - lo) * u, ranges.lipsync_size)
    return out


def patch_windows(batch: int, side: int, patch: int, gen: torch.Generator,
                  area: Tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
                  focus: float = 0.0) -> List[Tuple[int, int]]:
    """Top-left corners ``(y, x)`` of ``batch`` random ``patch``-px windows in a ``side``-px
    crop: with probability ``focus`` the window lies inside ``area`` (fractions ``x0, y0, x1,
    y1`` of the crop, clipped to fit the patch), otherwise anywhere."""
    out = []
    x0, y0, x1, y1 = area
    for _ in range(batch):
        inside = focus > 0 and float(torch.rand(1, generator=gen)) < focus
        if inside:
            lo_y = min(int(round(y0 * side)), side - patch)
            hi_y = max(lo_y, min(int(round(y1 * side)) - patch, side - patch))
            lo_x = min(int(round(x0 * side)), side - patch)
            hi_x = max(lo_x, min(int(round(x1 * side)) - patch, side - patch))
        else:
            lo_y = lo_x = 0
            hi_y = hi_x = side - patch
        oy = lo_y + int(torch.randint(hi_y - lo_y + 1, (1,), generator=gen))
        ox = lo_x + int(torch.randint(hi_x - lo_x + 1, (1,), generator=gen))
        out.append((oy, ox))
    return out


def take_patches(x: torch.Tensor, windows: Sequence[Tuple[int, int]], patch: int) -> torch.Tensor:
    """Stack the ``patch``-px windows (one per image) of a (B, C, S, S) batch."""
    return torch.stack([x[i, :, oy:oy + patch, ox:ox + patch] for i, (oy, ox) in
                        enumerate(windows)]).contiguous()


def face_weight_map(size: int, strength: float, device=None) -> Optional[torch.Tensor]:
    """(1, 1, S, S) per-pixel loss weight, mean 1: ``1 + strength`` in a centred ellipse
    covering the inner face (eyes to chin) falling smoothly to 1 outside; ``None`` if 0."""
    if strength <= 0:
        return None
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    r = ((xx - 0.5) / 0.32) ** 2 + ((yy - 0.58) / 0.38) ** 2
    w = 1.0 + strength * torch.clamp(1.5 - r, 0.0, 1.0)
    w = w / w.mean()
    return w.view(1, 1, size, size).to(device)


def even_subset(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` indices spread evenly over ``range(n)``."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


__all__ = ["FaceCrops", "extract_crops", "split_holdout", "CropSampler", "DegradationRanges",
           "random_degradation", "lipsync_degradation", "patch_windows", "take_patches", "face_weight_map", "to_tensor01", "even_subset", "MIN_FRAMES",
           "crop_cache_dir", "select_frames", "choose_resolution", "RESOLUTION_STEPS"]

