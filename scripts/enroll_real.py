"""Reproduce the real-video enrollment check: enroll on a real video, then score LaDTalk
against the Wav2Lip proxy (``eval quality``) and run robustness on the frames it never trained
on, and print the numbers.

Default: ``../shared/data/dfrf_cnn2.mp4`` (71 s CNN anchor, 25 fps). Enrollment holds out the
last 10 % of the frames (~7 s, by time); ``robustness`` recognises the enrollment video and
evaluates only those held-out frames (``--frames-from auto``).

Usage::

    python scripts/enroll_real.py [--video V] [--name cnn2] [--seconds S] [--config cpu]
                                  [--detector dlib] [--home DIR] [--json OUT]

``--seconds`` is the *training* budget; face detection / cropping (about a minute for 71 s of
512x512 video with dlib on 2 cores) and the final holdout evaluation come on top, so the
default keeps the whole ``enroll`` command within 15 minutes. ``--home`` sets LADTALK_HOME
(default: a fresh directory under /tmp, so the user's identity store is not touched).
Both steps run as the real CLI (``python -m ladtalk enroll`` / ``robustness``) in subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, env) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return time.time() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(ROOT.parent / "shared" / "data" / "dfrf_cnn2.mp4"))
    ap.add_argument("--name", default="cnn2")
    ap.add_argument("--seconds", type=float, default=None,
                    help="training budget (s; default: the config's, 735 s for cpu)")
    ap.add_argument("--config", default="cpu")
    ap.add_argument("--detector", default="dlib", choices=("auto", "s3fd", "dlib"))
    ap.add_argument("--home", default=None, help="LADTALK_HOME for this run")
    ap.add_argument("--json", default=None, help="write enroll + robustness numbers here")
    args = ap.parse_args(argv)

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="ladtalk-enroll-real-"))
    env = {**os.environ, "LADTALK_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    py = sys.executable
    rob_json = home / f"robustness_{args.name}.json"
    budget = ["--seconds", str(args.seconds)] if args.seconds else []
    t_enroll = _run([py, "-m", "ladtalk", "enroll", "--video", args.video, "--name", args.name,
                     *budget, "--config", args.config, "--detector",
                     args.detector, "--device", "cpu", "--fresh", "--quiet"], env)
    q_json = home / f"quality_{args.name}.json"
    t_q = _run([py, "-m", "ladtalk", "eval", "quality", "--identity", args.name, "--video",
                args.video, "--detector", args.detector, "--device", "cpu", "--json",
                str(q_json)], env)
    t_rob = _run([py, "-m", "ladtalk", "robustness", "--identity", args.name, "--video",
                  args.video, "--detector", args.detector, "--device", "cpu", "--max-frames", "0",
                  "--json", str(rob_json), "--quiet"], env)
    meta = json.loads((home / "identities" / args.name / "meta.json").read_text())
    rob = json.loads(rob_json.read_text())

    print()
    print(f"video {Path(args.video).name}: {meta['frames']['crops']} face crops, "
          f"{meta['frames']['train']} train / {meta['frames']['holdout']} held out (from "
          f"t = {meta['frames']['holdout_first_s']:.2f} s)")
    print(f"enroll: {t_enroll:.0f} s wall in total (crops {meta['crop_seconds']:.0f} s, training "
          f"{meta['training_seconds']:.0f} s, {meta['steps']} steps, evaluation "
          f"{meta['evaluation_seconds']:.0f} s); config {meta['config_name']}")
    quality = json.loads(q_json.read_text())
    print(f"eval quality ({t_q:.0f} s) on {quality['frames']} held-out frames (identity "
          f"{quality['resolution']} px, face {quality['face_px']:.0f} px, fusion "
          f"{quality['fusion']['low_strength']:g}/{quality['fusion']['high_strength']:g}):")
    for sigma, r in quality["soften"].items():
        print(f"  sigma {sigma:>3}: W {r['W']['psnr']:.2f} dB -> L {r['L']['psnr']:.2f} dB "
              f"({r['gain_db']:+.2f}); sharpness {r['W']['sharpness']:.3f} -> "
              f"{r['L']['sharpness']:.3f}; mouth {r['W']['mouth_psnr']:.2f} -> "
              f"{r['L']['mouth_psnr']:.2f}; sync MAD {r['sync']['mouth_mad_96']:.2f}")
    rec = rob.get("reconstruction", {})
    print(f"robustness ({t_rob:.0f} s) on {rob['frames']} held-out frames; clean reconstruction "
          f"PSNR {rec.get('psnr', float('nan')):.2f} dB, SSIM {rec.get('ssim', float('nan')):.4f}")
    print(f"{'degradation':>12} | {'PSNR deg':>8} {'PSNR res':>8} {'gain':>6} | "
          f"{'SSIM deg':>8} {'SSIM res':>8}")
    for spec, r in rob["degradations"].items():
        print(f"{spec:>12} | {r['psnr_degraded']:8.2f} {r['psnr_restored']:8.2f} "
              f"{r['psnr_restored'] - r['psnr_degraded']:+6.2f} | {r['ssim_degraded']:8.4f} "
              f"{r['ssim_restored']:8.4f}")
    cert = rob.get("certificate") or {}
    if cert:
        print("certificate: " + ", ".join(
            f"{k} {cert[k]:.4g}" for k in ("d_C", "d_C_used", "gamma", "gamma_p90", "L_enc",
                                           "radius", "radius_rms") if cert.get(k) is not None))
        print("codes preserved: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                              (cert.get("codes_preserved") or {}).items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"enroll_wall_seconds": t_enroll, "meta": meta,
                                               "quality": quality, "robustness": rob},
                                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
