"""Enrollment: fine-tune a per-identity SOVQAE on face crops of one video, time-budgeted.

Flow of :func:`enroll`
----------------------
1. Validate the identity name (before anything slow) and resolve the device.
2. Model: continue the identity's saved weights when it exists (and its trainer state, when
   present: optimiser moments, discriminator, step count, EMA statistics, sampler RNG), else
   ``--init`` (a taming ``.ckpt``, a diffusers ``VQModel``, an SOVQAE directory or another
   identity), else a fresh model of the named config (``cpu`` on CPU, ``base`` on CUDA).
3. Crops: :func:`ladtalk.face.video_crops.extract_crops` (detector + temporal smoothing + the
   generation framing), cached; the last ``holdout`` fraction (by time) is never trained on.
4. Train until the time budget is spent (the clock is checked after every step):

   ``L = l1 |y - x| + l2 (y - x)^2 (face-weighted)  +  w_p LPIPS(y, x)  [if weights]``
   ``  + w_cb L_VQ  +  w_dC | softmin d_C(used codes) - theta |``
   ``  + lambda_adapt * w_gan * (-D(y))                       [after disc_start steps]``

   where ``y = SOVQAE(x_in)`` and ``x_in`` is the clean crop ``x`` or, with probability
   ``restore_prob``, a randomly degraded copy of it (the restoration task itself: degraded
   input, clean target). ``lambda_adapt`` is taming's adaptive weight (gradient-norm ratio at
   ``decoder.conv_out``); the PatchGAN is trained with the hinge loss after ``disc_start``.
   The codebook is k-means initialised from encoder outputs after ``kmeans_at`` steps (fresh
   models only), EMA-updated (config ``ema``) and dead codes are restarted every
   ``restart_every`` steps.
5. Evaluate on the holdout crops (reconstruction PSNR / SSIM, restoration gains for blur,
   noise and down-up, and the Theorem-3.3 certificate numbers) and write the identity
   directory atomically with :func:`ladtalk.identities.store.atomic_identity_dir`:
   ``config.json``, ``model.safetensors``, ``meta.json``, ``trainer_state.safetensors`` +
   ``trainer_state.json`` (tensors in safetensors, everything else JSON; never pickle).

A crash, a kill or an exception raised by ``on_progress`` leaves the previous identity
directory untouched (the new one is assembled in a temp dir and swapped in at the end).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ladtalk._util.device import autocast, resolve_device
from ladtalk.enrollment.data import (
    CropSampler,
    DegradationRanges,
    face_weight_map,
    patch_windows,
    random_degradation,
    take_patches,
)
from ladtalk.enrollment.discriminator import NLayerDiscriminator
from ladtalk.enrollment.losses import (
    adaptive_weight,
    codebook_regularizer,
    codebook_regularizer_step,
    generator_adv_loss,
    hinge_d_loss,
    reconstruction_loss,
)
from ladtalk.errors import CheckpointError, InputError
from ladtalk.face.video_crops import (
    FaceCrops,
    even_subset,
    extract_crops,
    split_holdout,
    to_tensor01,
)
from ladtalk.identities.store import (
    atomic_identity_dir,
    store_path,
    validate_name,
    write_json_atomic,
)
from ladtalk.metrics.lpips import load_perceptual
from ladtalk.models.quantizer import codebook_min_distance, dead_code_restart, kmeans_init
from ladtalk.models.sovqae import (
    AUTO_RESOLUTION_CONFIGS,
    CONFIGS,
    SOVQAE,
    SOVQAEConfig,
    default_config_name,
    get_config,
)

log = logging.getLogger(__name__)

ProgressFn = Callable[[Dict[str, Any]], None]
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
META_JSON = "meta.json"
EVAL_DEGRADATIONS = ("blur:2.0", "noise:0.1", "down:96")


def eval_degradations(resolution: int) -> Tuple[str, ...]:
    """The standard probes; below 97 px the down-up size becomes 3/4 of the crop side."""
    if resolution > 96:
        return EVAL_DEGRADATIONS
    return ("blur:2.0", "noise:0.1", f"down:{max(4, int(round(resolution * 0.75)))}")


@dataclass
class TrainConfig:
    """Enrollment hyper-parameters (the model architecture lives in the SOVQAE config)."""

    seconds: float = 600.0          # training-loop wall-clock budget of one enroll run
    max_steps: int = 0              # also stop after this many steps in one run (0: no limit)
    batch_size: int = 4
    lr: float = 1e-3                # Adam, generator
    disc_lr: float = 2e-4           # Adam, discriminator
    betas: Tuple[float, float] = (0.5, 0.9)
    warmup_steps: int = 20          # linear LR warm-up (fresh runs only)
    decay_start: float = 0.6        # fraction of the run's budget after which the LR decays
    lr_end: float = 0.1             # ... linearly to this fraction of ``lr`` at the budget end
    patch: int = 0                  # train on random patches of this size (0: full crops)
    full_every: int = 0             # ... but every k-th step on full crops (0: never)
    #: where patches come from: with probability ``patch_focus`` inside ``patch_area``
    #: (x0, y0, x1, y1 fractions of the crop: the lower face that generation pastes back)
    patch_area: Tuple[float, float, float, float] = (0.0, 0.4, 1.0, 1.0)
    patch_focus: float = 0.0
    #: degradation augmentation: relative frequency of (blur, noise, down-up, lipsync path)
    #: and the lipsync path's softening sigma range at 96 px (see data.lipsync_degradation)
    degrade_weights: Tuple[float, float, float, float] = (1.0, 1.0, 1.0, 0.0)
    lipsync_sigma: Tuple[float, float] = (0.0, 1.5)
    l1: float = 1.0
    l2: float = 1.0
    face_weight: float = 0.0        # extra loss weight inside the face ellipse (0: uniform)
    perceptual_weight: float = 1.0  # used only when LPIPS weights are available
    codebook_weight: float = 1.0
    dc_weight: float = 0.01         # ||d_C - theta|| regulariser
    dc_theta: float = 1.0
    dc_tau: float = 0.05
    disc_start: int = 1500          # steps before the PatchGAN term starts
    disc_weight: float = 0.1
    disc_ndf: int = 32
    disc_layers: int = 3
    restore_prob: float = 0.5       # fraction of steps trained on degraded inputs
    restore_start: int = 50
    kmeans_at: int = 40             # k-means codebook init after this many steps (0: off)
    kmeans_batches: int = 8
    restart_every: int = 50         # dead-code restart period in steps (0: off)
    eval_seconds: float = 60.0      # holdout PSNR during training, at most this often
    eval_frames: int = 32
    final_frames: int = 64          # holdout frames for the final robustness / certificate
    max_frames: int = 3000          # crops kept from a long video (evenly in time)
    checkpoint_seconds: float = 0.0  # also save the identity every N seconds (0: at the end)
    calibration_frames: int = 16    # holdout frames the fusion strengths are calibrated on
    quality_frames: int = 48        # holdout frames of the final W-vs-L quality measure
    seed: int = 0

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for k in ("betas", "patch_area", "degrade_weights", "lipsync_sigma"):
            d[k] = list(getattr(self, k))
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("betas", "patch_area", "degrade_weights", "lipsync_sigma"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


#: Per model-config defaults (see docs/enrollment.md for how the cpu recipe was chosen).
TRAIN_PRESETS: Dict[str, TrainConfig] = {
    # 256 px (or 128 for small faces), normalisation-free: trained on 96 px patches, mostly
    # from the lower face, fed mostly what generation feeds it (docs/enrollment.md)
    "cpu": TrainConfig(seconds=735.0, batch_size=8, patch=96, patch_focus=0.75,
                       degrade_weights=(1.0, 1.0, 1.0, 8.0), restore_prob=0.9,
                       final_frames=32, calibration_frames=16, quality_frames=32),
    "cpu-gn128": TrainConfig(),
    "cpu-f8": TrainConfig(),
    "cpu-f4": TrainConfig(),
    "base": TrainConfig(seconds=3600.0, batch_size=8, lr=2e-4, perceptual_weight=1.0,
                        disc_start=5000, disc_weight=0.8, disc_ndf=64, restore_prob=0.5,
                        kmeans_at=100, restart_every=200, max_frames=2000,
                        checkpoint_seconds=900.0),
    "tiny": TrainConfig(seconds=60.0, batch_size=4, lr=3e-3,
                        disc_start=10 ** 9, restore_prob=0.7, restore_start=10, kmeans_at=10,
                        restart_every=25, eval_seconds=15.0, eval_frames=16, final_frames=16),
}


def train_preset(config_name: str, **overrides: Any) -> TrainConfig:
    base = TRAIN_PRESETS.get(config_name, TRAIN_PRESETS["cpu"])
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


# -- state (de)serialisation -------------------------------------------------------------------
def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer,
                       tensors: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    sd = opt.state_dict()
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(float(v))
            tensors[f"{prefix}.state.{pid}.{k}"] = t.detach().to("cpu").contiguous()
    return {"param_groups": sd["param_groups"]}


def _unflatten_optimizer(prefix: str, opt: torch.optim.Optimizer, info: Dict[str, Any],
                         tensors: Dict[str, torch.Tensor]) -> None:
    state: Dict[int, Dict[str, torch.Tensor]] = {}
    head = prefix + ".state."
    for key, t in tensors.items():
        if key.startswith(head):
            pid, name = key[len(head):].split(".", 1)
            state.setdefault(int(pid), {})[name] = t
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


# -- the trainer ------------------------------------------------------------------------------
class Trainer:
    """Holds the SOVQAE, the PatchGAN, optimisers and counters; one :meth:`step` = one batch."""

    def __init__(self, model: SOVQAE, cfg: TrainConfig, device: torch.device,
                 perceptual: Optional[nn.Module] = None) -> None:
        self.model = model.to(device).train()
        self.cfg = cfg
        self.device = device
        self.perceptual = perceptual
        self.disc = NLayerDiscriminator(ndf=cfg.disc_ndf, n_layers=cfg.disc_layers).to(device)
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
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
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

    def _maybe_kmeans(self, sampler: CropSampler) -> None:
        cfg = self.cfg
        if self.kmeans_done or cfg.kmeans_at <= 0 or self.step_count < cfg.kmeans_at:
            return
        with torch.no_grad():
            lat = [self.model.encode_latent(sampler.sample().to(self.device) * 2 - 1).float()
                   for _ in range(max(1, cfg.kmeans_batches))]
            kmeans_init(self.model.quantize, torch.cat(lat), iters=10, generator=self.gen)
        self.kmeans_done = True

    def step(self, sampler: CropSampler, progress: float = 0.0) -> Dict[str, float]:
        """One generator (+ discriminator) update; ``progress`` in [0, 1] is the fraction of
        this run's time budget already spent (drives the LR decay)."""
        cfg, model, dev = self.cfg, self.model, self.device
        self._maybe_kmeans(sampler)
        lr_scale = self._lr_scale(progress)
        for group in self.opt_g.param_groups:
            group["lr"] = cfg.lr * lr_scale
        for group in self.opt_d.param_groups:
            group["lr"] = cfg.disc_lr * lr_scale
        full = cfg.full_every > 0 and self.step_count % cfg.full_every == 0
        x = sampler.sample(full=full)
        degraded = (cfg.restore_prob > 0 and self.step_count >= cfg.restore_start
                    and float(torch.rand(1, generator=self.gen)) < cfg.restore_prob)
        # degrade whole crops (the lipsync path reduces the whole crop to 96 px), then cut
        # the same patch window out of input and target
        xin = random_degradation(x, self.gen, self.ranges) if degraded else x
        patch = cfg.patch if (cfg.patch and not full and cfg.patch < x.shape[-1]
                              and not sampler.patch) else 0
        if patch:
            win = patch_windows(x.shape[0], x.shape[-1], patch, self.gen, cfg.patch_area,
                                cfg.patch_focus)
            x, xin = take_patches(x, win, patch), take_patches(xin, win, patch)
        x, xin = x.to(dev), xin.to(dev)
        target = x * 2 - 1
        use_gan = self.step_count >= cfg.disc_start
        terms: Dict[str, float] = {}
        with autocast(dev):
            y, q_loss, idx = model(xin * 2 - 1)
            if self.wmap is None or self.wmap.shape[-1] != sampler.crops.shape[1]:
                self.wmap = face_weight_map(sampler.crops.shape[1], cfg.face_weight, dev)
            wmap = None
            if self.wmap is not None:
                wmap = self.wmap if y.shape[-1] == self.wmap.shape[-1] else None
            rec = reconstruction_loss(y, target, cfg.l1, cfg.l2, wmap)
            nll = rec
            if self.perceptual is not None and cfg.perceptual_weight > 0:
                p_loss = self.perceptual(y.float(), target.float()).mean()
                nll = nll + cfg.perceptual_weight * p_loss
                terms["perceptual"] = p_loss.item()
            loss = nll + cfg.codebook_weight * q_loss.float()
            ema = getattr(model.quantize, "ema", False)
            if cfg.dc_weight > 0 and not ema:
                dc_pen = codebook_regularizer(model.quantize.embedding.weight, idx, cfg.dc_theta,
                                              cfg.dc_tau)
                loss = loss + cfg.dc_weight * dc_pen
                terms["dc_penalty"] = dc_pen.item()
            if use_gan:
                self.disc.requires_grad_(False)
                g_loss = generator_adv_loss(self.disc(y))
                scale = float(self.scaler.get_scale()) if self.scaler is not None else 1.0
                try:
                    d_w = adaptive_weight(nll, g_loss, model.decoder.conv_out.weight,
                                          cfg.disc_weight, scale=scale)
                except RuntimeError:  # e.g. no grad path in eval-only corner cases
                    d_w = torch.tensor(0.0, device=dev)
                loss = loss + d_w * g_loss
                terms["g_loss"], terms["d_weight"] = g_loss.item(), d_w.item()
        self.opt_g.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt_g)
            self.scaler.update()
        else:
            loss.backward()
            self.opt_g.step()
        if cfg.dc_weight > 0 and getattr(model.quantize, "ema", False):
            pen = codebook_regularizer_step(model.quantize.embedding.weight, idx,
                                            lr=cfg.dc_weight, theta=cfg.dc_theta, tau=cfg.dc_tau)
            _sync_ema(model.quantize, idx)
            terms["dc_penalty"] = pen
        if use_gan:
            self.disc.requires_grad_(True)
            with autocast(dev):
                d_loss = hinge_d_loss(self.disc(target), self.disc(y.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            if self.scaler_d is not None:
                self.scaler_d.scale(d_loss).backward()
                self.scaler_d.step(self.opt_d)
                self.scaler_d.update()
            else:
                d_loss.backward()
                self.opt_d.step()
            terms["d_loss"] = d_loss.item()
        self.step_count += 1
        if cfg.restart_every > 0 and self.step_count % cfg.restart_every == 0 and (
                self.kmeans_done or cfg.kmeans_at <= 0):
            with torch.no_grad():
                lat = model.encode_latent(x * 2 - 1).float()
            dead = dead_code_restart(model.quantize, None, lat, min_count=1.0, generator=self.gen)
            terms["restarted_codes"] = float(dead.numel())
        terms.update(loss=loss.item(), rec=rec.item(), vq=q_loss.item(), lr=cfg.lr * lr_scale,
                     codes_in_batch=float(torch.unique(idx).numel()), degraded_input=float(degraded))
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
        return _psnr(self.reconstruct(x01), x01)

    # -- persistence ------------------------------------------------------------------------
    def state_tensors_and_info(self, sampler: Optional[CropSampler]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        tensors: Dict[str, torch.Tensor] = {}
        info: Dict[str, Any] = {
            "format": "ladtalk-enroll-state/1", "step": self.step_count,
            "elapsed_seconds": round(self.elapsed, 3), "kmeans_done": self.kmeans_done,
            "train_config": self.cfg.to_dict(),
            "opt_g": _flatten_optimizer("opt_g", self.opt_g, tensors),
            "opt_d": _flatten_optimizer("opt_d", self.opt_d, tensors),
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
        write_json_atomic(directory / STATE_JSON, info)

    def load_state(self, directory: Path, sampler: Optional[CropSampler]) -> None:
        """Restore counters, optimisers, discriminator, EMA statistics and RNGs."""
        from safetensors.torch import load_file
        try:
            info = json.loads((directory / STATE_JSON).read_text())
            tensors = load_file(str(directory / STATE_TENSORS), device="cpu")
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the trainer state in {directory} ({exc}); "
                                  "pass --fresh to start this identity over") from exc
        self.step_count = int(info.get("step", 0))
        self.elapsed = float(info.get("elapsed_seconds", 0.0))
        self.kmeans_done = bool(info.get("kmeans_done", True)) or self.step_count > 0
        self.history = list(info.get("history", []))
        try:
            _unflatten_optimizer("opt_g", self.opt_g, info["opt_g"], tensors)
            _unflatten_optimizer("opt_d", self.opt_d, info["opt_d"], tensors)
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
        self.model.to(self.device)
        self.disc.to(self.device)
        for opt in (self.opt_g, self.opt_d):  # moments were loaded on the CPU
            for st in opt.state.values():
                for k, v in st.items():
                    if torch.is_tensor(v) and k != "step":
                        st[k] = v.to(self.device)


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


def _psnr(y: torch.Tensor, x: torch.Tensor) -> float:
    """Mean over images of the per-image PSNR (dB) of [0, 1] tensors."""
    mse = ((y.double() - x.double()) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(1.0 / mse)).mean())


# -- evaluation for meta.json ----------------------------------------------------------------
def evaluate_identity(model: SOVQAE, holdout01: torch.Tensor, device: torch.device,
                      degradations: Optional[Sequence[str]] = None,
                      certificate: bool = True) -> Dict[str, Any]:
    """Holdout numbers: reconstruction PSNR/SSIM, per-degradation PSNR/SSIM of the degraded
    and the restored crops, and the certificate. Uses :mod:`ladtalk.analysis.robustness` when it is
    available (so meta.json and ``python -m ladtalk robustness`` agree), else the same
    definitions implemented here."""
    model.eval()
    if degradations is None:
        degradations = eval_degradations(int(holdout01.shape[-1]))
    try:
        from ladtalk.analysis import robustness as rb  # type: ignore
        fn = getattr(rb, "evaluate_crops", None)
    except ImportError:
        fn = None
    if fn is not None:
        try:
            res = fn(model, holdout01, degradations=list(degradations), certificate=certificate,
                     device=device, cert_faces=2, power_iters=4, n_random=2, max_positions=4)
            return res if isinstance(res, dict) else dict(res)
        except TypeError:
            pass  # API mismatch: fall back to the local implementation
    return _evaluate_local(model, holdout01, device, degradations, certificate)


@torch.no_grad()
def _restore(model: SOVQAE, x01: torch.Tensor, device: torch.device, batch: int = 16) -> torch.Tensor:
    out = []
    for s in range(0, x01.shape[0], batch):
        xb = x01[s:s + batch].to(device)
        with autocast(device):
            y = model(xb * 2 - 1)[0]
        out.append(((y.float() + 1) / 2).clamp(0, 1).cpu())
    return torch.cat(out)


def _evaluate_local(model: SOVQAE, x01: torch.Tensor, device: torch.device,
                    degradations: Sequence[str], certificate: bool) -> Dict[str, Any]:
    from ladtalk.analysis.certificate import compute_certificate
    from ladtalk.analysis.degrade import parse_degradation
    from ladtalk.metrics.image import ssim

    def mean_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
        an = a.permute(0, 2, 3, 1).numpy()
        bn = b.permute(0, 2, 3, 1).numpy()
        return float(np.mean([ssim(p, q, data_range=1.0) for p, q in zip(an, bn)]))

    res: Dict[str, Any] = {"frames": int(x01.shape[0]), "degradations": {}}
    rec = _restore(model, x01, device)
    res["reconstruction"] = {"psnr": _psnr(rec, x01), "ssim": mean_ssim(rec, x01)}
    seeds = list(range(x01.shape[0]))
    for spec in degradations:
        d = parse_degradation(spec)
        xd = d(x01, seed=seeds)
        yd = _restore(model, xd, device)
        res["degradations"][d.spec] = {
            "psnr_degraded": _psnr(xd, x01), "psnr_restored": _psnr(yd, x01),
            "ssim_degraded": mean_ssim(xd, x01), "ssim_restored": mean_ssim(yd, x01)}
        r = res["degradations"][d.spec]
        r["psnr_gain"] = r["psnr_restored"] - r["psnr_degraded"]
    if certificate:
        cert = compute_certificate(model, x01, list(degradations), lipschitz_faces=2, iters=4,
                                   n_random=2, max_positions=4, layerwise=False)
        res["certificate"] = cert.to_dict()
    return res


def spread_runs(n: int, total: int, run: int = 8) -> np.ndarray:
    """About ``total`` indices of ``range(n)`` as runs of ``run`` consecutive ones spread
    evenly (consecutive frames for the flicker measure, spread for representativeness)."""
    if n <= total:
        return np.arange(n)
    run = max(1, min(run, total))
    k = max(1, total // run)
    starts = np.round(np.linspace(0, n - run, k)).astype(np.int64)
    return np.unique(np.concatenate([np.arange(s, s + run) for s in starts]))


def calibrate_and_measure(model: SOVQAE, video: Union[str, Path], hold: FaceCrops,
                          cfg: TrainConfig, device: torch.device) -> Dict[str, Any]:
    """Calibrate the fusion strengths on held-out crops (:func:`ladtalk.evaluation.quality.calibrate_fusion`)
    and measure W against L on held-out frames of the video (:func:`ladtalk.evaluation.quality.
    measure_quality`); the ``meta.json`` keys ``fusion``, ``fusion_calibration``, ``quality``."""
    from ladtalk.evaluation.quality import (
        DEFAULT_SOFTEN,
        calibrate_fusion,
        holdout_frames,
        measure_quality,
    )
    from ladtalk.generation.restore import Restorer

    model.eval()
    restorer = Restorer(model, device, precision="fp32")
    q_idx = spread_runs(len(hold), cfg.quality_frames) if cfg.quality_frames > 0 else []
    c_idx = even_subset(len(hold), cfg.calibration_frames)
    want = np.union1d(np.asarray(q_idx, dtype=np.int64), c_idx)
    # the held-out frames, decoded once (a few dozen frames)
    got = {int(i): (frame.copy(), box, c) for i, (frame, box, c) in zip(want, holdout_frames(
        video, hold.frame_indices[want], hold.boxes[want]))}
    from ladtalk.generation.identity_match import colour_reference, lipsync_gains
    ref_crops = hold.crops[even_subset(len(hold), cfg.final_frames)]
    mean_rgb = colour_reference(ref_crops)
    ref = lipsync_gains(restorer, ref_crops, mean_rgb)
    cal = calibrate_fusion(restorer, [got[int(i)] for i in c_idx if int(i) in got])
    restorer.fusion = cal.fusion
    out: Dict[str, Any] = {"fusion": cal.fusion.to_dict(), "fusion_calibration": cal.to_dict(),
                           "identity_match_reference": {
                               "lipsync_gain_db": round(float(ref.mean()), 4),
                               "mean_rgb": mean_rgb, "frames": int(len(ref))}}
    if len(q_idx):
        items, prev = [], None
        for i in q_idx:
            if int(i) in got:
                frame, box, _ = got[int(i)]
                items.append((frame, box, prev is not None and int(i) == prev + 1))
                prev = int(i)
        try:
            rep = measure_quality(restorer, items, DEFAULT_SOFTEN)
            rep.first_s = float(hold.timestamps()[0])
            out["quality"] = rep.to_dict()
        except InputError as exc:
            log.warning("quality measure skipped: %s", exc)
    model.train()
    return out


# -- the entry point ----------------------------------------------------------------------------
def _crop_progress(on_progress: Optional[ProgressFn], t_start: float):
    def crop_progress(phase: str, done: int, total: int) -> None:
        _emit(on_progress, {"phase": phase, "done": done, "total": total,
                            "elapsed": time.time() - t_start})
    return crop_progress


def _emit(on_progress: Optional[ProgressFn], info: Dict[str, Any]) -> None:
    if on_progress is not None:
        on_progress(dict(info))


def _load_model(target: Path, fresh: bool, config: Optional[str], init: Optional[str],
                device: torch.device, model_cfg: Optional[SOVQAEConfig] = None,
                resolution: Optional[int] = None
                ) -> Tuple[SOVQAE, str, bool, Optional[str]]:
    """``(model, config_name, resumed, init_source)``; ``model_cfg`` (an explicit config
    object) is used for a fresh identity instead of a named config."""
    existing = (target / "config.json").is_file() and (target / "model.safetensors").is_file()
    if existing and not fresh:
        model = SOVQAE.from_pretrained(target, device="cpu")
        meta = {}
        try:
            meta = json.loads((target / META_JSON).read_text())
        except (OSError, ValueError):
            pass
        name = meta.get("config_name") or _config_name_of(model)
        if name in CONFIGS and not _same_architecture(CONFIGS[name], model.config):
            name = _config_name_of(model)  # e.g. an identity from before "cpu" changed
        if config and config in CONFIGS and not _same_architecture(get_config(config),
                                                                   model.config):
            raise InputError(f"identity at {target} was enrolled with config '{name}', not "
                             f"'{config}'; drop --config to continue training it, pass --fresh "
                             "to start it over, or use another --name")
        if init:
            log.warning("--init %s ignored: continuing the existing identity at %s (pass "
                        "--fresh to start over from --init)", init, target)
        return model, name, True, None
    if init:
        from ladtalk.identities.store import resolve_identity
        src: Union[str, Path] = init
        try:
            src = resolve_identity(init)
        except InputError:
            pass
        cfg = get_config(config) if config else None
        model = SOVQAE.from_checkpoint(src, device="cpu", config=cfg)
        name = config or _config_name_of(model)
        return model, name, False, str(init)
    if model_cfg is not None:
        model = SOVQAE(model_cfg)
        return model, _config_name_of(model), False, None
    name = config or default_config_name(device)
    overrides = {"resolution": int(resolution)} if resolution else {}
    try:
        cfg = get_config(name, **overrides)
    except ValueError as exc:
        raise InputError(f"--resolution {resolution} does not fit config '{name}': {exc}") from None
    return SOVQAE(cfg), name, False, None


def _train_config(config_name: str, model: SOVQAE, prev_state: Optional[Path],
                  **overrides: Any) -> TrainConfig:
    """The saved train config of a resumed identity, else the preset of its model config
    (custom configs: ``tiny`` up to 64 px, else ``cpu``), with explicit overrides applied.
    A resumed run gets its preset's default budget unless ``seconds`` is given."""
    preset = config_name if config_name in TRAIN_PRESETS else (
        "tiny" if model.config.resolution <= 64 else "cpu")
    base = TRAIN_PRESETS[preset]
    if prev_state is not None:
        try:
            saved = json.loads((prev_state / STATE_JSON).read_text()).get("train_config") or {}
            base = replace(TrainConfig.from_dict(saved), seconds=base.seconds)
        except (OSError, ValueError, TypeError):
            pass
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


_NON_ARCH = ("ema", "ema_decay", "ema_eps", "legacy", "resolution")


def _same_architecture(a: SOVQAEConfig, b: SOVQAEConfig) -> bool:
    """Equal up to the resolution (the networks are convolutional) and codebook options."""
    da, db = a.to_dict(), b.to_dict()
    return all(da[k] == db[k] for k in da if k not in _NON_ARCH)


def _config_name_of(model: SOVQAE) -> str:
    for name, cfg in CONFIGS.items():
        if _same_architecture(cfg, model.config) and (
                name in AUTO_RESOLUTION_CONFIGS or cfg.resolution == model.config.resolution):
            return name
    return "custom"


def enroll(video: Union[str, Path], name: str, seconds: Optional[float] = None,
           config: Optional[Union[str, SOVQAEConfig]] = None, init: Optional[str] = None, holdout: float = 0.1,
           out: Optional[Union[str, Path]] = None, detector: str = "auto", device=None,
           on_progress: Optional[ProgressFn] = None, batch_size: Optional[int] = None,
           fresh: bool = False, show_progress: bool = True,
           train_overrides: Optional[Dict[str, Any]] = None,
           resolution: Optional[int] = None) -> Path:
    """Enroll (or continue enrolling) identity ``name`` from ``video``; returns its directory.

    ``seconds``: training budget of this run (default: the config preset, 600 s for ``cpu``).
    ``config``: model config name (default ``cpu`` on CPU, ``base`` on CUDA; an existing
    identity keeps its own) or an :class:`SOVQAEConfig` for a fresh identity. ``init``: checkpoint spec for a fresh identity. ``holdout``:
    fraction of frames at the end of the video kept out of training. ``resolution``: the
    identity's crop side for a fresh identity (default: chosen from the measured face size,
    :func:`ladtalk.face.video_crops.choose_resolution`, for the ``cpu`` config; the config's own
    otherwise); an existing identity keeps its own. ``out``: write the
    identity here instead of the store (``$LADTALK_HOME/identities/NAME``). ``detector``:
    ``dlib`` / ``s3fd`` / ``auto``. ``on_progress(dict)`` receives ``phase`` ("detect",
    "crop", "train", "evaluate", "save", "done") and, while training, ``step``, ``elapsed``,
    ``budget``, the loss terms and (periodically) ``holdout_psnr``; an exception it raises
    aborts enrollment and leaves any previous identity intact. ``fresh``: ignore an existing
    identity of that name (it is replaced only when the new one is complete).
    """
    t_start = time.time()
    validate_name(name)
    target = Path(out).expanduser() if out is not None else store_path(name)
    dev = resolve_device(device)
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise InputError(f"--seconds must be a positive number, got {seconds}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    model_cfg: Optional[SOVQAEConfig] = None
    if isinstance(config, SOVQAEConfig):
        model_cfg, config = config, None
    elif config is not None and config not in CONFIGS:
        raise InputError(f"unknown SOVQAE config '{config}'; choose one of "
                         f"{', '.join(sorted(CONFIGS))}")
    if resolution is not None and (not isinstance(resolution, (int, np.integer))
                                   or not 16 <= int(resolution) <= 1024):
        raise InputError(f"--resolution must be a whole number of pixels in [16, 1024], got "
                         f"{resolution!r}")
    existing = (target / "config.json").is_file() and (target / "model.safetensors").is_file()
    t0 = time.time()
    crops: Optional[FaceCrops] = None
    will_build = not (existing and not fresh) and not init and model_cfg is None
    auto_res = will_build and resolution is None and (
        (config or default_config_name(dev)) in AUTO_RESOLUTION_CONFIGS)
    if auto_res:
        crops = extract_crops(video, "auto", detector, device=dev,
                              max_frames=TRAIN_PRESETS["cpu"].max_frames,
                              progress=_crop_progress(on_progress, t_start))
        resolution = crops.resolution
    model, config_name, resumed, init_src = _load_model(target, fresh, config, init, dev,
                                                        model_cfg, resolution)
    if resolution is not None and int(resolution) != model.config.resolution:
        raise InputError(f"--resolution {resolution} differs from the identity's "
                         f"{model.config.resolution} px; pass --fresh to start it over at "
                         f"{resolution} px, or drop --resolution")
    f = model.downsample_factor
    if model.config.resolution % f:
        raise InputError(f"resolution {model.config.resolution} is not a multiple of the "
                         f"model's downsampling factor {f}")
    prev_state = target if resumed and (target / STATE_JSON).is_file() else None
    cfg = _train_config(config_name, model, prev_state, seconds=seconds, batch_size=batch_size,
                        **(train_overrides or {}))
    if not (0.0 <= holdout < 1.0):
        raise InputError(f"--holdout must be in [0, 1), got {holdout}")

    if crops is None or crops.resolution != model.config.resolution:
        crops = extract_crops(video, model.config.resolution, detector, device=dev,
                              max_frames=cfg.max_frames,
                              progress=_crop_progress(on_progress, t_start))
    t_crops = time.time() - t0
    train_idx, hold_idx = split_holdout(len(crops), holdout)
    train_crops = crops.crops[train_idx]
    hold = crops.subset(hold_idx)
    hold_eval = to_tensor01(hold.crops[even_subset(len(hold), cfg.eval_frames)]) if len(hold) else None

    perceptual, perceptual_status = (None, "perceptual loss off (weight 0)")
    if cfg.perceptual_weight > 0:
        perceptual, perceptual_status = load_perceptual(dev)
    if perceptual is not None:
        print(perceptual_status, file=sys.stderr)

    if cfg.patch and cfg.patch % model.downsample_factor:
        cfg = replace(cfg, patch=0)
    # the trainer cuts patches itself, after degrading whole crops
    sampler = CropSampler(train_crops, cfg.batch_size, seed=cfg.seed)
    trainer = Trainer(model, cfg, dev, perceptual)
    if prev_state is not None:
        trainer.load_state(prev_state, sampler)
        trainer.warmup_from = trainer.step_count  # brief warm-up again after a resume
    elif resumed or init_src:
        trainer.kmeans_done = True  # pretrained codebook: no k-means re-init

    def partial_meta(run: Dict[str, Any]) -> Dict[str, Any]:
        meta = _meta(name, video, crops, hold, cfg, config_name, trainer, run, {}, init_src,
                     perceptual_status, t_crops, 0.0, t_start, resumed)
        meta["partial"] = True
        return meta

    result = _train_loop(trainer, sampler, hold_eval, cfg, on_progress, show_progress, target,
                         name, partial_meta)
    t_eval = time.time()
    _emit(on_progress, {"phase": "evaluate", "step": trainer.step_count,
                        "elapsed": time.time() - t_start})
    evaluation: Dict[str, Any] = {}
    fusion_info: Dict[str, Any] = {}
    if len(hold):
        hold_final = to_tensor01(hold.crops[even_subset(len(hold), cfg.final_frames)])
        evaluation = evaluate_identity(trainer.model, hold_final, dev)
        fusion_info = calibrate_and_measure(trainer.model, video, hold, cfg, dev)
    meta = _meta(name, video, crops, hold, cfg, config_name, trainer, result, evaluation,
                 init_src, perceptual_status, t_crops, time.time() - t_eval, t_start, resumed)
    meta.update(fusion_info)
    _emit(on_progress, {"phase": "save", "step": trainer.step_count,
                        "elapsed": time.time() - t_start})
    _save_identity(target, trainer, sampler, meta)
    _emit(on_progress, {"phase": "done", "step": trainer.step_count, "path": str(target),
                        "elapsed": time.time() - t_start,
                        "holdout_psnr": meta.get("holdout_psnr")})
    return target


def _train_loop(trainer: Trainer, sampler: CropSampler, hold_eval: Optional[torch.Tensor],
                cfg: TrainConfig, on_progress: Optional[ProgressFn], show_progress: bool,
                target: Path, name: str,
                partial_meta: Callable[[Dict[str, Any]], Dict[str, Any]]) -> Dict[str, Any]:
    from tqdm.auto import tqdm

    budget = float(cfg.seconds)
    start = time.time()
    steps0 = trainer.step_count
    last_eval = -1e9
    last_ckpt = start
    holdout_psnr: Optional[float] = None
    sums: Dict[str, float] = {}
    count = 0
    bar = tqdm(total=round(budget), unit="s", desc=f"enroll {name}", disable=not show_progress,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{postfix}]")
    try:
        while True:
            now = time.time()
            run_steps = trainer.step_count - steps0
            if now - start >= budget or (cfg.max_steps and run_steps >= cfg.max_steps):
                break
            progress = (now - start) / budget
            if cfg.max_steps:
                progress = max(progress, run_steps / cfg.max_steps)
            terms = trainer.step(sampler, progress=progress)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            now = time.time()
            elapsed = now - start
            info: Dict[str, Any] = {"phase": "train", "step": trainer.step_count,
                                    "run_steps": trainer.step_count - steps0,
                                    "elapsed": elapsed, "budget": budget, **terms}
            last_step = elapsed >= budget or (cfg.max_steps and
                                              trainer.step_count - steps0 >= cfg.max_steps)
            if hold_eval is not None and (now - last_eval >= cfg.eval_seconds or last_step):
                holdout_psnr = trainer.holdout_psnr(hold_eval)
                last_eval = time.time()
                info["holdout_psnr"] = holdout_psnr
                avg = {k: round(v / max(1, count), 5) for k, v in sums.items()}
                trainer.history.append({"step": trainer.step_count,
                                        "elapsed": round(trainer.elapsed + elapsed, 1),
                                        "holdout_psnr": round(holdout_psnr, 3), **avg})
                sums, count = {}, 0
            bar.n = min(round(elapsed), bar.total)
            bar.set_postfix_str(f"step {trainer.step_count} rec {terms['rec']:.4f}"
                                + (f" holdout {holdout_psnr:.2f} dB" if holdout_psnr else ""),
                                refresh=True)
            _emit(on_progress, info)
            if cfg.checkpoint_seconds > 0 and now - last_ckpt >= cfg.checkpoint_seconds:
                trainer.elapsed += now - last_ckpt
                _save_identity(target, trainer, sampler, partial_meta({
                    "run_seconds": now - start, "run_steps": trainer.step_count - steps0,
                    "holdout_psnr_during_training": holdout_psnr}))
                last_ckpt = time.time()
    finally:
        bar.close()
    trainer.elapsed += time.time() - last_ckpt
    if hold_eval is not None and holdout_psnr is None:
        holdout_psnr = trainer.holdout_psnr(hold_eval)
    return {"run_seconds": time.time() - start, "run_steps": trainer.step_count - steps0,
            "holdout_psnr_during_training": holdout_psnr}


def _meta(name, video, crops: FaceCrops, hold: FaceCrops, cfg: TrainConfig, config_name: str,
          trainer: Trainer, result: Dict[str, Any], evaluation: Dict[str, Any],
          init_src: Optional[str], perceptual_status: str, t_crops: float, t_eval: float,
          t_start: float, resumed: bool) -> Dict[str, Any]:
    from ladtalk import __version__
    q = trainer.model.quantize
    last = trainer.history[-1] if trainer.history else {}
    gains = {spec: {k: round(float(v), 4) for k, v in d.items()}
             for spec, d in evaluation.get("degradations", {}).items()}
    rec = evaluation.get("reconstruction", {})
    return {
        "name": name, "ladtalk_version": __version__, "config_name": config_name,
        "video": str(Path(video).name), "resumed": resumed, "init": init_src,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": trainer.step_count, "run_steps": result["run_steps"],
        "training_seconds": round(trainer.elapsed, 1),
        "run_training_seconds": round(result["run_seconds"], 1),
        "crop_seconds": round(t_crops, 1), "evaluation_seconds": round(t_eval, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "frames": {**crops.summary(), "train": len(crops) - len(hold), "holdout": len(hold),
                   "holdout_first_s": float(hold.timestamps()[0]) if len(hold) else None},
        "losses": {k: v for k, v in last.items() if k not in ("step", "elapsed")},
        "holdout_psnr": rec.get("psnr", result.get("holdout_psnr_during_training")),
        "holdout_ssim": rec.get("ssim"),
        "restoration": gains,
        "certificate": evaluation.get("certificate"),
        "codebook": {"d_C_all": float(codebook_min_distance(q).detach()), "n_embed": q.n_embed},
        "perceptual": perceptual_status,
        "train_config": cfg.to_dict(),
        "history": trainer.history[-200:],
    }


def _save_identity(target: Path, trainer: Trainer, sampler: CropSampler,
                   meta: Dict[str, Any]) -> None:
    with atomic_identity_dir(target) as tmp:
        trainer.model.save_pretrained(tmp)
        trainer.save_state(tmp, sampler)
        write_json_atomic(tmp / META_JSON, _jsonable(meta))
    trainer.model.train()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if torch.is_tensor(obj):
        return _jsonable(obj.tolist())
    return obj


__all__ = ["enroll", "TrainConfig", "TRAIN_PRESETS", "train_preset", "Trainer",
           "evaluate_identity", "EVAL_DEGRADATIONS", "eval_degradations"]
