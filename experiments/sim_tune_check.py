"""Does ``polythrottle tune`` find the twin's optimum? AGX Orin twin, EfficientNet-B0, every knob.

1. ``polythrottle profile --device sim:jetson-agx-orin --workload efficientnet-b0 --noise 0`` gives the
   exhaustive table; the SLO is its 30th latency percentile; the optimum is the table's lowest energy
   per inference under that SLO.
2. ``polythrottle tune ... --slo-ms X --budget 20 --seed S --json`` for several seeds (cbo and, side by
   side, random search); each recommendation is looked up (noise-free) in the exhaustive table:
   feasible and within 5% of the optimum counts as a hit. Target: at least 4 of 5 seeds with cbo.

Usage: python experiments/sim_tune_check.py --seeds 5 --noise 0 --out experiments/results/sim_tune_check.md
       python experiments/sim_tune_check.py --seeds 5 --noise 0.02 --out experiments/results/sim_tune_check_noise2pct.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polythrottle.cli import main as cli_main  # noqa: E402
from polythrottle.devices.table import ReplayTable  # noqa: E402

DEVICE = "sim:jetson-agx-orin"
WORKLOAD = "efficientnet-b0"


def cli(*argv: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return cli_main(list(argv))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--noise", type=float, default=0.0, help="measurement noise for the tune runs")
    ap.add_argument("--percentile", type=float, default=30.0)
    ap.add_argument("--optimizers", default="cbo,random")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        table_csv = Path(tmp) / "exhaustive.csv"
        rc = cli("profile", "--device", DEVICE, "--workload", WORKLOAD, "--noise", "0", "--out", str(table_csv))
        assert rc == 0, rc
        table = ReplayTable(table_csv)
        e, lat = table.metric("energy_j"), table.metric("latency_ms")
        slo = float(np.round(np.percentile(lat, args.percentile), 3))
        opt_i = int(np.argmin(np.where(lat <= slo, e, np.inf)))
        opt = float(e[opt_i])
        runs = []
        for name in args.optimizers.split(","):
            for seed in range(args.seeds):
                out = Path(tmp) / f"{name}-{seed}.json"
                t0 = time.perf_counter()
                rc = cli("tune", "--device", DEVICE, "--workload", WORKLOAD, "--slo-ms", str(slo), "--budget",
                         str(args.budget), "--seed", str(seed), "--noise", str(args.noise), "--optimizer", name,
                         "--json", "--out", str(out))
                wall = time.perf_counter() - t0
                res = json.loads(out.read_text())
                row = {"optimizer": name, "seed": seed, "rc": rc, "wall_s": round(wall, 1),
                       "measurements": res["measurements"]}
                if res["best"] is not None:
                    truth = table.truth(res["best"]["config"])
                    row.update(best=res["best"]["config"], true_energy_j=truth.energy_j, true_latency_ms=truth.latency_ms,
                               feasible=truth.latency_ms <= slo, gap_pct=100 * (truth.energy_j / opt - 1))
                else:
                    row.update(best=None, feasible=False, gap_pct=None)
                row["hit"] = bool(row["feasible"] and row["gap_pct"] is not None and row["gap_pct"] <= 5.0)
                row["tried"] = [h["config"] for h in res["history"]]
                runs.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "tried"}), flush=True)

    lines = [
        f"# Tuning the AGX Orin twin: {WORKLOAD}, every knob, budget {args.budget}",
        "",
        f"Regenerate: `python experiments/sim_tune_check.py --seeds {args.seeds} --noise {args.noise:g} --out {args.out}`",
        "",
        f"Space: {len(table.space)} configs ({', '.join(f'{k.name} x{len(k)}' for k in table.space.knobs)}). "
        f"SLO = {args.percentile:g}th percentile of the twin's latencies = {slo:g} ms. "
        f"Exhaustive optimum (from `polythrottle profile`): {opt:.5f} J at {table.space.config(opt_i)} "
        f"({lat[opt_i]:.3f} ms). Tune noise: {args.noise:g}.",
        "",
        "| optimizer | seeds feasible and within 5% | feasible | median gap to optimum | worst gap | median wall s |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.optimizers.split(","):
        rs = [r for r in runs if r["optimizer"] == name]
        gaps = [r["gap_pct"] for r in rs if r["gap_pct"] is not None]
        lines.append(
            f"| {name} | {sum(r['hit'] for r in rs)}/{len(rs)} | {sum(bool(r['feasible']) for r in rs)}/{len(rs)} | "
            f"{statistics.median(gaps):+.1f}% | {max(gaps):+.1f}% | {statistics.median(r['wall_s'] for r in rs):.1f} |"
            if gaps else f"| {name} | 0/{len(rs)} | 0/{len(rs)} | - | - | - |"
        )
    lines += ["", "| optimizer | seed | recommended config | true energy J | true latency ms | gap | hit |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(
            f"| {r['optimizer']} | {r['seed']} | {r['best']} | {r.get('true_energy_j', float('nan')):.5f} | "
            f"{r.get('true_latency_ms', float('nan')):.3f} | "
            + (f"{r['gap_pct']:+.1f}%" if r["gap_pct"] is not None else "-") + f" | {'yes' if r['hit'] else 'no'} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n<details><summary>configs tried per run</summary>\n\n```\n"
                            + "\n".join(json.dumps({"optimizer": r["optimizer"], "seed": r["seed"], "tried": r["tried"]})
                                        for r in runs) + "\n```\n</details>\n")


if __name__ == "__main__":
    main()
