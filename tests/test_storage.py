"""Bounded disk: content-keyed LRU caches, the app's temp space, the sweeps, free space, and a
kill during an identity save (docs/storage.md)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import StubGenerator, make_face_video, make_speech

from ladtalk._util.atomic import atomic_dir
from ladtalk._util.disk import check_free_space, dir_bytes
from ladtalk._util.diskcache import DiskCache, cache_limit, content_key
from ladtalk.app.tempspace import TempSpace, session_key, sweep_stale_temp
from ladtalk.errors import InputError
from ladtalk.face.detect import DlibHOGDetector
from ladtalk.media.encode import VideoWriter

ROOT = Path(__file__).resolve().parents[1]


def _fill(n: int, byte: bytes = b"x"):
    return lambda tmp: (tmp / "data.bin").write_bytes(byte * n)


def _entries(root: Path):
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


@pytest.fixture
def counting_dlib(monkeypatch):
    """Counts the frames the real dlib detector is asked to look at."""
    seen = {"frames": 0}
    real = DlibHOGDetector.detect

    def detect(self, frames):
        seen["frames"] += len(frames) if np.ndim(frames) == 4 else 1
        return real(self, frames)

    monkeypatch.setattr(DlibHOGDetector, "detect", detect)
    return seen


# -- the cache -------------------------------------------------------------------------------
def test_same_content_at_two_paths_is_one_entry(tmp_path):
    a = tmp_path / "upload-1" / "face.mp4"
    a.parent.mkdir()
    a.write_bytes(b"same bytes" * 100)
    b = Path(shutil.copy(a, tmp_path / "face-copy.mp4"))
    os.utime(b, ns=(1, 1))  # other path, other times: same content
    assert content_key(a, res=32, crop=(0, 10)) == content_key(b, res=32, crop=(0, 10))
    assert content_key(a, res=32) != content_key(a, res=64)
    (tmp_path / "other.mp4").write_bytes(b"other bytes" * 100)
    assert content_key(tmp_path / "other.mp4", res=32) != content_key(a, res=32)

    cache = DiskCache(tmp_path / "cache", 1 << 20)
    for path in (a, b):
        key = content_key(path, res=32)
        if cache.get(key) is None:
            cache.put(key, _fill(10))
    assert cache.usage().entries == 1 and cache.usage().bytes == 10


def test_lru_eviction_by_size_keeps_the_most_recently_used(tmp_path):
    cache = DiskCache(tmp_path / "c", 2500)
    for key in ("a", "b"):
        cache.put(key, _fill(1000))
    assert cache.get("a") is not None  # a is now newer than b
    cache.put("c", _fill(1000))         # 3000 > 2500: the least recently used (b) goes
    assert _entries(cache.root) == ["a", "c"]
    assert cache.usage().bytes == 2000 <= cache.max_bytes
    cache.put("big", _fill(4000))       # bigger than the bound: stays, everything else goes
    assert _entries(cache.root) == ["big"] and cache.get("b") is None
    cache.clear()
    assert cache.usage().entries == 0 and list(cache.root.iterdir()) == []


def test_an_interrupted_build_leaves_no_entry_and_stale_leftovers_go(tmp_path):
    cache = DiskCache(tmp_path / "c", 1 << 20)

    def broken(tmp):
        (tmp / "half.bin").write_bytes(b"half")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        cache.put("k", broken)
    assert cache.get("k") is None and list(cache.root.iterdir()) == []
    old = cache.root / ".tmp-k-dead"      # a killed writer's leftover, long untouched
    old.mkdir()
    (old / "half.bin").write_bytes(b"half")
    for p in (old / "half.bin", old):
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    live = cache.root / ".tmp-j-live"     # a writer that is still at it
    live.mkdir()
    cache.put("k", _fill(3))
    assert not old.exists() and live.exists() and _entries(cache.root) == ["k"]
    # an unreadable entry is a miss and is dropped
    assert cache.read("k", lambda e: (e / "missing.npz").read_bytes()) is None
    assert cache.get("k") is None


def test_cache_bound_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LADTALK_CROP_CACHE_MB", "1.5")
    assert cache_limit("LADTALK_CROP_CACHE_MB", 2048) == int(1.5 * (1 << 20))
    monkeypatch.setenv("LADTALK_CROP_CACHE_MB", "lots")
    with pytest.raises(InputError, match="LADTALK_CROP_CACHE_MB='lots'.*MB"):
        cache_limit("LADTALK_CROP_CACHE_MB", 2048)
    off = DiskCache(tmp_path / "off", 0)
    assert off.put("k", _fill(5)) is None and not off.root.exists()


# -- the crop cache and the track cache ------------------------------------------------------
def test_crops_of_a_copy_at_another_path_come_from_the_cache(tmp_path, counting_dlib):
    from ladtalk.face.video_crops import crop_cache, extract_crops
    (tmp_path / "upload-a").mkdir()
    first_path = make_face_video(tmp_path / "upload-a" / "face.mp4", 12)
    first = extract_crops(first_path, 32, "dlib", max_frames=0)
    assert counting_dlib["frames"] == 12
    usage = crop_cache().usage()
    assert usage.entries == 2 and usage.bytes > first.crops.nbytes  # boxes + crops
    copy = Path(shutil.copy(first_path, tmp_path / "again.mp4"))
    counting_dlib["frames"] = 0
    again = extract_crops(copy, 32, "dlib", max_frames=0)
    assert counting_dlib["frames"] == 0 and crop_cache().usage() == usage
    for name in ("crops", "frame_indices", "boxes", "regions"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    # another size of the same video: no new detection (the boxes entry), one entry more
    other = extract_crops(copy, 48, "dlib", max_frames=0)
    assert counting_dlib["frames"] == 0 and other.resolution == 48
    assert crop_cache().usage().entries == 3


class _Recorder(VideoWriter):
    """The real video writer, keeping a copy of every frame it is given (pre-encode)."""

    frames: list = []

    def write(self, frames):
        _Recorder.frames.append(np.array(frames, copy=True))
        super().write(frames)


def test_a_second_run_on_a_copied_face_detects_nothing(tmp_path, monkeypatch, counting_dlib):
    import ladtalk.generation.runner as runner_mod
    from ladtalk.generation.pipeline import GenerateOptions, Pipeline
    from ladtalk.generation.track import track_cache
    monkeypatch.setattr(runner_mod, "VideoWriter", _Recorder)
    _Recorder.frames = []
    face = make_face_video(tmp_path / "face.mp4", 14, 10.0, no_face=(5, 6, 7, 8))
    wav = make_speech(tmp_path / "speech.wav", 1.4)
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=4)
    opts = GenerateOptions(detector="dlib", identity_check="off")
    first = pipe.run(face, wav, tmp_path / "a.mp4", opts)
    frames = np.concatenate(_Recorder.frames)
    assert counting_dlib["frames"] == 14 and track_cache().usage().entries == 1

    copy = Path(shutil.copy(face, tmp_path / "elsewhere.mp4"))
    counting_dlib["frames"], _Recorder.frames = 0, []
    again = pipe.run(copy, wav, tmp_path / "b.mp4", opts)
    assert counting_dlib["frames"] == 0 and track_cache().usage().entries == 1
    np.testing.assert_array_equal(np.concatenate(_Recorder.frames), frames)
    np.testing.assert_array_equal(again.track.boxes, first.track.boxes)
    assert again.track.face.path == str(copy.resolve())
    assert again.track.mismatch(again.track.key()) is None
    assert again.missing_face_timestamps == first.missing_face_timestamps
    assert len(again.warnings) == 1 and "elsewhere.mp4" in again.warnings[0]
    # other framing: a new entry, detected again
    pipe.run(copy, wav, tmp_path / "c.mp4", GenerateOptions(detector="dlib", smooth=False,
                                                            identity_check="off"))
    assert counting_dlib["frames"] == 14 and track_cache().usage().entries == 2


# -- free space ------------------------------------------------------------------------------
def test_check_free_space_refuses_a_nearly_full_disk(monkeypatch, tmp_path):
    mb = 1 << 20
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10_000 * mb, 9_880 * mb, 120 * mb))
    store = tmp_path / "home" / "identities"  # not created yet: its disk is asked
    with pytest.raises(InputError) as err:
        check_free_space(store, 500 * mb, "the identity store", "enrolling")
    msg = str(err.value)
    assert "the disk holding the identity store has 120 MB free; enrolling needs about" in msg
    assert str(tmp_path) not in msg and "LADTALK_HOME" in msg
    with pytest.raises(InputError, match="this step needs about 129 MB"):  # + the margin
        check_free_space(store, 1 * mb, "the identity store")
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10_000 * mb, 8_000 * mb, 2_000 * mb))
    check_free_space(store, 500 * mb, "the identity store")  # enough: no error
    assert not store.exists()


def test_enroll_checks_free_space_before_training(monkeypatch, tmp_path):
    from ladtalk.enrollment.enroll import enroll
    from ladtalk.identities.store import store_path
    video = make_face_video(tmp_path / "v.mp4", 12)
    mb = 1 << 20
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10_000 * mb, 9_900 * mb, 100 * mb))
    with pytest.raises(InputError, match="identity store has 100 MB free; enrolling"):
        enroll(video, "full", seconds=5, config="tiny", detector="dlib", device="cpu",
               show_progress=False)
    assert not store_path("full").exists()


# -- the app's temp space --------------------------------------------------------------------
def test_call_dir_is_removed_on_error_and_on_cancel(tmp_path):
    space = TempSpace(tmp_path / "space")
    seen = []
    for exc in (ValueError("bad input"), asyncio.CancelledError(), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with space.call_dir("session-1", "gen") as d:
                (d / "out.mp4").write_bytes(b"partial")
                seen.append(d)
                raise exc
    assert seen and not any(d.exists() for d in seen)

    def streaming_handler():  # a Gradio generator handler the client abandons
        with space.call_dir("session-1", "enroll") as d:
            seen.append(d)
            (d / "weights.safetensors").write_bytes(b"w")
            yield "progress"
            yield "more"

    gen = streaming_handler()
    next(gen)
    assert seen[-1].is_dir()
    gen.close()  # GeneratorExit inside the with block
    assert not seen[-1].exists()

    async def cancelled_task():
        with space.call_dir("session-2", "rob") as d:
            seen.append(d)
            await asyncio.sleep(30)

    async def main():
        task = asyncio.ensure_future(cancelled_task())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not seen[-1].exists() and space.usage().files == 0


def test_call_dir_kept_on_success_then_pruned_and_sessions_end(tmp_path):
    space = TempSpace(tmp_path / "space", ttl_seconds=3600, grace_seconds=600)
    with space.call_dir("alice", "gen") as ok:
        (ok / "out.mp4").write_bytes(b"video")
    assert ok.is_dir() and ok.parent.name == session_key("alice")  # Gradio copies it now
    assert space.usage().files == 1 and space.usage().bytes == 5
    with space.call_dir("alice", "gen") as running:
        assert space.prune(now=time.time() + 700) == [ok]   # past the grace: gone
        assert space.prune(now=time.time() + 10 ** 6) == []  # a running call stays
        assert running.is_dir()
    with space.call_dir("bob", "rob") as bob:
        (bob / "crop.png").write_bytes(b"png")
    space.end_session("alice")
    assert not (space.root / session_key("alice")).exists() and bob.is_dir()
    # a session idle past the ttl goes whole
    space.prune(now=time.time() + 3700)
    assert not (space.root / session_key("bob")).exists()
    # a call still running when its session ends loses its folder when it finishes
    with space.call_dir("carol", "enroll") as late:
        space.end_session("carol")
        (late / "weights").write_bytes(b"w")
    assert not (space.root / session_key("carol")).exists()
    space.close()
    assert not space.root.exists()


def test_sweep_stale_temp_removes_only_what_no_live_process_owns(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        roots = {name: tmp_path / name for name in (
            f"ladtalk-app-{dead.pid}-aaaa", f"ladtalk-app-{alive.pid}-bbbb",
            f"ladtalk-app-{os.getpid()}-cccc")}  # our pid, but no TempSpace of ours: stale
        for r in roots.values():
            (r / "session").mkdir(parents=True)
            (r / "session" / "f.mp4").write_bytes(b"f")
        mine = TempSpace(tmp_path / f"ladtalk-app-{os.getpid()}-dddd")
        with mine.call_dir("s", "gen") as d:
            (d / "out.mp4").write_bytes(b"o")
        old, new = tmp_path / "ladtalk-gen-old", tmp_path / "ladtalk-rob-new"
        for legacy in (old, new, tmp_path / "unrelated"):
            legacy.mkdir()
            (legacy / "x").write_bytes(b"x")
        for p in (old / "x", old):
            os.utime(p, (time.time() - 3600, time.time() - 3600))
        removed = set(sweep_stale_temp(tmp_path))
        assert removed == {roots[f"ladtalk-app-{dead.pid}-aaaa"], old,
                           roots[f"ladtalk-app-{os.getpid()}-cccc"]}
        assert mine.root.is_dir() and new.is_dir() and (tmp_path / "unrelated").is_dir()
        assert roots[f"ladtalk-app-{alive.pid}-bbbb"].is_dir()
        mine.close()
    finally:
        alive.kill()
        alive.wait()


# -- the identity store ----------------------------------------------------------------------
def _save_tiny_identity(target: Path, seed: int) -> None:
    from pipeline_helpers import tiny_sovqae
    with atomic_dir(target) as tmp:
        tiny_sovqae(32, seed=seed).save_pretrained(tmp)


def test_sweep_store_restores_a_cut_swap_and_removes_leftovers(tmp_path):
    from ladtalk.identities.store import is_identity_dir, resolve_identity, sweep_store
    store = tmp_path / "identities"
    _save_tiny_identity(store / "katie", 0)
    _save_tiny_identity(store / "bob", 1)
    before = (store / "katie" / "model.safetensors").read_bytes()
    os.replace(store / "katie", store / ".old-katie-1a2b3c4d")  # cut between the two renames
    (store / ".old-bob-99999999").mkdir()                        # bob made it: a stale copy
    (store / ".tmp-bob-x1y2").mkdir()
    (store / "bob" / ".tmp-meta.json-abc").write_text("{")
    removed = sweep_store(store)
    assert sorted(p.name for p in removed) == [".old-bob-99999999", ".tmp-bob-x1y2",
                                               ".tmp-meta.json-abc"]
    assert sorted(p.name for p in store.iterdir()) == ["bob", "katie"]
    assert (store / "katie" / "model.safetensors").read_bytes() == before
    assert is_identity_dir(store / "bob") and sweep_store(store) == []
    assert sweep_store(tmp_path / "nowhere") == []
    assert resolve_identity(str(store / "katie")) == store / "katie"


_CHILD = r"""
import sys, time
from pathlib import Path
import torch
import ladtalk.enrollment.loop as loop
from ladtalk.enrollment.config import TrainConfig
from ladtalk.enrollment.trainer import Trainer
from ladtalk.identities.meta import IdentityMeta
from ladtalk.identities.store import store_path
from ladtalk.models.sovqae import SOVQAE, get_config

