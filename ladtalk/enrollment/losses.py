"""Loss terms of SOVQAE enrollment.

Images are NCHW in the model's ``[-1, 1]`` range unless stated otherwise.

* :func:`reconstruction_loss`: ``l1 * |y - x| + l2 * (y - x)^2``, optionally weighted per pixel
  (a face-region map, see :func:`ladtalk.enrollment.data.face_weight_map`), mean over pixels.
* :func:`codebook_regularizer`: the paper's ``||d_C - theta||_2`` (theta = 1) on the minimum
  pairwise distance ``d_C`` between codes. ``d_C`` is a hard minimum, whose gradient touches a
  single pair, so we use a **soft minimum over the codes used in the current batch**,
  ``softmin_tau(d) = -tau * log(sum_{i<j} exp(-d_ij / tau))`` (a lower bound of the hard min
  that converges to it as tau -> 0), and penalise ``|softmin - theta|``; it acts on the
  codebook only (the encoder is not involved). With an EMA codebook (no optimiser owns the
  codebook) the same gradient is applied as an explicit step after the EMA update
  (:func:`codebook_regularizer_step`).
* :func:`hinge_d_loss`, :func:`generator_adv_loss`: taming's hinge GAN losses
  (``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(G)))`` and ``-mean D(G)``).
* :func:`adaptive_weight`: taming's ``calculate_adaptive_weight``: the ratio of the gradient
  norms of the reconstruction loss and the generator loss at the decoder's last layer,
  clamped to [0, 1e4], times the discriminator weight.
* :class:`LPIPS` + :func:`load_perceptual`: the VGG16-based LPIPS that taming's
  ``VQLPIPSWithDiscriminator`` uses. Its weights cannot be downloaded on every machine, so they
  are looked up from environment variables (``LADTALK_VGG16``: torchvision ``vgg16`` weights;
  ``LADTALK_LPIPS``: the LPIPS linear heads ``lin{0..4}.model.1.weight`` (``vgg.pth``), or one
  file with both), each resolved by :func:`ladtalk.checkpoints.hub.resolve_checkpoint` (local path or Hub
  reference). When they are absent, :func:`load_perceptual` warns once and returns ``None``
  and training continues without the perceptual term.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

VGG16_ENV = "LADTALK_VGG16"
LPIPS_ENV = "LADTALK_LPIPS"


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
    """``|softmin d_C(used codes) - theta|`` (see module doc); 0 when fewer than two codes."""
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
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


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


# -- perceptual (LPIPS, VGG16) --------------------------------------------------------------
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_SLICE_ENDS = (4, 9, 16, 23, 30)  # torchvision feature indices after relu1_2 ... relu5_3
_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """LPIPS (VGG16 variant) as in taming: scaling layer, five VGG stages, unit-normalised
    features, squared differences, 1x1 linear heads, spatial mean, summed over stages.

    ``features`` uses torchvision's ``vgg16().features`` indices (``features.0.weight`` ...);
    heads are ``lin{k}.model.1.weight`` as in the LPIPS release. Parameters are frozen.
    """

    def __init__(self) -> None:
        super().__init__()
        layers = []
        c_in = 3
        for v in _VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c_in = int(v)
        self.features = nn.Sequential(*layers)
        for k, c in enumerate(_CHANNELS):
            head = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))
            nn.init.constant_(head[1].weight, 1.0 / c)
            setattr(self, f"lin{k}", nn.Module())
            getattr(self, f"lin{k}").model = head
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def _stages(self, x: torch.Tensor):
        h = (x - self.shift) / self.scale
        start = 0
        for end in _SLICE_ENDS:
            h = self.features[start:end](h)
            start = end
            yield h

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distance (B, 1, 1, 1) between images in [-1, 1]."""
        total = 0.0
        for k, (fx, fy) in enumerate(zip(self._stages(x), self._stages(y))):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = getattr(self, f"lin{k}").model((nx - ny) ** 2)
            total = total + d.mean(dim=(2, 3), keepdim=True)
        return total


def _map_lpips_keys(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Accept torchvision (``features.N``), LPIPS-package (``net.sliceK.N``) and taming
    (``net.sliceK.N`` / ``lin{k}.model.1``) key styles; drop the VGG classifier."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        key = k
        for pre in ("perceptual_loss.", "loss.perceptual_loss."):
            if key.startswith(pre):
                key = key[len(pre):]
        if key.startswith("net.slice"):
            parts = key.split(".")  # net, sliceK, N, weight
            key = ".".join(["features"] + parts[2:])
        if key.startswith("features.") or (key.startswith("lin") and ".model.1." in key):
            out[key] = v
    return out


_WARNED = False


def _resolve_env(var: str):
    from ladtalk.checkpoints.hub import resolve_checkpoint
    value = os.environ.get(var, "").strip()
    if not value:
        return None
    return resolve_checkpoint(value)


def load_perceptual(device=None, *, warn: bool = True) -> Tuple[Optional[LPIPS], str]:
    """``(LPIPS module or None, a one-line status)``. See the module doc for the env vars.

    Without VGG16 weights there is no perceptual term (one warning per process). With VGG16
    but no LPIPS heads, uniform heads are used (a plain VGG feature distance) and that is said.
    A file that is set but cannot be loaded raises :class:`~ladtalk.errors.CheckpointError`.
    """
    global _WARNED
    from ladtalk.errors import CheckpointError
    from ladtalk.checkpoints.hub import load_state_dict

    paths = [p for p in (_resolve_env(VGG16_ENV), _resolve_env(LPIPS_ENV)) if p is not None]
    state: Dict[str, torch.Tensor] = {}
    for p in paths:
        state.update(_map_lpips_keys(load_state_dict(p, strip_prefix="module.")))
    has_vgg = any(k.startswith("features.") for k in state)
    if not has_vgg:
        msg = (f"perceptual (LPIPS) loss disabled: no pretrained VGG16 weights (set {VGG16_ENV} "
               f"to torchvision's vgg16 weights and {LPIPS_ENV} to the LPIPS heads 'vgg.pth'); "
               "training uses the pixel, codebook and GAN losses only")
        if warn and not _WARNED:
            print(f"warning: {msg}", file=sys.stderr, flush=True)
            _WARNED = True
        return None, msg
    model = LPIPS()
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing_vgg = [k for k in own if k.startswith("features.") and k not in state]
    if wrong or missing_vgg:
        raise CheckpointError(f"perceptual weights from {', '.join(map(str, paths))} do not fit "
                              f"VGG16/LPIPS (wrong shapes: {wrong[:3]}, missing: {missing_vgg[:3]})")
    model.load_state_dict(state, strict=False)
    has_lin = all(f"lin{k}.model.1.weight" in state for k in range(5))
    status = "perceptual loss: LPIPS (VGG16)" if has_lin else (
        "perceptual loss: VGG16 feature distance with uniform heads (no LPIPS heads in "
        f"{LPIPS_ENV})")
    from ladtalk._util.device import resolve_device
    return model.to(resolve_device(device)), status


__all__ = ["reconstruction_loss", "soft_min_distance", "codebook_regularizer",
           "codebook_regularizer_step", "hinge_d_loss", "generator_adv_loss", "adaptive_weight",
           "LPIPS", "load_perceptual", "VGG16_ENV", "LPIPS_ENV"]
