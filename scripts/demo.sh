#!/usr/bin/env bash
# Set up, then tune a simulated Jetson AGX Orin running EfficientNet-B0 (no hardware needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/polythrottle tune --device sim:jetson-agx-orin --workload efficientnet-b0 \
  --slo-ms "${SLO_MS:-25}" --budget 20 --noise 0.02 --seed 0 "$@"
