"""The CHUNK PROCESSOR: lip-sync -> restore -> blend for one chunk of source frames."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ladtalk.face.crop import CropConfig, CropRegion, crop_faces, face_region
from ladtalk.generation.blend import BlendConfig, blend_face
from ladtalk.generation.fusion import FusionConfig
from ladtalk.generation.track import SourceTrack
from ladtalk.media.mel import mel_windows
from ladtalk.models.wav2lip_io import FACE_SIZE, first_row_for


class StageClock:
    """Seconds spent per stage, summed over the threads that report them."""

    def __init__(self, *names: str) -> None:
        self._seconds: Dict[str, float] = {n: 0.0 for n in names}
        self._lock = threading.Lock()

    def add(self, name: str, since: float) -> None:
        with self._lock:
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - since

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, t0)

    def as_dict(self) -> Dict[str, float]:
        with self._lock:
            return dict(self._seconds)


@dataclass
class ChunkProcessor:
    """Turns a chunk of frames into lip-synced frames, in place.

    ``restorer`` None (or a fusion of strength 0) pastes Wav2Lip's face directly; ``fusion``
    None keeps the restorer's own fusion, else it is passed to ``restorer.restore``. The
    ``syncer`` may draw only the rows from :attr:`lipsync_first_row` down (its
    ``first_row``, :class:`~ladtalk.generation.lipsync.LipSyncer`); one that draws fewer is
    refused.
    """

    syncer: Any
    mel: np.ndarray
    starts: np.ndarray
    track: SourceTrack
    frame_size: Tuple[int, int]
    crop: CropConfig = field(default_factory=CropConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    restorer: Any = None
    fusion: Optional[FusionConfig] = None
    clock: StageClock = field(default_factory=lambda: StageClock(
        "lipsync", "restore", "blend", "encode"))

    def __post_init__(self) -> None:
        drawn = int(getattr(self.syncer, "first_row", 0))
        if drawn > self.lipsync_first_row:
            raise ValueError(f"the lip-sync model draws its crops from row {drawn} down, but "
                             f"this paste needs them from row {self.lipsync_first_row}")

    @property
    def fusion_used(self) -> Optional[FusionConfig]:
        return lipsync_fusion(self.restorer, self.fusion)

    @property
    def lipsync_first_row(self) -> int:
        """The first row of the 96 px Wav2Lip crops that reaches the output
        (:func:`lipsync_first_row`)."""
        return lipsync_first_row(self.restorer, self.fusion, self.blend)

    @property
    def restores(self) -> bool:
        """Whether the identity restores faces (:func:`restores`)."""
        return restores(self.restorer, self.fusion)

    def regions(self, src: np.ndarray) -> Tuple[List[int], List[CropRegion]]:
        """Positions in the chunk that have a usable face, and their crop regions."""
        sel: List[int] = []
        regions: List[CropRegion] = []
        for i, s in enumerate(src):
            b = self.track.box_of(int(s))
            if b is None:
                continue
            try:
                regions.append(face_region(b, self.frame_size, self.crop))
            except ValueError:
                continue
            sel.append(i)
        return sel, regions

    def __call__(self, frames: np.ndarray, src: np.ndarray, t_first: int) -> int:
        """Process ``frames`` (source indices ``src``, first output frame ``t_first``) in
        place; returns how many frames had no face and were left unchanged."""
        sel, regions = self.regions(src)
        if not sel:
            return len(frames)
        with self.clock.time("blend"):
            chosen = frames[sel]
            crops = crop_faces(chosen, regions, FACE_SIZE)
        with self.clock.time("lipsync"):
            gen = self.syncer(crops, mel_windows(self.mel, self.starts[t_first + np.asarray(sel)]))
        originals, blend = crops, self.blend.direct()
        if self.restores:
            with self.clock.time("restore"):
                gen = self.restore(gen)
            with self.clock.time("blend"):
                res = int(self.restorer.resolution)
                originals = crop_faces(chosen, regions, res)
                blend = self.blend.from_row(self.restored_from_row() / res)
        with self.clock.time("blend"):
            for j, i in enumerate(sel):
                blend_face(frames[i], gen[j], regions[j], originals[j], blend)
        return len(frames) - len(sel)

    def restored_from_row(self) -> int:
        """The first row (at the identity's resolution) of the crops :meth:`restore` returns
        that the restorer drew (:func:`restored_from_row`)."""
        return restored_from_row(self.restorer, self.fusion, self.blend)

    def restore(self, gen: np.ndarray) -> np.ndarray:
        """Wav2Lip crops -> bicubic to the identity's resolution -> restored uint8 crops (the
        rows from :meth:`restored_from_row` down; the rows above as given)."""
        res = int(self.restorer.resolution)
        up = np.stack([cv2.resize(g, (res, res), interpolation=cv2.INTER_CUBIC) for g in gen])
        kw: Dict[str, Any] = {} if self.fusion is None else {"fusion": self.fusion}
        if hasattr(self.restorer, "window_top"):
            kw["from_row"] = self.blend.top
        return np.asarray(self.restorer.restore(up, **kw), dtype=np.uint8)


def lipsync_fusion(restorer: Any, fusion: Optional[FusionConfig]) -> Optional[FusionConfig]:
    """The fusion a chunk processor with ``restorer`` and ``fusion`` (None: the restorer's
    own) uses; None without a restorer."""
    if restorer is None:
        return None
    return fusion if fusion is not None else getattr(restorer, "fusion", None)


def restores(restorer: Any, fusion: Optional[FusionConfig]) -> bool:
    """Whether a chunk processor with these settings restores faces (an identity at strength
    0 for both bands does not: Wav2Lip's crop is pasted as it is)."""
    return restorer is not None and not getattr(lipsync_fusion(restorer, fusion),
                                                "identity_off", False)


def restored_from_row(restorer: Any, fusion: Optional[FusionConfig], blend: BlendConfig) -> int:
    """The first row (at the identity's resolution) that ``restorer`` draws: only the rows the
    paste mask can show (from its top down) are asked of a restorer that can restore a window
    (:meth:`ladtalk.generation.restore.Restorer.window_top`); the colours are then matched on
    the reference band's rows from there (:meth:`BlendConfig.from_row`)."""
    if not hasattr(restorer, "window_top"):
        return 0
    return int(restorer.window_top(blend.top, lipsync_fusion(restorer, fusion)))


def lipsync_first_row(restorer: Any, fusion: Optional[FusionConfig], blend: BlendConfig) -> int:
    """The first row of the 96 px Wav2Lip crops that can reach the output of a chunk
    processor with these settings: for a crop pasted as it is, the rows from the top of
    ``blend.lipsync_band`` (where its colours are measured); for a restored one, those of
    the restorer's window; less the rows a bicubic enlargement reads above. Rows above it
    need not be drawn (:class:`~ladtalk.models.wav2lip_rows.Wav2LipRows`)."""
    if not restores(restorer, fusion):
        return first_row_for(blend.lipsync_band[0] if blend.lipsync_band else 0.0)
    return first_row_for(restored_from_row(restorer, fusion, blend) / int(restorer.resolution))


__all__ = ["ChunkProcessor", "StageClock", "lipsync_first_row", "restored_from_row",
           "restores"]
