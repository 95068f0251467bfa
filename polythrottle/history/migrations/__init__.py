"""Alembic migrations of the history schema (SQLite and PostgreSQL), shipped in the package and run
by ``polythrottle.history.migrate`` when a store opens: users need no ``alembic.ini``.

Adding a revision (developers): copy the newest file in ``versions/``, set ``revision`` and
``down_revision``, freeze in it the tables it touches (never import ``schema.py`` from a revision), add
its id to ``polythrottle.history.version.KNOWN_REVISIONS`` and update ``schema.py`` to match."""
