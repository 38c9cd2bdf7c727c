"""``python -m ladtalk batch``: rows checked up front, one set of models, failures isolated,
resume after a kill, and sharding over two ``torchrun`` processes (gloo, CPU)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import (
    FACE_BOX,
    CountingDetector,
    StubGenerator,
    decode,
    make_face_video,
    make_speech,
    write_png,
    write_wav,
    write_wav2lip_checkpoint,
)

from ladtalk.batch import JobDefaults, Manifest, read_jobs, run_batch
from ladtalk.generation.pipeline import GenerateOptions, Pipeline

ROOT = Path(__file__).resolve().parents[1]
BOX = " ".join(map(str, FACE_BOX))


def _write_csv(path: Path, rows, columns=("face", "audio", "out", "identity", "box")) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            w.writerow(r)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch_media")
    face = make_face_video(d / "face.mp4", 14, 10.0)
    audios = [make_speech(d / f"speech{i}.wav", 1.0 + 0.2 * i, seed=i) for i in range(3)]
    silent = write_wav(d / "silent.wav", np.zeros(16000, np.float32))
    return {"dir": d, "face": face, "audios": audios, "silent": silent}


@pytest.fixture(scope="module")
def wav2lip_ckpt(tmp_path_factory):
    return write_wav2lip_checkpoint(tmp_path_factory.mktemp("w2l") / "w2l.safetensors")


def test_bad_rows_are_listed_up_front(media, tmp_path, capsys):
    """Every bad row with every problem, before any model work; --strict stops there."""
    from ladtalk.cli import main
    d = media["dir"]
    img = write_png(tmp_path / "still.png", np.zeros((32, 32, 3), np.uint8))
    rows = [
        [media["face"], media["audios"][0], "good.mp4", "none", ""],
        [d / "missing.mp4", media["audios"][0], "a.mp4", "none", ""],       # no face file
        [media["face"], img, "b.mp4", "none", ""],                           # no audio stream
        [media["face"], media["audios"][1], "c.mp4", "nobody", ""],          # no identity
        [media["face"], media["audios"][1], "good.mp4", "none", ""],         # duplicate out
        [media["face"], media["audios"][1], "../up.mp4", "none", "1 2 3"],   # two problems
        [media["face"], media["audios"][2], "", "", ""],                     # no identity cell
    ]
    jobs_file = _write_csv(tmp_path / "jobs.csv", rows)
    jobs, bad = read_jobs(jobs_file)
    assert [j.name for j in jobs] == ["good.mp4"]
    by_line = {b.line: b for b in bad}
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8]
    assert "does not exist" in by_line[3].problems[0]
    assert "no audio stream" in by_line[4].problems[0]
    assert "identity" in by_line[5].problems[0] and "nobody" in by_line[5].problems[0]
    assert "already written by line 2" in by_line[6].problems[0]
    assert len(by_line[7].problems) == 2 and "box" in by_line[7].problems[0]
    assert "plain file name" in by_line[7].problems[1]
    assert "no identity" in by_line[8].problems[0]
    # the command's --identity fills empty identity cells
    jobs, bad = read_jobs(jobs_file, JobDefaults(identity="none"))
    assert "good.mp4" in [j.name for j in jobs] and 8 not in {b.line for b in bad}
    # --strict: exit 2 before any model is loaded (the checkpoint does not even exist)
    out = tmp_path / "out"
    code = main(["batch", str(jobs_file), "--out-dir", str(out), "--strict",
                 "--wav2lip", str(tmp_path / "no-such-checkpoint.safetensors"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "6 bad row(s)" in err and "line 5" in err and "checkpoint" not in err
    assert not out.exists()
    # without --strict the good row would run, but Wav2Lip cannot load: the batch stops with
    # the checkpoint's error (not one failure per job), and no job is recorded
    code = main(["batch", str(jobs_file), "--out-dir", str(out),
                 "--wav2lip", str(tmp_path / "no-such-checkpoint.safetensors"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-checkpoint" in err
    assert not list(out.glob(".ladtalk-batch/jobs/*.json"))
    # not a batch file at all: one clear error
    (tmp_path / "jobs.txt").write_text("face,audio\n")
    assert main(["batch", str(tmp_path / "jobs.txt"), "--out-dir", str(out)]) == 2
    assert ".csv" in capsys.readouterr().err


def test_batch_detects_once_isolates_a_failure_and_resumes(media, tmp_path):
    """3 audios on one face + one job that fails while running: the face is detected once,
    the failure is recorded and the rest goes on; a re-run redoes only the failed job."""
    jobs_file = tmp_path / "jobs.jsonl"
    rows = [{"face": str(media["face"]), "audio": str(a), "identity": "none",
             "detector": "dlib"} for a in media["audios"]]
    rows.insert(1, {"face": str(media["face"]), "audio": str(media["silent"]),
                    "out": "silent.mp4", "identity": "none", "detector": "dlib"})
    jobs_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    jobs, bad = read_jobs(jobs_file, JobDefaults(options=GenerateOptions(track_cache=False)))
    assert len(jobs) == 4 and not bad
    det = CountingDetector()
    pipe = Pipeline(StubGenerator(), device="cpu", batch_size=4, detector=det)
    events = []
    out = tmp_path / "out"
    report = run_batch(jobs, bad, out, pipe, progress=events.append)
    assert report.counts() == {"done": 3, "skipped": 0, "failed": 1, "invalid": 0}
    assert not report.ok and det.frames == 14  # one detection for all three audios
    failed = [r for r in report.jobs if r.status == "failed"][0]
    assert failed.name == "silent.mp4" and "silent" in failed.error.lower()
    for r in report.jobs:
        if r.status == "done":
            assert len(decode(out / r.name)) == r.frames > 0
    assert [e.kind for e in events if e.kind != "frames"] == ["job", "end"] * 4
    paths = report.write(out)
    table = list(csv.DictReader(open(paths[1])))
    assert [t["status"] for t in table] == ["done", "failed", "done", "done"]
    assert json.loads(paths[0].read_text())["counts"]["failed"] == 1
    # a re-run: the three complete jobs are skipped, the failed one is tried again
    det.frames = 0
    again = run_batch(jobs, bad, out, pipe)
    assert [r.status for r in again.jobs] == ["skipped", "failed", "skipped", "skipped"]
    assert det.frames == 0  # the silent job fails on its audio, before detection
    # a changed input makes its output stale: that job alone runs again
    st = media["audios"][0].stat()
    os.utime(media["audios"][0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    jobs2, _ = read_jobs(jobs_file, JobDefaults(options=GenerateOptions(track_cache=False)))
    third = run_batch(jobs2, [], out, pipe)
    assert [r.status for r in third.jobs] == ["done", "failed", "skipped", "skipped"]


def _cli_env(home: Path) -> dict:
    env = {**os.environ, "LADTALK_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _jobs_for_cli(media, path: Path, n: int, box: str = BOX) -> Path:
    rows = [[media["face"], media["audios"][i % 3], f"job{i}.mp4", "none", box]
            for i in range(n)]
    return _write_csv(path, rows)


@pytest.mark.slow
def test_torchrun_two_processes_shard_the_jobs(media, wav2lip_ckpt, tmp_path):
    """``torchrun --nproc-per-node 2 -m ladtalk batch``: each job done once, by one of the
    two ranks, one merged report, and the shared face detected once for both ranks (tracks
    exchanged, the disk cache off)."""
    jobs = _jobs_for_cli(media, tmp_path / "jobs.csv", 5, box="")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--standalone", "-m", "ladtalk", "batch", str(jobs), "--out-dir", str(out),
           "--wav2lip", str(wav2lip_ckpt), "--device", "cpu", "--backend", "torch",
           "--precision", "fp32", "--batch-size", "8", "--detector", "dlib", "--no-cache",
           "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_cli_env(tmp_path / "home"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "batch-results.json").read_text())
    assert report["world_size"] == 2 and report["ok"] and report["counts"]["done"] == 5
    names = [j["name"] for j in report["jobs"]]
    assert names == [f"job{i}.mp4" for i in range(5)]
    assert sorted(j["rank"] for j in report["jobs"]) == [0, 0, 0, 1, 1]
    assert report["track_seconds"] > 0  # one rank tracked the face ahead of the jobs...
    assert all(j["timings"]["detect"] == 0.0 for j in report["jobs"])  # ...no job detected
    for j in report["jobs"]:
        assert len(decode(out / j["name"])) == j["frames"]
        assert Manifest(out).read(j["name"]).rank == j["rank"]
    assert not list(out.glob(".tmp-*"))


@pytest.mark.slow
def test_a_killed_batch_resumes_without_redoing_complete_jobs(media, wav2lip_ckpt, tmp_path):
    """SIGKILL a real batch after its first job finished: no half-written output stays, and a
    re-run does the rest and skips the complete job."""
    jobs = _jobs_for_cli(media, tmp_path / "jobs.csv", 4)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ladtalk", "batch", str(jobs), "--out-dir", str(out),
           "--wav2lip", str(wav2lip_ckpt), "--device", "cpu", "--backend", "torch",
           "--precision", "fp32", "--batch-size", "8", "--quiet"]
    env = _cli_env(tmp_path / "home")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    records = out / ".ladtalk-batch" / "jobs"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if records.is_dir() and list(records.glob("*.json")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_first = {p.stem for p in records.glob("*.json")}
    assert done_first and len(done_first) < 4
    finished = {n: Manifest(out).read(n).finished for n in done_first}
    for p in out.glob("job*.mp4"):  # every output there is complete (renamed when encoded)
        assert len(decode(p)) > 0
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    report = json.loads((out / "batch-results.json").read_text())
    status = {j["name"]: j["status"] for j in report["jobs"]}
    assert {n for n, s in status.items() if s == "skipped"} == done_first
    assert {n for n, s in status.items() if s == "done"} == \
        {f"job{i}.mp4" for i in range(4)} - done_first
    for n in done_first:  # not redone
        assert Manifest(out).read(n).finished == finished[n]
    assert not list(out.glob(".tmp-*"))  # no half-written output
    assert not list((out / ".ladtalk-batch" / "tmp").iterdir())  # nor the killed call's temp
