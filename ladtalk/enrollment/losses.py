"""Loss terms of SOVQAE enrollment (NCHW images in the model's [-1, 1] range).

Reconstruction, the soft-minimum codebook regulariser, taming's hinge GAN losses and adaptive
weight; how they combine: ``docs/enrollment.md``. The perceptual loss is
:mod:`ladtalk.metrics.lpips`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


# -- reconstruction --------------------------------------------------------------------------
def reconstruction_loss(y: torch.Tensor, x: torch.Tensor, l1: float = 1.0, l2: float = 1.0,
                        weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-pixel ``l1 * |y - x| + l2 * (y - x)^2`` (optionally weighted), averaged."""
    d = (y.float() - x.float())
    per = l1 * d.abs() + l2 * d * d
    if weight is not None:
        if weight.shape[-2:] != per.shape[-2:]:
            weight = F.interpolate(weight, size=per.shape[-2:], mode="bilinear",
                                   align_corners=False)
        per = per * weight
    return per.mean()


# -- codebook regularisation ------------------------------------------------------------------
def soft_min_distance(codes: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """Soft minimum of the pairwise Euclidean distances of ``codes`` (K, D), K >= 2."""
    c = codes.float()
    sq = (c * c).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (c @ c.t())).clamp_min(1e-12)
    iu = torch.triu_indices(c.shape[0], c.shape[0], offset=1, device=c.device)
    d = d2[iu[0], iu[1]].sqrt()
    return -tau * torch.logsumexp(-d / tau, dim=0)


def codebook_regularizer(weight: torch.Tensor, used: Optional[torch.Tensor], theta: float = 1.0,
                         tau: float = 0.05, max_codes: int = 2048) -> torch.Tensor:
    """``|softmin_tau d_C(used codes) - theta|``, the paper's ``||d_C - theta||`` made smooth
    (a hard minimum's gradient touches one pair); 0 when fewer than two codes."""
    codes = weight
    if used is not None:
        sel = torch.unique(used.flatten())
        if sel.numel() > max_codes:
            sel = sel[torch.randperm(sel.numel(), device=sel.device)[:max_codes]]
        codes = weight[sel]
    if codes.shape[0] < 2:
        return weight.sum() * 0.0
    return (soft_min_distance(codes, tau) - theta).abs()


@torch.no_grad()
def codebook_regularizer_step(weight: torch.Tensor, used: Optional[torch.Tensor], lr: float,
                              theta: float = 1.0, tau: float = 0.05) -> float:
    """One explicit gradient step of :func:`codebook_regularizer` on ``weight`` (in place);
    returns the penalty before the step. Used when the codebook is EMA-updated."""
    with torch.enable_grad():
        w = weight.detach().clone().requires_grad_(True)
        pen = codebook_regularizer(w, used, theta, tau)
        if not pen.requires_grad:
            return float(pen)
        (g,) = torch.autograd.grad(pen, w)
    weight.sub_(lr * g.to(weight.dtype))
    return float(pen)


# -- GAN ------------------------------------------------------------------------------------
def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """taming's hinge loss ``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(G)))``."""
    real = F.relu(1.0 - logits_real.float()).mean()
    return 0.5 * (real + F.relu(1.0 + logits_fake.float()).mean())


def generator_adv_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.float().mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    disc_weight: float = 1.0, scale: float = 1.0,
                    max_weight: float = 1e4) -> torch.Tensor:
    """taming's adaptive GAN weight ``||grad rec|| / (||grad g|| + 1e-4)`` at ``last_layer``.

    ``scale`` multiplies both losses before differentiation (pass the AMP GradScaler scale so
    fp16 gradients do not underflow; the ratio is unchanged). Returns a detached scalar.
    """
    rec_g = torch.autograd.grad(rec_loss * scale, last_layer, retain_graph=True)[0]
    g_g = torch.autograd.grad(g_loss * scale, last_layer, retain_graph=True)[0]
    w = rec_g.float().norm() / (g_g.float().norm() + 1e-4 * scale)
    return (w.clamp(0.0, max_weight) * disc_weight).detach()


__all__ = ["reconstruction_loss", "soft_min_distance", "codebook_regularizer",
           "codebook_regularizer_step", "hinge_d_loss", "generator_adv_loss", "adaptive_weight"]
