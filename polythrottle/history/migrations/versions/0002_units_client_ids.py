"""Units and client ids: key (device, workload, space) without ``profile``; ``unit`` on tunes; a
writer-made ``client_id`` on tunes and measurements (unique), so uploads are idempotent.

Existing rows are copied with their ids. A SQLite file PolyThrottle wrote before Alembic with
``user_version = 2`` (v1 tables plus a ``unit`` column, keys already mapped) keeps its device and unit;
from v1 proper, the legacy key maps as the contract says:
``sim:...`` -> ``sim:`` + profile (else the stem of the spec's path without ``?query``), unit "0";
``replay`` -> ``replay``; ``jetson...`` -> ``jetson:`` + profile when profile is non-empty;
anything else (``nvml:N``: an index names no GPU model) is kept as it was. Units other than sim: "".
Legacy rows get client ids ``<uuid>`` (tunes) and ``<uuid>:<step>`` (measurements; ``#<id>`` is
appended when a legacy tune stored a step twice).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_BATCH = 2000


def legacy_device(device: str, profile: str) -> tuple[str, str]:
    """(new device, unit) of a v1 row (frozen here: later code may map differently)."""
    scheme = device.partition(":")[0].strip().lower()
    if scheme == "sim":
        name = profile or PurePosixPath(device.partition(":")[2].split("?", 1)[0]).stem
        return f"sim:{name}", "0"
    if scheme == "replay":
        return "replay", ""
    if scheme == "jetson" and profile:
        return f"jetson:{profile}", ""
    return device, ""


def _tables(meta: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    tunes = sa.Table(
        "tunes_v2", meta,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("workload", sa.Text, nullable=False),
        sa.Column("space", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("unit", sa.Text, nullable=False, server_default=""),
        sa.Column("slo_ms", sa.Double, nullable=False),
        sa.Column("optimizer", sa.Text, nullable=False),
        sa.Column("knobs", sa.Text, nullable=False),
        sa.Column("warm_from", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("finished_at", sa.Double),
        sa.Column("best_config", sa.Text),
        sa.Column("best_energy_j", sa.Double),
        sa.Column("best_latency_ms", sa.Double),
        sa.Column("baseline_energy_j", sa.Double),
        sa.Column("stop_reason", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_tunes"),
        sa.UniqueConstraint("client_id", name="uq_tunes_client_id"),
    )
    measurements = sa.Table(
        "measurements_v2", meta,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("tune_id", _ID, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("energy_j", sa.Double, nullable=False),
        sa.Column("latency_ms", sa.Double, nullable=False),
        sa.Column("energy_rel_std", sa.Double),
        sa.Column("latency_rel_std", sa.Double),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("measured_at", sa.Double, nullable=False),
        sa.Column("extra", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_measurements"),
        sa.ForeignKeyConstraint(["tune_id"], ["tunes_v2.id"], name="fk_measurements_tune", ondelete="CASCADE"),
        sa.UniqueConstraint("client_id", name="uq_measurements_client_id"),
    )
    return tunes, measurements


def upgrade() -> None:
    bind = op.get_bind()
    meta = sa.MetaData()
    new_tunes, new_meas = _tables(meta)
    meta.create_all(bind)
    old = sa.MetaData()
    old_tunes = sa.Table("tunes", old, autoload_with=bind)
    old_meas = sa.Table("measurements", old, autoload_with=bind)

    tune_cid: dict[int, str] = {}
    keyed = "unit" in old_tunes.c  # a pre-Alembic v2 SQLite file: keys mapped and units recorded already
    rows = bind.execute(sa.select(old_tunes).order_by(old_tunes.c.id)).mappings().all()
    for start in range(0, len(rows), _BATCH):
        batch = []
        for r in rows[start:start + _BATCH]:
            device, unit = (r["device"], r["unit"]) if keyed else legacy_device(r["device"], r["profile"])
            cid = uuid.uuid4().hex
            tune_cid[r["id"]] = cid
            d = {k: v for k, v in r.items() if k != "profile"}
            d.update(device=device, unit=unit, client_id=cid)
            batch.append(d)
        bind.execute(new_tunes.insert(), batch)

    seen: set[tuple[int, int]] = set()
    result = bind.execute(sa.select(old_meas).order_by(old_meas.c.id))
    while chunk := result.mappings().fetchmany(_BATCH):
        batch = []
        for r in chunk:
            cid = f"{tune_cid[r['tune_id']]}:{r['step']}"
            if (r["tune_id"], r["step"]) in seen:
                cid += f"#{r['id']}"
            seen.add((r["tune_id"], r["step"]))
            batch.append({**r, "client_id": cid})
        bind.execute(new_meas.insert(), batch)

    op.drop_table("measurements")  # first: dropping tunes must cascade into nothing
    op.drop_table("tunes")
    op.rename_table("tunes_v2", "tunes")
    op.rename_table("measurements_v2", "measurements")
    op.create_index("ix_tunes_key", "tunes", ["device", "workload", "space", "model_version"])
    op.create_index("ix_measurements_tune", "measurements", ["tune_id"])
    if bind.dialect.name == "postgresql":  # ids were copied: move the sequences past them
        for table in ("tunes", "measurements"):
            op.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 1), "
                       f"MAX(id) IS NOT NULL) FROM {table}")
    if bind.dialect.name == "sqlite":
        op.execute("PRAGMA application_id = 1347700820")  # 0x50544854, "PTHT"
        op.execute("PRAGMA user_version = 2")


def downgrade() -> None:
    raise NotImplementedError("history migrations are forward-only")
