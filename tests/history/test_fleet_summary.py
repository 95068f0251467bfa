"""``polythrottle fleet`` on a history whose rows were changed by hand: one line naming the database, the
row and the column (HistoryError, exit 2), never a TypeError from the summary's arithmetic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from polythrottle.cli import main
from polythrottle.history import HistoryError, HistoryKey, HistoryStore
from polythrottle.history.fleet_summary import fleet_summary

KEY = HistoryKey("sim:jetson-agx-orin", "efficientnet-b0", "abc")
BEST = {"gpu_mhz": 600.0, "batch_size": 4}
ROWS = {
    "slo-text": "UPDATE tunes SET slo_ms = 'soon'",
    "best-config-list": "UPDATE tunes SET best_config = '[1]'",
    "best-config-not-json": "UPDATE tunes SET best_config = '{oops'",
    "energy-text": "UPDATE measurements SET energy_j = 'lots'",
    "latency-negative": "UPDATE measurements SET latency_ms = -1",
}


@pytest.fixture
def history(tmp_path: Path) -> Path:
    db = tmp_path / "h.sqlite"
    with HistoryStore(db) as s:
        for unit in ("A", "B"):
            tid = s.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz", "batch_size"], unit=unit)
            s.add_measurement(tid, step=0, config=BEST, energy_j=0.5, latency_ms=40.0, role="baseline")
            s.finish_tune(tid, best_config=BEST, best_energy_j=0.5, best_latency_ms=40.0, stop_reason="budget")
    return db


@pytest.mark.parametrize("case", sorted(ROWS))
def test_fleet_on_tampered_rows_is_one_line(history: Path, case: str, capsys) -> None:
    with sqlite3.connect(history) as c:
        c.execute(ROWS[case])
    with HistoryStore(history) as s, pytest.raises(HistoryError) as e:
        fleet_summary(s)
    assert f"history database {history}" in str(e.value) and "changed by hand" in str(e.value)
    assert "\n" not in str(e.value)
    capsys.readouterr()
    assert main(["fleet", "--history", str(history)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "changed by hand" in err
