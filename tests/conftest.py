"""Shared fixtures. Golden fixtures live in ../shared/golden (absent in a fresh clone)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before torch is imported: passive OpenMP waiting (see ladtalk/__main__.py); busy-waiting
# threads make CPU tests 5-10x slower on shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

ROOT = Path(__file__).resolve().parents[1]
# huggingface_hub reads HF_HUB_OFFLINE once, at import: set it before any test module imports it,
# so no test ever tries the network (CI has none; a DNS timeout would only slow the suite down).
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/formula.py importable


def _golden_root() -> Path:
    return Path(os.environ.get("LADTALK_GOLDEN", ROOT.parent / "shared" / "golden"))


def _data_root() -> Path:
    return Path(os.environ.get("LADTALK_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    path = _golden_root()
    if not path.is_dir():
        pytest.skip(f"golden fixtures not found at {path} (../shared/golden is absent in a "
                    "fresh clone; set LADTALK_GOLDEN to run the upstream-equivalence tests)")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = _data_root()
    if not path.is_dir():
        pytest.skip(f"real media not found at {path} (../shared/data is absent in a fresh "
                    "clone; set LADTALK_SHARED_DATA to run the optional integration checks)")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never touch the user's identity store or HF cache from tests."""
    home = tmp_path_factory.mktemp("ladtalk_home")
    monkeypatch.setenv("LADTALK_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))


@pytest.fixture(scope="session", autouse=True)
def _no_temp_leftovers():
    """After the whole run, no ``ladtalk-*`` folder the run created is left in the system temp
    folder (the app removes per-call folders, session folders and its temp space on close)."""
    import tempfile
    tmp = Path(tempfile.gettempdir())
    before = {p.name for p in tmp.glob("ladtalk-*")}
    yield
    left = sorted(p.name for p in tmp.glob("ladtalk-*") if p.name not in before)
    assert not left, f"temp folders left behind in {tmp}: {left}"
