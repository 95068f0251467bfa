"""Issue 17 benchmark (storage half): many units writing one history at once, and a database outage.

Part 1, concurrency: ``--writers`` processes (units) start together and each runs ``--tunes`` simulated
tunes of ``--measurements`` measurements, written through the real store code path as a unit does
(``open_history(url, spool_dir=...)``: a ``SpooledHistory`` for PostgreSQL, the plain SQLite store for
the embedded baseline): begin_tune, one add_measurement per measurement (one transaction each), then
finish_tune; no pause between writes (a stress far above a real tune, whose measurements take
seconds). Side by side in one run: one private PostgreSQL 15 server (default durability: fsync on,
synchronous_commit on) and one SQLite file (WAL, synchronous=FULL), ``--repeats`` times each on a
fresh database. Reported: measurement rows written, writes/s and measurement rows/s over the window
from the first write to the last, median and p99 latency of a write call, and lost / doubled rows,
counted by the writers' client ids (tune UUID:step) against what the writers made.

Part 2, cut-off units: the same writers (PostgreSQL only) pace their measurements ``--pace-s`` apart;
the server is stopped (``pg_ctl stop -m fast``) ``--cut-after-s`` after the start and started again
``--down-s`` later. Units keep writing to their local spools, then upload them on a later write (retry
every ``--retry-s``) or, for a unit that finished while the server was down, on the next ``sync()``
(what its next open or write does). Reported: measurements spooled, uploaded, lost and doubled.

The machine: 2 CPU cores shared by the server, all writers and other jobs (``nproc``).
Usage: nice -n 10 python experiments/fleet_concurrency.py [--writers 32] [--tunes 3] [--measurements 20]
       [--repeats 3] [--out experiments/results/fleet_concurrency.md]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polythrottle.history import HistoryError, HistoryKey, HistoryStore, open_history
from tests.pg import PgCluster, pg_available

KEY = HistoryKey("sim:jetson-agx-orin", "efficientnet-b0", "bench")


def _writer(idx: int, target: str, spool_dir: str, tunes: int, measurements: int, pace_s: float, start_at: float,
            retry_s: float, out: str) -> None:
    """One unit: wait for the common start, then write its tunes; dump latencies and counters as JSON."""
    while time.time() < start_at:
        time.sleep(0.001)
    unit = f"u{idx:02d}"
    lat: list[tuple[str, float]] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    h = open_history(target, spool_dir=spool_dir, retry_s=retry_s)  # default timeouts (10 s)
    open_s = time.perf_counter() - t0
    first = time.time()
    made: list[str] = []

    def timed(kind: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            r = fn(*a, **kw)
        except HistoryError as e:  # counted, not fatal: the run goes on (a tune would stop here)
            errors.append(str(e))
            return None
        lat.append((kind, time.perf_counter() - t))
        return r if r is not None else True

    for t in range(tunes):
        cid = f"{unit}-t{t}"
        tid = timed("begin", h.begin_tune, KEY, "v1", slo_ms=30.0, optimizer="cbo", knobs=["gpu_mhz", "emc_mhz"],
                    unit=unit, client_id=cid)
        if tid is None:
            continue
        for i in range(measurements):
            if pace_s:
                time.sleep(pace_s)
            cfg = {"gpu_mhz": 300.0 + 100 * (i % 8), "emc_mhz": 2133.0, "batch_size": 1 + i % 4}
            if timed("measure", h.add_measurement, tid, step=i, config=cfg, energy_j=0.2 + 0.01 * i + 0.001 * idx,
                     latency_ms=10.0 + i, role="baseline" if i == 0 else "explore", energy_rel_std=0.01):
                made.append(f"{cid}:{i}")
        timed("finish", h.finish_tune, tid, best_config={"gpu_mhz": 600.0}, best_energy_j=0.25, best_latency_ms=20.0,
              baseline_energy_j=0.3, stop_reason="budget")
    last = time.time()
    syncs = 0
    while getattr(h, "pending", lambda: 0)() and syncs < 600:  # a unit that finished offline: its next sync
        if not h.sync():
            time.sleep(0.1)
        syncs += 1
    doc = {"unit": unit, "first": first, "last": last, "open_s": open_s, "lat": lat, "made": made, "errors": errors,
           "spooled": getattr(h, "spooled", 0), "uploaded": getattr(h, "uploaded", 0),
           "pending": getattr(h, "pending", lambda: 0)()}
    h.close()
    Path(out).write_text(json.dumps(doc))


def _run(target: str, workdir: Path, args: argparse.Namespace, *, pace_s: float = 0.0, retry_s: float = 1.0,
         during: Any = None) -> dict[str, Any]:
    """All writers at once against ``target``; ``during(start_at)`` runs in this process meanwhile."""
    HistoryStore(target).close()  # schema created before the clock starts
    load_before = os.getloadavg()[0]
    ctx = multiprocessing.get_context("fork")  # writers inherit the imports: no interpreter start-up
    start_at = time.time() + 1.0
    procs = []
    for i in range(args.writers):
        out = workdir / f"w{i}.json"
        spool = workdir / f"spool{i}"
        procs.append(ctx.Process(target=_writer, args=(i, target, str(spool), args.tunes, args.measurements, pace_s,
                                                       start_at, retry_s, str(out))))
    for p in procs:
        p.start()
    if during is not None:
        during(start_at)
    for p in procs:
        p.join(timeout=1800)
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise SystemExit(f"{len(bad)} writers failed (exit codes {bad[:5]})")
    docs = [json.loads((workdir / f"w{i}.json").read_text()) for i in range(args.writers)]
    with HistoryStore(target) as s:
        trows, mrows = s.rows()
    counts = Counter(m.client_id for m in mrows)
    made = [cid for d in docs for cid in d["made"]]
    expected = set(made)
    lat = [x for d in docs for k, x in d["lat"]]  # successful write calls
    mlat = [x for d in docs for k, x in d["lat"] if k == "measure"]
    window = max(d["last"] for d in docs) - min(d["first"] for d in docs)
    return {
        "load_avg_1min_before": load_before,
        "rows": len(mrows), "expected_rows": len(made), "tunes": len(trows),
        "write_errors": sum(len(d["errors"]) for d in docs),
        "first_error": next((e for d in docs for e in d["errors"]), None),
        "lost": len(expected - set(counts)), "doubled": sum(c - 1 for c in counts.values() if c > 1),
        "foreign": len(set(counts) - expected), "unfinished_tunes": sum(1 for t in trows if t.status != "done"),
        "window_s": window, "writes": len(lat), "writes_per_s": len(lat) / window, "rows_per_s": len(made) / window,
        "open_s_max": max(d["open_s"] for d in docs),
        "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * _pct(lat, 99),
        **{f"{kind}_p50_ms": 1000 * statistics.median(xs) for kind, xs in _by_kind(docs).items()},
        **{f"{kind}_p99_ms": 1000 * _pct(xs, 99) for kind, xs in _by_kind(docs).items()},
        "load_avg_1min_after": os.getloadavg()[0],
        "measure_p99_ms": 1000 * _pct(mlat, 99), "max_ms": 1000 * max(lat),
        "open_s_median": statistics.median(d["open_s"] for d in docs),
        "spooled": sum(d["spooled"] for d in docs), "uploaded": sum(d["uploaded"] for d in docs),
        "pending": sum(d["pending"] for d in docs),
    }


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for d in docs:
        for kind, x in d["lat"]:
            out.setdefault(kind, []).append(x)
    return out


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]  # nearest rank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=32)
    ap.add_argument("--tunes", type=int, default=3, help="tunes per writer")
    ap.add_argument("--measurements", type=int, default=20, help="measurements per tune")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pace-s", type=float, default=0.15, help="part 2: seconds between a unit's measurements")
    ap.add_argument("--cut-after-s", type=float, default=2.0, help="part 2: stop the server this long after the start")
    ap.add_argument("--down-s", type=float, default=4.0, help="part 2: how long the server stays down")
    ap.add_argument("--retry-s", type=float, default=1.0, help="part 2: a spooling unit retries the server this often")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here (and .json beside it)")
    args = ap.parse_args()
    reason = pg_available()
    if reason:
        raise SystemExit(f"fleet_concurrency: {reason}")

    results: dict[str, list[dict[str, Any]]] = {"postgresql": [], "sqlite": [], "cutoff": []}
    base = Path(tempfile.mkdtemp(prefix="pt-fleet-bench-"))
    os.chmod(base, 0o755)  # the server runs as the postgres user when we are root
    cluster = PgCluster(settings={"max_connections": str(args.writers * 3 + 20)}, root=base)
    try:
        for rep in range(args.repeats):
            for backend in ("postgresql", "sqlite"):
                work = base / f"{backend}{rep}"
                work.mkdir()
                target = cluster.create_database(f"bench{rep}") if backend == "postgresql" else str(work / "h.sqlite")
                r = _run(target, work, args)
                results[backend].append(r)
                print(f"{backend} #{rep}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})}",
                      flush=True)
        for rep in range(args.repeats):
            work = base / f"cutoff{rep}"
            work.mkdir()
            target = cluster.create_database(f"cutoff{rep}")
            events: dict[str, float] = {}

            def outage(start_at: float, events: dict[str, float] = events) -> None:
                time.sleep(max(0.0, start_at + args.cut_after_s - time.time()))
                events["stop"] = time.time() - start_at
                cluster.stop("fast")
                time.sleep(args.down_s)
                cluster.start()
                events["start"] = time.time() - start_at

            r = _run(target, work, args, pace_s=args.pace_s, retry_s=args.retry_s, during=outage)
            r.update(stopped_at_s=events["stop"], started_at_s=events["start"])
            results["cutoff"].append(r)
            print(f"cutoff #{rep}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})}",
                  flush=True)
    finally:
        cluster.close()
        shutil.rmtree(base, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                                             "results": results}, indent=1) + "\n")
        args.out.write_text(_markdown(args, results))
    print(_markdown(args, results))


def _med(rs: list[dict[str, Any]], k: str) -> float:
    return statistics.median(r[k] for r in rs)


def _markdown(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                                check=False).stdout.strip()
    except OSError:
        commit = "?"
    n = args.writers * args.tunes * args.measurements
    lines = [
        "# Fleet history: concurrent writers and a database outage (issue 17, storage)",
        "",
        (f"Command: `nice -n 10 python experiments/fleet_concurrency.py --writers {args.writers} --tunes {args.tunes} "
        f"--measurements {args.measurements} --repeats {args.repeats} --pace-s {args.pace_s} --cut-after-s "
        f"{args.cut_after_s} --down-s {args.down_s} --retry-s {args.retry_s} --out {args.out}` at {commit}; "
        f"{os.cpu_count()} CPU cores shared by the server, the writers and other jobs."),
        "",
        (f"Part 1: {args.writers} writer processes at once, each {args.tunes} tunes x {args.measurements} measurements "
        f"({n} measurement rows, {args.writers * args.tunes * (args.measurements + 2)} write calls per run), no pause "
        "between writes; one transaction per write; default timeouts (a SQLite writer waits 10 s for the lock, then "
        "the write fails with `locked`: counted as a failed write, the run goes on). The window runs from the first "
        "write to the last (opening is not in it). Rows acknowledged: writes that returned; lost: acknowledged rows "
        "missing, doubled: rows stored twice, both by client id, summed over runs. Median over runs, each run's value "
        "in brackets."),
        "",
        ("| backend | rows written / acknowledged | lost | doubled | failed writes | writes/s | rows/s | "
        "add_measurement p50 / p99 ms | begin_tune p99 ms | finish_tune p99 ms | all writes p99 ms | "
        "open p50 s | load avg before / after |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, label in (("postgresql", "PostgreSQL 15 (1 server)"), ("sqlite", "SQLite file (WAL, sync FULL)")):
        rs = results[backend]
        if not rs:
            continue

        def cell(k: str, fmt: str = ".0f", rs: list[dict[str, Any]] = rs) -> str:
            return f"{_med(rs, k):{fmt}} [{', '.join(format(r[k], fmt) for r in rs)}]"

        lines.append(f"| {label} | {' / '.join(str(x) for x in (_med(rs, 'rows'), _med(rs, 'expected_rows')))} | "
                     f"{sum(r['lost'] for r in rs)} | {sum(r['doubled'] for r in rs)} | "
                     f"{sum(r['write_errors'] for r in rs)} | {cell('writes_per_s')} | {cell('rows_per_s')} | "
                     f"{_med(rs, 'measure_p50_ms'):.1f} / {cell('measure_p99_ms')} | {cell('begin_p99_ms')} | "
                     f"{cell('finish_p99_ms')} | {cell('p99_ms')} | {_med(rs, 'open_s_median'):.1f} | "
                     f"{_med(rs, 'load_avg_1min_before'):.1f} / {_med(rs, 'load_avg_1min_after'):.1f} |")
    rs = results["cutoff"]
    if rs:
        lines += [
            "",
            (f"Part 2: the same {args.writers} units on PostgreSQL, {args.pace_s:g} s between a unit's measurements; "
            f"the server stopped {args.cut_after_s:g} s after the start and started {args.down_s:g} s later "
            f"(units retry every {args.retry_s:g} s). Lost and doubled are summed over runs."),
            "",
            ("| run | stopped at s | back at s | measurements spooled | uploaded from spools | rows / acknowledged | "
            "lost | doubled | failed writes | unfinished tunes | left in spools | add_measurement p99 ms | load avg |"),
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for i, r in enumerate(rs):
            lines.append(f"| {i} | {r['stopped_at_s']:.1f} | {r['started_at_s']:.1f} | {r['spooled']} | {r['uploaded']} "
                         f"| {r['rows']} / {r['expected_rows']} | {r['lost']} | {r['doubled']} | {r['write_errors']} | "
                         f"{r['unfinished_tunes']} | {r['pending']} | {r['measure_p99_ms']:.0f} | "
                         f"{r['load_avg_1min_before']:.1f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
