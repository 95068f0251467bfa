"""The current history schema (SQLAlchemy Core tables), the same on SQLite and PostgreSQL.

The schema is created and upgraded only by the Alembic revisions in ``migrations/versions`` (each
with its own frozen copy of the tables it touches); these definitions are what the store queries and
must match the head revision (``tests/test_history_migration.py`` compares them).

- ``tunes``: one row per tune; ``client_id`` is made by the writer (unique: an upload repeated after a
  lost reply does not double the tune); key = (device, workload, space) + model_version; ``unit`` is the
  unit the tune ran on ("" when unknown).
- ``measurements``: one row per measurement; ``client_id`` = tune client id + ":" + step (unique).
"""

from __future__ import annotations

import sqlalchemy as sa

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY is the rowid

metadata = sa.MetaData()

tunes = sa.Table(
    "tunes",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("workload", sa.Text, nullable=False),
    sa.Column("space", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("unit", sa.Text, nullable=False, server_default=""),
    sa.Column("slo_ms", sa.Double, nullable=False),
    sa.Column("optimizer", sa.Text, nullable=False),
    sa.Column("knobs", sa.Text, nullable=False),  # JSON list of tuned knob names
    sa.Column("warm_from", sa.Text),  # model version the tune was warm-started from
    sa.Column("status", sa.Text, nullable=False),  # running | done | failed
    sa.Column("started_at", sa.Double, nullable=False),  # unix seconds
    sa.Column("finished_at", sa.Double),
    sa.Column("best_config", sa.Text),  # JSON object, NULL when nothing was feasible
    sa.Column("best_energy_j", sa.Double),
    sa.Column("best_latency_ms", sa.Double),
    sa.Column("baseline_energy_j", sa.Double),
    sa.Column("stop_reason", sa.Text),
    sa.PrimaryKeyConstraint("id", name="pk_tunes"),
    sa.UniqueConstraint("client_id", name="uq_tunes_client_id"),
    sa.Index("ix_tunes_key", "device", "workload", "space", "model_version"),
)

measurements = sa.Table(
    "measurements",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("tune_id", Id, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # JSON object, the full device config
    sa.Column("energy_j", sa.Double, nullable=False),  # energy per inference, joules
    sa.Column("latency_ms", sa.Double, nullable=False),
    sa.Column("energy_rel_std", sa.Double),
    sa.Column("latency_rel_std", sa.Double),
    sa.Column("role", sa.Text, nullable=False),  # baseline | explore | recheck | ...
    sa.Column("measured_at", sa.Double, nullable=False),  # unix seconds
    sa.Column("extra", sa.Text),  # JSON object or NULL
    sa.PrimaryKeyConstraint("id", name="pk_measurements"),
    sa.ForeignKeyConstraint(["tune_id"], ["tunes.id"], name="fk_measurements_tune", ondelete="CASCADE"),
    sa.UniqueConstraint("client_id", name="uq_measurements_client_id"),
    sa.Index("ix_measurements_tune", "tune_id"),
)

TUNE_COLUMNS = tuple(c.name for c in tunes.columns if c.name != "id")
MEASUREMENT_COLUMNS = tuple(c.name for c in measurements.columns if c.name != "id")

__all__ = ["MEASUREMENT_COLUMNS", "TUNE_COLUMNS", "measurements", "metadata", "tunes"]
