"""Face crops of one video with the generation framing, cached by content; a time-ordered
holdout. How crops are made: ``docs/enrollment.md``; the cache (keys, bound, eviction):
``docs/storage.md``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ladtalk._util.diskcache import DiskCache, cache_limit, content_key
from ladtalk._util.paths import ladtalk_home
from ladtalk.errors import InputError
from ladtalk.face.crop import CropConfig, CropRegion, crop_face, face_region
from ladtalk.face.detect import make_detector
from ladtalk.face.track import FaceTrack, select_largest, track_faces
from ladtalk.media.decode import iter_frames
from ladtalk.media.probe import MediaInfo, probe

log = logging.getLogger(__name__)

#: Fewest face crops enrollment accepts (after holdout there must be something to train on).
MIN_FRAMES = 8
#: version of the cache entries' layout and keys (2: content-keyed entry folders)
CACHE_VERSION = 2
#: environment variable bounding the crop cache, in MB, and its default
CROP_CACHE_ENV = "LADTALK_CROP_CACHE_MB"
CROP_CACHE_MB = 2048
_CROPS_FILE, _BOXES_FILE = "crops.npz", "boxes.npz"


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
    """The cache key of one video's crops (``resolution`` a number) or boxes (``"boxes"``):
    its content and the settings, never its path or modification time."""
    return content_key(video, version=CACHE_VERSION, resolution=resolution, detector=detector,
                       crop=crop_config, max_frames=int(max_frames),
                       detect_every=int(detect_every))


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


def crop_cache() -> DiskCache:
    """The crop cache: ``$LADTALK_HOME/cache/crops``, bounded by ``LADTALK_CROP_CACHE_MB``
    (default :data:`CROP_CACHE_MB`), least recently used entries evicted first."""
    return DiskCache(crop_cache_dir(), cache_limit(CROP_CACHE_ENV, CROP_CACHE_MB))


def _write_npz(path: Path, arrays: dict) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _load_crops(entry: Path) -> FaceCrops:
    with np.load(entry / _CROPS_FILE, allow_pickle=False) as z:
        return FaceCrops(crops=z["crops"], frame_indices=z["frame_indices"], boxes=z["boxes"],
                         regions=z["regions"], fps=float(z["fps"]),
                         n_video_frames=int(z["n_video_frames"]),
                         missing=[int(v) for v in z["missing"]], detector=str(z["detector"]))


def _crops_arrays(out: FaceCrops) -> dict:
    return {"crops": out.crops, "frame_indices": out.frame_indices, "boxes": out.boxes,
            "regions": out.regions, "fps": np.float64(out.fps),
            "n_video_frames": np.int64(out.n_video_frames),
            "missing": np.asarray(out.missing, dtype=np.int64),
            "detector": np.str_(out.detector)}


def _load_boxes(entry: Path) -> Tuple[np.ndarray, float, str]:
    with np.load(entry / _BOXES_FILE, allow_pickle=False) as z:
        return z["boxes"], float(z["fps"]), str(z["detector"])


@dataclass
class _Job:
    """One ``extract_crops`` call: the video, its probe, the settings that key the caches."""

    path: Path
    info: MediaInfo
    detector: Any
    det_name: str
    crop_config: CropConfig
    max_frames: int
    detect_every: int
    use_cache: bool
    progress: Optional[Callable[[str, int, int], None]]
    cache: Optional[DiskCache] = None

    def __post_init__(self) -> None:
        if self.use_cache and self.cache is None:
            self.cache = crop_cache()
        if self.cache is not None and not self.cache.enabled:
            self.use_cache = False

    def crops_cache(self, res: int) -> str:
        """Cache key of this video's crops at ``res`` px."""
        return _cache_key(self.path, int(res), self.det_name, self.crop_config,
                          self.max_frames, self.detect_every)

    def boxes_cache(self) -> str:
        """Cache key of this video's smoothed face boxes."""
        return _cache_key(self.path, "boxes", self.det_name, self.crop_config, 0,
                          self.detect_every)

    def cached(self, res: int) -> Optional[FaceCrops]:
        if not self.use_cache:
            return None
        key = self.crops_cache(res)
        got = self.cache.read(key, _load_crops)
        if got is not None and len(got) >= MIN_FRAMES:
            log.info("using cached face crops %s", key)
            return got
        return None

    def store(self, key: str, name: str, arrays: dict) -> None:
        if self.use_cache:
            self.cache.put(key, lambda tmp: _write_npz(tmp / name, arrays))

    def report(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)


