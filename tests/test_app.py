"""The Gradio app end to end: a local launch with tiny models, driven through gradio_client.

One server per module (random-weight Wav2Lip, a tiny random SOVQAE identity, the offline dlib
detector); every named endpoint is called the way an API user would call it. The identity
store of the server is one temp dir for the whole module (the conftest's per-test
LADTALK_HOME is pointed back at it), so an identity enrolled by one call is visible to the next.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

gradio = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MAX_VIDEO_SECONDS = 2.0  # small on purpose: examples/astronaut.mp4 (4 s) is "over-long"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_tiny_identity(home: Path, name: str) -> Path:
    """A random tiny SOVQAE posing as an identity of the astronaut: its meta.json records its
    reconstruction PSNR on the astronaut photo as the holdout PSNR, so the identity check
    (ladtalk.generation.identity_match) lets it restore the astronaut, and only the astronaut."""
    import torch

    from ladtalk.generation.identity_crops import video_face_crops
    from ladtalk.generation.identity_match import check_identity
    from ladtalk.models.sovqae import SOVQAE, get_config
    torch.manual_seed(0)
    path = home / "identities" / name
    model = SOVQAE(get_config("tiny"))
    model.save_pretrained(path)
    own = check_identity(model, video_face_crops(EXAMPLES / "astronaut.png", 32), {})
    (path / "meta.json").write_text(json.dumps({"name": name, "config_name": "tiny",
                                                "steps": 0, "holdout_psnr": own.psnr_input}))
    return path


def _cut_audio(src: Path, dst: Path, seconds: float) -> Path:
    from ladtalk.media.ffmpeg import ffmpeg_exe
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
                    "-t", str(seconds), "-c:a", "pcm_s16le", str(dst)], check=True)
    return dst


@pytest.fixture(scope="module")
def app_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("app_home")
    (home / "hf").mkdir()
    return home


@pytest.fixture(autouse=True)
def _shared_home(_isolated_home, monkeypatch, app_home):
    """Point this test (and the server threads, which read the env per request) at the
    module's identity store."""
    monkeypatch.setenv("LADTALK_HOME", str(app_home))
    monkeypatch.setenv("HF_HOME", str(app_home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(app_home / "hf" / "hub"))


@pytest.fixture(scope="module")
def server(app_home):
    import torch

    mp = pytest.MonkeyPatch()
    for k, v in {"LADTALK_HOME": str(app_home), "HF_HUB_OFFLINE": "1",
                 "HF_HOME": str(app_home / "hf"), "HF_HUB_CACHE": str(app_home / "hf" / "hub"),
                 "GRADIO_ANALYTICS_ENABLED": "False"}.items():
        mp.setenv(k, v)
    import app
    from ladtalk.generation.pipeline import Pipeline
    from ladtalk.models.wav2lip import Wav2Lip

    _write_tiny_identity(app_home, "tiny")
    torch.manual_seed(0)
    pipe = Pipeline(Wav2Lip(), device="cpu", batch_size=16)
    demo = app.create_demo(pipe, max_video_seconds=MAX_VIDEO_SECONDS, enroll_budget=3,
                           enroll_config="tiny", cache_examples=False,
                           enroll_kwargs={"train_overrides": {"final_frames": 4,
                                                              "eval_frames": 4}})
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port,
                show_error=True, quiet=True)
    client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    try:
        yield client
    finally:
        demo.close()
        mp.undo()


@pytest.fixture(scope="module")
def short_audio(tmp_path_factory) -> Path:
    return _cut_audio(EXAMPLES / "hello.wav", tmp_path_factory.mktemp("audio") / "hello_1s.wav",
                      1.2)


def _video_path(value) -> str:
    """gradio_client returns a Video as {"video": path, "subtitles": ...} (or a path)."""
    return value["video"] if isinstance(value, dict) else value


