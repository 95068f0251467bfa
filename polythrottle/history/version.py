"""Schema version constants (no SQLAlchemy import: ``polythrottle.history.SCHEMA_VERSION`` is cheap)."""

from __future__ import annotations

SCHEMA_VERSION = 2
"""Version this code writes (the head Alembic revision, as an int). Older databases are upgraded on
open; newer ones are refused."""

KNOWN_REVISIONS = ("0001", "0002")
"""Alembic revisions in ``migrations/versions``, oldest first (a test checks this list against them)."""

HEAD_REVISION = KNOWN_REVISIONS[-1]

VERSION_TABLE = "polythrottle_version"
"""Alembic's version table (not ``alembic_version``: a shared PostgreSQL database may hold another app's)."""

APPLICATION_ID = 0x50544854  # "PTHT": marks a SQLite file as a PolyThrottle history database

__all__ = ["APPLICATION_ID", "HEAD_REVISION", "KNOWN_REVISIONS", "SCHEMA_VERSION", "VERSION_TABLE"]
