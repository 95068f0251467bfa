"""Schema migrations: a v1 SQLite file (written as PolyThrottle before units wrote it) upgrades in place
with the contract's legacy-key mapping; the migrated and fresh schemas match ``schema.py`` on both
backends; the revision list matches the shipped scripts; concurrent openers migrate once."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from polythrottle.history import SCHEMA_VERSION, HistoryKey, HistoryStore, parse_target
from polythrottle.history.version import KNOWN_REVISIONS

# The v1 schema, verbatim from polythrottle/history.py before the history package (PRAGMA user_version = 1).
V1_DDL = """
CREATE TABLE tunes (
    id             INTEGER PRIMARY KEY,
    device         TEXT NOT NULL,
    profile        TEXT NOT NULL,
    workload       TEXT NOT NULL,
    space          TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    slo_ms         REAL NOT NULL,
    optimizer      TEXT NOT NULL,
    knobs          TEXT NOT NULL,          -- JSON list of tuned knob names
    warm_from      TEXT,                   -- model version the tune was warm-started from
    status         TEXT NOT NULL,          -- running | done | failed
    started_at     REAL NOT NULL,          -- unix seconds
    finished_at    REAL,
    best_config    TEXT,                   -- JSON object, NULL when nothing was feasible
    best_energy_j  REAL,
    best_latency_ms REAL,
    baseline_energy_j REAL,
    stop_reason    TEXT
);
CREATE INDEX tunes_by_key ON tunes (device, profile, workload, space, model_version);
CREATE TABLE measurements (
    id             INTEGER PRIMARY KEY,
    tune_id        INTEGER NOT NULL REFERENCES tunes (id) ON DELETE CASCADE,
    step           INTEGER NOT NULL,
    config         TEXT NOT NULL,          -- JSON object, the full device config
    energy_j       REAL NOT NULL,          -- energy per inference, joules
    latency_ms     REAL NOT NULL,
    energy_rel_std REAL,
    latency_rel_std REAL,
    role           TEXT NOT NULL,          -- baseline | explore | recheck | ...
    measured_at    REAL NOT NULL,
    extra          TEXT                    -- JSON object or NULL
);
CREATE INDEX measurements_by_tune ON measurements (tune_id);
"""

# (device, profile, expected device, expected unit): the contract's legacy-key mapping
LEGACY = [
    ("sim:jetson-agx-orin", "jetson-agx-orin", "sim:jetson-agx-orin", "0"),
    ("sim:device_profiles/jetson-tx2.yaml?noise=0.02", "", "sim:jetson-tx2", "0"),
    ("replay", "", "replay", ""),
    ("jetson", "jetson-agx-xavier", "jetson:jetson-agx-xavier", ""),
    ("jetson", "", "jetson", ""),
    ("nvml:0", "NVIDIA H100 80GB HBM3", "nvml:0", ""),
]


def create_v1_tables(c: sqlite3.Connection, *extra: str, user_version: int) -> None:
    """In one transaction: v1's DDL, then the ``extra`` statements, PolyThrottle's application id and
    ``user_version``."""
    c.execute("BEGIN IMMEDIATE")
    for stmt in [*V1_DDL.split(";"), *extra]:
        if stmt.strip():
            c.execute(stmt)
    c.execute(f"PRAGMA application_id = {0x50544854}")
    c.execute(f"PRAGMA user_version = {user_version}")
    c.execute("COMMIT")


def write_v1(path: Path) -> None:
    """A history file as PolyThrottle v1 wrote it: its open sequence, DDL and inserts (one tune per
    LEGACY row, 3 measurements each; the jetson tune stores step 1 twice, as v1 allowed)."""
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = FULL")
    c.execute("PRAGMA foreign_keys = ON")
    create_v1_tables(c, user_version=1)
    for i, (device, profile, _, _) in enumerate(LEGACY):
        c.execute("BEGIN IMMEDIATE")
        tid = c.execute(
            "INSERT INTO tunes (device, profile, workload, space, model_version, slo_ms, optimizer, knobs, warm_from,"
            " status, started_at, finished_at, best_config, best_energy_j, best_latency_ms, baseline_energy_j,"
            " stop_reason) VALUES (?, ?, 'efficientnet-b0', 'abc', 'v1', 50.0, 'cbo', '[\"gpu_mhz\"]', NULL, 'done',"
            " ?, ?, '{\"gpu_mhz\": 200.0}', 0.5, 20.0, 1.0, 'budget')",
            (device, profile, 1000.0 + i, 1001.0 + i),
        ).lastrowid
        c.execute("COMMIT")
        steps = [0, 1, 1] if device == "jetson" and profile else [0, 1, 2]
        for step in steps:
            c.execute("BEGIN IMMEDIATE")
            c.execute(
                "INSERT INTO measurements (tune_id, step, config, energy_j, latency_ms, energy_rel_std,"
                " latency_rel_std, role, measured_at, extra) VALUES (?, ?, ?, ?, ?, 0.01, NULL, 'explore', ?, NULL)",
                (tid, step, json.dumps({"gpu_mhz": 100.0 * (step + 1)}), 1.0 / (step + 1), 10.0 * (step + 1),
                 1000.5 + i),
            )
            c.execute("COMMIT")
    c.close()


def test_v1_file_upgrades_in_place_with_the_legacy_key_mapping(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    write_v1(path)
    with HistoryStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        tunes = {t.id: t for t in s.tunes()}
        assert sorted(tunes) == list(range(1, len(LEGACY) + 1))  # ids kept
        for i, (_, _, device, unit) in enumerate(LEGACY, start=1):
            t = tunes[i]
            assert (t.key.device, t.unit, t.measurements) == (device, unit, 3)
            assert t.best_config == {"gpu_mhz": 200.0} and t.status == "done" and t.started_at == 999.0 + i
        key = HistoryKey("sim:jetson-tx2", "efficientnet-b0", "abc")
        obs = s.observations(key, model_version="v1", unit="0")
        assert [(o.step, o.energy_j, o.unit) for o in obs] == [(0, 1.0, "0"), (1, 0.5, "0"), (2, 1.0 / 3, "0")]
        assert obs[0].energy_rel_std == 0.01 and obs[0].config == {"gpu_mhz": 100.0}
        best = s.best(HistoryKey("jetson:jetson-agx-xavier", "efficientnet-b0", "abc"), model_version="v1")
        assert best is not None and best.measurements == 3
        trows, mrows = s.rows()
        assert len({t.client_id for t in trows}) == len(LEGACY)
        assert len({m.client_id for m in mrows}) == len(mrows) == 3 * len(LEGACY)  # the doubled step kept apart
        # the store goes on: old tune ids stay usable, new ids follow the old ones
        s.add_measurement(1, step=3, config={"gpu_mhz": 400.0}, energy_j=0.2, latency_ms=40.0, role="explore")
        new = s.begin_tune(key, "v2", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit="0")
        assert new == len(LEGACY) + 1
        assert s.integrity_check() == "ok"
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA application_id").fetchone()[0] == 0x50544854
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"tunes", "measurements", "polythrottle_version"}
    con.close()


def _schema_diff(url: str) -> list:
    import sqlalchemy as sa
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from polythrottle.history.schema import metadata

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return [d for d in compare_metadata(ctx, metadata)
                    if not (d[0] == "remove_table" and d[1].name == "polythrottle_version")]
    finally:
        engine.dispose()


def test_fresh_and_migrated_schemas_match_schema_py(tmp_path: Path, pg_url: str) -> None:
    fresh, old = tmp_path / "fresh.sqlite", tmp_path / "old.sqlite"
    HistoryStore(fresh).close()
    write_v1(old)
    HistoryStore(old).close()
    HistoryStore(pg_url).close()
    assert _schema_diff(f"sqlite:///{fresh}") == []
    assert _schema_diff(f"sqlite:///{old}") == []
    assert _schema_diff(parse_target(pg_url).url) == []


def test_known_revisions_match_the_shipped_scripts() -> None:
    from alembic.script import ScriptDirectory

    from polythrottle.history.migrate import MIGRATIONS_DIR

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    chain = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert tuple(chain) == KNOWN_REVISIONS and int(chain[-1]) == SCHEMA_VERSION


def _open_close(target: str) -> None:
    from polythrottle.history import open_history

    open_history(target).close()


@pytest.mark.parametrize("backend", ["sqlite-v1", "postgresql"])
def test_concurrent_first_opens_migrate_once(tmp_path: Path, backend: str, request) -> None:
    if backend == "postgresql":
        target = request.getfixturevalue("pg_url")
    else:
        target = str(tmp_path / "h.sqlite")
        write_v1(Path(target))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_open_close, args=(target,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 4
    with HistoryStore(target) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert len(s.tunes()) == (len(LEGACY) if backend == "sqlite-v1" else 0)


def write_v2_era(path: Path) -> None:
    """A history file as main wrote it between #13 and the history package: v1 tables, ``unit`` added, keys
    already the device identity's, ``profile`` '' and ``PRAGMA user_version = 2`` (no version table)."""
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode = WAL")
    create_v1_tables(c, "ALTER TABLE tunes ADD COLUMN unit TEXT NOT NULL DEFAULT ''",
                     "DROP INDEX IF EXISTS tunes_by_key",
                     "CREATE INDEX tunes_by_key ON tunes (device, workload, space, model_version)", user_version=2)
    for i, (device, unit) in enumerate(V2_ERA):
        tid = c.execute(
            "INSERT INTO tunes (device, profile, unit, workload, space, model_version, slo_ms, optimizer, knobs,"
            " warm_from, status, started_at, finished_at, best_config, best_energy_j, best_latency_ms,"
            " baseline_energy_j, stop_reason) VALUES (?, '', ?, 'resnet50', 'abc', 'v1', 50.0, 'cbo', '[\"gpu_mhz\"]',"
            " NULL, 'done', ?, ?, '{\"gpu_mhz\": 200.0}', 0.5, 20.0, 1.0, 'budget')",
            (device, unit, 1000.0 + i, 1001.0 + i),
        ).lastrowid
        for step in range(2):
            c.execute("INSERT INTO measurements (tune_id, step, config, energy_j, latency_ms, role, measured_at)"
                      " VALUES (?, ?, '{\"gpu_mhz\": 100.0}', 1.0, 10.0, 'explore', ?)", (tid, step, 1000.5 + i))
    c.close()


V2_ERA = [("sim:jetson-agx-orin", "3"), ("jetson:jetson-agx-orin", "1423019082391"),
          ("nvml:nvidia-h200", "GPU-0e5b6d1c"), ("replay", "")]


def test_pre_alembic_v2_file_upgrades_keeping_devices_and_units(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    write_v2_era(path)
    with HistoryStore(path) as s:  # was refused: "has tables measurements, tunes not written by PolyThrottle"
        assert s.schema_version == SCHEMA_VERSION
        got = sorted((t.id, t.key.device, t.unit, t.measurements) for t in s.tunes())
        assert got == [(i, d, u, 2) for i, (d, u) in enumerate(V2_ERA, start=1)]
        best = s.best(HistoryKey("jetson:jetson-agx-orin", "resnet50", "abc"), model_version="v1",
                      unit="1423019082391")
        assert best is not None and best.unit == "1423019082391" and best.measurements == 2