def test_named_endpoints_and_status(server):
    api = server.view_api(print_info=False, return_format="dict")
    names = set(api["named_endpoints"])
    assert {"/generate", "/robustness", "/enroll", "/identities"} <= names
    assert "/status" not in names  # undocumented: callable, but not in the API page or MCP
    st = server.predict(api_name="/status")
    assert st["generate_available"] is True and st["device"] == "cpu"
    s3fd = [c for c in st["checkpoints"] if c["name"] == "s3fd"][0]
    # offline: S3FD is missing, and the panel says how to supply it
    assert s3fd["available"] is False and "LADTALK_S3FD" in s3fd["detail"]
    assert st["limits"]["max_video_seconds"] == MAX_VIDEO_SECONDS
    ids = {i["name"]: i for i in server.predict(api_name="/identities")}
    assert "tiny" in ids and ids["tiny"]["shipped"] is False


def test_generate_photo_side_by_side(server, short_audio):
    from gradio_client import handle_file

    from ladtalk.media.audio import load_audio
    from ladtalk.media.probe import probe
    main, base, report = server.predict(
        handle_file(str(EXAMPLES / "astronaut.png")), handle_file(str(short_audio)), "tiny",
        False, 3, True, 0, 10, 0, 0, True, "dlib", "pingpong", "", 1, api_name="/generate")
    audio_s = len(load_audio(short_audio)) / 16000
    for value in (main, base):
        info = probe(_video_path(value))
        assert info.has_audio and info.fps == 25.0
        assert (info.width, info.height) == (256, 256)
        assert abs(info.duration - audio_s) <= 1 / 25 + 0.03
    assert report["enhanced"] is True and report["identity"] == "tiny"
    assert report["baseline"]["enhanced"] is False
    assert report["frames"] == round(audio_s * 25)
    assert 15 <= report["gpu_seconds_requested"] <= 120
    assert report["precision"] in ("fp32", "bf16")  # the models' arithmetic is reported
    assert report["identity_match"]["matches"] is True and report["identity_match"]["frames"] == 1


def test_generate_defaults_to_wav2lip_only(server, short_audio):
    api = server.view_api(print_info=False, return_format="dict")
    params = {p["parameter_name"]: p for p in api["named_endpoints"]["/generate"]["parameters"]}
    assert params["identity"]["parameter_has_default"]
    assert params["identity"]["parameter_default"] == "none (Wav2Lip only)"
    from gradio_client import handle_file
    main, base, report = server.predict(face=handle_file(str(EXAMPLES / "astronaut.png")),
                                        audio=handle_file(str(short_audio)), detector="dlib",
                                        api_name="/generate")
    assert report["enhanced"] is False and report["identity"] is None and base is None
    assert report["identity_match"] is None


