"""ladtalk.media probe / decode / encode: probing, streaming decode, still images, audio mux."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ladtalk.errors import InputError
from ladtalk.media.decode import decode_cmd, frame_at, iter_frames, read_frames, read_image
from ladtalk.media.encode import VideoWriter, encode_cmd, encoded_size
from ladtalk.media.ffmpeg import FRAME_PIPE_BYTES, ffmpeg_exe, widen_pipe
from ladtalk.media.image import is_still_image
from ladtalk.media.probe import MediaInfo, estimate_frames, probe
from ladtalk.media.resample import to_tensor01, to_uint8

FF = ffmpeg_exe()


def ff(*args: str) -> None:
    """Run the bundled ffmpeg quietly; fail the test with its message on error."""
    proc = subprocess.run([FF, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def pcm(path: Path) -> bytes:
    """Decoded first audio stream as raw s16le (native rate and channels)."""
    proc = subprocess.run([FF, "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le",
                           "-"], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("media")
    m = {}
    m["av"] = d / "av.mp4"  # 320x240, 25 fps, 2 s, AAC audio
    ff("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=2", "-f", "lavfi",
       "-i", "sine=frequency=440:duration=2", "-c:v", "libx264", "-preset", "ultrafast",
       "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(m["av"]))
    m["vertical"] = d / "vertical.mp4"
    ff("-f", "lavfi", "-i", "testsrc=size=360x640:rate=25:duration=0.4", "-c:v", "libx264",
       "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(m["vertical"]))
    m["odd"] = d / "odd.mp4"  # odd size needs 4:4:4 to exist as H.264 at all
    ff("-f", "lavfi", "-i", "testsrc=size=203x117:rate=25:duration=0.4", "-c:v", "libx264",
       "-preset", "ultrafast", "-pix_fmt", "yuv444p", str(m["odd"]))
    m["vfr"] = d / "vfr.mp4"  # 1 s at 10 fps then 1 s at 30 fps = 40 frames, 2 s
    ff("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=1", "-f", "lavfi",
       "-i", "testsrc=size=160x120:rate=30:duration=1", "-filter_complex",
       "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-fps_mode", "vfr", "-c:v", "libx264",
       "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(m["vfr"]))
    m["rotated"] = d / "rotated.mp4"  # display matrix: rotate 90 degrees
    try:
        ff("-display_rotation", "90", "-i", str(m["av"]), "-c", "copy", str(m["rotated"]))
    except AssertionError:  # older ffmpeg builds: legacy rotate tag
        ff("-i", str(m["av"]), "-c", "copy", "-metadata:s:v", "rotate=270", str(m["rotated"]))
    m["aac"] = d / "tone.m4a"  # 1.5 s AAC
    ff("-f", "lavfi", "-i", "sine=frequency=330:duration=1.5", "-c:a", "aac", str(m["aac"]))
    m["wav"] = d / "tone.wav"  # 1.5 s PCM
    ff("-f", "lavfi", "-i", "sine=frequency=550:duration=1.5:sample_rate=16000", str(m["wav"]))
    return m


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux's")
def test_frame_pipes_are_widened(tmp_path):
    import fcntl
    get_size = getattr(fcntl, "F_GETPIPE_SZ", 1032)
    r, w = os.pipe()
    with os.fdopen(r, "rb") as fr, os.fdopen(w, "wb") as fw:
        assert fcntl.fcntl(fr.fileno(), get_size) < FRAME_PIPE_BYTES
        widen_pipe(fw)
        assert fcntl.fcntl(fr.fileno(), get_size) == FRAME_PIPE_BYTES
    with VideoWriter(tmp_path / "w.mp4", 10, (64, 48)) as wr:  # the encoder's stdin
        assert fcntl.fcntl(wr._proc.stdin.fileno(), get_size) == FRAME_PIPE_BYTES
        wr.write(np.zeros((48, 64, 3), np.uint8))
    widen_pipe(object())  # not a pipe: nothing happens


def test_bundled_ffmpeg_has_libx264_and_aac():
    out = subprocess.run([FF, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    names = {line.split()[1] for line in out.splitlines()
             if len(line.split()) > 1 and line.startswith(" ")}
    assert "libx264" in names and "aac" in names


def test_probe_video_with_audio(media):
    info = probe(media["av"])
    assert (info.width, info.height) == (320, 240)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.n_frames == 50
    assert info.has_video and info.has_audio and not info.is_image
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert sum(len(c) for c in iter_frames(media["av"])) == 50


def test_iter_frames_chunks_and_content(media):
    chunks = list(iter_frames(media["av"], chunk_size=16))
    assert [len(c) for c in chunks] == [16, 16, 16, 2]
    assert all(c.shape[1:] == (240, 320, 3) and c.dtype == np.uint8 for c in chunks)
    # testsrc frames differ over time (moving gradient + counter), decoding is not a repeat
    assert not np.array_equal(chunks[0][0], chunks[-1][-1])
    # same frames as an independent decoder (OpenCV's FFmpeg backend is not guaranteed to be
    # present, so compare with a plain ffmpeg one-frame PNG export instead)
    ref = media["av"].parent / "frame10.png"
    ff("-i", str(media["av"]), "-vf", "select=eq(n\\,10)", "-frames:v", "1", str(ref))
    ref_rgb = cv2.cvtColor(cv2.imread(str(ref)), cv2.COLOR_BGR2RGB)
    assert psnr(chunks[0][10], ref_rgb) > 40


def test_vertical_and_odd_sizes(media):
    info = probe(media["vertical"])
    assert info.size == (360, 640)
    frames = read_frames(media["vertical"])
    assert frames.shape == (10, 640, 360, 3)
    info = probe(media["odd"])
    assert info.size == (203, 117)
    frames = read_frames(media["odd"])
    assert frames.shape == (10, 117, 203, 3)


def test_rotation_metadata_is_honoured(media):
    info = probe(media["rotated"])
    assert info.rotation in (90, 270)
    assert info.size == (240, 320)
    plain = read_frames(media["av"])
    rotated = read_frames(media["rotated"])
    assert rotated.shape == (50, 320, 240, 3)
    # the bitstream is the same, ffmpeg only transposes: exact equality with a 90 degree turn
    assert np.array_equal(rotated[0], np.rot90(plain[0], 1)) or \
        np.array_equal(rotated[0], np.rot90(plain[0], -1))


def test_variable_frame_rate(media):
    info = probe(media["vfr"])
    assert info.maybe_vfr
    native = sum(len(c) for c in iter_frames(media["vfr"]))
    assert native == 40  # every decoded frame exactly once
    resampled = read_frames(media["vfr"], fps=25)
    assert len(resampled) == 50  # constant 25 fps over 2 s
    # the first second holds 10 distinct frames, each repeated 2-3 times at 25 fps
    first = resampled[:25]
    distinct = 1 + sum(not np.array_equal(first[i], first[i - 1]) for i in range(1, 25))
    assert distinct == 10


def test_unicode_and_space_path(tmp_path, media):
    folder = tmp_path / "dir with space"
    folder.mkdir()
    path = folder / "vidéo clip 你好.mp4"
    frames = np.zeros((5, 48, 64, 3), np.uint8)
    frames[..., 1] = np.linspace(0, 255, 64, dtype=np.uint8)[None, None, :]
    with VideoWriter(path, 25, (64, 48), audio=media["aac"]) as w:
        w.write(frames)
    assert path.exists()
    info = probe(path)
    assert info.size == (64, 48) and info.has_audio
    assert read_frames(path).shape == (5, 48, 64, 3)


def test_still_images_detected_by_content(tmp_path):
    rng = np.random.default_rng(0)
    img = np.zeros((60, 80, 3), np.uint8)
    img[:, :40] = (200, 30, 10)
    img[:, 40:] = rng.integers(0, 255, (60, 40, 3))
    png_as_mp4 = tmp_path / "photo.mp4"
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    png_as_mp4.write_bytes(buf.tobytes())
    jpg_as_png = tmp_path / "photo.png"
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 95])
    jpg_as_png.write_bytes(buf.tobytes())
    for path in (png_as_mp4, jpg_as_png):
        assert is_still_image(path)
        info = probe(path)
        assert info.is_image and info.size == (80, 60) and info.n_frames == 1
        assert not info.has_audio
        chunks = list(iter_frames(path))
        assert len(chunks) == 1 and chunks[0].shape == (1, 60, 80, 3)
    assert np.array_equal(read_image(png_as_mp4), img)  # PNG is lossless, RGB order kept
    jpg = read_image(jpg_as_png)
    assert np.abs(jpg[:, :30].astype(int) - img[:, :30]).mean() < 3


def test_video_is_not_a_still(media):
    assert not is_still_image(media["av"])
    assert not is_still_image(media["wav"])


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "audio_only", "fake_png"])
def test_probe_errors_name_the_file(tmp_path, media, kind):
    if kind == "missing":
        path = tmp_path / "nope.mp4"
    elif kind == "empty":
        path = tmp_path / "empty.mp4"
        path.write_bytes(b"")
    elif kind == "garbage":
        path = tmp_path / "garbage.mp4"
        path.write_bytes(b"this is not a video at all\n" * 20)
    elif kind == "fake_png":
        path = tmp_path / "text.png"
        path.write_bytes(b"hello, not an image\n" * 5)
    else:
        path = media["wav"]
    with pytest.raises(InputError) as ei:
        probe(path)
    assert path.name in str(ei.value)
    if kind == "audio_only":
        assert "no video stream" in str(ei.value)
    # the audio-only file is fine when video is not required
    if kind == "audio_only":
        assert probe(path, require_video=False).has_audio


def test_truncated_file_raises_with_timestamp(tmp_path):
    src = tmp_path / "full.mp4"
    ff("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=4", "-c:v", "libx264",
       "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "10", "-movflags", "+faststart",
       str(src))
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    for strict in (False, True):
        with pytest.raises(InputError) as ei:
            for _ in iter_frames(cut, strict=strict):
                pass
        msg = str(ei.value)
        assert "cut.mp4" in msg and "t=" in msg


def _ffmpeg_children() -> list:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"ffmpeg" in cmd:
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_closing_the_generator_kills_ffmpeg(media):
    before = set(_ffmpeg_children())
    gen = iter_frames(media["av"], chunk_size=2)
    next(gen)
    assert set(_ffmpeg_children()) - before  # a decoder is running
    gen.close()
    assert not (set(_ffmpeg_children()) - before)  # killed and reaped (no zombie)


def _smooth_frames(n: int, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        cx, cy = w * (0.3 + 0.04 * i), h * 0.5
        blob = np.exp(-(((xx - cx) / (0.2 * w)) ** 2 + ((yy - cy) / (0.25 * h)) ** 2))
        frames[i, ..., 0] = 40 + 150 * xx / w
        frames[i, ..., 1] = 60 + 120 * blob
        frames[i, ..., 2] = 200 - 120 * yy / h
    return frames


def test_writer_round_trip_even_size(tmp_path):
    frames = _smooth_frames(10, 96, 64)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, (96, 64)) as w:
        w.write(frames[:4])
        for f in frames[4:]:
            w.write(f)
    assert w.frames_written == 10
    info = probe(out)
    assert info.size == (96, 64) and info.fps == pytest.approx(25) and not info.has_audio
    back = read_frames(out)
    assert back.shape == frames.shape
    assert psnr(back, frames) > 30
    assert not [p for p in tmp_path.iterdir() if p.name != "out.mp4"]  # no temp files left


def test_writer_odd_size_pads_one_pixel(tmp_path):
    frames = _smooth_frames(4, 203, 117)
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, 25, (203, 117)) as w:
        w.write(frames)
    assert encoded_size(203, 117) == (204, 118) == w.out_size
    assert encoded_size(204, 118) == (204, 118)
    assert probe(out).size == (204, 118)
    back = read_frames(out)
    assert psnr(back[:, :117, :203], frames) > 30
    # the extra column / row replicate the edge (no black line)
    assert np.abs(back[:, :117, 203].astype(int) - frames[:, :, 202]).mean() < 6
    assert np.abs(back[:, 117, :203].astype(int) - frames[:, 116, :]).mean() < 6


def test_writer_copies_aac_bit_exactly_and_keeps_full_length(tmp_path, media):
    out = tmp_path / "with_aac.mp4"
    n = int(round(1.5 * 25))  # frames = audio length
    with VideoWriter(out, 25, (64, 48), audio=media["aac"]) as w:
        w.write(_smooth_frames(n, 64, 48))
    assert w.audio_copied is True
    info = probe(out)
    assert info.audio_codec == "aac" and info.duration == pytest.approx(1.5, abs=0.05)
    assert pcm(out) == pcm(media["aac"])


def test_writer_reencodes_pcm_to_aac_without_cutting(tmp_path, media):
    out = tmp_path / "with_wav.mp4"
    with VideoWriter(out, 25, (64, 48), audio=media["wav"]) as w:
        w.write(_smooth_frames(10, 64, 48))  # video much shorter than audio: audio not cut
    assert w.audio_copied is False
    info = probe(out)
    assert info.audio_codec == "aac" and info.audio_sample_rate == 16000
    n_src = len(pcm(media["wav"])) // 2
    n_out = len(pcm(out)) // 2
    assert abs(n_out - n_src) <= 2048  # AAC frame padding only
    with pytest.raises(InputError):
        VideoWriter(tmp_path / "copy.mp4", 25, (64, 48), audio=media["wav"],
                      audio_mode="copy").open()


def test_writer_failure_leaves_no_file_and_keeps_existing(tmp_path):
    out = tmp_path / "result.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, 25, (64, 48)) as w:
            w.write(_smooth_frames(3, 64, 48))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"previous result")
    with pytest.raises(ValueError):
        with VideoWriter(out, 25, (64, 48)) as w:
            w.write(_smooth_frames(3, 64, 48))
            w.write(np.zeros((2, 48, 66, 3), np.uint8))  # wrong size
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["result.mp4"]


def _opt(cmd: list, name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_decode_and_encode_command_lines():
    """The compiled command lines select the streams and options the readers rely on."""
    plain = decode_cmd("in.mp4")
    assert plain[0] == FF and _opt(plain, "-i") == "in.mp4"
    assert _opt(plain, "-map") == "0:v:0" and _opt(plain, "-fps_mode") == "passthrough"
    assert _opt(plain, "-f") == "rawvideo" and _opt(plain, "-pix_fmt") == "rgb24"
    assert "pipe:1" in plain and "-xerror" not in plain and "-loglevel" in plain
    cfr = decode_cmd("in.mp4", fps=30000 / 1001, strict=True, max_frames=3)
    assert _opt(cfr, "-filter_complex") == "[0:v:0]fps=fps=30000/1001[s0]"
    assert "-fps_mode" not in cfr and "-xerror" in cfr and _opt(cfr, "-frames:v") == "3"
    enc = encode_cmd("out.mp4", (64, 48), 25, audio="a.m4a", audio_opts={"c:a": "copy"})
    assert _opt(enc, "-s") == "64x48" and _opt(enc, "-framerate") == "25/1"
    maps = [enc[i + 1] for i, a in enumerate(enc) if a == "-map"]
    assert maps[1] == "1:a:0" and maps[0].startswith("[")  # filtered video, first audio
    assert _opt(enc, "-c:v") == "libx264" and _opt(enc, "-c:a") == "copy"
    assert _opt(enc, "-movflags") == "+faststart" and "-y" in enc
    assert enc.index("out.mp4") > enc.index("-c:v")


def test_frame_at_picks_the_frame_of_a_time_and_refuses_times_outside(media):
    frames = read_frames(media["av"])
    assert np.array_equal(frame_at(media["av"], 0.0), frames[0])
    assert np.array_equal(frame_at(media["av"], 1.0), frames[25])  # 25 fps
    with pytest.raises(InputError, match=r"outside the video 'av.mp4' \(0 to 2.00 s\)"):
        frame_at(media["av"], 5.0)


def test_estimate_frames_uses_duration_then_frame_count():
    info = MediaInfo(path=Path("x.mp4"), width=8, height=8, fps=25.0, duration=2.0,
                     n_frames=99, has_video=True, has_audio=False, video_codec="h264",
                     audio_codec=None, is_image=False)
    assert estimate_frames(info, 25.0) == 50 and estimate_frames(info, 10.0) == 20
    no_duration = MediaInfo(**{**info.__dict__, "duration": 0.0})
    assert estimate_frames(no_duration, 25.0) == 99  # the probed count, not 1
    assert estimate_frames(MediaInfo(**{**info.__dict__, "duration": 0.0, "n_frames": 0}),
                           25.0) == 1
    assert estimate_frames(MediaInfo(**{**info.__dict__, "is_image": True}), 25.0) == 1


def test_uint8_tensor_round_trip_rounds_half_to_even():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = to_tensor01(crops)
    assert x.shape == (2, 3, 5, 7) and x.dtype.is_floating_point
    assert np.array_equal(to_uint8(x), crops)
    import torch
    half = torch.tensor([0.5, 1.5, 2.5, -3.0, 300.0]).div(255.0).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(half)[0, 0, :, 0].tolist() == [0, 2, 2, 0, 255]
