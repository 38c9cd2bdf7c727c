"""Wav2Lip's output from one row down only: :class:`Wav2LipRows`.

A pipeline pastes only the lower face of the generated crop and measures its colours on a
band above that, so the rows above the band are drawn for nothing, and the decoder's last
stages, at 24, 48 and 96 px, are most of Wav2Lip's arithmetic. ``Wav2LipRows(model, rows)``
runs the face and audio encoders whole (the bottleneck sees the whole face) and each decoder
stage on the rows its successors need, working backwards from ``rows``: a 3x3 convolution
needs one row more above than it outputs, the stride-2 transposed convolution half as many.
An operation starting at row 0 keeps its zero padding; one starting lower reads the real row
above instead. So the output equals rows ``rows:`` of the whole model's, up to float rounding
(tested), for a fifth less arithmetic at ``rows`` = 30.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ladtalk.models.blocks import ConvBNReLU, ConvTransposeBNReLU
from ladtalk.models.wav2lip import Wav2Lip
from ladtalk.models.wav2lip_io import FACE_SIZE

#: decoder stages from here on (12, 24, 48, 96 px) run on part of their rows; the first three
#: (1, 3, 6 px) always whole
_FIRST_PARTIAL = 3


def _needs(op: nn.Module, start: int) -> int:
    """The first input row ``op`` (a 3x3 stride-1 or a stride-2 transposed block) needs for
    its output rows from ``start`` on."""
    if start == 0:
        return 0
    return (start - 1) // 2 if isinstance(op, ConvTransposeBNReLU) else start - 1


def row_plan(model: Wav2Lip, rows: int) -> List[Tuple[int, ...]]:
    """For each partial decoder stage, the first row each of its blocks outputs (the last is
    the stage's own first row, where its skip connection is cut too)."""
    if not 0 <= rows < FACE_SIZE:
        raise ValueError(f"rows must be in [0, {FACE_SIZE}), got {rows}")
    start = _needs(model.output_block[0], rows)
    plan: List[Tuple[int, ...]] = []
    for stage in reversed(model.face_decoder_blocks[_FIRST_PARTIAL:]):
        starts = []
        for op in reversed(stage):
            starts.append(start)
            start = _needs(op, start)
        plan.append(tuple(reversed(starts)))
    return list(reversed(plan))


def _conv_rows(block: ConvBNReLU, x: torch.Tensor, have: int, start: int) -> torch.Tensor:
    """A 3x3 stride-1 block on ``x`` (the rows from ``have`` on) -> its rows from ``start``."""
    conv, post = block.conv_block[0], block.conv_block[1:]
    if start == 0:
        y, skip = conv(x), x
    else:
        x = x[:, :, start - 1 - have:]
        y, skip = F.conv2d(F.pad(x, (1, 1, 0, 1)), conv.weight, conv.bias), x[:, :, 1:]
    y = post(y)
    return block.act(y + skip if block.residual else y)


def _tconv_rows(block: ConvTransposeBNReLU, x: torch.Tensor, have: int,
                start: int) -> torch.Tensor:
    """The stride-2 transposed block on ``x`` (the rows from ``have`` on) -> its rows from
    ``start``: without top padding, input row ``i`` lands on rows ``2 i - 1`` to ``2 i + 1``."""
    conv, post = block.conv_block[0], block.conv_block[1:]
    if start == 0:
        return block.act(post(conv(x)))
    first = (start - 1) // 2
    y = F.conv_transpose2d(x[:, :, first - have:], conv.weight, conv.bias, stride=2,
                           padding=(0, 1), output_padding=(0, 1))
    return block.act(post(y[:, :, start - 2 * first + 1:]))


class Wav2LipRows(nn.Module):
    """``model``'s output rows from ``rows`` on: (B,1,80,16), (B,6,96,96) -> (B,3,96-rows,96).

    Holds ``model`` (shares its weights; BatchNorm may be folded or not)."""

    def __init__(self, model: Wav2Lip, rows: int) -> None:
        super().__init__()
        stages = model.face_decoder_blocks[_FIRST_PARTIAL:]
        if not all(isinstance(s[0], ConvTransposeBNReLU) and s[0].conv_block[0].stride == (2, 2)
                   and all(isinstance(b, ConvBNReLU) for b in s[1:]) for s in stages):
            raise ValueError("Wav2LipRows needs the Wav2Lip generator's decoder")
        self.model = model
        self.rows = int(rows)
        self.plan = row_plan(model, self.rows)

    def extra_repr(self) -> str:
        return f"rows={self.rows}"

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        m = self.model
        feats = m.encode_face(face)
        x = m.audio_encoder(mel)
        for block in m.face_decoder_blocks[:_FIRST_PARTIAL]:
            x = torch.cat((block(x), feats.pop()), dim=1)
        have = 0
        for stage, starts in zip(m.face_decoder_blocks[_FIRST_PARTIAL:], self.plan):
            x = _tconv_rows(stage[0], x, have, starts[0])
            for block, (before, start) in zip(stage[1:], zip(starts, starts[1:])):
                x = _conv_rows(block, x, before, start)
            have = starts[-1]
            x = torch.cat((x, feats.pop()[:, :, have:]), dim=1)
        y = _conv_rows(m.output_block[0], x, have, self.rows)
        return m.output_block[2](m.output_block[1](y))


__all__ = ["Wav2LipRows", "row_plan"]
