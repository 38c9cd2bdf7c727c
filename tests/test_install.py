"""The package is installed the README's way (``pip install -e .``): ``ladtalk`` imports from
any folder and the ``ladtalk`` console script runs."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def installed():
    try:
        importlib.metadata.distribution("ladtalk")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("ladtalk is not installed in this environment (README: pip install -e .)")


def _run(cmd, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_importable_from_anywhere(installed, tmp_path):
    where = _run([sys.executable, "-c", "import ladtalk; print(ladtalk.__file__)"], tmp_path)
    assert Path(where.strip()).resolve() == (ROOT / "ladtalk" / "__init__.py").resolve()
    assert "enroll" in _run([sys.executable, "-m", "ladtalk", "--help"], tmp_path)


def test_console_script(installed, tmp_path):
    exe = shutil.which("ladtalk", path=str(Path(sys.executable).parent))
    assert exe, "the ladtalk console script is not on the environment's bin folder"
    text = _run([exe, "--help"], tmp_path)
    assert "generate" in text and "enroll" in text
