"""History locations: paths and URLs, libpq's environment (PGPASSFILE), POLYTHROTTLE_HISTORY_URL, and
passwords that never show in errors, reprs, logs or the CLI's output (real PostgreSQL server)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from polythrottle.history import (
    HistoryError,
    HistoryStore,
    HistoryUnavailable,
    mask,
    open_history,
    parse_target,
)
from tests.conftest import run_cli
from tests.pg import PASSWORD


def test_parse_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    t = parse_target("h.sqlite")
    assert t.is_sqlite and t.path == tmp_path / "h.sqlite" and t.display == str(tmp_path / "h.sqlite")
    assert parse_target(tmp_path / "x.db").path == tmp_path / "x.db"
    assert parse_target("sqlite:///rel/h.sqlite").path == tmp_path / "rel" / "h.sqlite"
    assert parse_target("sqlite:////abs/h.sqlite").path == Path("/abs/h.sqlite")
    for url in ("postgresql://u:pw@h:5433/db", "postgres://u:pw@h:5433/db", "postgresql+psycopg://u:pw@h:5433/db"):
        t = parse_target(url)
        assert t.kind == "postgresql" and t.url == "postgresql+psycopg://u:pw@h:5433/db"
        assert "pw" not in t.display and ":***@" in t.display and "pw" not in repr(t)
    for bad, msg in (("mysql://u:pw@h/db", "unsupported scheme"), ("sqlite://", "use sqlite:///"),
                     ("postgresql://u:pw@h:99999999/db", "malformed"), ("", "empty")):
        with pytest.raises(HistoryError, match=msg) as e:
            parse_target(bad)
        assert ":pw@" not in str(e.value)
    assert mask("postgresql://u:s3cr%40t@h/db?sslmode=require&password=x1") == \
        "postgresql://u:***@h/db?sslmode=require&password=***"
    t = parse_target("postgresql://u:s3cr%40t@h/db")
    assert t.scrub('auth failed for "s3cr@t" and s3cr%40t') == 'auth failed for "***" and ***'


def test_history_url_env_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from polythrottle.history import default_history

    monkeypatch.setenv("POLYTHROTTLE_STATE_DIR", str(tmp_path / "st"))
    monkeypatch.delenv("POLYTHROTTLE_HISTORY_URL", raising=False)
    assert default_history() == str(tmp_path / "st" / "history.sqlite")
    monkeypatch.setenv("POLYTHROTTLE_HISTORY_URL", f"sqlite:///{tmp_path}/env.sqlite")
    with open_history() as h:
        assert h.url == str(tmp_path / "env.sqlite")


def test_passwords_never_show(pg_cluster, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    good = pg_cluster.url()
    with HistoryStore(good) as s:
        assert PASSWORD not in repr(s) and PASSWORD not in s.url and ":***@" in s.url
    wrong = good.replace(PASSWORD, "Wr0ng-pass")
    with pytest.raises(HistoryError) as e:
        HistoryStore(wrong)
    assert "Wr0ng-pass" not in str(e.value) and "password authentication failed" in str(e.value)
    assert "\n" not in str(e.value)
    down = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/db"
    with pytest.raises(HistoryUnavailable) as e2:
        HistoryStore(down, timeout_s=2)
    assert PASSWORD not in str(e2.value) and e2.value.exit_code == 6
    spooled = open_history(down, spool_dir=tmp_path, timeout_s=2)
    assert PASSWORD not in repr(spooled) and PASSWORD not in (spooled.last_error or "x")
    spooled.close()
    assert PASSWORD not in caplog.text and "Wr0ng-pass" not in caplog.text
    r = run_cli("history", "ls", "--history", wrong)
    assert r.returncode == 2 and "Wr0ng-pass" not in r.stderr + r.stdout and r.stderr.count("\n") == 1
    r = run_cli("fleet", "--history", down)
    assert r.returncode == 6 and PASSWORD not in r.stderr + r.stdout and "unreachable" in r.stderr


def test_pgpassfile_and_unix_socket(pg_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_cluster.port}:*:postgres:{PASSWORD}\n")
    os.chmod(passfile, 0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    with HistoryStore(pg_cluster.url(password=False)) as s:  # no password in the URL: libpq reads PGPASSFILE
        assert s.schema_version == 2
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(HistoryError, match="password"):
        HistoryStore(pg_cluster.url(password=False))
    # a Unix socket directory as host (trust authentication there), user and port in the query
    with HistoryStore(f"postgresql:///postgres?host={pg_cluster.dir}&port={pg_cluster.port}&user=postgres") as s:
        assert s.keys() == []


@pytest.mark.parametrize("target", [5, b"/tmp/h.sqlite", ["h.sqlite"], 3.5])
def test_a_target_that_is_no_path_or_url_is_one_line(target, tmp_path: Path) -> None:
    from polythrottle.history import HistoryError, HistoryStore, open_history

    for opener in (parse_target, open_history, HistoryStore):
        with pytest.raises(HistoryError, match="history location must be a path or URL"):
            opener(target)


def test_the_history_file_name_and_its_env_are_paths_own() -> None:
    """One set of paths: the history's file name and environment variable are ``polythrottle.paths``'s (the
    history package kept copies of both, one of them unused)."""
    from polythrottle import paths
    from polythrottle.history import target

    assert target.DEFAULT_FILENAME == paths.HISTORY_FILENAME
    assert not hasattr(target, "HISTORY_URL_ENV")
