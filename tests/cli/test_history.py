"""``polythrottle history ls|show|export`` and ``polythrottle fleet`` on SQLite and PostgreSQL histories."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from polythrottle.cli import main
from polythrottle.history import HistoryKey, HistoryStore
from tests.conftest import run_cli

KEY = HistoryKey("sim:jetson-agx-orin", "efficientnet-b0", "abc")
BEST = {"gpu_mhz": 600.0, "batch_size": 4}


def _fleet(target: str) -> None:
    """3 units tune v1 (all recommend BEST; unit C's copy is 10% hungrier), unit A also tunes v2."""
    with HistoryStore(target) as s:
        for unit, scale in (("A", 1.0), ("B", 1.05), ("C", 1.10)):
            tid = s.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz", "batch_size"], unit=unit)
            s.add_measurement(tid, step=0, config={"gpu_mhz": 900.0, "batch_size": 1}, energy_j=1.0 * scale,
                              latency_ms=10.0, role="baseline")
            s.add_measurement(tid, step=1, config=BEST, energy_j=0.5 * scale, latency_ms=40.0 * scale, role="explore")
            s.finish_tune(tid, best_config=BEST, best_energy_j=0.5 * scale, best_latency_ms=40.0 * scale,
                          baseline_energy_j=1.0 * scale, stop_reason="budget")
        tid = s.begin_tune(KEY, "v2", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz", "batch_size"], unit="A")
        s.add_measurement(tid, step=0, config=BEST, energy_j=0.6, latency_ms=41.0, role="baseline")


class _Run:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """``polythrottle ARGS`` in this process (fast); returns code, stdout, stderr."""
    def run(*args: str) -> _Run:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse errors
            code = int(e.code or 0)
        out = capsys.readouterr()
        return _Run(code, out.out, out.err)

    return run


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request, tmp_path: Path) -> str:
    target = str(tmp_path / "h.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    _fleet(target)
    return target


def test_ls_show_export(history: str, tmp_path: Path, cli) -> None:
    r = cli("history", "ls", "--history", history)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "STARTED", "DEVICE", "UNIT"] and len(lines) == 5
    assert "running" in lines[1] and " A " in lines[1]  # newest first: the unfinished v2 tune
    r = cli("history", "ls", "--history", history, "--unit", "B", "--json")
    (b,) = json.loads(r.stdout)
    assert b["unit"] == "B" and b["board"] == "jetson-agx-orin" and b["measurements"] == 2 and b["status"] == "done"

    r = cli("history", "show", str(b["id"]), "--history", history)
    assert r.returncode == 0 and "unit B" in r.stdout and "STEP" in r.stdout and "baseline" in r.stdout
    r = cli("history", "show", str(b["id"]), "--history", history, "--json")
    doc = json.loads(r.stdout)
    assert [m["step"] for m in doc["measurements"]] == [0, 1] and doc["best_config"] == BEST

    r = cli("history", "export", "--history", history)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 7 and {r_["unit"] for r_ in rows} == {"A", "B", "C"}
    first = rows[0]
    assert first["board"] == "jetson-agx-orin" and first["device"] == "sim:jetson-agx-orin"
    assert first["workload"] == "efficientnet-b0" and first["model_version"] == "v1"
    assert json.loads(first["config"]) == {"batch_size": 1, "gpu_mhz": 900.0}
    assert float(first["energy_j"]) == 1.0 and float(first["latency_ms"]) == 10.0 and first["time"].endswith("Z")
    out = tmp_path / "m.json"
    r = cli("history", "export", "--history", history, "--format", "json", "--out", str(out),
                "--model-version", "v2")
    assert r.returncode == 0 and "wrote 1 measurements" in r.stderr
    (m,) = json.loads(out.read_text())
    assert m["config"] == BEST and m["unit"] == "A" and m["measurement_id"].endswith(":0")


def test_fleet_summary(history: str, cli) -> None:
    r = cli("fleet", "--history", history, "--json")
    assert r.returncode == 0, r.stderr
    groups = {g["model_version"]: g for g in json.loads(r.stdout)}
    g = groups["v1"]
    assert (g["units"], g["tunes"], g["measurements"], g["best_tunes"]) == (3, 3, 6, 3)
    assert g["best_config"] == BEST and g["config_units"] == 3 and g["board"] == "jetson-agx-orin"
    assert g["energy_j"]["min"] == pytest.approx(0.5) and g["energy_j"]["max"] == pytest.approx(0.55)
    assert g["energy_j"]["median"] == pytest.approx(0.525) and 0.03 < g["energy_j"]["cv"] < 0.05
    assert g["feasible_units"] == 3
    assert groups["v2"]["best_config"] is None and groups["v2"]["units"] == 1
    r = cli("fleet", "--history", history)
    assert "3 units, 3 tunes, 6 measurements" in r.stdout and "best (3 tunes): batch_size=4, gpu_mhz=600.0" in r.stdout


def test_errors_are_one_line(tmp_path: Path, cli) -> None:
    missing = tmp_path / "none.sqlite"
    r = run_cli("history", "ls", "--history", str(missing))  # a real process: one line on stderr, exit 2
    assert r.returncode == 2 and r.stderr == f"polythrottle: error: no history database at {missing}\n"
    for args in (("history", "ls"), ("fleet",), ("history", "export")):
        r = cli(*args, "--history", str(missing))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no history database at" in r.stderr
    assert not missing.exists()  # reading never creates a history
    target = str(tmp_path / "h.sqlite")
    HistoryStore(target).close()
    r = cli("history", "show", "42", "--history", target)
    assert r.returncode == 2 and "has no tune 42" in r.stderr
    r = cli("history", "export", "--history", target, "--format", "xml")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_an_empty_history_argument_is_refused_not_the_default(tmp_path: Path, cli, monkeypatch) -> None:
    default = tmp_path / "default.sqlite"
    monkeypatch.setenv("POLYTHROTTLE_HISTORY_URL", str(default))
    _fleet(str(default))
    for args in (("history", "ls"), ("history", "export"), ("fleet",)):
        r = cli(*args, "--history", "")
        assert r.returncode == 2 and r.stdout == "" and r.stderr == "polythrottle: error: history location is empty\n"


def test_export_to_an_unwritable_out_is_exit_2_and_writes_nothing(tmp_path: Path, cli) -> None:
    target = str(tmp_path / "h.sqlite")
    _fleet(target)
    r = cli("history", "export", "--history", target, "--out", str(tmp_path / "no" / "such" / "dir.csv"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    r = cli("history", "export", "--history", target, "--out", "/proc/pt-export.csv")  # a directory no file fits in
    assert r.returncode == 2 and r.stderr.startswith("polythrottle: error: --out /proc/pt-export.csv: cannot write")
    assert r.stderr.count("\n") == 1


def test_export_to_a_fifo_writes_into_it_and_leaves_it_a_fifo(tmp_path: Path, cli) -> None:
    import os
    import stat
    import threading

    target = str(tmp_path / "h.sqlite")
    _fleet(target)
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    r = cli("history", "export", "--history", target, "--out", str(fifo))
    reader.join(timeout=30)
    assert r.returncode == 0, r.stderr
    assert len(list(csv.DictReader(io.StringIO(got[0])))) == 7
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # not replaced by a regular file


def test_export_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    target = tmp_path / "h.sqlite"
    with HistoryStore(target) as s:  # enough rows that the writer outlives the reader
        for t in range(40):
            tid = s.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit=str(t))
            for i in range(50):
                s.add_measurement(tid, step=i, config={"gpu_mhz": float(i), "pad": "x" * 200}, energy_j=1.0,
                                  latency_ms=10.0, role="explore")
    p = subprocess.Popen([sys.executable, "-m", "polythrottle", "history", "export", "--history", str(target)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.readline()
    p.stdout.close()  # `| head -1`
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and err == ""


def test_stored_text_cannot_break_the_tables_or_drive_the_terminal(tmp_path: Path, cli) -> None:
    """Workload names, model versions and devices are written by any fleet member: a newline or a terminal
    escape in them is shown escaped by ls, show and fleet (JSON keeps the text as it is). This store refuses
    to write such text; an older member or a hand edit can still put it there (written here with SQL)."""
    import sqlite3

    target = str(tmp_path / "h.sqlite")
    evil = HistoryKey("sim:board\u202eevil", "wl\x1b[2J\nnext line", "abc")
    version = "v\x1b]0;pwned\x07 [bold]x"
    with HistoryStore(target) as s:
        tid = s.begin_tune(HistoryKey("sim:board", "wl", "abc"), "v", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"])
        s.add_measurement(tid, step=0, config={"gpu_mhz": 900.0}, energy_j=1.0, latency_ms=10.0, role="baseline")
        s.finish_tune(tid, best_config={"gpu_mhz": 900.0}, best_energy_j=1.0, best_latency_ms=10.0)
    with sqlite3.connect(target) as db:
        db.execute("UPDATE tunes SET device = ?, workload = ?, model_version = ?, unit = ? WHERE id = ?",
                   (evil.device, evil.workload, version, "u\r1", tid))
    db.close()
    for args, lines in ((("history", "ls"), 2), (("history", "show", str(tid)), 7), (("fleet",), 4)):
        r = cli(*args, "--history", target)
        assert r.returncode == 0, r.stderr
        assert "\x1b" not in r.stdout and "\r" not in r.stdout and "\u202e" not in r.stdout and "\x07" not in r.stdout
        assert len(r.stdout.splitlines()) == lines, r.stdout
        assert "wl\\x1b[2J\\nnext line" in r.stdout and "[bold]x" in r.stdout
    (t,) = json.loads(cli("history", "ls", "--history", target, "--json").stdout)
    assert t["workload"] == evil.workload and t["model_version"] == version


@pytest.mark.parametrize("args", [("ls", "--limit", "99999999999999999999"), ("show", "99999999999999999999"),
                                  ("ls", "--limit", "-1"), ("show", "x")])
def test_hostile_numbers_are_one_line_exit_2(tmp_path: Path, cli, args) -> None:
    target = str(tmp_path / "h.sqlite")
    HistoryStore(target).close()
    r = cli("history", *args, "--history", target)  # a huge one used to be exit 1, OverflowError
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Overflow" not in r.stderr, r.stderr


def test_export_over_the_history_itself_is_refused(tmp_path: Path, cli) -> None:
    target = tmp_path / "h.sqlite"
    _fleet(str(target))
    before = target.read_bytes()
    for out in (target, Path(f"{target}-wal"), tmp_path / "." / "h.sqlite"):
        r = cli("history", "export", "--history", str(target), "--out", str(out))
        assert r.returncode == 2 and "is the history database itself" in r.stderr and r.stderr.count("\n") == 1
    assert target.read_bytes() == before  # was replaced by the CSV: the history lost
    with HistoryStore(target) as s:
        assert len(s.tunes()) == 4
