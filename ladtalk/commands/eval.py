"""``python -m ladtalk eval``: the paper's metrics for one generated video, or a table of many.

One pair::

    python -m ladtalk eval --generated G.mp4 --reference R.mp4 [--audio A.wav]
        [--metrics psnr,ssim,mouth_psnr,temporal,fid,lse] [--no-sliding] [--json OUT.json]

prints a one-row table and, with ``--json``, writes the JSON documented in
docs/evaluation.md (``--json -`` prints it instead). A batch::

    python -m ladtalk eval --pairs pairs.csv [--json OUT.json] [--csv OUT.csv]

reads ``method, generated, reference[, audio]`` rows and prints method rows x metric columns
(means over clips), like Table 1 of the LaDTalk paper. Metrics whose weights are missing are
reported as ``needs weights``; asking explicitly (``--metrics``) only for metrics that cannot
be computed is an error.

LaDTalk against Wav2Lip on held-out frames of an enrolled person
(:mod:`ladtalk.evaluation.quality`)::

    python -m ladtalk eval quality --identity NAME --video HELDOUT.mp4 [--soften 0 0.5 1]
        [--holdout 0.1] [--max-frames N] [--restore-strength S|LOW,HIGH] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys

from ladtalk._util.atomic import dumps_json, write_json
from ladtalk._util.choices import DEFAULT_DETECTOR, DETECTORS
from ladtalk.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ladtalk.evaluation.config import METRICS

    parser.add_argument("mode", nargs="?", choices=("quality",), default=None,
                        help="'quality': frame-level LaDTalk vs Wav2Lip-proxy scores on the "
                        "held-out frames of an enrolled person (--identity, --video)")
    q = parser.add_argument_group("quality (eval quality)")
    q.add_argument("--identity", metavar="NAME", help="enrolled identity (name or directory)")
    q.add_argument("--video", metavar="V", help="the person's video; its last --holdout "
                   "fraction (by time) is scored")
    q.add_argument("--soften", type=float, nargs="+", default=None, metavar="SIGMA",
                   help="Wav2Lip-proxy softening sigmas in px at 96 px (default: 0 0.5 1)")
    q.add_argument("--holdout", type=float, default=0.1, help="held-out tail fraction "
                   "(default 0.1, as enrollment)")
    q.add_argument("--max-frames", type=int, default=0, metavar="N",
                   help="score only the first N held-out frames (default: all)")
    q.add_argument("--restore-strength", metavar="S|LOW,HIGH", default=None,
                   help="fusion strengths instead of the identity's calibrated ones "
                   "(1 = plain SOVQAE decode, 0 = Wav2Lip input unchanged)")

    src = parser.add_argument_group("inputs (one pair, or --pairs)")
    src.add_argument("--generated", metavar="G", help="generated video")
    src.add_argument("--reference", metavar="R", help="reference (ground-truth) video")
    src.add_argument("--audio", metavar="A", help="driving speech for LSE (default: the "
                     "generated video's own sound track)")
    src.add_argument("--pairs", metavar="CSV", help="batch: CSV with columns method, "
                     "generated, reference[, audio] (paths relative to the CSV)")
    parser.add_argument("--metrics", metavar="LIST", default=None,
                        help=f"comma-separated subset of {','.join(METRICS)} (default: all; "
                        "unavailable ones are reported as 'needs weights')")
    parser.add_argument("--sliding", action=argparse.BooleanOptionalAction, default=True,
                        help="Sliding Evaluation: score every admissible offset of G against "
                        "R and keep the best (default); --no-sliding compares frame i with i")
    parser.add_argument("--min-overlap", type=int, default=None, metavar="N",
                        help="admit offsets whose overlap has >= N frames (default: the "
                        "shorter video slides fully inside the longer one)")
    parser.add_argument("--max-offset", type=int, default=None, metavar="K",
                        help="consider only offsets |k| <= K (frames)")
    parser.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                        help="face detector for the mouth region and SyncNet crops (auto: "
                        "S3FD when its weights resolve, else dlib)")
    parser.add_argument("--detect-every", type=int, default=1, metavar="K",
                        help="run the detector on every K-th frame, interpolate the rest")
    parser.add_argument("--s3fd", metavar="SPEC", default=None,
                        help="S3FD weights (path or Hub reference; env LADTALK_S3FD)")
    parser.add_argument("--syncnet", metavar="SPEC", default=None,
                        help="SyncNet syncnet_v2.model for LSE (path or Hub reference; env "
                        "LADTALK_SYNCNET)")
    parser.add_argument("--device", default=None, help="torch device for SyncNet / Inception "
                        "(default: cuda if available, else cpu)")
    parser.add_argument("--json", metavar="OUT", default=None,
                        help="write the results as JSON ('-' prints them to stdout)")
    parser.add_argument("--csv", metavar="OUT", default=None,
                        help="write the table (method rows x metric columns) as CSV")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_quality(args: argparse.Namespace) -> int:
    from ladtalk.evaluation.quality import DEFAULT_SOFTEN, quality_for_video
    from ladtalk.evaluation.table import output_path
    from ladtalk.generation.fusion import parse_strength

    if not args.identity or not args.video:
        raise InputError("eval quality needs --identity NAME and --video V (the person's "
                         "video; its held-out tail is scored)")
    try:
        strength = parse_strength(args.restore_strength)
    except ValueError as exc:
        raise InputError(f"--restore-strength: {exc}") from None
    rep = quality_for_video(args.identity, args.video, args.soften or DEFAULT_SOFTEN,
                            holdout=args.holdout, max_frames=args.max_frames,
                            detector=args.detector, device=args.device, strength=strength)
    to_stdout = args.json == "-"
    out = sys.stderr if to_stdout else sys.stdout
    print(rep.format_table(), file=out)
    if to_stdout:
        print(dumps_json(rep), end="")
    elif args.json:
        print(f"json: {write_json(output_path(args.json), rep)}", file=out)
    return 0


def run(args: argparse.Namespace) -> int:
    from ladtalk.evaluation.batch import evaluate_batch, single_table
    from ladtalk.evaluation.config import EvalConfig
    from ladtalk.evaluation.pair import evaluate_pair
    from ladtalk.evaluation.table import output_path

    if getattr(args, "mode", None) == "quality":
        return run_quality(args)

    single = args.generated is not None or args.reference is not None
    if args.pairs and single:
        raise InputError("give either --pairs CSV or --generated/--reference, not both")
    if not args.pairs and not (args.generated and args.reference):
        raise InputError("eval needs --generated G and --reference R (or --pairs CSV)")
    if args.pairs and args.audio:
        raise InputError("--audio applies to one pair; put an 'audio' column in the CSV")
    cfg = EvalConfig(metrics=args.metrics, explicit=args.metrics is not None,
                     sliding=args.sliding, min_overlap=args.min_overlap,
                     max_offset=args.max_offset, detector=args.detector,
                     detect_every=args.detect_every, s3fd=args.s3fd, syncnet=args.syncnet,
                     device=args.device, progress=not args.quiet)
    to_stdout = args.json == "-"
    out = sys.stderr if to_stdout else sys.stdout

    if args.pairs:
        table = payload = evaluate_batch(args.pairs, cfg)
    else:
        payload = evaluate_pair(args.generated, args.reference, args.audio, cfg)
        table = single_table(payload)
        for note in payload.notes:
            print(f"note: {note}", file=out)
    print(table.format_table(), file=out)
    for line in table.reasons():
        print(line, file=out)
    if to_stdout:
        print(dumps_json(payload), end="")
    elif args.json:
        print(f"json: {write_json(output_path(args.json), payload)}", file=out)
    if args.csv:
        print(f"csv:  {table.write_csv(args.csv)}", file=out)
    return 0

