"""Issue 6: optimizer benchmark - every optimizer x landscape x seed, side by side, in one run.

Each run drives ``polythrottle.tuning.tuner.Tuner`` (baseline first, then the optimizer's picks, budget 30)
against a noisy device; the truth is the same device without noise. Per run it records:
measurements until a config truly within 5% / 2% of the true optimum was measured (a miss counts as
budget + 1 in medians), the true energy and feasibility of the final recommendation, measurements
made at truly SLO-violating configs, the optimizer's seconds per step (``propose_s``) and the
worker's peak RSS during the run (VmHWM, reset before each run through /proc/self/clear_refs).

Writes ``bench.md``, ``bench.csv`` and ``bench.png`` (``bench-quick.*`` with ``--quick``) into ``--out-dir``.

    python experiments/bench_optimizers.py              # full suite (>= 12 landscapes x 10 seeds)
    python experiments/bench_optimizers.py --quick      # CI-sized
    python experiments/bench_optimizers.py --suite none --table my.csv --seeds 2   # your own table
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One OpenMP thread per worker process, set before numpy/torch load: with the default (one per core)
# the workers' thread pools oversubscribe the cores and every step of cbo / optuna-gp ran ~5x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polythrottle.devices import DeviceOptions, open_device  # noqa: E402
from polythrottle.devices.base import Device  # noqa: E402
from polythrottle.errors import BadInputError  # noqa: E402
from polythrottle.optim import OPTIMIZERS  # noqa: E402
from polythrottle.space import SearchSpace  # noqa: E402
from polythrottle.tuning.tuner import Tuner  # noqa: E402

XAVIER_TABLE = ROOT.parent / "shared" / "data" / "jetson-agx-xavier-triton-loudva.csv"
OURS = "cbo"
OPTUNA = ("optuna-tpe", "optuna-gp")
SLOW = ("cbo", "optuna-gp")
DEFAULT_OPTIMIZERS = ("cbo", "optuna-gp", "optuna-tpe", "random", "grid")
SLO_QUANTILES = {"tight": 0.10, "medium": 0.30, "loose": 0.60}
"""Named SLOs: this quantile of the true latencies over the landscape's tuned space."""


# ----- landscapes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Landscape:
    """One tuning problem: a device (``replay:``/``sim:`` spec), the knobs tuned, an SLO and a noise level.

    slo: milliseconds, or a name in ``SLO_QUANTILES`` resolved from the landscape's own true latencies.
    """

    name: str
    device: str
    slo: float | str
    noise: float
    workload: str | None = None
    knobs: tuple[str, ...] | None = None

    def open(self, noise: float, seed: int | None) -> Device:
        return open_device(self.device, DeviceOptions(workload=self.workload, noise=noise, seed=seed))


@dataclass
class Truth:
    """Noise-free energy and latency of every point of a landscape's tuned space, and its optimum."""

    landscape: Landscape
    slo_ms: float
    space: SearchSpace
    energy_j: np.ndarray
    latency_ms: np.ndarray
    baseline_index: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> np.ndarray:
        return self.latency_ms <= self.slo_ms

    @property
    def opt_energy_j(self) -> float:
        return float(self.energy_j[self.feasible].min())


def resolve(land: Landscape) -> Truth:
    """Tabulate the truth of ``land`` (noise-free device) and resolve a named SLO.

    Raises BadInputError when nothing is feasible under the SLO.
    """
    dev = land.open(0.0, 0)
    probe = Tuner(dev, 1e9, 2, optimizer="random", knobs=land.knobs)  # the tuner's own subspace/baseline
    space = probe.space
    energy = np.empty(len(space))
    latency = np.empty(len(space))
    for i in range(len(space)):
        cfg = probe.full_config(i)
        if hasattr(dev, "truth"):
            m = dev.truth(cfg)
        else:
            dev.apply(cfg)
            m = dev.measure()
        energy[i], latency[i] = m.energy_j, m.latency_ms
    dev.close()
    if isinstance(land.slo, str):
        slo_ms = float(np.quantile(latency, SLO_QUANTILES[land.slo]))
    else:
        slo_ms = float(land.slo)
    base = space.index_of({n: probe.baseline_config[n] for n in probe.tuned_knobs})
    truth = Truth(land, slo_ms, space, energy, latency, base)
    if not truth.feasible.any():
        raise BadInputError(f"landscape {land.name}: no point meets the SLO of {slo_ms:.1f} ms")
    return truth


