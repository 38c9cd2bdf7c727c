"""Theorem 3.3 of LaDTalk as measured numbers: when does a degraded face keep its codes?

A latent position keeps its code when ``||N|| < (d_C - 2 gamma) / (2 L_enc)``, the certified
radius. This module measures d_C and gamma, takes L_enc from :mod:`.lipschitz`, and compares
the radius with what degradations actually do. Units and method: docs/robustness.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ladtalk._util.choices import CertificateCost
from ladtalk._util.jsonsafe import parse_float, to_jsonable
from ladtalk.analysis.degrade import parse_degradation
from ladtalk.analysis.lipschitz import (
    LipschitzEstimate,
    estimate_lipschitz,
    per_sample_norm,
    position_norms,
)
from ladtalk.models.quantizer import codebook_min_distance

UNITS = ("||N||, radius: L2 over the whole crop on the [0,1] pixel scale; d_C, gamma: L2 of "
         "one latent vector; L_enc: per latent position")


def _quantiles(values: torch.Tensor, qs: Sequence[float]) -> List[float]:
    v = values.detach().double().flatten().cpu()
    if v.numel() == 0:
        return [float("nan")] * len(qs)
    return [float(x) for x in torch.quantile(v, torch.tensor(list(qs), dtype=torch.float64))]


# -- codebook and latent statistics ----------------------------------------------------------
@torch.no_grad()
def codebook_distances(weight: torch.Tensor,
                       used: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """``d_C`` over all codes, over the used codes, and from a used code to any other code.

    ``d_C_used_to_all`` (what the theorem needs when only the faces' codes matter) lies
    between ``d_C`` and ``d_C_used``.
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
    codes and the nearest index, each (B, hh*ww)."""
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


# -- the certificate -------------------------------------------------------------------------
_FLOATS = ("d_C", "d_C_used", "d_C_used_to_all", "gamma", "gamma_mean", "gamma_p50",
           "gamma_p90", "gamma_p99", "L_enc", "L_enc_power", "L_enc_random", "L_enc_global",
           "L_enc_global_power", "L_enc_global_random", "radius", "radius_used", "radius_rms",
           "position_radius_p50", "position_radius_p90")
_OPT_FLOATS = ("L_layerwise_local", "L_layerwise_naive", "L_layerwise_global",
               "radius_layerwise_local")
_INTS = ("n_codes", "n_codes_used", "frames", "latent_positions", "image_numel")


@dataclass
class Certificate:
    """All numbers of Theorem 3.3 for one model on one set of faces (docs/robustness.md)."""

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
    lipschitz: Optional[LipschitzEstimate] = None
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        """Strict JSON (``to_jsonable`` policy), with a ``units`` line."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["lipschitz"] = self.lipschitz.to_json() if self.lipschitz is not None else {}
        return to_jsonable({**d, "units": UNITS})

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Certificate":
        """Read :meth:`to_json` back; also the older layout with ``null`` for inf/NaN."""
        def fdict(v: Any) -> Dict[str, float]:
            return {str(k): parse_float(x, math.nan) for k, x in (v or {}).items()}

        lip = d.get("lipschitz")
        return cls(
            **{k: parse_float(d.get(k), math.nan) for k in _FLOATS},
            **{k: parse_float(d.get(k)) for k in _OPT_FLOATS},
            **{k: int(d.get(k) or 0) for k in _INTS},
            certified=bool(d.get("certified", False)),
            latent_grid=tuple(int(v) for v in d.get("latent_grid") or (0, 0)),
            codes_preserved=fdict(d.get("codes_preserved")),
            certified_fraction=fdict(d.get("certified_fraction")),
            degradation_norms={str(k): fdict(v) for k, v in
                               (d.get("degradation_norms") or {}).items()},
            latent_shift_ratio_max=fdict(d.get("latent_shift_ratio_max")),
            lipschitz=LipschitzEstimate.from_json(lip) if lip else None,
            notes=[str(n) for n in d.get("notes") or []])


def _radius(d: float, gamma: float, lip: Optional[float]) -> float:
    """``(d - 2 gamma) / (2 L)``; inf for L = 0."""
    return (d - 2 * gamma) / (2 * lip) if lip and lip > 0 else float("inf")


def _finite_or_none(x: Optional[float]) -> Optional[float]:
    """``x`` as a float, or None when it is None, NaN or infinite."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _notes(radius: float, gamma: float, d_c: float, lip: LipschitzEstimate) -> List[str]:
    notes: List[str] = []
    if radius <= 0:
        notes.append(f"no certificate: 2*gamma = {2 * gamma:.4g} >= d_C = {d_c:.4g}, so the "
                     "theorem guarantees nothing for any perturbation; see certified_fraction "
                     "for the per-position version")
    notes.append("L_enc is an empirical lower bound of the true constant, so the radii are "
                 "optimistic; compare certified_fraction with codes_preserved")
    if lip.layerwise_note:
        notes.append(lip.layerwise_note)
    return notes


class CertificateAccumulator:
    """Collects latent statistics batch by batch; :meth:`finalize` builds the Certificate.

    Call :meth:`add_clean` with a batch's clean latents, then :meth:`add_degraded` once per
    degradation of that batch. No extra forward passes.
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
        norms = per_sample_norm((degraded01.float() - clean01.float())).double().cpu()
        self._norms.setdefault(spec, []).append(norms)
        n = norms.numel()
        same = idx_clean.reshape(n, -1).cpu() == idx_deg.reshape(n, -1).cpu()
        self._same.setdefault(spec, []).append(same)
        shift = position_norms((h_deg.float() - h_clean.float())).double().cpu()
        ratio = (shift / norms.clamp_min(1e-12)[:, None]).max()
        self._shift_ratio[spec] = max(self._shift_ratio.get(spec, 0.0), float(ratio))

    def used_indices(self) -> torch.Tensor:
        return torch.cat(self._idx).flatten() if self._idx else torch.zeros(0, dtype=torch.long)

    def finalize(self, lip: LipschitzEstimate) -> Certificate:
        """The certificate of everything added so far, with ``lip`` as L_enc."""
        if not self._d1:
            raise ValueError("no faces were added to the certificate")
        d1 = torch.cat(self._d1).flatten()
        margin = torch.cat(self._margin)  # (N, P)
        used = self.used_indices()
        cb = codebook_distances(self.weight, used)
        gamma = float(d1.max())
        p50, p90, p99 = _quantiles(d1, (0.5, 0.9, 0.99))
        L = lip.value
        radius = _radius(cb["d_C"], gamma, L)
        lw = lip.layerwise_local
        pos_radius = margin / L if L > 0 else torch.full_like(margin, float("inf"))
        r50, r90 = _quantiles(pos_radius, (0.5, 0.9))
        cert = Certificate(
            d_C=cb["d_C"], d_C_used=cb["d_C_used"], d_C_used_to_all=cb["d_C_used_to_all"],
            n_codes=int(self.weight.shape[0]), n_codes_used=int(torch.unique(used).numel()),
            gamma=gamma, gamma_mean=float(d1.double().mean()), gamma_p50=p50, gamma_p90=p90,
            gamma_p99=p99, L_enc=L, L_enc_power=lip.per_position_power,
            L_enc_random=lip.per_position_random, L_enc_global=lip.global_value,
            L_enc_global_power=lip.global_power, L_enc_global_random=lip.global_random,
            L_layerwise_local=_finite_or_none(lw),
            L_layerwise_naive=_finite_or_none(lip.layerwise_naive), L_layerwise_global=None,
            radius=radius, radius_used=_radius(cb["d_C_used_to_all"], gamma, L),
            radius_layerwise_local=_finite_or_none(_radius(cb["d_C"], gamma, lw)) if lw else None,
            radius_rms=radius / math.sqrt(max(1, self.image_numel)),
            certified=bool(radius > 0), position_radius_p50=r50, position_radius_p90=r90,
            frames=int(margin.shape[0]), latent_positions=int(margin.numel()),
            latent_grid=self.grid, image_numel=self.image_numel,
            notes=_notes(radius, gamma, cb["d_C"], lip), lipschitz=lip)
        self._add_specs(cert, pos_radius)
        return cert

    def _add_specs(self, cert: Certificate, pos_radius: torch.Tensor) -> None:
        """Per-degradation numbers: codes kept, certified fraction, ||N||, latent shift."""
        rms = math.sqrt(max(1, self.image_numel))
        for spec, parts in self._norms.items():
            norms = torch.cat(parts)
            same = torch.cat(self._same[spec]).float()
            cert.codes_preserved[spec] = float(same.mean())
            cert.certified_fraction[spec] = float((pos_radius > norms[:, None]).float().mean())
            cert.degradation_norms[spec] = {
                "mean": float(norms.mean()), "min": float(norms.min()), "max": float(norms.max()),
                "rms_per_pixel": float(norms.mean()) / rms}
            cert.latent_shift_ratio_max[spec] = self._shift_ratio[spec]


@torch.no_grad()
def _encode(model: nn.Module, x01: torch.Tensor):
    h = model.encode_latent(x01 * 2.0 - 1.0)
    return h, model.quantize_latent(h).indices


def lipschitz_for(model: nn.Module, faces01: torch.Tensor, cost: CertificateCost,
                  seed: int = 0, progress: Optional[Callable[[int, int], None]] = None
                  ) -> LipschitzEstimate:
    """:func:`estimate_lipschitz` at ``faces01`` with the settings of ``cost``;
    ``progress(done, total)`` as it goes."""
    return estimate_lipschitz(model, faces01, iters=cost.power_iters, n_random=cost.n_random,
                              eps=cost.eps, max_positions=cost.max_positions, seed=seed,
                              layerwise=cost.layerwise, global_map=cost.global_map,
                              progress=progress)


def compute_certificate(model: nn.Module, x01: torch.Tensor, degradations: Sequence = (), *,
                        cost: CertificateCost = CertificateCost(), batch_size: int = 16,
                        seed: int = 0) -> Certificate:
    """Certificate for ``model`` on faces ``x01`` (N, C, H, W) in [0, 1] at model resolution.

    ``degradations``: specs or :class:`~ladtalk.analysis.degrade.Degradation` objects (noise of
    frame i seeded with ``seed + i``). L_enc uses the first ``cost.cert_faces`` faces.
    """
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
    lip = lipschitz_for(model, x01[:max(1, cost.cert_faces)], cost, seed)
    return acc.finalize(lip)


__all__ = ["Certificate", "CertificateAccumulator", "compute_certificate", "lipschitz_for",
           "codebook_distances", "two_nearest", "UNITS"]
