#!/usr/bin/env bash
# The declared dependency floors, tested: a virtualenv with the lowest version pyproject.toml allows of each
# core dependency (torch: the CPU build on this machine), then the tests that exercise them.
# Not part of CI (it downloads old releases); run it when a floor changes.  Usage: scripts/check-floors.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=${FLOORS_DIR:-$(mktemp -d)}
python3.11 -m venv "$work/venv"
"$work/venv/bin/pip" install -q torch==2.13.0 botorch==0.14.0 gpytorch==1.14 numpy==1.23.5 scipy==1.10.1 \
  pyyaml==6.0 pydantic==2.1.1 rich==13.0.0 prometheus-client==0.20.0 nvidia-ml-py==12.535.77 pytest 2>&1 | grep -v 'is ignored' || true
"$work/venv/bin/pip" list 2>/dev/null | grep -i -E '^(botorch|gpytorch|numpy|scipy|pyyaml|pydantic|rich|prometheus.client|nvidia-ml-py|torch) '
PYTHONPATH="$PWD" "$work/venv/bin/python" -m pytest -p no:cacheprovider tests/test_optimizer.py tests/test_warm_start.py \
  tests/test_sim.py tests/test_replay.py tests/test_history.py tests/test_space.py tests/boards tests/twin \
  tests/test_cli_tune.py tests/test_api.py tests/daemon/test_config.py tests/daemon/test_controller.py tests/daemon/test_status.py \
  tests/daemon/test_metrics.py tests/daemon/test_server.py tests/test_nvml_device.py
