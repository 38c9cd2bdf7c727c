"""``python -m ladtalk robustness --identity NAME --video V --json OUT``: degrade, restore, measure.

Crops the face in V exactly as enrollment does, at the identity's resolution; degrades each
crop (Gaussian blur, sigma in pixels at that resolution; Gaussian noise, sigma on the [0, 1]
pixel scale; "Wav2Lip-like" area-down to N px and bicubic back up), restores it through the
identity's SOVQAE and writes PSNR / SSIM of the degraded and the restored crop against the
clean one, plus the latent-denoising certificate (d_C, gamma, L_enc, certified radius, codes
preserved). On the enrollment video only the held-out frames are used by default.
Without any --blur/--noise/--down flag: blur 2.0, noise 0.1, down 96.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any


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
    parser.add_argument("--detector", default="auto", choices=("auto", "s3fd", "dlib"),
                        help="face detector (auto: S3FD when its weights are available, else dlib)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="noise seed (frame i uses seed + i)")
    cert = parser.add_argument_group("certificate cost")
    cert.add_argument("--cert-faces", type=int, default=4,
                      help="faces used for the Lipschitz estimate (default 4)")
    cert.add_argument("--power-iters", type=int, default=6,
                      help="power iterations per Jacobian (default 6)")
    cert.add_argument("--positions", type=int, default=4,
                      help="most sensitive latent positions per face for the per-position "
                           "estimate (default 4)")
    cert.add_argument("--no-layerwise", action="store_true",
                      help="skip the layer-wise Jacobian bound")
    cert.add_argument("--no-certificate", action="store_true", help="skip the certificate")
    parser.add_argument("--json", required=True, metavar="OUT", help="write the results here")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _specs(args: argparse.Namespace, resolution: int):
    """Degradation specs from the flags; defaults when none is given."""
    from ladtalk.analysis.degrade import default_degradations, format_spec
    given = [format_spec("blur", v) for v in args.blur or []]
    given += [format_spec("noise", v) for v in args.noise or []]
    given += [format_spec("down", v) for v in args.down or []]
    if given:
        return list(dict.fromkeys(given)), []
    specs, notes = [], []
    for d in default_degradations():
        if d.name == "down" and int(d.param) >= resolution:
            notes.append(f"default {d.spec} skipped: not a downscale at {resolution} px")
            continue
        specs.append(d.spec)
    return specs, notes


def _clean(obj: Any) -> Any:
    """Strict-JSON copy: non-finite floats become None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def run(args: argparse.Namespace) -> int:
    from ladtalk.analysis.robustness import robustness_for_video
    from ladtalk.errors import InputError
    from ladtalk.identities.store import resolve_identity, write_json_atomic
    from ladtalk.models.sovqae import SOVQAEConfig

    for name in ("max_frames", "cert_faces", "power_iters", "positions", "batch_size"):
        if getattr(args, name) < 0 or (name == "batch_size" and args.batch_size < 1):
            raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    ident_dir = resolve_identity(args.identity)
    from pathlib import Path
    out_dir = Path(args.json).expanduser().resolve().parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder {out_dir} for --json ({exc})") from None
    import json
    cfg = SOVQAEConfig.from_dict(json.loads((ident_dir / "config.json").read_text()),
                                 source=str(ident_dir / "config.json"))
    specs, notes = _specs(args, cfg.resolution)

    def progress(phase: str, done: int, total: int) -> None:
        if not args.quiet:
            print(f"\r{phase}: {done}/{total}", end="", file=sys.stderr, flush=True)
            if done >= total:
                print(file=sys.stderr)

    result = robustness_for_video(
        ident_dir, args.video, specs, max_frames=args.max_frames or None,
        frames_from=args.frames_from, detector=args.detector, device=args.device,
        progress=progress, batch_size=args.batch_size, seed=args.seed,
        certificate=not args.no_certificate, cert_faces=max(1, args.cert_faces),
        power_iters=args.power_iters, max_positions=max(1, args.positions),
        layerwise=not args.no_layerwise)
    if notes:
        result.setdefault("notes", []).extend(notes)
    write_json_atomic(args.json, _clean(result))
    print(f"{result['frames']} frames ({result['frames_from']}) of {args.video}, identity "
          f"{result['identity']} at {result['resolution']} px; reconstruction "
          f"{result['reconstruction']['psnr']:.2f} dB")
    for spec, r in result["degradations"].items():
        print(f"  {spec:>10}: PSNR {r['psnr_degraded']:.2f} -> {r['psnr_restored']:.2f} dB "
              f"({r['psnr_gain']:+.2f}), SSIM {r['ssim_degraded']:.3f} -> "
              f"{r['ssim_restored']:.3f}")
    cert = result.get("certificate")
    if cert:
        print(f"  certificate: d_C {cert['d_C']:.4g}, gamma {cert['gamma']:.4g}, L_enc "
              f"{cert['L_enc']:.4g}, radius {cert['radius']:.4g} "
              f"({'certified' if cert['certified'] else 'no certificate'})")
        for spec, v in cert["codes_preserved"].items():
            print(f"    {spec:>10}: codes preserved {v:.3f}, certified "
                  f"{cert['certified_fraction'][spec]:.3f}, ||N|| "
                  f"{cert['degradation_norms'][spec]['mean']:.3g}")
    print(f"results written to {args.json}")
    return 0
