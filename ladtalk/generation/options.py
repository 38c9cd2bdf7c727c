"""Per-call settings of a generation run and what the run produced."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ladtalk._util.choices import DEFAULT_DETECTOR, DEFAULT_LOOP, DEFAULT_PADS, check_mode
from ladtalk.errors import InputError
from ladtalk.generation.blend import BlendConfig
from ladtalk.generation.fusion import parse_strength
from ladtalk.media.timing import check_policy

PathLike = Union[str, os.PathLike]
#: progress(stage, done, total): stage is "audio", "detect", "load" or "generate"
ProgressFn = Callable[[str, int, int], None]

DEFAULT_BATCH_SIZE = 16
STILL_FPS = 25.0


@dataclass
class GenerateOptions:
    """Per-call settings; each field mirrors a ``generate`` CLI flag (docs/generation.md).

    ``identity=None`` is Wav2Lip only (``--no-enhance``); ``box`` is ``(y1, y2, x1, x2)`` in
    source pixels and skips detection; ``pads`` is ``(top, bottom, left, right)``.
    """

    identity: Optional[Union[str, os.PathLike]] = None
    detector: str = DEFAULT_DETECTOR
    box: Optional[Sequence[float]] = None
    pads: Tuple[int, int, int, int] = DEFAULT_PADS
    smooth: bool = True
    resize_factor: int = 1
    fps: Optional[float] = None
    loop: str = DEFAULT_LOOP
    batch_size: Optional[int] = None
    crf: int = 18
    preset: str = "veryfast"
    audio_mode: str = "copy-or-aac"
    blend: BlendConfig = field(default_factory=BlendConfig)
    temp_dir: Optional[Union[str, os.PathLike]] = None  # parent of the per-call temp dir
    #: "refuse" / "warn" / "off" (:mod:`ladtalk.generation.identity_match`)
    identity_check: str = "refuse"
    #: fusion strengths ``S`` or ``(LOW, HIGH)`` instead of the identity's calibrated ones
    restore_strength: Optional[Union[str, float, Sequence[float]]] = None
    #: read and write the on-disk face-track cache (``--no-cache``: detect, keep nothing)
    track_cache: bool = True

    def validate(self) -> "GenerateOptions":
        """Normalise the fields in place; raise :class:`InputError` naming the bad flag."""
        try:
            self.loop = check_policy(self.loop)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        self.identity_check = check_mode(self.identity_check)
        try:
            self.restore_strength = parse_strength(self.restore_strength)
        except ValueError as exc:
            raise InputError(f"--restore-strength: {exc}") from None
        if not _whole(self.resize_factor):
            raise InputError(f"--resize-factor must be a whole number >= 1, got "
                             f"{self.resize_factor!r}")
        if self.fps is not None and not (np.isfinite(self.fps) and 0 < self.fps <= 240):
            raise InputError(f"--fps must be between 0 and 240, got {self.fps}")
        if self.batch_size is not None and not _whole(self.batch_size):
            raise InputError(f"--batch-size must be a positive whole number, got "
                             f"{self.batch_size!r}")
        if len(tuple(self.pads)) != 4:
            raise InputError(f"--pads needs 4 numbers TOP BOTTOM LEFT RIGHT, got {self.pads}")
        if self.box is not None and len(tuple(self.box)) != 4:
            raise InputError(f"--box needs 4 numbers Y1 Y2 X1 X2, got {list(self.box)}")
        return self


def _whole(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and v >= 1


@dataclass
class GenerateResult:
    """What a :meth:`ladtalk.generation.pipeline.Pipeline.run` call produced.

    ``timings`` holds seconds per stage; decode / models / encode overlap, so their sum
    exceeds "total". ``track`` is the face track the run used: pass it as ``track=`` to a
    later run on the same face and framing to skip detection.
    """

    out: Path
    n_frames: int
    fps: float
    duration: float
    audio_duration: float
    size: Tuple[int, int]
    enhanced: bool
    identity: Optional[str]
    n_source_frames: Optional[int]
    missing_face_timestamps: List[float]
    passthrough_frames: int
    audio_copied: Optional[bool]
    warnings: List[str]
    timings: Dict[str, float]
    precision: str = "fp32"  # the models' arithmetic ("fp32", "bf16", "fp16")
    backend: str = "torch"  # what ran the lip-sync model ("torch", "openvino")
    #: per model stage ("lipsync", "restore"): backend, precision, how chosen, measured speeds
    runtime: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: :class:`ladtalk.generation.identity_match.IdentityMatch` (None: not checked)
    identity_match: Optional[Any] = None
    #: the fusion strengths used (``FusionConfig.to_dict()``; None: plain decode / no identity)
    fusion: Optional[Dict[str, Any]] = None
    #: :class:`ladtalk.generation.track.SourceTrack` of this run
    track: Optional[Any] = None

    def stage_fps(self) -> Dict[str, float]:
        """Frames per second of each stage (output frames / stage seconds)."""
        out = {}
        for k, v in self.timings.items():
            n = self.n_source_frames if k == "detect" else self.n_frames
            if v > 0 and n:
                out[k] = n / v
        return out


__all__ = ["GenerateOptions", "GenerateResult", "ProgressFn", "PathLike",
           "DEFAULT_BATCH_SIZE", "STILL_FPS"]
