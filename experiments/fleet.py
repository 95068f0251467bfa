"""Issue 17 benchmark: a new unit of a fleet tunes from the other units' history vs alone (cold).

Fleet: ``--units`` twin units of one board (``sim:BOARD?unit=N``, N = 1..units: each with its own seeded
manufacturing spread, ``polythrottle.twin.units``). Per seed, the units tune one after another against one
history database (SQLite here; the same code path as PostgreSQL): unit 1 tunes cold (``--first-budget``),
every later unit warm-starts from the fleet's measurements of the same board, workload, knob space and
model version (``source: fleet``; budget ``--budget``). Side by side, every unit also tunes cold with the
cold budget. The truth is each unit's own noise-free table: its own optimum under the SLO.

Per tune: measurements (baseline included) until a config truly feasible and within 5% of the unit's own
optimum was measured (a miss counts as budget + 1), whether the final pick is truly feasible and within 5%,
measurements made at truly SLO-violating configs, and measurements used. Also reported: how much the
units differ (|log| difference of energy and latency per config against the nominal board).

Usage: python experiments/fleet.py [--units 30] [--seeds 3] [--jobs 2] [--out experiments/results/fleet.md]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker: the GP steps oversubscribe 2 cores otherwise

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polythrottle.devices import DeviceOptions, open_device  # noqa: E402
from polythrottle.history import HistoryStore  # noqa: E402
from polythrottle.history_tune import run_tune  # noqa: E402


@dataclass(frozen=True)
class Setup:
    board: str
    workload: str
    knobs: tuple[str, ...]
    slo_ms: float
    noise: float
    budget: int
    first_budget: int
    cold_budget: int


@dataclass
class Run:
    seed: int
    unit: int
    mode: str  # "fleet" or "cold"
    source: str  # warm-start source: "fleet", "cold" (first unit / cold mode), "fallback"
    units_in_prior: int
    to_5pct: int
    measurements: int
    violations: int
    final_feasible: bool
    final_within_5: bool
    propose_s: float


def spec(board: str, unit: int) -> str:
    return f"sim:{board}?unit={unit}"


def truth(setup: Setup, unit: int) -> tuple[dict, float]:
    """The unit's noise-free table restricted to the tuned knobs (others at the baseline) and its optimum."""
    dev = open_device(spec(setup.board, unit), DeviceOptions(workload=setup.workload))
    base = dev.default_config()
    sub = dev.space().restrict(list(setup.knobs), base)
    table: dict = {}
    for i in range(len(sub)):
        cfg = {**base, **sub.config(i)}
        m = dev.truth(cfg)
        table[tuple(sorted((k, str(v)) for k, v in cfg.items()))] = (m.energy_j, m.latency_ms)
    feasible = [e for e, lat in table.values() if lat <= setup.slo_ms]
    return table, min(feasible)


def score(setup: Setup, seed: int, unit: int, mode: str, result, table: dict, opt: float) -> Run:
    def key(cfg: dict) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in cfg.items()))

    first = None
    violations = 0
    for n, r in enumerate(result.history, start=1):
        e, lat = table[key(r.config)]
        violations += lat > setup.slo_ms
        if first is None and lat <= setup.slo_ms and e <= 1.05 * opt:
            first = n
    budget = result.budget
    best = result.best
    feasible = within = False
    if best is not None:
        e, lat = table[key(best.config)]
        feasible, within = lat <= setup.slo_ms, lat <= setup.slo_ms and e <= 1.05 * opt
    warm = result.extra.get("warm_start") or {}
    source = "cold" if not warm else ("fallback" if warm.get("fallback") else warm.get("source", "unit"))
    return Run(seed, unit, mode, source, int(warm.get("units", 0)) if warm else 0,
               first if first is not None else budget + 1, len(result.history), violations, feasible, within,
               statistics.median(r.propose_s for r in result.history[1:]) if len(result.history) > 1 else 0.0)


def run_seed(args: tuple[Setup, int, int]) -> list[Run]:
    setup, seed, units = args
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(Path(tmp) / "fleet.sqlite")
        try:
            for unit in range(1, units + 1):
                table, opt = truth(setup, unit)
                for mode in ("fleet", "cold"):
                    dev = open_device(spec(setup.board, unit),
                                      DeviceOptions(workload=setup.workload, noise=setup.noise, seed=1000 * seed + unit))
                    if mode == "fleet":
                        budget = setup.first_budget if unit == 1 else setup.budget
                        result = run_tune(dev, setup.slo_ms, budget, store=store, model_version="v1",
                                          knobs=list(setup.knobs), seed=1000 * seed + unit)
                    else:
                        result = run_tune(dev, setup.slo_ms, setup.cold_budget, store=None, knobs=list(setup.knobs),
                                          seed=1000 * seed + unit)
                    dev.close()
                    runs.append(score(setup, seed, unit, mode, result, table, opt))
        finally:
            store.close()
    return runs


def unit_spread(setup: Setup, units: int) -> tuple[float, float, float, float]:
    """Median and 90th percentile of |log| energy and latency differences per config, units vs unit 0."""
    base = open_device(spec(setup.board, 0), DeviceOptions(workload=setup.workload))
    e0, l0 = base.table.metric("energy_j"), base.table.metric("latency_ms")
    de, dl = [], []
    for u in range(1, units + 1):
        d = open_device(spec(setup.board, u), DeviceOptions(workload=setup.workload))
        de.append(np.abs(np.log(d.table.metric("energy_j") / e0)))
        dl.append(np.abs(np.log(d.table.metric("latency_ms") / l0)))
    e, lat = np.concatenate(de), np.concatenate(dl)
    return float(np.median(e)), float(np.percentile(e, 90)), float(np.median(lat)), float(np.percentile(lat, 90))


