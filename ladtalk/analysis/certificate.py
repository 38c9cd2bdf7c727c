"""Theorem 3.3 of LaDTalk as measurable numbers: when does a degraded face keep its codes?

The theorem
-----------
Let ``h = E(x)`` be the pre-quantization latent (``quant_conv(encoder(x))``) and look at one
latent position ``p`` (a vector ``h_p`` in R^D, D = embed_dim). Let ``c`` be the code nearest
to ``h_p(x)``, ``gamma >= ||h_p(x) - c||`` and ``d_C`` the minimum distance between two
distinct codes. If ``||h_p(x + N) - h_p(x)|| <= L_enc ||N||`` then

    ||N|| < (d_C - 2 gamma) / (2 L_enc)   ==>   the code at p is still c,

because ``||h_p(x+N) - c|| < d_C / 2`` while every other code is at least ``d_C / 2`` away.
The right-hand side is the **certified radius**. It is negative (no certificate) whenever
``2 gamma >= d_C``.

Norms and units (one convention everywhere in this module)
----------------------------------------------------------
* ``||N||`` is the **L2 norm of the whole image perturbation on the [0, 1] pixel scale**, over
  all channels and pixels of the model-resolution crop: ``||x_degraded - x_clean||_2``. The
  radius is in the same unit (``radius_rms`` divides by sqrt(C*H*W) to give the per-pixel RMS
  equivalent, directly comparable to a noise sigma).
* Latent distances (``d_C``, ``gamma``) are Euclidean norms of D-dim vectors at one position.
* ``L_enc`` is the **per-position** constant the theorem uses:
  ``sup ||h_p(x') - h_p(x)||_2 / ||x' - x||_2`` with x on the [0, 1] scale (so it is twice the
  constant w.r.t. the model's [-1, 1] input). It is at most the Lipschitz constant of the
  whole latent map (``L_enc_global``), which we also report.

How L_enc is estimated (and why it is an *estimate*)
---------------------------------------------------
Every empirical number below is a **lower** bound of the true constant, so the reported radius
is optimistic; ``codes_preserved`` vs ``certified_fraction`` checks it against reality.

* random: the worst ratio ``||h_p(x+d) - h_p(x)|| / ||d||`` over ``n_random`` Gaussian
  perturbations ``d`` of per-pixel std ``eps`` (finite differences, no linearisation).
* power: power iteration on ``J_p^T J_p`` (``J_p`` = Jacobian of ``h_p`` at a face; VJPs by
  backward passes, JVPs by double backward), started from the worst random perturbation
  of that position. The Rayleigh quotient never decreases along power iteration, so this is
  >= the random ratio up to the linearisation error of ``eps``, and <= ``||J_p||_2``. Run on the
  ``max_positions`` most sensitive positions (by the random ratio) of each of ``faces`` faces.
* ``L_enc = max(power, random)`` (per position); ``L_enc_global_*`` the same for the whole map.
* layer-wise **local** bound (``L_layerwise_local``): a mathematically guaranteed upper bound
  on ``||J(x)||_2`` at each evaluated face (so on the per-position and global Jacobian norms
  there), composed block by block: exact-on-a-torus conv operator norms (FFT of the kernel;
  the zero-padded conv is a restriction of the circular conv on the padded grid), GroupNorm as
  ``max|gamma_c| / sqrt(var_g + eps)`` at the actual activations, swish as the largest
  ``|swish'|`` it sees, residual blocks as ``shortcut + branch``, attention through a bound
  on the softmax Jacobian at the actual Q, K, V. It bounds the Jacobian at those faces only;
  it says nothing about other inputs. Conv norms are exact on the padded torus for small
  maps and a sampled-spectrum bound (about 1% larger) on big ones (see
  :func:`conv_operator_norm_bound`).
* layer-wise **naive** product (``L_layerwise_naive``): conv norms multiplied with GroupNorm,
  swish and the attention softmax counted as 1. This is what people usually quote, but it is
  **not a bound**: GroupNorm divides by the activation std (unbounded gain for flat inputs)
  and dot-product attention is not globally Lipschitz, so no finite global layer-wise bound
  exists for this encoder (``L_layerwise_global = None``, "vacuous").

Per-position refinement
-----------------------
The same triangle-inequality argument with the position's own nearest (d1) and second-nearest
(d2) code distances gives the per-position radius ``(d2 - d1) / (2 L_enc)`` >= the global one.
``certified_fraction[spec]`` is the fraction of latent positions whose per-position radius
exceeds that frame's ``||N||``; ``codes_preserved[spec]`` is the measured fraction whose code is
unchanged. If ``L_enc`` were exact, certified <= preserved always.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ladtalk.models.quantizer import codebook_min_distance

SWISH_MAX_SLOPE = 1.0998393  # sup |d/dx x*sigmoid(x)| (at x ~ 2.3994); min slope is ~ -0.0998


# -- helpers ---------------------------------------------------------------------------------
def _math_sdpa():
    """Attention through the math kernel: the fused CPU kernel has no forward-mode AD."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.MATH)
    except ImportError:  # pragma: no cover - older torch
        return contextlib.nullcontext()


