"""The pieces the quality measure and the fusion calibration share: one held-out frame
prepared for scoring, and the Wav2Lip proxy W pasted back as generation pastes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from ladtalk.face.crop import CropConfig, CropRegion, crop_face, face_region, paste_back
from ladtalk.generation.blend import BlendConfig, blend_face, lower_face_mask
from ladtalk.media.resample import lipsync_path, to_tensor01, to_uint8
from ladtalk.models.wav2lip import FACE_SIZE


def soften96(crop96: np.ndarray, sigma: float) -> np.ndarray:
    """A uint8 96 px crop softened by a Gaussian of ``sigma`` px and rounded to uint8
    (:func:`ladtalk.media.resample.lipsync_path` at that size)."""
    if sigma <= 0:
        return crop96
    x = to_tensor01(crop96[None])
    return to_uint8(lipsync_path(x, float(sigma), size=x.shape[-1]))[0]


def region_mask(region: CropRegion, config: BlendConfig = BlendConfig()) -> np.ndarray:
    """Boolean (H, W) frame mask of the pixels the lower-face paste can change."""
    size = max(region.width, 4)
    out = paste_back(np.zeros((region.frame_h, region.frame_w, 3), np.uint8),
                     np.full((size, size, 3), 255, np.uint8), region,
                     mask=lower_face_mask(size, config))
    return out[..., 0] > 0


def bbox(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` bounding box of a boolean mask (ends exclusive)."""
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


@dataclass
class FrameCase:
    """One held-out frame prepared for scoring: its crop region, the pasted-region mask and
    the true face at 96 px and at the identity's resolution."""

    frame: np.ndarray
    region: CropRegion
    mask: np.ndarray
    true96: np.ndarray
    trueR: np.ndarray


def prepare_case(frame: np.ndarray, box: Sequence[float], resolution: int,
                 crop_config: CropConfig = CropConfig(),
                 blend: BlendConfig = BlendConfig()) -> FrameCase:
    """A :class:`FrameCase` of ``frame`` with face ``box`` (generation framing)."""
    frame = np.ascontiguousarray(frame)
    region = face_region(box, (frame.shape[1], frame.shape[0]), crop_config)
    return FrameCase(frame, region, region_mask(region, blend),
                     crop_face(frame, region, FACE_SIZE), crop_face(frame, region, resolution))


def wav2lip_proxy(case: FrameCase, sigma: float, resolution: int,
                  blend: BlendConfig = BlendConfig()):
    """``(w96, W frame, w96 bicubic-up to the identity's resolution)`` at softening sigma
    (the W frame pasted as generation pastes Wav2Lip's crop: :meth:`BlendConfig.direct`)."""
    import cv2
    w96 = soften96(case.true96, sigma)
    wframe = blend_face(case.frame.copy(), w96, case.region, case.true96, blend.direct())
    up = cv2.resize(w96, (resolution, resolution), interpolation=cv2.INTER_CUBIC)
    return w96, wframe, up
