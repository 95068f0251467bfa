"""What the daemon does to the device, one job at a time: bring-up, tune, model change, reload, restore, recover.

``Controller`` is synchronous: the supervisor's worker thread calls it, and tests call it directly on
a sim device with a real history file. It owns the device (through ``LockedDevice``: serialized, and
cancelled by the ``stop``/``cancel`` events) and the history store, and reports through ``DaemonStatus``.

- bring-up: apply the stored best config for this model version and unit; tune when there is none
  (warm-started from the previous version's measurements when the history has some, else cold);
- only a finished tune's best config is applied; a tune that fails or finds nothing feasible restores
  the device's own settings; every apply validates the whole config before the device writes anything;
- a reload is validated before it cancels anything (``check_reload``); a config refused once the device
  is opened puts the device back and resumes the job the reload interrupted (never left mid-tune);
- ``recover`` restores what a crashed run left (its saved originals); the state file is only a hint.

Tuning is ``polythrottle.tuning.session.run_tune`` (the same ``Tuner`` as ``polythrottle tune``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from polythrottle.daemon.config import ConfigError, DaemonConfig
from polythrottle.daemon.device_lock import Cancelled, LockedDevice
from polythrottle.daemon.jobs import MODEL, RELOAD, START, Job
from polythrottle.daemon.sdnotify import Notifier
from polythrottle.daemon.statefile import pid_alive, read_state
from polythrottle.daemon.status import DaemonStatus, tune_summary
from polythrottle.daemon.trust import check_workload, is_user_workload
from polythrottle.devices import open_device
from polythrottle.errors import BadInputError, PolyThrottleError, clip
from polythrottle.fingerprint import fingerprint_files
from polythrottle.history import HistoryKey, open_history
from polythrottle.history.protocol import History
from polythrottle.tuning.session import DEFAULT_MODEL_VERSION, run_tune, tune_key
from polythrottle.tuning.tuner import Tuner, TuneRecord, TuneResult

log = logging.getLogger("polythrottle.daemon")


@dataclass
class Prepared:
    """A config with its device opened and validated (nothing written yet)."""

    config: DaemonConfig
    device: LockedDevice
    key: HistoryKey
    tuned_knobs: list[str]


@contextmanager
def naming_the_file(cfg: DaemonConfig) -> Iterator[None]:
    """A bad input found once the config is used (an unknown board profile, workload or knob, a baseline
    value that is not a step, an untrusted workload file) becomes ``FILE: problem`` (ConfigError, exit 2), as
    the config's field errors are. Other errors (a device that is not there, one refusing access) pass."""
    try:
        yield
    except ConfigError:
        raise
    except BadInputError as e:
        if e.exit_code != ConfigError.exit_code:
            raise
        raise ConfigError(f"{cfg.path}: {clip(str(e), 300)}") from e


def prepare(cfg: DaemonConfig, cancel: tuple[threading.Event, ...] = (),
            device: LockedDevice | None = None, *, import_workload: bool = True) -> Prepared:
    """Open (or reuse) the device for ``cfg`` and validate knobs, baseline and SLO against it. Writes
    nothing. ``import_workload=False`` (``daemon --check``): a user's workload file is checked, not
    imported, and the knobs only it would offer are not checked. Raises ConfigError naming the file (bad
    device, workload, knob, value, an untrusted workload file) or DeviceError."""
    with naming_the_file(cfg):
        return _prepare(cfg, cancel, device, import_workload=import_workload)


def _prepare(cfg: DaemonConfig, cancel: tuple[threading.Event, ...], device: LockedDevice | None, *,
             import_workload: bool) -> Prepared:
    check_workload(cfg)
    skip = not import_workload and is_user_workload(cfg.workload)
    opened = device is None
    if device is None:
        opts = cfg.device_options()
        if skip:
            opts = dataclasses.replace(opts, workload=None)
        device = LockedDevice(open_device(cfg.device, opts), *cancel)
    try:
        knobs: list[str] | None = list(cfg.knobs) if cfg.knobs else None
        baseline = dict(cfg.baseline)
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


