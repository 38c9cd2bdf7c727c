"""Convolution building blocks shared by the Wav2Lip generator and its SyncNet expert.

Each block is ``conv -> BatchNorm -> (+ input, if residual) -> ReLU``. The conv and the
BatchNorm live in a two-element ``nn.Sequential`` called ``conv_block`` so that state-dict
keys read ``<prefix>.conv_block.0.weight`` (conv) and ``<prefix>.conv_block.1.running_mean``
(BatchNorm), exactly as in the released Wav2Lip checkpoints.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import nn

IntOr2 = Union[int, Tuple[int, int]]


class ConvBNReLU(nn.Module):
    """Conv2d + BatchNorm2d + optional identity shortcut + ReLU.

    ``residual=True`` adds the block input to the normalised conv output before the ReLU; it
    requires ``cin == cout`` and a shape-preserving conv (stride 1, "same" padding).
    """

    def __init__(self, cin: int, cout: int, kernel_size: IntOr2, stride: IntOr2 = 1,
                 padding: IntOr2 = 0, residual: bool = False) -> None:
        super().__init__()
        if residual and cin != cout:
            raise ValueError(f"residual block needs cin == cout, got {cin} -> {cout}")
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class ConvTransposeBNReLU(nn.Module):
    """ConvTranspose2d + BatchNorm2d + ReLU (the generator's upsampling step)."""

    def __init__(self, cin: int, cout: int, kernel_size: IntOr2, stride: IntOr2 = 1,
                 padding: IntOr2 = 0, output_padding: IntOr2 = 0) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def res(ch: int) -> ConvBNReLU:
    """Shape-preserving 3x3 residual block with ``ch`` channels."""
    return ConvBNReLU(ch, ch, 3, 1, 1, residual=True)

