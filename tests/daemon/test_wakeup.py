"""The daemon's wake-up: set from a signal handler while the main thread waits on it, it never hangs
(``threading.Event`` does: the handler can wait on the event's lock held by the thread it interrupted)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

from polythrottle.daemon.wakeup import Wakeup

STORM = textwrap.dedent("""
    import signal, time
    from polythrottle.daemon.wakeup import Wakeup
    wake = Wakeup()
    signal.signal(signal.SIGALRM, lambda s, f: wake.set())
    signal.setitimer(signal.ITIMER_REAL, 0.003, 0.003)  # a signal every 3 ms, at any point of the loop
    t0, turns = time.monotonic(), 0
    while time.monotonic() - t0 < 2.0:
        wake.wait(0.001)
        turns += 1
    signal.setitimer(signal.ITIMER_REAL, 0)
    print("turns", turns)
""")


def test_a_signal_storm_never_hangs_the_waiting_thread():
    r = subprocess.run([sys.executable, "-c", STORM], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("turns ")


def test_wait_returns_when_set_from_another_thread_and_clears():
    wake = Wakeup()
    try:
        assert wake.wait(0.01) is False
        threading.Timer(0.05, wake.set).start()
        t0 = time.monotonic()
        assert wake.wait(10) is True
        assert time.monotonic() - t0 < 5
        for _ in range(100_000):  # more wake-ups than the pipe holds: set never blocks
            wake.set()
        assert wake.wait(0) is True
        assert wake.wait(0) is False  # cleared
    finally:
        wake.close()
    wake.set()  # after close: a no-op, not a write to a reused descriptor
