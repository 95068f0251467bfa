"""A wake-up the daemon's main loop waits on, safe to raise from a signal handler and from any thread.

``threading.Event`` is not: its ``set`` takes the event's lock, and a signal handler runs in the main
thread between two bytecodes, possibly while that same thread holds the lock inside ``Event.wait`` or
``clear``; the handler then waits on itself forever and every later signal queues behind it (a daemon
that ignores SIGTERM). Here ``set`` is one non-blocking ``os.write`` to a pipe, which takes no lock.
"""

from __future__ import annotations

import contextlib
import os
import select


class Wakeup:
    """``set()`` from anywhere (a signal handler included); ``wait(timeout_s)`` in one thread returns
    when set (clearing it) or after ``timeout_s`` seconds. ``close()`` frees the pipe."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def set(self) -> None:
        """Wake the waiter; never blocks (a full pipe already holds a pending wake-up). A no-op once closed
        (never a write to a descriptor number the process may have reused)."""
        if self._w < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._w, b"\0")

    def wait(self, timeout_s: float | None) -> bool:
        """Wait until set or ``timeout_s`` seconds passed; True if set. Clears the wake-ups received."""
        ready, _, _ = select.select([self._r], [], [], timeout_s)
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass
        return True

    def close(self) -> None:
        """Free the pipe; call it from the waiting thread once no other thread can ``set`` any more."""
        fds, self._r, self._w = (self._r, self._w), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


__all__ = ["Wakeup"]
