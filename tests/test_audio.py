"""ladtalk.media.audio and .mel: decoding, the Wav2Lip mel front-end, mel windows, silence."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from ladtalk.errors import InputError
from ladtalk.media import audio as A
from ladtalk.media import mel as M
from ladtalk.media.ffmpeg import ffmpeg_exe

SR = 16000


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _tone(t: np.ndarray) -> np.ndarray:
    """Speech-band test signal: two partials with a slow amplitude envelope (peak < 0.6)."""
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t)
    return 0.35 * env * (np.sin(2 * np.pi * 440.0 * t) + 0.5 * np.sin(2 * np.pi * 1250.0 * t))


def _ffmpeg(*args: str) -> None:
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, capture_output=True)


def _aligned_corr(x: np.ndarray, ref: np.ndarray, max_lag: int = 160) -> tuple[int, float]:
    """Best lag (|lag| <= max_lag samples) and normalised correlation of x against ref."""
    from scipy.signal import correlate
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    n = min(len(x), len(ref)) - 2 * max_lag
    seg = ref[max_lag: max_lag + n]
    xs = x[: n + 2 * max_lag]
    num = correlate(xs, seg, mode="valid", method="fft")          # one value per lag
    c = np.concatenate([[0.0], np.cumsum(xs ** 2)])
    energy = c[n:] - c[:-n]                                      # sliding |x window|^2
    corr = num / (np.sqrt(energy) * np.linalg.norm(seg) + 1e-12)
    k = int(np.argmax(corr))
    return k - max_lag, float(corr[k])


DURATION = 1.5


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    """A 1.5 s stereo 44.1 kHz source (L = s, R = 0.5 s, so the channel mean is 0.75 s) and
    conversions of it, all made with the bundled ffmpeg."""
    d = tmp_path_factory.mktemp("media")
    t = np.arange(int(DURATION * 44100)) / 44100
    s = _tone(t)
    sf.write(d / "stereo44k.wav", np.stack([s, 0.5 * s], 1).astype(np.float32), 44100,
             subtype="PCM_16")
    src = str(d / "stereo44k.wav")
    black = ["-f", "lavfi", "-i", f"color=c=black:s=64x64:r=25:d={DURATION}"]
    _ffmpeg("-i", src, "-c:a", "libmp3lame", "-b:a", "128k", str(d / "a.mp3"))
    _ffmpeg("-i", src, "-c:a", "aac", "-b:a", "128k", str(d / "a.m4a"))
    _ffmpeg("-i", src, "-c:a", "libvorbis", "-q:a", "5", str(d / "a.ogg"))
    _ffmpeg("-i", src, "-c:a", "flac", str(d / "a.flac"))
    _ffmpeg(*black, "-i", src, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-shortest", str(d / "v.mp4"))
    _ffmpeg(*black, "-i", src, "-c:v", "mpeg4", "-c:a", "pcm_s16le", "-shortest", str(d / "v.mov"))
    _ffmpeg(*black, "-i", src, "-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libopus",
            "-shortest", str(d / "v.webm"))
    _ffmpeg(*black, "-i", src, "-c:v", "mpeg4", "-c:a", "libmp3lame", "-shortest", str(d / "v.mkv"))
    _ffmpeg(*black, "-an", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            str(d / "silent_video.mp4"))
    return d


# --------------------------------------------------------------------------------------------
# golden equivalence (upstream Wav2Lip numbers)
# --------------------------------------------------------------------------------------------

GOLDEN_SUFFIXES = ("_wav.npy", "_mel.npy", "_mel_f64.npy", "_mel_reflectpad.npy",
                   "_chunk_starts_fps25.npy", ".wav")


def test_golden_dir_fully_covered(golden_dir):
    """Every file in wav2lip_mel/ is one the tests below compare against."""
    files = sorted(p.name for p in (golden_dir / "wav2lip_mel").iterdir())
    expected = sorted([f"speech_{lang}{suf}" for lang in ("en", "fr") for suf in GOLDEN_SUFFIXES]
                      + ["hparams.json"])
    assert files == expected


def test_golden_hparams_match_defaults(golden_dir):
    hp = json.loads((golden_dir / "wav2lip_mel" / "hparams.json").read_text())
    p = M.WAV2LIP_MEL
    assert (hp["sample_rate"], hp["n_fft"], hp["hop_size"], hp["win_size"], hp["num_mels"]) == \
        (p.sample_rate, p.n_fft, p.hop_size, p.win_size, p.num_mels)
    assert (hp["fmin"], hp["fmax"], hp["preemphasis"]) == (p.fmin, p.fmax, p.preemphasis)
    assert (hp["min_level_db"], hp["ref_level_db"], hp["max_abs_value"]) == \
        (p.min_level_db, p.ref_level_db, p.max_abs_value)
    assert hp["_notes"]["mel_step_size"] == M.MEL_STEP_SIZE


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_golden_wav(golden_dir, lang):
    g = golden_dir / "wav2lip_mel"
    ref = np.load(g / f"speech_{lang}_wav.npy")
    wav = A.load_audio(g / f"speech_{lang}.wav")
    assert wav.dtype == np.float32 and wav.shape == ref.shape
    np.testing.assert_array_equal(wav, ref)
    # the ffmpeg path gives the same numbers as the soundfile fast path
    np.testing.assert_array_equal(A.load_audio(g / f"speech_{lang}.wav", use_soundfile=False),
                                  ref)


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_golden_mel(golden_dir, lang):
    g = golden_dir / "wav2lip_mel"
    wav = np.load(g / f"speech_{lang}_wav.npy")
    const = M.melspectrogram(wav, pad_mode="constant")
    refl = M.melspectrogram(wav)  # default = reflect (released checkpoints)
    ref_const = np.load(g / f"speech_{lang}_mel.npy")
    ref_refl = np.load(g / f"speech_{lang}_mel_reflectpad.npy")
    assert const.dtype == np.float32 and const.shape == ref_const.shape == (80, 1 + len(wav) // 200)
    np.testing.assert_allclose(const, ref_const, rtol=0, atol=1e-4)
    np.testing.assert_allclose(refl, ref_refl, rtol=0, atol=1e-4)
    # padding matters (frames 0-1 differ), so the two references really are distinguished
    assert np.abs(refl - ref_const).max() > 0.1


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_golden_mel_f64(golden_dir, lang):
    g = golden_dir / "wav2lip_mel"
    wav = np.load(g / f"speech_{lang}_wav.npy")
    mel64 = M.melspectrogram(wav, pad_mode="constant", dtype=np.float64)
    ref = np.load(g / f"speech_{lang}_mel_f64.npy")
    assert mel64.dtype == np.float64
    np.testing.assert_allclose(mel64, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_golden_chunk_starts(golden_dir, lang):
    g = golden_dir / "wav2lip_mel"
    ref = np.load(g / f"speech_{lang}_chunk_starts_fps25.npy")
    n_mel = np.load(g / f"speech_{lang}_mel.npy").shape[1]
    starts = M.mel_chunk_starts(n_mel, 25)
    assert starts.dtype == np.int64
    np.testing.assert_array_equal(starts, ref)
    np.testing.assert_array_equal(M.mel_chunk_starts(n_mel, 25, n_frames=len(ref)), ref)
    win = M.mel_windows(np.load(g / f"speech_{lang}_mel.npy"), ref)
    assert win.shape == (len(ref), 80, 16)


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["stereo44k.wav", "a.mp3", "a.m4a", "a.ogg", "a.flac",
                                  "v.mp4", "v.mov", "v.webm", "v.mkv"])
def test_decode_formats(media_dir, name):
    wav = A.load_audio(media_dir / name)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert np.abs(wav).max() <= 1.0
    assert abs(len(wav) / SR - DURATION) < 0.03, len(wav) / SR
    ref = 0.75 * _tone(np.arange(len(wav) + 400) / SR)  # channel mean at 16 kHz
    lag, corr = _aligned_corr(wav, ref)
    assert abs(lag) <= 16, lag          # <= 1 ms: decoders' priming delay is trimmed
    assert corr > 0.99, corr
    if name.endswith((".wav", ".flac", ".mov")):  # lossless (pcm / flac): only resampling error
        assert np.abs(wav[400:-400] - ref[400:len(wav) - 400]).max() < 1e-3
    # the level is kept (mean of channels, not ffmpeg's -3 dB per channel sum)
    rms_ratio = np.sqrt(np.mean(wav[800:-800] ** 2) / np.mean(ref[800:len(wav) - 800] ** 2))
    assert 0.9 < rms_ratio < 1.1, rms_ratio


def test_resampled_wav_matches_analytic(media_dir):
    wav = A.load_audio(media_dir / "stereo44k.wav")
    assert len(wav) == round(DURATION * SR)
    ref = 0.75 * _tone(np.arange(len(wav)) / SR)
    # soxr resampling of 16-bit audio: tiny error away from the edges
    assert np.abs(wav[400:-400] - ref[400:-400]).max() < 2e-4


def test_other_sample_rate_and_fast_path_consistency(tmp_path):
    t = np.arange(SR) / SR
    s = _tone(t).astype(np.float32)
    stereo = np.stack([s, -0.25 * s], 1)
    sf.write(tmp_path / "st16.wav", stereo, SR, subtype="PCM_16")
    fast = A.load_audio(tmp_path / "st16.wav")           # soundfile path (no resampling)
    slow = A.load_audio(tmp_path / "st16.wav", use_soundfile=False)  # ffmpeg path
    np.testing.assert_array_equal(fast, slow)
    q = sf.read(tmp_path / "st16.wav", dtype="float32")[0]
    np.testing.assert_array_equal(fast, q.mean(axis=1, dtype=np.float32))
    # asking for another rate resamples (8 kHz: length halves, waveform preserved)
    w8 = A.load_audio(tmp_path / "st16.wav", sr=8000)
    assert len(w8) == SR // 2
    ref8 = 0.375 * _tone(np.arange(len(w8)) / 8000)
    assert np.abs(w8[200:-200] - ref8[200:-200]).max() < 3e-3


def test_resampler_fallback(media_dir):
    """An ffmpeg build without the requested resampler still decodes (ffmpeg's default one)."""
    src = media_dir / "stereo44k.wav"
    direct = subprocess.run(A.audio_cmd(src, SR, resampler="no_such_engine"), capture_output=True)
    assert direct.returncode != 0 and b"resampler" in direct.stderr.lower()
    for _ in range(2):  # the second call remembers that the engine is missing
        wav = A.load_audio(src, resampler="no_such_engine")
        ref = 0.75 * _tone(np.arange(len(wav)) / SR)
        assert len(wav) == round(DURATION * SR)
        assert np.abs(wav[400:-400] - ref[400:-400]).max() < 5e-3


def test_float_wav_is_clipped(tmp_path):
    x = np.array([0.0, 1.5, -2.0, 0.5] * 4000, dtype=np.float32)
    sf.write(tmp_path / "loud.wav", x, SR, subtype="FLOAT")
    wav = A.load_audio(tmp_path / "loud.wav")
    assert wav.max() == 1.0 and wav.min() == -1.0
    np.testing.assert_array_equal(wav[3::4], 0.5)


def test_error_missing_file(tmp_path):
    p = tmp_path / "nope.wav"
    with pytest.raises(InputError, match="nope.wav.*does not exist"):
        A.load_audio(p)
    with pytest.raises(InputError, match="not a file"):
        A.load_audio(tmp_path)


def test_error_empty_file(tmp_path):
    p = tmp_path / "empty.mp3"
    p.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.mp3.*empty \(0 bytes\)"):
        A.load_audio(p)


def test_error_undecodable_file(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is a text file, not audio\n" * 20)
    with pytest.raises(InputError) as err:
        A.load_audio(p)
    msg = str(err.value)
    assert "notes.wav" in msg and "could not decode" in msg
    assert "Invalid data found" in msg  # ffmpeg's own last stderr line


def test_error_video_without_audio(media_dir):
    with pytest.raises(InputError, match=r"silent_video\.mp4.*no audio stream"):
        A.load_audio(media_dir / "silent_video.mp4")


@pytest.mark.parametrize("rate", [SR, 44100])  # soundfile path and ffmpeg path
def test_error_zero_length_audio(tmp_path, rate):
    p = tmp_path / f"zero{rate}.wav"
    sf.write(p, np.zeros(0, np.float32), rate, subtype="PCM_16")
    assert p.stat().st_size > 0  # header only
    with pytest.raises(InputError, match="no audio samples"):
        A.load_audio(p)


# --------------------------------------------------------------------------------------------
# silence / short clips
# --------------------------------------------------------------------------------------------

def test_digital_silence_rejected(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(p, np.zeros(SR, np.float32), SR, subtype="PCM_16")
    wav = A.load_audio(p)
    with pytest.raises(InputError, match=r"silence\.wav.*no audible speech \(peak level -inf dBFS"):
        A.check_has_speech(wav, SR, p)


def test_near_silence_rejected_quiet_speech_accepted():
    rng = np.random.default_rng(0)
    hiss = (1e-4 * rng.standard_normal(SR)).astype(np.float32)  # about -80 dBFS
    with pytest.raises(InputError, match=r"no audible speech \(peak level -6\d\.\d dBFS"):
        A.check_has_speech(hiss, SR)
    quiet = (0.05 * _tone(np.arange(SR) / SR)).astype(np.float32)  # peak about -30 dBFS
    level = A.check_has_speech(quiet + hiss, SR)
    assert -35 < level.peak_dbfs < -25
    assert level.max_block_rms_dbfs > A.SILENCE_RMS_DBFS


def test_too_short_rejected():
    short = (0.5 * np.sin(np.arange(int(0.15 * SR)) * 0.2)).astype(np.float32)
    with pytest.raises(InputError, match=r"0\.150 s long; at least 0\.2 s"):
        A.check_has_speech(short, SR, "clip.wav")
    ok = (0.5 * np.sin(np.arange(int(0.2 * SR)) * 0.2)).astype(np.float32)
    assert A.check_has_speech(ok, SR).duration_s == pytest.approx(0.2)


def test_speech_activity_levels():
    x = np.zeros(SR, np.float32)
    x[8000:8800] = 0.5  # one 50 ms block at -6 dBFS
    lv = A.speech_activity(x, SR)
    assert lv.peak_dbfs == pytest.approx(20 * math.log10(0.5))
    assert lv.max_block_rms_dbfs == pytest.approx(20 * math.log10(0.5))
    assert lv.duration_s == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# mel spectrogram
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 199, 200, 801, 3200, 16000])
def test_mel_shape_and_range(n):
    x = (0.3 * np.sin(np.arange(n) * 0.37)).astype(np.float32)
    for mode in ("reflect", "constant"):
        m = M.melspectrogram(x, pad_mode=mode)
        assert m.shape == (80, 1 + n // 200) and m.dtype == np.float32
        assert m.min() >= -4 and m.max() <= 4


def test_mel_silence_is_floor_and_padding_only_affects_edges():
    assert np.all(M.melspectrogram(np.zeros(4000, np.float32)) == -4)
    x = _tone(np.arange(SR) / SR).astype(np.float32)
    r, c = M.melspectrogram(x, "reflect"), M.melspectrogram(x, "constant")
    diff = np.abs(r - c).max(axis=0)
    assert diff[:2].max() > 0.05 and diff[-2:].max() > 0.05
    assert diff[2:-2].max() == 0


def test_mel_tone_lands_in_right_band():
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(SR) / SR)).astype(np.float32)
    m = M.melspectrogram(x)
    band = int(np.argmax(m[:, 40]))
    edges = librosa.mel_frequencies(82, fmin=55.0, fmax=7600.0)  # slaney scale
    assert edges[band] < 1000.0 < edges[band + 2]


