"""MFCC front-end of the LSE SyncNet, equal to ``python_speech_features.mfcc`` defaults.

syncnet_python (and Wav2Lip's LSE scripts) call ``python_speech_features.mfcc(audio, 16000)`` on
the **raw int16 samples** read by ``scipy.io.wavfile`` and keep the float64 result. This module
reimplements that call in numpy/scipy (no dependency on the package):

1. pre-emphasis ``y[0] = x[0]``, ``y[n] = x[n] - 0.97 x[n-1]``;
2. frames of 400 samples (25 ms) every 160 samples (10 ms), rectangular window (none), no
   centring; ``1 + ceil((N - 400) / 160)`` frames (one frame if N <= 400), zero padding at the
   end only;
3. power spectrum ``|rfft(frame, 512)|^2 / 512`` (257 bins);
4. 26 triangular mel filters whose edges are FFT bins
   ``floor(513 * mel2hz(linspace(0, hz2mel(8000), 28)) / 16000)``, mel = 2595 log10(1 + f/700);
5. values that are exactly 0 become float64 eps before the natural log;
6. orthonormal DCT-II, coefficients 0..12; lifter ``1 + 11 sin(pi n / 22)``;
7. coefficient 0 is replaced by ``log(total frame power)`` (eps-guarded the same way).

Audio scaled to [-1, 1] must be multiplied by 32768 first, otherwise coefficient 0 shifts by
log(32768^2) = 20.79. :func:`syncnet_mfcc` does that for floating-point input.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.fft import dct

from ladtalk.errors import InputError

SAMPLE_RATE = 16000
FRAME_LEN = 400          # 25 ms at 16 kHz
FRAME_STEP = 160         # 10 ms at 16 kHz -> 100 MFCC frames per second
NFFT = 512
N_FILTERS = 26
N_CEPSTRA = 13
PREEMPH = 0.97
LIFTER = 22
_EPS = np.finfo(np.float64).eps


def _hz2mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel2hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def mel_filterbank(n_filters: int = N_FILTERS, nfft: int = NFFT,
                   sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_filters, nfft//2+1) triangular filters with python_speech_features' integer bin edges."""
    mel = np.linspace(_hz2mel(0.0), _hz2mel(sample_rate / 2.0), n_filters + 2)
    edges = np.floor((nfft + 1) * _mel2hz(mel) / sample_rate)
    bins = np.arange(nfft // 2 + 1, dtype=np.float64)
    bank = np.zeros((n_filters, nfft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        rising = (bins >= lo) & (bins < mid)
        falling = (bins >= mid) & (bins < hi)
        bank[j, rising] = (bins[rising] - lo) / (mid - lo)
        bank[j, falling] = (hi - bins[falling]) / (hi - mid)
    bank.setflags(write=False)
    return bank


def frame_count(n_samples: int) -> int:
    """Number of MFCC frames python_speech_features produces for ``n_samples`` samples."""
    if n_samples <= FRAME_LEN:
        return 1
    return 1 + int(math.ceil((n_samples - FRAME_LEN) / FRAME_STEP))


def syncnet_mfcc(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """MFCCs of a mono 16 kHz signal as ``(13, n_frames)`` float64 (coefficients x time).

    ``samples``: int16 (used as is) or floating point in [-1, 1] (scaled by 32768). Any other
    sample rate is refused: resample to 16 kHz first, as syncnet_python's ffmpeg call does.
    """
    if sample_rate != SAMPLE_RATE:
        raise InputError(f"SyncNet MFCCs need 16 kHz audio, got {sample_rate} Hz; resample first")
    x = np.asarray(samples)
    if x.ndim != 1:
        raise InputError(f"SyncNet MFCCs need mono audio (1-D samples), got shape {x.shape}")
    if x.size == 0:
        raise InputError("SyncNet MFCCs got an empty audio signal")
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64) * 32768.0
    else:
        x = x.astype(np.float64)

    emph = np.empty_like(x)
    emph[0] = x[0]
    emph[1:] = x[1:] - PREEMPH * x[:-1]

    n_frames = frame_count(x.size)
    padded = np.zeros((n_frames - 1) * FRAME_STEP + FRAME_LEN)
    padded[:x.size] = emph
    frames = np.lib.stride_tricks.sliding_window_view(padded, FRAME_LEN)[::FRAME_STEP]
    power = np.abs(np.fft.rfft(frames, NFFT, axis=1)) ** 2 / NFFT     # (T, 257)

    energy = power.sum(axis=1)
    energy = np.where(energy == 0, _EPS, energy)
    feat = power @ mel_filterbank().T
    feat = np.where(feat == 0, _EPS, feat)

    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :N_CEPSTRA]
    n = np.arange(N_CEPSTRA)
    cep = cep * (1.0 + (LIFTER / 2.0) * np.sin(np.pi * n / LIFTER))
    cep[:, 0] = np.log(energy)
    return np.ascontiguousarray(cep.T)
