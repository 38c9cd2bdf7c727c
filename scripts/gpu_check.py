"""One prepared GPU check (at most about 8 minutes on one GPU): JSON + a Markdown table.

Run it through ``scripts/gpu_check.sh`` whenever a GPU machine is lent. It covers:

1. the CUDA-marked tests (``pytest -m cuda``);
2. ``generate`` frames/s on a 512x512 25 fps clip with a fixed box, Wav2Lip only and with a
   random-weight ``base`` identity at 256 px, in fp16 and bf16, ``torch.compile`` off and on;
   peak GPU memory of each;
3. ``base`` enrollment training steps/s at 256 px with AMP, and its peak GPU memory, plain
   and under DistributedDataParallel with one process (``torchrun --nproc-per-node 1``);
4. the measured per-frame GPU seconds next to the ZeroGPU duration estimate of
   ``ladtalk.app.limits`` (what the app asks ZeroGPU for).

Weights are random (speed does not depend on them); nothing is downloaded. The clip is made
from ``examples/astronaut.mp4`` (scaled to 512x512) so that the check needs nothing outside
the checkout. ``--device cpu --quick`` runs every step at toy sizes (the CI dry run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
BOX = (96, 416, 112, 400)  # the face in the 512x512 clip (y1, y2, x1, x2)


def _peak_memory(device) -> Optional[float]:
    import torch
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _reset_memory(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def make_clip(tmp: Path, seconds: float) -> Dict[str, Path]:
    """A 512x512 25 fps clip (astronaut.mp4 scaled and looped) and speech of ``seconds``."""
    import numpy as np
    import soundfile as sf

    from ladtalk.media.audio import SAMPLE_RATE, load_audio
    from ladtalk.media.ffmpeg import ffmpeg_exe
    face = tmp / "face512.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i",
                    str(ROOT / "examples" / "astronaut.mp4"), "-t", f"{seconds:.2f}",
                    "-vf", "scale=512:512", "-r", "25", "-an", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(face)], check=True)
    wav = load_audio(ROOT / "examples" / "demo_sentence.wav", SAMPLE_RATE)
    audio = tmp / "speech.wav"
    sf.write(str(audio), np.resize(wav, int(seconds * SAMPLE_RATE)), SAMPLE_RATE)
    return {"face": face, "audio": audio}


def make_models(tmp: Path, resolution: int) -> Dict[str, Path]:
    import torch
    from safetensors.torch import save_file

    from ladtalk.models.sovqae import SOVQAE, get_config
    from ladtalk.models.wav2lip import Wav2Lip
    torch.manual_seed(0)
    w2l = tmp / "wav2lip.safetensors"
    save_file({k: v.contiguous() for k, v in Wav2Lip().state_dict().items()}, str(w2l))
    ident = tmp / f"base_{resolution}"
    SOVQAE(get_config("base", resolution=resolution)).save_pretrained(ident)
    return {"wav2lip": w2l, "identity": ident, "resolution": resolution}


def run_tests(out: Path) -> Dict[str, Any]:
    """``pytest -m cuda``: counts from its JUnit XML (on a CPU they all skip)."""
    xml = out / "cuda_tests.xml"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p",
                           "no:cacheprovider", f"--junitxml={xml}", "tests/test_cuda.py"],
                          cwd=str(ROOT), capture_output=True, text=True)
    res: Dict[str, Any] = {"exit_status": proc.returncode,
                           "seconds": round(time.perf_counter() - t0, 1),
                           "tail": proc.stdout.strip().splitlines()[-3:]}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        for k in ("tests", "failures", "errors", "skipped"):
            res[k] = int(suite.get(k, 0))
    return res


def generate_runs(device, clip: Dict[str, Path], models: Dict[str, Any],
                  precisions: List[str], compiles: List[bool], tmp: Path) -> List[Dict[str, Any]]:
    from ladtalk.generation.pipeline import GenerateOptions, Pipeline
    runs = []
    for identity in (None, models["identity"]):
        for precision in precisions:
            for compile_ in compiles:
                _reset_memory(device)
                t0 = time.perf_counter()
                pipe = Pipeline(str(models["wav2lip"]), device=str(device), dtype=precision,
                                backend="torch", compile=compile_)
                out = tmp / f"out_{len(runs)}.mp4"
                res = pipe.run(clip["face"], clip["audio"], out, GenerateOptions(
                    box=BOX, identity=str(identity) if identity else None,
                    identity_check="off"))
                wall = time.perf_counter() - t0
                t = res.timings
                runs.append({
                    "mode": f"identity base {models['resolution']}" if identity else "wav2lip",
                    "precision": precision, "compile": compile_, "frames": res.n_frames,
                    "wall_s": round(wall, 2), "pipeline_s": round(t["total"], 2),
                    "load_s": round(t.get("load", 0.0), 2),
                    "fps_end_to_end": round(res.n_frames / t["total"], 1),
                    "fps_generate": round(res.n_frames / max(t["generate"], 1e-9), 1),
                    "stage_fps": {k: round(v, 1) for k, v in res.stage_fps().items()},
                    "peak_gpu_mb": _peak_memory(device), "runtime": res.runtime})
                print(f"  generate {runs[-1]['mode']:>17} {precision} compile={compile_}: "
                      f"{runs[-1]['fps_end_to_end']} fps", flush=True)
                out.unlink(missing_ok=True)
    return runs


def ddp_enroll_steps(device, resolution: int, steps: int, config: str) -> Dict[str, Any]:
    """The same trainer under DistributedDataParallel in a process group of one (NCCL on
    CUDA, gloo on a CPU), as ``torchrun --nproc-per-node 1`` would give it: the DDP cost."""
    import socket

    import torch
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                         rank=0, world_size=1)
    try:
        return {**enroll_steps(device, resolution, steps, config), "ddp_world_size": 1}
    finally:
        torch.distributed.destroy_process_group()
        for var in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
            os.environ.pop(var, None)


def enroll_steps(device, resolution: int, steps: int, config: str) -> Dict[str, Any]:
    """Training steps/s of the SOVQAE + PatchGAN trainer (AMP on CUDA), random crops; under
    DDP when a process group is up (:func:`ddp_enroll_steps`)."""
    import numpy as np
    import torch

    from ladtalk.enrollment.data import CropSampler
    from ladtalk.enrollment.plan import resolve_train_config
    from ladtalk.enrollment.trainer import Trainer
    from ladtalk.models.sovqae import SOVQAE, get_config
    torch.manual_seed(0)
    model = SOVQAE(get_config(config, resolution=resolution))
    cfg = resolve_train_config(config, resolution, None, perceptual_weight=0.0)
    crops = np.random.default_rng(0).integers(0, 256, (32, resolution, resolution, 3), np.uint8)
    sampler = CropSampler(crops, cfg.batch_size, seed=0)
    trainer = Trainer(model, cfg, device)  # wraps in DDP when a process group is up
    trainer.step(sampler, 0.0)  # warm-up (k-means init, kernel selection)
    _reset_memory(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for i in range(steps):
        trainer.step(sampler, (i + 1) / (steps + 1))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    return {"config": config, "resolution": resolution, "batch_size": cfg.batch_size,
            "amp": trainer.scaler is not None, "ddp": trainer.model_ddp is not trainer.model,
            "steps": steps,
            "steps_per_s": round(steps / dt, 3), "peak_gpu_mb": _peak_memory(device)}


def zerogpu_estimates(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Measured GPU seconds per output frame against ``generate_work_seconds``' constants."""
    from ladtalk.app.limits import generate_work_seconds
    out = {}
    for mode, enhance in (("wav2lip", False), ("identity", True)):
        mine = [r for r in runs if r["mode"].startswith(mode) and not r["compile"]]
        if not mine:
            continue
        best = min(mine, key=lambda r: r["pipeline_s"])
        n = best["frames"]
        out[mode] = {"measured_pipeline_s": best["pipeline_s"],
                     "measured_s_per_frame": round(best["pipeline_s"] / n, 5),
                     "app_estimate_s": round(generate_work_seconds(n, n, enhance, False), 1),
                     "frames": n, "precision": best["precision"]}
    return out


