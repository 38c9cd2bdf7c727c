"""The named checkpoints LaDTalk knows (one record each) and how a Hub file is referenced.

See docs/models.md for the reference grammar and the order in which sources are tried.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ladtalk.errors import InputError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".model", ".bin", ".tar")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class CheckpointSpec:
    """A file in a Hugging Face Hub model repository.

    ``revision`` None means the repository's default branch; ``sha256`` (64 hex digits) is
    checked after download when given.
    """

    repo_id: str
    filename: str
    revision: Optional[str] = None
    sha256: Optional[str] = None

    def __post_init__(self) -> None:
        if self.sha256 is not None:
            if not HEX64.match(self.sha256):
                raise InputError(f"checkpoint reference {self.repo_id}/{self.filename}: sha256 "
                                 f"must be 64 hex digits, got {self.sha256!r}")
            object.__setattr__(self, "sha256", self.sha256.lower())

    def __str__(self) -> str:
        text = f"hf://{self.repo_id}/{self.filename}"
        if self.revision:
            text += f"@{self.revision}"
        if self.sha256:
            text += f"#sha256={self.sha256}"
        return text


@dataclass(frozen=True)
class DefaultCheckpoint:
    """A named checkpoint: its default Hub file and the knobs that override it."""

    name: str
    spec: CheckpointSpec
    env_var: str
    flag: str
    description: str
    size: Optional[int] = None  # expected byte size of the default file (integrity check)
    note: str = ""

    @property
    def basename(self) -> str:
        return self.spec.filename.rsplit("/", 1)[-1]


_WAV2LIP_LICENCE = ("Wav2Lip weights are released for research / non-commercial use only "
                    "(see github.com/Rudrabha/Wav2Lip).")

DEFAULTS: Dict[str, DefaultCheckpoint] = {d.name: d for d in (
    DefaultCheckpoint(
        name="wav2lip",
        spec=CheckpointSpec("Nekochu/Wav2Lip", "wav2lip_gan.pth"),
        env_var="LADTALK_WAV2LIP", flag="--wav2lip",
        description="Wav2Lip generator (GAN variant, upstream wav2lip_gan.pth)",
        size=435_801_865, note=_WAV2LIP_LICENCE),
    DefaultCheckpoint(
        name="s3fd",
        spec=CheckpointSpec("camenduru/Wav2Lip", "checkpoints/s3fd-619a316812.pth"),
        env_var="LADTALK_S3FD", flag="--s3fd",
        description="S3FD face detector (face_alignment s3fd-619a316812.pth)"),
    DefaultCheckpoint(
        name="syncnet_lse",
        # syncnet_python's data/syncnet_v2.model (Oxford VGG). LatentSync mirrors it under
        # auxiliary/ on the Hub; not verified byte-for-byte here, so it stays overridable.
        spec=CheckpointSpec("ByteDance/LatentSync-1.6", "auxiliary/syncnet_v2.model"),
        env_var="LADTALK_SYNCNET", flag="--syncnet",
        description="SyncNet 'S' model for the LSE-C / LSE-D lip-sync metrics (syncnet_v2.model)",
        note="Hub mirror of the Oxford VGG file; point LADTALK_SYNCNET at your own copy of "
             "syncnet_v2.model if in doubt."),
    DefaultCheckpoint(
        name="wav2lip_expert",
        spec=CheckpointSpec("camenduru/Wav2Lip", "checkpoints/lipsync_expert.pth"),
        env_var="LADTALK_WAV2LIP_EXPERT", flag="--wav2lip-expert",
        description="Wav2Lip lip-sync expert discriminator (SyncNet_color, lipsync_expert.pth)",
        note=_WAV2LIP_LICENCE),
)}


def add_checkpoint_argument(parser: Any, name: str) -> None:
    """Add the override flag of default ``name`` (e.g. ``--wav2lip``) to an argparse parser.

    The value lands in ``args.<name>`` (None when not given); pass it to
    ``resolve_checkpoint(name, override=args.<name>)``.
    """
    entry = DEFAULTS[name]
    parser.add_argument(entry.flag, dest=name, default=None, metavar="CKPT",
                        help=f"{entry.description}: a file, a directory or a Hub reference "
                             f"(default: ${entry.env_var} if set, else {entry.spec})")
