#!/usr/bin/env bash
# Issue 13's GPU check, one prepared script for one CUDA GPU (H100/H200: under 8 minutes). From a checkout
# with lrfr installed (pip install -e .): bash benchmarks/gpu_check.sh [--skip-compile] [--steps N]
# What it measures and prints: benchmarks/gpu_check.py. Without a GPU it fails in one line.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: FAILED: no CUDA GPU visible to torch (or no torch for $PY): run it on a GPU machine with lrfr installed" >&2
    exit 1
fi
LIMIT_S=${GPU_CHECK_LIMIT_S:-470}
timeout --signal=INT --kill-after=20 "$LIMIT_S" "$PY" benchmarks/gpu_check.py "$@"
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "gpu_check: FAILED: stopped after ${LIMIT_S} s (the parts printed above finished)" >&2
fi
exit "$rc"
