"""``python -m ladtalk robustness --identity NAME --video V --json OUT``: degrade, restore, measure.

Crops the face in V as enrollment does, degrades each crop (blur, noise, Wav2Lip-like
down-up), restores it through the identity's SOVQAE and writes PSNR / SSIM against the clean
crop plus the latent-denoising certificate. On the enrollment video only the held-out frames
are used by default. Without any --blur/--noise/--down flag: blur 2.0, noise 0.1, down 96.
See docs/robustness.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ladtalk._util.choices import CERTIFICATE_COSTS, DEFAULT_DETECTOR, DETECTORS
from ladtalk.errors import InputError

FULL = CERTIFICATE_COSTS["full"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--identity", required=True, metavar="NAME_OR_DIR",
                        help="identity name in the store, or an identity directory")
    parser.add_argument("--video", required=True, help="video with the person's face")
    parser.add_argument("--blur", type=float, action="append", default=None, metavar="SIGMA",
                        help="Gaussian blur sigma in pixels at the identity's resolution "
                             "(repeatable)")
    parser.add_argument("--noise", type=float, action="append", default=None, metavar="SIGMA",
                        help="Gaussian noise sigma on the [0, 1] pixel scale (repeatable)")
    parser.add_argument("--down", type=int, action="append", default=None, metavar="PX",
                        help="Wav2Lip-like down-up: area-downscale to PX and bicubic back "
                             "(repeatable; Wav2Lip works at 96)")
    parser.add_argument("--max-frames", type=int, default=200, metavar="N",
                        help="evaluate at most N frames, evenly spread (default 200; 0 = all)")
    parser.add_argument("--frames-from", default="auto", choices=("auto", "holdout", "all"),
                        help="holdout: only frames the identity never trained on (enrollment "
                             "video); all: every frame; auto (default): holdout when V is the "
                             "enrollment video, else all")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTORS,
                        help="face detector (auto: S3FD when its weights are available, else dlib)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="noise seed (frame i uses seed + i)")
    cert = parser.add_argument_group("certificate cost")
    cert.add_argument("--cert-faces", type=int, default=FULL.cert_faces,
                      help=f"faces used for the Lipschitz estimate (default {FULL.cert_faces})")
    cert.add_argument("--power-iters", type=int, default=FULL.power_iters,
                      help=f"power iterations per Jacobian (default {FULL.power_iters})")
    cert.add_argument("--positions", type=int, default=FULL.max_positions,
                      help="most sensitive latent positions per face for the per-position "
                           f"estimate (default {FULL.max_positions})")
    cert.add_argument("--no-layerwise", action="store_true",
                      help="skip the layer-wise Jacobian bound")
    cert.add_argument("--no-certificate", action="store_true", help="skip the certificate")
    parser.add_argument("--json", required=True, metavar="OUT", help="write the results here")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("max_frames", "cert_faces", "power_iters", "positions", "batch_size"):
        if getattr(args, name) < 0 or (name == "batch_size" and args.batch_size < 1):
            raise InputError(f"--{name.replace('_', '-')} must be positive, got "
                             f"{getattr(args, name)}")


def _json_dir(path: str) -> None:
    """Create the folder of --json (before the slow part, so a bad path fails at once)."""
    out_dir = Path(path).expanduser().resolve().parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder {out_dir} for --json ({exc})") from None


def _print_summary(report, video: str, json_path: str) -> None:
    src = report.source
    print(f"{report.frames} frames ({src.frames_from}) of {video}, identity {src.identity} at "
          f"{report.resolution} px; reconstruction {report.reconstruction.psnr:.2f} dB")
    for spec, r in report.degradations.items():
        print(f"  {spec:>10}: PSNR {r.psnr_degraded:.2f} -> {r.psnr_restored:.2f} dB "
              f"({r.psnr_gain:+.2f}), SSIM {r.ssim_degraded:.3f} -> {r.ssim_restored:.3f}")
    cert = report.certificate
    if cert is not None:
        print(f"  certificate: d_C {cert.d_C:.4g}, gamma {cert.gamma:.4g}, L_enc "
              f"{cert.L_enc:.4g}, radius {cert.radius:.4g} "
              f"({'certified' if cert.certified else 'no certificate'})")
        for spec, v in cert.codes_preserved.items():
            print(f"    {spec:>10}: codes preserved {v:.3f}, certified "
                  f"{cert.certified_fraction[spec]:.3f}, ||N|| "
                  f"{cert.degradation_norms[spec]['mean']:.3g}")
    print(f"results written to {json_path}")


def run(args: argparse.Namespace) -> int:
    from ladtalk._util.atomic import write_json
    from ladtalk.analysis.degrade import resolve_specs
    from ladtalk.analysis.robustness import robustness_for_video
    from ladtalk.identities.store import identity_config, resolve_identity

    _check_numbers(args)
    ident_dir = resolve_identity(args.identity)
    _json_dir(args.json)
    cfg = identity_config(ident_dir)
    specs, notes = resolve_specs(cfg.resolution, args.blur, args.noise, args.down)

    def progress(phase: str, done: int, total: int) -> None:
        if not args.quiet:
            print(f"\r{phase}: {done}/{total}", end="", file=sys.stderr, flush=True)
            if done >= total:
                print(file=sys.stderr)

    report = robustness_for_video(
        ident_dir, args.video, specs, max_frames=args.max_frames or None,
        frames_from=args.frames_from, detector=args.detector, device=args.device,
        progress=progress, batch_size=args.batch_size, seed=args.seed,
        certificate=not args.no_certificate, cost=FULL, cert_faces=max(1, args.cert_faces),
        power_iters=args.power_iters, max_positions=max(1, args.positions),
        layerwise=not args.no_layerwise)
    report.notes.extend(notes)
    write_json(args.json, report.to_json(), sort_keys=True)
    _print_summary(report, args.video, args.json)
    return 0
