"""systemd notifications (sd_notify) over ``$NOTIFY_SOCKET``: READY=1, STATUS=..., WATCHDOG=1, STOPPING=1.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by ``$NOTIFY_SOCKET``
(a leading ``@`` means the abstract namespace). Ten lines of stdlib do it, so no dependency (the
``sdnotify``/``systemd`` packages would add nothing but a package to install on every board).
Without ``$NOTIFY_SOCKET`` (not started by systemd) every call is a no-op. Send errors are reported
once on stderr and never stop the daemon.
"""

from __future__ import annotations

import os
import socket
import sys


class Notifier:
    """Sends sd_notify messages; ``enabled`` is False when not run by systemd with Type=notify."""

    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines (e.g. ``send(READY=1, STATUS="tuning")``); True if sent."""
        if not self.address:
            return False
        msg = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall(msg.encode())
            return True
        except OSError as e:
            if not self._warned:
                print(f"polythrottle: warning: cannot notify systemd at $NOTIFY_SOCKET ({e.strerror or e})",
                      file=sys.stderr)
                self._warned = True
            return False

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status, MAINPID=os.getpid())

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)


def watchdog_interval_s() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds (how often to send WATCHDOG=1), None when no watchdog is
    set or it is meant for another process (``$WATCHDOG_PID``)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.strip() != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


__all__ = ["Notifier", "watchdog_interval_s"]
