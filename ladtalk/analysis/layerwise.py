"""Layer-wise bounds on the encoder's Jacobian norm (docs/robustness.md).

:func:`conv_operator_norm_bound` bounds one convolution through its Fourier symbol;
:func:`layerwise_bounds` composes such bounds block by block at the actual activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def max_symbol_norm(w: torch.Tensor, gh: int, gw: int, max_batch_bytes: int = 1 << 27) -> float:
    """Largest spectral norm of the kernel's symbol ``sum_ab W_ab e^{2 pi i (a u/gh + b v/gw)}``
    over the gh x gw DFT grid (half of it suffices: the symbol at -w is the conjugate)."""
    cout, cin, kh, kw = w.shape
    wc = w.to(torch.complex128)
    dev = w.device
    u = torch.arange(gh, dtype=torch.float64, device=dev)
    v = torch.arange(gw // 2 + 1, dtype=torch.float64, device=dev)
    ka = torch.arange(kh, device=dev, dtype=torch.float64)[:, None]
    kb = torch.arange(kw, device=dev, dtype=torch.float64)[:, None]
    ph = torch.exp(2j * math.pi * ka * u / gh)
    pw = torch.exp(2j * math.pi * kb * v / gw)
    rows = max(1, max_batch_bytes // max(1, v.numel() * cout * cin * 16))
    best = 0.0
    for s in range(0, gh, rows):
        what = torch.einsum("oiab,au,bv->uvoi", wc, ph[:, s:s + rows], pw)
        best = max(best, float(torch.linalg.svdvals(what)[..., 0].max()))
    return best


@torch.no_grad()
def conv_operator_norm_bound(conv: nn.Conv2d, in_hw: Tuple[int, int], grid: int = 32,
                             max_batch_bytes: int = 1 << 27) -> float:
    """Upper bound on the L2 operator norm of ``conv`` (no bias) on (in_h, in_w) inputs.

    1x1 convs: exactly ``||W||_2``. Padded maps up to ``grid`` px: the exact norm on the padded
    torus; larger ones: the symbol sampled on a ``grid`` x ``grid`` lattice, scaled by the
    Szego factor ``1 / (cos(pi n_h / grid) cos(pi n_w / grid))``, ``n = (k - 1) / 2``.
    """
    if conv.groups != 1 or tuple(conv.dilation) != (1, 1) or not isinstance(conv.padding, tuple):
        raise ValueError("conv_operator_norm_bound supports groups=1, dilation=1, numeric padding")
    w = conv.weight.detach().double()
    cout, cin, kh, kw = w.shape
    if kh == kw == 1:
        return float(torch.linalg.matrix_norm(w[:, :, 0, 0], ord=2))
    mh = max(int(in_hw[0]) + 2 * int(conv.padding[0]), kh)
    mw = max(int(in_hw[1]) + 2 * int(conv.padding[1]), kw)
    if mh <= grid and mw <= grid:
        return max_symbol_norm(w, mh, mw, max_batch_bytes)
    g = int(grid)
    nh, nw = (kh - 1) / 2.0, (kw - 1) / 2.0
    if g <= 2 * max(nh, nw):
        raise ValueError(f"grid {g} too coarse for a {kh}x{kw} kernel")
    factor = 1.0 / (math.cos(math.pi * nh / g) * math.cos(math.pi * nw / g))
    return max_symbol_norm(w, g, g, max_batch_bytes) * factor


def _gn_lip(gn: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """Per-sample bound on ||dGN/dx|| at x: max over groups of max|gamma| / sqrt(var + eps)."""
    b = x.shape[0]
    g = gn.num_groups
    var = x.double().reshape(b, g, -1).var(dim=2, unbiased=False)
    inv = 1.0 / torch.sqrt(var + gn.eps)
    if gn.affine:
        gam = gn.weight.detach().double().abs().reshape(g, -1).max(1).values
    else:
        gam = torch.ones(g, dtype=torch.float64, device=x.device)
    return (inv * gam[None]).max(1).values


def _spectral_norm_cp(t: torch.Tensor) -> torch.Tensor:
    """Per-sample ||t_b||_2 of (B, C, P) matrices (float64)."""
    return torch.linalg.svdvals(t.double())[:, 0]


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _swish_lip(a: torch.Tensor) -> torch.Tensor:
    """Per-sample max |swish'(a)| (the exact norm of the diagonal Jacobian)."""
    s = torch.sigmoid(a.double())
    return (s * (1 + a.double() * (1 - s))).abs().flatten(1).max(1).values


