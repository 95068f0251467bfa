"""History store: round trip (SQLite and PostgreSQL), schema versioning, corrupt files, one-line refusals,
and durability under SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from polythrottle.fingerprint import fingerprint_files, fingerprint_state_dict
from polythrottle.history import (
    SCHEMA_VERSION,
    HistoryError,
    HistoryKey,
    HistoryStore,
    default_history_path,
    parse_target,
    space_fingerprint,
)
from polythrottle.history.errors import HistoryLocked
from polythrottle.space import Knob, SearchSpace
from tests.conftest import ROOT, run_cli

KEY = HistoryKey("sim:jetson-agx-orin", "efficientnet-b0", "abc")


def _fill(store: HistoryStore, version: str, n: int = 3, slo_ms: float = 50.0) -> int:
    tid = store.begin_tune(KEY, version, slo_ms=slo_ms, optimizer="cbo", knobs=["gpu_mhz"])
    for i in range(n):
        store.add_measurement(tid, step=i, config={"gpu_mhz": 100.0 * (i + 1)}, energy_j=1.0 / (i + 1),
                              latency_ms=10.0 * (i + 1), role="explore" if i else "baseline")
    store.finish_tune(tid, best_config={"gpu_mhz": 200.0}, best_energy_j=0.5, best_latency_ms=20.0,
                      baseline_energy_j=1.0, stop_reason="budget")
    return tid


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path: Path) -> str:
    """A history location of each backend (PostgreSQL: a fresh database in the session's cluster)."""
    if request.param == "sqlite":
        return str(tmp_path / "sub" / "h.sqlite")
    return request.getfixturevalue("pg_url")


def test_round_trip_and_versions(target: str) -> None:
    path = target
    with HistoryStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        _fill(s, "v1", 3)
        _fill(s, "v2", 2, slo_ms=40.0)
    with HistoryStore(path) as s:  # reopened: everything is there
        obs = s.observations(KEY, model_version="v1")
        assert [o.step for o in obs] == [0, 1, 2]
        assert obs[1].config == {"gpu_mhz": 200.0} and obs[1].energy_j == 0.5 and obs[0].role == "baseline"
        assert len(s.observations(KEY)) == 5
        assert [v.model_version for v in s.model_versions(KEY)] == ["v1", "v2"]
        assert s.previous_version(KEY, "v2") == "v1"
        assert s.previous_version(KEY, "v1") == "v2"
        best = s.best(KEY, model_version="v2")
        assert best is not None and best.config == {"gpu_mhz": 200.0} and best.measurements == 2
        assert s.best(KEY, model_version="v2", slo_ms=50.0) is None  # a best found for another SLO
        assert s.best(KEY, model_version="v3") is None
        other = HistoryKey(KEY.device, "bert-base", KEY.space)
        assert s.observations(other) == [] and s.model_versions(other) == []
        assert s.keys() == [KEY]
        assert s.integrity_check() == "ok"
    if "://" not in target:
        con = sqlite3.connect(target)
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.close()


def test_unfinished_tune_keeps_measurements_but_no_best(target: str) -> None:
    with HistoryStore(target) as s:
        tid = s.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"])
        s.add_measurement(tid, step=0, config={"gpu_mhz": 1.0}, energy_j=1.0, latency_ms=1.0, role="baseline")
        assert len(s.observations(KEY, model_version="v1")) == 1
        assert s.best(KEY, model_version="v1") is None
        with pytest.raises(HistoryError, match="refusing"):
            s.add_measurement(tid, step=1, config={}, energy_j=float("nan"), latency_ms=1.0, role="explore")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    HistoryStore(path).close()
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(HistoryError, match=rf"schema version {SCHEMA_VERSION + 1}, newer"):
        HistoryStore(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_corrupt_or_foreign_database_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "h.sqlite"
    if damage == "garbage":
        path.write_bytes(b"this is not a database at all\n" * 200)
    elif damage == "truncated":
        with HistoryStore(path) as s:
            for v in range(30):
                _fill(s, f"v{v}", 20)
        con = sqlite3.connect(path)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        data = path.read_bytes()
        path.write_bytes(data[:100] + os.urandom(4096) + data[4196 : len(data) // 2])
    else:
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE users (name TEXT)")
        con.commit()
        con.close()
    with pytest.raises(HistoryError) as e:
        HistoryStore(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_cli_reports_corrupt_history_in_one_line(tmp_path: Path, small_table: Path) -> None:
    bad = tmp_path / "h.sqlite"
    bad.write_bytes(b"\x00garbage" * 1000)
    r = run_cli("tune", "--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "3",
                "--history", str(bad), "--json")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "corrupt" in r.stderr and "Traceback" not in r.stderr


_WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from polythrottle.history import HistoryKey, HistoryStore
    s = HistoryStore(sys.argv[1])
    key = HistoryKey("d", "w", "s")
    tid = s.begin_tune(key, "v1", slo_ms=10, optimizer="cbo", knobs=["k"])
    i = 0
    while True:
        s.add_measurement(tid, step=i, config={{"k": i, "pad": "x" * 2000}}, energy_j=1.0 + i,
                          latency_ms=1.0, role="explore")
        print(i, flush=True)   # printed only after the commit returned
        i += 1
    """
)


def test_sigkill_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(root=str(ROOT)))
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    committed = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        committed = int(line)
        if committed >= 150:
            break
    os.kill(proc.pid, signal.SIGKILL)  # almost surely inside a transaction: the loop does nothing else
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with HistoryStore(path) as s:
        assert s.integrity_check() == "ok"
        steps = [o.step for o in s.observations(HistoryKey("d", "w", "s"))]
    assert steps[: committed + 1] == list(range(committed + 1))  # every committed row, in order
    assert len(steps) >= committed + 1


def test_space_fingerprint_and_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a = SearchSpace.product([Knob("gpu_mhz", (100.0, 200.0)), Knob("batch_size", (1, 2))])
    b = SearchSpace.product([Knob("gpu_mhz", (100.0, 300.0)), Knob("batch_size", (1, 2))])
    assert space_fingerprint(a) == space_fingerprint(a) != space_fingerprint(b)
    assert space_fingerprint(a, {"x": 1}) != space_fingerprint(a, {"x": 2})
    monkeypatch.setenv("POLYTHROTTLE_STATE_DIR", str(tmp_path))
    assert default_history_path() == tmp_path / "history.sqlite"


def test_fingerprints(tmp_path: Path) -> None:
    import torch

    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    fp = fingerprint_files([f])
    assert fp.startswith("sha256:") and fp == fingerprint_files([f])
    f.write_bytes(b"abd")
    assert fingerprint_files([f]) != fp
    m = torch.nn.Linear(3, 2)
    fp1 = fingerprint_state_dict(m)
    assert fp1 == fingerprint_state_dict(m.state_dict())
    with torch.no_grad():
        m.weight[0, 0] += 1.0
    assert fingerprint_state_dict(m) != fp1
    from polythrottle.errors import BadInputError

    with pytest.raises(BadInputError, match="not found"):
        fingerprint_files([tmp_path / "missing.pt"])


def test_units_client_ids_and_repeats_store_once(target: str) -> None:
    with HistoryStore(target) as s:
        a = s.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit="A", client_id="tune-a")
        assert s.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit="A",
                            client_id="tune-a") == a  # a repeated begin (lost reply) is the same tune
        b = s.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit="B")
        legacy = s.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"])  # unit unknown: ""
        for tid, e in ((a, 1.0), (b, 2.0), (legacy, 3.0)):
            for _ in range(2):  # the second write of a step is a repeat: stored once
                s.add_measurement(tid, step=0, config={"gpu_mhz": 1.0}, energy_j=e, latency_ms=1.0, role="baseline")
        assert sorted(o.energy_j for o in s.observations(KEY)) == [1.0, 2.0, 3.0]
        own_a = s.observations(KEY, unit="A")
        assert sorted((o.unit, o.energy_j) for o in own_a) == [("", 3.0), ("A", 1.0)]  # "" counts as own, never B's
        s.finish_tune(b, best_config={"gpu_mhz": 1.0}, best_energy_j=2.0, best_latency_ms=1.0)
        assert s.best(KEY, model_version="v1", unit="A") is None
        best_b = s.best(KEY, model_version="v1", unit="B")
        assert best_b is not None and best_b.unit == "B"
        rows_t, rows_m = s.rows()
        assert {t.client_id for t in rows_t} >= {"tune-a"} and "tune-a:0" in {m.client_id for m in rows_m}
        s.merge(rows_t, rows_m)  # everything again: nothing doubles, a finished tune stays finished
        assert len(s.observations(KEY)) == 3
        assert s.tunes(unit="B")[0].status == "done"
        with pytest.raises(HistoryError, match="no tune 999"):
            s.add_measurement(999, step=0, config={}, energy_j=1.0, latency_ms=1.0, role="explore")


def test_newer_revision_is_refused(target: str) -> None:
    import sqlalchemy as sa

    HistoryStore(target).close()
    engine = sa.create_engine(parse_target(target).url)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE polythrottle_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(HistoryError, match="revision 0099, newer than this PolyThrottle supports"):
        HistoryStore(target)


def test_foreign_tables_in_a_server_database_are_refused(pg_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(parse_target(pg_url).url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE tunes (x int)"))
    engine.dispose()
    with pytest.raises(HistoryError, match="tables tunes not written by PolyThrottle"):
        HistoryStore(pg_url)


def test_locked_unwritable_and_missing_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with HistoryStore(path, timeout_s=0.2) as s:
        tid = s.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"])
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(HistoryError, match="is locked by another process") as e:
                s.add_measurement(tid, step=0, config={}, energy_j=1.0, latency_ms=1.0, role="explore")
            assert "\n" not in str(e.value)
            # transient, not bad input: HistoryLocked, exit 6 (a spooled history keeps the write instead)
            assert isinstance(e.value, HistoryLocked) and e.value.exit_code == 6
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HistoryError, match="cannot create its directory"):
        HistoryStore(blocker / "sub" / "h.sqlite")
    with pytest.raises(HistoryError, match="no history database at"):
        HistoryStore(tmp_path / "missing.sqlite", create=False)
    with pytest.raises(HistoryError, match="unsupported scheme 'mysql'"):
        HistoryStore("mysql://u:pw@h/db")


def test_a_postgresql_connection_notices_a_silent_server(pg_url):
    # an established connection to a server that stops answering (a fleet unit's uplink drops mid-query)
    # must fail in seconds, not after the kernel's ~15 min of retransmissions: the connection is made with
    # TCP keepalives and a TCP user timeout (libpq parameters; a dropped link cannot be simulated here)
    from polythrottle.history.engine import KEEPALIVE_COUNT, KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, make_engine
    from polythrottle.history.target import parse_target

    engine = make_engine(parse_target(pg_url), 5.0)
    try:
        raw = engine.raw_connection()
        try:
            params = raw.driver_connection.info.get_parameters()
        finally:
            raw.close()
    finally:
        engine.dispose()
    assert params["keepalives"] == "1"
    assert int(params["keepalives_idle"]) == KEEPALIVE_IDLE_S
    assert int(params["keepalives_interval"]) == KEEPALIVE_INTERVAL_S
    assert int(params["keepalives_count"]) == KEEPALIVE_COUNT
    assert 0 < int(params["tcp_user_timeout"]) <= 60_000
    assert KEEPALIVE_IDLE_S + KEEPALIVE_INTERVAL_S * KEEPALIVE_COUNT <= 60


@pytest.mark.parametrize("files", [5, [5], [None], [b"/etc/hostname"]])
def test_model_files_that_are_not_paths_are_bad_input(files) -> None:
    import polythrottle as pt
    from polythrottle.errors import BadInputError

    with pytest.raises(BadInputError, match="model files must be paths"):
        fingerprint_files(files)
    with pytest.raises(BadInputError, match="model files must be paths"):
        pt.model_version_of(model_files=files)
