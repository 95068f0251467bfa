"""``polythrottle.cli.main``: the one place the CLI turns what a command raised into one line and an exit code;
here, standard output that cannot be written (a full disk, ``> /dev/full``) and one whose reader went away."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from polythrottle.cli import main
from polythrottle.history import HistoryKey, HistoryStore
from tests.conftest import ROOT, deny_search

FULL = "polythrottle: error: cannot write to standard output: No space left on device"


@pytest.fixture
def history(tmp_path: Path) -> Path:
    path = tmp_path / "h.sqlite"
    with HistoryStore(path) as s:
        tid = s.begin_tune(HistoryKey("sim:jetson-agx-orin", "wl", "abc"), "v1", slo_ms=50, optimizer="cbo",
                           knobs=["gpu_mhz"])
        s.add_measurement(tid, step=0, config={"gpu_mhz": 900.0}, energy_j=1.0, latency_ms=10.0, role="baseline")
        s.finish_tune(tid, best_config={"gpu_mhz": 900.0}, best_energy_j=1.0, best_latency_ms=10.0)
    return path


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [
    ["--version"],
    ["--help"],
    ["tune", "--help"],
    ["devices"],
    ["history", "ls", "--history", "HISTORY"],
    ["tune", "--device", "replay:TABLE", "--slo-ms", "50", "--budget", "3", "--optimizer", "random", "--json", "--quiet"],
])
def test_stdout_that_cannot_be_written_is_one_line_naming_it(args, history, small_table) -> None:
    """It said 'error: OSError: [Errno 28] No space left on device' (not naming stdout), and --version/--help exited
    0 having printed nothing."""
    args = [a.replace("HISTORY", str(history)).replace("TABLE", str(small_table)) for a in args]
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "polythrottle", *args], stdout=full, stderr=subprocess.PIPE,
                           text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and r.stderr == FULL + "\n", r.stderr


class _Full(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_write_in_process_is_the_command_error_and_stdout_is_given_back(history, monkeypatch, capsys) -> None:
    full = _Full()
    monkeypatch.setattr(sys, "stdout", full)
    code = main(["history", "ls", "--history", str(history), "--json"])
    assert code == 1 and sys.stdout is full  # the command's stdout is put back
    assert capsys.readouterr().err == FULL + "\n"


def test_a_closed_pipe_stays_quiet(history) -> None:
    p = subprocess.Popen([sys.executable, "-m", "polythrottle", "--help"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=ROOT)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # the reader went away before anything was read
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) in (0, 141) and "Traceback" not in err and "error" not in err


@pytest.mark.parametrize(("args", "named"), [
    (["--bogus"], "--bogus"),
    (["-x"], "-x"),
    (["--bogus=3"], "--bogus"),
    (["--bogus", "tune"], "--bogus"),
    (["--debug", "--bogus", "history", "ls"], "--bogus"),
    (["tune", "--bogus"], "--bogus"),
    (["tune", "--device", "sim:jetson-agx-orin", "--bogus"], "--bogus"),
    (["history", "--nope"], "--nope"),
    (["notify", "--nope"], "--nope"),
])
def test_an_unknown_option_is_named_before_a_missing_argument(args, named, capsys) -> None:
    """`polythrottle --bogus` said 'the following arguments are required: COMMAND' (argparse checks the required
    arguments first), not naming the option; so did `tune --bogus` (required: --device, --slo-ms)."""
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == f"polythrottle: error: unrecognized arguments: {named}\n", err


@pytest.mark.parametrize(("args", "said"), [
    ([], "the following arguments are required: COMMAND"),
    (["--debug"], "the following arguments are required: COMMAND"),
    (["--deb", "tune"], "the following arguments are required: --device, --slo-ms"),  # an abbreviation is known
    (["tune", "--slo-ms", "-5"], "the following arguments are required: --device"),  # a negative value, no option
    (["tune", "--dev", "x"], "the following arguments are required: --slo-ms"),
])
def test_a_missing_argument_alone_is_still_named(args, said, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and capsys.readouterr().err == f"polythrottle: error: {said}\n"


@pytest.fixture
def locked(tmp_path: Path, monkeypatch) -> Path:
    """A directory this process may not search, as for a user without x on it (emulated: tests may run as root)."""
    d = tmp_path / "locked"
    d.mkdir()
    deny_search(monkeypatch, d)
    return d


@pytest.mark.parametrize("args", [
    ["tune", "--device", "replay:LOCKED/t.csv", "--slo-ms", "50", "--no-history"],
    ["profile", "--device", "replay:LOCKED/t.csv", "--out", "TMP/o.csv"],
    ["tune", "--device", "sim:jetson-agx-orin", "--workload", "resnet50", "--slo-ms", "50", "--budget", "3",
     "--model-file", "LOCKED/m.bin", "--history", "TMP/h.sqlite"],
    ["history", "ls", "--history", "LOCKED/h.sqlite"],
    ["fleet", "--history", "LOCKED/h.sqlite"],
    ["tune", "--device", "sim:LOCKED/x.yaml", "--slo-ms", "50", "--no-history"],  # said 'profile file ... not found'
    ["profile", "--device", "sim:LOCKED/x.yaml", "--out", "TMP/o.csv"],
])
def test_a_file_given_in_a_directory_this_user_may_not_search_is_bad_input(args, locked, tmp_path, capsys) -> None:
    """It said 'error: PermissionError: [Errno 13] Permission denied: ...' with exit 1 (a device error); the same
    file unreadable itself was already bad input (exit 2, as the README's table says)."""
    args = [a.replace("LOCKED", str(locked)).replace("TMP", str(tmp_path)) for a in args]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{locked}{os.sep}" in err and "permission denied" in err, err
    assert "PermissionError" not in err and "Errno" not in err, err


def test_a_device_file_refused_unconverted_needs_root_not_bad_input(monkeypatch, capsys) -> None:
    """A raw PermissionError on a board's or the kernel's file (a device layer that forgot to convert it) is exit 4,
    'needs root', as the README's exit table says; the catch-all for files given made it bad input (exit 2)."""
    import polythrottle.cli.devices as devices_cli

    path = "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b/max_freq"

    def refused(*a, **kw):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(devices_cli, "probe_all", refused)
    code = main(["devices"])
    err = capsys.readouterr().err
    assert code == 4 and err.count("\n") == 1 and path in err and "needs root" in err, err
