"""Typed results of ``ladtalk eval``: one metric, one video, one pair, one clip of a batch.

Each has one ``to_json()`` giving the on-disk layout of docs/evaluation.md (non-finite numbers
follow :func:`ladtalk._util.jsonsafe.to_jsonable`: ``"inf"`` / ``"-inf"`` / ``"nan"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ladtalk._util.jsonsafe import to_jsonable
from ladtalk.evaluation.config import FORMAT, OK, column_source, metric_columns
from ladtalk.metrics.sliding import SlidingResult


@dataclass
class SlidingMetric:
    """A frame metric at its best sliding offset, or the status and reason why it has none.

    ``extra``: metric-specific keys written after the common ones (mouth PSNR: ``face_frames``,
    ``region``).
    """

    status: str
    value: Optional[float] = None
    offset: Optional[int] = None
    overlap: Optional[int] = None
    higher_is_better: Optional[bool] = None
    reason: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sliding(cls, res: SlidingResult, **extra: Any) -> "SlidingMetric":
        return cls(OK, res.score, res.offset, res.overlap, res.higher_is_better, extra=extra)

    def column(self, name: str) -> Any:
        """The table cell of column ``name``: the value, or the status text."""
        return self.value if self.status == OK else self.status

    def to_json(self) -> Dict[str, Any]:
        if self.status != OK:
            return {"status": self.status, "value": None, "offset": None, "overlap": None,
                    "reason": self.reason}
        return to_jsonable({"status": OK, "value": self.value, "offset": self.offset,
                            "overlap": self.overlap, "higher_is_better": self.higher_is_better,
                            **self.extra})


@dataclass
class LSEMetric:
    """LSE-C / LSE-D of the generated video with its audio (``offset``: SyncNet's AV offset)."""

    status: str
    lse_c: Optional[float] = None
    lse_d: Optional[float] = None
    offset: Optional[int] = None
    n_windows: Optional[int] = None
    frames: Optional[Tuple[int, int]] = None
    audio_source: Optional[str] = None
    reason: Optional[str] = None

    def column(self, name: str) -> Any:
        if self.status != OK:
            return self.status
        return self.lse_c if name == "lse_c" else self.lse_d

    def to_json(self) -> Dict[str, Any]:
        if self.status != OK:
            return {"status": self.status, "lse_c": None, "lse_d": None, "offset": None,
                    "reason": self.reason}
        return to_jsonable({"status": OK, "lse_c": self.lse_c, "lse_d": self.lse_d,
                            "offset": self.offset, "n_windows": self.n_windows,
                            "frames": list(self.frames or ()),
                            "audio_source": self.audio_source})


MetricResult = Union[SlidingMetric, LSEMetric]


def unavailable(metric: str, status: str, reason: str) -> MetricResult:
    """The entry of a metric that could not be computed."""
    if metric == "lse":
        return LSEMetric(status, reason=reason)
    return SlidingMetric(status, reason=reason)


@dataclass
class VideoInfo:
    """What was decoded: path, frame count, rate and size (w, h)."""

    path: Path
    frames: int
    fps: float
    size: Tuple[int, int]

    def to_json(self) -> Dict[str, Any]:
        return {"path": str(self.path), "frames": int(self.frames),
                "fps": round(float(self.fps), 6), "size": [int(v) for v in self.size]}


def summarize(metrics: Dict[str, MetricResult]) -> Dict[str, Any]:
    """Flat ``{column: value | status}`` of the metric entries, one per table column."""
    return {col: metrics[column_source(col)].column(col) for col in metric_columns(list(metrics))}


@dataclass
class PairResult:
    """The scores of one generated video against its reference (``evaluate_pair``)."""

    generated: VideoInfo
    reference: VideoInfo
    audio_path: Optional[Path]
    audio_source: Optional[str]
    sliding: bool
    min_overlap: Optional[int]
    max_offset: Optional[int]
    detector: Optional[str]
    metrics: Dict[str, MetricResult]
    notes: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def summary(self) -> Dict[str, Any]:
        return summarize(self.metrics)

    def to_json(self) -> Dict[str, Any]:
        return to_jsonable({
            "format": FORMAT,
            "generated": self.generated,
            "reference": self.reference,
            "audio": {"path": str(self.audio_path) if self.audio_path else None,
                      "source": self.audio_source},
            "alignment": {"sliding": self.sliding, "min_overlap": self.min_overlap,
                          "max_offset": self.max_offset},
            "detector": self.detector,
            "metrics": self.metrics,
            "summary": self.summary,
            "notes": self.notes,
            "seconds": self.seconds,
        })


@dataclass
class ClipResult:
    """One row of a batch: the method's name and its pair result."""

    method: str
    result: PairResult

    def to_json(self) -> Dict[str, Any]:
        return {"method": self.method, **self.result.to_json()}


def unavailable_reasons(results: List[PairResult]) -> List[str]:
    """``"metric: status - reason"`` for each metric without a value (first result saying why)."""
    seen: Dict[str, str] = {}
    for res in results:
        for name, entry in res.metrics.items():
            if entry.status != OK and name not in seen:
                seen[name] = f"{name}: {entry.status} - {entry.reason or ''}"
    return list(seen.values())
