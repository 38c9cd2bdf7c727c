"""Generation pipeline: end-to-end acceptance, timing / loop policy, blending, CLI, bench.

The acceptance tests run a real ``Wav2Lip()`` (random weights: no downloads; throughput and
data flow are the same as with trained weights) on a synthetic talking-head clip, with the
real ffmpeg encode, and check the output against the decoded input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import (
    FACE_BOX,
    FRAME_H,
    FRAME_W,
    CountingDetector,
    StubGenerator,
    decode,
    make_aac,
    make_face_video,
    make_speech,
    tiny_sovqae,
)

import ladtalk._util.device
import ladtalk.generation.runner as runner_mod
from ladtalk.face.crop import CropConfig, face_region
from ladtalk.generation.blend import BlendConfig, blend_face, lower_face_mask, match_colour
from ladtalk.generation.pipeline import GenerateOptions, Pipeline
from ladtalk.media.audio import load_audio
from ladtalk.media.encode import VideoWriter
from ladtalk.media.framesource import LoopedSource
from ladtalk.media.probe import probe
from ladtalk.media.timing import needs_random_access, source_index, source_indices

FPS = 10.0


class RecordingWriter(VideoWriter):
    """The real writer, plus a copy of every frame handed to it (pre-encode, exact)."""

    last: "RecordingWriter" = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames = []
        RecordingWriter.last = self

    def write(self, frames):
        self.frames.append(np.array(frames, copy=True))
        super().write(frames)

    def all_frames(self) -> np.ndarray:
        return np.concatenate(self.frames)


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setattr(runner_mod, "VideoWriter", RecordingWriter)
    return RecordingWriter


@pytest.fixture(scope="module")
def wav2lip_pipe():
    from ladtalk.models.wav2lip import Wav2Lip
    torch.manual_seed(0)
    return Pipeline(Wav2Lip(), device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    return {
        "video16": make_face_video(d / "face16.mp4", 16, FPS),
        "video14_gap": make_face_video(d / "gap.mp4", 14, FPS, no_face=(5, 6, 7, 8)),
        "aac": make_aac(d / "speech.m4a", 2.35),
        "wav14": make_speech(d / "speech14.wav", 1.4),
    }


def _region(box_y1y2x1x2, pads=(0, 10, 0, 0)):
    y1, y2, x1, x2 = box_y1y2x1x2
    return face_region((x1, y1, x2, y2), (FRAME_W, FRAME_H), CropConfig(pads=pads))


def _inside(region, shape=(FRAME_H, FRAME_W)):
    m = np.zeros(shape, dtype=bool)
    x1, y1, x2, y2 = region.clipped()
    m[y1:y2, x1:x2] = True
    return m


# ------------------------------------------------------------------------- acceptance
def test_e2e_video_longer_audio_pingpong(wav2lip_pipe, media, tmp_path, recording):
    out = tmp_path / "out.mp4"
    res = wav2lip_pipe.run(media["video16"], media["aac"], out, GenerateOptions(box=FACE_BOX))
    audio_s = len(load_audio(media["aac"])) / 16000
    n_expected = int(np.floor(audio_s * FPS + 0.5))
    assert res.n_frames == n_expected == 24
    assert res.n_source_frames == 16 and not res.enhanced and res.warnings == []

    # container facts: fps, resolution, duration == audio duration (+-1 frame)
    info = probe(out)
    assert info.fps == pytest.approx(FPS)
    assert (info.width, info.height) == (FRAME_W, FRAME_H)
    got = decode(out)
    assert len(got) == n_expected
    assert abs(len(got) / FPS - audio_s) <= 1.0 / FPS

    # audio: AAC input is stream-copied -> decodes to exactly the same samples
    assert res.audio_copied is True
    np.testing.assert_array_equal(load_audio(out), load_audio(media["aac"]))

    # pre-encode frames: bit-exact outside the crop region, changed inside (mouth)
    src = decode(media["video16"])
    order = source_indices(n_expected, 16, "pingpong")
    assert list(order[14:20]) == [14, 15, 14, 13, 12, 11]
    frames = recording.last.all_frames()
    assert frames.shape == (n_expected, FRAME_H, FRAME_W, 3)
    inside = _inside(_region(FACE_BOX))
    for t, s in enumerate(order):
        diff = (frames[t] != src[s]).any(axis=-1)
        assert not diff[~inside].any(), f"frame {t} changed outside the face region"
        assert diff[inside].mean() > 0.05, f"frame {t}: the mouth was not regenerated"
    # the upper face (eyes) is kept: the top 40% of the crop is untouched
    r = _region(FACE_BOX)
    top = np.zeros_like(inside)
    top[max(r.y1, 0):r.y1 + int(0.4 * r.height), max(r.x1, 0):r.x2] = True
    assert not (frames[3] != src[3]).any(axis=-1)[top].any()

    # after H.264 (lossy): away from the face region the output is as close to the input
    # as a pass-through encode of the same input frames with the same settings
    with VideoWriter(tmp_path / "pass.mp4", FPS, (FRAME_W, FRAME_H), crf=18,
                     preset="veryfast") as wr:
        wr.write(src[order])
    passthrough = decode(tmp_path / "pass.mp4")
    far = ~_grow(inside, 8)

    def err(a, b):
        return np.abs(a.astype(np.int16) - b.astype(np.int16))[:, far]
    assert err(got, passthrough).mean() < 0.75
    assert err(got, src[order]).mean() < err(passthrough, src[order]).mean() + 0.25


def _grow(mask, px):
    import cv2
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def test_e2e_no_face_frames_pass_through(wav2lip_pipe, media, tmp_path, recording):
    out = tmp_path / "gap.mp4"
    res = wav2lip_pipe.run(media["video14_gap"], media["wav14"], out,
                           GenerateOptions(detector="dlib"))
    assert res.n_frames == 14
    assert res.missing_face_timestamps == pytest.approx([0.5, 0.6, 0.7, 0.8])
    assert res.passthrough_frames == 4
    assert len(res.warnings) == 1 and "0.50-0.90s" in res.warnings[0]
    assert "left unchanged" in res.warnings[0]
    src = decode(media["video14_gap"])
    frames = recording.last.all_frames()
    for t in range(14):
        same = np.array_equal(frames[t], src[t])
        assert same == (t in (5, 6, 7, 8)), f"frame {t}"
    # WAV input is not MP4-copyable: AAC, still the same speech (high correlation)
    assert res.audio_copied is False
    a, b = load_audio(out), load_audio(media["wav14"])
    n = min(len(a), len(b))
    assert abs(len(a) - len(b)) < 0.05 * 16000
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.95
    assert len(decode(out)) == 14


def test_enhance_path_uses_the_identity_restorer(media, tmp_path, recording, monkeypatch):
    from ladtalk.identities.store import store_path
    model = tiny_sovqae(resolution=64)
    store = store_path("tiny_person")
    store.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(store)
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=8)
    # a random model has no holdout PSNR and matches no face: the identity check (its own
    # tests: test_identity_match.py) is off here, this test is about the restoration path
    opts = dict(box=FACE_BOX, identity_check="off")
    base = pipe.run(media["video16"], media["wav14"], tmp_path / "a.mp4", GenerateOptions(**opts))
    plain = recording.last.all_frames()
    res = pipe.run(media["video16"], media["wav14"], tmp_path / "b.mp4",
                   GenerateOptions(identity="tiny_person", **opts))
    enhanced = recording.last.all_frames()
    assert res.enhanced and not base.enhanced
    assert Path(res.identity) == store
    assert res.timings["restore"] > 0
    inside = _inside(_region(FACE_BOX))
    differs = (plain != enhanced).any(axis=-1)
    assert not differs[:, ~inside].any()
    assert differs[:, inside].mean() > 0.05
    # the restorer is loaded once and reused
    first = pipe.restorer_for("tiny_person")[0]
    pipe.run(media["video16"], media["wav14"], tmp_path / "c.mp4",
             GenerateOptions(identity="tiny_person", **opts))
    assert pipe.restorer_for("tiny_person")[0] is first
    assert pipe.loaded_models()["restorers"] == [str(store.resolve())]
    assert pipe.loaded_models()["lipsync"] and pipe.lipsyncer_loaded
    # both models follow the pipeline's precision (default "auto"; "fp32" = exact arithmetic)
    assert res.precision == ladtalk._util.device.precision_name(pipe.lipsyncer.dtype)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        p = Pipeline(StubGenerator(), device="cpu", dtype=name)
        assert p.restorer_for("tiny_person")[0].dtype == dtype == p.lipsyncer.dtype


def test_each_call_draws_only_the_rows_its_paste_uses(media, tmp_path, recording):
    """From a checkpoint, Wav2Lip draws only the rows a call can show (and measure colours
    on), with and without an identity, and the frames are those of the whole model."""
    from pipeline_helpers import write_wav2lip_checkpoint

    from ladtalk.generation.chunks import lipsync_first_row
    from ladtalk.generation.lipsync_load import LIPSYNC_KEPT
    from ladtalk.identities.store import store_path
    from ladtalk.models.sovqae import SOVQAE, get_config
    from ladtalk.models.wav2lip import Wav2Lip
    from ladtalk.models.wav2lip_io import first_row_for
    torch.manual_seed(0)  # a model without attention: it restores a window of the crop
    SOVQAE(get_config("tiny", resolution=128, attn_resolutions=(), mid_attn=False)).eval(
        ).save_pretrained(store_path("tiny_person"))
    kw = dict(device="cpu", dtype="fp32", backend="torch", batch_size=8)
    from_file = Pipeline(str(write_wav2lip_checkpoint(tmp_path / "w2l.safetensors")), **kw)
    torch.manual_seed(0)  # (the checkpoint's weights)
    whole = Pipeline(Wav2Lip(), **kw)
    for identity in (None, "tiny_person"):
        opts = GenerateOptions(box=FACE_BOX, identity=identity, identity_check="off")
        frames = []
        for pipe in (from_file, whole):
            pipe.run(media["video16"], media["wav14"], tmp_path / "o.mp4", opts)
            frames.append(recording.last.all_frames().astype(int))
        assert np.abs(frames[0] - frames[1]).max() <= 1
        assert whole.loaded_models()["lipsync_rows"] == [0]  # a module draws whole crops
    restorer = from_file.restorer_for("tiny_person")[0]
    row = lipsync_first_row(restorer, None, BlendConfig())
    assert 0 < row < first_row_for(BlendConfig().lipsync_band[0]) == 30
    assert lipsync_first_row(None, None, BlendConfig(lipsync_band=None)) == 0  # whole crops
    assert from_file.loaded_models()["lipsync_rows"] == [30, row]
    from_file.lipsyncer_for(5)
    assert from_file.loaded_models()["lipsync_rows"] == [row, 5][-LIPSYNC_KEPT:]


def test_a_chunk_processor_refuses_a_syncer_drawing_too_few_rows():
    from ladtalk.generation.chunks import ChunkProcessor
    from ladtalk.generation.lipsync import LipSyncer
    syncer = LipSyncer(StubGenerator(), device="cpu", first_row=40)
    with pytest.raises(ValueError, match="from row 40"):
        ChunkProcessor(syncer=syncer, mel=np.zeros((80, 100), np.float32),
                       starts=np.zeros(4, int), track=None, frame_size=(FRAME_W, FRAME_H))


def test_still_image_gives_25fps_and_audio_length(media, tmp_path, recording):
    import cv2
    from pipeline_helpers import face_frame
    img = face_frame(0)
    face = tmp_path / "photo.png"
    cv2.imwrite(str(face), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=8)
    res = pipe.run(face, media["wav14"], tmp_path / "still.mp4", GenerateOptions(box=FACE_BOX))
    assert res.fps == 25.0 and res.n_frames == 35 and res.n_source_frames == 1
    frames = recording.last.all_frames()
    inside = _inside(_region(FACE_BOX))
    assert all(np.array_equal(f[~inside], img[~inside]) for f in frames)
    assert probe(tmp_path / "still.mp4").fps == pytest.approx(25.0)
    res = pipe.run(face, media["wav14"], tmp_path / "still12.mp4",
                   GenerateOptions(box=FACE_BOX, fps=12))
    assert res.fps == 12.0 and res.n_frames == 17  # 1.4 s * 12 = 16.8 -> 17


def test_video_longer_than_audio_is_cut(media, tmp_path):
    short = make_speech(tmp_path / "short.wav", 0.9)
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=4)
    res = pipe.run(media["video16"], short, tmp_path / "cut.mp4", GenerateOptions(box=FACE_BOX))
    assert res.n_frames == 9 and len(decode(tmp_path / "cut.mp4")) == 9


def test_resize_factor_halves_the_output(media, tmp_path):
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=8)
    res = pipe.run(media["video16"], media["wav14"], tmp_path / "half.mp4",
                   GenerateOptions(box=FACE_BOX, resize_factor=2))
    assert res.size == (FRAME_W // 2, FRAME_H // 2)
    info = probe(tmp_path / "half.mp4")
    assert (info.width, info.height) == (FRAME_W // 2, FRAME_H // 2)


def test_parallel_model_workers_keep_frame_order_and_content(media, tmp_path, recording):
    """Two or three model threads on consecutive chunks hand the encoder exactly the frames
    (and the order) that one thread does."""
    from ladtalk.models.wav2lip import Wav2Lip
    torch.manual_seed(0)
    model = Wav2Lip()
    runs = {}
    before = torch.get_num_threads()
    for workers in (1, 2, 3):
        pipe = Pipeline(model, device="cpu", batch_size=4, workers=workers)
        assert pipe.worker_plan()[0] == workers
        pipe.run(media["video14_gap"], media["wav14"], tmp_path / f"w{workers}.mp4",
                 GenerateOptions(box=FACE_BOX))
        runs[workers] = recording.last.all_frames()
    assert runs[1].shape == runs[2].shape == runs[3].shape and len(runs[1]) == 14
    # frames differ from chunk to chunk (the face drifts), so a swapped chunk would show
    for workers in (2, 3):
        np.testing.assert_allclose(runs[1].astype(int), runs[workers].astype(int), atol=1)
    # worker threads set their own intra-op count; threads started later get the old one
    import threading
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert torch.get_num_threads() == before and seen == [before]
    with pytest.raises(Exception, match="workers"):
        Pipeline(model, device="cpu", workers=0)
    # the default plan follows torch's thread count: a spare model thread on 2-3 cores for
    # runs that restore, none for Wav2Lip alone
    try:
        plans = {}
        for total in (1, 2, 4, 8):
            torch.set_num_threads(total)
            pipe = Pipeline(model, device="cpu")
            plans[total] = (pipe.worker_plan(), pipe.worker_plan(restoring=False))
    finally:
        torch.set_num_threads(before)
    assert plans == {1: ((1, 1), (1, 1)), 2: ((3, 1), (2, 1)), 4: ((2, 2), (2, 2)),
                     8: ((2, 4), (2, 4))}


def test_reused_track_skips_detection_and_gives_the_same_output(media, tmp_path, recording):
    """The app's baseline pass: ``run(..., track=first.track)`` does not detect again and
    writes exactly what a run that detects writes."""
    from dataclasses import replace
    det = CountingDetector()
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=4, detector=det)
    opts = GenerateOptions(detector="dlib", identity_check="off")
    first = pipe.run(media["video14_gap"], media["wav14"], tmp_path / "a.mp4", opts)
    detected = recording.last.all_frames()
    assert det.frames == 14 and first.track is not None and first.track.n_source_frames == 14
    assert first.timings["detect"] > 0

    det.frames = 0
    stages = []
    again = pipe.run(media["video14_gap"], media["wav14"], tmp_path / "b.mp4",
                     replace(opts, identity=None), progress=lambda *a: stages.append(a),
                     track=first.track)
    assert det.frames == 0 and again.track is first.track and again.timings["detect"] == 0.0
    np.testing.assert_array_equal(recording.last.all_frames(), detected)
    assert again.missing_face_timestamps == first.missing_face_timestamps
    assert again.warnings == first.warnings and len(again.warnings) == 1
    assert again.passthrough_frames == first.passthrough_frames == 4
    assert ("detect", 14, 14) in stages

    # a fresh detection gives the same boxes as the track that was reused
    fresh = pipe.run(media["video14_gap"], media["wav14"], tmp_path / "c.mp4", opts)
    assert det.frames == 14
    np.testing.assert_array_equal(fresh.track.boxes, first.track.boxes)
    np.testing.assert_array_equal(recording.last.all_frames(), detected)


def test_a_track_that_does_not_fit_is_not_used(media, tmp_path):
    """Other framing options or a changed face file: the track is ignored, detection runs."""
    import os
    import shutil
    det = CountingDetector()
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=4, detector=det)
    face = Path(shutil.copy(media["video14_gap"], tmp_path / "face.mp4"))
    opts = GenerateOptions(detector="dlib")
    first = pipe.run(face, media["wav14"], tmp_path / "a.mp4", opts)
    assert first.track.mismatch(first.track.key()) is None
    for other in (GenerateOptions(detector="dlib", smooth=False),
                  GenerateOptions(detector="dlib", pads=(0, 20, 0, 0)),
                  GenerateOptions(detector="dlib", fps=5)):
        det.frames = 0
        res = pipe.run(face, media["wav14"], tmp_path / "o.mp4", other, track=first.track)
        assert det.frames > 0 and res.track is not first.track
    st = face.stat()
    os.utime(face, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "a new recording"
    det.frames = 0
    res = pipe.run(face, media["wav14"], tmp_path / "t.mp4", opts, track=first.track)
    assert det.frames == 14 and res.track.face != first.track.face
    with pytest.raises(TypeError, match="track"):
        pipe.run(face, media["wav14"], tmp_path / "x.mp4", opts, track={"boxes": []})


# ------------------------------------------------------------------------- timing policy
@pytest.mark.parametrize("policy,expected", [
    ("pingpong", [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]),
    ("loop", [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2]),
    ("hold", [0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3]),
])
def test_source_indices(policy, expected):
    assert list(source_indices(11, 4, policy)) == expected
    assert [source_index(t, 4, policy) for t in range(11)] == expected
    assert list(source_indices(3, 4, policy)) == [0, 1, 2]  # video longer than audio: cut
    assert list(source_indices(5, 1, policy)) == [0] * 5    # still image


def test_random_access_only_for_pingpong_past_the_end():
    assert needs_random_access(10, 4, "pingpong")
    assert not needs_random_access(4, 4, "pingpong")
    assert not needs_random_access(10, 4, "loop")
    with pytest.raises(ValueError, match="pingpong"):
        source_indices(3, 2, "bounce")


@pytest.mark.parametrize("policy", ["pingpong", "loop", "hold"])
def test_looped_source_streams_frames_in_policy_order(media, tmp_path, policy):
    src = decode(media["video16"], fps=FPS)
    info = probe(media["video16"])
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with LoopedSource(info, FPS, 37, policy, chunk_size=5, temp_dir=tmp) as source:
        chunks = list(source.frames())
        if policy == "pingpong":
            assert source.cache_path is not None and source.cache_path.exists()
        else:
            assert source.cache_path is None
    assert list(tmp.iterdir()) == []  # cache removed on close
    frames = np.concatenate([c[0] for c in chunks])
    idx = np.concatenate([c[1] for c in chunks])
    assert all(len(c[0]) <= 5 for c in chunks)
    assert list(idx) == list(source_indices(37, 16, policy))
    np.testing.assert_array_equal(frames, src[idx])
    assert source.n_src == 16


@pytest.mark.parametrize("policy", ["pingpong", "loop", "hold"])
def test_chunks_handed_out_are_the_callers_to_change(media, tmp_path, policy):
    """Whole decoded chunks are handed out without a copy; a caller writing into them (the
    pipeline pastes faces in place) never changes a later frame."""
    src = decode(media["video16"], fps=FPS)
    with LoopedSource(probe(media["video16"]), FPS, 37, policy, chunk_size=4,
                      temp_dir=tmp_path) as source:
        for frames, idx in source.frames():
            np.testing.assert_array_equal(frames, src[idx])
            frames[:] = 0


@pytest.mark.parametrize("n_out,hint,cached", [(16, None, False), (14, None, False),
                                                (37, 40, False), (37, None, True)])
def test_pingpong_cache_written_only_when_the_audio_outlasts_the_video(media, tmp_path, n_out,
                                                                      hint, cached):
    """No copy of the frames when the estimate says no loop is needed; when the estimate is
    wrong (a hint of 40 frames for a 16-frame video) the cache is built after the first leg
    and the frames are still the right ones."""
    src = decode(media["video16"], fps=FPS)
    written = []
    with LoopedSource(probe(media["video16"]), FPS, n_out, "pingpong", chunk_size=5,
                      temp_dir=tmp_path, n_src_hint=hint) as source:
        source_write = source._cache_write
        source._cache_write = lambda frames: (  # (n_src is known once the first leg ended)
            written.append((len(frames), source.n_src is None)), source_write(frames))
        chunks = list(source.frames())
    idx = np.concatenate([c[1] for c in chunks])
    assert list(idx) == list(source_indices(n_out, 16, "pingpong"))
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), src[idx])
    assert (sum(n for n, _ in written) > 0) == (n_out > 16)
    assert any(first_leg for _, first_leg in written) == cached


def test_pingpong_falls_back_to_loop_when_temp_disk_is_full(media, tmp_path, monkeypatch):
    from collections import namedtuple

    import ladtalk.media.framesource as fs
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(fs.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    msgs = []
    info = probe(media["video16"])
    with LoopedSource(info, FPS, 20, "pingpong", chunk_size=8, temp_dir=tmp_path,
                      warn=msgs.append) as source:
        idx = np.concatenate([c[1] for c in source.frames()])
    assert list(idx) == list(source_indices(20, 16, "loop"))
    assert len(msgs) == 1 and "not enough free space" in msgs[0] and "TMPDIR" in msgs[0]


# ------------------------------------------------------------------------- blending
def test_lower_face_mask_shape():
    m = lower_face_mask(96)
    assert m.shape == (96, 96) and m.dtype == np.float32
    assert m[0].max() == m[-1].max() == m[:, 0].max() == m[:, -1].max() == 0.0
    assert m[: int(0.45 * 96)].max() == 0.0          # eyes and above untouched
    assert m[int(0.75 * 96), 48] == pytest.approx(1.0)  # mouth fully replaced
    assert np.all(np.diff(m[:, 48][: int(0.62 * 96)]) >= 0)  # smooth rise, no step
    assert np.abs(np.diff(m, axis=0)).max() < 0.2 and np.abs(np.diff(m, axis=1)).max() < 0.2


def test_colour_match_moves_generated_tone_to_the_original():
    rng = np.random.default_rng(0)
    orig = rng.integers(80, 160, (64, 64, 3)).astype(np.uint8)
    gen = np.clip(orig.astype(np.float32) * 0.9 + np.array([30, -20, 10]), 0, 255)
    out = match_colour(gen.astype(np.uint8), orig)
    band = (slice(8, 29), slice(13, 51))
    assert np.abs(out[band].mean((0, 1)) - orig[band].mean((0, 1))).max() < 1.0
    assert np.abs(gen[band].mean((0, 1)) - orig[band].mean((0, 1))).max() > 9


def test_blend_face_changes_only_masked_pixels_inside_region():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (120, 160, 3)).astype(np.uint8)
    region = face_region((30, 20, 110, 100), (160, 120))
    before = frame.copy()
    gen = np.full((96, 96, 3), 255, np.uint8)
    blend_face(frame, gen, region, original=None, config=BlendConfig(colour_match=False))
    changed = (frame != before).any(axis=-1)
    inside = np.zeros_like(changed)
    x1, y1, x2, y2 = region.clipped()
    inside[y1:y2, x1:x2] = True
    assert changed.any() and not changed[~inside].any()
    assert not changed[y1:y1 + int(0.45 * region.height)].any()


def test_wav2lip_only_generation_does_not_import_the_identity_stack():
    """The SOVQAE and huggingface_hub (0.2-0.3 s of imports) load only with an identity."""
    code = ("import sys; import ladtalk.generation.pipeline; "
            "print(*(m in sys.modules for m in ('ladtalk.models.sovqae', 'huggingface_hub', "
            "'ladtalk.generation.restore', 'ladtalk.generation.identity_match')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False"] * 4, out


def test_blend_colour_band_starts_where_the_generator_drew():
    cfg = BlendConfig()
    assert cfg.from_row(0.25).reference == (0.2, 0.25, 0.8, 0.45)
    assert cfg.from_row(0.05) == cfg and cfg.from_row(0.5) == cfg  # above it / band would vanish
    rng = np.random.default_rng(0)
    orig = rng.integers(60, 200, (64, 64, 3)).astype(np.uint8)
    gen = orig.astype(np.float32)
    gen[:16] = 255.0  # rows the generator did not draw (0.25 of the crop): not its colours
    assert not np.allclose(match_colour(gen, orig, cfg), gen, atol=1)
    np.testing.assert_allclose(match_colour(gen, orig, cfg.from_row(0.25))[16:], gen[16:],
                               atol=1e-3)
    # Wav2Lip's crop pasted as it is: measured on rows 1/3-1/2, where it drew from its input
    assert cfg.direct().reference == (0.2, 1 / 3, 0.8, 0.5)
    assert BlendConfig(lipsync_band=None).direct() == BlendConfig(lipsync_band=None)
    for bad in ((0.45, 0.5), (0.3, 0.2), (0.3, 1.2)):
        with pytest.raises(ValueError, match="lipsync_band"):
            BlendConfig(lipsync_band=bad)


def test_fold_batchnorm_matches_the_original_in_eval():
    from torch import nn

    from ladtalk.models.fuse import fold_batchnorm
    from ladtalk.models.wav2lip import Wav2Lip
    torch.manual_seed(1)
    model = Wav2Lip().eval()
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):  # non-trivial statistics and affine parameters
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_(0, 0.1)
    fused = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 50  # untouched
    mel, face = torch.randn(2, 1, 80, 16), torch.rand(2, 6, 96, 96)
    with torch.inference_mode():
        ref, got = model(mel, face), fused(mel, face)
    assert (ref - got).abs().max() < 1e-5
    assert (ref - model(mel, face * 0.5)).abs().max() > 1e-3  # the comparison can fail
    # the same numbers as torch's own fusion, bit for bit (the OpenVINO cache keys hash them),
    # for Conv2d and ConvTranspose2d pairs
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    pairs = [m for m in model.modules() if isinstance(m, nn.Sequential) and len(m) == 2
             and isinstance(m[1], nn.BatchNorm2d)]
    assert {type(m[0]) for m in pairs} == {nn.Conv2d, nn.ConvTranspose2d}
    folded = [m[0] for m in fused.modules() if isinstance(m, nn.Sequential) and len(m) == 2
              and isinstance(m[1], nn.Identity)]
    for pair, conv in zip(pairs, folded):
        want = fuse_conv_bn_eval(pair[0], pair[1],
                                 transpose=isinstance(pair[0], nn.ConvTranspose2d))
        assert torch.equal(want.weight, conv.weight) and torch.equal(want.bias, conv.bias)
    # copy_model=False rewrites the model itself, with the same result, and never writes into
    # the given weights (a safetensors checkpoint maps its file copy-on-write)
    given = [m[0].weight for m in pairs]
    before = [w.clone() for w in given]
    inplace = fold_batchnorm(model, copy_model=False)
    assert all(torch.equal(a, b) for a, b in zip(given, before))
    assert inplace is model and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(fused.state_dict().values(),
                                                 model.state_dict().values()))


# ------------------------------------------------------------------------- CLI
def test_cli_generate(media, tmp_path, monkeypatch, capsys):
    from pipeline_helpers import write_wav2lip_checkpoint

    from ladtalk.cli import main
    ckpt = write_wav2lip_checkpoint(tmp_path / "w2l.safetensors")
    out = tmp_path / "cli out.mp4"
    argv = ["generate", "--face", str(media["video16"]), "--audio", str(media["wav14"]),
            "--out", str(out), "--no-enhance", "--wav2lip", str(ckpt),
            "--box", *map(str, FACE_BOX), "--device", "cpu", "--batch-size", "8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "14 frames" in printed and "Wav2Lip only" in printed
    assert len(decode(out)) == 14
    # neither --identity nor --no-enhance: argparse refuses (explicit choice required)
    with pytest.raises(SystemExit) as exc:
        main([a for a in argv if a != "--no-enhance"])
    assert exc.value.code == 2
    assert "--identity" in capsys.readouterr().err
    # a user error is reported as "error: ..." with exit status 2
    assert main(argv[:argv.index("--box")] + ["--box", "500", "600", "500", "600"]) == 2
    assert "outside" in capsys.readouterr().err


def test_cli_generate_identity_check_warns_by_default(tmp_path, capsys):
    """``generate --identity`` on another person's face: a warning with the measured numbers
    (the output is still written); ``--identity-check refuse`` stops with exit status 2."""
    from pipeline_helpers import (
        OTHER_FACE_BOX,
        other_person_photo,
        write_png,
        write_wav2lip_checkpoint,
    )

    from ladtalk.cli import main
    ckpt = write_wav2lip_checkpoint(tmp_path / "w2l.safetensors")
    face = write_png(tmp_path / "cameraman.png", other_person_photo())
    out = tmp_path / "out.mp4"
    argv = ["generate", "--face", str(face), "--audio", str(make_speech(tmp_path / "s.wav", 0.4)),
            "--out", str(out), "--identity", "demo", "--wav2lip", str(ckpt),
            "--box", *map(str, OTHER_FACE_BOX), "--device", "cpu", "--quiet"]
    assert main(argv) == 0 and out.is_file()
    err = capsys.readouterr().err
    assert "warning: identity 'demo' does not match the face in 'cameraman.png'" in err
    assert "dB PSNR" in err and "--no-enhance" in err
    out.unlink()
    assert main(argv + ["--identity-check", "refuse"]) == 2 and not out.exists()
    assert "does not match" in capsys.readouterr().err
    assert main(argv + ["--identity-check", "off"]) == 0
    assert "does not match" not in capsys.readouterr().err


# ------------------------------------------------------------------------- bench
def test_bench_reports_stage_fps_and_peak_rss(media, tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "ladtalk.bench", "--face", str(media["video16"]),
           "--audio", str(media["wav14"]), "--no-enhance", "--identity", "random:32",
           "--box", *map(str, FACE_BOX), "--lengths", "0.5", "1.0", "--batch-size", "8",
           "--backend", "torch", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          cwd=str(Path(__file__).resolve().parents[1]))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert [(r["mode"], r["length_s"]) for r in data["runs"]] == [
        ("wav2lip", 0.5), ("wav2lip", 1.0), ("identity", 0.5), ("identity", 1.0)]
    for r in data["runs"]:
        assert r["frames"] == round(r["length_s"] * FPS)
        assert r["peak_rss_mb"]["self"] > 50
        for stage in ("decode", "lipsync", "blend", "encode", "end_to_end"):
            assert r["fps"][stage] > 0
        assert ("restore" in r["fps"]) == (r["mode"] == "identity")
        assert r["realtime_factor"] > 0
    assert set(data["rss_ratio_longest_vs_shortest"]) == {"wav2lip", "identity"}
    # precision auto was measured (or read from the cache) per model, and reported
    assert set(data["runtime"]) == {"lipsync", "restore"}
    assert data["runtime"]["lipsync"]["how"] in ("measured", "cached")
    assert data["runtime"]["lipsync"]["backend"] == "torch"
    assert "frames/s" in proc.stdout and "lipsync: torch" in proc.stdout
