"""Holdout numbers for ``meta.json``: reconstruction, restoration gains, the certificate."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from ladtalk._util.jsonsafe import to_jsonable
from ladtalk.analysis.robustness import evaluate_robustness
from ladtalk.models.sovqae import SOVQAE

EVAL_DEGRADATIONS = ("blur:2.0", "noise:0.1", "down:96")


def eval_degradations(resolution: int) -> Tuple[str, ...]:
    """The standard probes; below 97 px the down-up size becomes 3/4 of the crop side."""
    if resolution > 96:
        return EVAL_DEGRADATIONS
    return ("blur:2.0", "noise:0.1", f"down:{max(4, int(round(resolution * 0.75)))}")


def evaluate_identity(model: SOVQAE, holdout01: torch.Tensor, device: torch.device,
                      degradations: Optional[Sequence[str]] = None,
                      certificate: bool = True) -> Dict[str, Any]:
    """Reconstruction PSNR/SSIM, per-degradation PSNR/SSIM of the degraded and restored
    holdout crops, and the certificate, measured by :mod:`ladtalk.analysis.robustness`
    (so ``meta.json`` and ``python -m ladtalk robustness`` agree); the report as JSON."""
    model.eval()
    if degradations is None:
        degradations = eval_degradations(int(holdout01.shape[-1]))
    report = evaluate_robustness(model, holdout01, list(degradations), device=device,
                                 certificate=certificate, cost="enroll")
    return to_jsonable(report)


__all__ = ["evaluate_identity", "eval_degradations", "EVAL_DEGRADATIONS"]
