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
    "enroll": "enroll an identity: fine-tune its SOVQAE on a video of the person "
              "(time-budgeted, resumable)",
    "eval": "score generated videos against references: PSNR, SSIM, mouth PSNR, FID, LSE",
    "robustness": "degrade face crops (blur / noise / down-up), restore them with an identity, "
                  "report PSNR/SSIM + certificate",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ladtalk", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=name)
        _module(name).add_arguments(p)
    return parser


def _module(name: str):
    return importlib.import_module(f"ladtalk.commands.{name}")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(_module(args._module).run(args) or 0)
    except LadTalkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
