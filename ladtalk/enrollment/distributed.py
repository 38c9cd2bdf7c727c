"""What enrollment does differently on several processes (``torchrun -m ladtalk enroll``).

Every rank trains the same SOVQAE on its own random batches; DistributedDataParallel
(:func:`wrap`) averages the gradients of the generator and of the PatchGAN, so all ranks take
the same optimiser steps. The rest keeps the ranks identical, and none waiting at a collective
another never reaches:

* the EMA codebook statistics are all-reduced inside the quantizer
  (:class:`ladtalk.models.quantizer.VectorQuantizer`);
* k-means initialisation and dead-code restarts run on rank 0 and are broadcast
  (:func:`broadcast_codebook`), after the usage counts were summed (:func:`sum_usage`);
* the explicit ``|d_C - theta|`` step sees the codes used on any rank (:func:`global_codes`);
* the adaptive GAN weight is averaged (:func:`mean_scalar`), and the PatchGAN's BatchNorm
  statistics follow rank 0 after each update (:func:`broadcast_buffers`);
* rank 0's clock decides the run's progress and when it ends (:func:`agree_on_time`).

With one process every helper is a no-op, so a single-device run is unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Tuple

import torch
from torch import nn

from ladtalk._util import dist
from ladtalk._util.dist import DistContext

#: the per-rank seed offset: rank r draws its batches from ``seed + SEED_STRIDE * r``
SEED_STRIDE = 1000


@dataclass(frozen=True)
class DistributedSetup:
    """The distributed part of a run, as ``meta.json`` records it."""

    world_size: int
    per_rank_batch: int
    effective_batch: int
    backend: str
    lr: float
    disc_lr: float

    def to_json(self) -> dict:
        return asdict(self)


def setup_of(ctx: DistContext, batch_size: int, lr: float, disc_lr: float) -> DistributedSetup:
    backend = torch.distributed.get_backend() if dist.is_initialized() else "none"
    return DistributedSetup(ctx.world_size, int(batch_size), int(batch_size) * ctx.world_size,
                            str(backend), float(lr), float(disc_lr))


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` under DistributedDataParallel when there are several ranks, else itself."""
    if not dist.is_initialized():
        return module
    from torch.nn.parallel import DistributedDataParallel
    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)  # buffers follow rank 0 (default)


def rank_seed(seed: int, ctx: DistContext) -> int:
    return int(seed) + SEED_STRIDE * ctx.rank


@torch.no_grad()
def broadcast_codebook(q: nn.Module, src: int = 0) -> None:
    """Rank ``src``'s codes (and EMA statistics) on every rank; usage counts start over."""
    if not dist.is_initialized():
        return
    dist.broadcast_(q.embedding.weight.data, src)
    if getattr(q, "ema", False):
        ready = torch.tensor([float(getattr(q, "_ema_ready", False))],
                             device=q.embedding.weight.device)
        dist.broadcast_(ready, src)
        if ready.item():
            dist.broadcast_(q.ema_cluster_size, src)
            dist.broadcast_(q.ema_embed_sum, src)
            q._ema_ready = True  # noqa: SLF001 - the quantizer's own statistics, from src
    q.reset_usage()


@torch.no_grad()
def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers (BatchNorm running statistics) on every rank. DDP sends them
    before each of its forward passes; the passes themselves update them locally."""
    if dist.is_initialized():
        for buf in module.buffers():
            dist.broadcast_(buf, src)


@torch.no_grad()
def sum_usage(q: nn.Module) -> None:
    """Code usage counted over all ranks (EMA quantizers already all-reduce their counts)."""
    if dist.is_initialized() and not getattr(q, "ema", False):
        dist.all_reduce_(q.usage)


@torch.no_grad()
def global_codes(idx: torch.Tensor, n_embed: int) -> torch.Tensor:
    """The codes any rank used in this step (sorted unique indices)."""
    if not dist.is_initialized():
        return torch.unique(idx.flatten())
    used = torch.zeros(n_embed, device=idx.device)
    used[idx.flatten()] = 1.0
    dist.all_reduce_(used, "max")
    return torch.nonzero(used > 0, as_tuple=False).flatten()


def mean_scalar(value: torch.Tensor) -> torch.Tensor:
    """A detached scalar averaged over the ranks."""
    if not dist.is_initialized():
        return value
    t = value.detach().float().reshape(1).clone()
    dist.all_reduce_(t)
    return (t / torch.distributed.get_world_size()).reshape(value.shape).to(value.dtype)


def agree_on_time(progress: float, stop: bool, device: torch.device) -> Tuple[float, bool]:
    """Rank 0's ``(progress, stop)`` on every rank: the LR schedule and the end of the run
    follow one clock, so every rank takes the same number of steps at the same rates."""
    if not dist.is_initialized():
        return progress, stop
    t = torch.tensor([float(progress), float(stop)], dtype=torch.float32, device=device)
    dist.broadcast_(t, 0)
    return float(t[0]), bool(t[1] > 0.5)


__all__ = ["DistributedSetup", "SEED_STRIDE", "agree_on_time", "broadcast_buffers",
           "broadcast_codebook",
           "global_codes", "mean_scalar", "rank_seed", "setup_of", "sum_usage", "wrap"]
