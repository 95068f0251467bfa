#!/usr/bin/env bash
# Issue 15, live check on one NVIDIA GPU (software knobs only: --no-clock-control, no hardware setting is
# written): measure the exhaustive table of torchvision:resnet50 over batch_size x precision x cuda_graphs
# (the judge), then run the tune (cbo, budget 20, cold: no history) against the live GPU. Both in one call,
# about 6-8 minutes on an H100/H200 (64 configs x ~4.5 s, then <= 20 tune measurements).
#
# Usage:  bash experiments/live_tune_check.sh OUTDIR [SLO_MS]        (default SLO 4 ms)
#         WINDOW_S=1 REPEATS=2 PYTHON=python3 CODE=abc1234 bash experiments/live_tune_check.sh OUTDIR 4
#         WORKLOAD=torchvision:vit_b_16 bash experiments/live_tune_check.sh OUTDIR p30
# SLO "pNN": the NN-th percentile of the table's latencies, rounded to two significant digits (for a model
# whose latencies are not known before its table is measured; the tune still sees only its own measurements).
# Then, on any machine:
#         python experiments/live_tune_report.py OUTDIR --name h200_resnet50 --out-dir experiments/results
# Writes into OUTDIR: table.csv (knobs, energy_j, latency_ms, ...), profile.json (every measurement with its
# spread), tune.json (`polythrottle tune --json`), gpu.txt (nvidia-smi), meta.txt (settings, code version).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${1:?usage: live_tune_check.sh OUTDIR [SLO_MS]}
SLO=${2:-4}
PY=${PYTHON:-python3}
WIN=${WINDOW_S:-1}
REP=${REPEATS:-2}
SW=batch_size,precision,cuda_graphs
WL=${WORKLOAD:-torchvision:resnet50}
mkdir -p "$OUT"
{
  echo "slo_ms=$SLO window_s=$WIN repeats=$REP knobs=$SW workload=$WL"
  # CODE=<commit> names the code when the checkout's git metadata is not its own (a copied tree)
  echo "code=${CODE:-$(git describe --always --dirty 2>/dev/null || echo unknown)}"
  date -u +%FT%TZ
} > "$OUT/meta.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,power.limit,persistence_mode --format=csv \
  > "$OUT/gpu.txt" 2>&1 || true

# 1. the exhaustive table: every config once, in shuffled order, the same harness settings as the tune
t0=$(date +%s)
timeout 390 $PY experiments/live_gpu.py profile --workload "$WL" --knobs "$SW" --window-s "$WIN" --repeats "$REP" \
  --no-cross-check --table "$OUT/table.csv" --details "$OUT/profile.json" \
  || echo "profile ended with status $? (the rows written so far are kept)" >&2
echo "profile_s=$(( $(date +%s) - t0 ))" >> "$OUT/meta.txt"
if [[ $SLO == p* ]]; then
  SLO=$($PY -c "
import csv, sys
import numpy as np
lat = [float(r['latency_ms']) for r in csv.DictReader(open(sys.argv[1]))]
print(float(f'{np.percentile(lat, float(sys.argv[2])):.2g}'))" "$OUT/table.csv" "${SLO#p}")
  echo "slo_ms_resolved=$SLO" >> "$OUT/meta.txt"
fi

# 2. the tune, exactly as a user runs it; it sees only its own live measurements (exit 3 = nothing feasible)
t0=$(date +%s)
status=0
timeout 180 $PY -m polythrottle tune --device nvml:0 --no-clock-control --workload "$WL" --knobs "$SW" \
  --budget 20 --seed 0 --window-s "$WIN" --repeats "$REP" --slo-ms "$SLO" --no-history --json \
  --out "$OUT/tune.json" > /dev/null || status=$?
echo "tune_s=$(( $(date +%s) - t0 )) tune_exit=$status" >> "$OUT/meta.txt"
cat "$OUT/meta.txt" >&2
