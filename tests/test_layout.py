"""The package's shape: imports go down the layer order, no cycles, short files and functions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    path = ROOT / "scripts" / "layout_report.py"
    spec = importlib.util.spec_from_file_location("layout_report", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, mod.report(run_ruff=False)


def test_imports_go_down_the_layers_without_cycles(report):
    _, rep = report
    assert rep["import_cycles"] == []
    assert rep["layer_violations"] == []
    assert rep["two_way_parts"] == []


def test_files_and_functions_are_short(report):
    mod, rep = report
    assert rep["files_over_limit"] == [], f"files over {mod.MAX_FILE_LINES} lines"
    assert rep["functions_over_limit"] == [], f"functions over {mod.MAX_FUNCTION_LINES} lines"


def test_the_audio_front_end_uses_librosa(report):
    assert report[1]["librosa_front_end"]


def test_few_modules_at_the_top_of_the_package(report):
    mod, rep = report
    assert len(rep["top_level_modules"]) <= mod.MAX_TOP_MODULES


def test_the_checker_sees_an_upward_import(report, tmp_path):
    mod, _ = report
    graph = {"ladtalk.media.decode": {"ladtalk.generation.pipeline"},
             "ladtalk.generation.pipeline": set()}
    assert mod.layer_violations(graph) and mod.two_way_parts(graph) == []
    assert mod.cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]


def test_readme_layout_table_matches_the_tree():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    listed = {cell.strip().strip("`").rstrip("/") for row in table.splitlines()
              if row.startswith("| `") for cell in row.split("|")[1].split(",")}
    for path in listed:
        assert (ROOT / path).exists(), f"README's layout table names {path}, which is missing"
    parts = {f"ladtalk/{p.name}" for p in (ROOT / "ladtalk").iterdir()
             if p.is_dir() and (p / "__init__.py").is_file()}
    assert parts <= listed, f"parts missing from README's layout table: {sorted(parts - listed)}"
