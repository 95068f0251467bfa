"""SLO-aware scheduling of fine-tuning iterations on a GPU that also serves inference (time-sharing).

The inference server tells the scheduler about arrivals, its queue and each batch it serves; the
training loop asks for a slot before every fine-tuning iteration::

    sched = FineTuneScheduler(predictor, slo_ms=30, batch_sizes=[1, 2, 4, 8], finetune_batch=32)
    # inference thread                         # training loop (another thread)
    sched.note_arrival()                       for batch in loader:
    n = sched.inference_batch(len(queue))          with sched.finetune_slot() as ok:
    ... serve n requests ...                           if ok:
    sched.inference_finished(n, latency_ms)                train_step(batch)

Inference batching is SLO-aware in both policies: the server serves a batch when ``target`` requests
are queued or the oldest has waited ``max_wait_ms`` (``batch_plan``); ``target`` is the largest batch
``b`` whose predicted latency ``L(b)`` plus the time to collect it, ``(b - 1) / rate``, fits in
``margin * SLO`` (larger batches cost less energy per inference), and ``max_wait_ms`` what is left of
that budget after ``L(target)``.

Policies. ``greedy``: every fine-tuning iteration is admitted at once, and inference is planned as if
it ran alone. ``adaptive`` (PolyThrottle): inference is planned with the latency predicted while
fine-tuning runs, and an iteration is admitted only when the predicted inference latency still meets
the SLO, shrinking the inference batch or deferring otherwise:

1. Co-running: admitted if some batch size meets the SLO and keeps up with the arrival rate while
   fine-tuning runs (``rate * L(b) / b <= 0.9``), and the requests already queued still make it;
   batches are then planned with that (shrunk) target.
2. Otherwise, in a gap: with nothing queued or in flight, admitted if the iteration (its measured
   duration) ends early enough that a request arriving at the earliest likely time (a low quantile of
   the next inter-arrival gap; arrival rate and burstiness are measured online) still meets the SLO.
3. Otherwise deferred: re-decided whenever the queue changes (and at least every ``poll_s``).
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeGuard

from polythrottle.checks import is_int
from polythrottle.errors import BadInputError, brief
from polythrottle.finetune.predictor import LatencyPredictor

POLICIES = ("greedy", "adaptive")


def _finite(x: object) -> TypeGuard[float]:
    """Whether ``x`` is a finite real number (not a bool, not NaN or infinite)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _count(name: str, x: object) -> int:
    """A reported number of requests as an int; BadInputError (at the call, nothing stored) if not a number."""
    if not _finite(x):
        raise BadInputError(f"{name} must be a number of requests, got {brief(x, 40)}")
    return int(x)


def _time_s(name: str, x: object) -> float | None:
    """A reported time (s): None if absent or NaN/infinite (ignored); BadInputError if not a number (a text
    stored here broke every later decision with a TypeError in the training loop)."""
    if x is None or _finite(x):
        return x
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return None
    raise BadInputError(f"{name} must be a time in seconds on the scheduler's clock, got {brief(x, 40)}")


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

    def __post_init__(self) -> None:
        checks = {"margin": (self.margin, lambda v: 0 < v <= 1, "a number in (0, 1]"),
                  "z": (self.z, lambda v: v >= 0, "a number >= 0"),
                  "poll_s": (self.poll_s, lambda v: v > 0, "a number of seconds > 0"),
                  "finetune_ms": (self.finetune_ms, lambda v: v > 0, "None or a number of ms > 0")}
        for name, (v, ok, what) in checks.items():
            if name == "finetune_ms" and v is None:
                continue
            if not _finite(v) or not ok(v):
                raise BadInputError(f"scheduler settings: {name} must be {what}, got {brief(v, 40)}")
        if not is_int(self.rate_window) or self.rate_window < 1:
            raise BadInputError(f"scheduler settings: rate_window must be an integer >= 1, got {brief(self.rate_window, 40)}")


@dataclass(frozen=True)
class Decision:
    """Whether a fine-tuning iteration may start now, the inference batch cap while it runs, and why."""

    admit: bool
    cap: int
    reason: str
    predicted_ms: float | None = None


