"""tests/pg.py itself: a port taken between the pick and the server's bind (another xdist worker's cluster)."""

from __future__ import annotations

import os
import socket

import pytest

import tests.pg as pg


@pytest.fixture
def need_pg() -> None:
    reason = pg.pg_available()
    if reason:
        if os.environ.get("POLYTHROTTLE_REQUIRE_PG"):
            pytest.fail(f"POLYTHROTTLE_REQUIRE_PG is set but {reason}", pytrace=False)
        pytest.skip(reason)


def test_a_port_taken_before_the_first_start_is_replaced(need_pg, monkeypatch: pytest.MonkeyPatch) -> None:
    """The port was picked free, then bound by another process before the server started: the cluster
    failed to start ("could not bind IPv4 address ... Address already in use") and the test errored."""
    real = pg._free_port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy])
        monkeypatch.setattr(pg, "_free_port", lambda: next(picks, None) or real())
        with pg.PgCluster() as cluster:
            assert cluster.port != busy
            assert cluster.psql("SELECT 1").strip() == "1"
            port = cluster.port
            cluster.stop()
            cluster.start()  # an outage: the same port again
            assert cluster.port == port and cluster.psql("SELECT 2").strip() == "2"


def test_a_start_that_fails_for_another_reason_is_not_retried(need_pg, monkeypatch: pytest.MonkeyPatch) -> None:
    picks: list[int] = []
    real = pg._free_port

    def pick() -> int:
        picks.append(real())
        return picks[-1]

    monkeypatch.setattr(pg, "_free_port", pick)
    with pytest.raises(RuntimeError, match="pg_ctl failed"):
        pg.PgCluster(settings={"max_connections": "not-a-number"})
    assert len(picks) == 1
