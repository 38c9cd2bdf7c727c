"""Wav2Lip's colour lip-sync expert (``models.SyncNet_color`` in github.com/Rudrabha/Wav2Lip).

It embeds a 0.2 s mel window and the matching 5 video frames into a shared 512-d space;
in-sync pairs have a high cosine similarity. Wav2Lip uses it frozen as the sync loss of the
generator (``-log(cos)``), and it is also handy as a cheap sync score.

Inputs (what the released ``lipsync_expert.pth`` expects):

* ``face``: (B, 15, 48, 96) float in [0, 1]: the lower halves (rows 48-95 of the 96x96 crop)
  of 5 consecutive frames, OpenCV BGR, stacked along channels (frame-major: frame 0's
  B,G,R, then frame 1's, ...).
* ``mel``: (B, 1, 80, 16) mel window aligned with the first of the 5 frames.

``forward`` returns L2-normalised ``(audio_embedding, face_embedding)``, each (B, 512).
Module names and nesting match upstream, so state-dict keys are identical.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ladtalk.models.blocks import ConvBNReLU as C
from ladtalk.models.blocks import res


class SyncNet(nn.Module):
    """Colour SyncNet expert; see the module docstring for the input convention."""

    def __init__(self) -> None:
        super().__init__()
        # 48x96 -> 48x96 -> 46x47 -> 23x24 -> 12x12 -> 6x6 -> 3x3 -> 1x1
        self.face_encoder = nn.Sequential(
            C(15, 32, 7, 1, 3),
            C(32, 64, 5, (1, 2), 1), res(64), res(64),
            C(64, 128, 3, 2, 1), res(128), res(128), res(128),
            C(128, 256, 3, 2, 1), res(256), res(256),
            C(256, 512, 3, 2, 1), res(512), res(512),
            C(512, 512, 3, 2, 1), C(512, 512, 3, 1, 0), C(512, 512, 1, 1, 0),
        )
        # 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1
        self.audio_encoder = nn.Sequential(
            C(1, 32, 3, 1, 1), res(32), res(32),
            C(32, 64, 3, (3, 1), 1), res(64), res(64),
            C(64, 128, 3, 3, 1), res(128), res(128),
            C(128, 256, 3, (3, 2), 1), res(256), res(256),
            C(256, 512, 3, 1, 0), C(512, 512, 1, 1, 0),
        )

    def embed(self, mel: torch.Tensor, face: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Raw encoder outputs ``(audio, face)``, each (B, 512, 1, 1), before normalisation."""
        return self.audio_encoder(mel), self.face_encoder(face)

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        audio, face_emb = self.embed(mel, face)
        audio = F.normalize(audio.reshape(audio.shape[0], -1), p=2, dim=1)
        face_emb = F.normalize(face_emb.reshape(face_emb.shape[0], -1), p=2, dim=1)
        return audio, face_emb


def sync_cosine(audio_embedding: torch.Tensor, face_embedding: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of already-normalised embeddings, (B,)."""
    return (audio_embedding * face_embedding).sum(dim=1)