def test_generate_refuses_another_persons_identity(server, short_audio, tmp_path):
    """Person B's face (scikit-image's cameraman) with person A's identity (the shipped
    astronaut demo): the specific error, with the measured PSNRs and the fix."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from pipeline_helpers import OTHER_FACE_BOX, other_person_photo, write_png

    from ladtalk.identities.meta import read_meta
    from ladtalk.identities.store import SHIPPED_DIR
    face = write_png(tmp_path / "cameraman.png", other_person_photo())
    with pytest.raises(AppError) as err:
        server.predict(face=handle_file(str(face)), audio=handle_file(str(short_audio)),
                       identity="demo", box=" ".join(map(str, OTHER_FACE_BOX)),
                       api_name="/generate")
    msg = str(err.value)
    hold = read_meta(SHIPPED_DIR / "demo")["holdout_psnr"]
    assert "identity 'demo' does not match the face in 'cameraman.png'" in msg
    assert "dB PSNR" in msg and f"{hold:.2f} dB" in msg
    assert "Enroll from this video first" in msg and "none (Wav2Lip only)" in msg
    # and the astronaut with its own (demo) identity goes through
    _, _, report = server.predict(face=handle_file(str(EXAMPLES / "astronaut.png")),
                                  audio=handle_file(str(short_audio)), identity="demo",
                                  compare=False, detector="dlib", api_name="/generate")
    assert report["identity"] == "demo" and report["identity_match"]["matches"] is True


def test_robustness_matches_library(server, app_home):
    from gradio_client import handle_file

    from ladtalk.analysis.robustness import evaluate_robustness
    from ladtalk.face import CropConfig, crop_face, face_region, make_detector, select_largest
    from ladtalk.media.decode import read_image
    from ladtalk.models.sovqae import SOVQAE

    img_path = EXAMPLES / "astronaut.png"
    gallery, table, plot, cert_md, raw = server.predict(
        handle_file(str(img_path)), None, 0.0, "tiny", 1.0, 0.05, 16, "noise", True, False,
        "dlib", api_name="/robustness")
    # the same crop, made with the library's detector and framing
    frame = read_image(img_path)
    boxes, _ = select_largest(make_detector("dlib").detect(frame[None]))
    assert raw["face_box_xyxy"] == pytest.approx(list(boxes[0]), abs=1e-6)
    crop = crop_face(frame, face_region(boxes[0], (frame.shape[1], frame.shape[0]), CropConfig()),
                     32)
    model = SOVQAE.from_pretrained(app_home / "identities" / "tiny")
    specs = ["blur:1.0", "noise:0.05", "down:16"]
    sweep = ["noise:0.02", "noise:0.05", "noise:0.1", "noise:0.15", "noise:0.2", "noise:0.3"]
    lib = evaluate_robustness(model, crop[None], list(dict.fromkeys(specs + sweep)),
                              device="cpu", certificate=True, cost="app").to_json()
    for spec in specs:
        for key in ("psnr_degraded", "psnr_restored", "ssim_degraded", "ssim_restored"):
            assert raw["degradations"][spec][key] == pytest.approx(
                lib["degradations"][spec][key], abs=1e-4), (spec, key)
    for key in ("d_C", "gamma", "L_enc", "radius"):
        assert raw["certificate"][key] == pytest.approx(lib["certificate"][key], rel=1e-3,
                                                        abs=1e-6), key
    assert raw["certificate"]["codes_preserved"]["noise:0.05"] == pytest.approx(
        lib["certificate"]["codes_preserved"]["noise:0.05"])
    # table rows, plot points and gallery agree with the raw numbers
    assert table["headers"] == ["measure"] + [s.replace(":", " ") for s in specs]
    rows = {r[0]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert float(rows["PSNR degraded (dB)"]["blur 1.0"]) == pytest.approx(
        lib["degradations"]["blur:1.0"]["psnr_degraded"], abs=0.006)
    assert rows["codes preserved"]["noise 0.05"] == (
        f"{lib['certificate']['codes_preserved']['noise:0.05']:.1%}")
    pts = plot["value"]["data"] if isinstance(plot, dict) and "value" in plot else plot["data"]
    assert len(pts) == 2 * len(sweep)
    assert len(gallery) == 2 + 2 * len(specs)
    assert "certified radius" in cert_md and "d_C" in cert_md


def test_robustness_on_a_video_frame(server, tmp_path):
    from gradio_client import handle_file

    from ladtalk.media.ffmpeg import ffmpeg_exe
    clip = tmp_path / "clip.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i",
                    str(EXAMPLES / "astronaut.mp4"), "-t", "1.5", "-an", str(clip)], check=True)
    gallery, table, plot, cert_md, raw = server.predict(
        None, handle_file(str(clip)), 1.0, "tiny", 0, 0.1, 0, "blur", False, False, "dlib",
        api_name="/robustness")
    assert raw["input"].endswith("@ 1 s") and list(raw["degradations"]) == ["noise:0.1"]
    r = raw["degradations"]["noise:0.1"]
    assert 15 < r["psnr_degraded"] < 25 and raw["certificate"] is None
    assert "not computed" in cert_md


def test_enroll_then_identity_is_usable(server, short_audio):
    from gradio_client import handle_file
    from safetensors.torch import load_file

    token = "hf_NotARealTokenButSecret123"
    md, meta, weights = server.predict(
        handle_file(str(EXAMPLES / "astronaut.mp4")), "alice", 3, "tiny", "dlib",
        False, "someone/ladtalk-alice", token, True, api_name="/enroll")
    assert meta["name"] == "alice" and meta["steps"] >= 1
    assert meta["holdout_psnr"] is not None and "alice" in md
    # offline: the push fails, the identity is kept, and the token is never echoed
    assert "Push to the Hub failed" in md and token not in md and token not in json.dumps(meta)
    assert "encoder.conv_in.weight" in load_file(weights)
    names = [i["name"] for i in server.predict(api_name="/identities")]
    assert "alice" in names
    # the generate endpoint accepts the new identity (its picker is refreshed the same way)
    main, base, report = server.predict(
        handle_file(str(EXAMPLES / "astronaut.png")), handle_file(str(short_audio)), "alice",
        False, 3, False, 0, 10, 0, 0, True, "dlib", "pingpong", "", 1, api_name="/generate")
    assert report["identity"] == "alice" and base is None


def test_generate_enroll_from_this_video_first(server, tmp_path, short_audio):
    from gradio_client import handle_file

    from ladtalk.media.ffmpeg import ffmpeg_exe
    from ladtalk.media.probe import probe
    clip = tmp_path / "talk.mp4"  # within the test server's 2 s limit
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i",
                    str(EXAMPLES / "astronaut.mp4"), "-t", "1.6", str(clip)], check=True)
    main, base, report = server.predict(
        handle_file(str(clip)), handle_file(str(short_audio)), "none (Wav2Lip only)", True, 2,
        False, 0, 10, 0, 0, True, "dlib", "pingpong", "", 1, api_name="/generate")
    ident = report["identity"]
    assert ident.startswith("video-") and report["enhanced"] is True and base is None
    assert probe(_video_path(main)).has_audio
    ids = {i["name"]: i for i in server.predict(api_name="/identities")}
    assert ids[ident]["steps"] >= 1 and ids[ident]["config"] == "tiny"


def test_bad_inputs_give_specific_errors_and_server_survives(server, tmp_path, short_audio):
    import soundfile as sf
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from PIL import Image

    noface = tmp_path / "gray.png"
    Image.fromarray(np.full((160, 160, 3), 127, np.uint8)).save(noface)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)

    def gen(face, audio):
        return server.predict(handle_file(str(face)), handle_file(str(audio)),
                              "none (Wav2Lip only)", False, 3, False, 0, 10, 0, 0, True, "dlib",
                              "pingpong", "", 1, api_name="/generate")

    cases = [
        (lambda: gen(noface, short_audio), "no face"),
        (lambda: gen(text, short_audio), "cannot decode"),
        (lambda: gen(EXAMPLES / "astronaut.png", empty), "zero-length audio"),
        (lambda: gen(EXAMPLES / "astronaut.mp4", short_audio), f"at most {MAX_VIDEO_SECONDS:g} s"),
        (lambda: server.predict(handle_file(str(text)), "bob", 3, "tiny", "dlib",
                                False, "", "", True, api_name="/enroll"), "cannot decode"),
        (lambda: server.predict(handle_file(str(EXAMPLES / "astronaut.png")), None, 0.0, "tiny",
                                0, 0, 0, "blur", False, False, "dlib", api_name="/robustness"),
         "all degradations are off"),
        (lambda: server.predict(handle_file(str(EXAMPLES / "astronaut.png")), None, 0.0,
                                "../../etc", 1, 0, 0, "blur", False, False, "dlib",
                                api_name="/robustness"), "not a valid name"),
    ]
    for call, expected in cases:
        with pytest.raises(AppError) as err:
            call()
        assert expected in str(err.value), str(err.value)
        # the server keeps serving
        assert isinstance(server.predict(api_name="/identities"), list)
    # and a good request still works after all the failures
    _, _, report = gen(EXAMPLES / "astronaut.png", short_audio)
    assert report["enhanced"] is False


def test_zerogpu_helpers_and_spaces_noop():
    import inspect

    import app
    from ladtalk.app import gpu, limits
    from ladtalk.app.messages import user_message
    from ladtalk.errors import InputError
    from ladtalk.generation.options import GenerateOptions

    # off ZeroGPU, spaces.GPU returns the function itself (a no-op)
    assert app.ZERO_GPU is False
    assert gpu.generate_on_gpu.__name__ == "generate_on_gpu"
    assert not hasattr(gpu.generate_on_gpu, "zerogpu")
    # each duration callable takes exactly the GPU function's arguments (ZeroGPU calls it so)
    for fn, dur in ((gpu.generate_on_gpu, gpu.generate_duration),
                    (gpu.enroll_on_gpu, gpu.enroll_duration),
                    (gpu.robustness_on_gpu, gpu.robustness_duration)):
        assert list(inspect.signature(fn).parameters) == list(inspect.signature(dur).parameters)
    assert gpu.generate_duration(-1, "f", "a", "o", GenerateOptions(identity="x"), True,
                                 10_000, 10_000) == 120  # unknown key: default cap
    assert gpu.enroll_duration(-1, "v", "n", 30.0, None, "auto", False) == 75
    assert gpu.robustness_duration(-1, None, "x", [], [], True) == 50
    assert gpu.robustness_duration(-1, None, "x", [], [], False) == 20
    # dynamic durations grow with the work and stay within [min, cap]
    small = limits.generate_gpu_seconds(25, 1, True, False, cap=120)
    big = limits.generate_gpu_seconds(1500, 1500, True, True, cap=120)
    assert limits.GPU_MIN_SECONDS <= small < big == 120
    assert limits.enroll_gpu_seconds(60, cap=120) == 105
    assert limits.enroll_gpu_seconds(600, cap=120) == 120
    chunks = limits.enroll_chunks(250, 75)
    assert math.isclose(sum(chunks), 250) and max(chunks) <= 75 + 10
    assert limits.enroll_chunks(250, None) == [250.0]
    with pytest.raises(InputError, match="more than the 120 s"):
        limits.check_generate_fits(6000, 6000, True, True, 25.0, cap=120)
    limits.check_generate_fits(100, 100, True, True, 25.0, cap=120)
    assert limits.parse_box("") is None and limits.parse_box("1, 2 3 4") == (1, 2, 3, 4)
    with pytest.raises(InputError, match="4 numbers"):
        limits.parse_box("1 2 3")
    assert limits.parse_pads(0, "10", 2.4, None) == (0, 10, 2, 0)
    with pytest.raises(InputError, match="pad left"):
        limits.parse_pads(0, 0, 5000, 0)
    msg = user_message(RuntimeError("token hf_secret leaked"), ["hf_secret"])
    assert "hf_secret" not in msg and "***" in msg


def test_baseline_pass_reuses_the_face_track(tmp_path):
    """The Wav2Lip-only baseline runs after the LaDTalk pass on that pass's face track."""
    from types import SimpleNamespace

    from ladtalk.app import gpu
    from ladtalk.app.limits import AppLimits
    from ladtalk.app.state import load_state
    from ladtalk.generation.options import GenerateOptions

    class FakePipeline:
        device, lipsyncer = "cpu", object()

        def __init__(self):
            self.calls = []

        def run(self, face, audio, out, opts, progress=None, track=None):
            self.calls.append((Path(out).name, opts.identity, track))
            return SimpleNamespace(out=out, track=f"track-of-{Path(out).stem}")

    pipe = FakePipeline()
    st = load_state(pipe, None, None, AppLimits(), False, None, None, None)
    res = gpu.generate_on_gpu(st.key, "f.mp4", "a.wav", str(tmp_path),
                              GenerateOptions(identity="x"), True, 25, 25)
    assert pipe.calls == [("ladtalk.mp4", "x", None), ("baseline.mp4", None, "track-of-ladtalk")]
    assert set(res) == {"ladtalk", "baseline"}