def _open_video(video) -> Tuple[Path, MediaInfo]:
    path = Path(video).expanduser()
    if not path.is_file():
        raise InputError(f"enrollment video {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"enrollment video {path} is empty (0 bytes); pass a video of the "
                         "person talking (ideally 1-5 minutes, frontal face)")
    info = probe(path)
    if info.is_image:
        raise InputError(f"{path} is a still image; enrollment needs a video of the person "
                         f"(at least {MIN_FRAMES} frames with a visible face)")
    return path, info


def _boxes_pass(job: _Job, device) -> FaceTrack:
    """Pass 1: detect and smooth the face boxes of every frame (cached per video)."""
    info = job.info
    key = job.boxes_cache() if job.use_cache else ""
    got = job.cache.read(key, _load_boxes) if job.use_cache else None
    if got is not None:
        boxes, fps, det_used = got
        return FaceTrack(boxes=boxes, raw_boxes=boxes, scores=np.zeros(len(boxes)), fps=fps,
                         frame_size=(info.width, info.height), detector=det_used)
    det = make_detector(job.detector, device=device) if isinstance(job.detector, str) \
        else job.detector
    est = max(1, info.n_frames)
    track = track_faces(iter_frames(job.path, chunk_size=16, info=info), det,
                        fps=float(info.fps or 25.0), detect_every=job.detect_every,
                        progress=lambda n: job.report("detect", n, est))
    if len(track) == 0:
        raise InputError(f"no frames could be decoded from {job.path}")
    track.detector = getattr(det, "name", job.det_name)
    job.store(key, _BOXES_FILE, {"boxes": track.boxes, "fps": np.float64(track.fps),
                                 "detector": np.str_(track.detector)})
    return track


def _kept_frames(job: _Job, track: FaceTrack) -> np.ndarray:
    track.require_face(str(job.path))
    keep = np.flatnonzero(~np.isnan(track.boxes).any(axis=1))  # the frames with a face
    if job.max_frames > 0:  # 0: keep all of them
        keep = keep[even_subset(len(keep), job.max_frames)]
    if len(keep) < MIN_FRAMES:
        raise InputError(f"{job.path}: only {len(keep)} frames with a detectable face (of "
                         f"{len(track)}); enrollment needs at least {MIN_FRAMES}. "
                         f"{track.report(str(job.path))}. Use a longer video with the face "
                         "visible")
    return keep


def _measured_resolution(job: _Job, track: FaceTrack, keep: np.ndarray) -> int:
    size = (job.info.width, job.info.height)
    face = float(np.median([face_region(track.boxes[n], size, job.crop_config).width
                            for n in keep]))
    resolution = choose_resolution(face)
    log.info("face %.0f px -> identity resolution %d px", face, resolution)
    return resolution


def _crops_pass(job: _Job, track: FaceTrack, keep: np.ndarray, resolution: int) -> FaceCrops:
    """Pass 2: crop the kept frames with the generation framing."""
    keep_set = np.zeros(len(track), dtype=bool)
    keep_set[keep] = True
    crops = np.empty((len(keep), resolution, resolution, 3), dtype=np.uint8)
    regions = np.empty((len(keep), 4), dtype=np.int64)
    j = n = 0
    for chunk in iter_frames(job.path, chunk_size=16, info=job.info):
        for frame in chunk:
            if n < len(keep_set) and keep_set[n]:
                region = face_region(track.boxes[n], (frame.shape[1], frame.shape[0]),
                                     job.crop_config)
                crops[j] = crop_face(frame, region, resolution)
                regions[j] = region.as_tuple()
                j += 1
            n += 1
        job.report("crop", n, len(track))
    if j != len(keep):
        raise InputError(f"{job.path} decoded to a different number of frames on the second "
                         f"pass ({n} vs {len(track)}); re-export it (e.g. as H.264 MP4)")
    if track.missing_frames:
        log.warning(track.report(str(job.path)))
    return FaceCrops(crops=crops, frame_indices=keep.astype(np.int64), boxes=track.boxes[keep],
                     regions=regions, fps=float(track.fps), n_video_frames=len(track),
                     missing=track.missing_frames, detector=track.detector or job.det_name)


