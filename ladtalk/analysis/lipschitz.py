"""Empirical estimates of the encoder's Lipschitz constant L_enc (docs/robustness.md).

Random finite differences and power iteration on the Jacobian, per latent position and for
the whole latent map; both are lower bounds of the true constant.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ladtalk._util.jsonsafe import parse_float, to_jsonable
from ladtalk.analysis.layerwise import layerwise_bounds


def math_sdpa():
    """Attention through the math kernel: the fused CPU kernel has no double backward."""
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


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,) Euclidean norms of each sample."""
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


def position_norms(t: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B, h*w) Euclidean norms of the D-vectors."""
    return torch.linalg.vector_norm(t, dim=1).flatten(1)


@dataclass
class LipschitzEstimate:
    """Empirical (lower-bound) and layer-wise estimates of L_enc w.r.t. [0, 1] input."""

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

    def to_json(self) -> Dict[str, Any]:
        return to_jsonable({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "LipschitzEstimate":
        d = dict(d or {})
        num = {k: parse_float(d.get(k), 0.0) for k in
               ("per_position_power", "per_position_random", "global_power", "global_random",
                "eps")}
        opt = {k: parse_float(d.get(k)) for k in ("layerwise_local", "layerwise_naive")}
        ints = {k: int(d.get(k) or 0) for k in ("faces", "iters", "n_random",
                                                "positions_per_face")}
        lists = {k: [parse_float(v) for v in d.get(k) or []]
                 for k in ("per_face_power", "per_face_layerwise_local")}
        return cls(layerwise_note=str(d.get("layerwise_note") or ""),
                   **num, **opt, **ints, **lists)


@contextlib.contextmanager
def frozen_params(model: nn.Module):
    """Temporarily stop parameters from requiring grad (only input derivatives are needed)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def power_iteration(f, x: torch.Tensor, v0: torch.Tensor, iters: int,
                    mask: Optional[torch.Tensor] = None,
                    tick: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """Per-sample largest ``||(mask * J) v|| / ||v||`` seen along power iteration from v0, (K,).

    ``J^T u`` is a backward pass, ``J v`` the double backward of ``u -> J^T u``; the Rayleigh
    quotient never decreases along the iteration. ``tick()`` is called after each of the
    ``iters + 1`` Jacobian products.
    """
    with math_sdpa(), torch.enable_grad():
        xx = x.detach().clone().requires_grad_(True)
        y = f(xx)
        if mask is not None:
            y = y * mask
        u0 = torch.zeros_like(y, requires_grad=True)
        (jt_u0,) = torch.autograd.grad(y, xx, u0, create_graph=True)
        v = v0 / per_sample_norm(v0).clamp_min(1e-30).view(-1, 1, 1, 1)
        best = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for it in range(iters + 1):
            (u,) = torch.autograd.grad(jt_u0, u0, v, retain_graph=True)  # J v
            best = torch.maximum(best, per_sample_norm(u).double())
            if tick is not None:
                tick()
            if it == iters:
                break
            (w,) = torch.autograd.grad(y, xx, u, retain_graph=True)  # J^T J v
            v = w / per_sample_norm(w).clamp_min(1e-30).view(-1, 1, 1, 1)
    return best.detach()


@torch.no_grad()
def _random_ratios(f, x: torch.Tensor, n_random: int, eps: float, gen: torch.Generator):
    """Gaussian perturbations and their latent-shift ratios, global (R, B) and per position
    (R, B, P); also the latent grid (hh, ww)."""
    h0 = f(x)
    _, _, hh, ww = h0.shape
    b = x.shape[0]
    deltas = eps * torch.randn((n_random,) + tuple(x.shape), generator=gen).to(x)
    ratio_g = torch.zeros(n_random, b, dtype=torch.float64, device=x.device)
    ratio_p = torch.zeros(n_random, b, hh * ww, dtype=torch.float64, device=x.device)
    for r in range(n_random):
        dh = f(x + deltas[r]) - h0
        dn = per_sample_norm(deltas[r]).double()
        ratio_g[r] = per_sample_norm(dh).double() / dn
        ratio_p[r] = position_norms(dh).double() / dn[:, None]
    return deltas, ratio_g, ratio_p, (hh, ww)


def _position_power(model: nn.Module, f, x: torch.Tensor, deltas: torch.Tensor,
                    ratio_p: torch.Tensor, grid: Tuple[int, int], k: int, iters: int,
                    chunk: int, gen: torch.Generator,
                    tick: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """Power iteration on the ``k`` most sensitive positions of each face, ``chunk`` at a time."""
    b, (hh, ww) = x.shape[0], grid
    if deltas.shape[0]:
        pos_score, pos_best_r = ratio_p.max(0)  # (b, P)
    else:
        pos_score = torch.rand(b, hh * ww, generator=gen).to(x.device).double()
        pos_best_r = None
    top = pos_score.topk(k, dim=1).indices  # (b, k)
    pairs = [(i, int(p)) for i in range(b) for p in top[i]]
    out = torch.zeros(len(pairs), dtype=torch.float64, device=x.device)
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
        with frozen_params(model):
            out[s:s + len(part)] = power_iteration(f, xb, init, iters, mask, tick)
    return out


class _Ticks:
    """``progress(done, total)`` after each unit of work (None: silent)."""

    def __init__(self, total: int, progress: Optional[Callable[[int, int], None]]) -> None:
        self.done, self.total, self.progress = 0, max(1, int(total)), progress

    def __call__(self) -> None:
        self.done = min(self.total, self.done + 1)
        if self.progress is not None:
            self.progress(self.done, self.total)


def estimate_lipschitz(model: nn.Module, x01: torch.Tensor, *, iters: int = 8, n_random: int = 4,
                       eps: float = 1e-2, max_positions: int = 8, chunk: int = 8, seed: int = 0,
                       layerwise: bool = True, global_map: bool = True,
                       progress: Optional[Callable[[int, int], None]] = None
                       ) -> LipschitzEstimate:
    """Estimate L_enc (per position and global) at the faces ``x01`` (B, C, H, W) in [0, 1].

    Runs in float32 without autocast on the model's device; each power chain starts from the
    worst random perturbation of its face (or position). ``global_map=False`` skips the power
    chain of the whole latent map (``global_power`` and ``global_value`` are then NaN: not
    estimated; L_enc never uses them). ``progress(done, total)``: after the random
    perturbations, each Jacobian product and the layer-wise walk.
    """
    model.eval()
    f = encoder_map(model)
    x = x01.detach().float().to(model.device)
    b = x.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    deltas, ratio_g, ratio_p, grid = _random_ratios(f, x, n_random, eps, gen)
    k = min(int(max_positions), grid[0] * grid[1])
    chains = -(-b * k // max(1, chunk)) + int(bool(global_map))
    tick = _Ticks(1 + chains * (int(iters) + 1) + int(bool(layerwise)), progress)
    tick()
    glob = torch.full((b,), float("nan"), dtype=torch.float64)
    if global_map:
        if n_random:
            v0 = deltas[ratio_g.argmax(0), torch.arange(b, device=x.device)]
        else:
            v0 = torch.randn(tuple(x.shape), generator=gen).to(x)
        with frozen_params(model):
            glob = power_iteration(f, x, v0, iters, None, tick)
    pos_power = _position_power(model, f, x, deltas, ratio_p, grid, k, iters, chunk, gen, tick)
    est = LipschitzEstimate(
        per_position_power=float(pos_power.max()) if pos_power.numel() else 0.0,
        per_position_random=float(ratio_p.max()) if n_random else 0.0,
        global_power=float(glob.max()),
        global_random=float(ratio_g.max()) if n_random else 0.0,
        faces=b, iters=int(iters), n_random=int(n_random), eps=float(eps),
        positions_per_face=k, per_face_power=[float(v) for v in glob] if global_map else [])
    if layerwise:
        lw = layerwise_bounds(model, x)
        est.layerwise_local = lw.local
        est.layerwise_naive = lw.naive
        est.layerwise_note = lw.note
        est.per_face_layerwise_local = lw.per_face_local
        tick()
    return est


__all__ = ["LipschitzEstimate", "estimate_lipschitz", "power_iteration", "encoder_map",
           "per_sample_norm", "position_norms", "frozen_params", "math_sdpa"]
