"""Issue 2 benchmark: cbo vs random on the real AGX Xavier table (replay), noise 2%, SLO 100 ms.

For each seed: measurements until a config truly within 5% of the table's optimum was measured,
whether the final recommendation is truly feasible and within 5%, and optimizer seconds per step.
Usage: python experiments/xavier_replay.py [--seeds 10] [--budget 20] [--out experiments/results/xavier_replay.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polythrottle.devices import DeviceOptions, open_device  # noqa: E402
from polythrottle.tuning.tuner import Tuner  # noqa: E402

TABLE = ROOT.parent / "shared" / "data" / "jetson-agx-xavier-triton-loudva.csv"


def true_optimum(device, slo_ms: float) -> float:
    t = device.table
    e, lat = t.metric("energy_j"), t.metric("latency_ms")
    return float(min(x for x, lat_ms in zip(e, lat) if lat_ms <= slo_ms))


def run_one(optimizer: str, seed: int, args) -> dict:
    dev = open_device(f"replay:{args.table}", DeviceOptions(noise=args.noise, seed=seed))
    opt = true_optimum(dev, args.slo_ms)
    t0 = time.perf_counter()
    res = Tuner(dev, args.slo_ms, args.budget, optimizer=optimizer, seed=seed).run()
    wall = time.perf_counter() - t0
    hit = None
    for r in res.history:
        truth = dev.truth(r.config)
        if truth.latency_ms <= args.slo_ms and truth.energy_j <= 1.05 * opt:
            hit = r.step + 1
            break
    best_truth = dev.truth(res.best.config) if res.best else None
    return {
        "optimizer": optimizer,
        "seed": seed,
        "to_5pct": hit,
        "final_feasible": bool(best_truth and best_truth.latency_ms <= args.slo_ms),
        "final_within_5pct": bool(best_truth and best_truth.latency_ms <= args.slo_ms and best_truth.energy_j <= 1.05 * opt),
        "final_gap_pct": None if best_truth is None else 100 * (best_truth.energy_j / opt - 1),
        "measurements": len(res.history),
        "median_propose_s": statistics.median(r.propose_s for r in res.history[1:]),
        "wall_s": wall,
        "best": None if res.best is None else res.best.config,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default=str(TABLE))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--slo-ms", type=float, default=100.0)
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--optimizers", default="cbo,random")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not Path(args.table).is_file():
        sys.exit(f"measured table not found: {args.table}")
    rows = []
    for name in args.optimizers.split(","):
        for seed in range(args.seeds):
            r = run_one(name, seed, args)
            rows.append(r)
            print(json.dumps(r), flush=True)
    lines = [
        f"# AGX Xavier replay: SLO {args.slo_ms} ms, noise {args.noise}, budget {args.budget}, {args.seeds} seeds",
        "",
        f"Command: `python experiments/xavier_replay.py --seeds {args.seeds} --budget {args.budget}`",
        "",
        "| optimizer | median measurements to within 5% (miss = budget+1) | hit within budget | final truly feasible | final within 5% | median propose_s |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.optimizers.split(","):
        rs = [r for r in rows if r["optimizer"] == name]
        to5 = [r["to_5pct"] if r["to_5pct"] else args.budget + 1 for r in rs]
        lines.append(
            f"| {name} | {statistics.median(to5):g} | {sum(r['to_5pct'] is not None for r in rs)}/{len(rs)} "
            f"| {sum(r['final_feasible'] for r in rs)}/{len(rs)} | {sum(r['final_within_5pct'] for r in rs)}/{len(rs)} "
            f"| {statistics.median(r['median_propose_s'] for r in rs):.3f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n<details><summary>per run</summary>\n\n```\n" + "\n".join(json.dumps(r) for r in rows) + "\n```\n</details>\n")


if __name__ == "__main__":
    main()
