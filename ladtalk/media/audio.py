"""Audio decoding: any audio file or video sound track -> mono float32 at 16 kHz, and the
silence / length checks. The Wav2Lip mel front-end is :mod:`ladtalk.media.mel`.

Channels are averaged and resampling uses soxr (as upstream Wav2Lip's librosa did); 16-bit
PCM is scaled by 1/32768. See docs/media.md.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Set

import ffmpeg
import numpy as np

from ladtalk.errors import InputError, LadTalkError
from ladtalk.media.ffmpeg import PathLike, compile_cmd, input_file, last_error_line

SAMPLE_RATE = 16000
#: Shortest clip accepted as speech input (seconds); 0.2 s = one 16-column mel window.
MIN_SPEECH_SECONDS = 0.2
#: A clip whose peak is below this level is treated as silence.
SILENCE_PEAK_DBFS = -50.0
#: ... and so is a clip whose loudest 50 ms block has an RMS below this level.
SILENCE_RMS_DBFS = -60.0
#: Resampling engine asked of ffmpeg (soxr = what librosa used upstream).
RESAMPLER = "soxr"

_WAV_FAST_FORMATS = {"WAV", "WAVEX", "FLAC"}
_MISSING_RESAMPLERS: Set[str] = set()  # engines this ffmpeg build turned out to lack


def _finish(wav: np.ndarray, path: Path) -> np.ndarray:
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if wav.size == 0:
        raise InputError(f"'{path}' contains no audio samples (zero-length audio track); "
                         "give a file with at least 0.2 s of speech")
    if not np.isfinite(wav).all():
        wav = np.nan_to_num(wav, nan=0.0, posinf=1.0, neginf=-1.0)
    # Lossy decoders (mp3/aac) and float files can overshoot full scale slightly.
    np.clip(wav, -1.0, 1.0, out=wav)
    return wav


def _load_soundfile(path: Path, sr: int) -> Optional[np.ndarray]:
    """Fast path: mono/stereo WAV or FLAC already at ``sr``; ``None`` if not applicable.

    No resampling and at most a 2-channel average, so the numbers equal the ffmpeg path's.
    """
    try:
        import soundfile as sf
        info = sf.info(str(path))
        if (info.format not in _WAV_FAST_FORMATS or info.samplerate != sr
                or info.channels not in (1, 2)):
            return None
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception:
        return None  # unreadable by libsndfile -> let ffmpeg try (and report its error)
    if data.shape[1] == 2:
        return (data[:, 0] + data[:, 1]) * np.float32(0.5)
    return data[:, 0]


def audio_cmd(path: PathLike, sr: int = SAMPLE_RATE, resampler: Optional[str] = RESAMPLER
              ) -> List[str]:
    """ffmpeg command writing the first audio stream of ``path`` as mono f32le to stdout."""
    opts = {"vn": None, "sn": None, "dn": None, "ac": 1, "ar": int(sr),
            "rematrix_maxval": 1,  # average the channels (not ffmpeg's -3 dB per channel)
            "f": "f32le", "acodec": "pcm_f32le"}
    if resampler:
        opts["resampler"] = resampler
    stream = ffmpeg.input("file:" + str(Path(path).resolve()))["a:0"]
    return compile_cmd(stream.output("pipe:1", **opts))


def _run_ffmpeg_decode(path: Path, sr: int, resampler: Optional[str]):
    cmd = audio_cmd(path, sr, resampler)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except OSError as exc:
        raise LadTalkError(f"could not run ffmpeg ({cmd[0]}): {exc}") from exc
    return proc.returncode, proc.stdout, proc.stderr.decode("utf-8", errors="replace")


def _ffmpeg_decode(path: Path, sr: int, resampler: Optional[str]) -> np.ndarray:
    """Decode with ffmpeg; falls back to its default resampler if ``resampler`` is missing."""
    if resampler in _MISSING_RESAMPLERS:
        resampler = None
    rc, out, stderr = _run_ffmpeg_decode(path, sr, resampler)
    if rc != 0 and resampler and "resampler" in stderr.lower():
        _MISSING_RESAMPLERS.add(resampler)
        rc, out, stderr = _run_ffmpeg_decode(path, sr, None)
    if rc != 0:
        if "matches no streams" in stderr:
            raise InputError(f"'{path}' has no audio stream (a video without sound?); give an "
                             "audio file or a video that has a sound track")
        last = last_error_line(stderr) if stderr.strip() else f"exit status {rc}"
        raise InputError(f"could not decode audio from '{path}': ffmpeg says: {last}. "
                         "Use a common audio/video format (wav, mp3, m4a, ogg, flac, mp4, mov, "
                         "webm, mkv) or re-export the file")
    n = len(out) // 4
    return np.frombuffer(out[: 4 * n], dtype="<f4").astype(np.float32)


def load_audio(path: PathLike, sr: int = SAMPLE_RATE, *, use_soundfile: bool = True,
               resampler: Optional[str] = RESAMPLER) -> np.ndarray:
    """Any audio file, or the first sound track of a video, as 1-D float32 mono at ``sr``.

    Values are clipped to [-1, 1]. Mono/stereo WAV/FLAC already at ``sr`` are read with
    soundfile (same numbers, faster) unless ``use_soundfile=False``. :class:`InputError`
    names the file when it is missing, empty, undecodable, has no audio stream or is
    zero-length; silence is checked separately (:func:`check_has_speech`).
    """
    if int(sr) <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    path = input_file(path, "audio file", "an audio or video file")
    wav = _load_soundfile(path, int(sr)) if use_soundfile else None
    if wav is None:
        wav = _ffmpeg_decode(path, int(sr), resampler)
    return _finish(wav, path)


def audio_duration(wav: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Duration in seconds of a 1-D waveform."""
    return float(len(wav)) / float(sr)


