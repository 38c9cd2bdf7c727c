"""Callable types shared by several parts (paths: :data:`ladtalk._util.paths.PathLike`)."""

from __future__ import annotations

from typing import Any, Callable, Dict

#: ``on_progress(info)``: one event dict with at least ``"phase"`` (enrollment, evaluation)
ProgressFn = Callable[[Dict[str, Any]], None]
#: ``progress(phase, done, total)``: how far one counted phase is (crops, frames)
PhaseProgress = Callable[[str, int, int], None]

__all__ = ["ProgressFn", "PhaseProgress"]
