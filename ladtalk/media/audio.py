"""Audio front-end: decode any audio / video sound track, Wav2Lip mel spectrogram, mel windows.

Conventions (all match the upstream Wav2Lip pipeline that the released weights expect):

* **Waveform** – float32, mono, 16 kHz, values in [-1, 1]. 16-bit PCM is scaled by 1/32768,
  so a 16 kHz 16-bit wav decodes to exactly ``int16 / 32768``. Multi-channel audio is mixed
  down by averaging the channels (what ``librosa.load(mono=True)`` does for stereo); any
  resampling uses the SoX resampler (soxr, 20-bit "HQ" precision, the same library librosa
  used upstream) inside the ffmpeg binary shipped with ``imageio-ffmpeg``.
* **Mel** – ``(80, T)`` float32 with ``T = 1 + n_samples // 200`` (one column every 12.5 ms),
  values in [-4, 4]; -4 is the silence floor. The default STFT edge padding is ``reflect``
  (librosa < 0.10, what the released checkpoints were trained with).
* **Mel windows** – video frame ``i`` is driven by the 16 mel columns (200 ms) starting at
  ``int(i * 80 / fps)``; see :func:`mel_chunk_starts`.
* **Frame count** – a clip of ``n`` samples gives ``max(1, round_half_up(n / sr * fps))``
  output video frames (:func:`num_video_frames`).
"""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ladtalk.errors import InputError, LadTalkError

PathLike = Union[str, os.PathLike]

SAMPLE_RATE = 16000
#: Width of one mel window fed to Wav2Lip / SyncNet (columns; 16 * 12.5 ms = 200 ms).
MEL_STEP_SIZE = 16
#: Shortest clip accepted as speech input (seconds); 0.2 s = 3200 samples = 17 mel columns,
#: i.e. at least one full 16-column window.
MIN_SPEECH_SECONDS = 0.2
#: A clip whose peak is below this level is treated as silence.
SILENCE_PEAK_DBFS = -50.0
#: ... and so is a clip whose loudest 50 ms block has an RMS below this level.
SILENCE_RMS_DBFS = -60.0

_WAV_FAST_FORMATS = {"WAV", "WAVEX", "FLAC"}


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with ``imageio-ffmpeg`` (no system ffmpeg needed)."""
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # ImportError or "could not find ffmpeg"
        raise LadTalkError(f"cannot find the ffmpeg binary from imageio-ffmpeg ({exc}); "
                           "reinstall it with `pip install --force-reinstall imageio-ffmpeg`"
                           ) from exc


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"audio file '{path}' does not exist; check the path")
    if not path.is_file():
        raise InputError(f"'{path}' is not a file (expected an audio or video file)")
    if path.stat().st_size == 0:
        raise InputError(f"audio file '{path}' is empty (0 bytes); re-export or re-download it")


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
    """Fast path: mono/stereo WAV or FLAC already at ``sr``. ``None`` if not applicable.

    Restricted to cases where no resampling and at most a 2-channel average is needed, so the
    result is bit-identical to the ffmpeg path (both scale int16 by 1/32768).
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


#: Resampling engine asked of ffmpeg (soxr = what librosa used upstream). Set to ``None`` after
#: the first failure, e.g. with an ffmpeg build lacking libsoxr, to use ffmpeg's own resampler.
_RESAMPLER: Optional[str] = "soxr"


def _run_ffmpeg_decode(path: Path, sr: int, resampler: Optional[str]):
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
           "-i", "file:" + str(path.resolve()),
           "-map", "0:a:0", "-vn", "-sn", "-dn",
           "-ac", "1", "-ar", str(int(sr)),
           # average the channels (instead of ffmpeg's default -3 dB per channel)
           "-rematrix_maxval", "1"]
    if resampler:
        cmd += ["-resampler", resampler]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except OSError as exc:
        raise LadTalkError(f"could not run ffmpeg ({cmd[0]}): {exc}") from exc
    return proc.returncode, proc.stdout, proc.stderr.decode("utf-8", errors="replace")


