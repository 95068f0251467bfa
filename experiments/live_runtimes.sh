#!/usr/bin/env bash
# Live runs of the runtime workloads (onnx: ResNet-50, llm: a 201M-parameter Llama-style LM with random
# weights) on one NVIDIA GPU, software knobs only (never writes a hardware setting). About 9 minutes.
#
# Usage (on the GPU machine): bash experiments/live_runtimes.sh OUTDIR [--stages onnx,llm] [--deadline-s 540]
# Then (anywhere):            python experiments/live_runtimes.py report --in OUTDIR --out experiments/results --prefix h200
# Writes OUTDIR/{details.json,onnx_table.csv,onnx_tune.json,llm_table.csv,llm_tune.json,log.txt} (6 files).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: live_runtimes.sh OUTDIR [run options]}
shift
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,power.draw,clocks.sm --format=csv 2>&1 | tee "$OUT/log.txt"
$PY experiments/live_runtimes.py run --out "$OUT" "$@" 2>&1 | tee -a "$OUT/log.txt"
