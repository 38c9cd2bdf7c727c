"""Vector quantizer of the SOVQAE and the codebook tools used to train and certify it.

:class:`VectorQuantizer` reproduces taming-transformers' ``VectorQuantizer2`` (the quantizer a
taming ``VQModel`` uses), so taming checkpoints load and give the same codes:

* the only persistent state is ``embedding.weight`` (``n_embed x embed_dim``), initialised
  uniformly in ``[-1/n_embed, 1/n_embed]``;
* latents ``z`` (B, C, H, W) are compared with every code through the expanded squared distance
  ``|z|^2 + |e|^2 - 2 z.e`` (the same formula as upstream, so ``argmin`` ties break the same way);
* the returned indices are flattened in (b, h, w) order;
* the loss follows the ``legacy=True`` convention that the released taming models were trained
  with: ``mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2)``, i.e. the commitment term has
  weight 1 and the codebook term weight ``beta`` (``legacy=False`` swaps the two weights);
* gradients reach the encoder through the straight-through estimator ``z + sg[z_q - z]``.

Optional extras (all off by default, none of them adds persistent keys, so the state dict
stays taming-identical):

* ``ema=True``: the codebook is not learned by gradient but follows an exponential moving
  average of the latents assigned to each code (VQ-VAE-2 style). The loss is then only the
  commitment term ``beta * mean((sg[z_q] - z)^2)``. The EMA statistics are non-persistent
  buffers, re-seeded from ``embedding.weight`` whenever weights are loaded or the codebook is
  re-initialised; under ``torch.distributed`` they are all-reduced across ranks.
* a non-persistent ``usage`` buffer counts, in training mode, how often each code was picked,
  for :func:`dead_code_restart`.

Module-level helpers (accept an ``nn.Embedding`` or a :class:`VectorQuantizer`):
:func:`codebook_min_distance` (d_C), :func:`nearest_codes` (distance of latents to their code,
the basis of gamma), :func:`kmeans_init`, :func:`dead_code_restart`.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn

CodebookLike = Union[nn.Embedding, "VectorQuantizer"]


class VectorQuantizer(nn.Module):
    """Nearest-code quantizer, state-dict compatible with taming's ``VectorQuantizer2``.

    ``forward(z)`` returns ``(z_q, loss, indices)``: ``z_q`` has z's shape (straight-through
    gradient), ``loss`` is a scalar, ``indices`` is a flat LongTensor of length B*H*W in
    (b, h, w) order. The distance computation always runs in float32, also under autocast.
    """

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25, legacy: bool = True,
                 ema: bool = False, ema_decay: float = 0.99, ema_eps: float = 1e-5) -> None:
        super().__init__()
        self.n_embed = int(n_embed)
        self.embed_dim = int(embed_dim)
        self.beta = float(beta)
        self.legacy = bool(legacy)
        self.ema = bool(ema)
        self.ema_decay = float(ema_decay)
        self.ema_eps = float(ema_eps)
        self.embedding = nn.Embedding(self.n_embed, self.embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / self.n_embed, 1.0 / self.n_embed)
        self.register_buffer("usage", torch.zeros(self.n_embed), persistent=False)
        if self.ema:
            self.embedding.weight.requires_grad_(False)
            self.register_buffer("ema_cluster_size", torch.zeros(self.n_embed), persistent=False)
            self.register_buffer("ema_embed_sum", torch.zeros(self.n_embed, self.embed_dim),
                                 persistent=False)
            self._ema_ready = False

    # -- core -------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if z.dim() != 4 or z.shape[1] != self.embed_dim:
            raise ValueError(f"quantizer expects (B, {self.embed_dim}, H, W) latents, got "
                             f"{tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            z_bhwc = z.permute(0, 2, 3, 1).contiguous()
            flat = z_bhwc.view(-1, self.embed_dim)
            _, indices = _nearest(self.embedding.weight.float(), flat)
            z_q = self.embedding(indices).view(z_bhwc.shape).float()
            if self.training:  # after the lookup: z_q uses the codebook before this update
                self._observe(flat.detach(), indices)
            commit = torch.mean((z_q.detach() - z_bhwc) ** 2)
            if self.ema:
                loss = self.beta * commit
            else:
                book = torch.mean((z_q - z_bhwc.detach()) ** 2)
                loss = commit + self.beta * book if self.legacy else self.beta * commit + book
            z_q = z_bhwc + (z_q - z_bhwc).detach()
            z_q = z_q.permute(0, 3, 1, 2).contiguous()
        return z_q, loss, indices

    def lookup(self, indices: torch.Tensor, shape: Tuple[int, int, int]) -> torch.Tensor:
        """Codes for flat or (B, H, W) ``indices`` as (B, C, H, W); ``shape`` = (B, H, W)."""
        b, h, w = (int(s) for s in shape)
        if indices.numel() != b * h * w:
            raise ValueError(f"{indices.numel()} indices do not fill a {b}x{h}x{w} latent grid")
        z_q = self.embedding(indices.reshape(-1).long()).view(b, h, w, self.embed_dim)
        return z_q.permute(0, 3, 1, 2).contiguous()

    # -- training-time state ------------------------------------------------------------------
    @torch.no_grad()
    def _observe(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        counts = torch.bincount(indices, minlength=self.n_embed).to(self.usage.dtype)
        if not self.ema:
            self.usage.add_(counts)
            return
        sums = torch.zeros(self.n_embed, self.embed_dim, device=flat.device, dtype=torch.float32)
        sums.index_add_(0, indices, flat.float())
        counts = counts.float()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.usage.add_(counts)
        if not self._ema_ready:
            self.reset_ema()
        d = self.ema_decay
        self.ema_cluster_size.mul_(d).add_(counts, alpha=1.0 - d)
        self.ema_embed_sum.mul_(d).add_(sums, alpha=1.0 - d)
        n = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.ema_eps) / (n + self.n_embed * self.ema_eps) * n
        self.embedding.weight.copy_((self.ema_embed_sum / smoothed.unsqueeze(1))
                                    .to(self.embedding.weight.dtype))

    @torch.no_grad()
    def reset_ema(self, indices: Optional[torch.Tensor] = None) -> None:
        """Re-seed the EMA statistics from the current codebook (all codes or ``indices``).

        A re-seeded code counts as having been assigned one latent equal to itself, so the next
        updates move it at the normal EMA rate. No-op when EMA is off.
        """
        if not self.ema:
            return
        w = self.embedding.weight.detach().float()
        if indices is None or not self._ema_ready:
            self.ema_cluster_size.fill_(1.0)
            self.ema_embed_sum.copy_(w)
            self._ema_ready = True
        else:
            self.ema_cluster_size[indices] = 1.0
            self.ema_embed_sum[indices] = w[indices]

    def reset_usage(self) -> None:
        self.usage.zero_()

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: D401 - torch hook
        super()._load_from_state_dict(*args, **kwargs)
        if self.ema:
            self._ema_ready = False  # statistics belong to the old codebook

    def extra_repr(self) -> str:
        return (f"n_embed={self.n_embed}, embed_dim={self.embed_dim}, beta={self.beta}, "
                f"legacy={self.legacy}, ema={self.ema}")


# -- helpers ---------------------------------------------------------------------------------
def _embedding(book: CodebookLike) -> nn.Embedding:
    if isinstance(book, VectorQuantizer):
        return book.embedding
    if isinstance(book, nn.Embedding):
        return book
    emb = getattr(getattr(book, "quantize", None), "embedding", None)  # an SOVQAE
    if isinstance(emb, nn.Embedding):
        return emb
    raise TypeError(f"expected an nn.Embedding, a VectorQuantizer or an SOVQAE, got {type(book)}")


def _quantizer(book: CodebookLike) -> Optional[VectorQuantizer]:
    if isinstance(book, VectorQuantizer):
        return book
    q = getattr(book, "quantize", None)
    return q if isinstance(q, VectorQuantizer) else None


def flatten_latents(latents: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, C, H, W) latents -> (B*H*W, C) in (b, h, w) order; (N, C) passes through."""
    if latents.dim() == 4:
        if latents.shape[1] != dim:
            raise ValueError(f"latents have {latents.shape[1]} channels, codebook dim is {dim}")
        return latents.permute(0, 2, 3, 1).reshape(-1, dim)
    if latents.dim() == 2 and latents.shape[1] == dim:
        return latents
    raise ValueError(f"latents must be (B, {dim}, H, W) or (N, {dim}), got {tuple(latents.shape)}")