@dataclass(frozen=True)
class BatchPlan:
    """The next inference batch: serve when ``target`` requests are queued or the oldest has waited
    ``max_wait_ms``; ``finetune``: planned for co-running with fine-tuning."""

    target: int
    max_wait_ms: float
    finetune: bool


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
        if not callable(getattr(predictor, "predict", None)):
            raise BadInputError(f"predictor must be a fitted LatencyPredictor, got {brief(predictor, 40)}")
        if policy not in POLICIES:
            raise BadInputError(f"unknown scheduling policy {policy!r}; expected one of: {', '.join(POLICIES)}")
        if not _finite(slo_ms) or not slo_ms > 0:
            raise BadInputError(f"slo_ms must be a finite number > 0, got {brief(slo_ms, 40)}")
        if isinstance(batch_sizes, (str, bytes)) or not all(is_int(b) and b >= 1 for b in batch_sizes):
            raise BadInputError(f"batch_sizes must be integers >= 1, got {brief(batch_sizes, 60)}")
        sizes = sorted({int(b) for b in batch_sizes})
        if not sizes:
            raise BadInputError("batch_sizes is empty")
        if not is_int(finetune_batch) or finetune_batch < 1:
            raise BadInputError(f"finetune_batch must be an integer >= 1, got {brief(finetune_batch, 40)}")
        if settings is not None and not isinstance(settings, SchedulerSettings):
            raise BadInputError(f"settings must be SchedulerSettings, got {brief(settings, 40)}")
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
        self._inflight_ft = False
        self._correction = {False: 1.0, True: 1.0}
        """Online correction of the predictor, per fine-tuning state: an exponential average of
        observed/predicted batch latency, applied only when above 1 (predictions never lowered)."""
        for b in sizes:  # an unfitted predictor, or one that predicts NaN, is refused now, not at the first batch
            for ft in (False, True):
                p = self.predictor.predict(b, self.finetune_batch if ft else 0)
                if not _finite(p):
                    raise BadInputError(f"the latency predictor predicts {brief(p, 40)} ms for batch {b}"
                                        f"{' while fine-tuning' if ft else ''}; it needs finite predictions")

    # ----- predictions and arrival statistics -------------------------------------------------------
    def _predicted(self, batch: int, finetune: bool) -> float:
        key = (batch, self.finetune_batch if finetune else 0)
        if key not in self._pred_cache:
            self._pred_cache[key] = max(self.predictor.predict(*key), 0.0)
        return self._pred_cache[key]

    def _latency(self, batch: int, finetune: bool) -> float:
        return self._predicted(batch, finetune) * max(1.0, self._correction[finetune])

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

    # ----- the decision -------------------------------------------------------------------------------
    def _target(self, finetune: bool, rate: float, *, keep_up: bool) -> int | None:
        """Largest batch whose latency plus collection time fits the SLO budget (and that keeps up
        with ``rate`` when ``keep_up``); None if no batch size does."""
        budget_ms = self.settings.margin * self.slo_ms
        best = None
        for b in self.batch_sizes:
            latency_ms = self._latency(b, finetune)
            collect_ms = (b - 1) / rate if rate > 0 else (0.0 if b == 1 else math.inf)
            if latency_ms + collect_ms > budget_ms:
                continue
            if keep_up and rate * latency_ms / b > 0.9:
                continue
            best = b
        return best

    def batch_plan(self) -> BatchPlan:
        """How to batch the next inference requests (see the module docstring)."""
        with self._cond:
            rate, _ = self.arrival_rate()
            ft = self._ft_running and self.policy == "adaptive"
            target = self._target(ft, rate, keep_up=False)
            if ft:
                target = self._ft_cap if target is None else min(target, self._ft_cap)
            if target is None:
                target = self.batch_sizes[0]
            budget_ms = self.settings.margin * self.slo_ms
            return BatchPlan(target, max(0.0, budget_ms - self._latency(target, ft)), ft)

    def decide(self, now: float | None = None) -> Decision:
        """Whether a fine-tuning iteration may start now (does not change any state)."""
        now = self.clock() if now is None else now
        sizes = self.batch_sizes
        if self.policy == "greedy":
            return Decision(True, sizes[-1], "greedy")
        budget_ms = self.settings.margin * self.slo_ms
        rate, cv = self.arrival_rate()
        # 1. co-running with a (possibly shrunk) inference batch
        cap = self._target(True, rate, keep_up=True)
        if cap is not None:
            waited_ms = 0.0 if self._oldest_s is None else (now - self._oldest_s) * 1e3
            queued = min(self._queue_len, cap)
            worst_queued_ms = waited_ms + (self._latency(queued, True) if queued else 0.0)
            if worst_queued_ms <= budget_ms:
                return Decision(True, cap, "co-run", self._latency(cap, True))
            return Decision(False, cap, "queued requests would miss the SLO", worst_queued_ms)
        # 2. in a gap before the next arrival
        if self._queue_len == 0 and self._inflight == 0:
            ft_ms = self._ft_ms
            if rate <= 0:  # nothing to protect yet; also how an iteration's unknown duration gets measured
                return Decision(True, sizes[0], "gap (no arrivals seen)", ft_ms)
            if ft_ms is None:
                return Decision(False, 1, "fine-tuning duration unknown and co-running would miss the SLO")
            last_s = self._arrivals[-1] if self._arrivals else now
            gap_lo_ms = max(0.0, (1.0 - self.settings.z * cv) / rate)
            next_lo_s = last_s + gap_lo_ms / 1e3
            worst_ms = (now + ft_ms / 1e3 - max(next_lo_s, now)) * 1e3 + self._latency(sizes[0], True)
            if worst_ms <= budget_ms:
                return Decision(True, sizes[0], "gap", worst_ms)
            return Decision(False, sizes[0], "the next request would wait too long", worst_ms)
        return Decision(False, sizes[0], "co-running would miss the SLO and requests are pending")

    # ----- inference side -----------------------------------------------------------------------------
    def note_arrival(self, t_s: float | None = None) -> None:
        """Record one request arrival (``t_s``: its arrival time on ``clock``, default now)."""
        t = _time_s("arrival time t_s", t_s)
        if t is None and t_s is not None:
            return  # NaN or infinite: ignored
        with self._cond:
            self._arrivals.append(self.clock() if t is None else t)
            self._cond.notify_all()

    def set_queue(self, length: int, oldest_arrival_s: float | None) -> None:
        """The server's queue: requests waiting (not in flight) and the oldest one's arrival time."""
        n, oldest = _count("queue length", length), _time_s("oldest_arrival_s", oldest_arrival_s)
        with self._cond:
            self._queue_len = max(n, 0)
            self._oldest_s = oldest if n > 0 else None
            self._cond.notify_all()

    def inference_batch(self, queued: int) -> int:
        """How many of ``queued`` requests to serve in the next batch (the plan's target at most)."""
        queued = _count("queued", queued)
        plan = self.batch_plan()
        with self._cond:
            n = min(queued, plan.target)
            if plan.finetune and n < queued:
                self.stats.shrunk_batches += 1
            return max(n, 0)

    def inference_started(self, batch: int) -> None:
        n = _count("batch", batch)
        with self._cond:
            self._inflight = n
            self._inflight_since = self.clock()
            self._inflight_ft = self._ft_running

    def inference_finished(self, batch: int, latency_ms: float | None = None) -> None:
        """The batch in flight finished; ``latency_ms`` (its service time) corrects later predictions
        if the predictor turns out optimistic (same fine-tuning state from start to end only)."""
        n = _count("batch", batch)
        with self._cond:  # a NaN would stick in the average for ever: only finite positive times count
            if _finite(latency_ms) and latency_ms > 0 and n >= 1 and self._inflight_ft == self._ft_running:
                pred = self._predicted(n, self._ft_running)
                if pred > 0:
                    c = self._correction[self._ft_running]
                    self._correction[self._ft_running] = 0.9 * c + 0.1 * min(latency_ms / pred, 5.0)
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
                wait_s = self.settings.poll_s
                if deadline is not None:
                    left_s = deadline - self.clock()
                    if left_s <= 0:
                        return False
                    wait_s = min(wait_s, left_s)
                self._cond.wait(wait_s)

    def release(self, duration_ms: float | None = None) -> None:
        """The admitted iteration finished; ``duration_ms`` (default: measured here) updates the
        iteration-duration estimate (an exponential average)."""
        with self._cond:
            if not self._ft_running:
                return
            if duration_ms is None and self._ft_started is not None:
                duration_ms = (self.clock() - self._ft_started) * 1e3
            if _finite(duration_ms) and duration_ms >= 0:  # a NaN would stick in the average for ever
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


__all__ = ["POLICIES", "BatchPlan", "Decision", "FineTuneScheduler", "SchedulerSettings", "SchedulerStats"]