def replay_landscapes(table: Path, slos: Sequence[float | str], noise: float, prefix: str) -> list[Landscape]:
    return [Landscape(f"{prefix}/slo-{s if isinstance(s, str) else f'{s:g}ms'}", f"replay:{table}", s, noise) for s in slos]


GEK = ("gpu_mhz", "emc_mhz", "batch_size")
GECK = ("gpu_mhz", "emc_mhz", "cpu_mhz", "batch_size")
GEKP = ("gpu_mhz", "emc_mhz", "batch_size", "precision")
TWINS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    # (profile, workload, knobs, SLO): every board, several models, tight/medium/loose, 3 or 4 knobs.
    ("jetson-agx-orin", "efficientnet-b0", GEK, "tight"),
    ("jetson-agx-orin", "bert-base", GECK, "medium"),
    ("jetson-agx-orin", "resnet50", GEKP, "loose"),
    ("jetson-orin-nano", "efficientnet-b4", GEKP, "medium"),
    ("jetson-orin-nano", "resnet50", GECK, "tight"),
    ("jetson-xavier-nx", "efficientnet-b0", GEKP, "medium"),
    ("jetson-xavier-nx", "bert-base", GEK, "loose"),
    ("jetson-tx2", "efficientnet-b7", GECK, "medium"),
    ("jetson-tx2", "efficientnet-b0", GEK, "tight"),
)
QUICK_TWINS = (0, 4, 8)
NOISES = (0.02, 0.035, 0.05)


def suite(kind: str) -> list[Landscape]:
    """The landscapes of ``kind``: "full", "quick" or "none"."""
    if kind == "none":
        return []
    lands: list[Landscape] = []
    if XAVIER_TABLE.is_file():
        slos: list[float | str] = [50.0, 100.0, 200.0] if kind == "full" else [100.0]
        lands += replay_landscapes(XAVIER_TABLE, slos, 0.02, "agx-xavier-replay")
    else:
        print(f"note: measured table {XAVIER_TABLE} not found; replay landscapes skipped", file=sys.stderr)
    picks = range(len(TWINS)) if kind == "full" else QUICK_TWINS
    for i in picks:
        board, wl, knobs, slo = TWINS[i]
        name = f"{board.removeprefix('jetson-')}/{wl}/{len(knobs)}k/slo-{slo}"
        lands.append(Landscape(name, f"sim:{board}", slo, NOISES[i % len(NOISES)], wl, knobs))
    return lands


# ----- one run ------------------------------------------------------------------------------------
_TRUTHS: dict[str, Truth] = {}  # filled in the parent before the pool forks


