"""Wav2Lip's output from one row down only: :class:`Wav2LipRows`.

A pipeline pastes only the lower face of the generated crop and measures its colours on a
band above that, so the rows above the band are drawn for nothing, and the decoder's last
stages, at 24, 48 and 96 px, are most of Wav2Lip's arithmetic. ``Wav2LipRows(model, rows)``
runs the face and audio encoders whole (the bottleneck sees the whole face) and each decoder
stage on the rows its successors need, working backwards from ``rows``: a 3x3 convolution
needs one row more above than it outputs, the stride-2 transposed convolution half as many.
A 3x3 block on a slice of rows is padded at the sides and the bottom only (the real row above
stands in for the top padding); a transposed block runs as it is on its slice (its padding
drops the one output row that would miss an input row; given asymmetric padding instead it
takes a slow path in eager torch at bf16). An operation from row 0 keeps its padding. So the
output equals rows ``rows:`` of the whole model's, up to float rounding (tested), for 18 %
less arithmetic at ``rows`` = 30 (OpenVINO: 1.2x the crops per second).
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
    return start // 2 if isinstance(op, ConvTransposeBNReLU) else start - 1


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
    """A 3x3 stride-1 block on ``x`` (the rows from ``have`` on) -> its rows from ``start``:
    the rows from ``start - 1`` on, padded at the sides and the bottom only."""
    if start == 0:
        return block(x)
    conv, post = block.conv_block[0], block.conv_block[1:]
    x = x[:, :, start - 1 - have:]
    y = post(F.conv2d(F.pad(x, (1, 1, 0, 1)), conv.weight, conv.bias))
    return block.act(y + x[:, :, 1:] if block.residual else y)


def _tconv_rows(block: ConvTransposeBNReLU, x: torch.Tensor, have: int,
                start: int) -> torch.Tensor:
    """The stride-2 transposed block on ``x`` (the rows from ``have`` on) -> its rows from
    ``start``: run on the input rows from ``first = start // 2`` (input row ``i`` lands on
    output rows ``2 i - 1`` to ``2 i + 1``, and the padding drops row ``2 * first - 1``, so
    the rows it outputs, from ``2 * first`` on, are whole); the one above ``start`` is
    dropped when ``start`` is odd."""
    if start == 0:
        return block(x)
    first = start // 2
    return block(x[:, :, first - have:])[:, :, start - 2 * first:]


def _is(block: nn.Module, kind: type, stride: Tuple[int, int], out_pad: Tuple[int, ...]) -> bool:
    """Whether ``block`` is a ``kind`` block with a 3x3 kernel, padding 1 and this stride (and
    output padding): the geometry the row arithmetic above assumes."""
    if not isinstance(block, kind):
        return False
    conv = block.conv_block[0]
    return (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), stride, (1, 1)) and \
        tuple(conv.output_padding) == out_pad


class Wav2LipRows(nn.Module):
    """``model``'s output rows from ``rows`` on: (B,1,80,16), (B,6,96,96) -> (B,3,96-rows,96).

    Holds ``model`` (shares its weights; BatchNorm may be folded or not)."""

    def __init__(self, model: Wav2Lip, rows: int) -> None:
        super().__init__()
        stages = model.face_decoder_blocks[_FIRST_PARTIAL:]
        if not all(_is(s[0], ConvTransposeBNReLU, (2, 2), (1, 1))
                   and all(_is(b, ConvBNReLU, (1, 1), (0, 0)) for b in s[1:]) for s in stages) \
                or not _is(model.output_block[0], ConvBNReLU, (1, 1), (0, 0)):
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
