"""SpooledHistory against a real PostgreSQL that goes away: down at open, stopped mid-tune and restarted;
every measurement ends up on the server exactly once, and the tune finishes on what it has."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from polythrottle.devices import DeviceOptions, open_device
from polythrottle.history import (
    HistoryError,
    HistoryKey,
    HistoryStore,
    HistoryUnavailable,
    SpooledHistory,
    open_history,
)
from polythrottle.tuning.session import run_tune
from polythrottle.tuning.tuner import TuneRecord

KEY = HistoryKey("sim:jetson-agx-orin", "efficientnet-b0", "abc")


@pytest.fixture
def restart(pg_cluster):
    """The session cluster, guaranteed running again after the test."""
    yield pg_cluster
    if not pg_cluster.running():
        pg_cluster.start()


def _server_rows(url: str, tune_client_id: str) -> list[tuple[str, int]]:
    with HistoryStore(url) as s:
        _, mrows = s.rows()
    return sorted((m.client_id, m.step) for m in mrows if m.tune_client_id == tune_client_id)


def test_server_down_at_open_then_back(pg_url: str, restart, tmp_path: Path) -> None:
    HistoryStore(pg_url).close()  # schema created while it was up
    restart.stop()
    h = SpooledHistory(pg_url, tmp_path, retry_s=0.0, timeout_s=2.0)
    assert not h.online and "unreachable" in (h.last_error or "")
    tid = h.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit="U1")
    assert tid < 0  # begun on the spool
    for i in range(3):
        h.add_measurement(tid, step=i, config={"gpu_mhz": 100.0 * (i + 1)}, energy_j=1.0 + i, latency_ms=10.0,
                          role="explore")
    assert h.pending() == 3
    assert [o.step for o in h.observations(KEY, model_version="v1")] == [0, 1, 2]  # reads: what the spool has
    restart.start()
    h.finish_tune(tid, best_config={"gpu_mhz": 100.0}, best_energy_j=1.0, best_latency_ms=10.0)  # next write syncs
    assert h.online and h.pending() == 0 and h.uploaded == 3
    h.add_measurement(tid, step=3, config={"gpu_mhz": 400.0}, energy_j=4.0, latency_ms=10.0, role="explore")
    h.close()
    with HistoryStore(pg_url) as s:
        (t,) = s.tunes()
        assert t.unit == "U1" and t.status == "done" and t.measurements == 4
        assert s.best(KEY, model_version="v1") is not None
    cid = t.client_id
    assert _server_rows(pg_url, cid) == [(f"{cid}:{i}", i) for i in range(4)]


def test_server_stopped_mid_tune_every_measurement_synced_once(pg_url: str, restart, tmp_path: Path) -> None:
    budget = 12
    h = SpooledHistory(pg_url, tmp_path / "state", retry_s=0.0, timeout_s=2.0)
    assert h.online
    dev = open_device("sim:jetson-agx-orin?unit=7", DeviceOptions(workload="efficientnet-b0", noise=0.02, seed=3))
    events: list[str] = []

    def outage(rec: TuneRecord) -> None:
        if rec.step == 3:
            restart.stop()  # the database goes away mid-tune
            events.append("stopped")
        elif rec.step == 8:
            restart.start()  # and comes back: the next write uploads the spool
            events.append("started")

    try:
        result = run_tune(dev, 30.0, budget, store=h, model_version="v1", seed=0, on_record=outage, optimizer="random")
    finally:
        dev.close()
    assert events == ["stopped", "started"]
    assert len(result.history) == budget and result.best is not None  # the tune finished on what it had
    assert h.uploaded > 0 and h.pending() == 0 and h.online
    h.close()
    with HistoryStore(pg_url) as s:
        (t,) = s.tunes()
        assert (t.status, t.unit, t.measurements) == ("done", "7", budget)
        assert t.best_config == result.best.config
        assert t.id == result.extra["history_tune_id"]  # begun online: the server's id
    cid = t.client_id
    assert _server_rows(pg_url, cid) == sorted((f"{cid}:{i}", i) for i in range(budget))


def test_upload_repeated_after_a_crash_stores_nothing_twice(pg_url: str, restart, tmp_path: Path) -> None:
    HistoryStore(pg_url).close()
    restart.stop()
    h = SpooledHistory(pg_url, tmp_path, retry_s=3600.0, timeout_s=2.0)
    tid = h.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit="U2")
    for i in range(4):
        h.add_measurement(tid, step=i, config={"gpu_mhz": 1.0 * i}, energy_j=1.0, latency_ms=1.0, role="explore")
    h.close()
    restart.start()
    # a process that uploaded the spool and died before deleting it: the same rows reach the server again
    with HistoryStore(h.spool_file) as spool, HistoryStore(pg_url) as server:
        server.merge(*spool.rows())
    again = SpooledHistory(pg_url, tmp_path, timeout_s=2.0)  # the next open uploads (repeats) the spool
    assert again.online and again.pending() == 0 and again.uploaded == 4
    again.close()
    with HistoryStore(pg_url) as s:
        (t,) = s.tunes()
        assert t.measurements == 4 and t.status == "running"
    assert len(_server_rows(pg_url, t.client_id)) == 4


def test_a_spool_larger_than_a_chunk_uploads_in_chunks_exactly_once_across_failures(
        pg_url: str, restart, tmp_path: Path, monkeypatch) -> None:
    """11 measurements of 3 tunes (one with none) in chunks of 4: an outage before a chunk commits and a reply
    lost after it did leave the spool holding exactly what is not yet committed; the next sync finishes the
    upload, nothing lost, nothing twice; no upload holds more than one chunk (the spool is never read whole)."""
    HistoryStore(pg_url).close()
    restart.stop()
    h = SpooledHistory(pg_url, tmp_path, retry_s=3600.0, timeout_s=2.0, upload_chunk=4)
    steps = {"A": 5, "B": 6, "C": 0}
    for name, n in steps.items():
        tid = h.begin_tune(KEY, name, slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit="U3")
        for i in range(n):
            h.add_measurement(tid, step=i, config={"gpu_mhz": 1.0 * i}, energy_j=1.0, latency_ms=1.0, role="explore")
        h.finish_tune(tid, best_config={"gpu_mhz": 0.0}, best_energy_j=1.0, best_latency_ms=1.0)
    assert h.pending() == 11
    restart.start()

    sizes: list[int] = []
    fail: dict[str, int] = {}  # "before"/"after" -> on which upload call (counted from 1) to fail
    real_merge = HistoryStore.merge

    def merge(store, tune_rows, measurement_rows=(), tune_ids=None):
        if store.target.is_sqlite:  # the spool's own writes
            return real_merge(store, tune_rows, measurement_rows, tune_ids)
        sizes.append(len(measurement_rows))
        if fail.get("before") == len(sizes):
            raise HistoryUnavailable("server gone before the commit")
        ids = real_merge(store, tune_rows, measurement_rows, tune_ids)
        if fail.get("after") == len(sizes):
            raise HistoryUnavailable("reply lost after the commit")
        return ids

    def whole_spool(store):
        raise AssertionError("the upload read the whole spool")

    monkeypatch.setattr(HistoryStore, "merge", merge)
    monkeypatch.setattr(HistoryStore, "rows", whole_spool)

    def server() -> dict[str, int]:
        with HistoryStore(pg_url) as s:
            return {t.model_version: t.measurements for t in s.tunes() if t.status == "done"}

    fail["before"] = 2  # chunk 1 commits, the server goes away before chunk 2 does
    assert not h.sync() and h.pending() == 7 and sizes == [4, 4]
    assert sum(server().values()) == 4
    sizes.clear()
    fail.clear()
    fail["after"] = 1  # chunk 2 commits but its reply is lost: it stays spooled
    assert not h.sync() and h.pending() == 7 and sizes == [4]
    assert sum(server().values()) == 8
    sizes.clear()
    fail.clear()
    assert h.sync() and h.pending() == 0
    assert sizes == [4, 3, 0] and max(sizes) <= h.upload_chunk  # chunk 2 again (stored nothing twice), 3, bare C
    h.close()
    assert server() == steps  # every tune finished, every measurement once
    monkeypatch.undo()
    with HistoryStore(pg_url) as s:
        _, mrows = s.rows()
    assert len(mrows) == len({m.client_id for m in mrows}) == 11
    with HistoryStore(h.spool_file) as spool:
        assert spool.rows() == ([], [])  # the spool is empty, tunes included


def test_wrong_password_is_not_spooled(pg_cluster, tmp_path: Path) -> None:
    from polythrottle.history import HistoryError, HistoryUnavailable

    url = pg_cluster.url().replace("pt-secret", "wrong-secret")
    with pytest.raises(HistoryError) as e:
        SpooledHistory(url, tmp_path)
    assert not isinstance(e.value, HistoryUnavailable)
    assert "wrong-secret" not in str(e.value) and "password authentication failed" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # a refused open leaves no empty spool file behind


def test_a_malformed_url_leaves_no_spool_file(tmp_path: Path) -> None:
    from polythrottle.history import HistoryError

    bad = "postgresql://u@127.0.0.1:1/db?sslmode=bogus"  # libpq refuses it before connecting
    with pytest.raises(HistoryError):
        SpooledHistory(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_a_corrupt_spool_is_moved_aside_and_the_tune_goes_on(tmp_path: Path, damage: str, caplog) -> None:
    """A spool damaged by a power cut used to stop every tune and the daemon (exit 2, 'move it away')."""
    import logging
    import os

    from polythrottle.history import parse_target
    from polythrottle.history.spool import spool_path

    url = "postgresql://u:secret-pw@127.0.0.1:1/fleet"  # nothing listens: everything goes to the spool
    spool = spool_path(parse_target(url), tmp_path)
    if damage == "random":
        spool.write_bytes(os.urandom(8192))
    else:
        with SpooledHistory(url, tmp_path, timeout_s=1.0) as h:
            tid = h.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit="U1")
            for i in range(200):
                h.add_measurement(tid, step=i, config={"gpu_mhz": float(i)}, energy_j=1.0, latency_ms=10.0,
                                  role="explore")
        data = spool.read_bytes()
        spool.write_bytes(data[: len(data) // 2])
    damaged = spool.read_bytes()
    with caplog.at_level(logging.WARNING, logger="polythrottle.history"):
        h = SpooledHistory(url, tmp_path, timeout_s=1.0)
    try:
        (moved,) = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))]
        assert moved.read_bytes() == damaged  # kept as it was, for inspection
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert "corrupt" in warning and str(moved) in warning and "secret-pw" not in warning
        tid = h.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit="U1")
        h.add_measurement(tid, step=0, config={"gpu_mhz": 1.0}, energy_j=1.0, latency_ms=10.0, role="baseline")
        assert h.pending() == 1
    finally:
        h.close()


@pytest.mark.parametrize("steps", [2, 0])
def test_a_finish_spooled_between_the_read_and_the_delete_of_its_chunk_is_uploaded(
        pg_url: str, restart, tmp_path: Path, monkeypatch, steps: int) -> None:
    """Two processes share a spool: one uploads it while the other, still offline, spools the finish of the tune
    whose last chunk was just read (as running). The delete after the upload removed the tune row, finish and
    all: the server kept the tune 'running' for ever. Now a tune leaves the spool only as it was read and
    uploaded; the finish is uploaded after it, and every measurement reaches the server once."""
    HistoryStore(pg_url).close()
    restart.stop()
    owner = SpooledHistory(pg_url, tmp_path, retry_s=3600.0, timeout_s=2.0)  # offline until the test ends
    tid = owner.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit="U4")
    for i in range(steps):
        owner.add_measurement(tid, step=i, config={"gpu_mhz": 1.0 * i}, energy_j=1.0, latency_ms=1.0, role="explore")
    restart.start()

    injected: list[str] = []
    real_read = HistoryStore.read

    def read(store, what, fn):  # the spool's read step of an upload, then the owner's finish lands in the spool
        out = real_read(store, what, fn)
        if what == "read spool" and out[0] and not injected:
            injected.append(out[0][0].status)
            owner.finish_tune(tid, best_config={"gpu_mhz": 0.0}, best_energy_j=1.0, best_latency_ms=1.0)
        return out

    monkeypatch.setattr(HistoryStore, "read", read)
    uploader = SpooledHistory(pg_url, tmp_path, timeout_s=2.0)  # its open uploads the spool
    assert injected == ["running"] and uploader.online and uploader.uploaded == steps
    monkeypatch.undo()
    # the finish goes up with this upload (the tune, left without measurements, is read again as done) or the next
    assert uploader.sync() and uploader.uploaded == steps and uploader.pending() == 0  # no measurement sent twice
    uploader.close()
    owner.close()
    with HistoryStore(pg_url) as s:
        (t,) = s.tunes()
        assert t.status == "done" and t.measurements == steps
    assert len(_server_rows(pg_url, t.client_id)) == steps
    with HistoryStore(owner.spool_file) as spool:
        assert spool.rows() == ([], [])


# ----- a SQLite history locked by another process: spooled like a server outage -----------------------------
def _hold_lock(path: Path) -> sqlite3.Connection:
    """A second connection holding the SQLite history's write lock (as another process's long write would)."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def _release(holder: sqlite3.Connection) -> None:
    holder.execute("ROLLBACK")
    holder.close()


