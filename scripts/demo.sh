#!/usr/bin/env bash
# Set up, then tune the digital twin of a Jetson AGX Orin running EfficientNet-B0 (no hardware needed).
# SLO 15 ms: about the 30th percentile of the twin's latencies (4.9 ms at max clocks, batch 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/polythrottle tune --device sim:jetson-agx-orin --workload efficientnet-b0 \
  --slo-ms "${SLO_MS:-15}" --budget 20 --noise 0.02 --seed 0 "$@"
