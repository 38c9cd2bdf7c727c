"""Wav2Lip's input and output geometry and its pixel conventions, in numpy (no torch).

The released weights take BGR 96x96 crops in [0, 1], six channels: the target face with its
lower half zeroed, then the reference face; and a 80x16 mel window. The package's images are
RGB uint8, channels last. :func:`generator_input` and :func:`to_crops` convert between the
two for the uint8 API of :class:`ladtalk.generation.lipsync.LipSyncer`, whatever runs the
model (docs/generation.md, "Lip-sync conventions").
"""

from __future__ import annotations

from typing import Optional

import numpy as np

FACE_SIZE = 96
MEL_BINS = 80
MEL_STEPS = 16
MASK_ROW = FACE_SIZE // 2  # rows >= this are zeroed in the target channels
ROUNDING_MODES = ("nearest", "floor")
#: rows of a crop that a bicubic resize reads above the row it maps to (four taps)
RESIZE_REACH = 2


def first_row_for(fraction: float) -> int:
    """The first row of a 96 px crop the model must draw for a crop resized to any size to
    be right from the ``fraction`` of its height down (:class:`~ladtalk.models.wav2lip_rows.
    Wav2LipRows`); 0 for the whole crop."""
    if fraction <= 0:
        return 0
    return max(0, int(np.floor(min(float(fraction), 1.0) * FACE_SIZE)) - RESIZE_REACH)


def generator_input(faces: np.ndarray, references: Optional[np.ndarray] = None) -> np.ndarray:
    """(N,96,96,3) uint8 RGB crops -> the generator's (N,6,96,96) float32 input: channels 0-2
    ``faces`` in BGR with rows 48-95 zeroed, channels 3-5 ``references`` (default ``faces``)
    in BGR, unmasked; values ``x / 255`` in float32."""
    refs = faces if references is None else references
    n = faces.shape[0]
    x = np.empty((n, 6, FACE_SIZE, FACE_SIZE), np.float32)
    # channels last RGB -> channels first BGR: channel c of the input is colour 2 - c
    x[:, 0:3] = faces[..., ::-1].transpose(0, 3, 1, 2)
    x[:, 3:6] = refs[..., ::-1].transpose(0, 3, 1, 2)
    x /= np.float32(255.0)
    x[:, 0:3, MASK_ROW:] = 0.0
    return x


def to_crops(y: np.ndarray, rounding: str = "nearest") -> np.ndarray:
    """The generator's (N,3,96,96) BGR output in [0, 1] -> (N,96,96,3) uint8 RGB crops
    (``rounding``: "nearest", half to even, or "floor", as upstream's ``astype``)."""
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    v = np.asarray(y, np.float32) * np.float32(255.0)
    v = np.rint(v, out=v) if rounding == "nearest" else np.floor(v, out=v)
    np.clip(v, 0.0, 255.0, out=v)
    return np.ascontiguousarray(v[:, ::-1].transpose(0, 2, 3, 1)).astype(np.uint8)


__all__ = ["FACE_SIZE", "MEL_BINS", "MEL_STEPS", "MASK_ROW", "ROUNDING_MODES", "RESIZE_REACH",
           "first_row_for", "generator_input", "to_crops"]
