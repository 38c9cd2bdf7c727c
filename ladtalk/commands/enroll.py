"""``python -m ladtalk enroll --video V --name NAME``: enroll an identity (SOVQAE fine-tuning).

Running it again with the same name continues training where it stopped; see
docs/enrollment.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Optional

from ladtalk._util.choices import DEFAULT_DETECTOR, DETECTORS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True,
                        help="video of the person talking (1-5 min, frontal face)")
    parser.add_argument("--name", required=True,
                        help="identity name: letters, digits, '_', '-', '.' (no slashes)")
    parser.add_argument("--seconds", type=float, default=None, metavar="BUDGET",
                        help="training time budget of this run in seconds (default: 600 for "
                             "the cpu config, 3600 for base); detection and evaluation come on top")
    parser.add_argument("--config", default=None, choices=None, metavar="NAME",
                        help="SOVQAE config: cpu (default on CPU), base (default on CUDA), tiny")
    parser.add_argument("--init", default=None, metavar="SPEC",
                        help="initialise a new identity from a checkpoint: taming .ckpt, "
                             "diffusers VQModel, SOVQAE directory, identity name, or hub ref")
    parser.add_argument("--resolution", type=int, default=None, metavar="PX",
                        help="identity crop side in px for a new identity (default for the cpu "
                             "config: 256 for faces of 200 px or more, else 128; the measured "
                             "face size decides)")
    parser.add_argument("--holdout", type=float, default=0.1,
                        help="fraction of frames at the END of the video never trained on "
                             "(default 0.1)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write the identity to DIR instead of the identity store")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTORS,
                        help="face detector (auto: S3FD when its weights are available, else dlib)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="training batch size (per process under torchrun: the effective "
                             "batch is this times the number of processes)")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N",
                        help="stop this run after N training steps even if --seconds is not "
                             "spent (for quick trials and reproducible runs)")
    parser.add_argument("--fresh", action="store_true",
                        help="start the identity over instead of continuing its training")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the resulting meta.json summary to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def quality_summary(quality: Optional[Dict[str, Any]]) -> str:
    """The held-out W (Wav2Lip proxy) vs L (LaDTalk) lines of an identity's quality record."""
    from ladtalk.evaluation.quality_report import QualityReport

    if not quality:
        return "quality: not measured (no held-out frames)"
    q = QualityReport.from_json(quality)
    lines = [f"LaDTalk vs Wav2Lip proxy on {q.frames} held-out frames (face "
             f"{q.face_px:.0f} px, identity {q.resolution} px; PSNR in the pasted region):"]
    for r in q.summary_rows():
        lines.append(f"  softened sigma {r.sigma:>3}: W {r.w_psnr:.2f} dB -> L "
                     f"{r.l_psnr:.2f} dB ({r.gain_db:+.2f}), sharpness "
                     f"{r.w_sharpness:.2f} -> {r.l_sharpness:.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Enroll; under ``torchrun`` every rank trains and rank 0 writes and reports."""
    from ladtalk._util import dist
    from ladtalk.errors import InputError

    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {args.max_steps}")
    try:
        code = _run(args, dist.context())
    except BaseException:
        dist.shutdown(barrier=False)
        raise
    dist.shutdown()
    return code


def _run(args: argparse.Namespace, ctx) -> int:
    from ladtalk._util.atomic import write_json
    from ladtalk.enrollment import enroll
    from ladtalk.identities.meta import load_meta

    overrides = {"max_steps": args.max_steps} if args.max_steps else None
    path = enroll(args.video, args.name, seconds=args.seconds, config=args.config, init=args.init,
                  holdout=args.holdout, out=args.out, detector=args.detector, device=args.device,
                  batch_size=args.batch_size, fresh=args.fresh,
                  show_progress=not args.quiet and ctx.is_main, resolution=args.resolution,
                  train_overrides=overrides)
    if not ctx.is_main:
        return 0
    meta = load_meta(path)
    print(f"identity '{args.name}' written to {path}")
    print(f"steps {meta.steps} (this run {meta.run_steps}), training "
          f"{meta.training_seconds:.0f} s, holdout PSNR "
          + (f"{meta.holdout_psnr:.2f} dB" if meta.holdout_psnr is not None else "n/a"))
    if meta.distributed and meta.distributed.get("world_size", 1) > 1:
        d = meta.distributed
        print(f"trained on {d['world_size']} processes ({d['backend']}): effective batch "
              f"{d['effective_batch']} ({d['per_rank_batch']} per process), lr {d['lr']:g}, "
              f"{meta.run_steps / max(meta.run_training_seconds, 1e-9):.2f} steps/s")
    for spec, r in meta.restoration.items():
        print(f"  {spec:>10}: degraded {r['psnr_degraded']:.2f} dB -> restored "
              f"{r['psnr_restored']:.2f} dB ({r['psnr_restored'] - r['psnr_degraded']:+.2f} dB)")
    if meta.fusion:
        print(f"restore strength (calibrated on the holdout): low "
              f"{meta.fusion['low_strength']:g}, high {meta.fusion['high_strength']:g}")
    print(quality_summary(meta.quality))
    if args.json:
        write_json(args.json, meta, sort_keys=True)
    sys.stdout.flush()
    return 0
