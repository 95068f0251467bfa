#!/usr/bin/env bash
# Live software-knob measurements and tunes on a real NVIDIA GPU. Never changes a hardware setting:
# every polythrottle call uses --no-clock-control (and experiments/live_gpu.py opens the device that way).
#
# Usage: bash experiments/live_gpu.sh OUTDIR [STAGE ...]     (default: every stage, about 17 minutes)
# Stages: check resnet50-profile resnet50-spread resnet50-tune bert-profile bert-tune crosscheck
#         channels-last resnet50-tune-slo10
# Then (any machine): bash experiments/live_gpu.sh OUTDIR report
# The committed results in experiments/results/ were made on an H100 in four device calls:
#   check | resnet50-profile resnet50-spread | resnet50-tune bert-profile bert-tune |
#   crosscheck channels-last resnet50-tune-slo10
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${1:?usage: live_gpu.sh OUTDIR [STAGE ...]}
shift
mkdir -p "$OUT"
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(check resnet50-profile resnet50-spread resnet50-tune bert-profile bert-tune
                                   crosscheck channels-last resnet50-tune-slo10 report)
PY=${PYTHON:-python3}
PROFILE="$PY experiments/live_gpu.py profile"
SW=batch_size,precision,cuda_graphs
# The tune: the same harness settings as the profile (2 windows of 2 s per measurement), 15 measurements.
TUNE="$PY -m polythrottle tune --device nvml:0 --no-clock-control --knobs $SW --budget 15 --seed 0 --window-s 2 --repeats 2 --json"

for stage in "${STAGES[@]}"; do
  echo "== $stage" >&2
  case $stage in
    check)
      $PY experiments/nvml_check.py --configs 1/fp32/off,1/fp32/on,128/fp16/on,32/bf16/off --out "$OUT/h100_nvml_check.json" ;;
    resnet50-profile)
      $PROFILE --workload torchvision:resnet50 --knobs $SW \
        --table "$OUT/h100_resnet50_table.csv" --details "$OUT/h100_resnet50_profile.json" ;;
    resnet50-spread)
      $PY experiments/live_gpu.py spread --workload torchvision:resnet50 --times 4 \
        --config batch_size=1,precision=fp32,cuda_graphs=off --config batch_size=64,precision=fp16,cuda_graphs=on \
        --out "$OUT/h100_resnet50_spread.json" ;;
    resnet50-tune)
      # SLO rule (experiments/live_gpu.py slo): half the latency of the table's lowest-energy config.
      slo=$($PY experiments/live_gpu.py slo --table "$OUT/h100_resnet50_table.csv")
      $TUNE --workload torchvision:resnet50 --slo-ms "$slo" --out "$OUT/h100_resnet50_tune_slo$slo.json" >/dev/null ;;
    resnet50-tune-slo10)
      $TUNE --workload torchvision:resnet50 --slo-ms 10 --out "$OUT/h100_resnet50_tune_slo10.json" >/dev/null ;;
    bert-profile)
      $PROFILE --workload builtin:transformer-encoder --knobs $SW \
        --table "$OUT/h100_bert_table.csv" --details "$OUT/h100_bert_profile.json" ;;
    bert-tune)
      slo=$($PY experiments/live_gpu.py slo --table "$OUT/h100_bert_table.csv")
      $TUNE --workload builtin:transformer-encoder --slo-ms "$slo" --out "$OUT/h100_bert_tune_slo$slo.json" >/dev/null ;;
    crosscheck)
      # counter vs power sampled every 5 ms (power reads cost ~0.05 ms) on high-power and fast configs
      only=()
      for c in 64/bf16/off 64/tf32/off 4/fp32/off 16/fp16/on 64/fp32/on 16/tf32/off 1/fp32/off 64/fp16/on; do
        IFS=/ read -r b p g <<<"$c"; only+=(--only "batch_size=$b,precision=$p,cuda_graphs=$g")
      done
      $PROFILE --workload builtin:transformer-encoder --knobs $SW --sample-ms 5 "${only[@]}" \
        --table "$OUT/h100_bert_crosscheck5ms.csv" --details "$OUT/h100_bert_crosscheck5ms.json" ;;
    channels-last)
      only=()
      for b in 16 64; do for p in fp32 tf32 fp16 bf16; do for c in off on; do
        only+=(--only "batch_size=$b,precision=$p,cuda_graphs=on,channels_last=$c")
      done; done; done
      $PROFILE --workload torchvision:resnet50 --knobs $SW,channels_last "${only[@]}" \
        --table "$OUT/h100_resnet50_channels_last.csv" --details "$OUT/h100_resnet50_channels_last.json" ;;
    report)
      tunes() { ls "$OUT"/h100_"$1"_tune_slo*.json 2>/dev/null | paste -sd, -; }
      $PY experiments/live_gpu.py report \
        --workload "ResNet-50 (torchvision),$OUT/h100_resnet50_table.csv,$OUT/h100_resnet50_profile.json,$(tunes resnet50)" \
        --workload "BERT-base-sized encoder (builtin:transformer-encoder),$OUT/h100_bert_table.csv,$OUT/h100_bert_profile.json,$(tunes bert)" \
        --spread "$OUT/h100_resnet50_spread.json" --crosscheck "$OUT/h100_bert_crosscheck5ms.json" \
        --pairs "channels_last,$OUT/h100_resnet50_channels_last.csv" --out "$OUT/h100_report_tables.md" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
