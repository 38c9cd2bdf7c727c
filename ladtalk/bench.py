"""``python -m ladtalk.bench``: throughput and peak memory of the generation pipeline.

Each requested length (seconds of audio, looped or cut) runs in a fresh subprocess, so each
peak RSS belongs to one run. It reports frames/s per stage and end to end, the real-time
factor, peak RSS of Python and of Python + ffmpeg, and the longest / shortest RSS ratio
(docs/performance.md). Without ``--wav2lip`` the generator has random weights: same speed and
memory, meaningless video.

``--no-enhance`` and ``--identity`` together run both modes (Wav2Lip only, then with the
identity). ``--identity random:256`` stands for a random-weight identity of the ``cpu``
config at 256 px (same speed as an enrolled one, meaningless faces).

Example::

    python -m ladtalk.bench --face face.mp4 --audio speech.wav --no-enhance \\
        --identity random:256 --detector dlib --lengths 10 60 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from ladtalk._util.atomic import write_json
from ladtalk._util.choices import (
    BACKENDS,
    CLI_IDENTITY_CHECK,
    DEFAULT_BACKEND,
    DEFAULT_DETECTOR,
    DEFAULT_LOOP,
    DEFAULT_PRECISION,
    DETECTORS,
    LOOP_POLICIES,
    PRECISIONS,
)

RANDOM_IDENTITY = "random:"  # --identity random:RES

STAGES = ("decode", "detect", "lipsync", "restore", "blend", "encode")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ladtalk.bench", description=__doc__.splitlines()[0])
    p.add_argument("--face", required=True, help="face video or photo")
    p.add_argument("--audio", required=True, help="speech; looped / cut to each --lengths")
    p.add_argument("--identity", help="identity name or directory (enhanced path), or "
                   "random:RES for a random-weight cpu-config identity at RES px")
    p.add_argument("--no-enhance", action="store_true",
                   help="Wav2Lip only (with --identity too: both modes)")
    p.add_argument("--wav2lip", default=None, metavar="CKPT",
                   help="Wav2Lip checkpoint (default: random weights, same speed)")
    p.add_argument("--box", type=float, nargs=4, metavar=("Y1", "Y2", "X1", "X2"))
    p.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTORS)
    p.add_argument("--lengths", type=float, nargs="+", default=[10.0, 60.0], metavar="SECONDS",
                   help="audio lengths to run, one fresh process each (default: 10 60)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None,
                   help="model threads (default: the pipeline's choice, 2 on CPU, 3 with an "
                        "identity on 2-3 cores)")
    p.add_argument("--device", default=None)
    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                   help="model arithmetic, as generate --precision (default: auto)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help="what runs the models, as generate --backend (default: auto)")
    p.add_argument("--compile", action="store_true", help="as generate --compile")
    p.add_argument("--track-cache", action="store_true",
                   help="let runs reuse the face-track cache (default: each run detects)")
    p.add_argument("--loop", default=DEFAULT_LOOP, choices=LOOP_POLICIES)
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the results here")
    p.add_argument("--keep-outputs", default=None, metavar="DIR",
                   help="keep the generated videos in DIR (default: discarded)")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_weights_note", default=None, help=argparse.SUPPRESS)
    return p


# --------------------------------------------------------------------------- child
def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class RssSampler:
    """Samples (every ``interval`` s) the resident memory of this process plus its direct
    children (the ffmpeg decoders / encoder) from ``/proc``, and keeps the peak of the sum.

    ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is not used for ffmpeg: it counts the forked
    copy of the Python process before ``exec``, so it reports the parent's size, not
    ffmpeg's. On systems without ``/proc`` the sampler reports zeros.
    """

    def __init__(self, interval: float = 0.05):
        import threading
        self.interval = interval
        self.peak_total_kib = 0
        self.peak_children_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _children(self) -> List[int]:
        me, out = os.getpid(), []
        try:
            names = os.listdir("/proc")
        except OSError:
            return out
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as fh:
                    stat = fh.read()
                if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                    out.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            kids = sum(_rss_kib(pid) for pid in self._children())
            self.peak_children_kib = max(self.peak_children_kib, kids)
            self.peak_total_kib = max(self.peak_total_kib, _rss_kib(os.getpid()) + kids)
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _child(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    import torch

    from ladtalk.generation.pipeline import DEFAULT_BATCH_SIZE, GenerateOptions, Pipeline
    weights = args._weights_note or str(args.wav2lip)
    bs = args.batch_size or DEFAULT_BATCH_SIZE
    # the checkpoint is loaded exactly as the CLI loads it (same memory footprint)
    pipe = Pipeline(args.wav2lip, device=args.device, dtype=args.precision, batch_size=bs,
                    workers=args.workers, backend=args.backend, compile=args.compile)
    opts = GenerateOptions(identity=None if args.no_enhance else args.identity,
                           detector=args.detector, box=tuple(args.box) if args.box else None,
                           loop=args.loop, batch_size=bs,
                           identity_check=CLI_IDENTITY_CHECK)  # as the CLI: never stops
    with RssSampler() as sampler:
        res = pipe.run(args.face, args.audio, args._out, opts)
    self_ru = resource.getrusage(resource.RUSAGE_SELF)
    child_ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = {
        "mode": "identity" if res.enhanced else "wav2lip",
        "frames": res.n_frames, "fps": res.fps, "duration_s": res.duration,
        "size": list(res.size), "enhanced": res.enhanced, "n_source_frames": res.n_source_frames,
        "timings_s": res.timings, "stage_fps": res.stage_fps(), "weights": weights,
        "batch_size": bs,
        "precision": res.precision, "backend": res.backend, "runtime": res.runtime,
        "device": str(pipe.device), "torch_threads": torch.get_num_threads(),
        "model_workers": list(pipe.worker_plan(res.enhanced)),
        "child_wall_s": time.perf_counter() - t_start,
        # ru_maxrss is KiB on Linux; "children" / "sum" are sampled from /proc (see RssSampler)
        "peak_rss_mb": {"self": self_ru.ru_maxrss / 1024,
                        "children": sampler.peak_children_kib / 1024,
                        "sum": max(sampler.peak_total_kib / 1024, self_ru.ru_maxrss / 1024)},
        "cpu_s": {"self": self_ru.ru_utime + self_ru.ru_stime,
                  "children": child_ru.ru_utime + child_ru.ru_stime},
        "warnings": res.warnings,
    }
    Path(args._child).write_text(json.dumps(out))
    return 0


# --------------------------------------------------------------------------- parent
RANDOM_WEIGHTS_NOTE = "random init (throughput-equivalent; output not meaningful)"


def _random_wav2lip(path: Path) -> Path:
    """Random (seed 0) Wav2Lip weights as a safetensors file, so the child loads a checkpoint
    exactly like the CLI does."""
    import torch
    from safetensors.torch import save_file

    from ladtalk.models.wav2lip import Wav2Lip
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in Wav2Lip().state_dict().items()}, str(path))
    return path


def _child_argv(args: argparse.Namespace, identity: Optional[str], audio: Path, out: Path,
                result: Path, wav2lip: str) -> List[str]:
    argv = [sys.executable, "-m", "ladtalk.bench", "--face", str(args.face),
            "--audio", str(audio), "--_out", str(out), "--_child", str(result),
            "--loop", args.loop, "--detector", args.detector, "--wav2lip", wav2lip]
    argv += ["--no-enhance"] if identity is None else ["--identity", identity]
    if not args.wav2lip:
        argv += ["--_weights_note", RANDOM_WEIGHTS_NOTE]
    if args.box:
        argv += ["--box", *[str(v) for v in args.box]]
    if args.batch_size:
        argv += ["--batch-size", str(args.batch_size)]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    if args.device:
        argv += ["--device", str(args.device)]
    argv += ["--precision", args.precision, "--backend", args.backend]
    return argv + (["--compile"] if args.compile else [])


def _random_identity(spec: str, folder: Path) -> Path:
    """A random-weight SOVQAE of the cpu config at the resolution ``random:RES`` names."""
    import torch

    from ladtalk.models.sovqae import SOVQAE, get_config
    try:
        res = int(spec[len(RANDOM_IDENTITY):])
    except ValueError:
        raise SystemExit(f"error: --identity {spec}: use random:RES, e.g. random:256") from None
    torch.manual_seed(0)
    path = folder / f"random_identity_{res}"
    SOVQAE(get_config("cpu", resolution=res)).save_pretrained(path)
    return path


def _summarise(length: float, child: dict, process_wall: float) -> dict:
    n = child["frames"]
    t = child["timings_s"]
    fps: Dict[str, float] = {s: child["stage_fps"][s] for s in STAGES
                             if s in child["stage_fps"]}
    fps["end_to_end"] = n / t["total"]
    fps["process"] = n / process_wall
    return {
        "mode": child["mode"], "length_s": length, "frames": n, "fps_video": child["fps"],
        "duration_s": child["duration_s"], "size": child["size"],
        "process_wall_s": process_wall, "pipeline_s": t["total"],
        "fps": fps, "realtime_factor": t["total"] / child["duration_s"],
        "peak_rss_mb": child["peak_rss_mb"], "cpu_s": child["cpu_s"],
        "timings_s": t, "batch_size": child["batch_size"],
        "model_workers_x_threads": child["model_workers"], "warnings": child["warnings"],
    }


def _print(report: dict) -> None:
    print(f"ladtalk bench: {report['face']} + {report['audio']}; weights: {report['weights']}; "
          f"device {report['device']}, {report['cpus']} CPUs, "
          f"load average at start {report['load_average_start']}")
    for stage, choice in (report.get("runtime") or {}).items():
        print(f"  {stage}: {choice['backend']} {choice['precision']} ({choice['how']})")
    head = (f"{'mode':>8} {'length':>7} {'frames':>6} {'wall':>7} {'e2e':>6} {'detect':>7} "
            f"{'lipsync':>7} {'restore':>7} {'blend':>7} {'encode':>7} {'RTF':>5} {'RSS py':>9} "
            f"{'py+ffmpeg':>10}")
    print(f"{'':>31}frames/s per stage")
    print(head)
    for r in report["runs"]:
        f = r["fps"]

        def c(k, f=f):
            return f"{f[k]:7.1f}" if k in f else f"{'-':>7}"
        print(f"{r['mode']:>8} {r['length_s']:6.1f}s {r['frames']:6d} {r['process_wall_s']:6.1f}s "
              f"{f['end_to_end']:6.1f} {c('detect')} {c('lipsync')} {c('restore')} "
              f"{c('blend')} {c('encode')} {r['realtime_factor']:5.2f} "
              f"{r['peak_rss_mb']['self']:7.0f}MB {r['peak_rss_mb']['sum']:8.0f}MB")
    for mode, ratio in (report.get("rss_ratio_longest_vs_shortest") or {}).items():
        print(f"peak RSS of {mode}, longest / shortest run: {ratio:.3f} (Python), "
              f"{report['rss_sum_ratio_longest_vs_shortest'][mode]:.3f} (Python + ffmpeg)")
    print("frames/s: output frames / seconds in the stage (stages overlap; detect: source "
          "frames); e2e: output frames / pipeline seconds, detection and loading included; "
          "wall: whole process; RTF: pipeline seconds / video seconds")


def _modes(args: argparse.Namespace, tmp: Path) -> List[Optional[str]]:
    """The identity of each mode to run (None: Wav2Lip only)."""
    modes: List[Optional[str]] = [None] if args.no_enhance else []
    if args.identity:
        ident = str(args.identity)
        if ident.startswith(RANDOM_IDENTITY):
            ident = str(_random_identity(ident, tmp))
        modes.append(ident)
    return modes


def _run_child(argv: List[str], result: Path, label: str, track_cache: bool) -> Optional[dict]:
    from ladtalk.generation.track import TRACK_CACHE_ENV
    env = dict(os.environ)
    if not track_cache:  # every run detects: detection is part of the measured time
        env[TRACK_CACHE_ENV] = "0"
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result.exists():
        print(proc.stderr, file=sys.stderr)
        print(f"error: the {label} run failed (exit status {proc.returncode})", file=sys.stderr)
        return None
    return {"child": json.loads(result.read_text()), "wall": wall}


def _rss_ratios(report: dict) -> None:
    for mode in {r["mode"] for r in report["runs"]}:
        runs = [r for r in report["runs"] if r["mode"] == mode]
        if len(runs) < 2:
            continue
        lo = min(runs, key=lambda r: r["length_s"])
        hi = max(runs, key=lambda r: r["length_s"])
        report.setdefault("rss_ratio_longest_vs_shortest", {})[mode] = (
            hi["peak_rss_mb"]["self"] / lo["peak_rss_mb"]["self"])
        report.setdefault("rss_sum_ratio_longest_vs_shortest", {})[mode] = (
            hi["peak_rss_mb"]["sum"] / lo["peak_rss_mb"]["sum"])


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args._child:
        return _child(args)
    if not args.no_enhance and not args.identity:
        build_parser().error("give --no-enhance, --identity, or both")
    import numpy as np
    import soundfile as sf

    from ladtalk.errors import LadTalkError
    from ladtalk.media.audio import SAMPLE_RATE, load_audio
    try:
        wav = load_audio(args.audio)
    except LadTalkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs, last = [], {}
    load_start = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="ladtalk-bench-") as tmp:
        tmpd = Path(tmp)
        wav2lip = str(args.wav2lip) if args.wav2lip else str(
            _random_wav2lip(tmpd / "random_wav2lip.safetensors"))
        keep = Path(args.keep_outputs) if args.keep_outputs else tmpd
        keep.mkdir(parents=True, exist_ok=True)
        for identity in _modes(args, tmpd):
            mode = "wav2lip" if identity is None else "identity"
            for length in args.lengths:
                audio = tmpd / f"audio_{length:g}s.wav"
                if not audio.exists():
                    n = max(1, int(round(length * SAMPLE_RATE)))
                    sf.write(str(audio), np.resize(wav, n), SAMPLE_RATE, subtype="FLOAT")
                out = keep / f"bench_{mode}_{length:g}s.mp4"
                result = tmpd / f"result_{mode}_{length:g}s.json"
                got = _run_child(_child_argv(args, identity, audio, out, result, wav2lip),
                                 result, f"{mode} {length:g} s", args.track_cache)
                if got is None:
                    return 1
                last = got["child"]
                runs.append(_summarise(length, last, got["wall"]))
    report = {
        "face": str(args.face), "audio": str(args.audio),
        "modes": sorted({r["mode"] for r in runs}), "identity": args.identity,
        "box": list(args.box) if args.box else None, "detector": args.detector,
        "weights": last.get("weights"), "device": last.get("device"),
        "precision": last.get("precision"), "backend": last.get("backend"),
        "runtime": last.get("runtime"), "cpus": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": [round(v, 2) for v in os.getloadavg()], "runs": runs,
    }
    _rss_ratios(report)
    _print(report)
    if args.json:
        target = write_json(args.json, report)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