def test_mel_basis_properties():
    b = M.mel_basis()
    assert b.shape == (80, 401) and b.dtype == np.float32 and (b >= 0).all()
    # slaney normalisation: each triangle has unit area in Hz (bins are 20 Hz apart);
    # the narrow low bands are poorly sampled, so check the wide ones
    area = b.astype(np.float64).sum(axis=1) * 20.0
    np.testing.assert_allclose(area[20:], 1.0, rtol=0.03)
    peaks = b.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > peaks[0]
    assert b[:, 0].max() == 0  # nothing below fmin = 55 Hz reaches the DC bin
    assert not b.flags.writeable and M.mel_basis() is b  # cached, shared read-only


def _upstream_mel(x: np.ndarray, pad_mode: str) -> np.ndarray:
    """Upstream Wav2Lip's audio.py recipe on the whole signal (one librosa.stft call)."""
    from scipy.signal import lfilter
    y = lfilter([1, -0.97], [1], x.astype(np.float64))
    spec = np.abs(librosa.stft(y, n_fft=800, hop_length=200, win_length=800, pad_mode=pad_mode))
    basis = librosa.filters.mel(sr=SR, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, np.dot(basis, spec))) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


@pytest.mark.parametrize("mode", M.PAD_MODES)
def test_numpy_stft_is_librosa_stft_bit_for_bit(mode):
    """The front-end's STFT (librosa's window, numpy's FFT) is ``librosa.stft``'s, exactly."""
    rng = np.random.default_rng(3)
    x = (0.3 * rng.standard_normal(16000 * 3 + 123)).astype(np.float32)
    ypad = M._preemphasized_padded(x, M.WAV2LIP_MEL, mode)
    ref = np.abs(librosa.stft(ypad, n_fft=800, hop_length=200, win_length=800, window="hann",
                              center=False))
    for block in (M.BLOCK_FRAMES, 7):
        got = np.concatenate([m for _, m in M._stft_blocks(ypad, M.WAV2LIP_MEL, block)], axis=1)
        assert got.shape == ref.shape and np.array_equal(got, ref)


