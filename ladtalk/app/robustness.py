"""The Robustness tab's inputs: degradation specs, the face picture and its crop, and the
evaluation of one crop (numbers and pictures from the same restorer and noise seed)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ladtalk.analysis.degrade import format_spec, parse_degradation
from ladtalk.analysis.robustness import evaluate_robustness
from ladtalk.app.limits import AppLimits, check_face_input
from ladtalk.errors import InputError
from ladtalk.face.crop import CropConfig, CropRegion, crop_face, face_region
from ladtalk.face.track import select_largest
from ladtalk.generation.options import GenerateOptions
from ladtalk.identities.store import resolve_identity
from ladtalk.media.decode import iter_frames, read_image
from ladtalk.models.sovqae import SOVQAEConfig

SWEEPS = {  # degradation -> strengths for the PSNR-vs-strength plot
    "blur": [0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
    "noise": [0.02, 0.05, 0.1, 0.15, 0.2, 0.3],
    "down": [112, 96, 80, 64, 48, 32],
}


def identity_resolution(name: str) -> int:
    """The crop size (px) an identity works at (from its ``config.json``)."""
    path = resolve_identity(name)
    return int(SOVQAEConfig.from_dict(json.loads((path / "config.json").read_text())).resolution)


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
    if not (0.0 <= t <= info.duration):
        raise InputError(f"frame time {t:g} s is outside the video '{name}' "
                         f"(0 to {info.duration:.2f} s)")
    want = min(int(round(t * (info.fps or 25.0))), max(0, info.n_frames - 1))
    last = None
    for chunk in iter_frames(video, chunk_size=8, max_frames=want + 1):
        last = chunk[-1]  # frame `want`, or the last one when the video ends earlier
    if last is None:
        raise InputError(f"no frame could be decoded from '{name}'")
    return np.ascontiguousarray(last), f"{name} @ {t:g} s"


def face_crop(pipeline, frame: np.ndarray, name: str, resolution: int, is_crop: bool,
              detector: str) -> Tuple[np.ndarray, Optional[List[float]]]:
    """``(crop, box)``: the largest face with the generation framing, or the centre square
    of a picture that already is a face crop (box None)."""
    h, w = frame.shape[:2]
    if is_crop:
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        return crop_face(frame, CropRegion(x0, y0, x0 + side, y0 + side, w, h), resolution), None
    det = pipeline.detector_for(GenerateOptions(detector=detector), (w, h))
    boxes, _ = select_largest(det.detect(frame[None]))
    if np.isnan(boxes[0]).any():
        raise InputError(f"no face found in '{name}' (detector: {getattr(det, 'name', detector)}); "
                         "use a clear, frontal face picture, try another detector, or tick "
                         "'the picture is already a face crop'")
    region = face_region(boxes[0], (w, h), CropConfig())
    return crop_face(frame, region, resolution), [float(v) for v in boxes[0]]


def crop_tensor(crop: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return (x[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)


def evaluate_crop(restorer, crops01: torch.Tensor, specs: Sequence[str],
                  sweep: Sequence[str], certificate: bool, progress,
                  kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """``(results JSON, {caption: picture})`` for one crop: clean, reconstructed, and each
    spec's degraded and restored picture."""
    all_specs = list(dict.fromkeys(list(specs) + list(sweep)))
    res = evaluate_robustness(restorer.model, crops01, all_specs, device=restorer.device,
                              certificate=certificate, progress=progress, **kwargs).to_json()
    images = {"clean": _to_u8(crops01), "reconstructed": _to_u8(restorer.restore01(crops01))}
    for spec in specs:
        xd = parse_degradation(spec)(crops01, seed=[0])
        images[f"{spec} degraded"] = _to_u8(xd)
        images[f"{spec} restored"] = _to_u8(restorer.restore01(xd))
    return res, images