def test_app_choices_come_from_the_shared_defaults():
    """The app's dropdowns and the endpoint defaults are the package's shared choices."""
    import inspect

    from ladtalk._util.choices import DEFAULT_DETECTOR, DEFAULT_LOOP, DEFAULT_PADS
    from ladtalk.app.endpoints import generate_options
    from ladtalk.errors import InputError

    opts = generate_options(detector=DEFAULT_DETECTOR, loop=DEFAULT_LOOP, box="",
                            pads=DEFAULT_PADS, smooth=True, resize_factor=1,
                            restore_strength="")
    assert tuple(opts.pads) == DEFAULT_PADS and opts.loop == DEFAULT_LOOP
    with pytest.raises(InputError, match="unknown face detector 'mtcnn'; use one of auto"):
        generate_options(detector="mtcnn", loop=DEFAULT_LOOP, box="", pads=DEFAULT_PADS,
                         smooth=True, resize_factor=1, restore_strength="")
    with pytest.raises(InputError, match="unknown loop policy 'bounce'"):
        generate_options(detector=DEFAULT_DETECTOR, loop="bounce", box="", pads=DEFAULT_PADS,
                         smooth=True, resize_factor=1, restore_strength="")
    from ladtalk.app.handlers import make_handlers
    params = inspect.signature(make_handlers(None)["generate"]).parameters
    assert (params["pad_top"].default, params["pad_bottom"].default, params["pad_left"].default,
            params["pad_right"].default) == DEFAULT_PADS
    assert params["detector"].default == DEFAULT_DETECTOR
    assert params["loop"].default == DEFAULT_LOOP


