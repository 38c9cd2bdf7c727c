"""Calibration of the fusion strengths at enrollment, scored exactly as the quality measure
scores W and L (the rule: docs/evaluation.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np
import torch

from ladtalk._util.jsonsafe import to_jsonable
from ladtalk.evaluation.proxy import prepare_case, wav2lip_proxy
from ladtalk.evaluation.quality_report import sigma_key
from ladtalk.face.crop import CropConfig
from ladtalk.generation.blend import BlendConfig, blend_face
from ladtalk.generation.fusion import FusionConfig, fuse
from ladtalk.media.resample import to_uint8
from ladtalk.models.wav2lip import FACE_SIZE

LOW_GRID = (0.0, 0.5, 0.75, 1.0)
HIGH_GRID = (0.0, 0.75, 1.0, 1.25)
CALIBRATION_SOFTEN = (0.0, 0.5, 1.0, 1.5)
#: the ideal (sigma 0) proxy may lose at most this much against Wav2Lip
IDEAL_TOLERANCE_DB = 0.5

Grid = Tuple[float, float]


@dataclass
class Calibration:
    """The chosen fusion and the gains (dB, pasted region) it was chosen from."""

    fusion: FusionConfig
    gains: Dict[str, Dict[str, float]]        # "low,high" -> {sigma: gain}
    chosen_gains: Dict[str, float]
    frames: int
    rule: str

    def to_json(self) -> Dict[str, Any]:
        return to_jsonable({"fusion": self.fusion, "chosen_gains_db": self.chosen_gains,
                            "gains_db": self.gains, "frames": self.frames, "rule": self.rule})


def _squared_errors(restorer, items: List, sig: List[float], cfgs: Dict[Grid, FusionConfig],
                    crop_config: CropConfig, blend: BlendConfig):
    """Summed squared errors over the pasted regions: of W per sigma, of L per (grid, sigma)."""
    R = int(restorer.resolution)
    err_w = {s: 0.0 for s in sig}
    err_l = {(g, s): 0.0 for g in cfgs for s in sig}
    for frame, box, _consecutive in items:
        c = prepare_case(frame, box, R, crop_config, blend)
        mask = c.mask
        truth = c.frame[mask].astype(np.float64)
        for s in sig:
            _w96, wframe, up = wav2lip_proxy(c, s, R, blend)
            err_w[s] += float(np.sum((wframe[mask] - truth) ** 2))
            # built from the (H, W, 3) array as before: to_tensor01's tensor has another
            # stride on the batch axis, and the conv kernels then differ in the last bit
            up_t = torch.from_numpy(up).permute(2, 0, 1)[None].float() / 255.0
            dec = restorer.restore01(up_t, fusion=None)
            for g, cfg in cfgs.items():
                crop = to_uint8(fuse(dec, up_t, cfg))[0]
                lframe = blend_face(c.frame.copy(), crop, c.region, c.trueR, blend)
                err_l[(g, s)] += float(np.sum((lframe[mask] - truth) ** 2))
    return err_w, err_l


def calibrate_fusion(restorer, frames: Iterable[Tuple[np.ndarray, Sequence[float], bool]],
                     soften: Sequence[float] = CALIBRATION_SOFTEN,
                     low_grid: Sequence[float] = LOW_GRID,
                     high_grid: Sequence[float] = HIGH_GRID,
                     tolerance_db: float = IDEAL_TOLERANCE_DB,
                     base: FusionConfig = FusionConfig(),
                     crop_config: CropConfig = CropConfig(),
                     blend: BlendConfig = BlendConfig()) -> Calibration:
    """Choose the fusion strengths on held-out ``(frame, box, consecutive)`` items.

    Among the (low, high) grid points whose sigma-0 gain is at least ``-tolerance_db``, the
    one with the largest mean gain over the softened proxies wins; (0, 0) always qualifies.
    """
    R = int(restorer.resolution)
    sig = [float(s) for s in soften]
    items = list(frames)
    if R <= FACE_SIZE:
        # the identity sees less than the 96 px Wav2Lip face already has: leave it alone
        off = replace(base, low_strength=0.0, high_strength=0.0)
        return Calibration(fusion=off, gains={}, chosen_gains={}, frames=len(items),
                           rule=f"identity resolution {R} px <= the {FACE_SIZE} px Wav2Lip "
                                "face: restoring could only lose detail, strength 0")
    grid = [(float(lo), float(hi)) for lo in low_grid for hi in high_grid
            if (lo, hi) != (0.0, 0.0)]
    cfgs = {g: replace(base, low_strength=g[0], high_strength=g[1]) for g in grid}
    err_w, err_l = _squared_errors(restorer, items, sig, cfgs, crop_config, blend)
    gains: Dict[str, Dict[str, float]] = {"0,0": {sigma_key(s): 0.0 for s in sig}}
    best, best_score = (0.0, 0.0), 0.0
    for g in grid:
        gd = {sigma_key(s): 10.0 * math.log10(max(err_w[s], 1e-9) / max(err_l[(g, s)], 1e-9))
              for s in sig}
        gains[f"{g[0]:g},{g[1]:g}"] = {k: round(v, 3) for k, v in gd.items()}
        ideal = gd.get(sigma_key(0.0), 0.0)
        soft = [v for k, v in gd.items() if float(k) > 0] or [ideal]
        score = float(np.mean(soft))
        if ideal >= -tolerance_db and score > best_score:
            best, best_score = g, score
    chosen = replace(base, low_strength=best[0], high_strength=best[1])
    rule = (f"max mean gain over sigma {[s for s in sig if s > 0]} with the sigma-0 gain >= "
            f"-{tolerance_db:g} dB (frame-level PSNR over the pasted region)")
    return Calibration(fusion=chosen, gains=gains,
                       chosen_gains=gains[f"{best[0]:g},{best[1]:g}"], frames=len(items),
                       rule=rule)