class _Walker:
    """Re-runs the taming encoder forward while composing per-block Jacobian bounds."""

    def __init__(self) -> None:
        self.cache: Dict[Tuple[int, int, int], float] = {}

    def conv(self, conv: nn.Conv2d, x: torch.Tensor) -> float:
        key = (id(conv), x.shape[2], x.shape[3])
        if key not in self.cache:
            self.cache[key] = conv_operator_norm_bound(conv, (x.shape[2], x.shape[3]))
        return self.cache[key]

    def resblock(self, blk: nn.Module, x: torch.Tensor):
        a1 = blk.norm1(x)
        l1 = _gn_lip(blk.norm1, x) * _swish_lip(a1)
        c1 = self.conv(blk.conv1, a1)
        h = blk.conv1(_swish(a1))
        a2 = blk.norm2(h)
        l2 = _gn_lip(blk.norm2, h) * _swish_lip(a2)
        c2 = self.conv(blk.conv2, a2)
        h = blk.conv2(_swish(a2))  # dropout is the identity in eval mode
        if hasattr(blk, "nin_shortcut"):
            short, x = self.conv(blk.nin_shortcut, x), blk.nin_shortcut(x)
        elif hasattr(blk, "conv_shortcut"):
            short, x = self.conv(blk.conv_shortcut, x), blk.conv_shortcut(x)
        else:
            short = 1.0
        return x + h, short + c2 * l2 * c1 * l1, short + c2 * c1

    def attn(self, blk: nn.Module, x: torch.Tensor):
        b, c, hh, ww = x.shape
        n = blk.norm(x)
        lgn = _gn_lip(blk.norm, x)
        q, k, v = (m(n).double().reshape(b, c, hh * ww) for m in (blk.q, blk.k, blk.v))
        a = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (b, P, P) rows sum 1
        out = (v @ a.transpose(1, 2)).reshape(b, c, hh, ww).to(x.dtype)
        y = x + blk.proj_out(out)
        # softmax Jacobian of row i is diag(a_i) - a_i a_i^T; Gershgorin: <= max_k 2 a_ik (1-a_ik)
        lam = (2 * a * (1 - a)).amax(dim=(1, 2)).clamp(max=0.5)
        # ||A||_2 <= sqrt(||A||_1 ||A||_inf) with ||A||_inf = 1 (rows are probabilities)
        n_a = torch.sqrt(a.sum(dim=1).amax(dim=1).clamp(min=1.0))
        n_q, n_k, n_v = (_spectral_norm_cp(t) for t in (q, k, v))
        wq, wk, wv, wo = (self.conv(m, n) for m in (blk.q, blk.k, blk.v, blk.proj_out))
        inner = wv * n_a + n_v * lam * (wq * n_k + n_q * wk) / math.sqrt(c)
        return y, 1.0 + wo * inner * lgn, 1.0 + wo * wv

    def downsample(self, ds: nn.Module, x: torch.Tensor):
        xp = F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0)  # zero-padding: an isometry
        c = self.conv(ds.conv, xp)
        return ds.conv(xp), c, c




@dataclass
class LayerwiseBound:
    """Layer-wise Jacobian bounds at some faces; ``local``/``naive`` None when unavailable."""

    local: Optional[float]
    naive: Optional[float]
    note: str
    per_face_local: List[float] = field(default_factory=list)


_NOTE = ("local: guaranteed upper bound on the Jacobian norm at these faces only; naive: conv "
         "norms with GroupNorm/swish/softmax counted as 1, not a bound; a global layer-wise "
         "bound is vacuous (GroupNorm and dot-product attention are not globally Lipschitz)")


def _walk_encoder(model: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """Re-run ``encode_latent`` on [0, 1] ``x`` block by block: (h, local bounds, naive)."""
    enc = model.encoder
    walker = _Walker()
    h = x * 2.0 - 1.0
    loc = torch.full((x.shape[0],), 2.0, dtype=torch.float64, device=x.device)  # [0,1]->[-1,1]
    naive = 2.0
    c = walker.conv(enc.conv_in, h)
    h = enc.conv_in(h)
    loc, naive = loc * c, naive * c
    steps = []
    for down in enc.down:
        for j, blk in enumerate(down.block):
            steps.append((walker.resblock, blk))
            if len(down.attn) > 0:
                steps.append((walker.attn, down.attn[j]))
        if hasattr(down, "downsample"):
            steps.append((walker.downsample, down.downsample))
    for name in ("block_1", "attn_1", "block_2"):
        blk = getattr(enc.mid, name)
        steps.append((walker.attn if name.startswith("attn") else walker.resblock, blk))
    for step, blk in steps:
        h, bl, bn = step(blk, h)
        loc, naive = loc * bl, naive * bn
    a = enc.norm_out(h)
    loc = loc * _gn_lip(enc.norm_out, h) * _swish_lip(a)
    c = walker.conv(enc.conv_out, a)
    h = enc.conv_out(_swish(a))
    c2 = walker.conv(model.quant_conv, h)
    h = model.quant_conv(h)
    return h, loc * c * c2, naive * c * c2


@torch.no_grad()
def layerwise_bounds(model: nn.Module, x01: torch.Tensor) -> LayerwiseBound:
    """Guaranteed local bound and naive product for ``encoder_map`` at the faces ``x01``.

    Values are w.r.t. [0, 1] input; unavailable (None) when the encoder lacks the taming
    structure the walk mirrors (checked against ``encode_latent``).
    """
    model.eval()
    x = x01.detach().float().to(model.device)
    try:
        h, loc, naive = _walk_encoder(model, x)
        ref = model.encode_latent(x * 2.0 - 1.0)
        if h.shape != ref.shape or not torch.allclose(h, ref, rtol=1e-3, atol=1e-4):
            raise ValueError("layer-wise walk does not reproduce encode_latent")
    except (AttributeError, ValueError, TypeError) as exc:
        return LayerwiseBound(None, None, "layer-wise bound unavailable: encoder structure "
                              f"not recognised ({exc})")
    return LayerwiseBound(float(loc.max()), float(naive), _NOTE, [float(v) for v in loc])


__all__ = ["LayerwiseBound", "layerwise_bounds", "conv_operator_norm_bound", "max_symbol_norm"]
