"""What evaluating a pair needs besides the metrics: decoded videos, face tracks, and the heavy
models (face detector, SyncNet, Inception), built lazily and shared across a batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ladtalk._util.paths import PathLike
from ladtalk.errors import CheckpointError, InputError, LadTalkError
from ladtalk.evaluation.config import LSE_FPS, NEEDS_WEIGHTS, EvalConfig
from ladtalk.evaluation.results import VideoInfo
from ladtalk.face import make_detector, track_faces
from ladtalk.media.decode import iter_frames
from ladtalk.media.probe import probe
from ladtalk.metrics.frechet import InceptionFeatures
from ladtalk.metrics.lse import load_syncnet_lse


class MetricUnavailable(Exception):
    """A metric cannot be computed; ``status`` is ``needs weights`` or ``unavailable``."""

    def __init__(self, status: str, reason: str, error: Optional[BaseException] = None):
        super().__init__(reason)
        self.status, self.reason, self.error = status, reason, error


@dataclass
class Video:
    """A fully decoded video: ``frames`` (n, H, W, 3) uint8 RGB at ``fps``."""

    path: Path
    frames: np.ndarray
    fps: float
    has_audio: bool

    @property
    def size(self) -> Tuple[int, int]:
        return (int(self.frames.shape[2]), int(self.frames.shape[1]))

    def info(self) -> VideoInfo:
        return VideoInfo(self.path, len(self.frames), self.fps, self.size)


def decode_video(path: PathLike, fps: Optional[float] = None, what: str = "video") -> Video:
    """Decode every frame of ``path`` (resampled to ``fps`` when given)."""
    info = probe(path)
    if info.is_image:
        raise InputError(f"{what} {info.path} is a still image; evaluation needs a video")
    chunks = list(iter_frames(info.path, fps=fps, info=info))
    if not chunks:
        raise InputError(f"{what} {info.path} has no decodable frames")
    frames = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    rate = float(fps) if fps is not None else float(info.fps or LSE_FPS)
    return Video(path=info.path, frames=frames, fps=rate, has_audio=bool(info.has_audio))


def resize_frames(frames: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Frames resized to ``size`` (w, h): INTER_AREA when shrinking, INTER_CUBIC otherwise."""
    import cv2
    w, h = size
    shrink = w * h < frames.shape[1] * frames.shape[2]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "frame", leave=False):
    """A tqdm bar, or ``None`` when progress is off."""
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=leave)


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


class Resources:
    """Lazily built, reusable heavy objects; one per batch so pairs share them.

    A failure to build one is remembered, so a batch reports it once per clip without
    retrying the (possibly slow) resolution. The last reference video (and its face track)
    is kept, since a batch lists each reference once per method.
    """

    def __init__(self, config: EvalConfig):
        self.config = config
        self._cache: Dict[str, Any] = {}
        self._reference: Optional[Tuple[tuple, Video, Optional[np.ndarray]]] = None

    def _get(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            try:
                self._cache[key] = build()
            except MetricUnavailable as exc:
                self._cache[key] = exc
        value = self._cache[key]
        if isinstance(value, MetricUnavailable):
            raise value
        return value

    def detector(self):
        def build():
            try:
                return make_detector(self.config.detector, device=self.config.device,
                                     weights=self.config.s3fd)
            except CheckpointError as exc:
                raise MetricUnavailable(NEEDS_WEIGHTS, f"face detector: {exc}", exc) from exc
        return self._get("detector", build)

    def detector_name(self) -> Optional[str]:
        """The name of the detector used so far (``None`` when none was built)."""
        detector = self._cache.get("detector")
        if detector is None or isinstance(detector, Exception):
            return None
        return getattr(detector, "name", None)

    def syncnet(self):
        def build():
            try:
                return load_syncnet_lse(self.config.syncnet, device=self.config.device)
            except CheckpointError as exc:
                raise MetricUnavailable(
                    NEEDS_WEIGHTS, "SyncNet weights (syncnet_v2.model) unavailable: "
                    f"{str(exc).rstrip('. ')}. Pass --syncnet PATH or set LADTALK_SYNCNET to "
                    "a local copy", exc) from exc
        return self._get("syncnet", build)

    def inception(self):
        def build():
            try:
                return InceptionFeatures(self.config.device)
            except LadTalkError as exc:   # missing extra, or weights not downloadable
                raise MetricUnavailable(NEEDS_WEIGHTS, str(exc), exc) from exc
        return self._get("inception", build)

    def track(self, frames: np.ndarray, fps: float, what: str):
        """Face track of ``frames`` with the shared detector (``--detect-every``)."""

        detector = self.detector()
        bar = progress_bar(len(frames), f"faces in {what}", self.config.progress)
        try:
            return track_faces(frames, detector, fps, detect_every=self.config.detect_every,
                               progress=(lambda n: bar.update(n - bar.n)) if bar else None)
        finally:
            if bar:
                bar.close()

    def reference(self, path: Path) -> Video:
        """Decode the reference, reusing the last one when it is the same file."""
        if not path.is_file():
            raise InputError(f"reference video not found: {path}")
        key = _file_key(path)
        if self._reference is not None and self._reference[0] == key:
            return self._reference[1]
        video = decode_video(path, what="reference video")
        self._reference = (key, video, None)
        return video

    def reference_boxes(self) -> np.ndarray:
        """Face boxes of the last reference (tracked once, on first use)."""
        if self._reference is None:
            raise RuntimeError("reference_boxes() before reference()")
        key, video, boxes = self._reference
        if boxes is None:
            boxes = self.track(video.frames, video.fps, "reference video").boxes
            self._reference = (key, video, boxes)
        return boxes
