"""A private PostgreSQL cluster for tests and benchmarks (real server; nothing mocked).

``PgCluster`` runs ``initdb`` and ``pg_ctl`` from ``$POLYTHROTTLE_PG_BIN`` or
``/usr/lib/postgresql/15/bin`` (Debian's ``postgresql-15``) in a temporary directory, listening on
127.0.0.1 at a free port and on a Unix socket in that directory. ``initdb`` refuses to run as root:
as root, every server command runs as the ``postgres`` user (``runuser -u postgres --``).

Authentication: ``trust`` on the Unix socket, ``scram-sha-256`` over TCP with the superuser's password
``PASSWORD`` (so tests see real password handling). ``url(db)`` is a TCP URL with the password;
``stop()``/``start()`` simulate an outage (the port stays the same).

The port is picked free but only bound when the server starts, so another process (a second pytest-xdist
worker starting its own cluster) may take it in between: the first start retries on a fresh port, up to
``START_ATTEMPTS`` times, when the server could not bind its port. Later starts keep the port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("POLYTHROTTLE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PASSWORD = "pt-secret-Zq7"
START_ATTEMPTS = 5
"""Ports the first start tries (each fresh) before it gives up on a port taken between pick and bind."""
BIND_FAILED = ("could not bind", "could not create any TCP/IP sockets", "Address already in use")
"""What the server log says when the server could not listen on its port."""


def pg_available() -> str | None:
    """None if a cluster can be started here, else why not (a skip reason)."""
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / b).is_file()]
    if missing:
        return f"PostgreSQL server binaries not found in {PG_BIN} (apt install postgresql-15, or set POLYTHROTTLE_PG_BIN)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is not available"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A throwaway PostgreSQL server. ``settings``: extra ``-c name=value`` server settings."""

    def __init__(self, *, settings: dict[str, str] | None = None, root: Path | None = None) -> None:
        reason = pg_available()
        if reason:
            raise RuntimeError(reason)
        self.dir = Path(tempfile.mkdtemp(prefix="pt-pg-", dir=root))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.settings = {"listen_addresses": "127.0.0.1", "max_connections": "200", **(settings or {})}
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        try:
            pwfile = self.dir / "pwfile"
            pwfile.write_text(PASSWORD + "\n")
            if self._as_postgres:
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--auth-local=trust",
                      "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-instructions")
            pwfile.unlink()
            self._first_start()
        except BaseException:  # no server runs: the directory would be left behind
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _run(self, binary: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(PG_BIN / binary), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{binary} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
        return r

    def _first_start(self) -> None:
        """``start()``, on a fresh port while the one picked was taken before the server bound it."""
        log = self.dir / "server.log"
        for attempt in range(1, START_ATTEMPTS + 1):
            seen = log.stat().st_size if log.exists() else 0  # pg_ctl appends: this start's lines follow
            try:
                self.start()
                return
            except RuntimeError:
                said = log.read_bytes()[seen:].decode(errors="replace") if log.exists() else ""
                if attempt == START_ATTEMPTS or not any(s in said for s in BIND_FAILED):
                    raise
                self.port = _free_port()

    def start(self) -> None:
        opts = " ".join([f"-p {self.port}", f"-k {self.dir}"] + [f"-c {k}={v}" for k, v in self.settings.items()])
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "60",
                  "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket; returns psql's output."""
        r = self._run("psql", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-d", db,
                      "-v", "ON_ERROR_STOP=1", "-At", "-c", sql)
        return r.stdout

    def create_database(self, name: str) -> str:
        """A new database; returns its TCP URL (with the password)."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, db: str = "postgres", *, password: bool = True) -> str:
        auth = f"postgres:{PASSWORD}" if password else "postgres"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(pred, timeout_s: float = 30.0, step_s: float = 0.05) -> bool:
    """Poll ``pred()`` until true or ``timeout_s`` passed."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step_s)
    return bool(pred())
