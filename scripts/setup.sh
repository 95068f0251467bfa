#!/usr/bin/env bash
# Create .venv (Python >= 3.10; 3.11 preferred: its CPU torch wheel is on this project's machines) and install
# PolyThrottle with its dev extras. Idempotent.
# Torch: the CPU build is pinned first (torch==2.13.0) so that an unpinned resolve does not pull a
# multi-GB CUDA build; on a GPU machine install your CUDA torch before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python >= 3.10 not found" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  .venv/bin/python -m pip install -q torch==2.13.0
fi
if ! .venv/bin/python -c 'import polythrottle, botorch, pytest' 2>/dev/null || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch .venv/.installed
fi
