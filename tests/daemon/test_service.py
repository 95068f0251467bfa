"""The daemon as a process: refusals of a bad config (one line, exit 2, nothing started), ``--check``,
waiting for a model file, an infeasible SLO after a reload (random search: no torch)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from polythrottle.daemon.config import load_config
from polythrottle.daemon.service import Daemon
from polythrottle.errors import BadInputError
from tests.conftest import ROOT, deny_search
from tests.daemon.helpers import DaemonProcess, NotifyListener, wait_for, write_config

GOOD = "device: sim:jetson-agx-orin\nworkload: efficientnet-b0\nslo_ms: 25\n"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "daemon.yaml"
    p.write_text(text)
    return p


# ----- the socket's requests, answered in-process (nothing is started: no device call, no thread) ----------
@pytest.fixture
def daemon(tmp_path):
    (tmp_path / "models" / "dir").mkdir(parents=True)
    (tmp_path / "models" / "model.bin").write_bytes(b"v1")
    cfg = write(tmp_path, GOOD + "model_files: [models/model.bin, models/dir]\nstate_dir: state\nsocket: c.sock\n"
                               "metrics: false\n")
    return Daemon(load_config(cfg))


def test_status_request(daemon):
    reply = daemon.handle_request({"command": "status"})
    assert reply["ok"] and reply["status"]["state"] == "starting" and reply["status"]["jobs"]["queued"] == 0


def test_model_updated_requests_queue_one_job(daemon, tmp_path):
    a = daemon.handle_request({"command": "model-updated"})
    b = daemon.handle_request({"command": "model-updated", "model_files": [str(tmp_path / "models" / "model.bin")],
                               "force": True})
    assert a["ok"] and a["queued"] == "model" and b["job"] == a["job"]  # folded into the queued one
    (job,) = daemon.jobs.pending()
    assert job.force and job.model_files == [str(tmp_path / "models" / "model.bin")]
    c = daemon.handle_request({"command": "model-updated", "model_version": "v9"})
    assert c["model_version"] == "v9" and daemon.jobs.pending()[0].model_version == "v9"
    assert daemon.handle_request({"command": "status"})["status"]["jobs"]["queued"] == 1


@pytest.mark.parametrize("req, words", [
    ({"command": "format-disk"}, "unknown command 'format-disk'"),
    ({"command": "model-updated", "model_files": ["/etc/shadow"]}, "not one of the daemon config's model_files"),
    ({"command": "model-updated", "model_files": ["models/model.bin"]}, "not an absolute path"),
    ({"command": "model-updated", "model_version": ""}, "model_version must be a non-empty string"),
    ({"command": "model-updated", "force": 1}, "force must be true or false"),
])
def test_requests_the_daemon_refuses(daemon, req, words):
    with pytest.raises(BadInputError, match=words):
        daemon.handle_request(req)
    assert len(daemon.jobs) == 0


def test_a_request_naming_a_missing_configured_file_is_refused(daemon, tmp_path):
    missing = tmp_path / "models" / "dir" / "later.bin"
    with pytest.raises(BadInputError, match="later.bin not found"):
        daemon.handle_request({"command": "model-updated", "model_files": [str(missing)]})


def test_reload_request_checks_the_file_first(daemon, tmp_path):
    cfg = tmp_path / "daemon.yaml"
    good = cfg.read_text()
    cfg.write_text(good + "slo_ms: [\n")
    with pytest.raises(BadInputError, match="not valid YAML"):
        daemon.handle_request({"command": "reload"})
    assert not daemon.controller.cancel.is_set() and len(daemon.jobs) == 0
    cfg.write_text(good.replace("slo_ms: 25", "slo_ms: 30"))
    reply = daemon.handle_request({"command": "reload"})
    assert reply["queued"] == "reload" and daemon.controller.cancel.is_set()
    assert daemon.jobs.pending()[0].config.slo_ms == 30 and daemon.config.slo_ms == 25  # switched by the worker


# ----- as a process ----------------------------------------------------------------------------------------
def run_daemon(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    return subprocess.run([sys.executable, "-m", "polythrottle", "daemon", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=env)


@pytest.mark.parametrize("text, message", [
    ("device: sim:jetson-agx-orin\nslo_ms: [25\n", "not valid YAML"),
    (GOOD + "knobs: [gpu_mhz, turbo]\n", "turbo"),
    (GOOD.replace("efficientnet-b0", "no-such-model"), "unknown workload 'no-such-model'"),
])
def test_garbage_config_refuses_to_start_with_one_line(tmp_path, text, message):
    cfg = write(tmp_path, text + f"socket: {tmp_path}/ctl.sock\nstate_dir: {tmp_path}/state\nmetrics: false\n")
    r = run_daemon("--config", str(cfg))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "ctl.sock").exists()  # nothing started


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("jetson-agx-orin", "no-such-board"), "unknown profile 'no-such-board'"),
    (GOOD + "knobs: [gpu_mhz, nosuchknob]\n", "unknown knob 'nosuchknob'"),
    (GOOD.replace("efficientnet-b0", "no-such-model"), "unknown workload 'no-such-model'"),
    (GOOD + "baseline: {gpu_mhz: 12345}\n", "gpu_mhz=12345 is not a valid step"),
], ids=["profile", "knob", "workload", "baseline"])
@pytest.mark.parametrize("check", [True, False], ids=["check", "start"])
def test_what_opening_the_device_refuses_names_the_config_file(tmp_path, text, message, check):
    # these were one line without the file (field errors say FILE: field: ...); now FILE: problem, exit 2
    cfg = write(tmp_path, text + f"socket: {tmp_path}/ctl.sock\nstate_dir: {tmp_path}/state\nmetrics: false\n")
    r = run_daemon("--config", str(cfg), *(["--check"] if check else []))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"polythrottle: error: {cfg}: ") and message in lines[0]
    assert not (tmp_path / "ctl.sock").exists() and not (tmp_path / "state").exists()


def test_check_validates_without_starting(tmp_path):
    cfg = write(tmp_path, GOOD + f"socket: {tmp_path}/ctl.sock\nstate_dir: {tmp_path}/state\nmetrics: {{port: 0}}\n")
    r = run_daemon("--config", str(cfg), "--check")
    assert r.returncode == 0 and "OK" in r.stdout and "metrics 127.0.0.1:0 (a free port at start)" in r.stdout
    assert not (tmp_path / "ctl.sock").exists() and not (tmp_path / "state").exists()
    assert f"history {tmp_path}/state/history.sqlite (created at start)" in r.stdout


def test_check_opens_the_history_and_refuses_a_corrupt_one(tmp_path):
    # --check said OK for a history the daemon then refused at start; now it opens it read-only: a
    # corrupt file is the one-line refusal (exit 2) and nothing is written to it
    base = GOOD + f"socket: {tmp_path}/ctl.sock\nstate_dir: {tmp_path}/state\nmetrics: {{port: 0}}\n"
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    before = bad.read_bytes()
    cfg = write(tmp_path, base + f"history: {bad}\n")
    r = run_daemon("--config", str(cfg), "--check")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in r.stderr
    assert bad.read_bytes() == before and not (tmp_path / "ctl.sock").exists()
    # a good history is opened and named; a PostgreSQL server out of reach is reported, not refused
    good = tmp_path / "good.sqlite"
    from polythrottle.history import open_history

    open_history(good).close()
    cfg = write(tmp_path, base + f"history: {good}\n")
    r = run_daemon("--config", str(cfg), "--check")
    assert r.returncode == 0 and f"history {good})" in r.stdout
    url = "postgresql://u:secret@127.0.0.1:9/db"  # port 9 (discard): refused at once
    cfg = write(tmp_path, base + f"history: '{url}'\n")
    r = run_daemon("--config", str(cfg), "--check")
    assert r.returncode == 0 and "out of reach now (the daemon spools to" in r.stdout and "secret" not in r.stdout



# ----- the metrics port: --check binds it (and lets it go), as the start would -----------------------------------
@pytest.fixture
def busy_port():
    """A port on 127.0.0.1 another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def metrics_config(tmp_path: Path, port: int | str, address: str = "127.0.0.1") -> Path:
    metrics = "false" if port == "off" else f"{{address: '{address}', port: {port}}}"
    return write(tmp_path, GOOD + f"socket: {tmp_path}/ctl.sock\nstate_dir: {tmp_path}/state\nmetrics: {metrics}\n")