def test_frontend_constants_are_librosa_s_and_cached_on_disk(monkeypatch, caplog):
    params = M.MelParams(num_mels=40)  # not the default: its in-memory cache is this test's
    M.frontend_constants.cache_clear()
    try:
        window, basis = M.frontend_constants(params)
        path = M.frontend_path(params)
        assert path.is_file() and path.parent.name == "mel"
        ref_window = librosa.util.pad_center(
            librosa.filters.get_window("hann", 800, fftbins=True), size=800)
        assert np.array_equal(window, ref_window)
        assert np.array_equal(basis, librosa.filters.mel(sr=SR, n_fft=800, n_mels=40,
                                                         fmin=55.0, fmax=7600.0))
        assert not window.flags.writeable and not basis.flags.writeable

        def no_librosa(_params):
            raise AssertionError("librosa used although the cache holds the constants")
        with monkeypatch.context() as patch:
            patch.setattr(M, "_librosa_frontend", no_librosa)
            M.frontend_constants.cache_clear()
            w2, b2 = M.frontend_constants(params)  # read back from the file
        assert np.array_equal(w2, window) and np.array_equal(b2, basis)

        whole = path.read_bytes()
        for broken in (b"not an npz", whole[: len(whole) // 2]):  # garbage, a cut-off zip
            path.write_bytes(broken)  # a corrupt entry: warned about and rebuilt
            M.frontend_constants.cache_clear()
            caplog.clear()
            with caplog.at_level("WARNING", logger="ladtalk.media.mel"):
                w3, b3 = M.frontend_constants(params)
            assert "unreadable mel front-end cache" in caplog.text
            assert np.array_equal(w3, window) and np.array_equal(b3, basis)
        with np.load(path) as data:  # and the file is whole again
            assert np.array_equal(data["basis"], basis)
    finally:
        M.frontend_constants.cache_clear()


def test_a_warm_mel_does_not_import_librosa_s_heavy_parts(tmp_path):
    """With the constants on disk, a new process's mel skips scipy.signal and numba."""
    code = ("import sys, numpy as np; from ladtalk.media.mel import melspectrogram; "
            "m = melspectrogram(np.ones(4000, np.float32) * 0.1); "
            "print(m.shape, 'scipy.signal' in sys.modules, 'numba' in sys.modules)")
    env = {**__import__("os").environ, "LADTALK_HOME": str(tmp_path)}
    runs = [subprocess.run([__import__("sys").executable, "-c", code], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
            for _ in range(2)]
    assert runs[1][-2:] == ["False", "False"], runs  # the second process read the cache


def test_stft_blocking_does_not_change_the_mel():
    rng = np.random.default_rng(1)
    y = rng.standard_normal(9000)
    for mode in M.PAD_MODES:
        full = M.melspectrogram(y, mode, dtype=np.float64)
        small = M.melspectrogram(y, mode, dtype=np.float64, block_frames=7)
        # the STFT is the same per frame; only the BLAS mel projection may round differently
        np.testing.assert_allclose(full, small, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="block_frames"):
        M.melspectrogram(y, block_frames=0)


@pytest.mark.parametrize("mode", M.PAD_MODES)
def test_long_mel_matches_upstream_recipe(mode):
    """> 2048 frames: the block-wise mel equals upstream's one-shot librosa computation."""
    rng = np.random.default_rng(2)
    x = (0.2 * rng.standard_normal(2100 * 200 + 37)).astype(np.float32)
    mel = M.melspectrogram(x, mode, dtype=np.float64)
    ref = _upstream_mel(x, mode)
    assert mel.shape == ref.shape == (80, 2101)
    np.testing.assert_allclose(mel, ref, rtol=0, atol=1e-9)


def test_short_mel_is_padded_for_windows():
    x = (0.4 * np.sin(np.arange(800) * 0.3)).astype(np.float32)  # 50 ms -> 5 columns
    mel = M.melspectrogram(x)
    assert mel.shape == (80, 5)
    padded = M.pad_mel(mel)
    assert padded.shape == (80, 16)
    np.testing.assert_array_equal(padded[:, :5], mel)
    assert np.all(padded[:, 5:] == -4.0)
    # a short mel behaves exactly like one padded to 16 columns
    starts = M.mel_chunk_starts(mel.shape[1], 25)
    assert starts.tolist() == _upstream_rule(16, 25) == [0, 0]
    np.testing.assert_array_equal(M.mel_chunk_starts(mel.shape[1], 25, n_frames=3), [0, 0, 0])
    win = M.mel_windows(mel, M.mel_chunk_starts(mel.shape[1], 25, n_frames=3))
    assert win.shape == (3, 80, 16)
    np.testing.assert_array_equal(win[1], padded)
    assert M.pad_mel(padded) is padded


# --------------------------------------------------------------------------------------------
# mel windows per video frame
# --------------------------------------------------------------------------------------------

def _upstream_rule(n_mel: int, fps: float) -> list[int]:
    """The inference.py rule written as a plain loop (the specification)."""
    out, i = [], 0
    while True:
        s = int(i * (80.0 / fps))
        if s + 16 > n_mel:
            out.append(n_mel - 16)
            return out
        out.append(s)
        i += 1


@pytest.mark.parametrize("fps", [24, 25, 30, 30000 / 1001, 29.97, 50, 60, 12.5])
def test_chunk_starts_rule(fps):
    m = 80.0 / fps
    for n_mel in (16, 17, 33, 100, 233, 275, 1001):
        s = M.mel_chunk_starts(n_mel, fps)
        assert s.tolist() == _upstream_rule(n_mel, fps)
        assert s[0] == 0 and s[-1] == n_mel - 16
        assert np.all(s + 16 <= n_mel) and np.all(np.diff(s) >= 0)
        steps = np.diff(s[:-1])
        assert np.all((steps == math.floor(m)) | (steps == math.ceil(m)))
        # exact-length variant: prefix of / clamped extension of the upstream list
        for n_frames in (1, len(s) - 1, len(s), len(s) + 7):
            e = M.mel_chunk_starts(n_mel, fps, n_frames=n_frames)
            assert len(e) == max(n_frames, 0) and e.dtype == np.int64
            k = min(len(s), n_frames)
            np.testing.assert_array_equal(e[:k], s[:k])
            assert np.all(e[k:] == n_mel - 16)


def test_chunk_starts_bad_fps():
    for fps in (0, -25, float("nan"), float("inf")):
        with pytest.raises(InputError, match="frame rate"):
            M.mel_chunk_starts(100, fps)


def test_mel_windows_slices_and_bounds():
    mel = np.arange(80 * 40, dtype=np.float32).reshape(80, 40)
    starts = np.array([0, 3, 24])
    w = M.mel_windows(mel, starts)
    assert w.shape == (3, 80, 16) and w.dtype == np.float32
    for j, s in enumerate(starts):
        np.testing.assert_array_equal(w[j], mel[:, s:s + 16])
    with pytest.raises(ValueError):
        M.mel_windows(mel, np.array([25]))


def test_num_video_frames_rounding():
    assert M.num_video_frames(SR, SR, 25) == 25
    assert M.num_video_frames(1, SR, 25) == 1        # at least one frame
    assert M.num_video_frames(320, SR, 25) == 1      # 0.5 frame -> rounds half up
    assert M.num_video_frames(960, SR, 25) == 2      # 1.5 -> 2
    assert M.num_video_frames(959, SR, 25) == 1
    assert M.num_video_frames(10 * SR, SR, 30000 / 1001) == 300  # 299.7
    assert M.num_video_frames(46536, SR, 25) == 73   # 2.9085 s


def test_audio_to_mel_windows_end_to_end(tmp_path):
    """The public chain the pipeline uses: load, check, mel, one window per output frame."""
    x = _tone(np.arange(int(1.3 * SR)) / SR).astype(np.float32)
    sf.write(tmp_path / "speech.wav", x, SR, subtype="PCM_16")
    wav = A.load_audio(tmp_path / "speech.wav")
    A.check_has_speech(wav, SR, tmp_path / "speech.wav")
    mel = M.melspectrogram(wav)
    n = M.num_video_frames(len(wav), SR, 30)
    starts = M.mel_chunk_starts(mel.shape[1], 30, n)
    windows = M.mel_windows(mel, starts)
    assert len(starts) == n == 39
    assert windows.shape == (n, 80, 16)
    assert mel.shape == (80, 1 + len(x) // 200)
    np.testing.assert_array_equal(windows[-1], mel[:, starts[-1]:][:, :16])
    sf.write(tmp_path / "mute.wav", np.zeros(SR, np.float32), SR, subtype="PCM_16")
    with pytest.raises(InputError, match="mute.wav.*no audible speech"):
        A.check_has_speech(A.load_audio(tmp_path / "mute.wav"), SR, tmp_path / "mute.wav")


# ------------------------------------------------------------------ the early mel process
def _speech_file(tmp_path, seconds=1.3, name="speech.wav"):
    t = np.arange(int(seconds * A.SAMPLE_RATE)) / A.SAMPLE_RATE
    path = tmp_path / name
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(7 * t))).astype(
        np.float32), A.SAMPLE_RATE)
    return path


def test_mel_frames_predicts_the_spectrogram_width():
    for n in (1, 199, 200, 201, 16000, 16017):
        assert M.melspectrogram(np.zeros(n, np.float32) + 0.1).shape[1] == M.mel_frames(n)


def test_early_mel_process_gives_the_in_process_numbers(tmp_path):
    from ladtalk.generation.inputs import load_speech
    from ladtalk.media import mel_process
    path = _speech_file(tmp_path)
    job = mel_process.start(path)
    speech = load_speech(path, job)
    exact = M.melspectrogram(A.load_audio(path, A.SAMPLE_RATE))
    assert speech.n_mel_frames == exact.shape[1]
    got = speech.mel
    assert got.dtype == exact.dtype and np.array_equal(got, exact)  # bit for bit
    assert speech.wav is None and speech.early is None  # the waveform is not kept


def test_failed_or_mismatched_early_mel_falls_back(tmp_path):
    from ladtalk.generation.inputs import load_speech
    from ladtalk.media import mel_process
    path = _speech_file(tmp_path)
    exact = M.melspectrogram(A.load_audio(path, A.SAMPLE_RATE))
    broken = mel_process.start(tmp_path / "missing.wav")  # the child fails: None
    assert broken.result(exact.shape[1]) is None
    other = mel_process.start(_speech_file(tmp_path, 0.6, "short.wav"))  # another length
    speech = load_speech(path, other)
    assert np.array_equal(speech.mel, exact)  # computed in-process instead
    running = mel_process.start(path)
    running.close()  # an early end stops the child
    assert running.proc.poll() is not None


def test_cli_starts_the_mel_of_generate_audio_before_parsing(tmp_path, monkeypatch):
    import ladtalk.cli as cli
    started = []
    from ladtalk.media import mel_process
    monkeypatch.setattr(mel_process, "start", lambda audio: started.append(audio) or None)
    assert cli._prestart("generate", ["generate", "--face", "f.mp4", "--audio=a b.wav"]) is None
    assert started == ["a b.wav"]
    assert cli._prestart("enroll", ["enroll", "--audio", "x.wav"]) is None and len(started) == 1
    assert cli._prestart("generate", ["generate", "--face", "f.mp4"]) is None
    assert len(started) == 1