def _ffmpeg_decode(path: Path, sr: int) -> np.ndarray:
    """Decode the first audio stream of ``path`` to float32 mono at ``sr`` with ffmpeg."""
    global _RESAMPLER
    rc, out, stderr = _run_ffmpeg_decode(path, sr, _RESAMPLER)
    if rc != 0 and _RESAMPLER and "resampler" in stderr.lower():
        _RESAMPLER = None  # this ffmpeg build has no such engine: fall back to its default
        rc, out, stderr = _run_ffmpeg_decode(path, sr, None)
    if rc != 0:
        if "matches no streams" in stderr:
            raise InputError(f"'{path}' has no audio stream (a video without sound?); give an "
                             "audio file or a video that has a sound track")
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {rc}"
        raise InputError(f"could not decode audio from '{path}': ffmpeg says: {last}. "
                         "Use a common audio/video format (wav, mp3, m4a, ogg, flac, mp4, mov, "
                         "webm, mkv) or re-export the file")
    n = len(out) // 4
    return np.frombuffer(out[: 4 * n], dtype="<f4").astype(np.float32)


def load_audio(path: PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Load any common audio file, or the first sound track of a video, as mono float32.

    Supports everything the bundled ffmpeg reads (wav, mp3, m4a/aac, ogg, flac, opus, mp4,
    mov, webm, mkv, ...), any channel count and sample rate. Returns a 1-D float32 array at
    ``sr`` Hz with values clipped to [-1, 1]. Channels are averaged; resampling uses soxr.
    Mono/stereo WAV/FLAC already at ``sr`` are read with soundfile (same numbers, faster).

    Raises :class:`InputError` naming the file when it is missing, empty, undecodable (with
    ffmpeg's last error line), has no audio stream, or has zero-length audio. It does *not*
    check for silence / minimum length; see :func:`check_has_speech`.
    """
    if int(sr) <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    path = Path(path)
    _check_file(path)
    wav = _load_soundfile(path, int(sr))
    if wav is None:
        wav = _ffmpeg_decode(path, int(sr))
    return _finish(wav, path)


def audio_duration(wav: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Duration in seconds of a 1-D waveform."""
    return float(len(wav)) / float(sr)


# --------------------------------------------------------------------------------------------
# Silence / length checks
# --------------------------------------------------------------------------------------------

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

    Rules (chosen to catch wrong/muted inputs, not to detect speech as such):

    * shorter than :data:`MIN_SPEECH_SECONDS` (0.2 s, one 16-column mel window) -> error;
    * peak below :data:`SILENCE_PEAK_DBFS` (-50 dBFS) or loudest 50 ms block RMS below
      :data:`SILENCE_RMS_DBFS` (-60 dBFS) -> error "contains no audible speech". Normal speech
      peaks around -20..0 dBFS with block RMS around -40..-10 dBFS; a 16-bit dither / hiss
      floor sits near -90..-70 dBFS.
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


# --------------------------------------------------------------------------------------------
# Mel spectrogram
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MelParams:
    """Wav2Lip ``hparams`` for the mel front-end (defaults = the released checkpoints)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 800
    hop_size: int = 200
    win_size: int = 800
    num_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0


WAV2LIP_MEL = MelParams()


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear (3 bins per 200 Hz) below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3.0
    brk_hz = 1000.0
    brk_mel = brk_hz / f_sp
    logstep = math.log(6.4) / 27.0
    mel = f / f_sp
    hi = f >= brk_hz
    return np.where(hi, brk_mel + np.log(np.where(hi, f, brk_hz) / brk_hz) / logstep, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3.0
    brk_hz = 1000.0
    brk_mel = brk_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(m >= brk_mel, brk_hz * np.exp(logstep * (m - brk_mel)), f_sp * m)


@lru_cache(maxsize=8)
def mel_basis(params: MelParams = WAV2LIP_MEL) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank, ``(num_mels, n_fft//2 + 1)`` float32.

    Triangles are spaced evenly on the Slaney mel scale between fmin and fmax (num_mels + 2
    edges) over the rfft bin frequencies; each row is scaled by 2 / (upper - lower edge in Hz)
    so every filter has the same area. Rounding follows librosa's float32 filterbank: the
    triangle is stored in float32, then multiplied by the float64 normaliser and stored again.
    """
    fft_hz = np.fft.rfftfreq(params.n_fft, d=1.0 / params.sample_rate)
    edges_mel = np.linspace(_hz_to_mel(params.fmin), _hz_to_mel(params.fmax), params.num_mels + 2)
    edges_hz = _mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    dist = edges_hz[:, None] - fft_hz[None, :]
    rising = -dist[:-2] / widths[:-1, None]
    falling = dist[2:] / widths[1:, None]
    tri = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    norm = 2.0 / (edges_hz[2:] - edges_hz[:-2])
    basis = (tri.astype(np.float64) * norm[:, None]).astype(np.float32)
    basis.setflags(write=False)
    return basis


def _hann_periodic(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n, dtype=np.float64) / n)


def _stft_blocks(y: np.ndarray, params: MelParams, pad_mode: str, block_frames: int = 2048):
    """Yield ``(first_frame, |STFT| block (n_fft//2+1, n) float64)`` for centred frames.

    Frames are processed in blocks so that long clips never hold the full spectrogram.
    """
    n_fft, hop = params.n_fft, params.hop_size
    win = np.zeros(n_fft)
    off = (n_fft - params.win_size) // 2
    win[off: off + params.win_size] = _hann_periodic(params.win_size)
    if pad_mode == "reflect" and y.size < 2:
        pad_mode = "constant"  # nothing to reflect
    ypad = np.pad(y, n_fft // 2, mode=pad_mode)
    n_frames = 1 + (ypad.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(ypad, n_fft)[::hop][:n_frames]
    for s in range(0, n_frames, block_frames):
        blk = frames[s: s + block_frames] * win
        yield s, np.abs(np.fft.rfft(blk, n=n_fft, axis=1)).T


def _stft_magnitude(y: np.ndarray, params: MelParams, pad_mode: str,
                    block_frames: int = 2048) -> np.ndarray:
    """Full |STFT| ``(n_fft//2+1, T)`` float64 (centred frames, ``pad_mode`` edges)."""
    return np.concatenate([m for _, m in _stft_blocks(y, params, pad_mode, block_frames)], axis=1)


def melspectrogram(wav: np.ndarray, pad_mode: str = "reflect",
                   params: MelParams = WAV2LIP_MEL, dtype: type = np.float32) -> np.ndarray:
    """Wav2Lip normalised log-mel spectrogram, ``(80, 1 + len(wav) // 200)`` float32.

    Steps (float64 internally, rounded to float32 at the end):
    pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (zero initial state); STFT with n_fft 800,
    hop 200, periodic Hann window of 800, centred frames with ``pad_mode`` edge padding
    (``"reflect"``: released checkpoints / librosa < 0.10; ``"constant"``: zeros, librosa
    >= 0.10); magnitude projected on :func:`mel_basis`; ``dB = 20 log10(max(1e-5, m)) - 20``;
    ``out = clip(8 * (dB + 100) / 100 - 4, -4, 4)``. ``dtype=np.float64`` skips the final
    rounding (for reference comparisons).
    """
    if pad_mode not in ("reflect", "constant"):
        raise ValueError(f"pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("cannot compute a mel spectrogram of an empty waveform")
    y = x.copy()
    y[1:] -= params.preemphasis * x[:-1]
    basis = mel_basis(params).astype(np.float64)
    mel = np.empty((params.num_mels, 1 + (y.size + 2 * (params.n_fft // 2) - params.n_fft)
                    // params.hop_size))
    for start, mag in _stft_blocks(y, params, pad_mode):
        mel[:, start: start + mag.shape[1]] = basis @ mag
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - params.ref_level_db
    m = params.max_abs_value
    out = np.clip((2.0 * m) * ((db - params.min_level_db) / (-params.min_level_db)) - m, -m, m)
    return out.astype(dtype)


def pad_mel(mel: np.ndarray, min_frames: int = MEL_STEP_SIZE,
            value: float = -WAV2LIP_MEL.max_abs_value) -> np.ndarray:
    """Right-pad a mel shorter than ``min_frames`` columns with the silence floor (-4).

    Only very short clips (< 0.075 s) need this; it lets at least one window be cut. Longer
    mels are returned unchanged (same object).
    """
    t = mel.shape[-1]
    if t >= min_frames:
        return mel
    pad = np.full(mel.shape[:-1] + (min_frames - t,), value, dtype=mel.dtype)
    return np.concatenate([mel, pad], axis=-1)


# --------------------------------------------------------------------------------------------
# Mel windows per video frame
# --------------------------------------------------------------------------------------------

def _check_fps(fps: float) -> float:
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise InputError(f"frame rate must be a positive number, got {fps}")
    return fps


def mel_chunk_starts(n_mel_frames: int, fps: float, n_frames: Optional[int] = None,
                     step: int = MEL_STEP_SIZE) -> np.ndarray:
    """Start columns of the ``step``-wide mel windows for each video frame (int64).

    Frame ``i`` starts at ``int(i * 80 / fps)`` (80 mel columns per second), clamped to the
    last full window ``n_mel_frames - step``.

    * ``n_frames is None`` (upstream Wav2Lip inference): keep every frame whose window fits,
      then one final window at ``n_mel_frames - step`` and stop. Identical to upstream's list
      (its final window may repeat the previous start).
    * ``n_frames`` given: exactly ``n_frames`` starts, ``min(int(i * 80 / fps), last)`` — a
      prefix of / extension of the upstream list (with ``n_frames`` equal to the upstream
      count the two agree exactly). Use with :func:`num_video_frames`.

    Mels shorter than ``step`` are treated as if padded to ``step`` columns (all starts 0;
    :func:`mel_windows` pads them with :func:`pad_mel`).
    """
    fps = _check_fps(fps)
    mult = 80.0 / fps
    last = max(0, int(n_mel_frames) - step)
    if n_frames is None:
        # every i with int(i*mult) <= last, plus the final clamped window
        i = np.arange(int(last / mult) + 3, dtype=np.float64)
        s = np.floor(i * mult).astype(np.int64)
        s = s[s <= last]
        return np.append(s, np.int64(last)).astype(np.int64)
    n_frames = int(n_frames)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    s = np.floor(np.arange(n_frames, dtype=np.float64) * mult).astype(np.int64)
    return np.minimum(s, last).astype(np.int64)


def mel_windows(mel: np.ndarray, starts: np.ndarray, step: int = MEL_STEP_SIZE) -> np.ndarray:
    """Cut ``(N, 80, step)`` float32 windows ``mel[:, s:s+step]``; short mels are padded first."""
    mel = pad_mel(np.asarray(mel, dtype=np.float32), step)
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    if starts.size and (starts.min() < 0 or starts.max() + step > mel.shape[1]):
        raise ValueError(f"window starts must lie in [0, {mel.shape[1] - step}], got "
                         f"[{starts.min()}, {starts.max()}]")
    idx = starts[:, None] + np.arange(step)[None, :]
    return np.ascontiguousarray(mel[:, idx].transpose(1, 0, 2), dtype=np.float32)


def num_video_frames(n_samples: int, sr: int, fps: float) -> int:
    """Number of output video frames covering ``n_samples`` of audio.

    ``max(1, floor(n_samples / sr * fps + 0.5))``: the audio duration times the frame rate,
    rounded half up, at least one frame. (Upstream Wav2Lip instead stops after the last full
    mel window, which is ~16 columns = 0.2 s shorter than the audio.)
    """
    fps = _check_fps(fps)
    return max(1, int(math.floor(int(n_samples) * fps / float(sr) + 0.5)))


@dataclass
class AudioFeatures:
    """Everything stage 1 needs from the audio of one clip."""

    wav: np.ndarray          # (n_samples,) float32 at ``sr``
    sr: int
    mel: np.ndarray          # (80, T) float32
    starts: np.ndarray       # (n_frames,) int64
    windows: np.ndarray      # (n_frames, 80, 16) float32
    level: AudioLevel

    @property
    def n_frames(self) -> int:
        return int(self.starts.shape[0])


def audio_features(path: PathLike, fps: float, n_frames: Optional[int] = None,
                   pad_mode: str = "reflect") -> AudioFeatures:
    """Load ``path``, check it has speech, and cut one mel window per output video frame.

    ``n_frames`` defaults to :func:`num_video_frames` (round(duration * fps), at least 1).
    """
    fps = _check_fps(fps)
    wav = load_audio(path, SAMPLE_RATE)
    level = check_has_speech(wav, SAMPLE_RATE, path)
    mel = melspectrogram(wav, pad_mode=pad_mode)
    if n_frames is None:
        n_frames = num_video_frames(len(wav), SAMPLE_RATE, fps)
    starts = mel_chunk_starts(mel.shape[1], fps, n_frames)
    return AudioFeatures(wav, SAMPLE_RATE, mel, starts, mel_windows(mel, starts), level)