def test_check_and_start_refuse_a_taken_metrics_port_in_one_line(tmp_path, busy_port):
    """--check said OK for a metrics port another program listens on, and the service then failed at start. Now
    both say the same line (address, port, the OS's reason), exit 2, before anything is opened or created."""
    cfg = metrics_config(tmp_path, busy_port)
    line = f"polythrottle: error: {cfg}: metrics: cannot serve on 127.0.0.1:{busy_port} (Address already in use)"
    for args in (["--check"], []):
        r = run_daemon("--config", str(cfg), *args)
        assert r.returncode == 2 and r.stdout == "" and r.stderr.strip().splitlines() == [line], (args, r.stderr)
        assert not (tmp_path / "ctl.sock").exists() and not (tmp_path / "state").exists()


def test_check_binds_the_metrics_port_and_lets_it_go(tmp_path):
    from polythrottle.daemon.service import check_metrics

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert check_metrics(load_config(metrics_config(tmp_path, port))) == f"metrics 127.0.0.1:{port}"
    with socket.socket() as s:  # closed again at once: the daemon can have it
        s.bind(("127.0.0.1", port))
        s.listen(1)
    assert check_metrics(load_config(metrics_config(tmp_path, 0))) == "metrics 127.0.0.1:0 (a free port at start)"
    assert check_metrics(load_config(metrics_config(tmp_path, "off"))) == "metrics off"
    cfg = load_config(metrics_config(tmp_path, port, address="192.0.2.1"))  # TEST-NET-1: no address of this host
    with pytest.raises(BadInputError, match=rf"metrics: cannot serve on 192\.0\.2\.1:{port} \(\w"):
        check_metrics(cfg)