def _rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_kib(field_name: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _first(items: Sequence[bool]) -> int | None:
    for i, ok in enumerate(items):
        if ok:
            return i + 1
    return None


def run_one(task: tuple[str, str, int, int]) -> dict[str, Any]:
    optimizer, land_name, seed, budget = task
    truth = _TRUTHS[land_name]
    land = truth.landscape
    dev = land.open(land.noise, 1000 + seed)
    rss0 = _rss_kib("VmRSS")
    _rss_reset()
    t0, c0 = time.perf_counter(), time.process_time()
    tuner = Tuner(dev, truth.slo_ms, budget, optimizer=optimizer, knobs=land.knobs, seed=seed)
    res = tuner.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _rss_kib("VmHWM")
    dev.close()

    names = tuner.tuned_knobs
    idx = [tuner.space.index_of({n: r.config[n] for n in names}) for r in res.history]
    if tuner.space.rows.shape != truth.space.rows.shape:
        raise RuntimeError("tuner space differs from the tabulated truth")
    e, lat, opt = truth.energy_j[idx], truth.latency_ms[idx], truth.opt_energy_j
    ok = lat <= truth.slo_ms
    props = [r.propose_s for r in res.history[1:]] or [0.0]
    row: dict[str, Any] = {
        "optimizer": optimizer,
        "landscape": land_name,
        "seed": seed,
        "budget": budget,
        "slo_ms": round(truth.slo_ms, 3),
        "noise": land.noise,
        "measurements": len(res.history),
        "distinct_points": len(set(idx)),
        "to_5pct": _first(ok & (e <= 1.05 * opt)),
        "to_2pct": _first(ok & (e <= 1.02 * opt)),
        "slo_violations": int((~ok).sum()),
        "slo_violations_measured": sum(not r.feasible for r in res.history),
        "final_found": res.best is not None,
        "final_feasible": False,
        "final_gap_pct": None,
        "final_within_5pct": False,
        "final_within_2pct": False,
        "final_config": None,
        "true_opt_energy_j": opt,
        "final_true_energy_j": None,
        "final_true_latency_ms": None,
        "stop_reason": res.stop_reason,
        "propose_s_median": statistics.median(props),
        "propose_s_mean": statistics.fmean(props),
        "propose_s_max": max(props),
        "peak_rss_mib": round(peak / 1024, 1),
        "rss_growth_mib": round(max(peak - rss0, 0.0) / 1024, 1),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
    }
    if res.best is not None:
        j = tuner.space.index_of({n: res.best.config[n] for n in names})
        fe, fl = float(truth.energy_j[j]), float(truth.latency_ms[j])
        feas = fl <= truth.slo_ms
        row.update(
            final_feasible=feas,
            final_gap_pct=round(100.0 * (fe / opt - 1.0), 3),
            final_within_5pct=feas and fe <= 1.05 * opt,
            final_within_2pct=feas and fe <= 1.02 * opt,
            final_config=";".join(f"{n}={res.best.config[n]}" for n in names),
            final_true_energy_j=fe,
            final_true_latency_ms=fl,
        )
    return row


def _init_worker(optimizers: Sequence[str]) -> None:
    """Import what the optimizers need once, so no run's propose_s includes an import."""
    import importlib
    import warnings

    warnings.filterwarnings("ignore")
    needs = {"cbo": ("torch", "botorch"), "optuna-gp": ("torch", "optuna.samplers._gp.sampler"), "optuna-tpe": ("optuna",)}
    for module in dict.fromkeys(m for o in optimizers for m in needs.get(o, ())):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)  # one thread per worker: the workers share the cores


# ----- summary ------------------------------------------------------------------------------------
def _median_miss(rows: list[dict], key: str) -> float:
    return float(statistics.median(r[key] if r[key] is not None else r["budget"] + 1 for r in rows))


def _rate(rows: list[dict], key: str) -> float:
    return sum(bool(r[key]) for r in rows) / len(rows)


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for opt in dict.fromkeys(r["optimizer"] for r in rows):
        rs = [r for r in rows if r["optimizer"] == opt]
        gaps = [r["final_gap_pct"] for r in rs if r["final_gap_pct"] is not None]
        out[opt] = {
            "runs": len(rs),
            "to_5pct": _median_miss(rs, "to_5pct"),
            "to_2pct": _median_miss(rs, "to_2pct"),
            "hit_5pct": _rate(rs, "to_5pct"),
            "final_feasible": _rate(rs, "final_feasible"),
            "final_within_5pct": _rate(rs, "final_within_5pct"),
            "final_within_2pct": _rate(rs, "final_within_2pct"),
            "final_gap_pct": statistics.median(gaps) if gaps else math.nan,
            "violations": float(statistics.median(r["slo_violations"] for r in rs)),
            "violations_mean": statistics.fmean(r["slo_violations"] for r in rs),
            "measurements": float(statistics.median(r["measurements"] for r in rs)),
            "propose_s": statistics.median(r["propose_s_median"] for r in rs),
            "propose_s_max": max(r["propose_s_max"] for r in rs),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rs),
            "rss_growth_mib": statistics.median(r["rss_growth_mib"] for r in rs),
            "wall_s": sum(r["wall_s"] for r in rs),
        }
    return out


