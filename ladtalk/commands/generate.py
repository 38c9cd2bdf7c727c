"""``python -m ladtalk generate``: lip-sync a face video or photo to speech.

Example::

    python -m ladtalk generate --face face.mp4 --audio speech.wav --out out.mp4 --identity alice
    python -m ladtalk generate --face photo.jpg --audio speech.m4a --out out.mp4 --no-enhance

One of ``--identity`` (Wav2Lip + that person's SOVQAE restoration) and ``--no-enhance``
(Wav2Lip only, the baseline) is required, so the choice is always explicit. With an identity the
face is checked against it first (``--identity-check warn``, the default, prints a warning when
the identity reconstructs this face much worse than its own held-out frames, i.e. it belongs
to someone else; ``refuse`` stops instead, ``off`` skips the check). The output lasts
exactly as long as the audio (looping the video per ``--loop`` when the audio is longer) and
carries the original audio track. See :mod:`ladtalk.generation.pipeline` for the stages.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys

from ladtalk._util.choices import (
    BACKENDS,
    CLI_IDENTITY_CHECK,
    DEFAULT_BACKEND,
    DEFAULT_DETECTOR,
    DEFAULT_LOOP,
    DEFAULT_PADS,
    DEFAULT_PRECISION,
    DETECTORS,
    IDENTITY_CHECKS,
    LOOP_POLICIES,
    PRECISIONS,
)
from ladtalk.checkpoints import add_checkpoint_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("inputs and output")
    io.add_argument("--face", required=True, metavar="VIDEO_OR_IMAGE",
                    help="video or photo with one visible face (recognised by content, not "
                         "by extension)")
    io.add_argument("--audio", required=True, metavar="AUDIO",
                    help="speech: any audio file, or a video whose sound track is used")
    io.add_argument("--out", required=True, metavar="OUT.mp4",
                    help="output video (H.264 + the original audio); written atomically")
    enh = parser.add_argument_group("enhancement (choose one)")
    which = enh.add_mutually_exclusive_group(required=True)
    which.add_argument("--identity", metavar="NAME_OR_DIR",
                       help="enrolled identity whose SOVQAE restores the generated face")
    which.add_argument("--no-enhance", action="store_true",
                       help="Wav2Lip only (the baseline; same crop and blending)")
    add_shared_arguments(parser, enh)


def add_shared_arguments(parser: argparse.ArgumentParser, enh, box: bool = True) -> None:
    """The flags ``generate`` and ``batch`` share: identity check and strength (into the
    ``enh`` group), checkpoint, face detection, video and compute."""
    enh.add_argument("--identity-check", default=CLI_IDENTITY_CHECK, choices=IDENTITY_CHECKS,
                     help="is the identity this person? Its reconstruction PSNR on 8 face "
                          "crops of --face is compared with its own holdout PSNR "
                          "(ladtalk.generation.identity_match). warn (default): print a "
                          "warning and restore anyway; refuse: stop with an error; off: skip "
                          "the check")
    enh.add_argument("--restore-strength", default=None, metavar="S|LOW,HIGH",
                     help="how much of the identity's restoration to use: S for both bands or "
                          "LOW,HIGH (the band the 96 px Wav2Lip face has / the detail above "
                          "it), each in [0, 2]; 1 = the plain SOVQAE decode, 0 = Wav2Lip's face "
                          "unchanged. Default: the strengths calibrated at enrollment "
                          "(meta.json 'fusion')")
    add_checkpoint_argument(parser, "wav2lip")
    face = parser.add_argument_group("face detection")
    face.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTORS,
                      help="auto: S3FD when its weights are available, else dlib (default)")
    if box:
        face.add_argument("--box", type=float, nargs=4, metavar=("Y1", "Y2", "X1", "X2"),
                          help="fixed face box in source pixels (skips detection)")
    face.add_argument("--pads", type=int, nargs=4, default=DEFAULT_PADS,
                      metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                      help="pixels added to the face box before cropping (default: "
                           f"{' '.join(map(str, DEFAULT_PADS))})")
    face.add_argument("--no-smooth", action="store_true",
                      help="do not smooth face boxes over time")
    face.add_argument("--no-cache", action="store_true",
                      help="detect the face again and keep nothing: skip the face-track cache "
                           "in $LADTALK_HOME/cache/tracks (by default a second run on the same "
                           "video, with any audio, reuses the track)")
    vid = parser.add_argument_group("video")
    vid.add_argument("--resize-factor", type=int, default=1, metavar="K",
                     help="downscale the video by K first (the output is 1/K the size)")
    vid.add_argument("--fps", type=float, default=None, metavar="F",
                     help="output frame rate (default: the video's; 25 for a photo)")
    vid.add_argument("--loop", default=DEFAULT_LOOP, choices=LOOP_POLICIES,
                     help="when the audio is longer than the video: pingpong (default), "
                          "loop, or hold the last frame")
    run_ = parser.add_argument_group("compute")
    run_.add_argument("--device", default=None, metavar="cpu|cuda",
                      help="default: CUDA when available, else CPU")
    run_.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                      help="arithmetic of Wav2Lip and the SOVQAE. auto (default): the fastest "
                           "of fp32 / bf16 (/ fp16 on CUDA) measured on this machine (once, "
                           "cached in $LADTALK_HOME/cache), never slower than fp32; fp32: "
                           "upstream's exact numbers")
    run_.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                      help="what runs the models. auto (default): the fastest measured of "
                           "torch and, on a CPU with the optional extra installed "
                           "(pip install 'ladtalk[openvino]'), OpenVINO")
    run_.add_argument("--compile", action="store_true",
                      help="torch.compile the models torch runs (worth it on a GPU for long "
                           "videos; the first frames wait for the compilation)")
    run_.add_argument("--batch-size", type=int, default=None, metavar="N",
                      help="frames per chunk / model batch (default: 16)")
    run_.add_argument("--quiet", action="store_true", help="print only warnings and errors")


def options_from_args(args: argparse.Namespace):
    """Build :class:`ladtalk.generation.pipeline.GenerateOptions` from parsed arguments."""
    from ladtalk.generation.pipeline import GenerateOptions
    return GenerateOptions(
        identity=None if getattr(args, "no_enhance", False) else args.identity,
        detector=args.detector, box=tuple(args.box) if getattr(args, "box", None) else None,
        pads=tuple(args.pads), smooth=not args.no_smooth, resize_factor=args.resize_factor,
        fps=args.fps, loop=args.loop, batch_size=args.batch_size,
        identity_check=getattr(args, "identity_check", CLI_IDENTITY_CHECK),
        restore_strength=getattr(args, "restore_strength", None),
        track_cache=not getattr(args, "no_cache", False))


class _Progress:
    """One status line per stage, updated in place on a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or stage not in ("detect", "generate"):
            return
        line = f"{stage}: {done}/{total} frames"
        if self.tty:
            end = "\n" if done >= total else ""
            print(f"\r{line}", end=end, file=sys.stderr, flush=True)
        elif done >= total and self.last != line:
            print(line, file=sys.stderr)
        self.last = line


