#!/usr/bin/env python
"""Regenerate our Table-1-style comparison (LaDTalk paper, Table 1) on a held-out clip.

Setting (the paper's): one person, held-out audio. The identity is enrolled on the first
``1 - holdout`` of the video (``python -m ladtalk enroll --holdout 0.1`` keeps the last 10%
out of training); clips of ``--clip-seconds`` are cut from the held-out tail, and every
method re-synthesises the mouth of that real clip from the clip's own audio, so the real
clip is the reference video of the evaluation.

Methods (rows):

* ``Wav2Lip``: stage 1 only (``python -m ladtalk generate --no-enhance``; library:
  ``Pipeline.run(..., GenerateOptions(identity=None))``).
* ``Wav2Lip + unsharp mask``: a generic restorer *stand-in*. No face restorer (GFPGAN,
  CodeFormer) can be installed offline here, so the Wav2Lip output is sharpened inside the
  tracked face box with an unsharp mask (Gaussian sigma 2 px, amount 1, feathered box). It is
  labelled as what it is; it is not GFPGAN.
* ``LaDTalk``: Wav2Lip + the enrolled identity's SOVQAE (``--identity NAME``, or
  ``--enroll-seconds S`` to enroll ``--identity`` from the same video first).

Columns come from ``python -m ladtalk eval`` (:mod:`ladtalk.evaluation.report`, Sliding Evaluation).
LSE-C / LSE-D need SyncNet's ``syncnet_v2.model`` (``--syncnet``) and FID the optional
``fid`` extra; without them those columns read ``needs weights``.

Wav2Lip weights are resolved like everywhere else (``--wav2lip SPEC``, ``$LADTALK_WAV2LIP``,
the Hub default). When they cannot be resolved the script stops with that error, unless
``--formula-weights`` is given: then Wav2Lip runs with the deterministic formula weights of
the golden fixtures (``tests/formula.py``) - a plumbing check only, and every row is labelled
``formula weights - not a quality measurement``.

Usage (see docs/evaluation.md)::

    python scripts/experiment_table1.py --identity cnn2 --clip-seconds 4 --device cpu
    python scripts/experiment_table1.py --formula-weights --identity cnn2     # plumbing only

Outputs in ``--out`` (default ``runs/table1``): the clips, the generated videos, ``pairs.csv``,
``table.csv``, ``table.json`` (per-clip metrics), ``experiment.json`` (settings, timings) and
``table.txt`` (the printed table).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ladtalk._util.atomic import atomic_path  # noqa: E402
from ladtalk.errors import CheckpointError, InputError, LadTalkError  # noqa: E402

FORMULA_LABEL = "formula weights - not a quality measurement"
BASELINE_LABEL = "Wav2Lip + unsharp mask (generic-restorer stand-in)"


def default_video() -> Path:
    data = Path(os.environ.get("LADTALK_SHARED_DATA", ROOT.parent / "shared" / "data"))
    return data / "dfrf_cnn2.mp4"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=default_video(),
                   help="source video of one person (default: ../shared/data/dfrf_cnn2.mp4)")
    p.add_argument("--holdout", type=float, default=0.1,
                   help="fraction of the video at its end that enrollment never saw (0.1)")
    p.add_argument("--clip-seconds", type=float, default=4.0, help="length of each test clip")
    p.add_argument("--clips", type=int, default=1, help="number of consecutive held-out clips")
    p.add_argument("--identity", default=None,
                   help="enrolled identity (name or directory) of the same person; without it "
                        "the LaDTalk row is skipped")
    p.add_argument("--enroll-seconds", type=float, default=None, metavar="S",
                   help="enroll --identity from --video first (training budget S seconds, "
                        "same --holdout); continues an existing identity of that name")
    p.add_argument("--wav2lip", default=None, metavar="SPEC",
                   help="Wav2Lip checkpoint (path or Hub reference; env LADTALK_WAV2LIP)")
    p.add_argument("--formula-weights", action="store_true",
                   help="if the Wav2Lip weights cannot be resolved, run with deterministic "
                        "formula weights (plumbing check; rows are labelled as such)")
    p.add_argument("--no-baseline", action="store_true", help="skip the unsharp-mask row")
    p.add_argument("--syncnet", default=None, metavar="SPEC", help="SyncNet syncnet_v2.model")
    p.add_argument("--metrics", default=None, help="metrics for eval (default: all)")
    p.add_argument("--detector", default="auto", choices=("auto", "s3fd", "dlib"))
    p.add_argument("--device", default=None, help="cpu / cuda (default: auto)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "table1", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------- weights

def resolve_wav2lip(spec: Optional[str], formula: bool):
    """``(pipeline wav2lip argument, description, is_formula)``; raises CheckpointError."""
    from ladtalk.checkpoints import resolve_checkpoint

    try:
        path = resolve_checkpoint("wav2lip", override=spec)
        return str(path), f"checkpoint {path}", False
    except CheckpointError as exc:
        if not formula:
            raise CheckpointError(
                f"{exc}\nThe Table-1 experiment needs the pretrained Wav2Lip generator: pass "
                "--wav2lip PATH (or set LADTALK_WAV2LIP). For a plumbing check without it, "
                f"add --formula-weights (rows are then labelled '{FORMULA_LABEL}').") from None
        logging.warning("Wav2Lip weights unavailable (%s); using formula weights", exc)
    sys.path.insert(0, str(ROOT / "tests"))
    from formula import det_state_dict  # the golden README's deterministic weight formula

    from ladtalk.models.wav2lip import Wav2Lip

    model = Wav2Lip()
    entries = [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
    model.load_state_dict(det_state_dict(entries))
    return model.eval(), "deterministic formula weights (tests/formula.py)", True


# ---------------------------------------------------------------------------------- clips

def ffmpeg() -> str:
    from ladtalk.media.ffmpeg import ffmpeg_exe
    return ffmpeg_exe()


def cut_clip(video: Path, start: float, seconds: float, out_video: Path, out_wav: Path) -> None:
    """Frame-accurate cut at 25 fps (libx264 crf 10) plus its audio as 16 kHz mono wav."""
    for dst, args in ((out_video, ["-map", "0:v:0", "-map", "0:a:0", "-vf", "fps=25",
                                   "-c:v", "libx264", "-crf", "10", "-preset", "veryfast",
                                   "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k"]),
                      (out_wav, ["-map", "0:a:0", "-ac", "1", "-ar", "16000",
                                 "-c:a", "pcm_s16le"])):
        with atomic_path(dst, suffix=dst.suffix) as tmp:
            cmd = [ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                   "-ss", f"{start:.3f}", "-i", str(video), "-t", f"{seconds:.3f}", *args,
                   str(tmp)]
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if proc.returncode != 0:
                raise LadTalkError(f"ffmpeg could not cut {video} at {start:.2f}s: "
                                   f"{proc.stderr.decode(errors='replace').strip()[-300:]}")


# ---------------------------------------------------------------------------------- baseline

def unsharp_baseline(src: Path, dst: Path, detector: str, device=None, sigma: float = 2.0,
                     amount: float = 1.0) -> None:
    """Sharpen the tracked face box of ``src`` with an unsharp mask (feathered edges)."""
    import cv2

    from ladtalk.face import make_detector, track_faces
    from ladtalk.media.decode import read_frames
    from ladtalk.media.encode import VideoWriter
    from ladtalk.media.probe import probe

    info = probe(src)
    frames = read_frames(src)
    track = track_faces(frames, make_detector(detector, device=device), info.fps or 25.0)
    h, w = frames.shape[1:3]
    with VideoWriter(dst, info.fps or 25.0, (w, h), audio=src, crf=10) as writer:
        for i, frame in enumerate(frames):
            box = track.box(i)
            if box is None:
                writer.write(frame)
                continue
            x1, y1, x2, y2 = box
            mask = np.zeros((h, w), np.float32)
            mask[max(0, int(y1)):int(np.ceil(y2)), max(0, int(x1)):int(np.ceil(x2))] = 1.0
            feather = 0.08 * max(x2 - x1, y2 - y1)
            mask = cv2.GaussianBlur(mask, (0, 0), feather)[..., None]
            f = frame.astype(np.float32)
            sharp = f + amount * (f - cv2.GaussianBlur(f, (0, 0), sigma))
            out = mask * sharp + (1.0 - mask) * f
            writer.write(np.clip(out + 0.5, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------- main

def holdout_start(video: Path, video_seconds: float, holdout: float,
                  identity: Optional[str]) -> float:
    """First held-out second: the later of the ``holdout`` fraction and the identity's own
    record (``meta.json`` ``frames.holdout_first_s``), so no clip overlaps its training."""
    start = video_seconds * (1.0 - holdout)
    if identity:
        from ladtalk.identities.meta import META_JSON, load_meta
        from ladtalk.identities.store import resolve_identity
        ident_dir = resolve_identity(identity)
        if (ident_dir / META_JSON).is_file():
            meta = load_meta(ident_dir)
            if meta.video and meta.video != video.name:
                logging.warning("identity %s was enrolled on %s, not on %s: the clips are "
                                "held out only with respect to %s", identity, meta.video,
                                video.name, video.name)
            else:
                first = meta.frames.holdout_first_s
                if first is None:
                    raise InputError(
                        f"identity {identity} was enrolled on {video.name} without a holdout "
                        "(meta.json frames.holdout_first_s is empty): every frame was trained "
                        "on, so no clip of it is held out; enroll with --holdout 0.1")
                start = max(start, float(first))
    return start


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    t0 = time.perf_counter()
    try:
        return _run(args, t0)
    except LadTalkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, t0: float) -> int:
    from ladtalk._util.atomic import write_json
    from ladtalk.evaluation.report import EvalConfig, PairSpec, evaluate_batch
    from ladtalk.generation.pipeline import GenerateOptions, Pipeline
    from ladtalk.media.probe import probe

    if not args.video.is_file():
        raise InputError(f"source video not found: {args.video} (set LADTALK_SHARED_DATA or "
                         "pass --video)")
    if args.clips < 1 or args.clip_seconds <= 0:
        raise InputError("--clips must be >= 1 and --clip-seconds > 0")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: Dict[str, float] = {}

    wav2lip, wav2lip_desc, is_formula = resolve_wav2lip(args.wav2lip, args.formula_weights)
    suffix = f" [{FORMULA_LABEL}]" if is_formula else ""

    identity, identity_note = args.identity, None
    if args.enroll_seconds is not None:
        if not identity:
            raise InputError("--enroll-seconds needs --identity NAME (the name to enroll)")
        from ladtalk.enrollment.enroll import enroll
        t = time.perf_counter()
        enroll(args.video, identity, seconds=args.enroll_seconds, holdout=args.holdout,
               detector=args.detector, device=args.device, show_progress=not args.quiet)
        timings["enroll"] = time.perf_counter() - t
    if not identity:
        identity_note = ("LaDTalk row skipped: no enrolled identity (pass --identity NAME, "
                         "or --enroll-seconds S with --identity NAME)")

    info = probe(args.video)
    start0 = holdout_start(args.video, info.duration, args.holdout, identity)
    need = start0 + args.clips * args.clip_seconds
    if need > info.duration + 1e-6:
        raise InputError(f"{args.clips} clip(s) of {args.clip_seconds:g}s starting at the "
                         f"holdout ({start0:.2f}s) end at {need:.2f}s, past the end of "
                         f"{args.video} ({info.duration:.2f}s); use fewer / shorter clips")

    pipe = Pipeline(wav2lip=wav2lip, device=args.device)
    pairs: List[PairSpec] = []
    skipped: List[str] = []
    clips_meta = []
    for c in range(args.clips):
        start = start0 + c * args.clip_seconds
        ref, wav = out / f"clip{c}_reference.mp4", out / f"clip{c}_audio.wav"
        cut_clip(args.video, start, args.clip_seconds, ref, wav)
        clips_meta.append({"clip": c, "start_s": round(start, 3), "seconds": args.clip_seconds,
                           "reference": str(ref), "audio": str(wav)})
        opts = dict(detector=args.detector)

        t = time.perf_counter()
        w2l = out / f"clip{c}_wav2lip.mp4"
        pipe.run(ref, wav, w2l, GenerateOptions(identity=None, **opts))
        timings[f"clip{c}_wav2lip"] = time.perf_counter() - t
        pairs.append(PairSpec("Wav2Lip" + suffix, w2l, ref, wav))

        if not args.no_baseline:
            t = time.perf_counter()
            sharp = out / f"clip{c}_wav2lip_unsharp.mp4"
            unsharp_baseline(w2l, sharp, args.detector, args.device)
            timings[f"clip{c}_unsharp"] = time.perf_counter() - t
            pairs.append(PairSpec(BASELINE_LABEL + suffix, sharp, ref, wav))

        if identity:
            t = time.perf_counter()
            lad = out / f"clip{c}_ladtalk.mp4"
            try:
                pipe.run(ref, wav, lad, GenerateOptions(identity=identity, **opts))
            except (LadTalkError, ImportError) as exc:
                identity_note = f"LaDTalk row skipped: generation failed ({exc})"
                identity = None
            else:
                timings[f"clip{c}_ladtalk"] = time.perf_counter() - t
                pairs.append(PairSpec(f"LaDTalk (identity {args.identity})" + suffix, lad,
                                      ref, wav))
    if identity_note:
        skipped.append(identity_note)

    with open(out / "pairs.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "generated", "reference", "audio"])
        writer.writerows([p.method, p.generated, p.reference, p.audio] for p in pairs)

    t = time.perf_counter()
    cfg = EvalConfig(metrics=args.metrics, detector=args.detector, syncnet=args.syncnet,
                     device=args.device, progress=not args.quiet)
    batch = evaluate_batch(pairs, cfg)
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    title = (f"Table 1 (ours): {args.video.name}, {args.clips} held-out clip(s) of "
             f"{args.clip_seconds:g}s from {start0:.2f}s, original audio; Wav2Lip: "
             f"{wav2lip_desc}")
    text = batch.format_table(title)
    reasons = []  # one line per distinct reason (batch.reasons() keeps one per metric)
    for clip in batch.clips:
        for name, entry in clip.result.metrics.items():
            line = f"{name}: {entry.status} - {entry.reason}"
            if entry.status != "ok" and line not in reasons:
                reasons.append(line)
    lines = [text] + [f"note: {s}" for s in skipped] + [f"  {r}" for r in reasons]
    if is_formula:
        lines.append(f"NOTE: every row uses Wav2Lip {FORMULA_LABEL}.")
    report = "\n".join(lines)
    print(report)
    (out / "table.txt").write_text(report + "\n", encoding="utf-8")
    batch.write_csv(out / "table.csv")
    batch.write_json(out / "table.json")
    write_json(out / "experiment.json", {"video": str(args.video), "holdout": args.holdout,
                "holdout_start_s": start0, "clips": clips_meta, "identity": args.identity,
                "wav2lip": wav2lip_desc, "formula_weights": is_formula, "skipped": skipped,
                "timings_s": {k: round(v, 2) for k, v in timings.items()}})
    print(f"outputs in {out} (total {timings['total']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
