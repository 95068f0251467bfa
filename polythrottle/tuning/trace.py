"""A tune's measurements in order, as the plots and the live view read them (no plotting here).

Loaded from a ``tune --json``/``--out`` result file, from a tune stored in the history database, or
built up measurement by measurement while tuning. A user's run has no ground truth, so a config is
*feasible* here when the mean latency of its measurements so far meets the SLO, and its energy is the
mean of its measurements: the same judgement of the measured data that a user would make.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polythrottle.errors import BadInputError, clip, first_line


@dataclass(frozen=True)
class TracePoint:
    """One measurement: ``step`` (0 = the first), the full config, energy per inference (J), latency (ms),
    ``role`` (``baseline``, ``explore`` or ``recheck``)."""

    step: int
    config: Mapping[str, Any]
    energy_j: float
    latency_ms: float
    role: str


@dataclass(frozen=True)
class ConfigStats:
    """A measured config: means over its ``measurements``; ``feasible``: mean latency <= SLO."""

    config: Mapping[str, Any]
    energy_j: float
    latency_ms: float
    measurements: int
    feasible: bool


def short_device(device: str) -> str:
    """``replay:/long/path/table.csv`` -> ``replay:table.csv``; other specs as they are."""
    scheme, sep, rest = device.partition(":")
    if sep and scheme == "replay":
        return f"replay:{Path(rest).name}"
    return device


def config_key(config: Mapping[str, Any]) -> str:
    return json.dumps({k: config[k] for k in sorted(config)}, sort_keys=True, default=str)


@dataclass
class TuneTrace:
    """Measurements of one tune. ``knobs``: the tuned knobs ([] = those whose value varies);
    ``pick``: the recommended config (None if nothing was feasible or it is unknown)."""

    slo_ms: float
    points: list[TracePoint] = field(default_factory=list)
    device: str = ""
    workload: str = ""
    knobs: list[str] = field(default_factory=list)
    pick: Mapping[str, Any] | None = None
    optimizer: str = ""

    # ----- reading ----------------------------------------------------------------------------
    def add(self, point: TracePoint) -> None:
        self.points.append(point)

    @property
    def baseline(self) -> TracePoint | None:
        return next((p for p in self.points if p.role == "baseline"), self.points[0] if self.points else None)

    def tuned_knobs(self) -> list[str]:
        """The knobs that were tuned: ``knobs`` when known, else those whose value varies."""
        if self.knobs:
            return list(self.knobs)
        if not self.points:
            return []
        names = list(self.points[0].config)
        varying = [n for n in names if len({str(p.config.get(n)) for p in self.points}) > 1]
        return varying or names

    def config_stats(self, upto: int | None = None) -> list[ConfigStats]:
        """Every config measured among the first ``upto`` measurements (all: None), first-measured first."""
        sums: dict[str, list[Any]] = {}
        for p in self.points[: upto if upto is not None else len(self.points)]:
            s = sums.setdefault(config_key(p.config), [p.config, 0.0, 0.0, 0])
            s[1] += p.energy_j
            s[2] += p.latency_ms
            s[3] += 1
        return [ConfigStats(c, e / n, lat / n, n, lat / n <= self.slo_ms) for c, e, lat, n in sums.values()]

    def stats_of(self, config: Mapping[str, Any] | None) -> ConfigStats | None:
        if config is None:
            return None
        key = config_key(config)
        return next((s for s in self.config_stats() if config_key(s.config) == key), None)

    def best(self, upto: int | None = None) -> ConfigStats | None:
        """The lowest-energy feasible config among the first ``upto`` measurements (None: none yet)."""
        feasible = [s for s in self.config_stats(upto) if s.feasible]
        return min(feasible, key=lambda s: s.energy_j) if feasible else None

    def best_so_far(self) -> list[float | None]:
        """After each measurement, the energy (J) of ``best``: the curve a convergence plot draws. It can
        rise when a recheck shows that the config believed best is over the SLO on average."""
        out = []
        for i in range(1, len(self.points) + 1):
            b = self.best(i)
            out.append(None if b is None else b.energy_j)
        return out

    def pareto_front(self) -> list[ConfigStats]:
        """Configs no other measured config beats on both energy and latency, fastest first."""
        front: list[ConfigStats] = []
        for s in sorted(self.config_stats(), key=lambda s: (s.latency_ms, s.energy_j)):
            if not front or s.energy_j < front[-1].energy_j:
                front.append(s)
        return front

    # ----- loading ----------------------------------------------------------------------------
    @classmethod
    def from_result(cls, doc: Any, *, name: str = "result") -> TuneTrace:
        """From the JSON object ``tune --json`` prints (or ``--out`` writes). Raises BadInputError if
        ``doc`` is not one (``name`` is used in the message)."""
        if not isinstance(doc, dict) or not isinstance(doc.get("history"), list) or "slo_ms" not in doc:
            raise BadInputError(f"{name}: not a PolyThrottle tune result (expected the JSON of `tune --json` "
                                "with slo_ms and history)")
        try:
            points = [TracePoint(int(h.get("step", i)), dict(h["config"]), float(h["energy_j"]),
                                 float(h["latency_ms"]), str(h.get("role") or ("baseline" if i == 0 else "explore")))
                      for i, h in enumerate(doc["history"])]
            slo_ms = float(doc["slo_ms"])
        except (KeyError, TypeError, ValueError) as e:
            raise BadInputError(f"{name}: malformed measurement in history ({type(e).__name__}: {e})") from None
        _check(points, slo_ms, name)
        best = doc.get("best")
        info = doc.get("device_info") or {}
        return cls(slo_ms=slo_ms, points=points, device=str(doc.get("device") or info.get("name") or ""),
                   workload=str(doc.get("workload") or ""), knobs=list(doc.get("knobs") or []),
                   pick=dict(best["config"]) if isinstance(best, dict) and "config" in best else None,
                   optimizer=str(doc.get("optimizer") or ""))

    @classmethod
    def load_result(cls, path: str | Path) -> TuneTrace:
        """Read a result file. Raises BadInputError (missing, unreadable, not JSON, not a result)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BadInputError(f"{p}: result file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise BadInputError(f"{p}: cannot read ({e})") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadInputError(f"{p}: not JSON ({e.msg} at line {e.lineno})") from None
        except RecursionError:  # said "error: RecursionError: maximum recursion depth exceeded ...", exit 1
            raise BadInputError(f"{p}: not JSON (nested too deeply)") from None
        except ValueError as e:  # an integer over 4300 digits: said "error: ValueError: Exceeds the limit ...", exit 1
            raise BadInputError(f"{p}: not JSON ({clip(first_line(e), 100)})") from None
        return cls.from_result(doc, name=str(p))

    @classmethod
    def from_history(cls, store: Any, tune_id: int | None = None) -> TuneTrace:
        """Tune ``tune_id`` (None: the latest) of a history store, through its public ``tunes`` and ``tune``.
        Raises HistoryError (no such tune) or BadInputError (no measurements)."""
        from polythrottle.history import HistoryError

        where = getattr(store, "url", store)  # where it is (password masked), not the object's repr
        if tune_id is None:
            latest = store.tunes(limit=1)
            if not latest:
                raise HistoryError(f"history {where}: no tune stored yet")
            tune_id = latest[0].id
        got = store.tune(tune_id)
        if got is None:
            raise HistoryError(f"history {where} has no tune {tune_id}")
        tune, ms = got
        points = [TracePoint(m.step, dict(m.config), m.energy_j, m.latency_ms, m.role) for m in ms]
        _check(points, tune.slo_ms, f"tune {tune.id}")
        return cls(slo_ms=tune.slo_ms, points=points, device=tune.key.device, workload=tune.key.workload,
                   knobs=list(tune.knobs), pick=tune.best_config, optimizer=tune.optimizer)


def _check(points: Sequence[TracePoint], slo_ms: float, name: str) -> None:
    if not points:
        raise BadInputError(f"{name}: no measurements to plot")
    if not (math.isfinite(slo_ms) and slo_ms > 0):
        raise BadInputError(f"{name}: slo_ms must be a positive number, got {slo_ms}")
    for p in points:
        if not (math.isfinite(p.energy_j) and p.energy_j > 0 and math.isfinite(p.latency_ms) and p.latency_ms > 0):
            raise BadInputError(f"{name}: measurement {p.step} has energy_j={p.energy_j}, latency_ms={p.latency_ms}")


__all__ = ["ConfigStats", "TracePoint", "TuneTrace", "config_key", "short_device"]
