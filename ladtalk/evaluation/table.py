"""The per-method table of a batch (method rows x metric columns, means over clips), and its
text, CSV and JSON forms."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ladtalk._util.atomic import write_json, write_text
from ladtalk._util.jsonsafe import to_jsonable
from ladtalk._util.paths import PathLike
from ladtalk.errors import InputError
from ladtalk.evaluation.config import BATCH_FORMAT, COLUMNS, OK, UNAVAILABLE
from ladtalk.evaluation.results import ClipResult, unavailable_reasons


@dataclass
class TableCell:
    """Mean of one column over a method's clips: ``n`` clips had a value, of ``of``."""

    mean: Optional[float]
    n: int
    of: int
    status: str

    def to_json(self) -> Dict[str, Any]:
        return to_jsonable({"mean": self.mean, "n": self.n, "of": self.of,
                            "status": self.status})


def _cell(values: Sequence[Any], of: int) -> TableCell:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if vals:
        finite = [v for v in vals if math.isfinite(v)]
        mean = float(np.mean(finite)) if finite else float(np.mean(vals))
        return TableCell(mean, len(vals), of, OK)
    statuses = [str(v) for v in values]
    status = max(set(statuses), key=statuses.count) if statuses else UNAVAILABLE
    return TableCell(None, 0, of, status)


def aggregate(rows: Sequence[Tuple[str, Mapping[str, Any]]], columns: Sequence[str]
              ) -> Tuple[List[str], Dict[str, Dict[str, TableCell]], Dict[str, int]]:
    """Per-method means of each column of ``(method, summary)`` rows; finite values count
    (non-numbers are statuses). Returns (methods in first-seen order, table, clip counts)."""
    methods: List[str] = []
    for method, _ in rows:
        if method not in methods:
            methods.append(method)
    table: Dict[str, Dict[str, TableCell]] = {}
    counts: Dict[str, int] = {}
    for m in methods:
        mine = [summary for method, summary in rows if method == m]
        counts[m] = len(mine)
        table[m] = {col: _cell([s.get(col) for s in mine], len(mine)) for col in columns}
    return methods, table, counts


def _fmt(v: Any, decimals: int) -> str:
    if isinstance(v, (int, float)) and math.isfinite(v):
        return f"{v:.{decimals}f}"
    return str(to_jsonable(v))


def _csv_cell(v: Any) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(to_jsonable(v))
    return str(v)


@dataclass
class BatchResult:
    """Per-clip results and the per-method table (JSON layout: docs/evaluation.md)."""

    columns: List[str]
    methods: List[str]
    table: Dict[str, Dict[str, TableCell]]
    clips: List[ClipResult]
    n_clips: Dict[str, int]

    def to_json(self) -> Dict[str, Any]:
        return to_jsonable({"format": BATCH_FORMAT, "columns": self.columns,
                            "methods": self.methods, "n_clips": self.n_clips,
                            "table": self.table, "clips": self.clips})

    def cell(self, method: str, col: str) -> Union[float, str]:
        c = self.table[method][col]
        return c.mean if c.status == OK else c.status

    def reasons(self) -> List[str]:
        """One ``"metric: status - reason"`` line per metric that some clip could not compute."""
        return unavailable_reasons([c.result for c in self.clips])

    def _text_cell(self, method: str, col: str) -> str:
        cell = self.table[method][col]
        if cell.status != OK:
            return cell.status
        return _fmt(cell.mean, COLUMNS[col][2]) + ("*" if cell.n < cell.of else "")

    def format_table(self, title: Optional[str] = None) -> str:
        """The table as aligned text: method rows x metric columns (means over clips).

        ``*`` marks a mean over fewer clips than the method has; a cell without any value
        shows the status (e.g. ``needs weights``).
        """
        heads = ["Method"] + [f"{COLUMNS[c][0]} {'↑' if COLUMNS[c][1] else '↓'}"
                              for c in self.columns] + ["clips"]
        rows = [[m] + [self._text_cell(m, c) for c in self.columns] + [str(self.n_clips[m])]
                for m in self.methods]
        widths = [max(len(r[i]) for r in [heads] + rows) for i in range(len(heads))]

        def fmt_row(r: List[str]) -> str:
            cells = (v.ljust(w) if i == 0 else v.rjust(w)
                     for i, (v, w) in enumerate(zip(r, widths)))
            return "| " + " | ".join(cells) + " |"

        lines = [title] if title else []
        lines.append(fmt_row(heads))
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines.extend(fmt_row(r) for r in rows)
        return "\n".join(lines)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "clips"] + self.columns)
        for m in self.methods:
            w.writerow([m, self.n_clips[m]] + [_csv_cell(self.cell(m, c)) for c in self.columns])
        return buf.getvalue()

    def write_csv(self, path: PathLike) -> Path:
        return write_text(output_path(path), self.to_csv())

    def write_json(self, path: PathLike) -> Path:
        return write_json(output_path(path), self)


def output_path(path: PathLike) -> Path:
    """``path`` after checking that its folder exists (outputs never create folders)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"output folder does not exist: {path.parent}")
    return path
