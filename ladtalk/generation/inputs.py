"""The input steps of a run: check the output path, read the speech, plan the source frames."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ladtalk.errors import InputError
from ladtalk.face.detect import DLIB_MIN_FACE, s3fd_available
from ladtalk.generation.options import STILL_FPS, GenerateOptions
from ladtalk.media.audio import SAMPLE_RATE, check_has_speech, load_audio
from ladtalk.media.mel import mel_chunk_starts, mel_frames, melspectrogram, num_video_frames
from ladtalk.media.mel_process import MelProcess
from ladtalk.media.probe import MediaInfo, probe

log = logging.getLogger("ladtalk.generation.pipeline")

#: the shorter side (px) a frame must keep after ``resize_factor``: room for the smallest
#: face S3FD finds (and for a useful fixed-box crop); dlib needs :data:`DLIB_MIN_FACE`
MIN_RESIZED_SIDE = 32


@dataclass
class Speech:
    """The decoded speech: sample count, length in seconds and the Wav2Lip mel spectrogram
    (:attr:`mel`: taken from an early :class:`~ladtalk.media.mel_process.MelProcess` when one
    was started for this audio, else computed on first use)."""

    n_samples: int
    seconds: float
    wav: Optional[np.ndarray] = field(default=None, repr=False)
    early: Optional[MelProcess] = field(default=None, repr=False)
    _mel: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def n_mel_frames(self) -> int:
        return mel_frames(self.n_samples)

    @property
    def mel(self) -> np.ndarray:
        if self._mel is None:
            if self.early is not None:
                self._mel = self.early.result(self.n_mel_frames)
            if self._mel is None:
                self._mel = melspectrogram(self.wav)
            self.wav = self.early = None
        return self._mel


def load_speech(audio: Path, early: Optional[MelProcess] = None) -> Speech:
    """Decode ``audio`` to 16 kHz mono and refuse silence / too-short clips; the mel follows
    on first use (``early``: a mel child started for the same file)."""
    wav = load_audio(audio, SAMPLE_RATE)
    check_has_speech(wav, SAMPLE_RATE, audio)
    return Speech(n_samples=len(wav), seconds=len(wav) / SAMPLE_RATE, wav=wav, early=early)


@dataclass
class SourcePlan:
    """How the face input is read: its probe, the output rate and size, the frame count."""

    info: MediaInfo
    fps: float
    n_out: int
    starts: np.ndarray                     # mel window start of every output frame
    size: Tuple[int, int]                  # (width, height) after ``resize_factor``
    resize: Optional[Tuple[int, int]]      # None when the source is not downscaled
    chunk_size: int


def plan_source(face: Path, speech: Speech, opts: GenerateOptions,
                batch_size: int) -> SourcePlan:
    """Probe ``face`` and derive the output frame rate, frame count and frame size."""
    info = probe(face)
    if not info.has_video:
        raise InputError(f"'{face}' has no picture; pass a video or an image with a face")
    fps = float(opts.fps or (STILL_FPS if info.is_image else (info.fps or STILL_FPS)))
    n_out = num_video_frames(speech.n_samples, SAMPLE_RATE, fps)
    k = int(opts.resize_factor)
    size = resized_size(info, k, face, None if opts.box is not None else opts.detector)
    if info.maybe_vfr and opts.fps is None:
        log.info("%s looks like variable frame rate; resampling it to a constant %.3f fps",
                 face, fps)
    return SourcePlan(info=info, fps=fps, n_out=n_out,
                      starts=mel_chunk_starts(speech.n_mel_frames, fps, n_out), size=size,
                      resize=None if k == 1 else size,
                      chunk_size=int(opts.batch_size or batch_size))


def _min_side(detector: Optional[str]) -> Tuple[int, str]:
    """The shorter frame side (px) a face needs with ``detector`` (None: a fixed box)."""
    name = (detector or "box").lower()
    if name == "dlib" or (name == "auto" and not s3fd_available()):
        return DLIB_MIN_FACE, "the dlib face detector finds faces of at least that size"
    if name == "box":
        return MIN_RESIZED_SIDE, "smaller crops carry no usable face"
    return MIN_RESIZED_SIDE, "no face detector finds a smaller face"


def resized_size(info: MediaInfo, k: int, face: Path,
                 detector: Optional[str] = "auto") -> Tuple[int, int]:
    """``(width, height)`` of the frames after ``--resize-factor k``; refuses a factor that
    leaves the shorter side too small to hold a face ``detector`` can find (None: a fixed
    box is given)."""
    w, h = max(1, info.width // k), max(1, info.height // k)
    if k <= 1 or min(w, h) >= MIN_RESIZED_SIDE and detector is None:
        return w, h
    need, why = _min_side(detector)
    if min(w, h) < need:
        best = max(1, min(info.width, info.height) // need)
        fix = (f"set --resize-factor to {best} or less" if best > 1 else
               "set --resize-factor to 1 (full size)")
        raise InputError(f"--resize-factor {k} shrinks the {info.width}x{info.height} frames "
                         f"of '{face}' to {w}x{h} px, too small to hold a face (the shorter "
                         f"side must keep at least {need} px: {why}): {fix}")
    return w, h


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out: Path, face: Path, audio: Path) -> None:
    """Refuse an output path that cannot be written or would overwrite an input."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist; create it first or choose "
                         "another --out")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {out / 'out.mp4'}")
    for src, what in ((face, "--face"), (audio, "--audio")):
        if _same_file(out, src):
            raise InputError(f"--out {out} is the same file as {what}; choose another output "
                             "name so the input is not overwritten")


__all__ = ["Speech", "load_speech", "SourcePlan", "plan_source", "resized_size", "check_output",
           "MIN_RESIZED_SIDE"]