def extract_crops(video, resolution: Union[int, str], detector="auto", *, device=None,
                  crop_config=None, max_frames: int = 3000, detect_every: Optional[int] = None,
                  cache: bool = True,
                  progress: Optional[Callable[[str, int, int], None]] = None) -> FaceCrops:
    """Detect, track and crop the face in every kept frame of ``video``; cached by content.

    ``resolution``: crop side in px, or ``"auto"`` (:func:`choose_resolution` of the measured
    face size). ``detector``: a name for :func:`ladtalk.face.make_detector` or a detector.
    ``detect_every`` (default 1 up to 1500 frames, then 2) interpolates between detections;
    ``progress(phase, done, total)`` gets ``"detect"`` / ``"crop"``. Raises
    :class:`InputError` for a missing, empty or undecodable video, a still image, no face,
    or fewer than :data:`MIN_FRAMES` frames with a face. Details: docs/enrollment.md.
    """
    auto = isinstance(resolution, str)
    if auto and resolution != "auto":
        raise ValueError(f"resolution must be a number of pixels or 'auto', got {resolution!r}")
    path, info = _open_video(video)
    k = int(detect_every) if detect_every else (1 if max(1, info.n_frames) <= 1500 else 2)
    job = _Job(path, info, detector,
               detector if isinstance(detector, str) else getattr(detector, "name", "custom"),
               crop_config or CropConfig(), max_frames, k, cache and isinstance(detector, str),
               progress)
    if not auto and (got := job.cached(int(resolution))) is not None:
        return got
    track = _boxes_pass(job, device)
    keep = _kept_frames(job, track)
    if auto:
        resolution = _measured_resolution(job, track, keep)
        if (got := job.cached(resolution)) is not None:
            return got
    out = _crops_pass(job, track, keep, int(resolution))
    if job.use_cache:  # (the key hashes the video: only when there is a cache)
        job.store(job.crops_cache(int(resolution)), _CROPS_FILE, _crops_arrays(out))
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


def even_subset(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` indices spread evenly over ``range(n)``."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


def largest_face_crop(frame: np.ndarray, detector, size: int, name: str = "the picture",
                      config: Optional[CropConfig] = None) -> Tuple[np.ndarray, List[float]]:
    """``(crop, box)``: the largest face of one RGB picture, framed as generation frames it
    (``config``, default :class:`CropConfig`) and resized to ``size`` px."""
    h, w = frame.shape[:2]
    boxes, _ = select_largest(detector.detect(frame[None]))
    if np.isnan(boxes[0]).any():
        raise InputError(f"no face found in '{name}' (detector: "
                         f"{getattr(detector, 'name', 'unknown')}); use a clear, frontal face "
                         "picture, try another detector, or tick 'the picture is already a "
                         "face crop'")
    region = face_region(boxes[0], (w, h), config or CropConfig())
    return crop_face(frame, region, size), [float(v) for v in boxes[0]]


def centre_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """The centre square of a picture that already is a face crop, resized to ``size`` px."""
    h, w = frame.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return crop_face(frame, CropRegion(x0, y0, x0 + side, y0 + side, w, h), size)


__all__ = ["FaceCrops", "extract_crops", "split_holdout", "even_subset",
           "MIN_FRAMES", "crop_cache_dir", "crop_cache", "CROP_CACHE_ENV", "CROP_CACHE_MB",
           "choose_resolution",
           "RESOLUTION_STEPS", "largest_face_crop", "centre_crop"]
