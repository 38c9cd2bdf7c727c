"""The enrollment trainer: SOVQAE + PatchGAN, optimisers, counters; resumable state."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ladtalk._util.atomic import write_json
from ladtalk._util.device import autocast
from ladtalk._util.dist import DistContext
from ladtalk.enrollment.config import TrainConfig
from ladtalk.enrollment.data import (
    CropSampler,
    DegradationRanges,
    face_weight_map,
    patch_windows,
    random_degradation,
    take_patches,
)
from ladtalk.enrollment.discriminator import NLayerDiscriminator
from ladtalk.enrollment.distributed import (
    broadcast_buffers,
    broadcast_codebook,
    global_codes,
    mean_scalar,
    rank_seed,
    sum_usage,
    wrap,
)
from ladtalk.enrollment.losses import (
    adaptive_weight,
    codebook_regularizer,
    codebook_regularizer_step,
    generator_adv_loss,
    hinge_d_loss,
    reconstruction_loss,
)
from ladtalk.enrollment.state import (
    STATE_FORMAT,
    STATE_JSON,
    STATE_TENSORS,
    flatten_optimizer,
    read_state_info,
    unflatten_optimizer,
)
from ladtalk.errors import CheckpointError
from ladtalk.metrics.image import psnr_torch
from ladtalk.models.quantizer import dead_code_restart, kmeans_init
from ladtalk.models.sovqae import SOVQAE

log = logging.getLogger(__name__)


def holdout_psnr(y01: torch.Tensor, x01: torch.Tensor) -> float:
    """Mean per-image PSNR (dB) of [0, 1] batches, as recorded in ``meta.json``."""
    return float(psnr_torch(y01, x01, mse_floor=1e-12).mean())


@dataclass
class _Forward:
    """One generator forward pass: output, codes, loss terms."""

    y: torch.Tensor
    idx: torch.Tensor
    target: torch.Tensor
    loss: torch.Tensor
    rec: torch.Tensor
    q_loss: torch.Tensor


class Trainer:
    """Holds the SOVQAE, the PatchGAN, optimisers and counters; one :meth:`step` = one batch.

    ``ctx``: this process's place under ``torchrun`` (:mod:`ladtalk.enrollment.distributed`):
    with several ranks the generator and the PatchGAN run under DistributedDataParallel and
    the codebook's decisions are made on rank 0 and broadcast."""

    def __init__(self, model: SOVQAE, cfg: TrainConfig, device: torch.device,
                 perceptual: Optional[nn.Module] = None,
                 ctx: Optional[DistContext] = None) -> None:
        self.model = model.to(device).train()
        self.cfg = cfg
        self.device = device
        self.perceptual = perceptual
        self.ctx = ctx or DistContext()
        self.disc = NLayerDiscriminator(ndf=cfg.disc_ndf, n_layers=cfg.disc_layers).to(device)
        # the forward passes that train go through DDP (the plain modules share its weights)
        self.model_ddp = wrap(self.model, device)
        self.disc_ddp = wrap(self.disc, device)
        self.opt_g = torch.optim.Adam(model.generator_parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr, betas=cfg.betas)
        amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp) if amp else None
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=amp) if amp else None
        self.step_count = 0
        self.elapsed = 0.0          # training seconds over all runs
        self.kmeans_done = False
        self.warmup_from = 0        # LR warm-up restarts at this step count
        self.history: List[Dict[str, Any]] = []
        self.gen = torch.Generator().manual_seed(rank_seed(cfg.seed + 1, self.ctx))
        self.wmap: Optional[torch.Tensor] = None
        self.ranges = DegradationRanges(weights=tuple(cfg.degrade_weights),
                                        lipsync_sigma=tuple(cfg.lipsync_sigma))

    # -- one step ---------------------------------------------------------------------------
    def _lr_scale(self, progress: float) -> float:
        """Warm-up over the first steps of a run, then linear decay after ``decay_start``."""
        n = self.cfg.warmup_steps
        k = self.step_count - self.warmup_from
        warm = 1.0 if n <= 0 or k >= n else (k + 1) / n
        d0 = self.cfg.decay_start
        if progress <= d0 or d0 >= 1.0:
            return warm
        frac = min(1.0, (progress - d0) / (1.0 - d0))
        return warm * (1.0 - frac * (1.0 - self.cfg.lr_end))

    def _set_lr(self, progress: float) -> float:
        scale = self._lr_scale(progress)
        for group in self.opt_g.param_groups:
            group["lr"] = self.cfg.lr * scale
        for group in self.opt_d.param_groups:
            group["lr"] = self.cfg.disc_lr * scale
        return scale

    def _maybe_kmeans(self, sampler: CropSampler) -> None:
        cfg = self.cfg
        if self.kmeans_done or cfg.kmeans_at <= 0 or self.step_count < cfg.kmeans_at:
            return
        if self.ctx.is_main:  # decided once, then every rank takes rank 0's codebook
            with torch.no_grad():
                lat = [self.model.encode_latent(sampler.sample().to(self.device) * 2 - 1)
                       .float() for _ in range(max(1, cfg.kmeans_batches))]
                kmeans_init(self.model.quantize, torch.cat(lat), iters=10, generator=self.gen)
        broadcast_codebook(self.model.quantize)
        self.kmeans_done = True

    def _batch(self, sampler: CropSampler) -> Tuple[torch.Tensor, torch.Tensor, bool]:
        """``(target01, input01, degraded)`` on the device: whole crops are degraded first
        (the lipsync path reduces the whole crop), then the same patch is cut from both."""
        cfg = self.cfg
        full = cfg.full_every > 0 and self.step_count % cfg.full_every == 0
        x = sampler.sample(full=full)
        degraded = (cfg.restore_prob > 0 and self.step_count >= cfg.restore_start
                    and float(torch.rand(1, generator=self.gen)) < cfg.restore_prob)
        xin = random_degradation(x, self.gen, self.ranges) if degraded else x
        patch = cfg.patch if (cfg.patch and not full and cfg.patch < x.shape[-1]
                              and not sampler.patch) else 0
        if patch:
            win = patch_windows(x.shape[0], x.shape[-1], patch, self.gen, cfg.patch_area,
                                cfg.patch_focus)
            x, xin = take_patches(x, win, patch), take_patches(xin, win, patch)
        return x.to(self.device), xin.to(self.device), degraded

    def _weight_map(self, crop_side: int, out_side: int) -> Optional[torch.Tensor]:
        if self.wmap is None or self.wmap.shape[-1] != crop_side:
            self.wmap = face_weight_map(crop_side, self.cfg.face_weight, self.device)
        if self.wmap is None or self.wmap.shape[-1] != out_side:
            return None
        return self.wmap

    def _forward(self, x: torch.Tensor, xin: torch.Tensor, crop_side: int,
                 use_gan: bool, terms: Dict[str, float]) -> _Forward:
        cfg, model = self.cfg, self.model
        target = x * 2 - 1
        with autocast(self.device):
            y, q_loss, idx = self.model_ddp(xin * 2 - 1)
            rec = reconstruction_loss(y, target, cfg.l1, cfg.l2,
                                      self._weight_map(crop_side, y.shape[-1]))
            nll = rec
            if self.perceptual is not None and cfg.perceptual_weight > 0:
                p_loss = self.perceptual(y.float(), target.float()).mean()
                nll = nll + cfg.perceptual_weight * p_loss
                terms["perceptual"] = p_loss.item()
            loss = nll + cfg.codebook_weight * q_loss.float()
            if cfg.dc_weight > 0 and not getattr(model.quantize, "ema", False):
                dc_pen = codebook_regularizer(model.quantize.embedding.weight, idx,
                                              cfg.dc_theta, cfg.dc_tau)
                loss = loss + cfg.dc_weight * dc_pen
                terms["dc_penalty"] = dc_pen.item()
            if use_gan:
                loss = loss + self._adversarial_term(y, nll, terms)
        return _Forward(y, idx, target, loss, rec, q_loss)

    def _adversarial_term(self, y: torch.Tensor, nll: torch.Tensor,
                          terms: Dict[str, float]) -> torch.Tensor:
        self.disc.requires_grad_(False)
        g_loss = generator_adv_loss(self.disc(y))
        scale = float(self.scaler.get_scale()) if self.scaler is not None else 1.0
        try:
            d_w = adaptive_weight(nll, g_loss, self.model.decoder.conv_out.weight,
                                  self.cfg.disc_weight, scale=scale)
        except RuntimeError:  # e.g. no grad path in eval-only corner cases
            d_w = torch.tensor(0.0, device=self.device)
        d_w = mean_scalar(d_w)  # one weight for the whole (all-rank) batch
        terms["g_loss"], terms["d_weight"] = g_loss.item(), d_w.item()
        return d_w * g_loss

    @staticmethod
    def _optimise(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler) -> None:
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    def _ema_codebook_step(self, idx: torch.Tensor, terms: Dict[str, float]) -> None:
        cfg, q = self.cfg, self.model.quantize
        if cfg.dc_weight > 0 and getattr(q, "ema", False):
            used = global_codes(idx, q.n_embed)  # the same step on every rank
            terms["dc_penalty"] = codebook_regularizer_step(
                q.embedding.weight, used, lr=cfg.dc_weight, theta=cfg.dc_theta, tau=cfg.dc_tau)
            _sync_ema(q, used)

    def _discriminator_step(self, fw: _Forward, terms: Dict[str, float]) -> None:
        self.disc.requires_grad_(True)
        with autocast(self.device):
            d_loss = hinge_d_loss(self.disc_ddp(fw.target), self.disc_ddp(fw.y.detach()))
        self._optimise(d_loss, self.opt_d, self.scaler_d)
        broadcast_buffers(self.disc)  # the running statistics of every rank: rank 0's
        terms["d_loss"] = d_loss.item()

    def _maybe_restart_codes(self, x: torch.Tensor, terms: Dict[str, float]) -> None:
        cfg = self.cfg
        if cfg.restart_every > 0 and self.step_count % cfg.restart_every == 0 and (
                self.kmeans_done or cfg.kmeans_at <= 0):
            q = self.model.quantize
            sum_usage(q)  # dead on every rank, not only on this one
            if self.ctx.is_main:
                with torch.no_grad():
                    lat = self.model.encode_latent(x * 2 - 1).float()
                dead = dead_code_restart(q, None, lat, min_count=1.0, generator=self.gen)
                terms["restarted_codes"] = float(dead.numel())
            broadcast_codebook(q)

    def step(self, sampler: CropSampler, progress: float = 0.0) -> Dict[str, float]:
        """One generator (+ discriminator) update; ``progress`` in [0, 1] is the fraction of
        this run's time budget already spent (drives the LR decay)."""
        self._maybe_kmeans(sampler)
        lr_scale = self._set_lr(progress)
        x, xin, degraded = self._batch(sampler)
        use_gan = self.step_count >= self.cfg.disc_start
        terms: Dict[str, float] = {}
        fw = self._forward(x, xin, sampler.crops.shape[1], use_gan, terms)
        self._optimise(fw.loss, self.opt_g, self.scaler)
        self._ema_codebook_step(fw.idx, terms)
        if use_gan:
            self._discriminator_step(fw, terms)
        self.step_count += 1
        self._maybe_restart_codes(x, terms)
        terms.update(loss=fw.loss.item(), rec=fw.rec.item(), vq=fw.q_loss.item(),
                     lr=self.cfg.lr * lr_scale,
                     codes_in_batch=float(torch.unique(fw.idx).numel()),
                     degraded_input=float(degraded))
        return terms

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x01: torch.Tensor, batch: int = 16) -> torch.Tensor:
        was = self.model.training
        self.model.eval()
        out = []
        for s in range(0, x01.shape[0], batch):
            xb = x01[s:s + batch].to(self.device)
            with autocast(self.device):
                y = self.model(xb * 2 - 1)[0]
            out.append(((y.float() + 1) / 2).clamp(0, 1).cpu())
        self.model.train(was)
        return torch.cat(out) if out else x01.new_zeros(x01.shape)

    def holdout_psnr(self, x01: torch.Tensor) -> float:
        return holdout_psnr(self.reconstruct(x01), x01)

    # -- persistence ------------------------------------------------------------------------
    def state_tensors_and_info(self, sampler: Optional[CropSampler]
                               ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        tensors: Dict[str, torch.Tensor] = {}
        info: Dict[str, Any] = {
            "format": STATE_FORMAT, "step": self.step_count,
            "elapsed_seconds": round(self.elapsed, 3), "kmeans_done": self.kmeans_done,
            "train_config": self.cfg.to_dict(),
            "opt_g": flatten_optimizer("opt_g", self.opt_g, tensors),
            "opt_d": flatten_optimizer("opt_d", self.opt_d, tensors),
            "history": self.history[-500:],
        }
        for k, v in self.disc.state_dict().items():
            tensors[f"disc.{k}"] = v.detach().to("cpu").contiguous()
        q = self.model.quantize
        if getattr(q, "ema", False) and getattr(q, "_ema_ready", False):
            tensors["quantize.ema_cluster_size"] = q.ema_cluster_size.detach().cpu().contiguous()
            tensors["quantize.ema_embed_sum"] = q.ema_embed_sum.detach().cpu().contiguous()
        tensors["quantize.usage"] = q.usage.detach().cpu().contiguous()
        tensors["rng.trainer"] = self.gen.get_state()
        if sampler is not None:
            tensors["rng.sampler"] = sampler.state()
        if self.scaler is not None:
            info["grad_scale"] = float(self.scaler.get_scale())
        return tensors, info

    def save_state(self, directory: Path, sampler: Optional[CropSampler]) -> None:
        from safetensors.torch import save_file
        tensors, info = self.state_tensors_and_info(sampler)
        save_file(tensors, str(directory / STATE_TENSORS), metadata={"format": "pt"})
        write_json(directory / STATE_JSON, info, sort_keys=True)

    def load_state(self, directory: Path, sampler: Optional[CropSampler],
                   info: Optional[Dict[str, Any]] = None) -> None:
        """Restore counters, optimisers, discriminator, EMA statistics and RNGs; ``info``: the
        parsed ``trainer_state.json`` when already read (:func:`read_state_info`)."""
        from safetensors.torch import load_file
        try:
            if info is None:
                info = json.loads((directory / STATE_JSON).read_text())
            tensors = load_file(str(directory / STATE_TENSORS), device="cpu")
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the trainer state in {directory} ({exc}); "
                                  "pass --fresh to start this identity over") from exc
        self.step_count = int(info.get("step", 0))
        self.elapsed = float(info.get("elapsed_seconds", 0.0))
        self.kmeans_done = bool(info.get("kmeans_done", True)) or self.step_count > 0
        self.history = list(info.get("history", []))
        self._load_optimisers(directory, info, tensors)
        self._load_quantizer_and_rngs(info, tensors, sampler)
        self.model.to(self.device)
        self.disc.to(self.device)
        for opt in (self.opt_g, self.opt_d):  # moments were loaded on the CPU
            for st in opt.state.values():
                for k, v in st.items():
                    if torch.is_tensor(v) and k != "step":
                        st[k] = v.to(self.device)

    def _load_optimisers(self, directory: Path, info: Dict[str, Any],
                         tensors: Dict[str, torch.Tensor]) -> None:
        try:
            unflatten_optimizer("opt_g", self.opt_g, info["opt_g"], tensors)
            unflatten_optimizer("opt_d", self.opt_d, info["opt_d"], tensors)
            self.disc.load_state_dict({k[5:]: v for k, v in tensors.items()
                                       if k.startswith("disc.")})
        except (KeyError, ValueError, RuntimeError) as exc:
            log.warning("trainer state in %s does not fit this run (%s); continuing from the "
                        "saved weights with fresh optimiser state", directory, exc)
            self.opt_g = torch.optim.Adam(self.model.generator_parameters(), lr=self.cfg.lr,
                                          betas=self.cfg.betas)
            self.warmup_from = self.step_count
        for group in self.opt_g.param_groups:  # a new run may use a different lr
            group["lr"] = self.cfg.lr
        for group in self.opt_d.param_groups:
            group["lr"] = self.cfg.disc_lr

    def _load_quantizer_and_rngs(self, info: Dict[str, Any], tensors: Dict[str, torch.Tensor],
                                 sampler: Optional[CropSampler]) -> None:
        q = self.model.quantize
        if getattr(q, "ema", False) and "quantize.ema_cluster_size" in tensors:
            q.ema_cluster_size.copy_(tensors["quantize.ema_cluster_size"])
            q.ema_embed_sum.copy_(tensors["quantize.ema_embed_sum"])
            q._ema_ready = True  # noqa: SLF001 - restoring the quantizer's own statistics
        if "quantize.usage" in tensors:
            q.usage.copy_(tensors["quantize.usage"])
        if "rng.trainer" in tensors:
            self.gen.set_state(tensors["rng.trainer"])
        if sampler is not None and "rng.sampler" in tensors:
            sampler.set_state(tensors["rng.sampler"])
        if self.scaler is not None and "grad_scale" in info:
            self.scaler.update(float(info["grad_scale"]))


@torch.no_grad()
def _sync_ema(q, idx: torch.Tensor) -> None:
    """After an explicit codebook step under EMA, make the EMA sums agree with the new codes."""
    if not getattr(q, "ema", False) or not getattr(q, "_ema_ready", False):
        return
    rows = torch.unique(idx.flatten())
    cs = q.ema_cluster_size
    n = cs.sum()
    smoothed = (cs + q.ema_eps) / (n + q.n_embed * q.ema_eps) * n
    q.ema_embed_sum[rows] = q.embedding.weight[rows].float() * smoothed[rows, None]


__all__ = ["Trainer", "holdout_psnr", "read_state_info", "STATE_JSON", "STATE_TENSORS"]
