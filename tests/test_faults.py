"""Generation pipeline faults: every bad input gives a clear error or a documented fallback,
no half-written output, no leftover temp files, and concurrent calls stay independent.

These tests use :class:`StubGenerator` (a Wav2Lip-shaped module that costs nothing); the
real network is exercised in ``test_pipeline.py``.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from pipeline_helpers import (
    FACE_BOX,
    FRAME_H,
    FRAME_W,
    StubGenerator,
    astronaut,
    blank_frame,
    decode,
    face_frame,
    make_face_video,
    make_speech,
    write_video,
    write_wav,
)

import ladtalk.generation.runner as runner_mod
from ladtalk.errors import InputError
from ladtalk.face.crop import CropConfig, face_region
from ladtalk.generation.pipeline import GenerateOptions, Pipeline
from ladtalk.media.audio import load_audio
from ladtalk.media.decode import read_frames
from ladtalk.media.encode import encoded_size
from ladtalk.media.ffmpeg import ffmpeg_exe
from ladtalk.media.probe import probe
from ladtalk.media.timing import source_indices

FPS = 10.0


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("fault_media")
    return {
        "video": make_face_video(d / "face.mp4", 12, FPS),
        "speech": make_speech(d / "speech.wav", 1.2),
        "dir": d,
    }


@pytest.fixture
def pipe():
    return Pipeline(StubGenerator(), device="cpu", batch_size=4)


def _box_opts(**kw):
    return GenerateOptions(box=FACE_BOX, **kw)


def _leftovers(folder: Path, keep=()):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ------------------------------------------------------------------------- faces
def test_video_without_any_face_fails_before_model_work(media, tmp_path):
    video = write_video(tmp_path / "empty room.mp4", [blank_frame(i) for i in range(8)], FPS)
    stub = StubGenerator()
    pipe = Pipeline(stub, device="cpu", batch_size=4)
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError) as exc:
        pipe.run(video, media["speech"], out, GenerateOptions(detector="dlib"))
    msg = str(exc.value)
    assert "no face was detected in any of the 8 frames" in msg
    assert str(video) in msg and "--box" in msg
    assert stub.calls == 0 and not pipe.lipsyncer_loaded  # the model was not even loaded
    assert not out.exists() and _leftovers(tmp_path) == ["empty room.mp4"]


def test_box_outside_the_frame_is_rejected_up_front(media, tmp_path, pipe):
    with pytest.raises(InputError, match="outside"):
        pipe.run(media["video"], media["speech"], tmp_path / "o.mp4",
                 GenerateOptions(box=(500, 600, 500, 600)))
    assert not pipe.lipsyncer_loaded


# ------------------------------------------------------------------------- undecodable
def test_undecodable_face_file(media, tmp_path, pipe):
    bad = tmp_path / "face.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError) as exc:
        pipe.run(bad, media["speech"], out, _box_opts())
    assert str(bad) in str(exc.value)
    assert not out.exists()


def test_undecodable_audio_file(media, tmp_path, pipe):
    bad = tmp_path / "speech.wav"
    bad.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    with pytest.raises(InputError) as exc:
        pipe.run(media["video"], bad, tmp_path / "out.mp4", _box_opts())
    assert str(bad) in str(exc.value) and "decode" in str(exc.value)


@pytest.mark.parametrize("detector", ["box", "dlib"])
def test_truncated_video_fails_cleanly(media, tmp_path, pipe, detector):
    data = media["video"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.mp4"
    opts = _box_opts() if detector == "box" else GenerateOptions(detector="dlib")
    with pytest.raises(InputError) as exc:
        pipe.run(cut, media["speech"], out, opts)
    assert str(cut) in str(exc.value) and "truncated" in str(exc.value)
    assert not out.exists() and _leftovers(tmp_path) == ["cut.mp4"]


# ------------------------------------------------------------------------- audio
def test_audio_without_speech(media, tmp_path, pipe):
    silent = write_wav(tmp_path / "silence.wav", np.zeros(16000, np.float32))
    with pytest.raises(InputError, match="no audible speech") as exc:
        pipe.run(media["video"], silent, tmp_path / "out.mp4", _box_opts())
    assert str(silent) in str(exc.value)
    assert not pipe.lipsyncer_loaded


def test_zero_length_audio(media, tmp_path, pipe):
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(InputError, match="no audio samples|zero-length"):
        pipe.run(media["video"], empty, tmp_path / "out.mp4", _box_opts())
    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        pipe.run(media["video"], zero_bytes, tmp_path / "out.mp4", _box_opts())


def test_too_short_audio(media, tmp_path, pipe):
    short = make_speech(tmp_path / "short.wav", 0.1)
    with pytest.raises(InputError, match="at least 0.2 s"):
        pipe.run(media["video"], short, tmp_path / "out.mp4", _box_opts())


# ------------------------------------------------------------------------- odd inputs
@pytest.mark.parametrize("fmt,name", [(".png", "photo.mp4"), (".jpg", "photo.png")])
def test_image_with_wrong_extension(media, tmp_path, pipe, fmt, name):
    img = face_frame(0)
    ok, buf = cv2.imencode(fmt, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    face = tmp_path / name
    face.write_bytes(buf.tobytes())
    res = pipe.run(face, media["speech"], tmp_path / "out.mp4", _box_opts())
    assert res.n_source_frames == 1 and res.fps == 25.0 and res.n_frames == 30
    assert len(decode(tmp_path / "out.mp4")) == 30


def _lossless_video(path: Path, frames, fps: float) -> Path:
    """FFV1 in Matroska: keeps odd frame sizes and exact pixels (H.264 4:2:0 cannot)."""
    h, w = frames[0].shape[:2]
    subprocess.run([ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-f", "rawvideo",
                    "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0",
                    "-c:v", "ffv1", "-pix_fmt", "bgr0", str(path)],
                   input=np.stack(frames).tobytes(), check=True)
    return path


def test_vertical_odd_sized_video(media, tmp_path, pipe):
    w, h = 121, 161
    frames = [np.ascontiguousarray(cv2.resize(astronaut()[0:320, 60 + i:300 + i], (w, h),
                                              interpolation=cv2.INTER_AREA)) for i in range(10)]
    video = _lossless_video(tmp_path / "vertical odd.mkv", frames, FPS)
    info = probe(video)
    assert (info.width, info.height) == (w, h)
    np.testing.assert_array_equal(decode(video), np.stack(frames))
    box = (30, 110, 20, 100)
    res = pipe.run(video, media["speech"], tmp_path / "out.mp4", GenerateOptions(box=box))
    assert res.size == (w, h) and res.n_frames == 12
    got = decode(tmp_path / "out.mp4")
    # H.264 4:2:0 needs even sizes: one replicated pixel column / row is added (documented)
    assert got.shape[1:3] == (h + 1, w + 1) == encoded_size(w, h)[::-1]
    region = face_region((20, 30, 100, 110), (w, h), CropConfig())
    x1, y1, x2, y2 = region.clipped()
    far = np.ones((h, w), bool)
    far[max(0, y1 - 8):y2 + 8, max(0, x1 - 8):x2 + 8] = False
    order = source_indices(12, 10, "pingpong")
    err = np.abs(got[:, :h, :w].astype(int) - np.stack(frames)[order].astype(int))[:, far]
    assert err.mean() < 3
    np.testing.assert_allclose(got[:, :h, w].astype(int), got[:, :h, w - 1].astype(int), atol=24)


def test_variable_frame_rate_input(media, tmp_path, pipe):
    cfr = make_face_video(tmp_path / "cfr.mp4", 30, 25.0)
    vfr = tmp_path / "vfr.mp4"
    # first 10 frames 40 ms apart, the rest 100 ms apart
    subprocess.run([ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-i", str(cfr),
                    "-vf", "setpts='if(lt(N,10),N*0.04,0.4+(N-10)*0.1)/TB'",
                    "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", str(vfr)],
                   check=True)
    info = probe(vfr)
    assert info.maybe_vfr
    res = pipe.run(vfr, media["speech"], tmp_path / "out.mp4", _box_opts())
    assert res.fps == pytest.approx(info.fps)
    assert res.n_frames == int(np.floor(1.2 * info.fps + 0.5))
    assert res.n_source_frames is None or res.n_source_frames == len(read_frames(vfr, info.fps))
    out = probe(tmp_path / "out.mp4")
    assert out.fps == pytest.approx(res.fps, rel=1e-3) and not out.maybe_vfr
    assert len(decode(tmp_path / "out.mp4")) == res.n_frames


def test_unicode_and_space_paths(media, tmp_path, pipe):
    d = tmp_path / "dossier é 文字 with spaces"
    d.mkdir()
    face = d / "visage ü 顔.mp4"
    face.write_bytes(media["video"].read_bytes())
    audio = d / "voix ñ 声.wav"
    audio.write_bytes(media["speech"].read_bytes())
    out = d / "sortie ø 出力.mp4"
    res = pipe.run(face, audio, out, GenerateOptions(detector="dlib"))
    assert res.out == out and out.is_file() and len(decode(out)) == 12
    assert _leftovers(d) == sorted([face.name, audio.name, out.name])


# ------------------------------------------------------------------------- files
def test_failed_run_keeps_existing_output_and_cleans_up(media, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    temp_parent = tmp_path / "tmp"
    temp_parent.mkdir()
    pipe = Pipeline(StubGenerator(fail_after=1), device="cpu", batch_size=4)
    long_audio = make_speech(tmp_path / "long.wav", 2.0)  # 20 frames > 12: ping-pong cache
    with pytest.raises(RuntimeError, match="injected"):
        pipe.run(media["video"], long_audio, out, _box_opts(temp_dir=temp_parent))
    assert out.read_bytes() == b"previous result"
    assert _leftovers(tmp_path) == ["long.wav", "out.mp4", "tmp"]
    assert list(temp_parent.iterdir()) == []


def test_temp_files_are_removed_after_success(media, tmp_path, pipe):
    temp_parent = tmp_path / "tmp"
    temp_parent.mkdir()
    long_audio = make_speech(tmp_path / "long.wav", 2.0)
    res = pipe.run(media["video"], long_audio, tmp_path / "out.mp4",
                   _box_opts(temp_dir=temp_parent))
    assert res.n_frames == 20
    assert list(temp_parent.iterdir()) == []


def test_output_may_not_overwrite_an_input(media, tmp_path, pipe):
    face = tmp_path / "face.mp4"
    face.write_bytes(media["video"].read_bytes())
    with pytest.raises(InputError, match="same file as --face"):
        pipe.run(face, media["speech"], face, _box_opts())
    assert face.read_bytes() == media["video"].read_bytes()
    with pytest.raises(InputError, match="does not exist"):
        pipe.run(face, media["speech"], tmp_path / "missing" / "o.mp4", _box_opts())


@pytest.mark.parametrize("kw,match", [
    (dict(loop="bounce"), "loop policy"), (dict(resize_factor=0), "resize-factor"),
    (dict(fps=-5), "fps"), (dict(batch_size=0), "batch-size"), (dict(pads=(1, 2)), "pads"),
])
def test_bad_options(media, tmp_path, pipe, kw, match):
    with pytest.raises(InputError, match=match):
        pipe.run(media["video"], media["speech"], tmp_path / "o.mp4", GenerateOptions(**kw))


# ------------------------------------------------------------------------- concurrency
def test_concurrent_calls_write_distinct_correct_outputs(media, tmp_path, monkeypatch):
    frames_by_out = {}
    real_writer = runner_mod.VideoWriter

    class Recording(real_writer):
        def __init__(self, path, *a, **k):
            super().__init__(path, *a, **k)
            frames_by_out[Path(path)] = self.frames = []

        def write(self, frames):
            self.frames.append(np.array(frames, copy=True))
            super().write(frames)

    monkeypatch.setattr(runner_mod, "VideoWriter", Recording)
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=4)
    other = make_face_video(tmp_path / "other.mp4", 7, FPS)
    jobs = [(media["video"], make_speech(tmp_path / "a.wav", 1.6, seed=1), tmp_path / "a.mp4"),
            (other, make_speech(tmp_path / "b.wav", 0.9, seed=2), tmp_path / "b.mp4"),
            (media["video"], make_speech(tmp_path / "c.wav", 2.1, seed=3), tmp_path / "c.mp4")]
    results, errors = {}, []

    def work(face, audio, out):
        try:
            results[out] = pipe.run(face, audio, out, _box_opts())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    region = face_region((FACE_BOX[2], FACE_BOX[0], FACE_BOX[3], FACE_BOX[1]),
                         (FRAME_W, FRAME_H), CropConfig())
    x1, y1, x2, y2 = region.clipped()
    outside = np.ones((FRAME_H, FRAME_W), bool)
    outside[y1:y2, x1:x2] = False
    for face, audio, out in jobs:
        res = results[out]
        n = int(np.floor(len(load_audio(audio)) / 16000 * FPS + 0.5))
        assert res.n_frames == n and len(decode(out)) == n
        a, b = load_audio(out), load_audio(audio)
        m = min(len(a), len(b))
        assert np.corrcoef(a[:m], b[:m])[0, 1] > 0.95  # its own audio track
        src = decode(face)
        frames = np.concatenate(frames_by_out[out])
        order = source_indices(n, len(src), "pingpong")
        np.testing.assert_array_equal(frames[:, outside], src[order][:, outside])