def test_a_sqlite_history_makes_no_spool_file_while_it_answers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_history(tmp_path / "h.sqlite", spool_dir=state, timeout_s=0.2) as h:
        assert isinstance(h, SpooledHistory) and h.online
        tid = h.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"])
        h.add_measurement(tid, step=0, config={"gpu_mhz": 100.0}, energy_j=1.0, latency_ms=10.0, role="baseline")
        h.finish_tune(tid, best_config={"gpu_mhz": 100.0}, best_energy_j=1.0, best_latency_ms=10.0)
        assert tid > 0 and h.pending() == 0
    assert not state.exists()  # the state dir is touched only when the history is locked
    with HistoryStore(tmp_path / "h.sqlite") as s:
        ((t, ms),) = [s.tune(x.id) for x in s.tunes()]  # type: ignore[misc]
        assert t.status == "done" and len(ms) == 1


def test_a_locked_sqlite_history_spools_and_catches_up(tmp_path: Path) -> None:
    """Another process holds the SQLite history's lock mid-tune: the writes wait ``timeout_s``, then go to the
    local spool (the tune goes on); once the lock is gone, every measurement reaches the history exactly once."""
    path = tmp_path / "h.sqlite"
    HistoryStore(path).close()
    h = open_history(path, spool_dir=tmp_path / "state", timeout_s=0.2, retry_s=0.0)
    assert isinstance(h, SpooledHistory)
    tid = h.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"])
    h.add_measurement(tid, step=0, config={"gpu_mhz": 100.0}, energy_j=1.0, latency_ms=10.0, role="baseline")
    holder = _hold_lock(path)
    try:
        for i in (1, 2):
            h.add_measurement(tid, step=i, config={"gpu_mhz": 100.0 * (i + 1)}, energy_j=1.0 + i, latency_ms=10.0,
                              role="explore")
        assert not h.online and h.pending() == 2 and h.spooled == 2
        assert "is locked by another process" in (h.last_error or "")
    finally:
        _release(holder)
    h.finish_tune(tid, best_config={"gpu_mhz": 100.0}, best_energy_j=1.0, best_latency_ms=10.0)  # syncs first
    assert h.online and h.pending() == 0 and h.uploaded == 2
    h.close()
    with HistoryStore(path) as s:
        (t,) = s.tunes()
        _, ms = s.tune(t.id)  # type: ignore[misc]
    assert t.status == "done" and sorted(m.step for m in ms) == [0, 1, 2]


