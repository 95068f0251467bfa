"""SLO-aware scheduling of fine-tuning iterations on a GPU that also serves inference (time-sharing).

The inference server tells the scheduler about arrivals, its queue and each batch it serves; the
training loop asks for a slot before every fine-tuning iteration::

    sched = FineTuneScheduler(predictor, slo_ms=30, batch_sizes=[1, 2, 4, 8], finetune_batch=32)
    # inference thread                         # training loop (another thread)
    sched.note_arrival()                       for batch in loader:
    n = sched.inference_batch(len(queue))          with sched.finetune_slot() as ok:
    ... serve n requests ...                           if ok:
    sched.inference_finished(n, latency_ms)                train_step(batch)

Policies. ``greedy``: every iteration is admitted at once; inference batches are as large as the queue
allows (up to the largest batch size). ``adaptive`` (PolyThrottle): an iteration is admitted only when
the predicted inference latency still meets the SLO, otherwise the inference batch is capped
("shrunk") or the iteration deferred:

1. Co-running: with ``L(b)`` the predicted latency of an inference batch of ``b`` while fine-tuning runs
   and ``n(T)`` a high quantile of the arrivals in ``T`` ms (rate and burstiness measured online), the
   smallest batch ``b_ss`` with ``n(L(b)) <= b`` keeps the queue stable; a request waits at most for
   the batch in flight plus its own, so the iteration is admitted if ``2 L(b_ss) <= margin * SLO`` and the
   requests already queued still make it. While it runs, batches are capped at the largest ``b`` with
   ``2 L(b) <= margin * SLO``.
2. Otherwise, in a gap: with nothing queued or in flight, admitted if the iteration (its measured
   duration) ends early enough that a request arriving at the earliest likely time (a low quantile of
   the next inter-arrival gap) still meets the SLO.
3. Otherwise deferred: re-decided whenever the queue changes (and at least every ``poll_s``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from polythrottle.errors import BadInputError
from polythrottle.finetune.predictor import LatencyPredictor

POLICIES = ("greedy", "adaptive")


@dataclass(frozen=True)
class SchedulerSettings:
    """margin: plan to this fraction of the SLO. z: arrival quantile (1.64 ~ 95%).
    rate_window: inter-arrival gaps kept for the rate/burstiness estimate. poll_s: re-decide period
    while deferring. finetune_ms: a-priori duration of one iteration until one has been measured."""

    margin: float = 0.85
    z: float = 1.64
    rate_window: int = 64
    poll_s: float = 0.001
    finetune_ms: float | None = None


@dataclass(frozen=True)
class Decision:
    """Whether a fine-tuning iteration may start now, the inference batch cap while it runs, and why."""

    admit: bool
    cap: int
    reason: str
    predicted_ms: float | None = None


@dataclass
class SchedulerStats:
    admitted: int = 0
    admitted_corun: int = 0
    admitted_gap: int = 0
    deferrals: int = 0
    shrunk_batches: int = 0
    finetune_ms_total: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


class FineTuneScheduler:
    """Admits fine-tuning iterations so that inference keeps its latency SLO (thread-safe).

    predictor: fitted ``LatencyPredictor`` (inference batch latency with/without fine-tuning).
    batch_sizes: the inference batch sizes the server may use. finetune_batch: samples per iteration.
    policy: ``adaptive`` or ``greedy``. clock: seconds (monotonic); injectable for tests.
    """

    def __init__(
        self,
        predictor: LatencyPredictor,
        slo_ms: float,
        *,
        batch_sizes: Sequence[int],
        finetune_batch: int,
        policy: str = "adaptive",
        settings: SchedulerSettings | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if policy not in POLICIES:
            raise BadInputError(f"unknown scheduling policy {policy!r}; expected one of: {', '.join(POLICIES)}")
        if not slo_ms > 0:
            raise BadInputError(f"the SLO must be positive, got {slo_ms}")
        sizes = sorted({int(b) for b in batch_sizes})
        if not sizes or sizes[0] < 1:
            raise BadInputError("batch_sizes must be positive integers")
        if finetune_batch < 1:
            raise BadInputError("finetune_batch must be >= 1")
        self.predictor = predictor
        self.slo_ms = float(slo_ms)
        self.batch_sizes = sizes
        self.finetune_batch = int(finetune_batch)
        self.policy = policy
        self.settings = settings or SchedulerSettings()
        self.clock = clock
        self.stats = SchedulerStats()
        self._cond = threading.Condition()
        self._arrivals: deque[float] = deque(maxlen=self.settings.rate_window + 1)
        self._queue_len = 0
        self._oldest_s: float | None = None
        self._inflight: int = 0
        self._inflight_since: float | None = None
        self._ft_running = False
        self._ft_cap = sizes[-1]
        self._ft_ms: float | None = self.settings.finetune_ms
        self._ft_started: float | None = None
        self._pred_cache: dict[tuple[int, int], float] = {}

    # ----- predictions and arrival statistics -------------------------------------------------------
    def _latency(self, batch: int, finetune: bool) -> float:
        key = (batch, self.finetune_batch if finetune else 0)
        if key not in self._pred_cache:
            self._pred_cache[key] = max(self.predictor.predict(*key), 0.0)
        return self._pred_cache[key]

    def arrival_rate(self) -> tuple[float, float]:
        """(arrivals per ms, coefficient of variation of the gaps); (0, 1) before two arrivals."""
        a = list(self._arrivals)
        if len(a) < 2:
            return 0.0, 1.0
        gaps = [(y - x) * 1e3 for x, y in zip(a, a[1:])]
        mean = sum(gaps) / len(gaps)
        if mean <= 0:
            return 0.0, 1.0
        if len(gaps) < 8:
            return 1.0 / mean, 1.0  # too few gaps to trust a low burstiness
        var = sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1)
        return 1.0 / mean, math.sqrt(var) / mean

    def _arrivals_hi(self, window_ms: float, rate: float, cv: float) -> float:
        m = rate * window_ms
        return m + self.settings.z * cv * math.sqrt(m)

    # ----- the decision -------------------------------------------------------------------------------
    def decide(self, now: float | None = None) -> Decision:
        """Whether a fine-tuning iteration may start now (does not change any state)."""
        now = self.clock() if now is None else now
        sizes = self.batch_sizes
        if self.policy == "greedy":
            return Decision(True, sizes[-1], "greedy")
        budget = self.settings.margin * self.slo_ms
        rate, cv = self.arrival_rate()
        # 1. co-running with capped inference batches
        b_ss = None
        for b in sizes:
            if self._arrivals_hi(self._latency(b, True), rate, cv) <= b:
                b_ss = b
                break
        caps = [b for b in sizes if 2.0 * self._latency(b, True) <= budget]
        if b_ss is not None and caps and caps[-1] >= b_ss:
            cap = caps[-1]
            wait = 0.0 if self._oldest_s is None else (now - self._oldest_s) * 1e3
            inflight = self._latency(max(self._inflight, 1), True) if self._inflight else 0.0
            queued = min(self._queue_len, cap)
            worst_queued = wait + inflight + (self._latency(queued, True) if queued else 0.0)
            if worst_queued <= budget:
                return Decision(True, cap, "co-run", 2.0 * self._latency(b_ss, True))
            return Decision(False, cap, "queued requests would miss the SLO", worst_queued)
        # 2. in a gap before the next arrival
        if self._queue_len == 0 and self._inflight == 0:
            ft_ms = self._ft_ms
            if ft_ms is None:
                return Decision(False, 1, "fine-tuning duration unknown and co-running would miss the SLO")
            if rate <= 0:
                return Decision(True, sizes[0], "gap (no arrivals seen)", ft_ms)
            last = self._arrivals[-1] if self._arrivals else now
            gap_lo_ms = max(0.0, (1.0 - self.settings.z * cv) / rate)
            next_lo = last + gap_lo_ms / 1e3
            worst = (now + ft_ms / 1e3 - max(next_lo, now)) * 1e3 + self._latency(sizes[0], True)
            if worst <= budget:
                return Decision(True, sizes[0], "gap", worst)
            return Decision(False, sizes[0], "the next request would wait too long", worst)
        return Decision(False, sizes[0], "co-running would miss the SLO and requests are pending")

    # ----- inference side -----------------------------------------------------------------------------
    def note_arrival(self, t_s: float | None = None) -> None:
        """Record one request arrival (``t_s``: its arrival time on ``clock``, default now)."""
        with self._cond:
            self._arrivals.append(self.clock() if t_s is None else t_s)
            self._cond.notify_all()

    def set_queue(self, length: int, oldest_arrival_s: float | None) -> None:
        """The server's queue: requests waiting (not in flight) and the oldest one's arrival time."""
        with self._cond:
            self._queue_len = max(int(length), 0)
            self._oldest_s = oldest_arrival_s if length > 0 else None
            self._cond.notify_all()

    def inference_batch(self, queued: int) -> int:
        """How many of ``queued`` requests to serve in the next batch (capped while fine-tuning runs)."""
        with self._cond:
            cap = self.batch_sizes[-1]
            if self.policy == "adaptive":
                cap = self._ft_cap if self._ft_running else self._alone_cap()
            n = min(int(queued), cap)
            if n < queued and cap < self.batch_sizes[-1]:
                self.stats.shrunk_batches += 1
            return max(n, 0)

    def _alone_cap(self) -> int:
        budget = self.settings.margin * self.slo_ms
        caps = [b for b in self.batch_sizes if 2.0 * self._latency(b, False) <= budget]
        return caps[-1] if caps else self.batch_sizes[0]

    def inference_started(self, batch: int) -> None:
        with self._cond:
            self._inflight = int(batch)
            self._inflight_since = self.clock()

    def inference_finished(self, batch: int, latency_ms: float | None = None) -> None:
        with self._cond:
            self._inflight = 0
            self._inflight_since = None
            self._cond.notify_all()

    # ----- fine-tuning side ---------------------------------------------------------------------------
    def acquire(self, timeout_s: float | None = None) -> bool:
        """Block until a fine-tuning iteration is admitted (True) or ``timeout_s`` passes (False)."""
        deadline = None if timeout_s is None else self.clock() + timeout_s
        with self._cond:
            while True:
                d = self.decide()
                if d.admit:
                    self._ft_running = True
                    self._ft_cap = d.cap
                    self._ft_started = self.clock()
                    self.stats.admitted += 1
                    if d.reason == "co-run":
                        self.stats.admitted_corun += 1
                    elif d.reason.startswith("gap"):
                        self.stats.admitted_gap += 1
                    return True
                self.stats.deferrals += 1
                self.stats.reasons[d.reason] = self.stats.reasons.get(d.reason, 0) + 1
                wait = self.settings.poll_s
                if deadline is not None:
                    left = deadline - self.clock()
                    if left <= 0:
                        return False
                    wait = min(wait, left)
                self._cond.wait(wait)

    def release(self, duration_ms: float | None = None) -> None:
        """The admitted iteration finished; ``duration_ms`` (default: measured here) updates the
        iteration-duration estimate (an exponential average)."""
        with self._cond:
            if not self._ft_running:
                return
            if duration_ms is None and self._ft_started is not None:
                duration_ms = (self.clock() - self._ft_started) * 1e3
            if duration_ms is not None:
                self.stats.finetune_ms_total += duration_ms
                self._ft_ms = duration_ms if self._ft_ms is None else 0.8 * self._ft_ms + 0.2 * duration_ms
            self._ft_running = False
            self._ft_started = None
            self._cond.notify_all()

    @contextmanager
    def finetune_slot(self, timeout_s: float | None = None) -> Iterator[bool]:
        """``with sched.finetune_slot() as ok:`` run the iteration if ``ok``; released on exit."""
        ok = self.acquire(timeout_s)
        try:
            yield ok
        finally:
            if ok:
                self.release()

    @property
    def finetune_running(self) -> bool:
        return self._ft_running


__all__ = ["POLICIES", "Decision", "FineTuneScheduler", "SchedulerSettings", "SchedulerStats"]
