"""Reading a history the user may not write (root's /var/lib/polythrottle read by a user): ``history ls``,
``show``, ``export``, ``fleet`` work and write nothing (no -wal/-shm left behind a later writer would trip on);
a read-only store refuses writes; a history that needs an upgrade says so in one line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from polythrottle.cli import build_parser, main
from polythrottle.history import HistoryError, HistoryKey, HistoryStore

KEY = HistoryKey("sim:jetson-agx-orin", "resnet50", "abc")
NOBODY = 65534


def _fill(store: HistoryStore, unit: str = "0") -> int:
    tid = store.begin_tune(KEY, "v1", slo_ms=50.0, optimizer="cbo", knobs=["gpu_mhz"], unit=unit)
    for i in range(3):
        store.add_measurement(tid, step=i, config={"gpu_mhz": 100.0 * (i + 1)}, energy_j=1.0 / (i + 1),
                              latency_ms=10.0 * (i + 1), role="explore")
    store.finish_tune(tid, best_config={"gpu_mhz": 200.0}, best_energy_j=0.5, best_latency_ms=20.0)
    return tid


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can enter (pytest's own tmp dirs are private to their owner)."""
    d = Path(tempfile.mkdtemp(prefix="pt-ro-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def as_reader(fn: Callable[[], Any], lock: list[Path]) -> Any:
    """``fn()`` run by a user who may read but not write ``lock`` (files and directories): as root, in a
    forked child that drops to nobody; otherwise here, with the write bits taken away meanwhile."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in lock}
        for p in lock:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            return fn()
        finally:
            for p, m in modes.items():
                p.chmod(m)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            payload = json.dumps({"ok": fn()})
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            payload = json.dumps({"error": f"{type(e).__name__}: {e}"})
        with os.fdopen(w, "w") as f:
            f.write(payload)
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        doc = json.loads(f.read() or '{"error": "child died"}')
    os.waitpid(pid, 0)
    if "error" in doc:
        raise AssertionError(doc["error"])
    return doc["ok"]


def _listing(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_history_and_fleet_read_a_history_the_user_cannot_write(shared_dir: Path) -> None:
    db = shared_dir / "history.sqlite"
    with HistoryStore(db) as s:
        tid = _fill(s)
    db.chmod(0o644)
    before = _listing(shared_dir)
    build_parser()  # every command module imported before the reader loses access to the sources
    import polythrottle.history.export
    import polythrottle.history.fleet_summary  # noqa: F401

    def read() -> list[tuple[int, str, str]]:
        return [_cli("history", "ls", "--history", str(db)), _cli("history", "show", str(tid), "--history", str(db)),
                _cli("history", "export", "--format", "json", "--history", str(db)),
                _cli("fleet", "--json", "--history", str(db))]

    (ls, show, export, fleet) = as_reader(read, [shared_dir, db])
    assert [r[0] for r in (ls, show, export, fleet)] == [0, 0, 0, 0], [r[2] for r in (ls, show, export, fleet)]
    assert "sim:jetson-agx-orin" in ls[1] and "resnet50" in ls[1]
    assert f"tune {tid}" in show[1]
    assert len(json.loads(export[1])) == 3
    assert json.loads(fleet[1])[0]["best_config"] == {"gpu_mhz": 200.0}
    assert _listing(shared_dir) == before  # nothing written, no -wal/-shm made by the reader


def test_reader_sees_a_live_writers_uncheckpointed_rows(shared_dir: Path) -> None:
    db = shared_dir / "history.sqlite"
    writer = HistoryStore(db)
    try:
        _fill(writer, unit="A")
        assert Path(f"{db}-wal").exists()  # the rows are in the write-ahead log, not yet in the file

        def read() -> list[str]:
            with HistoryStore(db, read_only=True) as r:
                return [t.unit for t in r.tunes()]

        assert as_reader(read, [shared_dir, db]) == ["A"]
    finally:
        writer.close()


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    HistoryStore(db).close()
    with HistoryStore(db, read_only=True) as s:
        with pytest.raises(HistoryError, match="read-only"):
            s.begin_tune(KEY, "v1", slo_ms=50.0, optimizer="cbo", knobs=["gpu_mhz"])
        assert s.tunes() == []


def test_reader_does_not_touch_an_empty_file_it_cannot_write(shared_dir: Path) -> None:
    db = shared_dir / "history.sqlite"
    db.touch()
    db.chmod(0o644)
    build_parser()

    code, out, err = as_reader(lambda: _cli("history", "ls", "--history", str(db)), [shared_dir, db])
    assert (code, out, err) == (0, "no tunes\n", "")  # an empty history (it said it needed write access, exit 2)
    assert db.stat().st_size == 0 and sorted(p.name for p in shared_dir.iterdir()) == ["history.sqlite"]


def test_readers_read_a_0_byte_file_as_an_empty_history_and_leave_it_0_bytes(tmp_path: Path) -> None:
    """`history ls/show/export`, `fleet` only read: a 0-byte file they may write was made a SQLite database
    (45 KiB, with -wal and -shm beside it). A writer still makes it one."""
    db = tmp_path / "h.sqlite"
    db.touch()
    assert _cli("history", "ls", "--history", str(db)) == (0, "no tunes\n", "")
    assert _cli("history", "ls", "--json", "--history", str(db)) == (0, "[]\n", "")
    assert _cli("history", "export", "--format", "json", "--history", str(db))[:2] == (0, "[]\n")
    assert _cli("fleet", "--json", "--history", str(db))[:2] == (0, "[]\n")
    code, out, err = _cli("history", "show", "1", "--history", str(db))
    assert code == 2 and err == f"polythrottle: error: history {db} has no tune 1\n"
    assert db.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["h.sqlite"]
    with HistoryStore(db) as s:
        _fill(s)
    assert db.stat().st_size > 0


def test_readers_create_nothing_for_a_missing_history(tmp_path: Path) -> None:
    for argv in (["history", "ls"], ["history", "show", "1"], ["history", "export"], ["fleet"]):
        for where in (tmp_path / "h.sqlite", tmp_path / "sub" / "h.sqlite"):
            code, out, err = _cli(*argv, "--history", str(where))
            assert (code, out, err) == (2, "", f"polythrottle: error: no history database at {where}\n")
    assert list(tmp_path.iterdir()) == []


def test_reader_with_write_access_still_upgrades_an_old_file(tmp_path: Path) -> None:
    from tests.history.test_migrate import write_v1

    db = tmp_path / "old.sqlite"
    write_v1(db)
    code, out, err = _cli("history", "ls", "--history", str(db))
    assert code == 0, err
    assert "sim:jetson-agx-orin" in out
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT version_num FROM polythrottle_version").fetchone() == ("0002",)


def test_a_history_the_user_may_not_read_says_so(shared_dir: Path) -> None:
    """It said 'cannot be written (unable to open database file)' of a file `history ls` only reads."""
    db = shared_dir / "history.sqlite"
    with HistoryStore(db) as s:
        _fill(s)
    db.chmod(0o000)
    build_parser()
    import polythrottle.history.export
    import polythrottle.history.fleet_summary  # noqa: F401

    for argv in (["history", "ls"], ["fleet"]):
        code, _, err = as_reader(lambda argv=argv: _cli(*argv, "--history", str(db)), [])
        assert code == 2 and err == f"polythrottle: error: history database {db} cannot be read (permission denied)\n"
