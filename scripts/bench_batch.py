"""Batch dubbing against separate ``generate`` calls, on real clips, whole processes.

One face video with three speech tracks (plus one bad row for the batch), Wav2Lip only,
dlib detection (S3FD's weights are not downloadable here):

* ``3 x generate --no-cache``: three processes, each detects the face;
* ``3 x generate``: three processes sharing the face-track cache (the first detects, the
  second and third read the track: "a second generate on the same video with another audio");
* ``batch``: one process for the 4-row file (models loaded once, face detected once);
* ``torchrun --nproc-per-node 2 batch``: the same file on two ranks (gloo, one thread each).

Runs alternate over ``--repeats`` rounds; medians are printed as a Markdown table and, with
``--json``, written to a file. Random Wav2Lip weights (speed does not depend on the values).

    python scripts/bench_batch.py --repeats 2 --json batch_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FACE = "sadtalker_WDA_AlexandriaOcasioCortez_000_25fps.mp4"
AUDIOS = ("sadtalker_RD_Radio31_000.wav", "retalking_audio1.wav", "sadtalker_deyu.wav")


def _checkpoint(tmp: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from ladtalk.models.wav2lip import Wav2Lip
    torch.manual_seed(0)
    path = tmp / "w2l.safetensors"
    save_file({k: v.contiguous() for k, v in Wav2Lip().state_dict().items()}, str(path))
    return path


def _timed(cmd, env) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # the batch exits 1 for its bad row
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def _detect_seconds(out_dir: Path) -> list:
    report = json.loads((out_dir / "batch-results.json").read_text())
    return [round(j["timings"].get("detect", 0.0), 2) for j in report["jobs"]
            if j["status"] == "done"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    home = tmp / "home"
    env = {**os.environ, "LADTALK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    ckpt = _checkpoint(tmp)
    face = args.data / FACE
    audios = [args.data / a for a in AUDIOS]
    jobs = tmp / "jobs.csv"
    rows = [f"{face},{a},dub{i}.mp4,none" for i, a in enumerate(audios)]
    rows.append(f"{args.data / 'no_such_face.mp4'},{audios[0]},bad.mp4,none")
    jobs.write_text("face,audio,out,identity\n" + "\n".join(rows) + "\n")
    common = ["--wav2lip", str(ckpt), "--detector", "dlib", "--quiet"]
    py = [sys.executable, "-m", "ladtalk"]
    tracks = home / "cache" / "tracks"

    def separate(no_cache: bool) -> float:
        shutil.rmtree(tracks, ignore_errors=True)
        extra = ["--no-cache"] if no_cache else []
        calls = [_timed(py + ["generate", "--face", str(face), "--audio", str(a), "--out",
                              str(tmp / f"sep{i}.mp4"), "--no-enhance", *common, *extra], env)
                 for i, a in enumerate(audios)]
        per_call["no_cache" if no_cache else "cached"].append(calls)
        return sum(calls)

    def second_call() -> float:  # the track of this face is in the cache: another audio
        return _timed(py + ["generate", "--face", str(face), "--audio", str(audios[1]), "--out",
                            str(tmp / "second.mp4"), "--no-enhance", *common], env)

    def batch(nproc: int) -> float:
        shutil.rmtree(tracks, ignore_errors=True)
        out = tmp / f"batch{nproc}"
        shutil.rmtree(out, ignore_errors=True)
        launch = py if nproc == 1 else [sys.executable, "-m", "torch.distributed.run",
                                        "--standalone", "--nproc-per-node", str(nproc), "-m",
                                        "ladtalk"]
        secs = _timed(launch + ["batch", str(jobs), "--out-dir", str(out), *common],
                      {**env, "OMP_NUM_THREADS": "1"} if nproc > 1 else env)
        detects[nproc] = _detect_seconds(out)
        return secs

    detects: dict = {}
    per_call: dict = {"no_cache": [], "cached": []}
    _timed(py + ["generate", "--face", str(face), "--audio", str(audios[0]), "--out",
                 str(tmp / "warm.mp4"), "--no-enhance", *common], env)  # runtime choice cached
    runs: dict = {k: [] for k in ("separate_no_cache", "separate_cached", "second_generate",
                                  "batch", "batch_torchrun2")}
    for _ in range(args.repeats):
        runs["separate_no_cache"].append(separate(True))
        runs["separate_cached"].append(separate(False))
        runs["second_generate"].append(second_call())
        runs["batch"].append(batch(1))
        runs["batch_torchrun2"].append(batch(2))
    med = {k: statistics.median(v) for k, v in runs.items()}
    base = med["separate_no_cache"]
    print(f"{FACE} + {', '.join(AUDIOS)} (Wav2Lip only, dlib), median of {args.repeats}:\n")
    print("| run | wall time | vs 3 separate generate --no-cache |")
    print("|---|---|---|")
    names = {"separate_no_cache": "3 x `generate --no-cache` (each detects)",
             "separate_cached": "3 x `generate` (track cache: 1 detection)",
             "batch": "`batch` (4 rows: 3 jobs + 1 bad row)",
             "batch_torchrun2": "`torchrun --nproc-per-node 2 -m ladtalk batch`"}
    for k, label in names.items():
        print(f"| {label} | {med[k]:.1f} s | {base / med[k]:.2f}x |")
    print(f"\nsecond `generate` on the same video with another audio (track from the cache): "
          f"{med['second_generate']:.1f} s")
    print(f"batch per-job detection seconds: {detects.get(1)}; torchrun: {detects.get(2)}")
    for k, calls in per_call.items():
        print(f"3 x generate ({k}) per call, last round: "
              + ", ".join(f"{c:.1f} s" for c in calls[-1]))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": med, "detect": detects,
                                         "per_call": per_call},
                                        indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
