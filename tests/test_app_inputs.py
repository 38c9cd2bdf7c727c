"""The bad-input matrix: every way a stranger can get an input wrong, through gradio_client.

One launched app for the module (a Wav2Lip-shaped stand-in generator, the shipped demo
identity, the offline dlib detector, no cached examples; public mode when ``create_demo`` has
it). Each case is a call
that must fail with a specific message (a keyword per case) that names files by their own
name (no server path, no absolute path at all) and the app's controls (no CLI flag), and the
next good call must still succeed. The inputs are made here, tiny, in a temp folder.
"""

from __future__ import annotations

import inspect
import re
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

gradio = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NONE = "none (Wav2Lip only)"
ABS_PATH = re.compile(r"""(?<![\w.:/\\~-])(?:[A-Za-z]:[\\/]|[\\/]{1,2}|~[\\/])[^\s\\/'"]+""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ffmpeg(*args: str) -> None:
    from ladtalk.media.ffmpeg import ffmpeg_exe
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True)


def _lavfi_video(path: Path, spec: str, frames: int = 4) -> Path:
    """A tiny H.264 clip from an ffmpeg test source (``spec``: a lavfi graph)."""
    _ffmpeg("-f", "lavfi", "-i", spec, "-frames:v", str(frames), "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv444p", str(path))  # odd sizes too
    return path


def _wav(path: Path, samples: np.ndarray) -> Path:
    import soundfile as sf
    sf.write(path, samples.astype(np.float32), 16000)
    return path


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return 0.3 * np.sin(2 * np.pi * 220 * t)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    """Every input of the matrix, by case name."""
    from PIL import Image
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    m = {}
    _ffmpeg("-i", str(EXAMPLES / "hello.wav"), "-t", "0.5", "-c:a", "pcm_s16le",
            str(d / "good.wav"))
    m["good_audio"] = d / "good.wav"
    (d / "garbage.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    m["garbage"] = d / "garbage.mp4"
    _ffmpeg("-i", str(EXAMPLES / "astronaut.mp4"), "-t", "1.5", "-an", "-movflags",
            "+faststart", str(d / "whole.mp4"))
    whole = (d / "whole.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    m["truncated"] = d / "cut.mp4"
    m["silent_video"] = d / "whole.mp4"
    (d / "empty.mp4").write_bytes(b"")
    m["zero_bytes"] = d / "empty.mp4"
    m["no_samples"] = _wav(d / "nothing.wav", np.zeros(0))
    m["silence"] = _wav(d / "silence.wav", np.zeros(16000))
    m["too_short"] = _wav(d / "blip.wav", _tone(0.1))
    m["too_long_audio"] = _wav(d / "speech4s.wav", _tone(4.0))
    (d / "notes.mp4").write_text("this is a text file, not a video\n")
    m["text"] = d / "notes.mp4"
    Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(d / "noise.png")
    m["noise_photo"] = d / "noise.png"
    m["odd"] = _lavfi_video(d / "odd.mp4", "color=c=gray:size=97x61:rate=25")
    m["vertical"] = _lavfi_video(d / "vertical.mp4", "testsrc2=size=144x256:rate=25")
    m["uhd"] = _lavfi_video(d / "uhd.mp4", "color=c=gray:size=3840x2160:rate=25", 2)
    Image.new("RGB", (4200, 2400), (90, 90, 90)).save(d / "huge.png")
    m["huge"] = d / "huge.png"
    (d / "visage é 中文.mp4").write_bytes(b"\x00\x01 not a video")
    m["unicode"] = d / "visage é 中文.mp4"
    _ffmpeg("-i", str(EXAMPLES / "hello.wav"), "-t", "0.6", "-c:a", "libmp3lame",
            "-f", "mp3", str(d / "speech_mp3.wav"))
    m["mp3_as_wav"] = d / "speech_mp3.wav"
    return m


@pytest.fixture(scope="module")
def app_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inputs_home")


@pytest.fixture(scope="module")
def server(app_home):
    import torch

    home = app_home
    mp = pytest.MonkeyPatch()
    for k, v in {"LADTALK_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HOME": str(home / "hf"),
                 "HF_HUB_CACHE": str(home / "hf" / "hub"),
                 "GRADIO_ANALYTICS_ENABLED": "False"}.items():
        mp.setenv(k, v)
    from pipeline_helpers import StubGenerator

    from ladtalk.app import create_demo
    from ladtalk.app.limits import AppLimits
    from ladtalk.generation.pipeline import Pipeline

    torch.manual_seed(0)
    # a Wav2Lip-shaped stand-in keeps the good call after every case cheap (the inputs, not
    # the model, are under test here; tests/test_app.py runs the real architecture)
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=16)
    extra = {"public": True} if "public" in inspect.signature(create_demo).parameters else {}
    demo = create_demo(pipe, limits=AppLimits(max_video_seconds=2.0, max_audio_seconds=3.0),
                       enroll_config="tiny", cache_examples=False, **extra)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port,
                show_error=True, quiet=True)
    try:
        yield gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()
        mp.undo()


@pytest.fixture(autouse=True)
def _server_env(_isolated_home, monkeypatch, app_home):
    """The server reads its env per request: keep the module's, not the per-test one."""
    monkeypatch.setenv("LADTALK_HOME", str(app_home))
    monkeypatch.setenv("HF_HOME", str(app_home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(app_home / "hf" / "hub"))


def _file(path):
    from gradio_client import handle_file
    return handle_file(str(path)) if path is not None else None


def generate(client, face, audio, **kw):
    args = dict(identity=NONE, compare=False, detector="dlib")
    args.update(kw)
    return client.predict(face=_file(face), audio=_file(audio), api_name="/generate", **args)


def robustness(client, image=None, video=None, **kw):
    args = dict(identity="demo", certificate=False, detector="dlib")
    args.update(kw)
    return client.predict(image=_file(image), video=_file(video), api_name="/robustness",
                          **args)


def enroll(client, video, name="someone", **kw):
    args = dict(seconds=2, config="tiny", detector="dlib")
    args.update(kw)
    return client.predict(video=_file(video), name=name, api_name="/enroll", **args)



def _astro(client, media, **kw):
    return generate(client, EXAMPLES / "astronaut.png", media["good_audio"], **kw)


#: (case, call(client, media), the message must contain this (or one of these))
CASES = [
    ("undecodable video", lambda c, m: generate(c, m["garbage"], m["good_audio"]),
     "cannot decode 'garbage.mp4'"),
    ("truncated mp4", lambda c, m: generate(c, m["truncated"], m["good_audio"]),
     "'cut.mp4' stopped at"),
    ("zero-byte file", lambda c, m: generate(c, m["zero_bytes"], m["good_audio"]),
     "'empty.mp4' is an empty file"),
    ("audio without samples", lambda c, m: generate(c, EXAMPLES / "astronaut.png",
                                                    m["no_samples"]), "no audio samples"),
    ("silent audio", lambda c, m: generate(c, EXAMPLES / "astronaut.png", m["silence"]),
     "no audible speech"),
    ("audio too short", lambda c, m: generate(c, EXAMPLES / "astronaut.png", m["too_short"]),
     "only 0.100 s long"),
    ("audio too long", lambda c, m: generate(c, EXAMPLES / "astronaut.png",
                                             m["too_long_audio"]), "at most 3 s"),
    ("video too long", lambda c, m: generate(c, EXAMPLES / "astronaut.mp4", m["good_audio"]),
     "at most 2 s"),
    ("text file named .mp4", lambda c, m: generate(c, m["text"], m["good_audio"]),
     "cannot decode 'notes.mp4'"),
    ("photo without a face", lambda c, m: generate(c, m["noise_photo"], m["good_audio"]),
     "no face was detected"),
    ("odd size 97x61", lambda c, m: generate(c, m["odd"], m["good_audio"]), "only 97x61 px"),
    ("vertical video", lambda c, m: generate(c, m["vertical"], m["good_audio"]),
     "no face was detected in any of the 4 frames of 'vertical.mp4'"),
    ("4K clip", lambda c, m: generate(c, m["uhd"], m["good_audio"]), "'uhd.mp4'"),
    ("above the resolution limit", lambda c, m: generate(c, m["huge"], m["good_audio"]),
     "at most 4096 px"),
    ("unicode file name", lambda c, m: generate(c, m["unicode"], m["good_audio"]),
     "'visage é 中文.mp4'"),
    ("identity ../etc", lambda c, m: robustness(c, EXAMPLES / "astronaut.png",
                                                identity="../etc"), "not a valid name"),
    ("identity a/b", lambda c, m: _astro(c, m, identity="a/b"), "not a valid name"),
    ("identity empty", lambda c, m: robustness(c, EXAMPLES / "astronaut.png", identity=""),
     "pick an identity"),
    ("unknown identity", lambda c, m: _astro(c, m, identity="nobody"), "unknown identity"),
    ("enroll name empty", lambda c, m: enroll(c, m["silent_video"], name=""),
     "give the identity a name"),
    ("enroll name ../etc", lambda c, m: enroll(c, m["silent_video"], name="../etc"),
     "invalid identity name"),
    ("pads 1e9", lambda c, m: _astro(c, m, pad_top=1e9), "pad top must be between"),
    ("resize factor 0", lambda c, m: _astro(c, m, resize_factor=0),
     ("resize factor must be a whole number", "less than minimum value 1")),
    ("resize factor 1000", lambda c, m: _astro(c, m, resize_factor=1000),
     "too small to hold a face"),
    ("resize factor abc", lambda c, m: _astro(c, m, resize_factor="abc"),
     ("resize factor must be a whole number", "`number` component")),
    ("enroll seconds -1", lambda c, m: enroll(c, m["silent_video"], seconds=-1),
     ("must be positive", "less than minimum value 1")),
    ("enroll seconds 1e9", lambda c, m: enroll(c, m["silent_video"], seconds=1e9),
     ("at most 1800 s", "greater than maximum value 1800")),
    ("frame time -3", lambda c, m: robustness(c, video=m["silent_video"], frame_time=-3),
     "frame time -3 s is outside the video 'whole.mp4'"),
    ("box with 3 numbers", lambda c, m: _astro(c, m, box="1 2 3"), "give 4 numbers"),
    ("empty box", lambda c, m: _astro(c, m, box="10 5 0 100"), "is empty"),
    ("box far outside the frame", lambda c, m: _astro(c, m, box="3000 3100 3000 3100"),
     "outside the 256x256 frame"),
    ("video without sound as speech", lambda c, m: generate(c, EXAMPLES / "astronaut.png",
                                                            m["silent_video"]),
     "'whole.mp4' has no audio stream"),
    ("photo as speech", lambda c, m: generate(c, EXAMPLES / "astronaut.png",
                                              EXAMPLES / "astronaut.png"), "no audio stream"),
    ("bad detector name", lambda c, m: _astro(c, m, detector="mtcnn"), "mtcnn"),
    ("unavailable detector", lambda c, m: _astro(c, m, detector="s3fd"),
     "'dlib' as the Face detector"),
    ("bad loop policy", lambda c, m: _astro(c, m, loop="bounce"), "bounce"),
    ("still image to enroll", lambda c, m: enroll(c, EXAMPLES / "astronaut.png"),
     "still image"),
]


def check_message(msg: str, expected, tmp_dirs) -> None:
    """Specific (names the expected thing), no server path, no CLI flag."""
    wanted = (expected,) if isinstance(expected, str) else expected
    assert any(w in msg for w in wanted), msg
    for d in tmp_dirs:
        assert str(d) not in msg, msg
    assert "/tmp" not in msg and "gradio/" not in msg and not ABS_PATH.search(msg), msg
    assert "--" not in msg and "python -m" not in msg, msg


def good_call(client, media) -> None:
    video, base, report = generate(client, EXAMPLES / "astronaut.png", media["good_audio"])
    assert report["frames"] == 13 and base is None and report["enhanced"] is False


def test_matrix_has_every_kind():
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_specific_message_in_app_terms(server, media, case):
    from gradio_client.exceptions import AppError
    _, call, expected = case
    with pytest.raises(AppError) as err:
        call(server, media)
    msg = str(err.value)
    check_message(msg, expected, [media["good_audio"].parent, tempfile.gettempdir()])
    if "unknown face detector" in msg or "S3FD face detector is not" in msg:
        assert "'s3fd'" not in msg.split("use one of")[-1]  # never suggested when missing
    good_call(server, media)  # and the server keeps serving


def test_odd_but_valid_inputs_are_accepted(server, media, tmp_path):
    """mp3 data named .wav (decoded by content), a negative pad, a vertical video."""
    _ffmpeg("-i", str(EXAMPLES / "astronaut.mp4"), "-frames:v", "3", "-an", "-vf",
            "pad=256:456:0:100", str(tmp_path / "vertical face.mp4"))
    _, _, report = generate(server, EXAMPLES / "astronaut.png", media["mp3_as_wav"])
    assert report["frames"] == 15
    _, _, report = _astro(server, media, pad_top=-5)
    assert report["frames"] == 13
    video, _, report = generate(server, tmp_path / "vertical face.mp4", media["good_audio"])
    from ladtalk.media.probe import probe
    assert probe(video["video"] if isinstance(video, dict) else video).size == (256, 456)


# ------------------------------------------------------------------- the parts, one by one
def test_user_message_names_files_and_controls_not_paths_and_flags():
    from ladtalk.app.messages import user_message
    from ladtalk.errors import InputError
    cases = {
        "cannot decode '/tmp/gradio/0a1b/visage é 中文.mp4': bad": "'visage é 中文.mp4'",
        "decoding /tmp/gradio/0a1b/face.mp4 failed": "decoding 'face.mp4' failed",
        r"could not open C:\Users\bob\clip.mp4 now": "could not open 'clip.mp4' now",
        "give the face position with '--box Y1 Y2 X1 X2'": "'Fixed face box Y1 Y2 X1 X2'",
        "--box 10 5 0 100 is empty": "the fixed face box '10 5 0 100' is empty",
        "try '--detector s3fd' if you used dlib": "try 's3fd' as the Face detector",
        "set --resize-factor to 2 or less": "set the resize factor (Advanced options) to 2",
        "enroll it with `python -m ladtalk enroll --video VIDEO --name x`": "in the Enroll tab",
        "see https://huggingface.co/camenduru/Wav2Lip": "https://huggingface.co/camenduru/Wav2Lip",
    }
    for text, expected in cases.items():
        msg = user_message(InputError(text))
        assert expected in msg and "--" not in msg and "/tmp" not in msg, (text, msg)
        assert "Users" not in msg and "gradio/" not in msg, msg
    internal = user_message(FileNotFoundError(2, "No such file", "/srv/app/tmp/x 1.wav"))
    assert "internal error" in internal and "'x 1.wav'" in internal and "/srv" not in internal
    assert user_message(InputError("--box needs 4")) != "--box needs 4"
    assert "hf_x" not in user_message(RuntimeError("/a/b/hf_x.txt hf_x"), ["hf_x"])


def test_missed_frames_are_retried_at_larger_working_sizes():
    from ladtalk.face.detect import detect_scaled, working_sides
    assert working_sides(3840, 480) == [480, 960, 1920]
    assert working_sides(512, 480) == [480] and working_sides(400, 480) == [None]
    assert working_sides(3840, 480, retry_side=None) == [480]
    seen = []

    def run(small):  # a "face" only shows at a working width of 50 px or more
        seen.append((len(small), small.shape[2]))
        hit = small.shape[2] >= 50 and small[0, 0, 0, 0] == 0
        return [np.array([[5.0, 5.0, 15.0, 15.0, 1.0]]) if hit else np.zeros((0, 5))
                for _ in small]

    out = detect_scaled(np.zeros((8, 100, 200, 3), np.uint8), run, 25, 100)
    assert seen == [(8, 25), (3, 50), (5, 50)]  # all, then 3 probes, then the rest
    assert all(np.allclose(d[0, :4], [20, 20, 60, 60]) for d in out)  # in frame pixels
    seen.clear()
    out = detect_scaled(np.full((8, 100, 200, 3), 9, np.uint8), run, 25, 100)
    assert seen == [(8, 25), (3, 50), (3, 100)] and not any(map(len, out))  # no face: cheap


def test_fixed_box_outside_the_frame_is_refused_with_the_frame_size():
    from ladtalk.errors import InputError
    from ladtalk.face import FixedBoxDetector
    frame = np.zeros((1, 200, 300, 3), np.uint8)
    with pytest.raises(InputError, match="mostly outside .* the 300x200 frame"):
        FixedBoxDetector((0, 1000, 0, 1000)).detect(frame)
    with pytest.raises(InputError, match="finite"):
        FixedBoxDetector((0, float("inf"), 0, 10))
    assert FixedBoxDetector((0, 240, 0, 320)).detect(frame)[0][0, 2:4].tolist() == [300, 200]


def test_no_face_message_names_the_likely_cause_and_only_working_fixes(monkeypatch):
    from ladtalk.face import detect
    from ladtalk.face.track import no_face_message
    msg = no_face_message(5, "a.mp4", "dlib", (64, 36), resize_factor=4)
    assert "shrunk to 64x36 px by --resize-factor 4" in msg and "--detector s3fd" not in msg
    assert "only 97x61 px" in no_face_message(5, "a.mp4", "dlib", (97, 61))
    monkeypatch.setattr(detect, "s3fd_available", lambda weights=None: True)
    assert "--detector s3fd" in no_face_message(5, "a.mp4", "dlib", (640, 480))
    assert "--detector s3fd" not in no_face_message(5, "a.mp4", "s3fd", (640, 480))


def test_resize_factor_and_detector_checks():
    from ladtalk.app.limits import check_choice, parse_resize_factor
    from ladtalk.errors import InputError
    from ladtalk.face.detect import available_detectors, make_detector
    from ladtalk.generation.inputs import resized_size
    from ladtalk.media.probe import probe
    info = probe(EXAMPLES / "astronaut.png")
    assert resized_size(info, 3, Path("a.png"), "dlib") == (85, 85)  # room for 80 px
    assert resized_size(info, 8, Path("a.png"), None) == (32, 32)  # a fixed box: no detector
    with pytest.raises(InputError, match="to 1x1 px, too small .* 80 px.* to 3 or less"):
        resized_size(info, 1000, Path("a.png"), "dlib")
    with pytest.raises(InputError, match="to 28x28 px, too small .* to 8 or less"):
        resized_size(info, 9, Path("a.png"), None)
    assert parse_resize_factor(None) == 1 and parse_resize_factor("3") == 3
    for bad in (0, -2, 1.5, "abc", float("nan")):
        with pytest.raises(InputError, match="whole number >= 1"):
            parse_resize_factor(bad)
    assert available_detectors() == ("auto", "dlib")  # offline: no S3FD weights
    for call in (lambda: check_choice("mtcnn", ("auto", "s3fd", "dlib"), "face detector"),
                 lambda: make_detector("mtcnn")):
        with pytest.raises(InputError, match="use one of auto, dlib$"):
            call()
