"""Issue 15, live check: turn the output of ``experiments/live_tune_check.sh`` into ``experiments/results/`` files.

The exhaustive table measured in the same lease is the judge: the tune's measurements are looked up in it
(measurements until a config within 5% of the table's best feasible energy was measured, SLO-violating
measurements, the slowest measured config as a multiple of the SLO, the final pick's gap and feasibility).
For context, cbo is also replayed on the measured table (noise 3%, seeds 0-9, the live baseline fp32 / no
graphs / batch 1), which shows whether the live tune was typical.

    python experiments/live_tune_report.py OUTDIR --name h200_resnet50 --out-dir experiments/results

Writes ``NAME_table.csv``, ``NAME_profile.json``, ``NAME_tune_sloS.json`` (copies) and ``NAME_tune_check.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("energy_j", "latency_ms", "throughput_ips", "power_w")


def read_table(path: Path) -> tuple[list[str], dict[tuple[str, ...], dict[str, float]]]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"error: {path} has no rows")
    knobs = [k for k in rows[0] if k not in METRICS]
    return knobs, {tuple(str(r[k]) for k in knobs): {m: float(r[m]) for m in METRICS if r.get(m)} for r in rows}


def key_of(config: dict, knobs: list[str]) -> tuple[str, ...]:
    return tuple(str(config[k]) for k in knobs)


def replay_check(table: Path, slo: float, seeds: int) -> list[dict]:
    """cbo replayed on the measured table (noise 3%), judged on the table itself."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from polythrottle.devices import DeviceOptions, open_device
    from polythrottle.tuning.tuner import Tuner

    out = []
    for seed in range(seeds):
        dev = open_device(f"replay:{table}", DeviceOptions(noise=0.03, seed=1000 + seed))
        space = dev.space()
        base = {k: v for k, v in (("precision", "fp32"), ("cuda_graphs", "off"))
                if k in space.names and v in map(str, space.knob(k).values)}
        res = Tuner(dev, slo, 20, seed=seed, baseline=base).run()
        truth = [dev.truth(r.config) for r in res.history]
        best = dev.truth(res.best.config) if res.best else None
        out.append({"history": truth, "best": best, "measurements": len(res.history), "stop": res.stop_reason})
        dev.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir", type=Path, help="the directory live_tune_check.sh wrote")
    ap.add_argument("--name", default="h200_resnet50", help="file name prefix in --out-dir")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "experiments" / "results")
    ap.add_argument("--replay-seeds", type=int, default=10)
    args = ap.parse_args()
    src = args.outdir
    for f in ("table.csv", "tune.json"):
        if not (src / f).is_file():
            print(f"error: {src / f} not found (did live_tune_check.sh run to the end?)", file=sys.stderr)
            return 2
    knobs, table = read_table(src / "table.csv")
    tune = json.loads((src / "tune.json").read_text())
    slo = float(tune["slo_ms"])
    meta = (src / "meta.txt").read_text().strip() if (src / "meta.txt").is_file() else ""
    gpu = (src / "gpu.txt").read_text().strip() if (src / "gpu.txt").is_file() else ""

    workload = tune.get("workload") or "torchvision:resnet50"
    wl_env = "" if workload == "torchvision:resnet50" else f"WORKLOAD={workload} "
    first = meta.splitlines()[0] if meta else ""
    slo_arg = first.split("slo_ms=")[1].split()[0] if "slo_ms=" in first else f"{slo:g}"
    feasible = {k: v for k, v in table.items() if v["latency_ms"] <= slo}
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.name}_tune_slo{slo:g}"
    shutil.copyfile(src / "table.csv", out / f"{args.name}_table.csv")
    if (src / "profile.json").is_file():
        shutil.copyfile(src / "profile.json", out / f"{args.name}_profile.json")
    shutil.copyfile(src / "tune.json", out / f"{stem}.json")

    L = [f"# Live tune on {gpu.splitlines()[-1].split(',')[0] if gpu else 'an NVIDIA GPU'}: "
         f"{tune.get('workload') or 'torchvision:resnet50'}, {', '.join(knobs)}, SLO {slo:g} ms (issue 15)", "",
         f"Measured with `{wl_env}bash experiments/live_tune_check.sh OUTDIR {slo_arg}` (software knobs only, "
         "`--no-clock-control`: no hardware setting written), reported with "
         f"`python experiments/live_tune_report.py OUTDIR --name {args.name}`.", "",
         "```", meta, gpu, "```", "",
         f"The exhaustive table (`{args.name}_table.csv`, {len(table)} configs, measured in the same lease with the "
         "same harness settings) is the judge; the tune saw only its own measurements.", ""]
    if not feasible:
        L += [f"No config of the table meets {slo:g} ms; the tune "
              + ("agreed (no recommendation, exit 3)." if tune.get("best") is None else "recommended one anyway."), ""]
    else:
        opt_key = min(feasible, key=lambda k: feasible[k]["energy_j"])
        opt = feasible[opt_key]
        hist = tune["history"]
        rows, first, viol, slowest = [], None, 0, 0.0
        for h in hist:
            t = table.get(key_of(h["config"], knobs))
            ok5 = t is not None and t["latency_ms"] <= slo and t["energy_j"] <= 1.05 * opt["energy_j"]
            if ok5 and first is None:
                first = h["step"] + 1
            if t is not None and h["role"] != "baseline":
                viol += t["latency_ms"] > slo
                slowest = max(slowest, t["latency_ms"] / slo)
            rows.append(
                f"| {h['step'] + 1} | {h['role']} | {', '.join(str(h['config'][k]) for k in knobs)} "
                f"| {1e3 * h['energy_j']:.2f} | {h['latency_ms']:.3f} "
                + (f"| {1e3 * t['energy_j']:.2f} | {t['latency_ms']:.3f} | {t['energy_j'] / opt['energy_j']:.3f} "
                   f"| {'yes' if t['latency_ms'] <= slo else 'no'} |" if t else "| - | - | - | - |"))
        best = tune.get("best")
        bt = table.get(key_of(best["config"], knobs)) if best else None
        L += [f"Table's best feasible under {slo:g} ms: {', '.join(f'{k}={v}' for k, v in zip(knobs, opt_key))}: "
              f"{1e3 * opt['energy_j']:.2f} mJ, {opt['latency_ms']:.3f} ms.", "",
              "| result | value |", "|---|---|",
              f"| measurements until a config within 5% of the table's best feasible was measured | "
              f"**{first if first is not None else 'never'}** (issue 15 target on real tables: median <= 8) |",
              f"| measurements used | {len(hist)} of 20; stop: {tune['stop_reason']} |",
              f"| SLO-violating measurements (per the table, baseline excluded) | {viol} |",
              f"| slowest measured config (per the table, baseline excluded) | {slowest:.2f}x the SLO |"]
        if best:
            gap = 100 * (bt["energy_j"] / opt["energy_j"] - 1) if bt else float("nan")
            pick = ", ".join(f"{k}={best['config'][k]}" for k in knobs)
            L += [f"| final pick | {pick}: tune measured "
                  f"{1e3 * best['energy_j']:.2f} mJ, {best['latency_ms']:.3f} ms; the table "
                  + (f"{1e3 * bt['energy_j']:.2f} mJ, {bt['latency_ms']:.3f} ms: **{gap:+.1f}%** vs its best feasible, "
                     f"{'feasible' if bt['latency_ms'] <= slo else 'INFEASIBLE'} in the table |" if bt else "has no row |"),
                  f"| saving vs the tune's own baseline measurement | {tune['saving_pct']:.1f}% |"]
        else:
            L.append("| final pick | none (exit 3) |")
        L += ["", "Every measurement of the tune, with the table's values for the same config:", "",
              f"| # | role | {', '.join(knobs)} | tune mJ | tune ms | table mJ | table ms | table energy / best feasible "
              "| feasible in the table |", "|---|---|---|---|---|---|---|---|---|", *rows, ""]

        if args.replay_seeds > 0:
            runs = replay_check(src / "table.csv", slo, args.replay_seeds)
            to5, gaps, used = [], [], []
            for r in runs:
                hit = next((i + 1 for i, m in enumerate(r["history"])
                            if m.latency_ms <= slo and m.energy_j <= 1.05 * opt["energy_j"]), None)
                to5.append(hit if hit is not None else 21)
                gaps.append(None if r["best"] is None else 100 * (r["best"].energy_j / opt["energy_j"] - 1))
                used.append(r["measurements"])
            ok = sum(g is not None and g <= 5 and b["best"].latency_ms <= slo for g, b in zip(gaps, runs))
            L += [f"Replayed on this table (cbo, noise 3%, seeds 0-{args.replay_seeds - 1}, baseline fp32 / no graphs / "
                  f"batch 1): measurements to within 5% median {statistics.median(to5):g} (per seed: "
                  f"{', '.join(str(x) for x in to5)}; 21 = never), final pick feasible and within 5% in "
                  f"{ok}/{len(runs)}, measurements used median {statistics.median(used):g}.", ""]
    (out / f"{args.name}_tune_check.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
