"""``python -m ladtalk <command>``: a thin dispatcher over per-command modules.

Each command lives in ``ladtalk/commands/<name>.py`` and exposes ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their command runs, so
``python -m ladtalk --help`` stays fast and a heavy dependency of one command never breaks
another.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from ladtalk.errors import LadTalkError

# name -> one-line help. Add a command by adding a module and one line here.
COMMANDS = {
    "convert": "convert an upstream .pth/.ckpt checkpoint to .safetensors (no pickle execution)",
    "generate": "lip-sync a face video or photo to speech "
                "(Wav2Lip + optional identity restoration)",
    "batch": "run many generate jobs from a CSV / JSON Lines file with one set of models "
             "(resumable; sharded over torchrun processes)",
    "enroll": "enroll an identity: fine-tune its SOVQAE on a video of the person "
              "(time-budgeted, resumable)",
    "eval": "score generated videos against references: PSNR, SSIM, mouth PSNR, FID, LSE",
    "robustness": "degrade face crops (blur / noise / down-up), restore them with an identity, "
                  "report PSNR/SSIM + certificate",
}


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The CLI's parser; ``only``: the command about to run, whose module alone is imported
    for its arguments (the others are listed by name: ``generate`` then starts without the
    other commands' imports, about 0.4 s)."""
    parser = argparse.ArgumentParser(prog="python -m ladtalk", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=name)
        if only is None or name == only:
            _module(name).add_arguments(p)
    return parser


def _module(name: str):
    return importlib.import_module(f"ladtalk.commands.{name}")


def _prestart(command: Optional[str], argv: List[str]):
    """Work a command can start before its heavy imports: for ``generate``, the mel of
    ``--audio`` in a child process (:mod:`ladtalk.media.mel_process`), so that librosa's
    imports run on the other core while torch and the models load. None otherwise."""
    if command != "generate":
        return None
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--audio")
    known, _ = peek.parse_known_args(argv[1:])
    if not known.audio:
        return None
    from ladtalk.media import mel_process
    return mel_process.start(known.audio)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    early = _prestart(command, argv)
    try:
        args = build_parser(command or "").parse_args(argv)
        args._early = early
        return int(_module(args._module).run(args) or 0)
    except LadTalkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if early is not None:
            early.close()
