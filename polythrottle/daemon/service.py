"""The daemon, wired together: ``Daemon(config).run()`` (``polythrottle daemon``) and ``check_config`` (``--check``).

On start it restores whatever a previous run left applied, then applies the stored best config for the
model (tuning first when there is none), and re-tunes when the model files change or a client says so.
The parts: ``controller`` (what is done to the device, synchronous), ``jobs`` (the queue and its
coalescing), ``supervisor`` (signals, watchdog, watcher, threads, shutdown), ``status`` (snapshot, state
file, metrics), ``server``/``protocol`` (the control socket). ``Daemon.handle_request`` answers the
socket: it reads the status, checks requests against the config and queues jobs, never touching the device.

"Inference keeps being served": on ``sim:``/``replay:`` devices the daemon's own measurements are the
inference. On a real board the application serving inference runs in its own process and keeps
running during a tune; it sees each candidate config for one measurement window (latency may exceed
the SLO for that window; ``polythrottle_slo_violations_total{phase="tuning"}`` counts those).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path
from typing import Any

from polythrottle.daemon import protocol
from polythrottle.daemon.config import ConfigError, DaemonConfig, load_config
from polythrottle.daemon.controller import Controller, prepare
from polythrottle.daemon.jobs import MODEL, RELOAD, JobQueue
from polythrottle.daemon.metrics import check_bindable, host_port
from polythrottle.daemon.sdnotify import Notifier
from polythrottle.daemon.server import ControlServer
from polythrottle.daemon.status import DaemonStatus, cannot_serve_metrics
from polythrottle.daemon.supervisor import Supervisor
from polythrottle.daemon.trust import configured_model_file, is_user_workload
from polythrottle.errors import BadInputError
from polythrottle.fingerprint import model_file_problem

log = logging.getLogger("polythrottle.daemon")


class Daemon:
    """``Daemon(config).run()`` runs until SIGTERM/SIGINT and returns the exit code (see the module docstring)."""

    def __init__(self, config: DaemonConfig, *, notifier: Notifier | None = None) -> None:
        self.notifier = notifier or Notifier()
        self.jobs = JobQueue()
        self.status = DaemonStatus(config, queued=self.jobs.__len__)
        self.controller = Controller(config, self.status, notifier=self.notifier)
        self.supervisor = Supervisor(self.controller, self.jobs, notifier=self.notifier, reload=self.reload)

    @property
    def config(self) -> DaemonConfig:
        """The config in use (a reload replaces it)."""
        return self.controller.config

    def run(self) -> int:
        """Open everything that can refuse to start (metrics port, device, knobs, history, socket), then run
        until stopped; returns 0 after a clean stop (settings restored). Raises PolyThrottleError (one line)
        when it cannot start."""
        self.status.serve_metrics()  # a port taken is refused before the device is opened
        try:
            self.controller.open()
            server = ControlServer(self.config.socket, self.handle_request, group=self.config.socket_group)
            server.start()
        except BaseException:
            self.status.stop_metrics()
            raise
        return self.supervisor.run(server)

    def reload(self, why: str) -> int:
        """Re-read the config file and check it (against the running device when it names the same one),
        then cancel what runs and queue the switch. Raises ConfigError or another PolyThrottleError: the
        running config, and a tune under way, are left exactly as they are."""
        new = load_config(self.config.path)
        self.controller.check_reload(new)
        log.info("reloading %s (%s)", new.path, why)
        self.controller.cancel.set()  # a tune in progress is moot under a new config
        return self.jobs.put(RELOAD, why, config=new)

    def handle_request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request (runs in a socket thread; never touches the device). Raises
        BadInputError (the reply's error) for an unknown command or a request the config does not allow."""
        cmd = protocol.command_of(req)
        if cmd == protocol.STATUS:
            return protocol.ok(status=self.status.to_dict())
        if cmd == protocol.RELOAD:
            return protocol.ok(queued="reload", job=self.reload("reload request"))
        m = protocol.ModelUpdated.parse(req)
        cfg = self.config
        files = m.model_files
        if files is not None:  # a client may say which of the configured files changed, never name others
            files = [str(configured_model_file(f, cfg.model_files)) for f in files]
        if m.model_version is None:  # the worker hashes the files (large models take a while); check them now
            paths = [Path(f) for f in files] if files else list(cfg.model_files)
            missing = [str(f) for f in paths if not f.exists()]
            if missing:
                raise BadInputError(f"model file {missing[0]} not found")
            if not paths and not cfg.model_version:
                raise BadInputError("no model_files in the daemon config; send a model_version")
        job = self.jobs.put(MODEL, "model-updated request", model_version=m.model_version,
                            model_files=None if m.model_version else files, force=m.force)
        return protocol.ok(queued="model", job=job, model_version=m.model_version)


def not_a_directory(path: Path) -> Path | None:
    """The nearest existing one of ``path`` and its ancestors when it is not a directory (a regular file): then
    the directory ``path`` cannot be created, by any user; None otherwise (permissions are not judged: the
    check may run as another user than the daemon: a directory this user may not search is not looked into)."""
    for p in (path, *path.parents):
        try:
            if p.exists():
                return None if p.is_dir() else p
        except PermissionError:  # in a directory this user may not search (root's, checked by a user)
            continue
    return None


