"""The v1 schema (PolyThrottle before units and client ids; SQLite ``PRAGMA user_version = 1``).

Files written then carry no version table: ``migrate`` stamps them ``0001`` and upgrades them.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tunes",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("profile", sa.Text, nullable=False),
        sa.Column("workload", sa.Text, nullable=False),
        sa.Column("space", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
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
    )
    op.create_index("tunes_by_key", "tunes", ["device", "profile", "workload", "space", "model_version"])
    op.create_table(
        "measurements",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("tune_id", _ID, sa.ForeignKey("tunes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("energy_j", sa.Double, nullable=False),
        sa.Column("latency_ms", sa.Double, nullable=False),
        sa.Column("energy_rel_std", sa.Double),
        sa.Column("latency_rel_std", sa.Double),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("measured_at", sa.Double, nullable=False),
        sa.Column("extra", sa.Text),
    )
    op.create_index("measurements_by_tune", "measurements", ["tune_id"])
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA application_id = 1347700820")  # 0x50544854, "PTHT"
        op.execute("PRAGMA user_version = 1")


def downgrade() -> None:
    raise NotImplementedError("history migrations are forward-only")