def targets(summary: dict[str, dict[str, float]], wall_s: float, cpu_est_s: float, time_limit_s: float) -> list[tuple[str, bool | None, str]]:
    """The issue's "Done when" checks: (what, passed (None: cannot be checked), detail with the margin)."""
    checks: list[tuple[str, bool | None, str]] = []
    ours = summary.get(OURS)
    if ours is not None:
        v = ours["to_5pct"]
        checks.append(("median measurements to within 5% <= 8", v <= 8, f"{v:g} (margin {8 - v:+g})"))
        optunas = {o: summary[o]["to_5pct"] for o in OPTUNA if o in summary}
        if optunas:
            best = min(optunas, key=optunas.get)  # type: ignore[arg-type]
            lim = 0.6 * optunas[best]
            checks.append(
                (
                    "median to within 5% <= 0.6x the best Optuna sampler's",
                    v <= lim,
                    f"{v:g} vs 0.6 x {optunas[best]:g} ({best}) = {lim:g} (ratio {v / optunas[best]:.2f})",
                )
            )
        else:
            checks.append(("median to within 5% <= 0.6x the best Optuna sampler's", None, "no Optuna sampler run"))
        f = ours["final_feasible"]
        checks.append(("final recommendation truly feasible in >= 97% of runs", f >= 0.97, f"{f:.1%} (margin {100 * (f - 0.97):+.1f} pts)"))
        w = ours["final_within_5pct"]
        checks.append(("final recommendation within 5% in >= 90% of runs", w >= 0.90, f"{w:.1%} (margin {100 * (w - 0.90):+.1f} pts)"))
        if "optuna-tpe" in summary:
            a, b = ours["violations"], summary["optuna-tpe"]["violations"]
            checks.append(("median SLO-violating measurements below Optuna TPE's", a < b, f"{a:g} vs {b:g} (margin {b - a:+g})"))
        else:
            checks.append(("median SLO-violating measurements below Optuna TPE's", None, "Optuna TPE not run"))
    lim = time_limit_s / 60
    checks.append((f"wall time <= {lim:g} min (as measured)", wall_s <= time_limit_s, f"{wall_s / 60:.1f} min"))
    checks.append(
        (
            f"wall time <= {lim:g} min on dedicated cores (estimate: CPU time of the runs / workers)",
            cpu_est_s <= time_limit_s,
            f"{cpu_est_s / 60:.1f} min",
        )
    )
    return checks


def _fmt(x: float, pct: bool = False) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{100 * x:.0f}%" if pct else f"{x:g}"


def _git_version() -> str:
    """Which code ran: the tree's commit and the last commit of cbo.py (git, if available)."""
    import subprocess

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip() or "?"
        except (OSError, subprocess.SubprocessError):
            return "?"

    return (
        f"tree `{git('describe', '--always', '--dirty')}`, "
        f"`polythrottle/optim/cbo.py` last changed in `{git('log', '-1', '--format=%h', '--', 'polythrottle/optim/cbo.py')}`"
    )


