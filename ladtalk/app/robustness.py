"""The Robustness tab's inputs: degradation specs, the face picture and its crop, and the
evaluation of one crop (numbers and pictures from the same restorer and noise seed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ladtalk.analysis.degrade import format_spec
from ladtalk.analysis.robustness import evaluate_robustness, restoration_pictures
from ladtalk.app.limits import AppLimits, check_face_input
from ladtalk.errors import InputError
from ladtalk.face.video_crops import centre_crop, largest_face_crop
from ladtalk.generation.options import GenerateOptions
from ladtalk.identities.store import identity_config
from ladtalk.media.decode import frame_at, read_image

SWEEPS = {  # degradation -> strengths for the PSNR-vs-strength plot
    "blur": [0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
    "noise": [0.02, 0.05, 0.1, 0.15, 0.2, 0.3],
    "down": [112, 96, 80, 64, 48, 32],
}
SWEEP_AXES = {  # degradation -> the plot's x axis title
    "blur": "blur sigma (px)",
    "noise": "noise sigma ([0, 1] pixel scale)",
    "down": "size reduction (crop px / down-up px)",
}


def identity_resolution(name: str) -> int:
    """The crop size (px) an identity works at."""
    return int(identity_config(name).resolution)


def degradation_specs(blur, noise, down, resolution: int) -> List[str]:
    """The specs of the non-zero strengths (``down`` must stay below the crop size)."""
    specs = []
    for name, val in (("blur", blur), ("noise", noise), ("down", down)):
        try:
            v = float(val or 0)
        except (TypeError, ValueError):
            raise InputError(f"{name} strength must be a number, got {val!r}") from None
        if not math.isfinite(v) or v < 0:
            raise InputError(f"{name} strength must be >= 0, got {val!r}")
        if v == 0:
            continue
        if name == "down":
            if int(round(v)) >= resolution:
                raise InputError(f"down-up size {int(round(v))} px must be smaller than "
                                 f"the identity's crop size ({resolution} px); use 0 to "
                                 "turn it off")
            specs.append(format_spec("down", int(round(v))))
        else:
            specs.append(format_spec(name, v))
    if not specs:
        raise InputError("all degradations are off: set blur, noise or down-up above 0")
    return specs


def plot_sweep(sweep, resolution: int) -> Tuple[List[float], List[str]]:
    """Strengths and specs of the PSNR-vs-strength plot."""
    if sweep not in SWEEPS:
        raise InputError(f"unknown sweep {sweep!r}; use one of {', '.join(SWEEPS)}")
    vals = [v for v in SWEEPS[sweep] if sweep != "down" or v < resolution]
    return vals, [format_spec(sweep, v) for v in vals]


def frame_from_inputs(limits: AppLimits, image, video, frame_time) -> Tuple[np.ndarray, str]:
    """The face picture: the image, else the frame of the video at ``frame_time`` seconds."""
    if image:
        p = Path(image)
        check_face_input(p, limits)
        return read_image(p), p.name
    if not video:
        raise InputError("no face picture was given: upload a face image (or a video and a "
                         "frame time), or pick an example")
    info = check_face_input(video, limits)
    name = Path(video).name
    if info.is_image:
        return read_image(video), name
    t = float(frame_time or 0.0)
    return frame_at(video, t, info), f"{name} @ {t:g} s"


def face_crop(pipeline, frame: np.ndarray, name: str, resolution: int, is_crop: bool,
              detector: str) -> Tuple[np.ndarray, Optional[List[float]]]:
    """``(crop, box)``: the largest face with the generation framing, or the centre square
    of a picture that already is a face crop (box None)."""
    if is_crop:
        return centre_crop(frame, resolution), None
    h, w = frame.shape[:2]
    det = pipeline.detector_for(GenerateOptions(detector=detector), (w, h))
    return largest_face_crop(frame, det, resolution, name)


def evaluate_crop(restorer, crops01: torch.Tensor, specs: Sequence[str],
                  sweep: Sequence[str], certificate: bool, progress,
                  kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """``(results JSON, {caption: picture})`` for one crop: clean, reconstructed, and each
    spec's degraded and restored picture."""
    all_specs = list(dict.fromkeys(list(specs) + list(sweep)))
    res = evaluate_robustness(restorer.model, crops01, all_specs, device=restorer.device,
                              certificate=certificate, progress=progress, **kwargs).to_json()
    return res, restoration_pictures(restorer, crops01, specs)
