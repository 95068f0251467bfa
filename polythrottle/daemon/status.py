"""What the daemon reports: the status snapshot, the state file and the Prometheus metrics, kept in step.

``DaemonStatus`` is changed by the worker (through the transitions below: a config applied, a tune
started, one of its measurements, a serving measurement, ...) and read by the control socket's threads
(``to_dict``), under one lock. Every change rewrites the state file (``statefile``: what is applied, for
``status`` when no daemon answers and for crash recovery) and moves the metrics with the snapshot, so
``status``, ``/metrics`` and the state file agree. ``current_numbers`` is the one place the "current"
numbers (energy, latency, power, SLO met, CO2 per inference) are built.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polythrottle.carbon import co2_grams
from polythrottle.daemon.config import DaemonConfig
from polythrottle.daemon.metrics import DaemonMetrics, host_port, power_of
from polythrottle.daemon.statefile import write_state
from polythrottle.errors import BadInputError
from polythrottle.measure.measurement import Measurement
from polythrottle.space import Config

if TYPE_CHECKING:
    from polythrottle.tuning.tuner import TuneResult

log = logging.getLogger("polythrottle.daemon")

STATE_FILE_KEYS = ("pid", "state", "config", "device", "model_version", "applied", "applied_source", "updated_at")
"""What the state file keeps of the status."""


def cannot_serve_metrics(cfg: DaemonConfig, e: OSError) -> BadInputError:
    """The one line (exit 2) for a metrics address/port that cannot be bound: the same at start and in ``--check``."""
    where = "?" if cfg.metrics is None else host_port(cfg.metrics.address, cfg.metrics.port)
    return BadInputError(f"{cfg.path}: metrics: cannot serve on {where} ({e.strerror or e})")


@dataclass
class Snapshot:
    """What ``status`` reports of the daemon's progress. ``state``: starting, waiting, tuning, serving,
    error, stopping, stopped."""

    state: str = "starting"
    model_version: str | None = None
    applied: Config | None = None
    applied_source: str | None = None
    current: dict[str, Any] | None = None
    last_tune: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None
    tunes: int = 0
    violations: dict[str, int] = field(default_factory=lambda: {"serving": 0, "tuning": 0})
    last_error: str | None = None
    recovered: dict[str, Any] | None = None
    last_job_done: int = 0
    last_job_failed: int = 0


def current_numbers(energy_j: float, latency_ms: float, *, slo_ms: float, carbon_g_per_kwh: float,
                    power_w: float | None = None, measured_at: float | None = None) -> dict[str, Any]:
    """The applied config's numbers as ``status`` shows them (``current``); ``measured_at`` defaults to now."""
    return {
        "energy_j": energy_j,
        "latency_ms": latency_ms,
        "power_w": power_w,
        "meets_slo": latency_ms <= slo_ms,
        "co2_per_inference_g": co2_grams(energy_j, carbon_g_per_kwh),
        "measured_at": time.time() if measured_at is None else measured_at,
    }


def tune_summary(kind: str, reason: str, model_version: str, result: TuneResult, started_at: float) -> dict[str, Any]:
    """A finished tune as ``status`` shows it (``last_tune``)."""
    now = time.time()
    return {
        "kind": kind, "reason": reason, "model_version": model_version, "started_at": started_at,
        "finished_at": now, "duration_s": round(now - started_at, 3),
        "measurements": len(result.history), "budget": result.budget, "optimizer": result.optimizer,
        "feasible": result.feasible, "saving_pct": result.saving_pct, "stop_reason": result.stop_reason,
        "warm_start": result.extra.get("warm_start"), "history_tune_id": result.extra.get("history_tune_id"),
        "baseline": result.baseline.to_dict(), "best": None if result.best is None else result.best.to_dict(),
    }


