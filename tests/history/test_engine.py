"""Database errors turned into one line: a PostgreSQL URL that can never work (a bad option, a TLS or
authentication requirement the server cannot meet) is an error (exit 2), not an outage to spool."""

from __future__ import annotations

from pathlib import Path

import pytest

from polythrottle.history import HistoryError, HistoryUnavailable, SpooledHistory, open_history


def _refused(url: str, tmp_path: Path) -> str:
    """``url`` opened with and without a spool: HistoryError, not HistoryUnavailable."""
    with pytest.raises(HistoryError) as e:
        open_history(url, timeout_s=2.0).close()
    assert not isinstance(e.value, HistoryUnavailable), str(e.value)
    with pytest.raises(HistoryError) as e2:
        SpooledHistory(url, tmp_path, timeout_s=2.0).close()
    assert not isinstance(e2.value, HistoryUnavailable), str(e2.value)
    return str(e.value)


@pytest.mark.parametrize("query", ["sslmode=bogus", "target_session_attrs=bogus", "channel_binding=bogus"])
def test_a_malformed_connection_option_is_an_error_not_an_outage(query: str, tmp_path: Path) -> None:
    # libpq refuses these before it connects: no server needed (port 1 would be refused anyway)
    msg = _refused(f"postgresql://u:secret@127.0.0.1:1/db?{query}", tmp_path)
    assert query.split("=")[0] in msg and "secret" not in msg


@pytest.mark.parametrize("query", ["sslmode=require", "channel_binding=require",
                                   "options=-cno_such_setting%3D1", "require_auth=md5"])
def test_a_requirement_the_server_cannot_meet_is_an_error_not_an_outage(query: str, pg_cluster,
                                                                         tmp_path: Path) -> None:
    _refused(f"{pg_cluster.url()}?{query}", tmp_path)


def test_postgresql_without_psycopg_is_a_missing_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README "Exit codes": an optional dependency missing (here the `fleet` extra) is exit 5 on every command;
    it stays a HistoryError (refused for good, never spooled as an outage)."""
    import sys

    from polythrottle.cli import main
    from polythrottle.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "psycopg", None)
    url = "postgresql://u:secret@127.0.0.1:1/db"
    msg = _refused(url, tmp_path)
    assert "needs psycopg 3" in msg and "secret" not in msg
    with pytest.raises(MissingDependencyError) as e:
        open_history(url).close()
    assert e.value.exit_code == 5
    assert main(["history", "ls", "--history", url]) == 5
    assert main(["fleet", "--history", url]) == 5
    assert main(["tune", "--device", "sim:jetson-orin-nano", "--workload", "efficientnet-b0", "--slo-ms", "50",
                 "--budget", "3", "--quiet", "--history", url, "--state-dir", str(tmp_path / "state")]) == 5


def test_a_missing_driver_is_refused_before_the_spool_directory_is_made(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`tune --history postgresql://...` without psycopg left an empty state directory behind (as root:
    /var/lib/polythrottle), made for a spool that could never be used."""
    import sys

    from polythrottle.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingDependencyError):
        open_history("postgresql://u@127.0.0.1:1/db", spool_dir=tmp_path / "state")
    assert not (tmp_path / "state").exists()