def encoder_map(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map the theorem is about: [0, 1] image (B, C, H, W) -> h (B, D, h, w), float32."""
    def f(x01: torch.Tensor) -> torch.Tensor:
        return model.encode_latent(x01 * 2.0 - 1.0)
    return f


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


def _position_norms(t: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B, h*w) Euclidean norms of the D-vectors."""
    return torch.linalg.vector_norm(t, dim=1).flatten(1)


def _quantiles(values: torch.Tensor, qs: Sequence[float]) -> List[float]:
    v = values.detach().double().flatten().cpu()
    if v.numel() == 0:
        return [float("nan")] * len(qs)
    return [float(x) for x in torch.quantile(v, torch.tensor(list(qs), dtype=torch.float64))]


def _finite_or_none(x: Optional[float]) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# -- codebook and latent statistics ----------------------------------------------------------
@torch.no_grad()
def codebook_distances(weight: torch.Tensor, used: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """``d_C`` over all codes; over the used codes; and used-code-to-any-other-code.

    ``d_C_used_to_all`` = min over used codes c of the distance from c to its nearest *other*
    code (any code): the quantity the theorem needs when only the faces' codes matter. It is
    >= ``d_C`` and <= ``d_C_used``.
    """
    w = weight.detach().double()
    out = {"d_C": float(codebook_min_distance(nn.Embedding.from_pretrained(w)))}
    if used is None or used.numel() == 0:
        out.update(d_C_used=float("nan"), d_C_used_to_all=float("nan"))
        return out
    sel = torch.unique(used.long().flatten()).to(w.device)
    out["d_C_used"] = float(codebook_min_distance(nn.Embedding.from_pretrained(w[sel])))
    d2 = ((w[sel] ** 2).sum(1, keepdim=True) + (w ** 2).sum(1)[None] - 2 * w[sel] @ w.t())
    d2[torch.arange(sel.numel(), device=w.device), sel] = float("inf")
    out["d_C_used_to_all"] = float(torch.sqrt(d2.min().clamp_min(0)))
    return out


@torch.no_grad()
def two_nearest(weight: torch.Tensor, h: torch.Tensor, chunk: int = 8192
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per position of h (B, D, hh, ww): exact distances to the nearest and second-nearest
    codes and the nearest index, each (B, hh*ww). Candidates by taming's expanded formula."""
    w = weight.detach().float()
    b, d, hh, ww = h.shape
    flat = h.detach().float().permute(0, 2, 3, 1).reshape(-1, d).to(w.device)
    d1s, d2s, ids = [], [], []
    k = min(2, w.shape[0])
    for s in range(0, flat.shape[0], chunk):
        z = flat[s:s + chunk]
        approx = (z ** 2).sum(1, keepdim=True) + (w ** 2).sum(1) - 2 * z @ w.t()
        top = torch.topk(approx, k, dim=1, largest=False).indices
        exact = torch.linalg.vector_norm(z[:, None, :] - w[top], dim=2)
        if k == 1:
            exact = torch.cat([exact, torch.full_like(exact, float("inf"))], 1)
            top = torch.cat([top, top], 1)
        srt, order = exact.sort(dim=1)
        d1s.append(srt[:, 0])
        d2s.append(srt[:, 1])
        ids.append(top.gather(1, order)[:, 0])
    shape = (b, hh * ww)
    return (torch.cat(d1s).view(shape), torch.cat(d2s).view(shape), torch.cat(ids).view(shape))


@torch.no_grad()
def codes_preserved(model: nn.Module, clean01: torch.Tensor, degraded01: torch.Tensor) -> float:
    """Fraction of latent positions whose code is the same for degraded and clean images."""
    model.eval()
    ic = model.encode(clean01 * 2 - 1).indices
    idg = model.encode(degraded01 * 2 - 1).indices
    return float((ic == idg).float().mean())


# -- Lipschitz estimates ---------------------------------------------------------------------
@dataclass
class LipschitzEstimate:
    """Empirical (lower-bound) and layer-wise estimates; units as in the module docstring."""

    per_position_power: float
    per_position_random: float
    global_power: float
    global_random: float
    layerwise_local: Optional[float] = None
    layerwise_naive: Optional[float] = None
    layerwise_note: str = ""
    faces: int = 0
    iters: int = 0
    n_random: int = 0
    eps: float = 0.0
    positions_per_face: int = 0
    per_face_power: List[float] = field(default_factory=list)
    per_face_layerwise_local: List[float] = field(default_factory=list)

    @property
    def value(self) -> float:
        """L_enc used for the radius: the largest per-position lower-bound estimate."""
        return max(self.per_position_power, self.per_position_random)

    @property
    def global_value(self) -> float:
        return max(self.global_power, self.global_random)


@contextlib.contextmanager
def _frozen_params(model: nn.Module):
    """Temporarily stop parameters from requiring grad (only input derivatives are needed)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _power_iteration(f, x: torch.Tensor, v0: torch.Tensor, iters: int,
                     mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-sample largest singular value of (mask * J) at x, started from v0; returns (K,).

    ``J^T u`` is one backward pass; ``J v`` is the derivative of the (linear in u) map
    ``u -> J^T u`` with cotangent v (double backward), so no forward-mode AD is needed and
    every iteration costs two backward passes through graphs built once. Returns the largest
    ``||J v|| / ||v||`` seen (the Rayleigh quotient is non-decreasing along the iteration).
    """
    with _math_sdpa(), torch.enable_grad():
        xx = x.detach().clone().requires_grad_(True)
        y = f(xx)
        if mask is not None:
            y = y * mask
        u0 = torch.zeros_like(y, requires_grad=True)
        (jt_u0,) = torch.autograd.grad(y, xx, u0, create_graph=True)
        v = v0 / _per_sample_norm(v0).clamp_min(1e-30).view(-1, 1, 1, 1)
        best = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for it in range(iters + 1):
            (u,) = torch.autograd.grad(jt_u0, u0, v, retain_graph=True)  # J v
            best = torch.maximum(best, _per_sample_norm(u).double())
            if it == iters:
                break
            (w,) = torch.autograd.grad(y, xx, u, retain_graph=True)  # J^T J v
            v = w / _per_sample_norm(w).clamp_min(1e-30).view(-1, 1, 1, 1)
    return best.detach()


def estimate_lipschitz(model: nn.Module, x01: torch.Tensor, *, iters: int = 8, n_random: int = 4,
                       eps: float = 1e-2, max_positions: int = 8, chunk: int = 8, seed: int = 0,
                       layerwise: bool = True) -> LipschitzEstimate:
    """Estimate L_enc (per position and global) at the faces ``x01`` (B, C, H, W) in [0, 1].

    Cost: ``B * (n_random + 1)`` forward passes, ``2 iters + 1`` backward passes for each
    of the ``B`` global chains and ``B * max_positions`` per-position chains (batched by
    ``chunk``), plus one layer-wise walk. Runs in float32 without autocast on ``x01``'s device.
    """
    model.eval()
    f = encoder_map(model)
    x = x01.detach().float().to(model.device)
    b = x.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        h0 = f(x)
        _, _, hh, ww = h0.shape
        P = hh * ww
        deltas = eps * torch.randn((n_random,) + tuple(x.shape), generator=gen).to(x)
        ratio_g = torch.zeros(n_random, b, dtype=torch.float64, device=x.device)
        ratio_p = torch.zeros(n_random, b, P, dtype=torch.float64, device=x.device)
        for r in range(n_random):
            dh = f(x + deltas[r]) - h0
            dn = _per_sample_norm(deltas[r]).double()
            ratio_g[r] = _per_sample_norm(dh).double() / dn
            ratio_p[r] = _position_norms(dh).double() / dn[:, None]
    # global chains, each started from that face's worst random perturbation
    if n_random:
        best_r = ratio_g.argmax(0)
        v0 = deltas[best_r, torch.arange(b, device=best_r.device)]
    else:
        v0 = torch.randn(tuple(x.shape), generator=gen).to(x)
    with _frozen_params(model):
        glob = _power_iteration(f, x, v0, iters, None)
    # per-position chains on the most sensitive positions of each face
    if n_random:
        pos_score, pos_best_r = ratio_p.max(0)  # (b, P)
    else:
        pos_score = torch.rand(b, P, generator=gen).to(x.device).double()
        pos_best_r = None
    k = min(int(max_positions), P)
    top = pos_score.topk(k, dim=1).indices  # (b, k)
    pairs = [(i, int(p)) for i in range(b) for p in top[i]]
    pos_power = torch.zeros(len(pairs), dtype=torch.float64, device=x.device)
    for s in range(0, len(pairs), max(1, chunk)):
        part = pairs[s:s + chunk]
        xb = x[[i for i, _ in part]]
        mask = torch.zeros(len(part), 1, hh, ww, device=x.device, dtype=x.dtype)
        for j, (_, p) in enumerate(part):
            mask[j, 0, p // ww, p % ww] = 1.0
        if pos_best_r is not None:
            init = torch.stack([deltas[pos_best_r[i, p], i] for i, p in part])
        else:
            init = torch.randn(tuple(xb.shape), generator=gen).to(x)
        with _frozen_params(model):
            pos_power[s:s + len(part)] = _power_iteration(f, xb, init, iters, mask)
    est = LipschitzEstimate(
        per_position_power=float(pos_power.max()) if len(pairs) else 0.0,
        per_position_random=float(ratio_p.max()) if n_random else 0.0,
        global_power=float(glob.max()),
        global_random=float(ratio_g.max()) if n_random else 0.0,
        faces=b, iters=int(iters), n_random=int(n_random), eps=float(eps),
        positions_per_face=k, per_face_power=[float(v) for v in glob])
    if layerwise:
        lw = layerwise_bounds(model, x)
        est.layerwise_local = lw["local"]
        est.layerwise_naive = lw["naive"]
        est.layerwise_note = lw["note"]
        est.per_face_layerwise_local = lw["per_face_local"]
    return est


# -- layer-wise bounds -----------------------------------------------------------------------
def _max_symbol_norm(w: torch.Tensor, gh: int, gw: int, max_batch_bytes: int) -> float:
    """max over the gh x gw DFT grid of ||sum_ab W_ab e^{2 pi i (a u / gh + b v / gw)}||_2
    (half the grid: the symbol at -w is the conjugate of the symbol at w)."""
    cout, cin, kh, kw = w.shape
    wc = w.to(torch.complex128)
    dev = w.device
    u = torch.arange(gh, dtype=torch.float64, device=dev)
    v = torch.arange(gw // 2 + 1, dtype=torch.float64, device=dev)
    ph = torch.exp(2j * math.pi * torch.arange(kh, device=dev, dtype=torch.float64)[:, None] * u / gh)
    pw = torch.exp(2j * math.pi * torch.arange(kw, device=dev, dtype=torch.float64)[:, None] * v / gw)
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

    1x1 convs: exactly ``||W||_2``. Otherwise the conv equals, on its valid outputs, the
    circular cross-correlation on the zero-padded grid (m_h, m_w); that operator's norm is the
    largest ``||W^(w)||_2`` (the kernel's symbol ``sum_t W_t e^{i w.t}``) over the m_h x m_w DFT
    frequencies. When ``m <= grid`` this maximum is computed exactly. For larger maps the symbol
    is sampled on a ``grid x grid`` frequency grid and the supremum over *all* frequencies
    (which dominates every torus size) is bounded by the sample maximum divided by
    ``cos(pi n_h / grid) cos(pi n_w / grid)``, ``n = (k - 1) / 2``: for fixed unit vectors
    ``y^H W^(w) x`` is a trigonometric polynomial of degree n per axis, and by Szego's
    inequality ``T'^2 + n^2 T^2 <= n^2 max|T|^2`` its maximum exceeds the largest sample at
    spacing 2 pi / grid by at most that factor (about 1.01 for 3x3 kernels and grid 32).
    Stride only drops outputs, so it cannot increase the norm.
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
        return _max_symbol_norm(w, mh, mw, max_batch_bytes)
    g = int(grid)
    nh, nw = (kh - 1) / 2.0, (kw - 1) / 2.0
    if g <= 2 * max(nh, nw):
        raise ValueError(f"grid {g} too coarse for a {kh}x{kw} kernel")
    factor = 1.0 / (math.cos(math.pi * nh / g) * math.cos(math.pi * nw / g))
    return _max_symbol_norm(w, g, g, max_batch_bytes) * factor


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


@torch.no_grad()
def layerwise_bounds(model: nn.Module, x01: torch.Tensor) -> Dict[str, object]:
    """Guaranteed local bound and naive product for ``encoder_map`` at the faces ``x01``.

    Returns ``{"local": max over faces, "per_face_local": [...], "naive": float, "note": str}``
    (values w.r.t. [0, 1] input). ``local``/``naive`` are ``None`` when the encoder does not have
    the taming structure this walk mirrors (checked by comparing its output with the model's).
    """
    model.eval()
    enc = model.encoder
    x = x01.detach().float().to(model.device)
    walker = _Walker()
    try:
        h = x * 2.0 - 1.0
        loc = torch.full((x.shape[0],), 2.0, dtype=torch.float64, device=x.device)  # [0,1]->[-1,1]
        naive = 2.0
        c = walker.conv(enc.conv_in, h)
        h = enc.conv_in(h)
        loc, naive = loc * c, naive * c
        for level, down in enumerate(enc.down):
            for j, blk in enumerate(down.block):
                h, bl, bn = walker.resblock(blk, h)
                loc, naive = loc * bl, naive * bn
                if len(down.attn) > 0:
                    h, bl, bn = walker.attn(down.attn[j], h)
                    loc, naive = loc * bl, naive * bn
            if hasattr(down, "downsample"):
                h, bl, bn = walker.downsample(down.downsample, h)
                loc, naive = loc * bl, naive * bn
        for name in ("block_1", "attn_1", "block_2"):
            blk = getattr(enc.mid, name)
            h, bl, bn = (walker.attn if name.startswith("attn") else walker.resblock)(blk, h)
            loc, naive = loc * bl, naive * bn
        a = enc.norm_out(h)
        loc = loc * _gn_lip(enc.norm_out, h) * _swish_lip(a)
        c = walker.conv(enc.conv_out, a)
        h = enc.conv_out(_swish(a))
        c2 = walker.conv(model.quant_conv, h)
        h = model.quant_conv(h)
        loc, naive = loc * c * c2, naive * c * c2
        ref = model.encode_latent(x * 2.0 - 1.0)
        if h.shape != ref.shape or not torch.allclose(h, ref, rtol=1e-3, atol=1e-4):
            raise ValueError("layer-wise walk does not reproduce encode_latent")
    except (AttributeError, ValueError, TypeError) as exc:
        return {"local": None, "per_face_local": [], "naive": None,
                "note": f"layer-wise bound unavailable: encoder structure not recognised ({exc})"}
    note = ("local: guaranteed upper bound on the Jacobian norm at these faces only; naive: conv "
            "norms with GroupNorm/swish/softmax counted as 1, not a bound; a global layer-wise "
            "bound is vacuous (GroupNorm and dot-product attention are not globally Lipschitz)")
    return {"local": float(loc.max()), "per_face_local": [float(v) for v in loc],
            "naive": float(naive), "note": note}


# -- the certificate -------------------------------------------------------------------------
@dataclass
class Certificate:
    """All numbers of Theorem 3.3 for one model on one set of faces (see module docstring)."""

    d_C: float
    d_C_used: float
    d_C_used_to_all: float
    n_codes: int
    n_codes_used: int
    gamma: float
    gamma_mean: float
    gamma_p50: float
    gamma_p90: float
    gamma_p99: float
    L_enc: float
    L_enc_power: float
    L_enc_random: float
    L_enc_global: float
    L_enc_global_power: float
    L_enc_global_random: float
    L_layerwise_local: Optional[float]
    L_layerwise_naive: Optional[float]
    L_layerwise_global: Optional[float]
    radius: float
    radius_used: float
    radius_layerwise_local: Optional[float]
    radius_rms: float
    certified: bool
    position_radius_p50: float
    position_radius_p90: float
    frames: int
    latent_positions: int
    latent_grid: Tuple[int, int]
    image_numel: int
    codes_preserved: Dict[str, float] = field(default_factory=dict)
    certified_fraction: Dict[str, float] = field(default_factory=dict)
    degradation_norms: Dict[str, Dict[str, float]] = field(default_factory=dict)
    latent_shift_ratio_max: Dict[str, float] = field(default_factory=dict)
    lipschitz: Dict[str, object] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["latent_grid"] = list(self.latent_grid)
        for k, v in list(d.items()):
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None  # strict JSON has no inf / nan
        d["units"] = ("||N||, radius: L2 over the whole crop on the [0,1] pixel scale; d_C, "
                      "gamma: L2 of one latent vector; L_enc: per latent position")
        return d


class CertificateAccumulator:
    """Collects latent statistics batch by batch; :meth:`finalize` builds the Certificate.

    Call :meth:`add_clean` with clean latents ``h`` and then, for the same batch,
    :meth:`add_degraded` per degradation. Cheap (no extra forward passes).
    """

    def __init__(self, model: nn.Module) -> None:
        self.weight = model.quantize.embedding.weight.detach().float()
        self._d1: List[torch.Tensor] = []
        self._margin: List[torch.Tensor] = []
        self._idx: List[torch.Tensor] = []
        self._norms: Dict[str, List[torch.Tensor]] = {}
        self._same: Dict[str, List[torch.Tensor]] = {}
        self._shift_ratio: Dict[str, float] = {}
        self.grid: Tuple[int, int] = (0, 0)
        self.image_numel = 0

    @torch.no_grad()
    def add_clean(self, h: torch.Tensor, image_numel: int) -> torch.Tensor:
        """Record clean latents (B, D, hh, ww); returns the nearest-code indices (B, hh*ww)."""
        d1, d2, idx = two_nearest(self.weight.to(h.device), h)
        self._d1.append(d1.cpu())
        self._margin.append(((d2 - d1) / 2).cpu())
        self._idx.append(idx.cpu())
        self.grid = (int(h.shape[2]), int(h.shape[3]))
        self.image_numel = int(image_numel)
        return idx

    @torch.no_grad()
    def add_degraded(self, spec: str, clean01: torch.Tensor, degraded01: torch.Tensor,
                     h_clean: torch.Tensor, h_deg: torch.Tensor,
                     idx_clean: torch.Tensor, idx_deg: torch.Tensor) -> None:
        """Record one degradation of the last clean batch (indices flat or (B, hh*ww))."""
        norms = _per_sample_norm((degraded01.float() - clean01.float())).double().cpu()
        self._norms.setdefault(spec, []).append(norms)
        n = norms.numel()
        same = idx_clean.reshape(n, -1).cpu() == idx_deg.reshape(n, -1).cpu()
        self._same.setdefault(spec, []).append(same)
        shift = _position_norms((h_deg.float() - h_clean.float())).double().cpu()
        ratio = (shift / norms.clamp_min(1e-12)[:, None]).max()
        self._shift_ratio[spec] = max(self._shift_ratio.get(spec, 0.0), float(ratio))

    def used_indices(self) -> torch.Tensor:
        return torch.cat(self._idx).flatten() if self._idx else torch.zeros(0, dtype=torch.long)

    def finalize(self, lip: LipschitzEstimate) -> Certificate:
        if not self._d1:
            raise ValueError("no faces were added to the certificate")
        d1 = torch.cat(self._d1).flatten()
        margin = torch.cat(self._margin)  # (N, P)
        used = self.used_indices()
        cb = codebook_distances(self.weight, used)
        gamma = float(d1.max())
        p50, p90, p99 = _quantiles(d1, (0.5, 0.9, 0.99))
        L = lip.value
        radius = (cb["d_C"] - 2 * gamma) / (2 * L) if L > 0 else float("inf")
        radius_used = (cb["d_C_used_to_all"] - 2 * gamma) / (2 * L) if L > 0 else float("inf")
        lw = lip.layerwise_local
        radius_lw = (cb["d_C"] - 2 * gamma) / (2 * lw) if lw else None
        pos_radius = margin / L if L > 0 else torch.full_like(margin, float("inf"))
        r50, r90 = _quantiles(pos_radius, (0.5, 0.9))
        notes: List[str] = []
        if radius <= 0:
            notes.append(f"no certificate: 2*gamma = {2 * gamma:.4g} >= d_C = {cb['d_C']:.4g}, so "
                         "the theorem guarantees nothing for any perturbation; see "
                         "certified_fraction for the per-position version")
        notes.append("L_enc is an empirical lower bound of the true constant, so the radii are "
                     "optimistic; compare certified_fraction with codes_preserved")
        if lip.layerwise_note:
            notes.append(lip.layerwise_note)
        cert = Certificate(
            d_C=cb["d_C"], d_C_used=cb["d_C_used"], d_C_used_to_all=cb["d_C_used_to_all"],
            n_codes=int(self.weight.shape[0]), n_codes_used=int(torch.unique(used).numel()),
            gamma=gamma, gamma_mean=float(d1.double().mean()), gamma_p50=p50, gamma_p90=p90,
            gamma_p99=p99, L_enc=L, L_enc_power=lip.per_position_power,
            L_enc_random=lip.per_position_random, L_enc_global=lip.global_value,
            L_enc_global_power=lip.global_power, L_enc_global_random=lip.global_random,
            L_layerwise_local=_finite_or_none(lip.layerwise_local),
            L_layerwise_naive=_finite_or_none(lip.layerwise_naive), L_layerwise_global=None,
            radius=radius, radius_used=radius_used,
            radius_layerwise_local=_finite_or_none(radius_lw),
            radius_rms=radius / math.sqrt(max(1, self.image_numel)),
            certified=bool(radius > 0), position_radius_p50=r50, position_radius_p90=r90,
            frames=int(margin.shape[0]), latent_positions=int(margin.numel()),
            latent_grid=self.grid, image_numel=self.image_numel, notes=notes,
            lipschitz={k: v for k, v in asdict(lip).items()})
        for spec, parts in self._norms.items():
            norms = torch.cat(parts)
            same = torch.cat(self._same[spec]).float()
            cert.codes_preserved[spec] = float(same.mean())
            cert.certified_fraction[spec] = float((pos_radius > norms[:, None]).float().mean())
            cert.degradation_norms[spec] = {
                "mean": float(norms.mean()), "min": float(norms.min()), "max": float(norms.max()),
                "rms_per_pixel": float(norms.mean()) / math.sqrt(max(1, self.image_numel))}
            cert.latent_shift_ratio_max[spec] = self._shift_ratio[spec]
        return cert


@torch.no_grad()
def _encode(model: nn.Module, x01: torch.Tensor):
    h = model.encode_latent(x01 * 2.0 - 1.0)
    return h, model.quantize_latent(h).indices


def compute_certificate(model: nn.Module, x01: torch.Tensor,
                        degradations: Sequence = (), *, lipschitz_faces: int = 4,
                        iters: int = 8, n_random: int = 4, eps: float = 1e-2,
                        max_positions: int = 8, layerwise: bool = True, batch_size: int = 16,
                        seed: int = 0) -> Certificate:
    """Certificate for ``model`` on faces ``x01`` (N, C, H, W) in [0, 1] at model resolution.

    ``degradations``: :class:`ladtalk.analysis.degrade.Degradation` objects or spec strings; for each
    one, codes_preserved / certified_fraction / degradation_norms are filled in (noise seeded
    per frame with ``seed + frame index``). L_enc uses the first ``lipschitz_faces`` faces.
    """
    from ladtalk.analysis.degrade import parse_degradation
    model.eval()
    degs = [parse_degradation(d) for d in degradations]
    acc = CertificateAccumulator(model)
    x01 = x01.detach().float()
    for s in range(0, x01.shape[0], batch_size):
        xb = x01[s:s + batch_size].to(model.device)
        h, idx = _encode(model, xb)
        acc.add_clean(h, xb[0].numel())
        seeds = [seed + s + i for i in range(xb.shape[0])]
        for d in degs:
            xd = d(xb, seed=seeds)
            hd, idd = _encode(model, xd)
            acc.add_degraded(d.spec, xb, xd, h, hd, idx, idd)
    lip = estimate_lipschitz(model, x01[:max(1, lipschitz_faces)], iters=iters, n_random=n_random,
                             eps=eps, max_positions=max_positions, seed=seed, layerwise=layerwise)
    return acc.finalize(lip)


__all__ = ["Certificate", "CertificateAccumulator", "LipschitzEstimate", "compute_certificate",
           "estimate_lipschitz", "layerwise_bounds", "conv_operator_norm_bound",
           "codebook_distances", "two_nearest", "codes_preserved", "encoder_map",
           "SWISH_MAX_SLOPE"]