def write_markdown(path: Path, args: argparse.Namespace, command: str, truths: list[Truth], rows: list[dict],
                   summary: dict, checks: list, wall_s: float, load: tuple[float, float]) -> None:
    b = args.budget
    L: list[str] = [
        "# Optimizer benchmark (issue 6)",
        "",
        f"Regenerate: `{command}`",
        "",
        f"Code: {_git_version()}.",
        "",
        f"{len(truths)} landscapes x {args.seeds} seeds x {len(summary)} optimizers = {len(rows)} runs, budget {b} "
        f"measurements per run (the baseline included), {args.jobs} worker processes on {os.cpu_count()} CPU cores; "
        f"wall time {wall_s / 60:.1f} min; load average (1 min) {load[0]:.1f} at start, {load[1]:.1f} at the end "
        f"(the machine may be shared with other jobs: then timings are inflated); CPU time of the runs "
        f"{sum(r['cpu_s'] for r in rows) / 60:.1f} core-min, i.e. about {sum(r['cpu_s'] for r in rows) / 60 / args.jobs:.1f} "
        "min on dedicated cores.",
        "",
        "Conventions: *to 5% / to 2%*: measurements (baseline = 1) until a config truly within 5% / 2% of the true "
        f"optimum and truly feasible was measured; **a miss counts as budget + 1 = {b + 1} in medians**. *Final*: the "
        "optimizer's recommendation judged on the noise-free truth. *Violations*: measurements made at configs whose "
        "true latency exceeds the SLO. *propose s*: median over runs of the median seconds the optimizer took to choose "
        "a config. *Peak RSS*: the worker process's VmHWM during the run (reset before each run through "
        "/proc/self/clear_refs; it includes the imported libraries, ~torch), MiB; *RSS growth*: peak minus the RSS "
        "before the run.",
        "",
        "## Summary per optimizer",
        "",
        "| optimizer | runs | median to 5% | median to 2% | hit 5% in budget | final feasible | final within 5% "
        "| final within 2% | median final gap | median violations | mean violations | median measurements "
        "| propose s (median) | propose s (max) | peak RSS MiB | RSS growth MiB |",
        "|---|" + "---|" * 15,
    ]
    for opt, s in summary.items():
        L.append(
            f"| {opt} | {s['runs']} | {_fmt(s['to_5pct'])} | {_fmt(s['to_2pct'])} | {_fmt(s['hit_5pct'], True)} "
            f"| {_fmt(s['final_feasible'], True)} | {_fmt(s['final_within_5pct'], True)} "
            f"| {_fmt(s['final_within_2pct'], True)} | {s['final_gap_pct']:.1f}% | {_fmt(s['violations'])} "
            f"| {s['violations_mean']:.1f} | {_fmt(s['measurements'])} | {s['propose_s']:.3f} | {s['propose_s_max']:.2f} "
            f"| {s['peak_rss_mib']:.0f} | {s['rss_growth_mib']:.0f} |"
        )
    L += ["", "## Targets (issue 6, for `cbo`)", "", "| target | result | value |", "|---|---|---|"]
    for what, ok, detail in checks:
        L.append(f"| {what} | {'n/a' if ok is None else 'PASS' if ok else 'FAIL'} | {detail} |")

    opts = list(summary)
    L += [
        "",
        "## Failure modes (runs per optimizer)",
        "",
        "*slow*: a within-5% config first measured after measurement 8; *never*: not within the budget; "
        "*stopped early*: the optimizer ended the tune before the budget, without a within-5% config; "
        "*infeasible pick*: the final recommendation truly violates the SLO; *lost it*: a within-5% config was "
        "measured but the final recommendation is not within 5%; *none*: no recommendation at all.",
        "",
        "| optimizer | runs | slow (> 8) | never | stopped early | infeasible pick | lost it | none |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in opts:
        rs = [r for r in rows if r["optimizer"] == o]
        L.append(
            f"| {o} | {len(rs)} | {sum(r['to_5pct'] is not None and r['to_5pct'] > 8 for r in rs)} "
            f"| {sum(r['to_5pct'] is None for r in rs)} "
            f"| {sum(r['to_5pct'] is None and r['measurements'] < r['budget'] for r in rs)} "
            f"| {sum(r['final_found'] and not r['final_feasible'] for r in rs)} "
            f"| {sum(r['to_5pct'] is not None and not r['final_within_5pct'] for r in rs)} "
            f"| {sum(not r['final_found'] for r in rs)} |"
        )
    L += [
        "",
        "## Per landscape",
        "",
        "Median measurements to within 5% (miss = budget + 1), then final-recommendation feasible / within-5% counts "
        "and median violations, per optimizer.",
        "",
        "| landscape | " + " | ".join(f"{o} to 5%" for o in opts) + " | " + " | ".join(f"{o} feas/5%/viol" for o in opts) + " |",
        "|---|" + "---|" * (2 * len(opts)),
    ]
    for t in truths:
        name = t.landscape.name
        cells, cells2 = [], []
        for o in opts:
            rs = [r for r in rows if r["optimizer"] == o and r["landscape"] == name]
            if not rs:
                cells.append("-")
                cells2.append("-")
                continue
            cells.append(_fmt(_median_miss(rs, "to_5pct")))
            n = len(rs)
            cells2.append(
                f"{sum(r['final_feasible'] for r in rs)}/{n} {sum(r['final_within_5pct'] for r in rs)}/{n} "
                f"{_fmt(float(statistics.median(r['slo_violations'] for r in rs)))}"
            )
        L.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(cells2) + " |")

    L += [
        "",
        "## Landscapes",
        "",
        "| landscape | device | workload | knobs | points | SLO ms | feasible points | true optimum J | baseline J (feasible?) | noise |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in truths:
        land = t.landscape
        slo = f"{t.slo_ms:.1f}" + (f" ({land.slo}: q{SLO_QUANTILES[land.slo]:.2f})" if isinstance(land.slo, str) else "")
        dev = land.device if not land.device.startswith("replay:") else "replay:" + Path(land.device[7:]).name
        bi = t.baseline_index
        L.append(
            f"| {land.name} | {dev} | {land.workload or '-'} | {','.join(t.space.names)} | {len(t.space)} | {slo} "
            f"| {int(t.feasible.sum())} | {t.opt_energy_j:.4g} | {t.energy_j[bi]:.4g} ({'yes' if t.feasible[bi] else 'no'}) "
            f"| {land.noise:g} |"
        )
    L += ["", f"Per-run rows: `{path.with_suffix('.csv').name}`; plot: `{path.with_suffix('.png').name}` (beside this file).", ""]
    path.write_text("\n".join(L))


def write_plot(path: Path, rows: list[dict], budget: int, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ks = np.arange(1, budget + 1)
    opts = list(dict.fromkeys(r["optimizer"] for r in rows))
    bars = {"final truly feasible": [], "final within 5%": [], "measurements violating the SLO": []}
    for opt in opts:
        rs = [r for r in rows if r["optimizer"] == opt]
        for ax, key in zip(axes[:2], ("to_5pct", "to_2pct")):
            frac = [np.mean([r[key] is not None and r[key] <= k for r in rs]) for k in ks]
            ax.step(ks, frac, where="post", label=opt, lw=2.2 if opt == OURS else 1.2)
        bars["final truly feasible"].append(np.mean([r["final_feasible"] for r in rs]))
        bars["final within 5%"].append(np.mean([r["final_within_5pct"] for r in rs]))
        bars["measurements violating the SLO"].append(np.mean([r["slo_violations"] / r["measurements"] for r in rs]))
    axes[0].set_title("runs with a truly within-5% config measured")
    axes[1].set_title("runs with a truly within-2% config measured")
    for ax in axes[:2]:
        ax.set_xlabel("measurements (baseline = 1)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left")
    x = np.arange(len(opts))
    for j, (label, vals) in enumerate(bars.items()):
        axes[2].bar(x + (j - 1) * 0.27, vals, width=0.27, label=label)
    axes[2].set_xticks(x, opts, rotation=20)
    axes[2].set_ylim(0, 1.3)
    axes[2].set_title("final recommendation; share of violating measurements")
    axes[2].legend(loc="upper right", fontsize=8)
    axes[2].grid(alpha=0.3, axis="y")
    fig.suptitle(command, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----- main ---------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized: the quick suite, 2 seeds (<= 3 min on 2 cores)")
    ap.add_argument("--suite", choices=("full", "quick", "none"), default=None, help="landscape set (default: full, or quick with --quick)")
    ap.add_argument("--table", action="append", default=[], help="add replay landscapes for this table (tight/medium/loose SLOs); repeatable")
    ap.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS), help=f"comma-separated, from: {', '.join(OPTIMIZERS)}")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per landscape (default 10, or 2 with --quick)")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds run are first-seed .. first-seed + seeds - 1 (held-out seeds for checking a change)")
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--landscapes", default=None, help="only landscapes whose name contains one of these comma-separated strings")
    ap.add_argument("--out-dir", default=str(ROOT / "experiments" / "results"))
    args = ap.parse_args(argv)
    args.suite = args.suite or ("quick" if args.quick else "full")
    args.seeds = args.seeds or (2 if args.quick else 10)
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    unknown = [o for o in optimizers if o not in OPTIMIZERS]
    if unknown or args.seeds < 1 or args.budget < 2 or args.jobs < 1:
        print(f"error: unknown optimizer(s) {unknown}" if unknown else "error: --seeds, --jobs >= 1, --budget >= 2", file=sys.stderr)
        return 2
    command = "python experiments/bench_optimizers.py" + ("".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])))
    out_dir = Path(args.out_dir)
    stem = "bench-quick" if args.quick else "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()

    lands = suite(args.suite)
    for table in args.table:
        lands += replay_landscapes(Path(table), ["tight", "medium", "loose"], 0.03, Path(table).stem)
    if args.landscapes:
        keys = args.landscapes.split(",")
        lands = [land for land in lands if any(k in land.name for k in keys)]
    if not lands:
        print("error: no landscapes selected", file=sys.stderr)
        return 2
    try:
        truths = [resolve(land) for land in lands]
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _TRUTHS.clear()
    _TRUTHS.update({t.landscape.name: t for t in truths})
    tasks = [(o, t.landscape.name, s, args.budget) for o in optimizers for t in truths for s in range(args.first_seed, args.first_seed + args.seeds)]
    tasks.sort(key=lambda task: task[0] not in SLOW)  # slow optimizers first: the pool's tail stays short
    done = 0
    rows: list[dict] = []
    ctx = mp.get_context("fork")
    with ctx.Pool(args.jobs, initializer=_init_worker, initargs=(optimizers,)) as pool:
        for row in pool.imap_unordered(run_one, tasks):
            rows.append(row)
            done += 1
            print(
                f"[{done}/{len(tasks)} {time.perf_counter() - t_start:6.0f}s] {row['optimizer']:>10} {row['landscape']:<32} "
                f"seed {row['seed']}: to5%={row['to_5pct']} final_feasible={row['final_feasible']} "
                f"gap={row['final_gap_pct']} viol={row['slo_violations']} propose={row['propose_s_median']:.3f}s",
                flush=True,
            )
    wall_s = time.perf_counter() - t_start
    order = {o: i for i, o in enumerate(optimizers)}
    lorder = {t.landscape.name: i for i, t in enumerate(truths)}
    rows.sort(key=lambda r: (order[r["optimizer"]], lorder[r["landscape"]], r["seed"]))
    with (out_dir / f"{stem}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = summarize(rows)
    limit = 180.0 if args.quick else 1800.0
    cpu_est = sum(r["cpu_s"] for r in rows) / args.jobs
    checks = targets(summary, wall_s, cpu_est, limit)
    write_markdown(out_dir / f"{stem}.md", args, command, truths, rows, summary, checks, wall_s, (load0, os.getloadavg()[0]))
    write_plot(out_dir / f"{stem}.png", rows, args.budget, command)
    print((out_dir / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
