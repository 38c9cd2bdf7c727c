"""Metric names, table columns and the options of ``ladtalk eval`` (:class:`EvalConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ladtalk._util.choices import DEFAULT_DETECTOR
from ladtalk.errors import InputError
from ladtalk.metrics.image import MouthRegion

METRICS: Tuple[str, ...] = ("psnr", "ssim", "mouth_psnr", "temporal", "fid", "lse")

#: Table columns: key -> (header, higher_is_better, decimals). ``lse`` gives two columns.
COLUMNS: Dict[str, Tuple[str, bool, int]] = {
    "psnr": ("PSNR", True, 2),
    "ssim": ("SSIM", True, 4),
    "mouth_psnr": ("Mouth PSNR", True, 2),
    "temporal": ("Temporal err", False, 4),
    "fid": ("FID", False, 2),
    "lse_c": ("LSE-C", True, 3),
    "lse_d": ("LSE-D", False, 3),
}

OK = "ok"
NEEDS_WEIGHTS = "needs weights"
UNAVAILABLE = "unavailable"

LSE_FPS = 25.0
FORMAT = "ladtalk-eval/1"
BATCH_FORMAT = "ladtalk-eval-batch/1"


def column_source(column: str) -> str:
    """The metric a table column comes from (``lse_c``/``lse_d`` -> ``lse``)."""
    return "lse" if column in ("lse_c", "lse_d") else column


def metric_columns(metrics: Sequence[str]) -> List[str]:
    """Table columns of the given metrics, in :data:`COLUMNS` order."""
    return [key for key in COLUMNS if column_source(key) in metrics]


def parse_metrics(text: Union[str, Sequence[str], None]) -> Tuple[str, ...]:
    """``"psnr,ssim"`` (or a list) -> validated tuple in canonical order; ``None``/"all" -> all."""
    if text is None:
        return METRICS
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip().lower().replace("-", "_") for s in items if s and s.strip()]
    if not names or names == ["all"]:
        return METRICS
    aliases = {"lse_c": "lse", "lse_d": "lse", "mouth": "mouth_psnr", "flicker": "temporal"}
    names = [aliases.get(n, n) for n in names]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(METRICS)} (comma-separated) or 'all'")
    return tuple(m for m in METRICS if m in names)


@dataclass
class EvalConfig:
    """Options of ``evaluate_pair`` / ``evaluate_batch`` (CLI flags of ``ladtalk eval``).

    ``explicit``: the user chose the metrics, so "none of them could be computed" is an error
    rather than a report. ``detector``: ``auto``/``s3fd``/``dlib``.
    """

    metrics: Tuple[str, ...] = METRICS
    explicit: bool = False
    sliding: bool = True
    min_overlap: Optional[int] = None
    max_offset: Optional[int] = None
    detector: str = DEFAULT_DETECTOR
    detect_every: int = 1
    s3fd: Optional[str] = None
    syncnet: Optional[str] = None
    device: Optional[str] = None
    mouth_region: MouthRegion = field(default_factory=MouthRegion)
    lse_vshift: int = 15
    progress: bool = False

    def __post_init__(self) -> None:
        self.metrics = parse_metrics(self.metrics)
        if self.min_overlap is not None and self.min_overlap < 1:
            raise InputError(f"--min-overlap must be >= 1, got {self.min_overlap}")
        if self.max_offset is not None and self.max_offset < 0:
            raise InputError(f"--max-offset must be >= 0, got {self.max_offset}")
        if self.detect_every < 1:
            raise InputError(f"--detect-every must be >= 1, got {self.detect_every}")
