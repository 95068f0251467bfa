"""``polythrottle notify``: a malformed request is refused here (exit 2), before the daemon is asked."""

import pytest

from polythrottle.cli import main


@pytest.mark.parametrize("version, words", [("", "model_version"), (" ", "model_version"),
                                            ("v" * 300, "at most 200"), ("a\tb", "printable")])
def test_bad_model_version_is_refused_before_sending(tmp_path, capsys, version, words):
    code = main(["notify", "model-updated", "--model-version", version, "--socket", str(tmp_path / "none.sock")])
    _, err = capsys.readouterr()
    assert code == 2 and words in err and err.count("\n") == 1  # not exit 1 "no daemon control socket"


class _FakeDaemon:
    """Answers each request line with the next canned reply (the daemon's protocol: one line each way)."""

    def __init__(self, path, replies):
        import socket
        import threading

        self.replies = list(replies)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import json

        while self.replies:
            conn, _ = self.sock.accept()
            with conn:
                buf = b""
                while not buf.endswith(b"\n"):
                    buf += conn.recv(4096)
                conn.sendall((json.dumps(self.replies.pop(0)) + "\n").encode())


def _status(last_done, last_failed):
    return {"ok": True, "status": {"state": "serving", "last_error": "reload refused: unknown workload 'x'",
                                   "jobs": {"queued": 0, "last_done": last_done, "last_failed": last_failed}}}


@pytest.mark.parametrize("last_failed, code", [(7, 1), (6, 0)])
def test_wait_exits_1_when_the_daemon_refused_the_job(tmp_path, capsys, last_failed, code):
    """A reload the daemon accepted, then refused (a workload it cannot open), leaves it serving the old config:
    ``notify --wait`` says so with exit 1, not 0."""
    sock = tmp_path / "ctl.sock"
    daemon = _FakeDaemon(sock, [{"ok": True, "queued": "reload", "job": 7}, _status(7, last_failed)])
    assert main(["notify", "reload", "--wait", "--json", "--socket", str(sock)]) == code
    daemon.sock.close()
    capsys.readouterr()


@pytest.mark.parametrize("snap", [{"state": "serving"}, {"state": "serving", "jobs": [7]}, [1, 2, 3]])
def test_wait_on_a_status_without_jobs_is_one_line(tmp_path, capsys, snap):
    """A daemon of another version (no `jobs` in its status) or not a daemon: `notify --wait` said
    "error: KeyError: 'jobs'" (or a TypeError)."""
    sock = tmp_path / "ctl.sock"
    daemon = _FakeDaemon(sock, [{"ok": True, "queued": "reload", "job": 7}, {"ok": True, "status": snap}])
    try:
        assert main(["notify", "reload", "--wait", "--socket", str(sock)]) == 1
    finally:
        daemon.sock.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("has no jobs.last_done to wait on" in err[0] or "malformed reply" in err[0]), err
    assert "Error" not in err[0], err


def _serving(path, handler):
    from polythrottle.daemon.server import ControlServer

    server = ControlServer(path, handler)
    server.start()
    return server


@pytest.mark.parametrize("event", ["reload", "model-updated"])
def test_a_request_the_daemon_refuses_for_bad_input_exits_2(tmp_path, capsys, event):
    """The daemon refusing a reload (the config it re-read is bad) or a model change (a file it does not have)
    is bad input, exit 2 as the README's table says; it exited 1, as for a daemon that cannot be reached."""
    from polythrottle.daemon.config import ConfigError

    def refuse(req):
        raise ConfigError("/etc/polythrottle/daemon.yaml: slo_ms: must be > 0")

    server = _serving(tmp_path / "ctl.sock", refuse)
    try:
        code = main(["notify", event, "--socket", str(tmp_path / "ctl.sock")])
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "slo_ms: must be > 0" in err, err


@pytest.mark.parametrize("reply, code", [
    ({"ok": False, "error": "reload refused", "exit_code": 2}, 2),
    ({"ok": False, "error": "no such device", "exit_code": 5}, 5),
    ({"ok": False, "error": "no", "exit_code": 0}, 1),  # a refusal never exits 0
    ({"ok": False, "error": "no", "exit_code": 3}, 1),
    ({"ok": False, "error": "no", "exit_code": True}, 1),
    ({"ok": False, "error": "no", "exit_code": "2"}, 1),
    ({"ok": False, "error": "no", "exit_code": 143}, 1),
    ({"ok": False, "error": "internal error: KeyError: 'x'"}, 1),  # an older daemon, or not bad input
])
def test_the_exit_code_a_refusal_carries_is_used_only_when_it_is_one_of_ours(tmp_path, capsys, reply, code):
    sock = tmp_path / "ctl.sock"
    daemon = _FakeDaemon(sock, [reply])
    try:
        assert main(["notify", "reload", "--socket", str(sock)]) == code
    finally:
        daemon.sock.close()
    assert capsys.readouterr().err.count("\n") == 1
