"""Temporal consistency (flicker) of a generated sequence against its reference.

``temporal_error(G, R) = mean_t mean_px |(G[t+1] - G[t]) - (R[t+1] - R[t])| / data_range``

i.e. how much the generated frame-to-frame change departs from the reference's. Static
texture errors cancel (a constant colour shift scores 0); what remains is motion that the
reference does not have - flicker, boiling texture, jitter - plus motion it has that the
generated video lacks. Lower is better; 0 means the two sequences change identically. The
value is a fraction of the data range (255 for uint8, 1 for float in [0, 1]).

Sequences are ``(T, H, W[, C])`` arrays of equal shape and aligned frame by frame (use
:func:`ladtalk.metrics.sliding.sliding_sequence` to find the alignment first).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ladtalk.errors import InputError


def _sequence(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise InputError(f"{name}: expected a (T, H, W[, C]) frame sequence, got shape {x.shape}")
    return x


def temporal_error(generated, reference, data_range: Optional[float] = None) -> float:
    """Mean absolute difference of consecutive-frame differences (see module docstring)."""
    g = _sequence(generated, "temporal_error (generated)")
    r = _sequence(reference, "temporal_error (reference)")
    if g.shape != r.shape:
        raise InputError(f"temporal_error: sequences differ in shape, {g.shape} vs {r.shape}; "
                         "align them first (sliding_sequence)")
    if len(g) < 2:
        raise InputError("temporal_error needs at least 2 frames")
    if data_range is None:
        if g.dtype == np.uint8 and r.dtype == np.uint8:
            data_range = 255.0
        elif np.issubdtype(g.dtype, np.floating) and np.issubdtype(r.dtype, np.floating):
            data_range = 1.0
        else:
            raise InputError(f"temporal_error: pass data_range for dtypes {g.dtype}/{r.dtype}")
    total = 0.0
    for t in range(len(g) - 1):   # frame by frame keeps memory at a few frames for long videos
        dg = g[t + 1].astype(np.float64) - g[t]
        dr = r[t + 1].astype(np.float64) - r[t]
        total += float(np.mean(np.abs(dg - dr)))
    return total / (len(g) - 1) / float(data_range)
