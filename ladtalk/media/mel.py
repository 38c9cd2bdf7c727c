"""Wav2Lip mel front-end (librosa's Hann window and Slaney filterbank, numpy's FFT) and the
mel window of each video frame.

The numbers match upstream Wav2Lip's ``audio.py`` with its ``hparams`` (:data:`WAV2LIP_MEL`);
the golden tests pin them. The STFT is the one ``librosa.stft`` computes (the same window
times the same frames through numpy's real FFT: bit-identical, tested), run here directly so
that a process's first mel does not pay for librosa's imports of scipy.signal, numba and
soxr (about 2 CPU-seconds). The window and the filterbank come from librosa, once per machine
and library version, and are kept in ``$LADTALK_HOME/cache/mel`` (:func:`frontend_constants`).
See docs/media.md for the steps and the edge-padding choice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import zipfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Iterator, Optional, Tuple

import librosa  # lazy package: its submodules load on first use (a cache miss below)
import numpy as np

from ladtalk._util.atomic import atomic_path
from ladtalk._util.paths import ladtalk_home
from ladtalk.errors import InputError
from ladtalk.media.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

#: Width of one mel window fed to Wav2Lip / SyncNet (columns; 16 * 12.5 ms = 200 ms).
MEL_STEP_SIZE = 16
#: STFT edge padding: "reflect" (librosa < 0.10, the released checkpoints) or "constant".
PAD_MODES = ("reflect", "constant")
#: Frames per STFT block: long clips never hold their whole spectrogram.
BLOCK_FRAMES = 2048


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


def _versions() -> str:
    out = []
    for dist in ("librosa", "scipy", "numpy"):
        try:
            out.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist}=?")
    return ",".join(out)


def frontend_path(params: MelParams = WAV2LIP_MEL) -> Path:
    """The cache file of ``params``' window and filterbank, keyed by the params and the
    librosa / scipy / numpy versions that computed them."""
    key = json.dumps({"params": asdict(params), "versions": _versions()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return ladtalk_home() / "cache" / "mel" / f"frontend-{digest}.npz"


def _librosa_frontend(params: MelParams) -> Tuple[np.ndarray, np.ndarray]:
    """What ``librosa.stft`` windows with and ``librosa.filters.mel`` returns."""
    window = librosa.filters.get_window("hann", params.win_size, fftbins=True)
    window = librosa.util.pad_center(np.asarray(window, dtype=np.float64), size=params.n_fft)
    basis = librosa.filters.mel(sr=params.sample_rate, n_fft=params.n_fft,
                                n_mels=params.num_mels, fmin=params.fmin, fmax=params.fmax)
    return window, np.asarray(basis, dtype=np.float32)


def _read_frontend(path: Path, params: MelParams) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            window, basis = data["window"], data["basis"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring the unreadable mel front-end cache %s (%s); computing it again",
                    path, exc)
        return None
    n_bins = params.n_fft // 2 + 1
    if (window.shape != (params.n_fft,) or window.dtype != np.float64
            or basis.shape != (params.num_mels, n_bins) or basis.dtype != np.float32):
        log.warning("ignoring the mel front-end cache %s (unexpected arrays); computing it "
                    "again", path)
        return None
    return window, basis


@lru_cache(maxsize=8)
def frontend_constants(params: MelParams = WAV2LIP_MEL) -> Tuple[np.ndarray, np.ndarray]:
    """``(window, basis)``: the STFT window ``(n_fft,)`` float64 and the Slaney mel filterbank
    ``(num_mels, n_fft//2 + 1)`` float32, both read-only, as librosa computes them.

    Read from :func:`frontend_path` when there; otherwise computed with librosa and written
    there atomically (an unwritable cache only costs the recomputation next time).
    """
    path = frontend_path(params)
    found = _read_frontend(path, params)
    if found is None:
        found = _librosa_frontend(params)
        try:
            with atomic_path(path, suffix=".npz") as tmp:
                np.savez(tmp, window=found[0], basis=found[1])
        except OSError as exc:
            log.debug("mel front-end cache not written (%s)", exc)
    for arr in found:
        arr.setflags(write=False)
    return found


def mel_basis(params: MelParams = WAV2LIP_MEL) -> np.ndarray:
    """librosa's Slaney mel filterbank, ``(num_mels, n_fft//2 + 1)`` float32, read-only."""
    return frontend_constants(params)[1]


def _preemphasized_padded(wav: np.ndarray, params: MelParams, pad_mode: str) -> np.ndarray:
    """``y[n] = x[n] - k x[n-1]`` in float64, edge-padded by ``n_fft // 2`` on both sides.

    The padding is what ``librosa.stft(center=True)`` applies; at most two copies of the
    signal are alive at once.
    """
    y = np.array(wav, dtype=np.float64).reshape(-1)
    if y.size == 0:
        raise ValueError("cannot compute a mel spectrogram of an empty waveform")
    y[1:] -= params.preemphasis * y[:-1]  # the right side is evaluated before the update
    if pad_mode == "reflect" and y.size < 2:
        pad_mode = "constant"  # nothing to reflect
    return np.pad(y, params.n_fft // 2, mode=pad_mode)


def _stft_blocks(ypad: np.ndarray, params: MelParams,
                 block_frames: int) -> Iterator[Tuple[int, np.ndarray]]:
    """``(first_frame, |STFT| (n_fft//2+1, n))`` per block of frames of the already padded
    signal: ``librosa.stft(center=False)``'s numbers (window times frame, real FFT)."""
    n_fft, hop = params.n_fft, params.hop_size
    window = frontend_constants(params)[0]
    n_frames = 1 + (ypad.size - n_fft) // hop
    for s in range(0, n_frames, block_frames):
        e = min(n_frames, s + block_frames)
        frames = np.lib.stride_tricks.sliding_window_view(
            ypad[s * hop:(e - 1) * hop + n_fft], n_fft)[::hop]
        spec = np.fft.rfft(frames * window, axis=-1)
        yield s, np.ascontiguousarray(np.abs(spec).T)


def melspectrogram(wav: np.ndarray, pad_mode: str = "reflect",
                   params: MelParams = WAV2LIP_MEL, dtype: type = np.float32,
                   block_frames: int = BLOCK_FRAMES) -> np.ndarray:
    """Wav2Lip normalised log-mel spectrogram, ``(80, 1 + len(wav) // 200)`` in [-4, 4].

    Float64 inside; ``dtype=np.float64`` skips the final rounding. ``block_frames`` bounds
    the memory (the result does not depend on it).
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
    if block_frames < 1:
        raise ValueError(f"block_frames must be >= 1, got {block_frames}")
    ypad = _preemphasized_padded(wav, params, pad_mode)
    basis = mel_basis(params).astype(np.float64)
    mel = np.empty((params.num_mels, 1 + (ypad.size - params.n_fft) // params.hop_size))
    for start, mag in _stft_blocks(ypad, params, int(block_frames)):
        mel[:, start: start + mag.shape[1]] = basis @ mag
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - params.ref_level_db
    m = params.max_abs_value
    out = np.clip((2.0 * m) * ((db - params.min_level_db) / (-params.min_level_db)) - m, -m, m)
    return out.astype(dtype)


def mel_frames(n_samples: int, params: MelParams = WAV2LIP_MEL) -> int:
    """Columns :func:`melspectrogram` gives for ``n_samples`` samples, without computing it."""
    return 1 + int(n_samples) // params.hop_size


def pad_mel(mel: np.ndarray, min_frames: int = MEL_STEP_SIZE,
            value: float = -WAV2LIP_MEL.max_abs_value) -> np.ndarray:
    """Right-pad a mel shorter than ``min_frames`` columns with the silence floor (-4).

    Longer mels are returned unchanged (the same object).
    """
    t = mel.shape[-1]
    if t >= min_frames:
        return mel
    pad = np.full(mel.shape[:-1] + (min_frames - t,), value, dtype=mel.dtype)
    return np.concatenate([mel, pad], axis=-1)


def _check_fps(fps: float) -> float:
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise InputError(f"frame rate must be a positive number, got {fps}")
    return fps


def mel_chunk_starts(n_mel_frames: int, fps: float, n_frames: Optional[int] = None,
                     step: int = MEL_STEP_SIZE) -> np.ndarray:
    """Start column of the ``step``-wide mel window of each video frame (int64).

    Frame ``i`` starts at ``int(i * 80 / fps)``, clamped to ``n_mel_frames - step``. Without
    ``n_frames``: upstream Wav2Lip's list (every window that fits, then the last one); with
    it: exactly ``n_frames`` starts. Mels shorter than ``step`` count as padded to ``step``.
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
    """Output video frames for ``n_samples`` of audio: ``max(1, round_half_up(s * fps))``.

    (Upstream Wav2Lip stops after the last full mel window, about 0.2 s earlier.)
    """
    fps = _check_fps(fps)
    return max(1, int(math.floor(int(n_samples) * fps / float(sr) + 0.5)))
