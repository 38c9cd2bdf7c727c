"""Static figures of the code's shape: sizes, imports between parts, lint, libraries.

    python scripts/layout_report.py [--json OUT] [--no-ruff]

Exits non-zero when a rule is broken: a file over 400 lines or a function over 80 in
``ladtalk/`` or ``app.py``, an import cycle, an import that goes up the layer order
(``ladtalk.LAYERS``, lowest first), more than 8 modules directly in ``ladtalk/``, ruff
findings, or an audio front-end without librosa.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ladtalk import LAYERS  # noqa: E402

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_TOP_MODULES = 8


def source_files() -> List[Path]:
    return sorted((ROOT / "ladtalk").rglob("*.py")) + [ROOT / "app.py"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, modules: Set[str]) -> Set[str]:
    """Every ladtalk module ``path`` imports, at module level or inside functions."""
    out: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "ladtalk":
                out.add(name)
    return out


def part_of(module: str) -> str:
    """The top-level part: ``ladtalk.generation.pipeline`` -> ``generation``; ``app``."""
    if module == "app":
        return "app.py"
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else "ladtalk"


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def long_functions(path: Path) -> List[Tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out.append((f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", n))
    return out


def layer_violations(graph: Dict[str, Set[str]]) -> List[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for mod, deps in sorted(graph.items()):
        src = part_of(mod)
        for dep in sorted(deps):
            dst = part_of(dep)
            if src == dst or src not in rank or dst not in rank:
                continue
            if rank[dst] > rank[src]:
                bad.append(f"{mod} ({src}) imports {dep} ({dst}), a higher layer")
    return bad


def two_way_parts(graph: Dict[str, Set[str]]) -> List[str]:
    edges = {(part_of(m), part_of(d)) for m, deps in graph.items() for d in deps}
    edges = {(a, b) for a, b in edges if a != b}
    return sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b)


def librosa_front_end() -> bool:
    for path in (ROOT / "ladtalk" / "media").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "librosa" for a in node.names):
                return True
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("librosa"):
                return True
    return False


def ruff_findings() -> Tuple[int, str]:
    try:
        proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format",
                               "concise", "."], cwd=ROOT, capture_output=True, text=True)
    except OSError as exc:  # pragma: no cover
        return -1, str(exc)
    lines = [ln for ln in proc.stdout.splitlines() if ln.count(":") >= 3]
    return (0 if proc.returncode == 0 else max(1, len(lines))), proc.stdout.strip()


def report(run_ruff: bool = True) -> dict:
    files = source_files()
    modules = {module_name(p): p for p in files}
    graph = {m: imports_of(p, set(modules)) - {m} for m, p in modules.items()}
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
             for p in files}
    top = sorted(p.name for p in (ROOT / "ladtalk").glob("*.py"))
    out = {
        "files": len(files),
        "largest_file": max(sizes.items(), key=lambda kv: kv[1]),
        "files_over_limit": sorted(([k, v] for k, v in sizes.items() if v > MAX_FILE_LINES),
                                   key=lambda kv: -kv[1]),
        "functions_over_limit": sorted(sum((long_functions(p) for p in files), []),
                                       key=lambda kv: -kv[1]),
        "import_cycles": cycles(graph),
        "two_way_parts": two_way_parts(graph),
        "layer_violations": layer_violations(graph),
        "top_level_modules": top,
        "librosa_front_end": librosa_front_end(),
    }
    if run_ruff:
        out["ruff_findings"], out["ruff_output"] = ruff_findings()
    return out


def problems(rep: dict) -> List[str]:
    bad = []
    for key in ("files_over_limit", "functions_over_limit", "import_cycles", "two_way_parts",
                "layer_violations"):
        if rep[key]:
            bad.append(f"{key}: {len(rep[key])}")
    if len(rep["top_level_modules"]) > MAX_TOP_MODULES:
        bad.append(f"top_level_modules: {len(rep['top_level_modules'])} > {MAX_TOP_MODULES}")
    if rep.get("ruff_findings"):
        bad.append(f"ruff: {rep['ruff_findings']} findings")
    if not rep["librosa_front_end"]:
        bad.append("the audio front-end does not use librosa")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the figures as JSON here")
    ap.add_argument("--no-ruff", action="store_true", help="skip ruff")
    args = ap.parse_args(argv)
    rep = report(run_ruff=not args.no_ruff)
    print(f"python files: {rep['files']} (ladtalk/ and app.py); largest: "
          f"{rep['largest_file'][0]} ({rep['largest_file'][1]} lines)")
    print(f"files over {MAX_FILE_LINES} lines: {len(rep['files_over_limit'])}")
    for name, n in rep["files_over_limit"]:
        print(f"  {n:5d}  {name}")
    print(f"functions over {MAX_FUNCTION_LINES} lines: {len(rep['functions_over_limit'])}")
    for name, n in rep["functions_over_limit"]:
        print(f"  {n:5d}  {name}")
    print(f"import cycles between modules: {len(rep['import_cycles'])}")
    for comp in rep["import_cycles"]:
        print("  " + " <-> ".join(comp))
    print(f"two-way dependencies between parts: {len(rep['two_way_parts'])}")
    for line in rep["two_way_parts"]:
        print("  " + line)
    print(f"imports up the layer order ({' < '.join(LAYERS)}): {len(rep['layer_violations'])}")
    for line in rep["layer_violations"]:
        print("  " + line)
    print(f"modules directly in ladtalk/: {len(rep['top_level_modules'])} "
          f"({', '.join(rep['top_level_modules'])})")
    if "ruff_findings" in rep:
        print(f"ruff check findings: {rep['ruff_findings']}")
        if rep["ruff_findings"]:
            print(rep["ruff_output"])
    print(f"librosa used by the audio front-end: {'yes' if rep['librosa_front_end'] else 'no'}")
    bad = problems(rep)
    print("OK: every rule holds" if not bad else "BROKEN: " + "; ".join(bad))
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