def run(args: argparse.Namespace) -> int:
    from ladtalk.generation.pipeline import DEFAULT_BATCH_SIZE, Pipeline

    # every import is done: their objects live as long as the process, so the collector need
    # not walk them again (a full collection after loading took 0.12 s, now microseconds)
    gc.freeze()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s: %(message)s")
    options = options_from_args(args)
    options.validate()
    pipe = Pipeline(wav2lip=args.wav2lip, device=args.device, dtype=args.precision,
                    batch_size=args.batch_size or DEFAULT_BATCH_SIZE, backend=args.backend,
                    compile=args.compile)
    result = pipe.run(args.face, args.audio, args.out, options,
                      progress=_Progress(not args.quiet),
                      mel_process=getattr(args, "_early", None))  # started by the CLI
    if not args.quiet:
        t = result.timings
        mode = f"identity {result.identity}" if result.enhanced else "Wav2Lip only"
        print(f"wrote {result.out}: {result.n_frames} frames, {result.size[0]}x{result.size[1]} "
              f"@ {result.fps:g} fps, {result.duration:.2f} s (audio {result.audio_duration:.2f} "
              f"s, {'copied' if result.audio_copied else 'AAC'}), {mode}, models in "
              f"{result.precision} ({result.backend})")
        if result.identity_match is not None and result.identity_match.matches:
            print(result.identity_match.message())
        print(f"took {t['total']:.1f} s ({result.n_frames / max(t['total'], 1e-9):.1f} frames/s, "
              f"{t['total'] / max(result.duration, 1e-9):.2f}x real time)")
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0
