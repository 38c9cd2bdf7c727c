"""``ladtalk eval`` in one import: score generated videos against references, one pair or a
CSV of pairs aggregated per method (metrics, alignment and JSON layout: docs/evaluation.md)."""

from ladtalk.evaluation.batch import PairSpec, evaluate_batch, read_pairs_csv, single_table
from ladtalk.evaluation.config import (
    BATCH_FORMAT,
    COLUMNS,
    FORMAT,
    METRICS,
    NEEDS_WEIGHTS,
    OK,
    UNAVAILABLE,
    EvalConfig,
    metric_columns,
    parse_metrics,
)
from ladtalk.evaluation.pair import evaluate_pair
from ladtalk.evaluation.resources import MetricUnavailable, Resources
from ladtalk.evaluation.results import (
    ClipResult,
    LSEMetric,
    PairResult,
    SlidingMetric,
    VideoInfo,
    summarize,
)
from ladtalk.evaluation.table import BatchResult, TableCell, aggregate, output_path

__all__ = ["METRICS", "COLUMNS", "NEEDS_WEIGHTS", "UNAVAILABLE", "OK", "FORMAT", "BATCH_FORMAT",
           "EvalConfig", "Resources", "MetricUnavailable", "evaluate_pair", "evaluate_batch",
           "read_pairs_csv", "PairSpec", "BatchResult", "TableCell", "ClipResult", "PairResult",
           "SlidingMetric", "LSEMetric", "VideoInfo", "aggregate", "summarize", "single_table",
           "parse_metrics", "metric_columns", "output_path"]