def _small_config(value: Any) -> dict[str, Any] | None:
    """A config read back from the state file, if it looks like one (else None: it is only reported)."""
    if not isinstance(value, dict) or len(value) > 64:
        return None
    ok = all(isinstance(k, str) and len(k) <= 64 and isinstance(v, (str, int, float)) and not isinstance(v, bool)
             and len(str(v)) <= 64 for k, v in value.items())
    return dict(value) if ok else None


class Controller:
    """See the module docstring. ``stop``/``cancel``: set either and the device refuses further applies and
    measurements (a tune ends at its next device call); ``cancel`` is cleared before each job."""

    def __init__(self, config: DaemonConfig, status: DaemonStatus, *, notifier: Notifier | None = None,
                 stop: threading.Event | None = None, cancel: threading.Event | None = None) -> None:
        self.config = config
        self.status = status
        self.notifier = notifier or Notifier("")
        self.stop = stop or threading.Event()
        self.cancel = cancel or threading.Event()
        self.prepared: Prepared | None = None
        self.store: History | None = None
        self.heartbeat = time.monotonic()
        """Monotonic time of the last sign of progress (a tune or serving measurement, a worker turn)."""
        self.ready_sent = False
        self.restore_failed = False
        self.interrupted: Job | None = None
        """A job a reload cancelled: resumed if that reload is refused."""

    # ----- opening and closing ------------------------------------------------------------------------
    def open(self) -> None:
        """Open the device for the config and check the history can be opened. Writes nothing. Raises
        BadInputError / DeviceError / HistoryError (one line) when the daemon cannot start."""
        cfg = self.config
        self.prepared = prepare(cfg, (self.stop, self.cancel))
        open_history(cfg.history_path(), spool_dir=cfg.resolved_state_dir()).close()  # corrupt, unwritable: refuse now
        self.status.use_config(cfg, self.prepared.tuned_knobs)

    def open_store(self) -> None:
        """Open the history store (in the thread that will use it)."""
        self.store = open_history(self.config.history_path(), spool_dir=self.config.resolved_state_dir())

    def close(self) -> None:
        """Restore every original setting, close the device and the history store."""
        try:
            self.final_restore()
        finally:
            if self.store is not None:
                self.store.close()
                self.store = None

    # ----- jobs ---------------------------------------------------------------------------------------
    def run_job(self, job: Job) -> None:
        """Do ``job``. A cancelled job is remembered for a refused reload to resume; a failed one leaves the
        device at its own settings (state ``error``). Raises when the first bring-up fails
        before the daemon was ready: it cannot start (re-raises that PolyThrottleError)."""
        self.cancel.clear()  # a cancel meant for the job before this one
        failed = False
        try:
            if job.kind == START:
                self.recover()
                self.bring_up(job.reason, force=True)
            elif job.kind == MODEL:
                self.bring_up(job.reason, version=job.model_version, files=job.model_files, force=job.force)
            elif job.kind == RELOAD:
                assert job.config is not None
                failed = not self.switch(job.config)
            if not self.ready_sent:
                self.ready()
            if job.kind != RELOAD:
                self.interrupted = None
        except Cancelled:
            log.info("%s interrupted", job.kind)
            if job.kind != RELOAD:
                self.interrupted = job
        except PolyThrottleError as e:
            if job.kind == START and not self.ready_sent:
                raise
            log.error("%s failed: %s", job.kind, e)
            failed = True
            self.status.set(last_error=str(e), state="error")
            self.restore_quietly()
        except Exception as e:  # a bug: never leave the board at a candidate config
            log.exception("%s failed unexpectedly", job.kind)
            if job.kind == START and not self.ready_sent:
                raise PolyThrottleError(f"start-up failed: {type(e).__name__}: {e}") from e
            failed = True
            self.status.set(last_error=f"{type(e).__name__}: {e}", state="error")
            self.restore_quietly()
        self.status.job_done(job.id, failed=failed)

    def ready(self) -> None:
        """Tell systemd the daemon is up (once)."""
        self.notifier.ready(self.status.line())
        self.ready_sent = True

    def recover(self) -> None:
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
            info = {"pid": pid if crashed else None, "restored": restored, "left_applied": _small_config(left)}
            log.warning("a previous run did not stop cleanly (pid %s); restored %d saved setting(s)",
                        info["pid"], len(restored))
            self.status.set(recovered=info)

    # ----- bring-up and tuning ------------------------------------------------------------------------
    def model_version(self, files: list[str] | None = None) -> str:
        """The given files' fingerprint, else the configured files', else the configured version. Raises
        BadInputError naming a missing file."""
        if files:
            return fingerprint_files(files)
        if self.config.model_files:
            return fingerprint_files(self.config.model_files)
        return self.config.model_version or DEFAULT_MODEL_VERSION

    def bring_up(self, reason: str, *, version: str | None = None, files: list[str] | None = None,
                 force: bool = False) -> None:
        """Apply the stored best config for the model version (given, else the fingerprint of ``files``,
        else of the configured model files); tune when there is none. Skipped when the version is the
        applied one (unless ``force``). A missing model file: state ``waiting``, nothing applied."""
        p = self.prepared
        assert p is not None and self.store is not None
        cfg = p.config
        try:
            version = version or self.model_version(files)
        except BadInputError as e:
            log.warning("%s; waiting for it (nothing applied)", e)
            self.status.set(state="waiting", last_error=str(e))
            if not self.ready_sent:
                self.ready()  # READY before `status` can say "waiting"
            return
        snap = self.status.snap
        if not force and version == snap.model_version and snap.applied is not None:
            log.info("%s: model %s unchanged; nothing to do", reason, version)
            return
        best = self.store.best(p.key, model_version=version, slo_ms=cfg.slo_ms, unit=p.device.identity().unit)
        if best is not None:
            try:
                config = p.device.complete_config(best.config)
            except BadInputError as e:
                log.warning("stored best config no longer valid (%s); tuning", e)
            else:
                p.device.apply(config)
                self.status.applied(config, "history", version, energy_j=best.energy_j, latency_ms=best.latency_ms,
                                    measured_at=best.finished_at)
                log.info("%s: applied the stored best config of model %s (tune %d): %s", reason, version,
                         best.tune_id, config)
                self.notifier.status(self.status.line())
                return
        warm = cfg.warm_start and cfg.optimizer == "cbo" and bool(self.store.model_versions(p.key))
        self.tune("retune" if warm else "initial", version, reason)

    def tune(self, kind: str, version: str, reason: str) -> None:
        """Tune (``initial``: ``budget`` measurements; ``retune``: ``retune_budget``, warm-started) and apply
        the best config; nothing feasible: the device's own settings, state ``error``."""
        p = self.prepared
        assert p is not None and self.store is not None
        cfg = p.config
        budget = cfg.retune_budget if kind == "retune" else cfg.budget
        started = time.time()
        self.status.tune_started(kind, reason, version, budget)
        log.info("%s: %s tune of model %s (budget %d)", reason, kind, version, budget)
        if not self.ready_sent:
            self.ready()
        self.notifier.status(self.status.line())

        def on_record(r: TuneRecord) -> None:
            self.heartbeat = time.monotonic()
            self.status.tune_measured(r.step, r.measurement, r.feasible)

        try:
            result = run_tune(p.device, cfg.slo_ms, budget, store=self.store, model_version=version,
                              warm_start=cfg.warm_start, optimizer=cfg.optimizer, knobs=cfg.knobs,
                              baseline=cfg.baseline, seed=cfg.seed, on_record=on_record)
        except Cancelled:
            self.status.tune_ended(kind, "cancelled")
            raise
        except BaseException:
            self.status.tune_ended(kind, "failed")
            raise
        self.status.tune_ended(kind, "feasible" if result.best is not None else "infeasible", result.saving_pct)
        self._finish_tune(kind, version, reason, result, started)

    def _finish_tune(self, kind: str, version: str, reason: str, result: TuneResult, started: float) -> None:
        p = self.prepared
        assert p is not None
        cfg = p.config
        summary = tune_summary(kind, reason, version, result, started)
        tunes = self.status.snap.tunes + 1
        if result.best is None:
            p.device.restore()
            msg = (f"no config met the {cfg.slo_ms:g} ms SLO (lowest latency seen "
                   f"{result.lowest_latency_ms:.4g} ms); the device's own settings are restored")
            log.error("%s tune: %s", kind, msg)
            self.status.cleared(state="error", model_version=version, last_error=msg, last_tune=summary, tuning=None,
                                tunes=tunes)
        else:
            config = p.device.complete_config(result.best.config)
            p.device.apply(config)
            self.status.applied(config, "tune", version, energy_j=result.best.energy_j,
                                latency_ms=result.best.latency_ms, last_tune=summary, tuning=None, tunes=tunes)
            log.info("%s tune done: %d measurements, saving %.1f%%, applied %s", kind, len(result.history),
                     result.saving_pct or 0.0, config)
        self.notifier.status(self.status.line())

    def serve_once(self) -> None:
        """The serving loop's turn: measure the applied config (the inference of sim devices)."""
        p = self.prepared
        if p is None or p.device.applied is None or self.config.monitor_interval_s <= 0:
            return
        try:
            m = p.device.measure()
        except Cancelled:
            return
        except PolyThrottleError as e:
            log.warning("measurement failed: %s", e)
            self.status.set(last_error=f"measurement failed: {e}")
            return
        self.heartbeat = time.monotonic()
        self.status.served(m)

    # ----- reload -------------------------------------------------------------------------------------
    def check_reload(self, new: DaemonConfig) -> None:
        """Check ``new`` before anything is cancelled: its workload file, and against the running device when
        it names the same one (knobs, baseline, SLO). Writes nothing. Raises PolyThrottleError (ConfigError
        naming the file for a bad input)."""
        with naming_the_file(new):
            check_workload(new)
        old = self.prepared
        if old is not None and new.same_device(old.config):
            prepare(new, (self.stop, self.cancel), old.device)  # validation only; writes nothing

    def switch(self, new: DaemonConfig) -> bool:
        """Switch to ``new`` (checked by ``check_reload``): restore, reopen the device if it is another, bring
        up under the new config. A config refused now (another device that fails to open) keeps the running
        one: the device is put back and the job the reload interrupted resumed. Returns False if refused."""
        old = self.prepared
        assert old is not None
        self.notifier.send(RELOADING=1, STATUS="reloading the config",
                           MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        same = new.same_device(old.config)
        try:
            prepared = prepare(new, (self.stop, self.cancel), old.device if same else None)
        except PolyThrottleError as e:
            log.error("reload refused, keeping the running config: %s", e)
            interrupted, self.interrupted = self.interrupted, None
            if interrupted is not None:  # the reload cancelled it: put the device back, then resume
                log.info("resuming the %s job the refused reload interrupted", interrupted.kind)
                old.device.restore()
                self.status.cleared(tuning=None)
                self.bring_up(f"reload refused; resuming ({interrupted.reason})", force=True)
            self.status.set(last_error=f"reload refused: {e}")
            self.notifier.send(READY=1, STATUS=self.status.line())
            return False
        self.interrupted = None
        old.device.restore()
        if not same:
            old.device.close()
        self.prepared = prepared
        self.config = new
        self.status.use_config(new, prepared.tuned_knobs)
        self.status.cleared(model_version=None, state="starting")
        self.bring_up("config reloaded", force=True)
        self.notifier.send(READY=1, STATUS=self.status.line())
        return True

    # ----- restore ------------------------------------------------------------------------------------
    def restore_quietly(self) -> None:
        """Put the device back to its own settings after a failed job (a failure is logged and remembered)."""
        p = self.prepared
        if p is None:
            return
        try:
            p.device.restore()
        except PolyThrottleError as e:
            log.error("restore failed: %s", e)
            self.restore_failed = True
        self.status.cleared()

    def final_restore(self) -> None:
        """Restore every value this process changed and close the device (once; safe from any thread)."""
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
                self.restore_failed = True
            self.status.cleared(state="stopped" if self.stop.is_set() else "error")


__all__ = ["Controller", "Prepared", "prepare"]