marker = Path(sys.argv[1])
real_write_json = loop.write_json
def blocking_write_json(path, obj, **kw):  # weights and trainer state are written by now
    real_write_json(path, obj, **kw)
    marker.write_text("in the save")
    time.sleep(120)
loop.write_json = blocking_write_json
torch.manual_seed(7)
model = SOVQAE(get_config("tiny", resolution=32, attn_resolutions=()))
trainer = Trainer(model, TrainConfig(), torch.device("cpu"))
loop.save_identity(store_path("katie"), trainer, None, IdentityMeta(name="katie"))
"""


def test_a_kill_during_save_leaves_nothing_after_the_sweep(tmp_path):
    """SIGKILL a process in the middle of the real save step (``save_identity``)."""
    from ladtalk.identities.store import is_identity_dir, resolve_identity, store_path, sweep_store
    from ladtalk.models.sovqae import SOVQAE
    target = store_path("katie")
    _save_tiny_identity(target, 0)
    before = {f.name: f.read_bytes() for f in target.iterdir()}
    marker = tmp_path / "saving"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(marker)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.stdout.read().decode() if proc.poll() is not None else ""
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = target.parent
    leftovers = [p.name for p in store.iterdir() if p.name.startswith(".tmp-katie-")]
    assert leftovers, "the kill should have cut the save inside its temp folder"
    assert dir_bytes(store / leftovers[0]) > 0
    removed = sweep_store()
    assert [p.name for p in removed] == leftovers
    assert sorted(p.name for p in store.iterdir()) == ["katie"]
    assert {f.name: f.read_bytes() for f in target.iterdir()} == before
    assert resolve_identity("katie") == target and is_identity_dir(target)
    assert SOVQAE.from_pretrained(target).config.resolution == 32


def test_no_cache_detects_again_and_keeps_nothing(tmp_path, counting_dlib, caplog):
    """``--no-cache`` (``GenerateOptions.track_cache=False``): the cached track is not read
    and a new one is not stored; the frames are the same as with the cache."""
    from ladtalk.generation.pipeline import GenerateOptions, Pipeline
    from ladtalk.generation.track import track_cache
    face = make_face_video(tmp_path / "face.mp4", 14, 10.0)
    wav = make_speech(tmp_path / "speech.wav", 1.4)
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=4)
    off = GenerateOptions(detector="dlib", identity_check="off", track_cache=False)
    pipe.run(face, wav, tmp_path / "a.mp4", off)
    assert counting_dlib["frames"] == 14 and track_cache().usage().entries == 0
    on = GenerateOptions(detector="dlib", identity_check="off")
    first = pipe.run(face, wav, tmp_path / "b.mp4", on)
    assert counting_dlib["frames"] == 28 and track_cache().usage().entries == 1
    again = pipe.run(face, wav, tmp_path / "c.mp4", off)
    assert counting_dlib["frames"] == 42 and track_cache().usage().entries == 1
    np.testing.assert_array_equal(again.track.boxes, first.track.boxes)
    # a corrupt entry (a crash, a full disk, an edit) is discarded with a warning, not trusted
    (entry,) = [p for p in track_cache().root.iterdir() if not p.name.startswith(".")]
    (entry / "track.json").write_text('{"version": 1, "boxes": [[1, 2')
    with caplog.at_level("WARNING"):
        fixed = pipe.run(face, wav, tmp_path / "d.mp4", on)
    assert "ignoring unreadable cache entry" in caplog.text
    assert counting_dlib["frames"] == 56 and track_cache().usage().entries == 1
    np.testing.assert_array_equal(fixed.track.boxes, first.track.boxes)