@dataclass(frozen=True)
class AudioLevel:
    """Loudness summary of a waveform (all in dBFS; ``-inf`` for digital silence)."""

    peak_dbfs: float
    max_block_rms_dbfs: float  # loudest 50 ms block
    duration_s: float


def _dbfs(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0 else -math.inf


def speech_activity(wav: np.ndarray, sr: int = SAMPLE_RATE) -> AudioLevel:
    """Measure the peak level and the RMS of the loudest 50 ms block of ``wav``."""
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    block = max(1, int(round(0.05 * sr)))
    if x.size:
        nb = -(-x.size // block)
        padded = np.zeros(nb * block)
        padded[: x.size] = x
        rms = float(np.sqrt(np.max(np.mean(padded.reshape(nb, block) ** 2, axis=1))))
    else:
        rms = 0.0
    return AudioLevel(_dbfs(peak), _dbfs(rms), audio_duration(x, sr))


def check_has_speech(wav: np.ndarray, sr: int = SAMPLE_RATE,
                     path: Optional[PathLike] = None) -> AudioLevel:
    """Reject audio that cannot drive a talking head; return its :class:`AudioLevel`.

    Too short (< :data:`MIN_SPEECH_SECONDS`) or too quiet (peak < :data:`SILENCE_PEAK_DBFS`
    or loudest 50 ms RMS < :data:`SILENCE_RMS_DBFS`) raises :class:`InputError`.
    """
    name = f"audio '{path}'" if path is not None else "the audio"
    level = speech_activity(wav, sr)
    if level.duration_s < MIN_SPEECH_SECONDS:
        raise InputError(f"{name} is only {level.duration_s:.3f} s long; at least "
                         f"{MIN_SPEECH_SECONDS:g} s of speech is needed")
    if level.peak_dbfs < SILENCE_PEAK_DBFS or level.max_block_rms_dbfs < SILENCE_RMS_DBFS:
        raise InputError(
            f"{name} contains no audible speech (peak level {level.peak_dbfs:.1f} dBFS, "
            f"loudest 50 ms RMS {level.max_block_rms_dbfs:.1f} dBFS; need peak >= "
            f"{SILENCE_PEAK_DBFS:g} dBFS and RMS >= {SILENCE_RMS_DBFS:g} dBFS). Check that "
            "the right file / track was given and that it is not muted")
    return level
