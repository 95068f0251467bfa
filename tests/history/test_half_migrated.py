"""A half-migrated history (a recorded schema revision its tables do not match, or PolyThrottle's tables with no
revision recorded) is refused in one line naming the database, the revision found and what to do (exit 2),
nothing changed; doing what the line says opens it with its rows. On a real private PostgreSQL cluster."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from polythrottle.history import HistoryError, HistoryKey, HistoryStore, parse_target
from polythrottle.history.migrate import MIGRATIONS_DIR
from polythrottle.history.version import KNOWN_REVISIONS
from tests.conftest import run_cli

KEY = HistoryKey("sim:jetson-orin-nano", "efficientnet-b0", "abc")


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(parse_target(url).url)


def _sql(url: str, *statements: str) -> None:
    engine = _engine(url)
    with engine.begin() as conn:
        for s in statements:
            conn.exec_driver_sql(s)
    engine.dispose()


def _state(url: str) -> tuple[list[str], dict[str, list[str]]]:
    """(version rows, table -> columns): what a refusal must leave as it was."""
    engine = _engine(url)
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        tables = insp.get_table_names()
        rows = ([r[0] for r in conn.exec_driver_sql("SELECT version_num FROM polythrottle_version")]
                if "polythrottle_version" in tables else [])
        columns = {t: sorted(c["name"] for c in insp.get_columns(t)) for t in tables}
    engine.dispose()
    return rows, columns


def _history_with_a_tune(url: str) -> None:
    with HistoryStore(url) as s:
        tid = s.begin_tune(KEY, "v1", slo_ms=50.0, optimizer="cbo", knobs=["gpu_mhz"])
        s.add_measurement(tid, step=0, config={"gpu_mhz": 900.0}, energy_j=1.0, latency_ms=10.0, role="baseline")


def _refused(url: str, *expected: str) -> str:
    before = _state(url)
    for read_only in (False, True):  # a writer (tune) and a reader (history ls, daemon --check) alike
        with pytest.raises(HistoryError) as e:
            HistoryStore(url, read_only=read_only).close()
        msg = str(e.value)
        assert "\n" not in msg and e.value.exit_code == 2, msg
        assert msg.startswith(f"history database {parse_target(url).display} is half-migrated: "), msg
        assert all(x in msg for x in expected), msg
    assert _state(url) == before  # nothing changed
    return msg


def _fix(msg: str, marker: str) -> list[str]:
    """The SQL the message tells the user to run (``If the tables are right: SQL (then ...``)."""
    sql = msg.split(marker, 1)[1].split(" (then", 1)[0]
    return [s.strip() for s in sql.split(";") if s.strip()]


@pytest.mark.parametrize("case, damage, expected", [
    ("stamped back", ["UPDATE polythrottle_version SET version_num = '0001'"],
     ["polythrottle_version says schema revision 0001, its tables are at 0002"]),
    ("version row lost", ["DELETE FROM polythrottle_version"],
     ["its tables are at schema revision 0002 but polythrottle_version is empty"]),
    ("version table lost", ["DROP TABLE polythrottle_version"],
     ["its tables are at schema revision 0002 but polythrottle_version is missing"]),
])
def test_a_half_migrated_history_says_what_it_found_and_the_fix_works(pg_url, case, damage, expected):
    _history_with_a_tune(pg_url)
    _sql(pg_url, *damage)
    msg = _refused(pg_url, *expected, "restore a backup or use another --history")
    _sql(pg_url, *_fix(msg, "If the tables are right: "))
    with HistoryStore(pg_url) as s:  # the line's advice works, and the rows are all there
        assert [o.step for o in s.observations(KEY, model_version="v1")] == [0]


def test_tables_matching_no_revision_are_refused(pg_url):
    _history_with_a_tune(pg_url)
    _sql(pg_url, "UPDATE polythrottle_version SET version_num = '0001'", "ALTER TABLE tunes DROP COLUMN client_id")
    _refused(pg_url, "says schema revision 0001 but its tables (measurements, tunes) match no revision",
             "nothing changed: restore a backup or use another --history")


def test_a_revision_without_its_tables_is_refused_and_the_fix_works(pg_url):
    _history_with_a_tune(pg_url)
    _sql(pg_url, "DROP TABLE measurements", "DROP TABLE tunes")
    _refused(pg_url, "says schema revision 0002 but table(s) measurements, tunes are missing",
             "DROP TABLE polythrottle_version")
    _sql(pg_url, "DROP TABLE polythrottle_version")
    with HistoryStore(pg_url) as s:
        assert s.schema_version == 2


def test_the_cli_says_it_in_one_line_exit_2(pg_url):
    _history_with_a_tune(pg_url)
    _sql(pg_url, "UPDATE polythrottle_version SET version_num = '0001'")
    for args in (("history", "ls"), ("tune", "--device", "sim:jetson-orin-nano", "--workload", "efficientnet-b0",
                                     "--slo-ms", "50", "--budget", "2", "--optimizer", "random", "--quiet")):
        r = run_cli(*args, "--history", pg_url)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "is half-migrated: polythrottle_version says schema revision 0001, its tables are at 0002" in r.stderr
        assert "pt-secret" not in r.stderr  # the password stays masked


def test_a_database_really_at_an_older_revision_still_upgrades(pg_url):
    """The frozen table shapes are right: a database Alembic left at each older revision upgrades."""
    from alembic import command
    from alembic.config import Config

    from polythrottle.history.migrate import _SHAPES

    assert set(_SHAPES) == set(KNOWN_REVISIONS)
    engine = _engine(pg_url)
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("path_separator", "os")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, KNOWN_REVISIONS[0])
    engine.dispose()
    assert _state(pg_url)[0] == [KNOWN_REVISIONS[0]]
    with HistoryStore(pg_url) as s:
        assert s.schema_version == 2