def test_check_accepts_the_metrics_port_of_the_daemon_it_would_replace(tmp_path, busy_port):
    """``daemon --check`` of an edited config before ``systemctl restart``: the running daemon holds the port."""
    from polythrottle.daemon import protocol
    from polythrottle.daemon.server import ControlServer
    from polythrottle.daemon.service import check_metrics

    cfg = load_config(metrics_config(tmp_path, busy_port))
    with pytest.raises(BadInputError, match="Address already in use"):  # no daemon answers: another program's
        check_metrics(cfg)
    served = {"pid": 4242, "metrics_url": f"http://127.0.0.1:{busy_port + 1}/metrics"}
    server = ControlServer(cfg.socket, lambda req: protocol.ok(status=served))
    server.start()
    try:
        with pytest.raises(BadInputError, match="Address already in use"):  # a daemon serving another port
            check_metrics(cfg)
        served["metrics_url"] = f"http://127.0.0.1:{busy_port}/metrics"
        assert check_metrics(cfg) == (f"metrics 127.0.0.1:{busy_port} (served by the running daemon, pid 4242; "
                                      "free once it stops)")
    finally:
        server.stop()


@pytest.mark.parametrize("where, words", [("state_dir", "state_dir: "), ("history", "cannot create its directory"),
                                          ("socket", "socket: ")])
def test_check_refuses_a_state_dir_history_or_socket_under_a_regular_file(tmp_path, where, words):
    """--check said OK (the history "created at start"), then the daemon stopped at start: "cannot create the
    state directory ... Not a directory" (the same for the control socket's directory). Whoever runs the check,
    such a directory can never be made."""
    from polythrottle.daemon.service import check_config

    (tmp_path / "afile").write_text("x")
    state = tmp_path / "afile" / "state" if where == "state_dir" else tmp_path / "state"
    history = f"history: {tmp_path}/afile/h.sqlite\n" if where == "history" else ""
    sock = tmp_path / "afile" / "ctl.sock" if where == "socket" else tmp_path / "ctl.sock"
    cfg = write(tmp_path, GOOD + f"socket: {sock}\nstate_dir: {state}\nmetrics: false\n{history}")
    with pytest.raises(BadInputError) as e:
        check_config(cfg)
    assert words in str(e.value) and f"{tmp_path}/afile is not a directory" in str(e.value)


