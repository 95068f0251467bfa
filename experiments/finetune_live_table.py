"""Render experiments/results/finetune_live*.json (from finetune_live.py) as one Markdown table.

Usage: python experiments/finetune_live_table.py experiments/results/finetune_live.json ... > experiments/results/finetune_live.md
"""

from __future__ import annotations

import json
import sys


def main(paths: list[str]) -> None:
    docs = [json.load(open(p)) for p in paths]
    d0 = docs[0]
    print("# Live: inference + fine-tuning on one GPU, greedy vs adaptive scheduling\n")
    print(f"GPU: {d0['gpu'].get('gpu')}, driver {d0['gpu'].get('driver')}, stock clocks "
          f"(graphics {d0['gpu'].get('graphics_clock_mhz')} MHz at start, power limit {d0['gpu'].get('power_limit_w')} W; "
          "nothing changed: time-sharing only, two threads on two CUDA streams).")
    print(f"Versions: {json.dumps(d0['versions'])}.\n")
    print(f"Model: torchvision {d0['model']} (random weights), {d0['image']}x{d0['image']} images; inference with "
          f"CUDA graphs, batches up to {d0['max_batch']}; fine-tuning iterations of {d0['finetune_batch']} images "
          "(forward, backward, SGD step) requested back to back.\n")
    print("Commands:\n")
    for d in docs:
        print(f"- `{d['command'].replace('/root/out/', 'experiments/results/')}`")
    for d in docs:
        c = d["calibration"]
        p = d["predictor"]
        print(f"\nCalibration ({d['command'].split('--out')[-1].strip().split('/')[-1]}): inference p90 ms alone "
              f"{ {k: round(v, 2) for k, v in c['inference_alone_p90_ms'].items()} }, while fine-tuning "
              f"{ {k: round(v, 2) for k, v in c['inference_corun_p90_ms'].items()} }; one iteration "
              f"{c['finetune_alone_ms']:.1f} ms alone, {c['finetune_corun_ms']:.1f} ms next to inference. "
              f"Predictor: `{p['features']}` features (leave-one-out median relative error: "
              f"{', '.join(f'{k} {v:.1%}' for k, v in p['loo_median_rel_error'].items())}).")
    print("\n| SLO ms | arrivals | policy | requests | SLO violations | p50 ms | p99 ms | mean batch "
          "| fine-tuning iterations | vs greedy | GPU energy J | mean power W | deferrals | shrunk batches |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d in docs:
        runs = d["runs"]
        for r in runs:
            greedy = next((g for g in runs if g["policy"] == "greedy" and g["arrivals"] == r["arrivals"]
                           and g["slo_ms"] == r["slo_ms"] and g["rate_per_s"] == r["rate_per_s"]), None)
            ratio = ""
            if greedy and r["policy"] != "none" and greedy["finetune_iterations"]:
                ratio = f"{100 * r['finetune_iterations'] / greedy['finetune_iterations']:.0f}%"
            print(f"| {r['slo_ms']:.1f} | {r['arrivals']} {r['rate_per_s']:.0f}/s | {r['policy']} | {r['requests']} "
                  f"| {r['violation_pct']:.2f}% | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.2f} "
                  f"| {r['finetune_iterations']} | {ratio} | {r['energy_j']} | {r['power_w']} | {r['deferrals']} "
                  f"| {r['shrunk_batches']} |")


if __name__ == "__main__":
    main(sys.argv[1:])
