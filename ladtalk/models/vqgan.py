"""Convolutional encoder and decoder of a taming-transformers VQGAN (own implementation).

Module names and parameter shapes follow taming's ``taming/modules/diffusionmodules/model.py``
so that state dicts are interchangeable:

* ``Normalize``: GroupNorm with 32 groups, eps 1e-6, affine; the nonlinearity is swish
  (``x * sigmoid(x)``).
* ``ResnetBlock``: ``norm1 -> swish -> conv1 (3x3) -> norm2 -> swish -> dropout -> conv2 (3x3)``
  plus the input, through a 1x1 ``nin_shortcut`` when the channel count changes.
* ``AttnBlock``: single-head self-attention over the H*W positions with 1x1-conv ``q``, ``k``,
  ``v``, ``proj_out`` (scale C^-1/2), residual.
* ``Downsample``: zero-pad right and bottom by one pixel, then a stride-2 3x3 conv without
  padding (the asymmetric pad keeps H/2 exactly). ``Upsample``: nearest x2, then a 3x3 conv.
* ``Encoder``: ``conv_in``; per level ``down[i].block[j]`` (+ ``down[i].attn[j]`` when the
  current resolution is in ``attn_resolutions``) and ``down[i].downsample`` except at the last
  level; ``mid.block_1, mid.attn_1, mid.block_2``; ``norm_out, swish, conv_out``.
* ``Decoder``: ``conv_in``; the same mid blocks; levels run from coarse to fine with
  ``num_res_blocks + 1`` blocks each, stored at ``up[i]`` for level i (so ``up[0]`` is the
  finest), ``up[i].upsample`` except at level 0; ``norm_out, swish, conv_out``.

Resolution only decides where attention sits (level i works at ``resolution / 2**i``); the
networks are fully convolutional otherwise.

Patch-consistent variant (ours, not in taming): ``norm="none"`` replaces every GroupNorm by
the identity and ``mid_attn=False`` drops the mid-block attention. Nothing then depends on
statistics of the whole image, so a model trained on random patches computes the same
function on a whole crop (up to the zero padding at the patch border). Without normalisation
each residual branch's last conv starts at zero (the block starts as the identity, as in
Fixup / SkipInit), which keeps training stable at enrollment learning rates.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("group", "none")


def Normalize(channels: int, norm: str = "group") -> nn.Module:  # noqa: N802 - upstream name
    if norm == "none":
        return nn.Identity()
    if norm != "group":
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0,
                 norm: str = "group") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = Normalize(in_channels, norm)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = Normalize(out_channels, norm)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, 1, 0)
        if norm == "none":  # start each residual branch at zero (identity block)
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1, 1, 0)
        self.k = nn.Conv2d(channels, channels, 1, 1, 0)
        self.v = nn.Conv2d(channels, channels, 1, 1, 0)
        self.proj_out = nn.Conv2d(channels, channels, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        # (B, 1 head, H*W, C) for scaled_dot_product_attention; its default scale is C^-1/2
        q, k, v = (t(n).reshape(b, 1, c, h * w).transpose(2, 3) for t in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(channels: int, dropout: float, norm: str = "group", attn: bool = True) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout, norm)
    mid.attn_1 = AttnBlock(channels) if attn else nn.Identity()
    mid.block_2 = ResnetBlock(channels, channels, dropout, norm)
    return mid


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> latent (B, z_channels [x2 if double_z], H/f, W/f)."""

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 attn_resolutions: Sequence[int], in_channels: int, resolution: int,
                 z_channels: int, double_z: bool = False, dropout: float = 0.0,
                 norm: str = "group", mid_attn: bool = True) -> None:
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        in_mult = (1,) + tuple(ch_mult)
        res = resolution
        self.down = nn.ModuleList()
        block_in = ch
        for level in range(self.num_resolutions):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            block_in = ch * in_mult[level]
            block_out = ch * ch_mult[level]
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, dropout, norm))
                block_in = block_out
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            down = nn.Module()
            down.block = blocks
            down.attn = attns
            if level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
                res //= 2
            self.down.append(down)
        self.mid = _mid(block_in, dropout, norm, mid_attn)
        self.norm_out = Normalize(block_in, norm)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level, down in enumerate(self.down):
            for j, block in enumerate(down.block):
                h = block(h)
                if len(down.attn) > 0:
                    h = down.attn[j](h)
            if level != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z_channels, h, w) -> image (B, out_ch, h*f, w*f), unclamped."""

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 attn_resolutions: Sequence[int], resolution: int, z_channels: int,
                 dropout: float = 0.0, norm: str = "group", mid_attn: bool = True) -> None:
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _mid(block_in, dropout, norm, mid_attn)
        ups = []
        for level in reversed(range(self.num_resolutions)):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[level]
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, dropout, norm))
                block_in = block_out
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            up = nn.Module()
            up.block = blocks
            up.attn = attns
            if level != 0:
                up.upsample = Upsample(block_in)
                res *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = Normalize(block_in, norm)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(range(self.num_resolutions)):
            up = self.up[level]
            for j, block in enumerate(up.block):
                h = block(h)
                if len(up.attn) > 0:
                    h = up.attn[j](h)
            if level != 0:
                h = up.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))