class DaemonStatus:
    """The snapshot, the state file and the metrics of one daemon. ``queued``: how many jobs wait."""

    def __init__(self, config: DaemonConfig, metrics: DaemonMetrics | None = None, *,
                 queued: Callable[[], int] = lambda: 0) -> None:
        self.config = config
        self.knobs: list[str] | None = list(config.knobs) if config.knobs else None
        self.metrics = metrics or DaemonMetrics(config.slo_ms, config.carbon, config.monitor_interval_s)
        self.metrics_port: int | None = None
        self.queued = queued
        self.started_at = time.time()
        self.snap = Snapshot()
        self._lock = threading.Lock()
        self._file_lock = threading.Lock()

    # ----- the config in use --------------------------------------------------------------------------
    def use_config(self, config: DaemonConfig, tuned_knobs: Sequence[str]) -> None:
        """The config (and the knobs it tunes on its device) from now on: SLO and carbon follow."""
        with self._lock:
            self.config, self.knobs = config, list(tuned_knobs)
        self.metrics.set_slo(config.slo_ms)
        self.metrics.set_carbon(config.carbon)

    def serve_metrics(self) -> None:
        """Serve ``/metrics`` where the config says (nothing when it says ``metrics: false``). Raises
        BadInputError when the address cannot be served."""
        cfg = self.config
        if cfg.metrics is None:
            return
        try:
            self.metrics_port = self.metrics.serve(cfg.metrics.address, cfg.metrics.port)
        except OSError as e:
            raise cannot_serve_metrics(cfg, e) from None

    def stop_metrics(self) -> None:
        self.metrics.stop()

    # ----- changes ------------------------------------------------------------------------------------
    def set(self, **changes: Any) -> None:
        """Change snapshot fields (names of ``Snapshot``) and rewrite the state file."""
        with self._lock:
            for k, v in changes.items():
                setattr(self.snap, k, v)
        self.write_file()

    def current(self, energy_j: float, latency_ms: float, *, power_w: float | None = None,
                measured_at: float | None = None) -> dict[str, Any]:
        """``current_numbers`` under the config in use."""
        return current_numbers(energy_j, latency_ms, slo_ms=self.config.slo_ms, power_w=power_w,
                               carbon_g_per_kwh=self.config.carbon_intensity_g_per_kwh, measured_at=measured_at)

    def applied(self, config: Config, source: str, model_version: str, *, energy_j: float, latency_ms: float,
                measured_at: float | None = None, **more: Any) -> None:
        """``config`` is applied (``source``: ``tune`` or ``history``) with these expected numbers: serving."""
        self.set(state="serving", model_version=model_version, applied=config, applied_source=source,
                 current=self.current(energy_j, latency_ms, measured_at=measured_at), last_error=None, **more)
        self.metrics.set_applied(config)
        self.metrics.show_current(energy_j, latency_ms)

    def cleared(self, **more: Any) -> None:
        """Nothing of ours is applied (the device is at its own settings)."""
        self.set(applied=None, applied_source=None, **more)
        self.metrics.set_applied(None)

    def tune_started(self, kind: str, reason: str, model_version: str, budget: int) -> None:
        self.set(state="tuning", applied=None, applied_source=None,
                 tuning={"kind": kind, "reason": reason, "model_version": model_version, "started_at": time.time(),
                         "measurements": 0, "budget": budget})
        self.metrics.set_applied(None)
        self.metrics.tuning.set(1)

    def tune_measured(self, step: int, m: Measurement, feasible: bool) -> None:
        """Measurement ``step`` (0-based) of the tune in progress."""
        self.metrics.observe(m, self.config.slo_ms, "tuning")
        with self._lock:
            if self.snap.tuning is not None:
                self.snap.tuning["measurements"] = step + 1
            if not feasible:
                self.snap.violations["tuning"] += 1

    def tune_ended(self, kind: str, outcome: str, saving_pct: float | None = None) -> None:
        """The tune ended (``feasible``, ``infeasible``, ``failed``, ``cancelled``; ``saving_pct`` against its
        baseline). A finished tune is recorded by the state change that follows (``last_tune``, ``tunes``)."""
        self.metrics.tuning.set(0)
        self.metrics.tune_finished(kind, outcome, saving_pct)
        if outcome in ("failed", "cancelled"):
            self.set(tuning=None)

    def served(self, m: Measurement) -> None:
        """A serving measurement of the applied config."""
        self.metrics.observe(m, self.config.slo_ms, "serving")
        cur = self.current(m.energy_j, m.latency_ms, power_w=power_of(m))
        with self._lock:
            self.snap.current = cur
            if m.latency_ms > self.config.slo_ms:
                self.snap.violations["serving"] += 1

    def job_done(self, job_id: int, *, failed: bool = False) -> None:
        """Job ``job_id`` is over; ``failed``: it was refused or failed (``jobs.last_failed`` says so)."""
        with self._lock:
            self.snap.last_job_done = max(self.snap.last_job_done, job_id)
            if failed:
                self.snap.last_job_failed = max(self.snap.last_job_failed, job_id)

    # ----- reading ------------------------------------------------------------------------------------
    def line(self) -> str:
        """One line for systemd's STATUS=."""
        with self._lock:
            s = self.snap
            if s.state == "tuning" and s.tuning:
                return f"tuning ({s.tuning['kind']}, model {s.tuning['model_version']})"
            if s.state == "serving":
                return f"serving model {s.model_version} with {s.applied_source} config"
            return s.state + (f": {s.last_error}" if s.last_error else "")

    def to_dict(self) -> dict[str, Any]:
        """Everything ``status`` answers (JSON-ready)."""
        with self._lock:
            cfg, knobs = self.config, self.knobs
            s = dataclasses.replace(self.snap, violations=dict(self.snap.violations))
            tuning = dict(s.tuning) if s.tuning else None
        return {
            "pid": os.getpid(),
            "state": s.state,
            "config": str(cfg.path),
            "device": cfg.device,
            "workload": cfg.workload,
            "slo_ms": cfg.slo_ms,
            "knobs": knobs,
            "model_version": s.model_version,
            "model_files": [str(f) for f in cfg.model_files],
            "applied": s.applied,
            "applied_source": s.applied_source,
            "current": s.current,
            "last_tune": s.last_tune,
            "tuning": tuning,
            "tunes": s.tunes,
            "slo_violations": s.violations,
            "last_error": s.last_error,
            "recovered": s.recovered,
            "jobs": {"queued": self.queued(), "last_done": s.last_job_done, "last_failed": s.last_job_failed},
            "socket": str(cfg.socket),
            "metrics_url": f"http://{host_port(cfg.metrics.address, self.metrics_port)}/metrics"
            if cfg.metrics is not None and self.metrics_port else None,
            "carbon_intensity_g_per_kwh": cfg.carbon_intensity_g_per_kwh,
            "carbon": cfg.carbon.to_dict(),
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 3),
            "updated_at": time.time(),
        }

    def write_file(self) -> None:
        """Rewrite the state file from the status (a failure is logged, never raised)."""
        s = self.to_dict()
        try:
            with self._file_lock:
                write_state(self.config.resolved_state_dir(), {k: s.get(k) for k in STATE_FILE_KEYS})
        except OSError as e:
            log.warning("cannot write the daemon state file: %s", e)


__all__ = ["STATE_FILE_KEYS", "DaemonStatus", "Snapshot", "cannot_serve_metrics", "current_numbers", "tune_summary"]
