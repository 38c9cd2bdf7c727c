"""A batch of pairs from a CSV (``ladtalk eval --pairs``), aggregated per method."""

from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

from ladtalk._util.paths import PathLike
from ladtalk.errors import InputError
from ladtalk.evaluation.config import OK, EvalConfig, metric_columns
from ladtalk.evaluation.pair import evaluate_pair, raise_none_computed
from ladtalk.evaluation.resources import Resources, progress_bar
from ladtalk.evaluation.results import ClipResult, PairResult
from ladtalk.evaluation.table import BatchResult, aggregate

REQUIRED = ("method", "generated", "reference")


@dataclass(frozen=True)
class PairSpec:
    """One row of the pairs CSV."""

    method: str
    generated: Path
    reference: Path
    audio: Optional[Path] = None


def read_pairs_csv(path: PathLike) -> List[PairSpec]:
    """Read ``method, generated, reference[, audio]`` rows; relative paths are CSV-relative."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pairs CSV not found: {path}")

    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else path.parent / p

    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in fields]
        if missing:
            raise InputError(f"{path}: the header must name the columns method, generated, "
                             f"reference (and optionally audio); missing {', '.join(missing)}")
        rows = []
        for lineno, raw in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
            if not any(row.values()):
                continue
            for col in REQUIRED:
                if not row.get(col):
                    raise InputError(f"{path} line {lineno}: empty '{col}'")
            rows.append(PairSpec(method=row["method"], generated=resolve(row["generated"]),
                                 reference=resolve(row["reference"]),
                                 audio=resolve(row["audio"]) if row.get("audio") else None))
    if not rows:
        raise InputError(f"{path} lists no pairs")
    return rows


def table_of(clips: List[ClipResult], columns: List[str]) -> BatchResult:
    """The :class:`BatchResult` of scored clips."""
    methods, table, counts = aggregate([(c.method, c.result.summary) for c in clips], columns)
    return BatchResult(columns=columns, methods=methods, table=table, clips=clips,
                       n_clips=counts)


def evaluate_batch(pairs: Union[PathLike, Sequence[PairSpec]],
                   config: Optional[EvalConfig] = None) -> BatchResult:
    """Evaluate every pair of a CSV (or a list of :class:`PairSpec`) and aggregate per method.

    Pairs are processed grouped by reference so each reference is decoded and tracked once.
    """
    cfg = config or EvalConfig()
    specs = read_pairs_csv(pairs) if isinstance(pairs, (str, os.PathLike)) else list(pairs)
    if not specs:
        raise InputError("no pairs to evaluate")
    order = sorted(range(len(specs)), key=lambda i: (str(specs[i].reference), i))
    res = Resources(cfg)
    results: List[Optional[PairResult]] = [None] * len(specs)
    bar = progress_bar(len(specs), "evaluating pairs", cfg.progress, unit="pair", leave=True)
    # a batch never raises "none computed" per pair; the table shows the statuses instead
    pair_cfg = dataclasses.replace(cfg, explicit=False)
    try:
        for i in order:
            s = specs[i]
            results[i] = evaluate_pair(s.generated, s.reference, s.audio, pair_cfg, res)
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
    clips = [ClipResult(s.method, r) for s, r in zip(specs, results) if r is not None]
    if cfg.explicit and not any(m.status == OK for c in clips
                                for m in c.result.metrics.values()):
        raise_none_computed({k: (v.status, v.reason or "")
                             for k, v in clips[0].result.metrics.items()})
    return table_of(clips, metric_columns(cfg.metrics))


def single_table(result: PairResult, method: str = "generated") -> BatchResult:
    """A one-row :class:`BatchResult` of one ``evaluate_pair`` result (for printing)."""
    return table_of([ClipResult(method, result)], metric_columns(list(result.metrics)))
