"""Face crops of one video with the generation framing, cached by content; a time-ordered
holdout. How crops are made and cached: ``docs/architecture.md``."""


import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ladtalk._util.paths import ladtalk_home
from ladtalk.errors import InputError

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



def to_tensor01(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)


def even_subset(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` indices spread evenly over ``range(n)``."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))



__all__ = ["FaceCrops", "extract_crops", "split_holdout", "to_tensor01", "even_subset",
           "MIN_FRAMES", "crop_cache_dir", "select_frames", "choose_resolution",
           "RESOLUTION_STEPS"]
