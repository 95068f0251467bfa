"""Energy from sampled power: a background thread reads power every ``period_s`` and integrates it.

For sources that give instantaneous power but no energy counter (INA3221 rails, jtop). Each sample
is timestamped at the middle of its read; energy over a window is the trapezoidal integral of the
samples, with power interpolated at the window's edges (a sample is taken at ``begin()`` and at
``end()`` so the edges are measured, not extrapolated). A failed read (an I/O error, a torn or
garbage value) is skipped and counted; the integral bridges the gap between good samples. A window
whose reads all failed raises DeviceError.

Overhead: the sampler's own read time is recorded (``read_s`` / ``reads``), so every window
reports the fraction of wall time spent reading (``overhead``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from polythrottle.energy.base import EnergyMeter, EnergyWindow
from polythrottle.errors import DeviceError

Clock = Callable[[], float]


@dataclass(frozen=True)
class SamplerStats:
    """About one window: good samples, failed reads, seconds spent reading, wall seconds."""

    samples: int
    failures: int
    read_s: float
    duration_s: float

    @property
    def overhead(self) -> float:
        """Fraction of the window's wall time the sampler spent reading (0..1)."""
        return self.read_s / self.duration_s if self.duration_s > 0 else 0.0


class PowerSampler:
    """Reads ``read_w()`` (watts) every ``period_s`` on a daemon thread between start() and stop()."""

    def __init__(self, read_w: Callable[[], float], period_s: float = 0.02, clock: Clock = time.monotonic) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.read_w = read_w
        self.period_s = period_s
        self.clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reset()

    def _reset(self) -> None:
        self.times: list[float] = []
        self.watts: list[float] = []
        self.failures = 0
        self.read_s = 0.0
        self.last_error: str = ""

    def sample(self) -> bool:
        """Take one sample now; False (counted) if the read failed."""
        a = self.clock()
        try:
            w = float(self.read_w())
            ok = np.isfinite(w)
            err = "" if ok else f"non-finite power {w}"
        except Exception as e:  # noqa: BLE001 - any failed read is skipped and counted
            ok, w, err = False, 0.0, f"{type(e).__name__}: {e}"
        b = self.clock()
        with self._lock:
            self.read_s += b - a
            if ok:
                self.times.append((a + b) / 2)
                self.watts.append(w)
            else:
                self.failures += 1
                self.last_error = err
        return ok

    def _loop(self) -> None:
        next_t = self.clock() + self.period_s
        while not self._stop.wait(max(0.0, next_t - self.clock())):
            self.sample()
            next_t += self.period_s
            now = self.clock()
            if next_t < now:  # fell behind (a slow read): skip missed ticks, keep the phase
                next_t = now + self.period_s

    def start(self) -> None:
        self.stop()
        with self._lock:
            self._reset()
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="polythrottle-power", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.sample()

    def integrate(self, t0: float, t1: float) -> float:
        """Energy (J) over [t0, t1] (clock seconds). Raises DeviceError if no read succeeded."""
        with self._lock:
            t = np.asarray(self.times)
            p = np.asarray(self.watts)
        if len(t) == 0:
            raise DeviceError(f"every power read failed ({self.failures} tries; last: {self.last_error})")
        if t1 <= t0:
            return 0.0
        inside = (t > t0) & (t < t1)
        tt = np.concatenate([[t0], t[inside], [t1]])
        pp = np.interp(tt, t, p)
        return float(np.sum((pp[1:] + pp[:-1]) * np.diff(tt)) / 2)


class SampledPowerMeter(EnergyMeter):
    """An EnergyMeter integrating ``read_w()`` sampled every ``period_s`` (see the module docstring).

    ``last_stats`` describes the last window (samples, failed reads, read time, overhead);
    ``last_span`` is its (start, end) on ``clock``.
    """

    name = "sampled-power"

    def __init__(self, read_w: Callable[[], float], period_s: float = 0.02, clock: Clock = time.monotonic) -> None:
        self.sampler = PowerSampler(read_w, period_s, clock)
        self.clock = clock
        self._t0: float | None = None
        self.last_stats: SamplerStats | None = None
        self.last_span: tuple[float, float] | None = None

    def begin(self) -> None:
        self.sampler.start()
        self._t0 = self.clock()

    def end(self) -> EnergyWindow:
        if self._t0 is None:
            raise DeviceError("end() called before begin()")
        t0, t1 = self._t0, self.clock()
        self._t0 = None
        self.sampler.stop()
        energy = self.sampler.integrate(t0, t1)
        s = self.sampler
        self.last_stats = SamplerStats(len(s.times), s.failures, s.read_s, t1 - t0)
        self.last_span = (t0, t1)
        return EnergyWindow(energy, t1 - t0, len(s.times))

    def close(self) -> None:
        self.sampler.stop()
