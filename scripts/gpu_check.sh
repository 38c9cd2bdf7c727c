#!/usr/bin/env bash
# The GPU check: run it whenever a GPU machine is lent (one prepared run, at most about 8
# minutes on one H200-class GPU). It writes gpu_check.json, gpu_check.md and the CUDA tests'
# JUnit XML to $OUT (default: ./gpu_check_out) and prints the table; the figures go to
# docs/performance.md. It needs a Python with this project's requirements (torch with CUDA);
# nothing is downloaded (random weights: the speed does not depend on them).
#
#   OUT=/tmp/gpu bash scripts/gpu_check.sh                  # on the GPU machine
#   OUT=/tmp/dry bash scripts/gpu_check.sh --device cpu --quick   # the CPU dry run (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
"$PY" -c "import torch, ladtalk" 2>/dev/null || {
  echo "gpu_check: this Python cannot import torch and ladtalk; install the project first:" >&2
  echo "  pip install torch==<version> && pip install -e . -r requirements-dev.txt" >&2
  exit 2
}
exec "$PY" scripts/gpu_check.py --out "${OUT:-gpu_check_out}" "$@"
