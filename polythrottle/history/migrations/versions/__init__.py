"""Alembic revisions of the history schema, oldest first (ids 0001, 0002, ...)."""