def test_check_refuses_a_model_file_that_is_a_fifo_or_a_device(tmp_path):
    """--check said OK for `model_files: [/dev/zero]` (it exists), then the daemon waited for it forever as
    "model file /dev/zero not found": such a file is never hashed."""
    from polythrottle.daemon.service import check_config

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "model.bin").write_bytes(b"v1")
    for bad in (tmp_path / "pipe", "/dev/zero"):
        cfg = write(tmp_path, GOOD + f"model_files: [{tmp_path}/model.bin, {bad}]\nstate_dir: {tmp_path}/state\n"
                                     f"socket: {tmp_path}/ctl.sock\nmetrics: false\n")
        with pytest.raises(BadInputError, match=f"model_files: {bad} is not a regular file or a directory"):
            check_config(cfg)


def test_waits_for_a_missing_model_then_reports_an_infeasible_slo(tmp_path):
    model = tmp_path / "model.bin"
    fields = dict(device="sim:jetson-tx2", workload="efficientnet-b0", slo_ms=1000, knobs=["gpu_mhz"],
                  optimizer="random", budget=3, retune_budget=2, seed=1, state_dir="state",
                  model_files=["model.bin"], socket="ctl.sock", monitor_interval_s=0, watch_interval_s=0.1,
                  metrics=False)
    cfg = write_config(tmp_path / "daemon.yaml", **fields)
    notify = NotifyListener(tmp_path / "notify.sock")
    d = DaemonProcess(cfg, notify, tmp_path / "daemon.log")
    try:
        s = d.wait(lambda s: s["state"] == "waiting", 30, "the daemon to wait for its model file")
        assert "model.bin not found" in s["last_error"] and s["applied"] is None
        wait_for(lambda: notify.seen("READY", "1"), 30, "READY=1 (up and answering, nothing applied)")
        model.write_bytes(b"v1")
        s = d.wait(lambda s: s["state"] == "serving", 30, "a tune once the model file appeared")
        assert s["last_tune"]["measurements"] == 3 and s["last_error"] is None

        write_config(cfg, **{**fields, "slo_ms": 0.001})  # nothing can meet this
        assert d.request("reload")["ok"]
        s = d.wait(lambda s: s["state"] == "error", 30, "the infeasible tune")
        assert s["applied"] is None and "no config met the 0.001 ms SLO" in s["last_error"]
        assert s["last_tune"]["feasible"] is False
        assert d.request("status")["ok"]  # still answering
        assert d.stop() == 0
    finally:
        d.kill()
        notify.close()


@pytest.mark.parametrize("where", ["state_dir", "history", "socket"])
def test_check_as_a_user_does_not_judge_what_lies_in_a_directory_it_may_not_search(tmp_path, monkeypatch, where):
    """`daemon --check` of root's config run by a user, its state_dir/history/socket under a directory only root may
    search: it said 'error: PermissionError: [Errno 13] ...' (exit 1); permissions are not judged (the daemon runs as
    root). Emulated: tests may run as root."""
    from polythrottle.daemon.service import check_config

    locked = tmp_path / "locked"
    locked.mkdir()
    state = locked / "state" if where == "state_dir" else tmp_path / "state"
    history = f"history: {locked}/h.sqlite\n" if where == "history" else ""
    sock = locked / "run" / "ctl.sock" if where == "socket" else tmp_path / "ctl.sock"
    cfg = write(tmp_path, GOOD + f"socket: {sock}\nstate_dir: {state}\nmetrics: false\n{history}")
    deny_search(monkeypatch, locked)
    assert ": OK (" in check_config(cfg)
