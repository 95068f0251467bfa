"""The daemon: restore leftovers, apply the stored best config (tune if none), re-tune on model updates.

Threads and who may do what:

- the main thread handles signals (SIGTERM/SIGINT: stop; SIGHUP: reload), polls the model files,
  sends the systemd watchdog and, on stop, waits for the worker;
- one worker thread owns the device (through ``LockedDevice``) and the history store: it runs
  jobs (start, model changed, reload) one at a time, and between jobs measures the applied config
  every ``monitor_interval_s`` (the serving loop);
- the control socket answers from the status snapshot and queues jobs; it never touches the device,
  so it keeps answering while a tune runs.

Tuning is ``history_tune.run_tune`` (the same ``Tuner`` as ``polythrottle tune``; warm-started from
the history of the previous model version). The best config is applied only after a tune; a tune
that fails or finds nothing feasible restores the device's own settings. Every apply validates the
whole config before the device writes anything.

"Inference keeps being served": on ``sim:``/``replay:`` devices the daemon's own measurements are the
inference. On a real board the application serving inference runs in its own process and keeps
running during a tune; it sees each candidate config for one measurement window (latency may exceed
the SLO for that window; ``polythrottle_slo_violations_total{phase="tuning"}`` counts those).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polythrottle.daemon.config import ConfigError, DaemonConfig, load_config
from polythrottle.daemon.device_lock import Cancelled, LockedDevice
from polythrottle.daemon.metrics import DaemonMetrics, co2_grams, power_of
from polythrottle.daemon.sdnotify import Notifier, watchdog_interval_s
from polythrottle.daemon.server import ControlServer
from polythrottle.daemon.statefile import pid_alive, read_state, write_state
from polythrottle.daemon.trust import check_workload, configured_model_file, is_user_workload
from polythrottle.daemon.watcher import ModelWatcher
from polythrottle.devices import DeviceOptions, open_device
from polythrottle.errors import BadInputError, PolyThrottleError, brief, clip
from polythrottle.fingerprint import fingerprint_files
from polythrottle.history import HistoryKey, HistoryStore, open_history
from polythrottle.history_tune import DEFAULT_MODEL_VERSION, run_tune, tune_key
from polythrottle.measure.measurement import Measurement
from polythrottle.space import Config
from polythrottle.tuner import Tuner, TuneRecord, TuneResult

log = logging.getLogger("polythrottle.daemon")

COMMANDS = ("status", "model-updated", "reload")
MAX_VERSION_CHARS = 200
STOP_TIMEOUT_S = 20.0
HEARTBEAT_S = 5.0
"""The idle worker wakes at least this often (its heartbeat)."""
STALL_S = 120.0
"""The systemd watchdog is fed only while the worker's heartbeat (a loop turn, a tune measurement, a
serving measurement) is younger than this: a hung device call gets the service killed and restarted
(the restart restores the saved originals)."""


@dataclass
class Job:
    """Work for the worker. kind: ``start``, ``model`` (re-check the model, re-tune if it changed),
    ``reload`` (``config`` given). ``id`` orders jobs (``status`` reports the last one done)."""

    id: int
    kind: str
    reason: str
    model_version: str | None = None
    model_files: list[str] | None = None
    force: bool = False
    config: DaemonConfig | None = None


@dataclass
class Prepared:
    """A config with its device opened and validated (nothing written yet)."""

    config: DaemonConfig
    device: LockedDevice
    key: HistoryKey
    tuned_knobs: list[str]


@dataclass
class Snapshot:
    """What ``status`` reports; changed only under ``Daemon._lock``."""

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


def device_options(cfg: DaemonConfig) -> DeviceOptions:
    """DeviceOptions from the config (fields this build's DeviceOptions lacks are left out)."""
    names = {f.name for f in dataclasses.fields(DeviceOptions)}
    values = {"workload": cfg.workload, "noise": cfg.noise, "seed": cfg.seed, "no_clock_control": cfg.no_clock_control,
              "state_dir": cfg.resolved_state_dir(), "percentile": cfg.percentile, "window_s": cfg.window_s,
              "repeats": cfg.repeats, "slo_metric": getattr(cfg, "slo_metric", None)}
    return DeviceOptions(**{k: v for k, v in values.items() if k in names})


def prepare(cfg: DaemonConfig, cancel: tuple[threading.Event, ...] = (),
            device: LockedDevice | None = None, *, import_workload: bool = True) -> Prepared:
    """Open (or reuse) the device for ``cfg`` and validate knobs, baseline and SLO against it. Writes
    nothing. ``import_workload=False`` (``daemon --check``): a user's workload file is checked, not
    imported, and the knobs only it would offer are not checked. Raises BadInputError (bad device,
    workload, knob, value, an untrusted workload file) or DeviceError."""
    check_workload(cfg)
    skip = not import_workload and is_user_workload(cfg.workload)
    opened = device is None
    if device is None:
        opts = device_options(cfg)
        if skip:
            opts = dataclasses.replace(opts, workload=None)
        device = LockedDevice(open_device(cfg.device, opts), *cancel)
    try:
        knobs, baseline = cfg.knobs, cfg.baseline
        if skip:
            offered = set(device.space().names)
            knobs = [k for k in knobs if k in offered] if knobs else None
            baseline = {k: v for k, v in baseline.items() if k in offered}
        tuner = Tuner(device, cfg.slo_ms, cfg.budget, optimizer="random", knobs=knobs or None,
                      baseline=baseline, seed=cfg.seed)  # validation only; "random" imports no torch
        key = tune_key(tuner, device)
    except BaseException:
        if opened:
            device.close()
        raise
    return Prepared(cfg, device, key, list(tuner.tuned_knobs))


def check_config(path: str | os.PathLike[str]) -> str:
    """``daemon --check``: validate the config file, its model files, and open the device with it (nothing
    is written). Returns the one-line summary; raises ConfigError / BadInputError / DeviceError."""
    cfg = load_config(path)
    missing = [str(f) for f in cfg.model_files if not f.exists()]
    if missing:
        raise ConfigError(f"{cfg.path}: model_files: {missing[0]} not found")
    prepared = prepare(cfg, import_workload=False)  # writes nothing, and imports no workload code it would run
    prepared.device.close()
    unchecked = ""
    if is_user_workload(cfg.workload):
        rest = [k for k in cfg.knobs or [] if k not in prepared.tuned_knobs]
        unchecked = (f"; workload {cfg.workload} found, not imported"
                     + (f" (knobs {', '.join(rest)} not checked)" if rest else ""))
    return (f"{cfg.path}: OK (device {prepared.device.identity().describe()}, knobs "
            f"{', '.join(prepared.tuned_knobs)}, SLO {cfg.slo_ms:g} ms, socket {cfg.socket}{unchecked})")


def _small_config(value: Any) -> dict[str, Any] | None:
    """A config read back from the state file, if it looks like one (else None: it is only reported)."""
    if not isinstance(value, dict) or len(value) > 64:
        return None
    ok = all(isinstance(k, str) and len(k) <= 64 and isinstance(v, (str, int, float)) and not isinstance(v, bool)
             and len(str(v)) <= 64 for k, v in value.items())
    return dict(value) if ok else None


def measurement_dict(m: Measurement, slo_ms: float, carbon_g_per_kwh: float) -> dict[str, Any]:
    power = power_of(m)
    return {
        "energy_j": m.energy_j,
        "latency_ms": m.latency_ms,
        "power_w": power,
        "meets_slo": m.latency_ms <= slo_ms,
        "co2_per_inference_g": co2_grams(m.energy_j, carbon_g_per_kwh),
        "measured_at": time.time(),
    }


class Daemon:
    """``Daemon(config).run()`` runs until SIGTERM/SIGINT and returns the exit code. See the module docstring."""

    def __init__(self, config: DaemonConfig, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._state_file_lock = threading.Lock()
        self._jobs_cv = threading.Condition(self._lock)
        self._jobs: list[Job] = []
        self._next_job_id = 1
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._wake = threading.Event()
        self._term: int | None = None
        self._hup = False
        self._fatal: PolyThrottleError | None = None
        self._restore_failed = False
        self.snap = Snapshot()
        self.prepared: Prepared | None = None
        self.metrics = DaemonMetrics(config.slo_ms, config.carbon, config.monitor_interval_s)
        self.metrics_port: int | None = None
        self.server: ControlServer | None = None
        self._ready_sent = False
        self._watcher: ModelWatcher | None = None
        self._watch_paths: list[Any] = []
        self._store: HistoryStore | None = None
        self.heartbeat = time.monotonic()
        self._interrupted: Job | None = None  # a job a reload cancelled: resumed if the reload is refused

    # ----- start-up (main thread) ----------------------------------------------------------------
    def open(self) -> None:
        """Everything that can refuse to start: device, knobs, history, metrics port, socket."""
        cfg = self.config
        self.prepared = prepare(cfg, (self._stop, self._cancel))
        open_history(cfg.history_path(), spool_dir=cfg.resolved_state_dir()).close()  # corrupt, unwritable: refuse now
        if cfg.metrics is not None:
            try:
                self.metrics_port = self.metrics.serve(cfg.metrics.address, cfg.metrics.port)
            except OSError as e:
                raise BadInputError(
                    f"{cfg.path}: metrics: cannot serve on {cfg.metrics.address}:{cfg.metrics.port} "
                    f"({e.strerror or e})") from None
        self.server = ControlServer(cfg.socket, self.handle_request, group=cfg.socket_group)
        self.server.start()
        self._set_watch(cfg)

    def _set_watch(self, cfg: DaemonConfig) -> None:
        self._watch_paths = list(cfg.model_files)
        self._watcher = ModelWatcher(self._watch_paths) if self._watch_paths else None

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._term = signum
        self._wake.set()

    def run(self) -> int:
        """Run until stopped; returns 0 after a clean stop (settings restored). Raises PolyThrottleError
        (one line) when it cannot start."""
        self.open()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.enqueue("start", "daemon started")
        worker = threading.Thread(target=self._worker, name="tuner", daemon=True)
        worker.start()
        wd = watchdog_interval_s()
        tick = min(x for x in (1.0, self.config.watch_interval_s, wd) if x)
        next_wd = 0.0
        next_watch = time.monotonic() + self.config.watch_interval_s
        while True:
            self._wake.wait(tick)
            self._wake.clear()
            if self._term is not None or self._fatal is not None or not worker.is_alive():
                break
            if self._hup:
                self._hup = False
                try:
                    self.reload("SIGHUP")
                except PolyThrottleError as e:  # the running config, and any tune under way, go on untouched
                    log.error("reload refused, keeping the running config: %s", e)
                    self._set(last_error=f"reload refused: {e}")
                except Exception as e:
                    log.exception("reload failed unexpectedly; keeping the running config")
                    self._set(last_error=f"reload refused: {type(e).__name__}: {clip(str(e), 200)}")
            now = time.monotonic()
            if self._watcher is not None and now >= next_watch:
                next_watch = now + self.config.watch_interval_s
                if self._watcher.poll():
                    missing = self._watcher.missing
                    if missing:
                        log.warning("model file %s is missing; keeping the applied config", missing[0])
                        self._set(last_error=f"model file {missing[0]} not found")
                    else:
                        self.enqueue("model", "model file changed")
            if wd and now >= next_wd and now - self.heartbeat < STALL_S:
                next_wd = now + wd
                self.notifier.watchdog()
        return self._shutdown(worker)

    def _shutdown(self, worker: threading.Thread) -> int:
        why = signal.Signals(self._term).name if self._term else "fatal error" if self._fatal else "worker ended"
        log.info("stopping (%s): restoring the original settings", why)
        self.notifier.send(STOPPING=1, STATUS="stopping: restoring the original settings")
        self._set(state="stopping")
        self._stop.set()
        self._cancel.set()
        with self._jobs_cv:
            self._jobs_cv.notify_all()
        worker.join(STOP_TIMEOUT_S)
        if worker.is_alive():  # stuck in a device call: restore from here once the device is free
            log.error("the worker did not stop within %gs; restoring from the main thread", STOP_TIMEOUT_S)
            self._final_restore()
        if self.server is not None:
            self.server.stop()
        self.metrics.stop()
        self._write_state()
        if self._fatal is not None:
            raise self._fatal
        return 1 if self._restore_failed else 0

    # ----- jobs ----------------------------------------------------------------------------------
    def enqueue(self, kind: str, reason: str, **fields: Any) -> int:
        """Queue a job; a queued ``model`` job absorbs a new one, a ``reload`` replaces everything queued."""
        with self._jobs_cv:
            if kind == "reload":
                self._jobs = [j for j in self._jobs if j.kind == "start"]
            elif kind == "model":
                for j in self._jobs:
                    if j.kind == "model":
                        j.reason, j.force = reason, j.force or fields.get("force", False)
                        if fields.get("model_version") or fields.get("model_files"):
                            j.model_version, j.model_files = fields.get("model_version"), fields.get("model_files")
                        return j.id
            job = Job(self._next_job_id, kind, reason, **fields)
            self._next_job_id += 1
            self._jobs.append(job)
            self._jobs_cv.notify_all()
            return job.id

    def _next_job(self, timeout: float) -> Job | None:
        with self._jobs_cv:
            if not self._jobs and not self._stop.is_set():
                self._jobs_cv.wait(timeout)
            return self._jobs.pop(0) if self._jobs and not self._stop.is_set() else None

    def _worker(self) -> None:
        try:
            self._store = open_history(self.config.history_path(), spool_dir=self.config.resolved_state_dir())
            next_serve = time.monotonic()
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                interval = self.config.monitor_interval_s
                wait = min(HEARTBEAT_S, max(0.0, next_serve - self.heartbeat)) if interval > 0 else HEARTBEAT_S
                job = self._next_job(wait)
                if self._stop.is_set():
                    break
                if job is None:
                    if interval > 0 and time.monotonic() >= next_serve:
                        self._serve_once()
                        next_serve = time.monotonic() + interval
                    continue
                self._cancel.clear()  # a cancel meant for the job before this one
                try:
                    self._run_job(job)
                    if job.kind != "reload":
                        self._interrupted = None
                except Cancelled:
                    log.info("%s interrupted", job.kind)
                    if job.kind != "reload":
                        self._interrupted = job
                except PolyThrottleError as e:
                    if job.kind == "start" and not self._ready_sent:
                        self._fatal = e
                        self._wake.set()
                        break
                    log.error("%s failed: %s", job.kind, e)
                    self._set(last_error=str(e), state="error")
                    self._restore_quietly()
                except Exception as e:  # a bug: never leave the board at a candidate config
                    log.exception("%s failed unexpectedly", job.kind)
                    if job.kind == "start" and not self._ready_sent:
                        self._fatal = PolyThrottleError(f"start-up failed: {type(e).__name__}: {e}")
                        self._wake.set()
                        break
                    self._set(last_error=f"{type(e).__name__}: {e}", state="error")
                    self._restore_quietly()
                with self._lock:
                    self.snap.last_job_done = max(self.snap.last_job_done, job.id)
        finally:
            self._final_restore()
            if self._store is not None:
                self._store.close()
            self._wake.set()

    def _run_job(self, job: Job) -> None:
        if job.kind == "start":
            self._recover()
            self._bring_up(job.reason, force=True)
        elif job.kind == "model":
            self._bring_up(job.reason, version=job.model_version, files=job.model_files, force=job.force)
        elif job.kind == "reload":
            assert job.config is not None
            self._reload_now(job.config)
        if not self._ready_sent:
            self._ready()

    def _ready(self) -> None:
        self.notifier.ready(self._status_line())
        self._ready_sent = True

    def _recover(self) -> None:
        """Restore whatever a previous run left applied (saved originals of a crashed process)."""
        assert self.prepared is not None
        prev = read_state(self.config.resolved_state_dir())  # a file anyone tampered with is only a hint
        # with no_clock_control nothing may be written, restores included (`polythrottle restore` can)
        restored = [] if self.config.no_clock_control else self.prepared.device.restore_saved()
        raw_pid = prev.get("pid") if prev is not None else None
        pid = raw_pid if isinstance(raw_pid, int) and not isinstance(raw_pid, bool) and raw_pid > 0 else None
        crashed = (prev is not None and prev.get("state") != "stopped" and pid != os.getpid()
                   and (pid is None or not pid_alive(pid)))
        if restored or crashed:
            left = prev.get("applied") if crashed and prev is not None else None
            info = {"pid": pid if crashed else None, "restored": restored,
                    "left_applied": _small_config(left)}
            log.warning("a previous run did not stop cleanly (pid %s); restored %d saved setting(s)",
                        info["pid"], len(restored))
            self._set(recovered=info)

    def _model_version(self, cfg: DaemonConfig) -> str:
        if cfg.model_files:
            return fingerprint_files(cfg.model_files)  # BadInputError naming a missing file
        return cfg.model_version or DEFAULT_MODEL_VERSION

    def _bring_up(self, reason: str, *, version: str | None = None, files: list[str] | None = None,
                  force: bool = False) -> None:
        """Apply the stored best config for the model version (given, else the fingerprint of ``files``,
        else of the configured model files); tune (warm if the history has a previous version) when
        there is none. Skipped when the version is the applied one (unless ``force``)."""
        p = self.prepared
        assert p is not None and self._store is not None
        cfg = p.config
        try:
            version = version or (fingerprint_files(files) if files else self._model_version(cfg))
        except BadInputError as e:
            log.warning("%s; waiting for it (nothing applied)", e)
            with self._lock:
                self.snap.state, self.snap.last_error = "waiting", str(e)
            if not self._ready_sent:
                self._ready()  # READY before `status` can say "waiting"
            self._write_state()
            return
        if not force and version == self.snap.model_version and self.snap.applied is not None:
            log.info("%s: model %s unchanged; nothing to do", reason, version)
            return
        best = self._store.best(p.key, model_version=version, slo_ms=cfg.slo_ms, unit=p.device.identity().unit)
        if best is not None:
            try:
                config = self._full_config(best.config)
            except BadInputError as e:
                log.warning("stored best config no longer valid (%s); tuning", e)
            else:
                p.device.apply(config)
                self._set(state="serving", model_version=version, applied=config, applied_source="history",
                          last_error=None,
                          current={"energy_j": best.energy_j, "latency_ms": best.latency_ms, "power_w": None,
                                   "meets_slo": best.latency_ms <= cfg.slo_ms, "measured_at": best.finished_at,
                                   "co2_per_inference_g": co2_grams(best.energy_j, cfg.carbon_intensity_g_per_kwh)})
                self.metrics.set_applied(config)
                self.metrics.show_current(best.energy_j, best.latency_ms)
                log.info("%s: applied the stored best config of model %s (tune %d): %s", reason, version,
                         best.tune_id, config)
                self.notifier.status(self._status_line())
                return
        warm = cfg.optimizer == "cbo" and bool(self._store.model_versions(p.key))
        self._tune("retune" if warm else "initial", version, reason)

    def _full_config(self, config: Config) -> Config:
        p = self.prepared
        assert p is not None
        full = dict(p.device.default_config())
        full.update(config)
        return p.device.space().normalize(full)

    def _tune(self, kind: str, version: str, reason: str) -> None:
        p = self.prepared
        assert p is not None and self._store is not None
        cfg = p.config
        budget = cfg.retune_budget if kind == "retune" else cfg.budget
        started = time.time()
        self._set(state="tuning", tuning={"kind": kind, "reason": reason, "model_version": version,
                                          "started_at": started, "measurements": 0, "budget": budget},
                  applied=None, applied_source=None)
        self.metrics.set_applied(None)
        self.metrics.tuning.set(1)
        log.info("%s: %s tune of model %s (budget %d)", reason, kind, version, budget)
        if not self._ready_sent:
            self._ready()
        self.notifier.status(self._status_line())

        def on_record(r: TuneRecord) -> None:
            self.heartbeat = time.monotonic()
            self.metrics.observe(r.measurement, cfg.slo_ms, "tuning")
            with self._lock:
                if self.snap.tuning is not None:
                    self.snap.tuning["measurements"] = r.step + 1
                if not r.feasible:
                    self.snap.violations["tuning"] += 1

        outcome = "failed"
        try:
            result = run_tune(p.device, cfg.slo_ms, budget, store=self._store, model_version=version,
                              warm_start=True, optimizer=cfg.optimizer, knobs=cfg.knobs, baseline=cfg.baseline,
                              seed=cfg.seed, on_record=on_record)
            outcome = "feasible" if result.best is not None else "infeasible"
        except Cancelled:
            outcome = "cancelled"
            raise
        finally:
            self.metrics.tuning.set(0)
            self.metrics.tune_finished(kind, outcome, None)
            if outcome in ("failed", "cancelled"):
                self._set(tuning=None)
        self._finish_tune(kind, version, reason, result, started)

    def _finish_tune(self, kind: str, version: str, reason: str, result: TuneResult, started: float) -> None:
        p = self.prepared
        assert p is not None
        cfg = p.config
        summary = {
            "kind": kind, "reason": reason, "model_version": version, "started_at": started,
            "finished_at": time.time(), "duration_s": round(time.time() - started, 3),
            "measurements": len(result.history), "budget": result.budget, "optimizer": result.optimizer,
            "feasible": result.feasible, "saving_pct": result.saving_pct, "stop_reason": result.stop_reason,
            "warm_start": result.extra.get("warm_start"), "history_tune_id": result.extra.get("history_tune_id"),
            "baseline": result.baseline.to_dict(), "best": None if result.best is None else result.best.to_dict(),
        }
        if result.saving_pct is not None:
            self.metrics.saving.set(result.saving_pct / 100.0)
        if result.best is None:
            p.device.restore()
            msg = (f"no config met the {cfg.slo_ms:g} ms SLO (lowest latency seen "
                   f"{result.lowest_latency_ms:.4g} ms); the device's own settings are restored")
            log.error("%s tune: %s", kind, msg)
            self._set(state="error", last_tune=summary, tuning=None, model_version=version, applied=None,
                      applied_source=None, last_error=msg, tunes=self.snap.tunes + 1)
            self.metrics.set_applied(None)
        else:
            config = self._full_config(result.best.config)
            p.device.apply(config)
            cur = {"energy_j": result.best.energy_j, "latency_ms": result.best.latency_ms, "power_w": None,
                   "meets_slo": result.best.latency_ms <= cfg.slo_ms, "measured_at": time.time(),
                   "co2_per_inference_g": co2_grams(result.best.energy_j, cfg.carbon_intensity_g_per_kwh)}
            self._set(state="serving", last_tune=summary, tuning=None, model_version=version, applied=config,
                      applied_source="tune", current=cur, last_error=None, tunes=self.snap.tunes + 1)
            self.metrics.set_applied(config)
            self.metrics.show_current(result.best.energy_j, result.best.latency_ms)
            log.info("%s tune done: %d measurements, saving %.1f%%, applied %s", kind, len(result.history),
                     result.saving_pct or 0.0, config)
        self.notifier.status(self._status_line())

    def _serve_once(self) -> None:
        """The serving loop: measure the applied config (the inference of sim devices)."""
        p = self.prepared
        if p is None or p.device.applied is None or self.config.monitor_interval_s <= 0:
            return
        try:
            m = p.device.measure()
        except Cancelled:
            return
        except PolyThrottleError as e:
            log.warning("measurement failed: %s", e)
            self._set(last_error=f"measurement failed: {e}")
            return
        cfg = p.config
        self.heartbeat = time.monotonic()
        self.metrics.observe(m, cfg.slo_ms, "serving")
        with self._lock:
            self.snap.current = measurement_dict(m, cfg.slo_ms, cfg.carbon_intensity_g_per_kwh)
            if m.latency_ms > cfg.slo_ms:
                self.snap.violations["serving"] += 1

    # ----- reload --------------------------------------------------------------------------------
    def reload(self, why: str) -> int:
        """Re-read the config file and check it (against the running device when it names the same one),
        then queue the switch. Raises ConfigError or another PolyThrottleError: the running config, and a
        tune under way, are left exactly as they are."""
        new = load_config(self.config.path)
        check_workload(new)
        old = self.prepared
        if old is not None and new.same_device(old.config):
            prepare(new, (self._stop, self._cancel), old.device)  # validation only; writes nothing
        log.info("reloading %s (%s)", new.path, why)
        self._cancel.set()  # a tune in progress is moot under a new config
        return self.enqueue("reload", why, config=new)

    def _reload_now(self, new: DaemonConfig) -> None:
        old = self.prepared
        assert old is not None
        self.notifier.send(RELOADING=1, STATUS="reloading the config",
                           MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        same = new.same_device(old.config)
        try:
            prepared = prepare(new, (self._stop, self._cancel), old.device if same else None)
        except PolyThrottleError as e:
            log.error("reload refused, keeping the running config: %s", e)
            interrupted, self._interrupted = self._interrupted, None
            if interrupted is not None:  # the reload cancelled it: put the device back, then resume
                log.info("resuming the %s job the refused reload interrupted", interrupted.kind)
                old.device.restore()
                self._set(applied=None, applied_source=None, tuning=None)
                self.metrics.set_applied(None)
                self._bring_up(f"reload refused; resuming ({interrupted.reason})", force=True)
            self._set(last_error=f"reload refused: {e}")
            self.notifier.send(READY=1, STATUS=self._status_line())
            return
        self._interrupted = None
        old.device.restore()
        if not same:
            old.device.close()
        self.prepared = prepared
        self.config = new
        self.metrics.set_slo(new.slo_ms)
        self.metrics.set_carbon(new.carbon)
        self.metrics.set_applied(None)
        self._set(applied=None, applied_source=None, model_version=None, state="starting")
        self._set_watch(new)
        self._bring_up("config reloaded", force=True)
        self.notifier.send(READY=1, STATUS=self._status_line())

    # ----- restore -------------------------------------------------------------------------------
    def _restore_quietly(self) -> None:
        p = self.prepared
        if p is None:
            return
        try:
            p.device.restore()
        except PolyThrottleError as e:
            log.error("restore failed: %s", e)
            self._restore_failed = True
        self._set(applied=None, applied_source=None)
        self.metrics.set_applied(None)

    def _final_restore(self) -> None:
        p = self.prepared
        if p is None:
            return
        with p.device.lock:
            if p.device.closed:
                return
            try:
                p.device.close()  # restores every value this process changed
                log.info("original settings restored")
            except PolyThrottleError as e:
                log.error("restore failed: %s", e)
                self._restore_failed = True
            self._set(applied=None, applied_source=None, state="stopped" if self._stop.is_set() else "error")
            self.metrics.set_applied(None)

    # ----- status and control requests -----------------------------------------------------------
    def _set(self, **changes: Any) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self.snap, k, v)
        self._write_state()

    def _write_state(self) -> None:
        s = self.status()
        keep = ("pid", "state", "config", "device", "model_version", "applied", "applied_source", "updated_at")
        try:
            with self._state_file_lock:
                write_state(self.config.resolved_state_dir(), {k: s.get(k) for k in keep})
        except OSError as e:
            log.warning("cannot write the daemon state file: %s", e)

    def _status_line(self) -> str:
        s = self.snap
        if s.state == "tuning" and s.tuning:
            return f"tuning ({s.tuning['kind']}, model {s.tuning['model_version']})"
        if s.state == "serving":
            return f"serving model {s.model_version} with {s.applied_source} config"
        return s.state + (f": {s.last_error}" if s.last_error else "")

    def status(self) -> dict[str, Any]:
        cfg = self.config
        with self._lock:
            s = dataclasses.replace(self.snap, violations=dict(self.snap.violations))
            queued = len(self._jobs)
            tuning = dict(s.tuning) if s.tuning else None
        return {
            "pid": os.getpid(),
            "state": s.state,
            "config": str(cfg.path),
            "device": cfg.device,
            "workload": cfg.workload,
            "slo_ms": cfg.slo_ms,
            "knobs": self.prepared.tuned_knobs if self.prepared else cfg.knobs,
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
            "jobs": {"queued": queued, "last_done": s.last_job_done},
            "socket": str(cfg.socket),
            "metrics_url": f"http://{cfg.metrics.address}:{self.metrics_port}/metrics"
            if cfg.metrics is not None and self.metrics_port else None,
            "carbon_intensity_g_per_kwh": cfg.carbon_intensity_g_per_kwh,
            "carbon": cfg.carbon.to_dict(),
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 3),
            "updated_at": time.time(),
        }

    def handle_request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request (runs in a socket thread; never touches the device)."""
        cmd = req["command"]
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "model-updated":
            version = req.get("model_version")
            if version is not None and (not isinstance(version, str) or not version.strip()):
                raise BadInputError("model_version must be a non-empty string")
            if version is not None and (len(version) > MAX_VERSION_CHARS or not version.isprintable()):
                raise BadInputError(f"model_version must be at most {MAX_VERSION_CHARS} printable characters")
            files = req.get("model_files")
            if files is not None and (not isinstance(files, list) or not files or len(files) > 1024
                                      or not all(isinstance(f, str) and 0 < len(f) <= 4096 for f in files)):
                raise BadInputError("model_files must be a non-empty list of paths")
            if files is not None:  # a client may say which of the configured files changed, never name others
                files = [str(configured_model_file(f, self.config.model_files)) for f in files]
            force = req.get("force", False)
            if not isinstance(force, bool):
                raise BadInputError(f"force must be true or false, got {brief(force, 20)}")
            if version is None:  # the worker hashes the files (large models take a while); check them now
                paths = [Path(f) for f in files] if files else self.config.model_files
                missing = [str(f) for f in paths if not f.exists()]
                if missing:
                    raise BadInputError(f"model file {missing[0]} not found")
                if not paths and not self.config.model_version:
                    raise BadInputError("no model_files in the daemon config; send a model_version")
            job = self.enqueue("model", "model-updated request", model_version=version,
                               model_files=None if version else files, force=force)
            return {"ok": True, "queued": "model", "job": job, "model_version": version}
        if cmd == "reload":
            return {"ok": True, "queued": "reload", "job": self.reload("reload request")}
        raise BadInputError(f"unknown command {brief(cmd, 40)}; expected one of: {', '.join(COMMANDS)}")


def setup_logging(debug: bool = False) -> None:
    """Log lines to stderr (the journal under systemd), without timestamps when journald adds them."""
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(levelname)s %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False


__all__ = ["COMMANDS", "Daemon", "check_config", "device_options", "prepare", "setup_logging"]
