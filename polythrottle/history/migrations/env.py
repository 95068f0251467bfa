"""Alembic environment: runs on the connection ``polythrottle.history.migrate`` passes in
``config.attributes["connection"]``, inside the transaction it holds (and the lock it took)."""

from __future__ import annotations

from alembic import context

from polythrottle.history.version import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
