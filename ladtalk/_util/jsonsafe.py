"""One JSON policy for every file and report LaDTalk writes.

Non-finite floats become the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (strict JSON, and
nothing is lost: a PSNR of identical images is ``inf``); :func:`parse_float` turns them back.
Dataclasses, numpy and torch values, paths and tuples become plain JSON values.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import PurePath
from typing import Any, Optional

_NONFINITE = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "nan": math.nan,
              "infinity": math.inf, "-infinity": -math.inf}


def _float(v: float) -> Any:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values under the policy above (keys become strings)."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return _float(obj)
    to_json = getattr(obj, "to_json", None)
    if callable(to_json) and not isinstance(obj, type):
        return to_jsonable(to_json())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(obj, "ndim", 0) == 0:
        return to_jsonable(item())
    tolist = getattr(obj, "tolist", None)  # numpy arrays, torch tensors
    if callable(tolist):
        return to_jsonable(tolist())
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def parse_float(v: Any, default: Optional[float] = None) -> Optional[float]:
    """A float read back from JSON: numbers, the non-finite strings, ``None`` -> ``default``."""
    if v is None:
        return default
    if isinstance(v, str):
        key = v.strip().lower()
        if key in _NONFINITE:
            return _NONFINITE[key]
        return float(key)
    return float(v)
