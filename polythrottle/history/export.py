"""Write measurements (``HistoryStore.export``) as CSV or JSON, one row per measurement.

Columns: tune_id, measurement_id (the writer's client id, stable across databases), device, board,
unit, workload, model_version, space, slo_ms, step, role, config (JSON text in CSV, an object in JSON),
energy_j, latency_ms, energy_rel_std, latency_rel_std, measured_at (unix seconds), time (ISO 8601, UTC).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import IO, Any

from polythrottle.history.records import ExportedMeasurement

FORMATS = ("csv", "json")
COLUMNS = ("tune_id", "measurement_id", "device", "board", "unit", "workload", "model_version", "space", "slo_ms",
           "step", "role", "config", "energy_j", "latency_ms", "energy_rel_std", "latency_rel_std", "measured_at",
           "time")


def iso_utc(t: float) -> str:
    """Unix seconds as ISO 8601 in UTC (``2026-11-30T12:00:00.123456Z``)."""
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _record(m: ExportedMeasurement) -> dict[str, Any]:
    d = m.to_dict()
    d["time"] = iso_utc(m.measured_at)
    return {c: d[c] for c in COLUMNS}


def write_measurements(rows: Iterable[ExportedMeasurement], out: IO[str], fmt: str) -> int:
    """Write ``rows`` to ``out`` in ``fmt`` (csv: a header line then a line per row; json: one array of
    objects, streamed). Returns the number of rows."""
    n = 0
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(COLUMNS)
        for m in rows:
            r = _record(m)
            r["config"] = json.dumps(r["config"], sort_keys=True)
            w.writerow(["" if r[c] is None else r[c] for c in COLUMNS])
            n += 1
        return n
    if fmt != "json":
        raise ValueError(f"unknown format {fmt!r}")
    out.write("[")
    for m in rows:
        out.write(",\n" if n else "\n")
        out.write(json.dumps(_record(m), sort_keys=False))
        n += 1
    out.write("\n]\n" if n else "]\n")
    return n


__all__ = ["COLUMNS", "FORMATS", "iso_utc", "write_measurements"]
