"""Issue 7 benchmark: warm-started re-tune after a model update vs a cold start, side by side.

For each landscape and seed: a cold tune (budget 20) of the old model gives the history; the model
update multiplies every config's energy and latency by its own smooth random factor (``--shift 0.15``:
within [0.85, 1.15]; a global level change plus a smooth variation over the knobs); then the new
model is re-tuned twice from scratch, warm (``WarmStartBO`` with the old tune's measurements as the
prior) and cold (``ConstrainedBO``), both with the same noise and budget, through the real Tuner and
replay device. Reported: new measurements (baseline included) until a config truly feasible and within
5% of the new optimum was measured; and whether the recommendation after k new measurements is.

Landscapes: the measured AGX Xavier table (two SLOs), synthetic GPU x memory x batch landscapes, and
`sim:` twins swept exhaustively (``--landscapes twin:jetson-agx-orin:efficientnet-b0,...``; SLO at the
30th percentile of the twin's latencies).
Usage: python experiments/warm_start.py [--seeds 10] [--shift 0.15] [--out experiments/results/warm_start.md]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polythrottle.devices import DeviceOptions, open_device  # noqa: E402
from polythrottle.devices.table import ReplayTable  # noqa: E402
from polythrottle.optim.warm_start import WarmStartBO, configs_to_prior  # noqa: E402
from polythrottle.tuning.tuner import Tuner  # noqa: E402

TABLE = ROOT.parent / "shared" / "data" / "jetson-agx-xavier-triton-loudva.csv"


@dataclass
class Landscape:
    name: str
    knobs: list[str]
    configs: list[dict]
    energy_j: np.ndarray
    latency_ms: np.ndarray
    slo_ms: float
    after: Landscape | None = None
    """If set, the model update replaces this landscape by ``after`` (same configs) instead of shifting it."""


def xavier(slo_ms: float) -> Landscape:
    t = ReplayTable(TABLE)
    configs = [t.space.config(i) for i in range(len(t.space))]
    return Landscape(f"xavier-slo{slo_ms:g}", t.space.names, configs, t.metric("energy_j"),
                     t.metric("latency_ms"), slo_ms)


def synthetic(kind: str) -> Landscape:
    """A GPU x memory x batch landscape (AGX Orin steps): compute- or memory-bound."""
    gpu = [114.75, 216.75, 318.75, 420.75, 522.75, 624.75, 726.75, 828.75, 930.75, 1032.75, 1134.75, 1236.75, 1300.5]
    mem = [204.0, 665.6, 2133.0, 3199.0]
    batch = [1, 2, 4, 8, 16]
    comp, memw = (8.0, 1.5) if kind == "compute" else (2.5, 9.0)
    configs, e, lat = [], [], []
    for f in gpu:
        for m in mem:
            for b in batch:
                t_ms = 2.0 + b**0.85 * (comp * 1300.5 / f + memw * 3199.0 / m)
                p_w = 4.0 + 18.0 * (f / 1300.5) ** 2.4 + 5.0 * (m / 3199.0) ** 1.5
                configs.append({"gpu_mhz": f, "mem_mhz": m, "batch_size": b})
                lat.append(t_ms)
                e.append(p_w * t_ms / 1000.0 / b)
    lat_a = np.asarray(lat)
    return Landscape(f"synthetic-{kind}", ["gpu_mhz", "mem_mhz", "batch_size"], configs, np.asarray(e), lat_a,
                     float(np.percentile(lat_a, 30)))


def twin(profile: str, workload: str) -> Landscape:
    """A `sim:` twin swept exhaustively (needs the sim device of issue 3)."""
    dev = open_device(f"sim:{profile}", DeviceOptions(workload=workload))
    space = dev.space()
    configs, e, lat = [], [], []
    for i in range(len(space)):
        c = space.config(i)
        dev.apply(c)
        m = dev.measure()
        configs.append(c)
        e.append(m.energy_j)
        lat.append(m.latency_ms)
    dev.close()
    lat_a = np.asarray(lat)
    return Landscape(f"twin-{profile}-{workload}", space.names, configs, np.asarray(e), lat_a,
                     float(np.percentile(lat_a, 30)))


def shift_factors(land: Landscape, rel: float, rng: np.random.Generator) -> np.ndarray:
    """(N, 2) multiplicative factors for (energy, latency), each within [1 - rel, 1 + rel]: a random
    global level plus a smooth random variation over the (normalised, log) knob axes."""
    X = []
    for name in land.knobs:
        raw = [c[name] for c in land.configs]
        if all(isinstance(x, (int, float)) for x in raw):
            v = np.asarray(raw, dtype=float)
            v = np.log(v) if v.min() > 0 else v
        else:  # categorical (e.g. precision): its index
            cats = sorted({str(x) for x in raw})
            v = np.asarray([cats.index(str(x)) for x in raw], dtype=float)
        X.append((v - v.min()) / max(v.max() - v.min(), 1e-12))
    X = np.stack(X, axis=1)
    out = np.empty((len(X), 2))
    lo, hi = math.log(1 - rel), math.log(1 + rel)
    for j in range(2):
        omega = rng.normal(0, 2.0, size=(8, X.shape[1]))
        phase = rng.uniform(0, 2 * math.pi, 8)
        field = np.cos(X @ omega.T + phase).mean(axis=1)
        field = (field - field.mean()) / max(np.abs(field - field.mean()).max(), 1e-12)
        level = rng.uniform(lo, hi)
        room = min(hi - level, level - lo)
        s = level + rng.uniform(0.3, 1.0) * room * field
        out[:, j] = np.exp(np.clip(s, lo, hi))
    return out


def write_table(path: Path, land: Landscape, energy: np.ndarray, latency: np.ndarray) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*land.knobs, "energy_j", "latency_ms"])
        for c, e, lat in zip(land.configs, energy, latency):
            w.writerow([*(c[k] for k in land.knobs), repr(float(e)), repr(float(lat))])
    return path


def optimum(energy: np.ndarray, latency: np.ndarray, slo_ms: float) -> float:
    ok = latency <= slo_ms
    return float(energy[ok].min())


def tune(table: Path, land: Landscape, seed: int, budget: int, noise: float, prior=None):
    dev = open_device(f"replay:{table}", DeviceOptions(noise=noise, seed=seed))
    if prior is None:
        factory = "cbo"
    else:
        def factory(space, threshold, s):
            return WarmStartBO(space, threshold, s, prior=configs_to_prior(space, prior))
    tuner = Tuner(dev, land.slo_ms, budget, optimizer=factory, seed=seed)
    recs: list = []

    def on_record(_r) -> None:  # called before the measurement is told: state after len(history)-1
        if len(tuner.history) >= 2:
            recs.append(tuner.optimizer.recommend())

    t0 = time.perf_counter()
    res = tuner.run(on_record)
    recs.append(tuner.optimizer.recommend())
    return dev, tuner, res, recs, time.perf_counter() - t0


def evaluate(dev, tuner, res, recs, opt: float, slo: float) -> dict:
    hit = None
    for r in res.history:
        t = dev.truth(r.config)
        if t.latency_ms <= slo and t.energy_j <= 1.05 * opt:
            hit = r.step + 1
            break
    rec_ok = []  # rec_ok[k-1]: recommendation after k measurements truly feasible and within 5%
    for rec in recs:
        if rec.index is None:
            rec_ok.append(False)
            continue
        t = dev.truth(tuner.full_config(rec.index))
        rec_ok.append(bool(t.latency_ms <= slo and t.energy_j <= 1.05 * opt))
    first_rec = next((k + 2 for k, ok in enumerate(rec_ok) if ok and all(rec_ok[k:])), None)
    final = dev.truth(res.best.config) if res.best else None
    return {
        "to_5pct": hit,
        "rec_stable_5pct_at": first_rec,
        "final_ok": bool(final and final.latency_ms <= slo and final.energy_j <= 1.05 * opt),
        "final_gap_pct": None if final is None else round(100 * (final.energy_j / opt - 1), 2),
        "measurements": len(res.history),
        "rec_ok_at_5": bool(len(rec_ok) >= 4 and rec_ok[3]),
    }


def run_case(land: Landscape, seed: int, args, tmp: Path) -> dict:
    rng = np.random.default_rng(10_000 + seed)
    old_table = write_table(tmp / f"{land.name}-{seed}-old.csv", land, land.energy_j, land.latency_ms)
    if land.after is not None:  # a different model: the other landscape, same configs and SLO
        e1, l1 = land.after.energy_j.copy(), land.after.latency_ms * land.slo_ms / land.after.slo_ms
    else:
        f = shift_factors(land, args.shift, rng)
        e1, l1 = land.energy_j * f[:, 0], land.latency_ms * f[:, 1]
    new_table = write_table(tmp / f"{land.name}-{seed}-new.csv", land, e1, l1)
    # The history: a cold tune of the old model.
    _, _, old_res, _, _ = tune(old_table, land, seed, args.old_budget, args.noise)
    prior = [(r.config, r.measurement.energy_j, r.measurement.latency_ms) for r in old_res.history]
    opt1 = optimum(e1, l1, land.slo_ms)
    old_best_truth = None
    if old_res.best is not None:
        i = land.configs.index(old_res.best.config)
        old_best_truth = {"feasible_now": bool(l1[i] <= land.slo_ms), "gap_now_pct": round(100 * (e1[i] / opt1 - 1), 2)}
    row = {"landscape": land.name, "seed": seed, "shift": args.shift, "old_best_on_new": old_best_truth}
    for mode in ("warm", "cold"):
        dev, tuner, res, recs, wall = tune(new_table, land, seed + 1000, args.budget, args.noise,
                                           prior if mode == "warm" else None)
        ev = evaluate(dev, tuner, res, recs, opt1, land.slo_ms)
        ev["wall_s"] = round(wall, 2)
        if mode == "warm":
            opt = tuner.optimizer
            ev["fallback"] = opt.fallback_reason
            ev["est_shift"] = [round(x, 3) for x in opt.shift]
            # issue 15: never a costlier pick than the previous best once that re-measures feasible
            prev = None if opt.previous_best is None else tuner.full_config(opt.previous_best)
            again = [r.measurement for r in res.history if prev is not None and r.config == prev]
            ok = bool(again) and float(np.mean([m.latency_ms for m in again])) <= land.slo_ms
            ev["prev_best_feasible_again"] = ok
            ev["costlier_than_prev_best"] = bool(
                ok and res.best is not None and res.best.energy_j > float(np.mean([m.energy_j for m in again])) * (1 + 1e-9)
            )
        row[mode] = ev
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=10, help="re-tune budget (new measurements, baseline included)")
    ap.add_argument("--old-budget", type=int, default=15)
    ap.add_argument("--shift", type=float, default=0.15, help="relative shift bound (0.15 = +-15%%)")
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--landscapes", default="xavier-100,xavier-60,synthetic-compute,synthetic-memory")
    ap.add_argument("--out", default=None)
    ap.add_argument("--from-log", default=None,
                    help="summarise the per-run JSON lines of an earlier (possibly interrupted) run instead")
    args = ap.parse_args()
    lands = []
    for name in args.landscapes.split(","):
        if name.startswith("xavier-"):
            lands.append(xavier(float(name.split("-")[1])))
        elif name.startswith("synthetic-"):
            lands.append(synthetic(name.split("-", 1)[1]))
        elif name.startswith("swap:"):  # swap:synthetic-compute>synthetic-memory
            a, b = (synthetic(x.split("-", 1)[1]) for x in name[5:].split(">"))
            a.name, a.after = f"{a.name}->{b.name}", b
            lands.append(a)
        elif name.startswith("twin:"):
            _, profile, workload = name.split(":")
            lands.append(twin(profile, workload))
        else:
            sys.exit(f"unknown landscape {name}")
    rows = []
    if args.from_log:
        rows = [json.loads(x) for x in Path(args.from_log).read_text().splitlines() if x.startswith("{")]
        rows = [r for r in rows if r["landscape"] in {land.name for land in lands}]
    else:
        with tempfile.TemporaryDirectory() as td:
            for land in lands:
                for seed in range(args.seeds):
                    r = run_case(land, seed, args, Path(td))
                    rows.append(r)
                    print(json.dumps(r), flush=True)

    miss = args.budget + 1

    def med(vals):
        return statistics.median(v if v is not None else miss for v in vals)

    argv = [a for a in sys.argv[1:]]
    if args.from_log:  # the command that produced the rows, not the summarising one
        i = argv.index("--from-log")
        del argv[i : i + 2]
    cmd = " ".join(["python", "experiments/warm_start.py", *argv])
    n_seeds = len({r["seed"] for r in rows})
    what = (f"model update = a different landscape ({', '.join(land.name for land in lands)})"
            if all(land.after is not None for land in lands) else f"shift up to +-{args.shift:.0%}")
    lines = [
        f"# Warm-started re-tune vs cold start: {what}, noise {args.noise}, "
        f"re-tune budget {args.budget}, {n_seeds} seeds",
        "",
        f"Command: `{cmd}`",
        "",
        "New measurements (baseline included) until a truly feasible config within 5% of the new optimum was "
        f"measured (median; a miss counts as {miss}); `rec@5`: the recommendation after 5 new measurements is "
        "truly feasible and within 5%; `rec stable`: new measurements after which every later recommendation is.",
        "",
        "| landscape | SLO ms | warm: to 5% | cold: to 5% | warm hits <= 5 | cold hits <= 5 | warm rec@5 | cold rec@5 "
        "| warm rec stable | cold rec stable | warm final ok | cold final ok | old best still ok | fallbacks "
        "| previous best re-measured feasible | warm pick costlier than it |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = [(land.name, land.slo_ms) for land in lands] + [("all", None)]
    for name, slo in groups:
        rs = [r for r in rows if name == "all" or r["landscape"] == name]
        w, c = [r["warm"] for r in rs], [r["cold"] for r in rs]
        n = len(rs)

        def count(xs, f, n=n):
            return f"{sum(1 for x in xs if f(x))}/{n}"

        old_ok = count(rs, lambda r: r["old_best_on_new"] and r["old_best_on_new"]["feasible_now"]
                       and r["old_best_on_new"]["gap_now_pct"] <= 5)
        lines.append(
            f"| {name} | {'' if slo is None else f'{slo:.4g}'} | {med(x['to_5pct'] for x in w):g} | {med(x['to_5pct'] for x in c):g} "
            f"| {count(w, lambda x: x['to_5pct'] and x['to_5pct'] <= 5)} | {count(c, lambda x: x['to_5pct'] and x['to_5pct'] <= 5)} "
            f"| {count(w, lambda x: x['rec_ok_at_5'])} | {count(c, lambda x: x['rec_ok_at_5'])} "
            f"| {med(x['rec_stable_5pct_at'] for x in w):g} | {med(x['rec_stable_5pct_at'] for x in c):g} "
            f"| {count(w, lambda x: x['final_ok'])} | {count(c, lambda x: x['final_ok'])} | {old_ok} "
            f"| {count(w, lambda x: x['fallback'])} | {count(w, lambda x: x.get('prev_best_feasible_again'))} "
            f"| {count(w, lambda x: x.get('costlier_than_prev_best'))} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(
            text + "\n<details><summary>per run</summary>\n\n```\n" + "\n".join(json.dumps(r) for r in rows)
            + "\n```\n</details>\n"
        )


if __name__ == "__main__":
    main()