def check_history(cfg: DaemonConfig) -> str:
    """``daemon --check``'s view of the history: opened read-only (nothing is written or created), so a
    corrupt file, a newer schema, a malformed URL or wrong credentials are refused now (HistoryError);
    a PostgreSQL server out of reach is reported, not refused (the daemon then writes to its spool).
    Returns a summary for the check's line."""
    from polythrottle.history import open_history
    from polythrottle.history.errors import HistoryError, HistoryUnavailable
    from polythrottle.history.target import parse_target

    target = parse_target(cfg.history_path())
    if target.is_sqlite and target.path is not None:
        try:
            target.path.exists()
        except PermissionError:  # in a directory this user may not search: the daemon runs as root
            return f"history {target.display} (not readable by this user: not checked)"
        if not target.path.exists():
            blocker = not_a_directory(target.path.parent)
            if blocker is not None:  # the daemon would refuse to start
                raise HistoryError(f"history database {target.path}: cannot create its directory "
                                   f"({blocker} is not a directory)")
            return f"history {target.display} (created at start)"
        if not os.access(target.path, os.R_OK):  # e.g. root's history, checked by a user: the daemon runs as root
            return f"history {target.display} (not readable by this user: not checked)"
    try:
        open_history(cfg.history_path(), read_only=True, create=False).close()
    except HistoryUnavailable:
        return f"history {target.display} out of reach now (the daemon spools to {cfg.resolved_state_dir()})"
    return f"history {target.display}"


def check_metrics(cfg: DaemonConfig) -> str:
    """``daemon --check``'s view of the metrics endpoint: its address and port are bound and closed at once (port 0
    or ``metrics: false``: nothing to bind). Raises BadInputError (the daemon's own line at start, exit 2) when
    the port is taken or the address cannot be bound. Not refused: the port served by the daemon answering on
    the config's socket (a config checked before a restart), and a privileged port checked by a user (the
    daemon runs as root). Returns a summary for the check's line."""
    m = cfg.metrics
    if m is None:
        return "metrics off"
    where = host_port(m.address, m.port)
    if m.port == 0:
        return f"metrics {where} (a free port at start)"
    try:
        check_bindable(m.address, m.port)
    except PermissionError as e:
        if os.geteuid() == 0:
            raise cannot_serve_metrics(cfg, e) from None
        return f"metrics {where} (not bindable by this user: not checked)"
    except OSError as e:
        pid = _serving_daemon(cfg, where) if e.errno == errno.EADDRINUSE else None
        if pid is None:
            raise cannot_serve_metrics(cfg, e) from None
        return f"metrics {where} (served by the running daemon, pid {pid}; free once it stops)"
    return f"metrics {where}"


def _serving_daemon(cfg: DaemonConfig, where: str) -> int | None:
    """The pid of the daemon answering on ``cfg.socket`` when it serves its metrics on ``where``; None if none does."""
    from polythrottle.daemon.client import DaemonError, status

    try:
        st = status(cfg.socket, timeout_s=2.0)
    except DaemonError:
        return None
    pid = st.get("pid")
    return pid if st.get("metrics_url") == f"http://{where}/metrics" and isinstance(pid, int) else None


def check_config(path: str | os.PathLike[str], text: str | None = None) -> str:
    """``daemon --check``: validate the config file, its model files, bind the metrics port (closed at once), open
    the device with it and the history read-only (nothing is written). ``text``: check this text as the file at
    ``path`` (not read; it need not exist yet). Returns the one-line summary; raises ConfigError / BadInputError /
    DeviceError / HistoryError."""
    cfg = load_config(path, text)
    unusable = [(f, why) for f in cfg.model_files if (why := model_file_problem(f)) is not None]
    if unusable:  # a FIFO or /dev/zero said OK here, then the daemon waited for it as "not found" forever
        raise ConfigError(f"{cfg.path}: model_files: {unusable[0][0]} {unusable[0][1]}")
    state = cfg.resolved_state_dir()
    blocker = not_a_directory(state)
    if blocker is not None:  # the daemon would stop at start: "cannot create the state directory"
        raise ConfigError(f"{cfg.path}: state_dir: {state} cannot be created ({blocker} is not a directory)")
    blocker = not_a_directory(cfg.socket.parent)
    if blocker is not None:  # the daemon would stop at start: "cannot create the control socket directory"
        raise ConfigError(f"{cfg.path}: socket: {cfg.socket} cannot be created ({blocker} is not a directory)")
    metrics = check_metrics(cfg)
    prepared = prepare(cfg, import_workload=False)  # writes nothing, and imports no workload code it would run
    prepared.device.close()
    history = check_history(cfg)
    unchecked = ""
    if is_user_workload(cfg.workload):
        rest = [k for k in cfg.knobs or [] if k not in prepared.tuned_knobs]
        unchecked = (f"; workload {cfg.workload} found, not imported"
                     + (f" (knobs {', '.join(rest)} not checked)" if rest else ""))
    return (f"{cfg.path}: OK (device {prepared.device.identity().describe()}, knobs "
            f"{', '.join(prepared.tuned_knobs)}, SLO {cfg.slo_ms:g} ms, socket {cfg.socket}, {metrics}, "
            f"{history}{unchecked})")


def setup_logging(debug: bool = False) -> None:
    """Log lines to stderr (the journal under systemd), without timestamps when journald adds them."""
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(levelname)s %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False


__all__ = ["Daemon", "check_config", "check_history", "check_metrics", "setup_logging"]