def test_enroll_video_check_reuses_a_probe_already_made(monkeypatch):
    """Generate with 'enroll first' probes the face upload once: the enrollment check takes
    the face check's MediaInfo instead of probing again."""
    from dataclasses import replace

    from ladtalk.app import limits as app_limits
    from ladtalk.errors import InputError

    lim = app_limits.AppLimits(max_video_seconds=60.0)
    video = EXAMPLES / "astronaut.mp4"
    info = app_limits.check_face_input(video, lim)
    calls = []
    monkeypatch.setattr(app_limits, "probe", lambda *a, **k: calls.append(a) or info)
    assert app_limits.check_enroll_video(video, lim, info) is info and calls == []
    assert app_limits.check_enroll_video(video, lim) is info and len(calls) == 1
    with pytest.raises(InputError, match="still image"):  # the given info is what is checked
        app_limits.check_enroll_video(video, lim, replace(info, is_image=True))


def test_enroll_request_presents_the_folder_enroll_wrote(monkeypatch, tmp_path):
    """With ``enroll_kwargs={"out": DIR}`` the identity is not in the store: the summary and
    the download come from the folder enrollment returned."""
    from types import SimpleNamespace

    from ladtalk.app import endpoints
    from ladtalk.app.limits import AppLimits
    from ladtalk.app.tempspace import TempSpace
    from ladtalk.identities.owners import Access

    out = _write_tiny_identity(tmp_path / "elsewhere", "carol")
    monkeypatch.setattr(endpoints, "run_enrollment", lambda *a, **k: out)
    space = TempSpace(tmp_path / "space")
    st = SimpleNamespace(limits=AppLimits(), space=space)
    md, meta, weights = endpoints.enroll_request(
        st, endpoints.Caller(Access(public=False)), str(EXAMPLES / "astronaut.mp4"), "carol", 3,
        "tiny", "dlib", False, "", "", False, lambda *a, **k: None)
    assert meta["name"] == "carol" and "carol" in md
    assert Path(weights).read_bytes() == (out / "model.safetensors").read_bytes()
    assert Path(weights).is_relative_to(space.root)  # the caller's temp space, cleaned later
    space.close()
    assert not space.root.exists()


