"""Where a history lives: a plain path or ``sqlite:///`` URL (embedded SQLite) or a ``postgresql://`` URL.

``parse_target`` never imports SQLAlchemy (the CLI's ``--help`` stays fast). Passwords are kept only
inside ``HistoryTarget.url`` (what the driver gets); ``display`` and every message use ``mask``.
PostgreSQL URLs follow libpq: a missing password, host, port or user is taken from ``PGPASSFILE``
(``~/.pgpass``), ``PGPASSWORD``, ``PGHOST``, ``PGPORT``, ``PGUSER``; ``?host=/run/postgresql`` names a
Unix socket directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from polythrottle import paths
from polythrottle.errors import brief
from polythrottle.history.errors import HistoryError

DEFAULT_FILENAME = paths.HISTORY_FILENAME

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/?#]*):(?P<pw>[^@/?#]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<k>[?&]password=)(?P<pw>[^&#]*)", re.IGNORECASE)
_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def mask(text: str) -> str:
    """``text`` with every URL password replaced by ``***`` (``user:secret@host`` and ``?password=``)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['k']}***", text)


def _secrets(url: str) -> tuple[str, ...]:
    found = [m["pw"] for m in _USERINFO.finditer(url)] + [m["pw"] for m in _QUERY_PASSWORD.finditer(url)]
    out: set[str] = set()
    for pw in found:
        if pw:
            out.update({pw, unquote(pw)})
    return tuple(sorted(out, key=len, reverse=True))


@dataclass(frozen=True)
class HistoryTarget:
    """A parsed history location. ``url`` holds the credentials: never print it; print ``display``."""

    kind: str  # "sqlite" | "postgresql"
    url: str = field(repr=False)  # SQLAlchemy URL: sqlite:///ABS or postgresql+psycopg://...
    display: str  # what messages show: the path, or the URL with its password masked
    path: Path | None = None  # SQLite only
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "sqlite"

    def scrub(self, message: str) -> str:
        """``message`` made safe to show: URL passwords masked, this target's password removed, one line."""
        message = mask(message)
        for s in self.secrets:
            message = message.replace(s, "***")
        return " ".join(message.split())


def parse_target(target: str | os.PathLike[str]) -> HistoryTarget:
    """A plain path, ``sqlite:///relative`` / ``sqlite:////absolute`` (SQLAlchemy's convention), or
    ``postgresql://[user[:password]@][host][:port]/db[?k=v]`` (also ``postgres://``,
    ``postgresql+psycopg://``). Raises HistoryError for anything else (naming it, password masked)."""
    if not isinstance(target, (str, os.PathLike)) or not isinstance(os.fspath(target), str):
        raise HistoryError(f"history location must be a path or URL, got {brief(target, 60)}")
    if isinstance(target, os.PathLike) or "://" not in str(target):
        raw = os.fspath(target)
        if not str(raw).strip():
            raise HistoryError("history location is empty")
        path = Path(raw).expanduser().absolute()
        return HistoryTarget("sqlite", f"sqlite:///{path}", str(path), path)
    text = str(target).strip()
    scheme = text.split("://", 1)[0].lower()
    if scheme == "sqlite":
        rest = text.split("://", 1)[1]
        if not rest.startswith("/") or rest in ("/", "") or "?" in rest:
            raise HistoryError(f"history URL {mask(text)}: use sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH")
        path = Path(rest[1:]).expanduser().absolute()
        return HistoryTarget("sqlite", f"sqlite:///{path}", str(path), path)
    if scheme in _PG_SCHEMES:
        rest = text.split("://", 1)[1]
        try:
            parts = urlsplit("postgresql://" + rest)
            parts.port  # noqa: B018  (validates the port)
        except ValueError as e:
            raise HistoryError(f"history URL {mask(text)} is malformed ({e})") from None
        url = "postgresql+psycopg://" + rest
        return HistoryTarget("postgresql", url, mask(text), None, _secrets(text))
    raise HistoryError(
        f"history URL {mask(text)}: unsupported scheme {scheme!r}; use a path, sqlite:///PATH or postgresql://..."
    )


def default_history_path(state_dir: Path | None = None) -> Path:
    """``STATE_DIR/history.sqlite`` with the state directory of ``polythrottle.paths.state_dir``."""
    return paths.state_dir(state_dir) / DEFAULT_FILENAME


def default_history(state_dir: Path | None = None) -> str:
    """The history when none is given: ``$POLYTHROTTLE_HISTORY_URL``, else ``STATE_DIR/history.sqlite``
    (``polythrottle.paths.default_history``, the one rule for every face)."""
    return paths.default_history(state_dir)


__all__ = [
    "DEFAULT_FILENAME",
    "HistoryTarget",
    "default_history",
    "default_history_path",
    "mask",
    "parse_target",
]
