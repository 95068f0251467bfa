"""The daemon's threads: signals, the systemd watchdog, the model-file watcher, the worker, shutdown.

- The main thread handles signals (SIGTERM/SIGINT: stop; SIGHUP: reload), polls the model files
  (``watcher``), feeds the systemd watchdog while the worker shows progress and, on stop, waits for the
  worker and stops the control socket and the metrics endpoint.
- One worker thread owns the device and the history store: it runs the jobs (``jobs.JobQueue``) one at
  a time through the ``Controller`` and, between jobs, measures the applied config every
  ``monitor_interval_s`` (the serving loop). When it ends it restores every original setting.
- The control socket's threads (``server``) answer from the status and queue jobs; they never touch the
  device, so they keep answering while a tune runs.

A signal never cuts the final restore short: the handler only records it. A worker stuck in a device
call past ``STOP_TIMEOUT_S`` is left; the main thread restores once the device is free.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from polythrottle.daemon.controller import Controller
from polythrottle.daemon.jobs import MODEL, START, JobQueue
from polythrottle.daemon.sdnotify import Notifier, watchdog_interval_s
from polythrottle.daemon.server import ControlServer
from polythrottle.daemon.status import DaemonStatus
from polythrottle.daemon.wakeup import Wakeup
from polythrottle.daemon.watcher import ModelWatcher
from polythrottle.errors import PolyThrottleError, clip

log = logging.getLogger("polythrottle.daemon")

STOP_TIMEOUT_S = 20.0
HEARTBEAT_S = 5.0
"""The idle worker wakes at least this often (its heartbeat)."""
STALL_S = 120.0
"""The systemd watchdog is fed only while the worker's heartbeat (a loop turn, a tune measurement, a
serving measurement) is younger than this: a hung device call gets the service killed and restarted
(the restart restores the saved originals)."""


class Supervisor:
    """Runs the daemon's threads until a signal stops it. ``reload(why)`` checks the config file and queues
    the switch (raising PolyThrottleError when the new config is refused)."""

    def __init__(self, controller: Controller, jobs: JobQueue, *, notifier: Notifier,
                 reload: Callable[[str], object]) -> None:
        self.controller = controller
        self.jobs = jobs
        self.notifier = notifier
        self.reload = reload
        self._wake = Wakeup()  # set by the signal handler: never a threading.Event (see wakeup.py)
        self._term: int | None = None
        self._hup = False
        self._fatal: PolyThrottleError | None = None
        self._watcher: ModelWatcher | None = None
        self._watched: list[Path] = []

    @property
    def status(self) -> DaemonStatus:
        return self.controller.status

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._term = signum
        self._wake.set()

    def run(self, server: ControlServer | None = None) -> int:
        """Run until stopped; returns 0 after a clean stop (settings restored), 1 if a restore failed.
        Raises the PolyThrottleError that kept the first bring-up from finishing."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.jobs.put(START, "daemon started")
        self._follow_model_files()
        worker = threading.Thread(target=self._worker, name="tuner", daemon=True)
        worker.start()
        cfg = self.controller.config
        watchdog_s = watchdog_interval_s()
        tick_s = min(x for x in (1.0, cfg.watch_interval_s, watchdog_s) if x)
        next_wd = 0.0
        next_watch = time.monotonic() + cfg.watch_interval_s
        while True:
            self._wake.wait(tick_s)
            if self._term is not None or self._fatal is not None or not worker.is_alive():
                break
            if self._hup:
                self._hup = False
                self._reload("SIGHUP")
            self._follow_model_files()
            now = time.monotonic()
            if self._watcher is not None and now >= next_watch:
                next_watch = now + self.controller.config.watch_interval_s
                self._poll_model_files()
            if watchdog_s and now >= next_wd and now - self.controller.heartbeat < STALL_S:
                next_wd = now + watchdog_s
                self.notifier.watchdog()
        return self._shutdown(worker, server)

    # ----- the main thread's chores -------------------------------------------------------------------
    def _reload(self, why: str) -> None:
        try:
            self.reload(why)
        except PolyThrottleError as e:  # the running config, and any tune under way, go on untouched
            log.error("reload refused, keeping the running config: %s", e)
            self.status.set(last_error=f"reload refused: {e}")
        except Exception as e:
            log.exception("reload failed unexpectedly; keeping the running config")
            self.status.set(last_error=f"reload refused: {type(e).__name__}: {clip(str(e), 200)}")

    def _follow_model_files(self) -> None:
        """Watch the model files of the config in use (a reload may change them)."""
        paths = list(self.controller.config.model_files)
        if paths != self._watched:
            self._watched = paths
            self._watcher = ModelWatcher(paths) if paths else None

    def _poll_model_files(self) -> None:
        assert self._watcher is not None
        if not self._watcher.poll():
            return
        missing = self._watcher.missing
        if missing:
            log.warning("model file %s is missing; keeping the applied config", missing[0])
            self.status.set(last_error=f"model file {missing[0]} not found")
        else:
            self.jobs.put(MODEL, "model file changed")

    # ----- the worker ---------------------------------------------------------------------------------
    def _worker(self) -> None:
        c = self.controller
        try:
            c.open_store()
            next_serve = time.monotonic()
            while not c.stop.is_set():
                c.heartbeat = time.monotonic()
                interval_s = c.config.monitor_interval_s
                wait_s = min(HEARTBEAT_S, max(0.0, next_serve - c.heartbeat)) if interval_s > 0 else HEARTBEAT_S
                job = self.jobs.get(wait_s)
                if c.stop.is_set():
                    break
                if job is None:
                    if interval_s > 0 and time.monotonic() >= next_serve:
                        c.serve_once()
                        next_serve = time.monotonic() + interval_s
                    continue
                try:
                    c.run_job(job)
                except PolyThrottleError as e:  # the first bring-up failed: the daemon cannot start
                    self._fatal = e
                    break
        except PolyThrottleError as e:  # the history store would not open
            self._fatal = e
        finally:
            try:
                c.close()
            finally:
                self._wake.set()

    # ----- stopping -----------------------------------------------------------------------------------
    def _shutdown(self, worker: threading.Thread, server: ControlServer | None) -> int:
        why = signal.Signals(self._term).name if self._term else "fatal error" if self._fatal else "worker ended"
        log.info("stopping (%s): restoring the original settings", why)
        self.notifier.send(STOPPING=1, STATUS="stopping: restoring the original settings")
        self.status.set(state="stopping")
        self.controller.stop.set()
        self.controller.cancel.set()
        self.jobs.close()
        worker.join(STOP_TIMEOUT_S)
        if worker.is_alive():  # stuck in a device call: restore from here once the device is free
            log.error("the worker did not stop within %gs; restoring from the main thread", STOP_TIMEOUT_S)
            self.controller.final_restore()
        if server is not None:
            server.stop()
        self.status.stop_metrics()
        self.status.write_file()
        if not worker.is_alive():  # a worker stuck in a device call may still set the wake-up
            self._wake.close()
        if self._fatal is not None:
            raise self._fatal
        return 1 if self.controller.restore_failed else 0


__all__ = ["HEARTBEAT_S", "STALL_S", "STOP_TIMEOUT_S", "Supervisor"]