def test_python_app_py_starts_offline_and_serves_robustness(tmp_path):
    """The acceptance check: ``python app.py`` with no Hub access starts, reports the missing
    Wav2Lip checkpoint (Generate answers with how to supply it) and serves Robustness with the
    shipped demo identity."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    if not (ROOT / "checkpoints" / "identities" / "demo" / "model.safetensors").is_file():
        pytest.fail("shipped demo identity missing; run scripts/make_demo_identity.py")
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", LADTALK_HOME=str(tmp_path / "home"),
               HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    for var in ("LADTALK_WAV2LIP", "LADTALK_S3FD"):
        env.pop(var, None)
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1",
                             "--port", str(port)], cwd=str(tmp_path), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
                assert time.time() < deadline, "app.py did not start within 120 s"
                time.sleep(1)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        st = client.predict(api_name="/status")
        assert st["generate_available"] is False and "LADTALK_WAV2LIP" in st["wav2lip_error"]
        assert "demo" in st["identities"]
        with pytest.raises(AppError, match="LADTALK_WAV2LIP"):
            client.predict(face=handle_file(str(EXAMPLES / "astronaut.png")),
                           audio=handle_file(str(EXAMPLES / "hello.wav")),
                           api_name="/generate")
        *_, raw = client.predict(image=handle_file(str(EXAMPLES / "astronaut.png")),
                                 identity="demo", certificate=False, detector="dlib",
                                 api_name="/robustness")
        assert raw["identity"] == "demo" and raw["resolution"] == 128
        assert set(raw["degradations"]) == {"blur:2.0", "noise:0.1", "down:96"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
