from __future__ import annotations

import csv
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_TABLE = ROOT.parent / "shared" / "data" / "jetson-agx-xavier-triton-loudva.csv"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core (scripts/test.sh): one thread each for torch and numpy's BLAS, here and
    # in every CLI and daemon a test starts (they inherit it), or they oversubscribe the cores (a subprocess tune
    # took ~1.7x the CPU time with 2 threads on 2 cores). No result depends on it: only the timings differ.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:  # imported before this file (a plugin): it has read the variable already
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every CLI it starts) gets its own state directory: nothing leaks between tests or
    from the machine's own ~/.local/state or /var/lib/polythrottle."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("POLYTHROTTLE_STATE_DIR", str(state))
    monkeypatch.setenv("XDG_STATE_HOME", str(state / "xdg"))
    monkeypatch.delenv("POLYTHROTTLE_HISTORY_URL", raising=False)
    monkeypatch.delenv("POLYTHROTTLE_SOCKET", raising=False)


@pytest.fixture
def xavier_table() -> Path:
    if not SHARED_TABLE.is_file():
        pytest.skip(f"shared measured table not found at {SHARED_TABLE}")
    return SHARED_TABLE


def write_table(path: Path, rows: list[dict], header: list[str] | None = None) -> Path:
    header = header or list(rows[0])
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


@pytest.fixture
def small_table(tmp_path: Path) -> Path:
    """A dense 3x4 gpu_mhz x batch_size table with a known optimum under a 50 ms SLO."""
    rows = []
    for f in (300.0, 600.0, 900.0):
        for b in (1, 2, 4, 8):
            lat = 10.0 * b * 900.0 / f
            energy = (0.2 + 0.4 * (f / 900.0) ** 2) / b**0.5
            rows.append({"gpu_mhz": f, "batch_size": b, "energy_j": energy, "latency_ms": lat})
    return write_table(tmp_path / "small.csv", rows)


def deny_search(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """Make ``directory`` one this process may not search, as for a user without x on it: ``os.stat`` of anything
    under it raises EACCES (emulated: tests may run as root)."""
    real_stat = os.stat

    def stat(path, *a, **kw):
        if str(os.fspath(path)).startswith(str(directory) + os.sep):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_stat(path, *a, **kw)

    monkeypatch.setattr(os, "stat", stat)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "polythrottle", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


# ----- PostgreSQL (a private cluster per test session; see tests/pg.py) -----------------------------
@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL 15 server for the session (skipped only when its binaries are absent)."""
    from tests.pg import PgCluster, pg_available

    reason = pg_available()
    if reason:
        if os.environ.get("POLYTHROTTLE_REQUIRE_PG"):  # CI: the PostgreSQL tests must run, not skip
            pytest.fail(f"POLYTHROTTLE_REQUIRE_PG is set but {reason}", pytrace=False)
        pytest.skip(reason)
    cluster = PgCluster(settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def pg_url(pg_cluster, request) -> str:
    """A fresh database in the session's cluster; its URL (with the password)."""
    import re

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + f"_{id(request) % 100000}"
    if not pg_cluster.running():
        pg_cluster.start()
    return pg_cluster.create_database(name)