#: latents per block of the distance matrix: a 512 x 1024 block stays in the CPU's caches,
#: where the whole (N x n_embed) matrix of a 256 px crop (4096 x 1024 floats) does not: 2.4x
#: faster on a CPU, the same numbers (each row is computed as before)
NEAREST_BLOCK = 512


def _nearest(weight: torch.Tensor, flat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Squared distances to the nearest code and its index (taming's expanded formula), in
    blocks of :data:`NEAREST_BLOCK` rows."""
    w_sq = torch.sum(weight ** 2, dim=1)
    if flat.shape[0] <= NEAREST_BLOCK:
        return torch.min(torch.sum(flat ** 2, dim=1, keepdim=True) + w_sq
                         - 2.0 * flat @ weight.t(), dim=1)
    dmins, idxs = [], []
    for start in range(0, flat.shape[0], NEAREST_BLOCK):
        part = flat[start:start + NEAREST_BLOCK]
        dmin, idx = torch.min(torch.sum(part ** 2, dim=1, keepdim=True) + w_sq
                              - 2.0 * part @ weight.t(), dim=1)
        dmins.append(dmin)
        idxs.append(idx)
    return torch.cat(dmins), torch.cat(idxs)


@torch.no_grad()
def nearest_codes(book: CodebookLike, latents: torch.Tensor,
                  chunk: int = 16384) -> Tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance of each latent to its nearest code, and that code's index.

    ``latents`` is (B, C, H, W) or (N, C); results are flat (N,) in (b, h, w) order. The
    distance is recomputed exactly as ``|z - e|`` for the chosen code (float32), so it is not
    affected by the cancellation of the expanded formula. ``max`` of it is the paper's gamma.
    """
    weight = _embedding(book).weight.detach().float()
    flat = flatten_latents(latents.detach(), weight.shape[1]).float().to(weight.device)
    dists, idxs = [], []
    for start in range(0, flat.shape[0], chunk):
        part = flat[start:start + chunk]
        _, idx = _nearest(weight, part)
        dists.append(torch.linalg.vector_norm(part - weight[idx], dim=1))
        idxs.append(idx)
    if not dists:
        return flat.new_zeros(0), torch.zeros(0, dtype=torch.long, device=flat.device)
    return torch.cat(dists), torch.cat(idxs)


def codebook_min_distance(book: CodebookLike, used: Optional[torch.Tensor] = None) -> torch.Tensor:
    """d_C: the smallest Euclidean distance between two distinct codes.

    ``used`` restricts it to a subset: a bool mask of length n_embed, or code indices
    (duplicates allowed, e.g. the raw indices a batch produced). Returns a 0-dim tensor in the
    codebook's dtype; it is differentiable w.r.t. the codebook (usable as the paper's
    ``|d_C - theta|`` regulariser) and ``inf`` when fewer than two codes are considered.
    Computed in float64 from the Gram matrix (1024 x 1024 for the base codebook).
    """
    weight = _embedding(book).weight
    codes = weight
    if used is not None:
        used = torch.as_tensor(used, device=weight.device)
        if used.dtype == torch.bool:
            if used.numel() != weight.shape[0]:
                raise ValueError(f"mask has {used.numel()} entries, codebook has {weight.shape[0]}")
            sel = torch.nonzero(used, as_tuple=False).flatten()
        else:
            sel = torch.unique(used.long().flatten())
        codes = weight[sel]
    if codes.shape[0] < 2:
        return torch.tensor(float("inf"), dtype=weight.dtype, device=weight.device)
    c = codes.double()
    sq = (c * c).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (c @ c.t())
    eye = torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
    d2 = d2.masked_fill(eye, float("inf"))
    return torch.sqrt(d2.min().clamp_min(1e-24)).to(weight.dtype)


def _sample_rows(data: torch.Tensor, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """``n`` rows of ``data``: without replacement when possible, else with."""
    m = data.shape[0]
    if m >= n:
        pick = torch.randperm(m, generator=generator)[:n]
    else:
        pick = torch.randint(m, (n,), generator=generator)
    return data[pick.to(data.device)]


def _kmeans_pp(data: torch.Tensor, k: int, generator: Optional[torch.Generator],
               max_points: int) -> torch.Tensor:
    """k-means++ seeding (D^2 sampling) on at most ``max_points`` random rows of ``data``."""
    pts = _sample_rows(data, min(max_points, data.shape[0]), generator)
    first = int(torch.randint(pts.shape[0], (1,), generator=generator))
    centres = torch.empty(k, pts.shape[1], dtype=pts.dtype, device=pts.device)
    centres[0] = pts[first]
    best = ((pts - centres[0]) ** 2).sum(1)
    for i in range(1, k):
        total = best.sum()
        if total <= 0:  # every point already coincides with a centre: plain random picks
            centres[i:] = _sample_rows(pts, k - i, generator)
            break
        j = int(torch.multinomial((best / total).cpu(), 1, generator=generator))
        centres[i] = pts[j]
        best = torch.minimum(best, ((pts - centres[i]) ** 2).sum(1))
    return centres


@torch.no_grad()
def kmeans_init(book: CodebookLike, latents: torch.Tensor, iters: int = 10,
                generator: Optional[torch.Generator] = None, chunk: int = 16384,
                seed_points: int = 16384) -> float:
    """Initialise the codebook with k-means on encoder outputs.

    ``latents`` are pre-quantization latents ``h`` ((B, C, H, W) or (N, C)). Centres are
    seeded with k-means++ (on at most ``seed_points`` random latents; with fewer latents than
    codes, every latent is used, jittered) and refined by ``iters`` Lloyd iterations over all
    latents; a cluster that empties is re-seeded with the latent currently worst served. Writes the
    result into ``embedding.weight`` (re-seeding EMA statistics and clearing usage when given
    a quantizer) and returns the final mean squared quantization error.
    """
    emb = _embedding(book)
    k, dim = emb.weight.shape
    data = flatten_latents(latents.detach(), dim).float().to(emb.weight.device)
    if data.shape[0] == 0:
        raise ValueError("kmeans_init needs at least one latent")
    if data.shape[0] <= k:
        centres = _sample_rows(data, k, generator).clone()
        scale = data.std().clamp_min(1e-6) * 1e-3 if data.shape[0] > 1 else 1e-3
        centres += scale * torch.randn(centres.shape, generator=generator).to(centres)
    else:
        centres = _kmeans_pp(data, k, generator, seed_points)

    def assign() -> Tuple[torch.Tensor, torch.Tensor]:
        ds, ix = [], []
        for s in range(0, data.shape[0], chunk):
            d, i = _nearest(centres, data[s:s + chunk])
            ds.append(d.clamp_min(0))
            ix.append(i)
        return torch.cat(ds), torch.cat(ix)

    for _ in range(max(0, int(iters))):
        dist, idx = assign()
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros_like(centres).index_add_(0, idx, data)
        live = counts > 0
        centres[live] = sums[live] / counts[live, None]
        empty = torch.nonzero(~live, as_tuple=False).flatten()
        if empty.numel():
            worst = torch.argsort(dist, descending=True)[: empty.numel()]
            centres[empty[: worst.numel()]] = data[worst]
    dist, _ = assign()
    emb.weight.copy_(centres.to(emb.weight.dtype))
    q = _quantizer(book)
    if q is not None:
        q.reset_ema()
        q.reset_usage()
    return float(dist.mean())


@torch.no_grad()
def dead_code_restart(book: CodebookLike, usage_counts: Optional[torch.Tensor],
                      latents: torch.Tensor, min_count: float = 1.0,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Move codes used fewer than ``min_count`` times onto randomly chosen latents.

    ``usage_counts`` (n_embed,) are assignment counts since the last restart; ``None`` takes
    the quantizer's own ``usage`` buffer (then ``book`` must be a quantizer or an SOVQAE).
    ``latents`` are recent encoder outputs ((B, C, H, W) or (N, C)). Only dead codes change;
    live codes keep their exact values. EMA statistics of restarted codes are re-seeded and the
    quantizer's usage counter is cleared. Returns the indices of the restarted codes.
    """
    emb = _embedding(book)
    q = _quantizer(book)
    if usage_counts is None:
        if q is None:
            raise ValueError("usage_counts is None and no quantizer was given to read it from")
        usage_counts = q.usage
    usage_counts = torch.as_tensor(usage_counts, device=emb.weight.device).flatten()
    if usage_counts.numel() != emb.weight.shape[0]:
        raise ValueError(f"usage_counts has {usage_counts.numel()} entries, codebook has "
                         f"{emb.weight.shape[0]}")
    dead = torch.nonzero(usage_counts < min_count, as_tuple=False).flatten()
    if dead.numel():
        data = flatten_latents(latents.detach(), emb.weight.shape[1]).to(emb.weight)
        if data.shape[0] == 0:
            raise ValueError("dead_code_restart needs at least one latent")
        emb.weight[dead] = _sample_rows(data, dead.numel(), generator)
    if q is not None:
        q.reset_ema(dead)
        q.reset_usage()
    return dead


def quantization_error(book: CodebookLike, latents: torch.Tensor) -> float:
    """Mean squared distance of latents to their nearest code (what k-means minimises)."""
    d, _ = nearest_codes(book, latents)
    return float((d ** 2).mean()) if d.numel() else 0.0


__all__ = ["VectorQuantizer", "flatten_latents", "nearest_codes", "codebook_min_distance",
           "kmeans_init", "dead_code_restart", "quantization_error"]
