"""Optimizer time per proposal (propose_s) on large spaces, 2 CPU cores.

Runs `polythrottle tune` (cbo, budget 20) on twins whose spaces are ~2,600 to ~20,000 points and
reports the median and max `propose_s` of each run. Run it on an otherwise idle machine: the number
is wall-clock time.
Usage: python experiments/propose_time.py [--out experiments/results/propose_time.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polythrottle.devices import DeviceOptions, open_device  # noqa: E402
from polythrottle.tuning.tuner import Tuner  # noqa: E402

CASES = [  # (device, workload)
    ("sim:jetson-agx-orin", "efficientnet-b0"),
    ("sim:jetson-tx2", "efficientnet-b0"),
    ("sim:jetson-agx-orin?gpu=range", "efficientnet-b0"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--max-points", type=int, default=20_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    lines = [
        "# Optimizer seconds per proposal (cbo)",
        "",
        f"Command: `python experiments/propose_time.py` (budget {args.budget}, noise 2%, seed 0; "
        f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.1f})",
        "",
        "| device | workload | points | median propose_s | max propose_s (first fit included) |",
        "|---|---|---|---|---|",
    ]
    for spec, wl in CASES:
        dev = open_device(spec, DeviceOptions(workload=wl, noise=0.02, seed=0))
        n = len(dev.space())
        if n > args.max_points:
            print(f"skip {spec}: {n} points", file=sys.stderr)
            continue
        slo = sorted(dev.table.metric("latency_ms"))[int(0.3 * n)]
        res = Tuner(dev, slo, args.budget, seed=0).run()
        ps = [r.propose_s for r in res.history[1:]]
        row = f"| {spec} | {wl} | {n} | {statistics.median(ps):.3f} | {max(ps):.3f} |"
        print(row, flush=True)
        lines.append(row)
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} (above ~0.5 other jobs shared the 2 cores: "
              "wall-clock seconds per proposal are then inflated, with torch on 2 threads by several times)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
