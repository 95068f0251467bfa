#!/usr/bin/env bash
# Run the installed package on Python 3.10 (JetPack 6's Python): a virtualenv with every dependency except
# the optimizer stack (torch, BoTorch, GPyTorch have no Python 3.10 wheel on this machine's disk, and an
# unpinned torch pulls a multi-GB CUDA build), the wheel installed with --no-deps, then what runs without
# torch: --version, a random-search tune of the twin, devices, daemon --check. vermin and ruff (py310
# target) check the whole package statically; this checks it runs. Skipped where no Python 3.10 exists.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
py310=""
for c in ${PYTHON310:-} /root/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 "$(command -v python3.10 || true)"; do
  if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    py310=$c; break
  fi
done
if [ -z "$py310" ]; then
  echo "check-py310: no Python 3.10 found; skipped (vermin and ruff still check 3.10 compatibility)"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" . 2>&1 | grep -v 'is ignored' || true
"$py310" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q numpy scipy pyyaml pydantic rich prometheus-client sqlalchemy alembic 2>&1 | grep -v 'is ignored' || true
"$work/venv/bin/python" -m pip install -q --no-deps "$work"/dist/polythrottle-*.whl 2>&1 | grep -v 'is ignored' || true
cd "$work"
pt="$work/venv/bin/polythrottle"
"$work/venv/bin/python" --version
"$pt" --version
"$pt" tune --device sim:jetson-tx2 --workload bert-base --slo-ms 150 --optimizer random --budget 5 --seed 0 --json \
  | "$work/venv/bin/python" -c 'import json, sys; r = json.load(sys.stdin); print("py3.10 random tune:", r["measurements"], "measurements")'
"$pt" devices > /dev/null
example=$("$work/venv/bin/python" -c 'from importlib import resources; print(resources.files("polythrottle.daemon") / "data" / "daemon.example.yaml")')
sed 's/^slo_ms: .*/slo_ms: 25\noptimizer: random/' "$example" > daemon.yaml
POLYTHROTTLE_STATE_DIR="$work/state" "$pt" daemon --check --config daemon.yaml
echo "py3.10 check: OK"
