"""``python -m ladtalk convert SRC DST``: turn a checkpoint into a clean ``.safetensors`` file.

SRC is a local file or directory, a Hub reference (``hf://OWNER/REPO/FILE[@REV][#sha256=HEX]``
or ``OWNER/REPO:FILE``), or the name of a known checkpoint (``wav2lip``, ``s3fd``,
``syncnet_lse``, ``wav2lip_expert``; its env var applies). Pickle files are read with the
weights-only loader, so nothing inside them is executed; an upstream ``{"state_dict": ...}``
wrapper is unwrapped and DataParallel's ``module.`` prefix removed. DST is written atomically;
when DST is an existing directory the output is ``DST/<src stem>.safetensors``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ladtalk.checkpoints import convert_to_safetensors, resolve_checkpoint
from ladtalk.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC",
                        help="checkpoint: path, directory, hf://OWNER/REPO/FILE, or a known name")
    parser.add_argument("dst", metavar="DST", help="output .safetensors path (or a directory)")
    parser.add_argument("--strip-prefix", default="module.", metavar="PREFIX",
                        help="key prefix to remove (default: 'module.'; '' keeps keys as stored)")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")


def run(args: argparse.Namespace) -> int:
    src = resolve_checkpoint(args.src)
    dst = Path(args.dst).expanduser()
    if dst.is_dir():
        dst = dst / f"{src.stem}.safetensors"
    if dst.suffix.lower() != ".safetensors":
        raise InputError(f"output {dst} must end in .safetensors")
    if dst.exists() and not args.force:
        raise InputError(f"output {dst} already exists; pass --force to overwrite it")
    if dst.resolve() == src.resolve():
        raise InputError(f"output {dst} is the input file; choose another path")
    report = convert_to_safetensors(src, dst, strip_prefix=args.strip_prefix or None)
    print(f"source:     {report.src}")
    print(f"tensors:    {report.n_tensors}")
    print(f"elements:   {report.n_elements:,}")
    print(f"parameters: {report.n_parameters:,} (excluding BatchNorm running statistics)")
    print(f"output:     {report.dst}")
    return 0