def test_a_sqlite_history_locked_at_open_is_uploaded_by_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    HistoryStore(path).close()
    holder = _hold_lock(path)
    try:
        h = open_history(path, spool_dir=tmp_path / "state", timeout_s=0.2)
        tid = h.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"])
        assert tid < 0  # begun on the spool
        h.add_measurement(tid, step=0, config={"gpu_mhz": 100.0}, energy_j=1.0, latency_ms=10.0, role="baseline")
        h.finish_tune(tid, best_config=None, stop_reason="budget")
        h.close()
    finally:
        _release(holder)
    with open_history(path, spool_dir=tmp_path / "state") as h2:  # the next tune's open uploads the spool
        assert h2.pending() == 0  # type: ignore[union-attr]
    with HistoryStore(path) as s:
        (t,) = s.tunes()
        _, ms = s.tune(t.id)  # type: ignore[misc]
    assert t.status == "done" and [m.step for m in ms] == [0]


def test_a_locked_sqlite_history_with_an_unusable_spool_says_both(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    HistoryStore(path).close()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    holder = _hold_lock(path)
    try:
        with open_history(path, spool_dir=blocker / "state", timeout_s=0.2) as h:
            with pytest.raises(HistoryError, match="is locked by another process.*local spool cannot keep") as e:
                h.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"])
    finally:
        _release(holder)
    assert "\n" not in str(e.value)
