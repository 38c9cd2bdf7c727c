"""Wav2Lip generator (Prajwal et al., ACM MM 2020), architecture-compatible with the released
checkpoints (github.com/Rudrabha/Wav2Lip, ``models.Wav2Lip``).

Tensors and conventions (what the released weights expect):

* ``face``: (B, 6, 96, 96) float in [0, 1], OpenCV **BGR** channel order. Channels 0-2 are the
  target crop with its lower half (rows 48-95) set to zero; channels 3-5 are an unmasked
  "reference" crop of the same person (at inference: the same frame).
* ``mel``: (B, 1, 80, 16): 16 mel frames (0.2 s at 80 mel frames per second) from the
  Wav2Lip audio front-end, values in [-4, 4].
* output: (B, 3, 96, 96) sigmoid, BGR, in [0, 1].

The batched upstream convention is accepted too: ``mel`` (B, T, 1, 80, 16) with ``face``
(B, 6, T, 96, 96) is flattened time-major to (T*B, ...) and the output comes back as
(B, 3, T, 96, 96).

The network is a U-Net: a 7-stage face encoder (96 -> 1 px), an audio encoder that maps the
mel window to a 512-d vector, and a decoder that starts from the audio embedding and, at
every scale, concatenates the matching face-encoder feature map (skip connection).

Module names (``face_encoder_blocks``, ``audio_encoder``, ``face_decoder_blocks``,
``output_block``) and their nesting match upstream, so state-dict keys are identical once
DataParallel's ``module.`` prefix is stripped (:func:`ladtalk.checkpoints.load_state_dict`
does that).
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from ladtalk.models.blocks import ConvBNReLU as C
from ladtalk.models.blocks import ConvTransposeBNReLU as T
from ladtalk.models.blocks import res
from ladtalk.models.wav2lip_io import FACE_SIZE, MEL_BINS, MEL_STEPS  # noqa: F401 (re-exported)


def build_audio_encoder_gen() -> nn.Sequential:
    """(B,1,80,16) -> (B,512,1,1). Strides shrink 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1."""
    return nn.Sequential(
        C(1, 32, 3, 1, 1), res(32), res(32),
        C(32, 64, 3, (3, 1), 1), res(64), res(64),
        C(64, 128, 3, 3, 1), res(128), res(128),
        C(128, 256, 3, (3, 2), 1), res(256),
        C(256, 512, 3, 1, 0), C(512, 512, 1, 1, 0),
    )


class Wav2Lip(nn.Module):
    """The Wav2Lip generator; see the module docstring for the input/output convention."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(C(6, 16, 7, 1, 3)),                                    # 96
            nn.Sequential(C(16, 32, 3, 2, 1), res(32), res(32)),                 # 48
            nn.Sequential(C(32, 64, 3, 2, 1), res(64), res(64), res(64)),        # 24
            nn.Sequential(C(64, 128, 3, 2, 1), res(128), res(128)),              # 12
            nn.Sequential(C(128, 256, 3, 2, 1), res(256), res(256)),             # 6
            nn.Sequential(C(256, 512, 3, 2, 1), res(512)),                       # 3
            nn.Sequential(C(512, 512, 3, 1, 0), C(512, 512, 1, 1, 0)),           # 1
        ])
        self.audio_encoder = build_audio_encoder_gen()
        # Decoder input channels = previous decoder output + matching encoder skip.
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(C(512, 512, 1, 1, 0)),                                 # 1
            nn.Sequential(T(1024, 512, 3, 1, 0), res(512)),                      # 3
            nn.Sequential(T(1024, 512, 3, 2, 1, 1), res(512), res(512)),         # 6
            nn.Sequential(T(768, 384, 3, 2, 1, 1), res(384), res(384)),          # 12
            nn.Sequential(T(512, 256, 3, 2, 1, 1), res(256), res(256)),          # 24
            nn.Sequential(T(320, 128, 3, 2, 1, 1), res(128), res(128)),          # 48
            nn.Sequential(T(160, 64, 3, 2, 1, 1), res(64), res(64)),             # 96
        ])
        self.output_block = nn.Sequential(
            C(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    def encode_face(self, face: torch.Tensor) -> List[torch.Tensor]:
        """Outputs of every face-encoder stage, finest first ((B,16,96,96) ... (B,512,1,1))."""
        feats = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """``mel`` (B,1,80,16), ``face`` (B,6,96,96) -> (B,3,96,96); or the 5-D form."""
        sequence = face.dim() == 5
        if sequence:
            if mel.dim() != 5 or mel.shape[:2] != (face.shape[0], face.shape[2]):
                raise ValueError("5-D input needs mel (B,T,1,80,16) and face (B,6,T,96,96), got "
                                 f"{tuple(mel.shape)} and {tuple(face.shape)}")
            batch, steps = mel.shape[0], mel.shape[1]
            # Time-major flattening: row t*B + b holds step t of sequence b (as upstream).
            mel = mel.transpose(0, 1).reshape(steps * batch, *mel.shape[2:])
            face = face.permute(2, 0, 1, 3, 4).reshape(steps * batch, face.shape[1],
                                                       *face.shape[3:])
        elif face.dim() != 4 or mel.dim() != 4 or mel.shape[0] != face.shape[0]:
            raise ValueError("expected mel (B,1,80,16) and face (B,6,96,96) with the same B, got "
                             f"{tuple(mel.shape)} and {tuple(face.shape)}")

        feats = self.encode_face(face)
        x = self.audio_encoder(mel)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), feats.pop()), dim=1)
        out = self.output_block(x)

        if sequence:
            out = out.reshape(steps, batch, *out.shape[1:]).permute(1, 2, 0, 3, 4).contiguous()
        return out