def _table(report: Dict[str, Any]) -> str:
    lines = ["| mode | precision | compile | frames | end-to-end fps | generate fps | load (s) "
             "| peak GPU MB |", "|---|---|---|---|---|---|---|---|"]
    for r in report["generate"]:
        lines.append(f"| {r['mode']} | {r['precision']} | {'on' if r['compile'] else 'off'} | "
                     f"{r['frames']} | {r['fps_end_to_end']} | {r['fps_generate']} | "
                     f"{r['load_s']} | {r['peak_gpu_mb'] or '-'} |")
    e = report["enroll"]
    lines.append("")
    lines.append(f"enrollment ({e['config']}, {e['resolution']} px, batch {e['batch_size']}, "
                 f"AMP {'on' if e['amp'] else 'off'}): {e['steps_per_s']} steps/s, peak GPU "
                 f"{e['peak_gpu_mb'] or '-'} MB")
    d = report.get("enroll_ddp")
    if d:
        lines.append(f"the same under DistributedDataParallel, 1 process: {d['steps_per_s']} "
                     f"steps/s, peak GPU {d['peak_gpu_mb'] or '-'} MB")
    t = report["tests"]
    lines.append(f"CUDA tests: {t.get('tests', '?')} run, {t.get('failures', '?')} failed, "
                 f"{t.get('errors', '?')} errors, {t.get('skipped', '?')} skipped "
                 f"(exit {t['exit_status']})")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="toy sizes (the CPU dry run)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    args = ap.parse_args(argv)
    import torch

    from ladtalk._util.device import resolve_device
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    report: Dict[str, Any] = {
        "device": str(device), "quick": args.quick, "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print("CUDA tests ...", flush=True)
    report["tests"] = run_tests(out)
    with tempfile.TemporaryDirectory(prefix="ladtalk-gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        seconds, res = (0.6, 32) if args.quick else (10.0, 256)
        clip, models = make_clip(tmp, seconds), make_models(tmp, res)
        precisions = ["fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
        compiles = [False] if args.quick else [False, True]
        print("generate ...", flush=True)
        report["generate"] = generate_runs(device, clip, models, precisions, compiles, tmp)
        report["compile_runs"] = "skipped (--quick)" if args.quick else "on and off"
    print("enrollment ...", flush=True)
    report["enroll"] = enroll_steps(device, 32 if args.quick else 256, 2 if args.quick else 40,
                                    "base")
    print("enrollment under DDP (1 process) ...", flush=True)
    report["enroll_ddp"] = ddp_enroll_steps(device, 32 if args.quick else 256,
                                            2 if args.quick else 40, "base")
    report["zerogpu"] = zerogpu_estimates(report["generate"])
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    table = _table(report)
    (out / "gpu_check.md").write_text(table + "\n")
    print(table)
    print(f"wrote {out / 'gpu_check.json'} ({report['seconds']} s)")
    failed = report["tests"].get("failures", 0) or report["tests"].get("errors", 0)
    return 1 if failed or report["tests"]["exit_status"] not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