def slo_of(board: str, workload: str, knobs: tuple[str, ...], percentile: float) -> float:
    dev = open_device(spec(board, 0), DeviceOptions(workload=workload))
    base = dev.default_config()
    sub = dev.space().restrict(list(knobs), base)
    lat = [dev.truth({**base, **sub.config(i)}).latency_ms for i in range(len(sub))]
    return float(np.percentile(lat, percentile))


def summarize(setup: Setup, runs: list[Run], spread: tuple[float, ...], units: int, seeds: int, cmd: str,
              wall_s: float) -> str:
    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else math.nan

    def pct(xs: list[bool]) -> float:
        return 100.0 * sum(xs) / len(xs) if xs else math.nan

    warm = [r for r in runs if r.mode == "fleet" and r.unit > 1]
    cold = [r for r in runs if r.mode == "cold"]
    first = [r for r in runs if r.mode == "fleet" and r.unit == 1]
    lines = [
        "# Fleet warm start: a new unit tunes from the fleet's history (issue 17)",
        "",
        f"Command: `{cmd}` ({wall_s / 60:.1f} min wall). Code: `polythrottle/optim/pooled_prior.py`, "
        "`history_tune.choose_prior`, `polythrottle/twin/units.py`.",
        "",
        f"Board `sim:{setup.board}?unit=N` (N = 1..{units}), workload `{setup.workload}`, knobs "
        f"{', '.join(setup.knobs)}, SLO {setup.slo_ms:.3g} ms (30th percentile of the nominal board's latencies), "
        f"noise {setup.noise:g}, {seeds} seeds. Units tune one after another against one history; unit 1 tunes "
        f"cold (budget {setup.first_budget}), units 2..{units} warm-start from the fleet (budget {setup.budget}); "
        f"side by side every unit tunes cold (budget {setup.cold_budget}).",
        "",
        f"How much units differ (per config, |log| vs the nominal board): energy median {spread[0]:.3f}, p90 "
        f"{spread[1]:.3f}; latency median {spread[2]:.3f}, p90 {spread[3]:.3f}.",
        "",
        "| tunes | n | median measurements to within 5% of own optimum | final pick within 5% | final truly feasible "
        "| median SLO-violating measurements | median measurements used | median s per proposal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in (("fleet warm start (units 2..N)", warm), ("cold (every unit)", cold),
                     ("unit 1 (cold, starts the fleet)", first)):
        lines.append(
            f"| {name} | {len(rs)} | {med([r.to_5pct for r in rs]):g} | {pct([r.final_within_5 for r in rs]):.1f}% | "
            f"{pct([r.final_feasible for r in rs]):.1f}% | {med([r.violations for r in rs]):g} | "
            f"{med([r.measurements for r in rs]):g} | {med([r.propose_s for r in rs]):.2f} |")
    sources: dict[str, int] = {}
    for r in warm:
        sources[r.source] = sources.get(r.source, 0) + 1
    targets = [
        ("median measurements to within 5% with the fleet's history <= 3", med([r.to_5pct for r in warm]) <= 3,
         f"{med([r.to_5pct for r in warm]):g} (cold: {med([r.to_5pct for r in cold]):g})"),
        ("final pick within 5% in >= 90% of units", pct([r.final_within_5 for r in warm]) >= 90,
         f"{pct([r.final_within_5 for r in warm]):.1f}%"),
        ("final pick truly feasible in >= 98% of units", pct([r.final_feasible for r in warm]) >= 98,
         f"{pct([r.final_feasible for r in warm]):.1f}%"),
    ]
    lines += ["", "| target | result | value |", "|---|---|---|"]
    lines += [f"| {t} | {'PASS' if ok else 'FAIL'} | {v} |" for t, ok, v in targets]
    lines += ["", "Warm-start sources of units 2..N: " + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())),
              "", "Per unit (seed, unit, mode, source, units in prior, to 5%, used, violations, feasible, within 5%):",
              "", "```"]
    lines += [f"{r.seed} {r.unit:3d} {r.mode:5s} {r.source:8s} {r.units_in_prior:3d} {r.to_5pct:3d} "
              f"{r.measurements:3d} {r.violations:3d} {int(r.final_feasible)} {int(r.final_within_5)}" for r in runs]
    lines += ["```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", default="jetson-agx-orin")
    p.add_argument("--workload", default="efficientnet-b0")
    p.add_argument("--knobs", default="gpu_mhz,emc_mhz,cpu_mhz,batch_size")
    p.add_argument("--units", type=int, default=30)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--noise", type=float, default=0.02)
    p.add_argument("--budget", type=int, default=10, help="budget of a fleet-warm-started tune")
    p.add_argument("--first-budget", type=int, default=20, help="budget of the first unit's cold tune")
    p.add_argument("--cold-budget", type=int, default=20)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "fleet.md")
    args = p.parse_args(argv)
    knobs = tuple(k for k in args.knobs.split(",") if k)
    t0 = time.time()
    setup = Setup(args.board, args.workload, knobs, slo_of(args.board, args.workload, knobs, 30), args.noise,
                  args.budget, args.first_budget, args.cold_budget)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = [r for rs in pool.map(run_seed, [(setup, s, args.units) for s in range(args.seeds)]) for r in rs]
    spread = unit_spread(setup, args.units)
    cmd = "python experiments/fleet.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = summarize(setup, runs, spread, args.units, args.seeds, cmd.strip(), time.time() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text.split("Per unit")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
