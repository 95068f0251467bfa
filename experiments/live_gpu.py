"""Live measurements on a real NVIDIA GPU with software knobs only (never changes a hardware setting).

Subcommands:
  profile  exhaustive sweep of the software knobs of a workload -> replay table CSV (knobs, energy_j,
           latency_ms, throughput_ips, power_w) + a JSON of every measurement with its spread and
           the counter-vs-integrated-power cross-check of each window.
  spread   measure the same configs several times, interleaved (each time a fresh runner), to compare
           the spread between measurements with the standard error each measurement reports.
  report   (no GPU) join a table, tune JSONs and spread JSONs into a markdown report.

Examples (experiments/live_gpu.sh runs the whole set):
  python experiments/live_gpu.py profile --workload torchvision:resnet50 --knobs batch_size,precision,cuda_graphs \
      --table experiments/results/h100_resnet50_table.csv --details experiments/results/h100_resnet50_profile.json
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polythrottle.space import parse_assignments  # noqa: E402


def open_gpu(args):
    from polythrottle.devices import DeviceOptions
    from polythrottle.devices.nvml import open_device
    from polythrottle.energy.nvml import NvmlEnergyMeter
    from polythrottle.measure.harness import HarnessSettings

    settings = HarnessSettings(window_s=args.window_s, repeats=args.repeats, percentile=args.percentile)
    dev = open_device(str(args.index), DeviceOptions(workload=args.workload, no_clock_control=True), harness=settings)
    if args.cross_check:
        dev.measurer.meter.close()
        dev.measurer.meter = NvmlEnergyMeter(dev.control.handle, cross_check=True,
                                             sample_interval_s=args.sample_ms / 1000)
    return dev


def versions(dev) -> dict:
    import importlib.metadata as md

    import pynvml
    import torch

    out = dict(dev.info().details)
    out.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
               cuda_driver_api=pynvml.nvmlSystemGetCudaDriverVersion_v2())
    for pkg in ("torchvision", "nvidia-ml-py", "botorch", "gpytorch", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def row_of(cfg: dict, m) -> dict:
    return {"config": cfg, **m.to_dict()}


def cmd_profile(args) -> None:
    dev = open_gpu(args)
    out: dict = {"versions": versions(dev), "settings": vars(args) | {"table": str(args.table), "details": str(args.details)},
                 "rows": []}
    try:
        space = dev.space()
        knobs = args.knobs.split(",") if args.knobs else space.names
        fixed = dev.default_config() | parse_assignments(args.fixed)
        if args.only:  # an explicit list of configs instead of the whole product
            configs = [space.normalize(fixed | parse_assignments(c)) for c in args.only]
        else:
            sub = space.restrict(knobs, fixed)
            configs = [space.normalize(fixed | sub.config(i)) for i in range(len(sub))]
        random.Random(args.seed).shuffle(configs)  # no drift confounded with a knob's order
        print(f"profiling {len(configs)} configs of {args.workload} over {','.join(knobs)}", file=sys.stderr)
        args.table.parent.mkdir(parents=True, exist_ok=True)
        with args.table.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(knobs + ["energy_j", "latency_ms", "throughput_ips", "power_w"])
            for n, cfg in enumerate(configs, 1):
                t0 = time.perf_counter()
                try:
                    dev.apply(cfg)
                    m = dev.measure()
                except Exception as e:  # noqa: BLE001 - record and go on (e.g. out of memory)
                    out["rows"].append({"config": cfg, "error": str(e)})
                    print(f"[{n}/{len(configs)}] {cfg}: {e}", file=sys.stderr)
                    continue
                w.writerow([cfg[k] for k in knobs] + [f"{m.energy_j:.6g}", f"{m.latency_ms:.6g}",
                                                      f"{m.throughput_ips:.6g}", f"{m.power_w:.6g}"])
                f.flush()
                out["rows"].append(row_of(cfg, m) | {"wall_s": time.perf_counter() - t0})
                x = m.extra.get("counter_vs_power")
                print(f"[{n}/{len(configs)}] {cfg} {m.energy_j * 1e3:.1f} mJ {m.latency_ms:.2f} ms"
                      + (f" counter/power {x:.4f}" if x else ""), file=sys.stderr, flush=True)
                args.details.write_text(json.dumps(out, indent=1) + "\n")
    finally:
        dev.close()
    args.details.write_text(json.dumps(out, indent=1) + "\n")


def cmd_spread(args) -> None:
    dev = open_gpu(args)
    configs = [dev.space().normalize(dev.default_config() | parse_assignments(c)) for c in args.config]
    out: dict = {"versions": versions(dev), "settings": vars(args) | {"out": str(args.out)}, "rows": []}
    try:
        for r in range(args.times):
            for cfg in configs:  # interleaved: every measurement builds a fresh runner
                dev.apply(cfg)
                m = dev.measure()
                out["rows"].append(row_of(cfg, m) | {"round": r})
                print(f"round {r} {cfg} {m.energy_j * 1e3:.2f} mJ {m.latency_ms:.3f} ms", file=sys.stderr, flush=True)
                args.out.write_text(json.dumps(out, indent=1) + "\n")
                dev.measurer.workload.close()  # force a rebuild (cudnn autotuning, graph capture) next time
    finally:
        dev.close()


# ----- report (no GPU) ----------------------------------------------------------------------------
def read_table(path: Path) -> list[dict]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("energy_j", "latency_ms", "throughput_ips", "power_w"):
            r[k] = float(r[k])
    return rows


def cfg_key(cfg: dict, knobs: list[str]) -> tuple:
    return tuple(str(cfg[k]) for k in knobs)


def fmt_cfg(cfg: dict, knobs: list[str]) -> str:
    return ", ".join(f"{k}={cfg[k]}" for k in knobs)


def report_workload(name: str, table: Path, details: Path, tunes: list[Path], lines: list[str]) -> None:
    rows = read_table(table)
    knobs = [k for k in rows[0] if k not in ("energy_j", "latency_ms", "throughput_ips", "power_w")]
    by_key = {cfg_key(r, knobs): r for r in rows}
    det = json.loads(details.read_text())
    ratios = [r["extra"]["counter_vs_power"] for r in det["rows"] if "extra" in r and "counter_vs_power" in r["extra"]]
    within = [r["energy_rel_std"] for r in det["rows"] if r.get("energy_rel_std") is not None]
    lat_within = [r["latency_rel_std"] for r in det["rows"] if r.get("latency_rel_std") is not None]
    errors = [r for r in det["rows"] if "error" in r]
    base = min((r for r in rows if r["precision"] == "fp32" and int(r["batch_size"]) == min(int(x["batch_size"]) for x in rows)
                and r.get("cuda_graphs", "off") == "off"), key=lambda r: r["energy_j"])
    best_all = min(rows, key=lambda r: r["energy_j"])
    lines += [f"## {name}", "",
              f"Table: `{table.name}` ({len(rows)} configs over "
              f"{', '.join(knobs)}; {len(errors)} failed). Windows: {det['settings']['window_s']} s x "
              f"{det['settings']['repeats']} per config, latency = p{det['settings']['percentile']:g} per batch.", "",
              f"- Baseline (fp32, batch {base['batch_size']}, no CUDA graphs): {base['energy_j'] * 1e3:.1f} mJ/inference, "
              f"{base['latency_ms']:.2f} ms.",
              f"- Lowest energy with no SLO: {fmt_cfg(best_all, knobs)}: {best_all['energy_j'] * 1e3:.1f} mJ/inference "
              f"({best_all['latency_ms']:.2f} ms), {100 * (1 - best_all['energy_j'] / base['energy_j']):.1f}% below baseline.",
              ""]
    if ratios:
        dev = [abs(x - 1) for x in ratios]
        lines.append(f"- Counter vs integrated instantaneous power (NVML_FI_DEV_POWER_INSTANT every 20 ms) over the same "
                     f"windows, {len(ratios)} configs: ratio median {statistics.median(ratios):.4f}, range "
                     f"{min(ratios):.4f}-{max(ratios):.4f}, max |deviation| {100 * max(dev):.2f}% "
                     f"({'all within 3%' if max(dev) <= 0.03 else 'NOT all within 3%'}).")
    if within:
        lines.append(f"- Reported standard error of one measurement (windows of one call): energy median "
                     f"{100 * statistics.median(within):.2f}% (max {100 * max(within):.2f}%), latency median "
                     f"{100 * statistics.median(lat_within):.2f}% (max {100 * max(lat_within):.2f}%).")
    lines.append("")
    for tpath in tunes:
        t = json.loads(tpath.read_text())
        slo = t["slo_ms"]
        feas = [r for r in rows if r["latency_ms"] <= slo]
        opt = min(feas, key=lambda r: r["energy_j"]) if feas else None
        lines += [f"### tune, SLO {slo:g} ms (`{tpath.name}`)", ""]
        if opt is None:
            lines += ["No config of the table meets this SLO.", ""]
            continue
        lines.append(f"- Table's best feasible: {fmt_cfg(opt, knobs)}: {opt['energy_j'] * 1e3:.2f} mJ, "
                     f"{opt['latency_ms']:.2f} ms; {100 * (1 - opt['energy_j'] / base['energy_j']):.1f}% below baseline.")
        if t.get("best"):
            bc = t["best"]["config"]
            trow = by_key.get(cfg_key(bc, knobs))
            gap = 100 * (trow["energy_j"] / opt["energy_j"] - 1) if trow else math.nan
            first = next((r["step"] + 1 for r in t["history"]
                          if (x := by_key.get(cfg_key(r["config"], knobs))) and x["energy_j"] <= 1.05 * opt["energy_j"]
                          and x["latency_ms"] <= slo), None)
            lines += [
                f"- Recommended after {t['measurements']} measurements: {fmt_cfg(bc, knobs)}: tune measured "
                f"{t['best']['energy_j'] * 1e3:.2f} mJ, {t['best']['latency_ms']:.2f} ms; the table has "
                + (f"{trow['energy_j'] * 1e3:.2f} mJ, {trow['latency_ms']:.2f} ms: **{gap:+.1f}%** vs the table's best feasible "
                   f"({'within 5%' if gap <= 5 else 'NOT within 5%'}; {'feasible' if trow['latency_ms'] <= slo else 'INFEASIBLE'} "
                   "in the table)." if trow else "no row for it."),
                f"- Saving vs its own baseline measurement (fp32, batch 1, no graphs): **{t['saving_pct']:.1f}%**; "
                f"vs the table's baseline row: {100 * (1 - (trow or t['best'])['energy_j'] / base['energy_j']):.1f}%.",
                f"- First measured config within 5% of the table's best feasible (per the table): measurement "
                f"{first} of {t['measurements']}. Stop: {t['stop_reason']}.",
            ]
        else:
            lines.append("- The tune found nothing feasible.")
        lines.append("")
    report_between(rows, knobs, det, tunes, lines)


def report_between(rows: list[dict], knobs: list[str], det: dict, tunes: list[Path], lines: list[str]) -> None:
    """The same configs measured by the tunes and by the profile (separate processes, minutes apart):
    how far apart they are, against the standard error each measurement reported."""
    by_key = {cfg_key(r, knobs): r for r in rows}
    se = {cfg_key(r["config"], knobs): r for r in det["rows"] if "energy_j" in r}
    groups: dict[str, list[tuple[float, float, float, float]]] = {}
    for tpath in tunes:
        for h in json.loads(tpath.read_text())["history"]:
            k = cfg_key(h["config"], knobs)
            if k in by_key and k in se:
                g = f"cuda_graphs={h['config'].get('cuda_graphs', '-')}"
                groups.setdefault(g, []).append((math.log(h["energy_j"] / by_key[k]["energy_j"]),
                                                 math.log(h["latency_ms"] / by_key[k]["latency_ms"]),
                                                 se[k].get("energy_rel_std") or 0, se[k].get("latency_rel_std") or 0))
    if not groups:
        return
    lines += ["Tune measurements vs the table's measurement of the same config (separate processes): rms of "
              "log(tune / table), against the median standard error the table's measurements reported.", "",
              "| configs | pairs | energy rms diff | energy reported SE | latency rms diff | latency reported SE |",
              "|---|---|---|---|---|---|"]
    rms = lambda xs: math.sqrt(sum(x * x for x in xs) / len(xs))  # noqa: E731
    for g, xs in sorted(groups.items()):
        lines.append(f"| {g} | {len(xs)} | {100 * rms([x[0] for x in xs]):.1f}% | "
                     f"{100 * statistics.median(x[2] for x in xs):.2f}% | {100 * rms([x[1] for x in xs]):.1f}% | "
                     f"{100 * statistics.median(x[3] for x in xs):.2f}% |")
    lines.append("")


def report_spread(path: Path, lines: list[str]) -> None:
    d = json.loads(path.read_text())
    groups: dict[str, list[dict]] = {}
    for r in d["rows"]:
        groups.setdefault(json.dumps(r["config"], sort_keys=True), []).append(r)
    lines += [f"### Spread of repeated measurements (`{path.name}`)", "",
              "Each config measured several times, interleaved with the others (a fresh runner each time: "
              "new cudnn autotuning, new CUDA graph).", "",
              "| config | n | energy mean (mJ) | between-measurement rel. std | reported rel. SE (median) "
              "| latency mean (ms) | between rel. std | reported rel. SE (median) |", "|---|---|---|---|---|---|---|---|"]
    for key, rs in groups.items():
        e = [r["energy_j"] for r in rs]
        lat = [r["latency_ms"] for r in rs]
        se_e = statistics.median(r.get("energy_rel_std") or 0 for r in rs)
        se_l = statistics.median(r.get("latency_rel_std") or 0 for r in rs)
        cfg = json.loads(key)
        lines.append(f"| {', '.join(f'{k}={v}' for k, v in cfg.items())} | {len(rs)} | {1e3 * statistics.mean(e):.2f} | "
                     f"{100 * statistics.stdev(e) / statistics.mean(e):.2f}% | {100 * se_e:.2f}% | "
                     f"{statistics.mean(lat):.3f} | {100 * statistics.stdev(lat) / statistics.mean(lat):.2f}% | {100 * se_l:.2f}% |")
    lines.append("")


def slo_rule(rows: list[dict]) -> float:
    """The SLO used for a workload's tune: half the latency of its lowest-energy config (2 significant
    digits), so that the unconstrained optimum is infeasible and the problem is not trivial."""
    best = min(rows, key=lambda r: r["energy_j"])
    return float(f"{0.5 * best['latency_ms']:.2g}")


def cmd_slo(args) -> None:
    print(slo_rule(read_table(args.table)))


def report_crosscheck(path: Path, lines: list[str]) -> None:
    d = json.loads(path.read_text())
    ms = d["settings"].get("sample_ms", 20)
    lines += [f"### Counter vs integrated power, sampled every {ms:g} ms (`{path.name}`)", "",
              "| config | power (W) | counter / integrated power |", "|---|---|---|"]
    for r in d["rows"]:
        if "extra" in r:
            lines.append(f"| {', '.join(f'{k}={v}' for k, v in r['config'].items())} | {r['power_w']:.0f} | "
                         f"{r['extra']['counter_vs_power']:.4f} |")
    lines.append("")


def report_pairs(path: Path, knob: str, lines: list[str]) -> None:
    """Side by side: each config with ``knob`` off and on (energy, latency)."""
    rows = read_table(path)
    knobs = [k for k in rows[0] if k not in ("energy_j", "latency_ms", "throughput_ips", "power_w")]
    others = [k for k in knobs if k != knob]
    pairs: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        pairs.setdefault(tuple(r[k] for k in others), {})[r[knob]] = r
    lines += [f"### {knob} off vs on (`{path.name}`)", "",
              f"| {', '.join(others)} | off: mJ, ms | on: mJ, ms | energy change |", "|---|---|---|---|"]
    for key, pr in sorted(pairs.items(), key=lambda kv: (int(kv[0][0]), kv[0][1:])):
        if "off" in pr and "on" in pr:
            a, b = pr["off"], pr["on"]
            lines.append(f"| {', '.join(key)} | {a['energy_j'] * 1e3:.1f}, {a['latency_ms']:.2f} | "
                         f"{b['energy_j'] * 1e3:.1f}, {b['latency_ms']:.2f} | "
                         f"{100 * (b['energy_j'] / a['energy_j'] - 1):+.1f}% |")
    lines.append("")


def cmd_report(args) -> None:
    lines: list[str] = []
    for spec in args.workload:
        name, table, details, *tunes = spec.split(",")
        report_workload(name, Path(table), Path(details), [Path(t) for t in tunes if t], lines)
    for s in args.spread or []:
        report_spread(Path(s), lines)
    for c in args.crosscheck or []:
        report_crosscheck(Path(c), lines)
    for spec in args.pairs or []:
        knob, path = spec.split(",")
        report_pairs(Path(path), knob, lines)
    text = "\n".join(lines)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("profile", "spread"):
        p = sub.add_parser(name)
        p.add_argument("--index", type=int, default=0)
        p.add_argument("--workload", required=True)
        p.add_argument("--window-s", type=float, default=2.0)
        p.add_argument("--repeats", type=int, default=2)
        p.add_argument("--percentile", type=float, default=99.0)
        p.add_argument("--cross-check", action=argparse.BooleanOptionalAction, default=True)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--sample-ms", type=float, default=20.0, help="power sampling period of the cross-check")
    p = sub.choices["profile"]
    p.add_argument("--knobs", default=None, help="knobs swept (default all software knobs)")
    p.add_argument("--fixed", action="append", default=None, help="KNOB=V,... for the knobs not swept")
    p.add_argument("--only", action="append", default=None, help="KNOB=V,...: measure only these configs")
    p.add_argument("--table", type=Path, required=True)
    p.add_argument("--details", type=Path, required=True)
    p = sub.choices["spread"]
    p.add_argument("--config", action="append", required=True, help="KNOB=V,... (repeatable)")
    p.add_argument("--times", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("slo", help="print the SLO rule's value for a table")
    p.add_argument("--table", type=Path, required=True)
    p = sub.add_parser("report")
    p.add_argument("--workload", action="append", required=True, help="NAME,TABLE.csv,DETAILS.json[,TUNE.json...]")
    p.add_argument("--spread", action="append", default=None)
    p.add_argument("--crosscheck", action="append", default=None, help="profile JSON with cross-check ratios")
    p.add_argument("--pairs", action="append", default=None, help="KNOB,TABLE.csv: the knob off vs on")
    p.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    {"profile": cmd_profile, "spread": cmd_spread, "slo": cmd_slo, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
