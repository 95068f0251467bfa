"""Reading tunes back (``history ls``/``show``/``export``, ``plot --history``) from a history whose tune or
measurement rows were changed by hand: one line naming the database, the row and the column (exit 2)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from polythrottle.cli import main
from polythrottle.history import HistoryError, HistoryKey, HistoryStore

KEY = HistoryKey("sim:jetson-agx-orin", "efficientnet-b0", "abc")
BEST = {"gpu_mhz": 600.0, "batch_size": 4}
TUNE_ROWS = {
    "slo-text": "UPDATE tunes SET slo_ms = 'soon'",
    "knobs-text": "UPDATE tunes SET knobs = 'gpu'",
    "knobs-object": "UPDATE tunes SET knobs = '{}'",
    "started-text": "UPDATE tunes SET started_at = 'today'",
    "finished-text": "UPDATE tunes SET finished_at = 'later'",
    "best-config-list": "UPDATE tunes SET best_config = '[1]'",
    "best-energy-text": "UPDATE tunes SET best_energy_j = 'x'",
}
MEASUREMENT_ROWS = {
    "config-not-json": "UPDATE measurements SET config = '{not json' WHERE step = 1",
    "energy-text": "UPDATE measurements SET energy_j = 'lots' WHERE step = 1",
}


@pytest.fixture
def history(tmp_path: Path) -> Path:
    db = tmp_path / "h.sqlite"
    with HistoryStore(db) as s:
        tid = s.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz", "batch_size"], unit="A")
        s.add_measurement(tid, step=0, config={"gpu_mhz": 900.0, "batch_size": 1}, energy_j=1.0, latency_ms=10.0,
                          role="baseline")
        s.add_measurement(tid, step=1, config=BEST, energy_j=0.5, latency_ms=40.0, role="explore")
        s.finish_tune(tid, best_config=BEST, best_energy_j=0.5, best_latency_ms=40.0, baseline_energy_j=1.0,
                      stop_reason="budget")
    return db


def _tamper(db: Path, sql: str) -> None:
    with sqlite3.connect(db) as c:
        c.execute(sql)


def _one_line(e: HistoryError, db: Path) -> None:
    text = str(e)
    assert e.exit_code == 2 and "\n" not in text and len(text) < 400
    assert f"history database {db}" in text and "changed by hand" in text


@pytest.mark.parametrize("sql", [*TUNE_ROWS.values(), *MEASUREMENT_ROWS.values()],
                         ids=[*TUNE_ROWS, *MEASUREMENT_ROWS])
def test_tampered_rows_read_back_are_one_line(history: Path, sql: str, capsys) -> None:
    _tamper(history, sql)
    with HistoryStore(history) as s:
        for read in (s.tunes, lambda: s.tune(1), lambda: list(s.export())):
            try:
                read()
            except HistoryError as e:
                _one_line(e, history)
    for args in (["history", "ls"], ["history", "show", "1"], ["history", "export"]):
        capsys.readouterr()
        code = main([*args, "--history", str(history)])
        err = capsys.readouterr().err
        assert code in (0, 2), (args, err)
        if code == 2:
            assert "history database" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("case", ["slo-text", "knobs-text", "started-text", "best-config-list", "best-energy-text"])
def test_tampered_tune_rows_are_refused_by_ls_and_show(history: Path, case: str) -> None:
    _tamper(history, TUNE_ROWS[case])
    with HistoryStore(history) as s:
        with pytest.raises(HistoryError) as e:
            s.tunes()
        _one_line(e.value, history)
        with pytest.raises(HistoryError) as e:
            s.tune(1)
        _one_line(e.value, history)


def test_tampered_measurement_rows_are_refused_by_show_and_export(history: Path) -> None:
    _tamper(history, MEASUREMENT_ROWS["config-not-json"])
    with HistoryStore(history) as s:
        with pytest.raises(HistoryError) as e:
            s.tune(1)
        _one_line(e.value, history)
        with pytest.raises(HistoryError) as e:
            list(s.export())
        _one_line(e.value, history)
