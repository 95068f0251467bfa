"""Fine-tuning scheduler: the NNLS latency predictor and the admission policy (fake clock, no GPU)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from polythrottle.errors import BadInputError
from polythrottle.finetune import (
    FineTuneScheduler,
    LatencyPredictor,
    LatencySample,
    SchedulerSettings,
    WorkloadFeatures,
    measure_features,
)

INF = WorkloadFeatures(flops_per_sample=4e9, bytes_per_sample=2e7, fixed_bytes=1e8)
FT = WorkloadFeatures(flops_per_sample=12e9, bytes_per_sample=6e7, fixed_bytes=4e8)


def test_workload_features_scale_with_batch() -> None:
    assert INF.gflops(8) == pytest.approx(32.0)
    assert INF.bytes(8) == pytest.approx(1e8 + 8 * 2e7)
    assert INF.intensity(1) < INF.intensity(32)  # weights are amortised over the batch
    assert INF.intensity(0) == 0.0
    with pytest.raises(BadInputError):
        WorkloadFeatures(-1.0, 1.0)


def test_measure_features_counts_flops_of_a_linear_layer() -> None:
    import torch

    lin = torch.nn.Linear(64, 32)
    inf = measure_features(lin, lambda b: torch.randn(b, 64))
    assert inf.flops_per_sample == pytest.approx(2 * 64 * 32)
    assert inf.fixed_bytes == pytest.approx((64 * 32 + 32) * 4)
    train = measure_features(lin, lambda b: torch.randn(b, 64), train=True)
    assert train.flops_per_sample == pytest.approx(3 * inf.flops_per_sample, rel=0.34)  # fwd + ~2x bwd
    assert train.fixed_bytes > inf.fixed_bytes


def _samples(truth) -> list[LatencySample]:
    return [LatencySample(b, fb, truth(b, fb)) for b in (1, 2, 4, 8, 16, 32) for fb in (0, 32)]


def test_nnls_recovers_a_paper_shaped_model_and_stays_non_negative() -> None:
    p = LatencyPredictor(INF, FT, "paper")
    true = p.design(1, 0) * 0  # build a truth from the same features
    true[:] = [2.0, 0.3, 0.0, 0.05, 0.0, 0.1]

    def truth(b: int, fb: int) -> float:
        return float(p.design(b, fb) @ true)

    p.fit(_samples(truth))
    assert all(v >= 0 for v in p.coefficients().values())
    for s in _samples(truth):
        assert p.predict(s.inference_batch, s.finetune_batch) == pytest.approx(s.latency_ms, rel=1e-3)


def test_fit_best_prefers_interaction_when_slowdown_is_multiplicative() -> None:
    def truth(b: int, fb: int) -> float:  # fine-tuning doubles the per-sample cost of inference
        return (2.0 + 0.4 * b) * (2.0 if fb else 1.0)

    pred, errors = LatencyPredictor.fit_best(_samples(truth), INF, FT)
    assert pred.features == "interaction" and errors["interaction"] < errors["paper"]
    assert pred.predict(16, 32) == pytest.approx(truth(16, 32), rel=0.05)

    def additive(b: int, fb: int) -> float:  # a constant delay: the paper's features suffice
        return 2.0 + 0.4 * b + (5.0 if fb else 0.0)

    pred, _ = LatencyPredictor.fit_best(_samples(additive), INF, FT)
    assert pred.features == "paper"


def test_predictor_bad_input() -> None:
    with pytest.raises(BadInputError, match="feature set"):
        LatencyPredictor(INF, FT, "cubic")
    with pytest.raises(BadInputError, match="not been fitted"):
        LatencyPredictor(INF, FT).predict(1)
    with pytest.raises(BadInputError):
        LatencyPredictor(INF, FT).fit([LatencySample(1, 0, 1.0)])


class Table:
    """A predictor stub: inference latency (ms) = alone[b], or corun[b] while fine-tuning runs."""

    def __init__(self, alone: dict[int, float], corun: dict[int, float]) -> None:
        self.alone, self.corun = alone, corun

    def predict(self, b: int, fb: int = 0) -> float:
        table = self.corun if fb else self.alone
        return float(np.interp(b, list(table), list(table.values())))


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


SIZES = [1, 2, 4, 8]
ALONE = {1: 1.0, 2: 1.2, 4: 1.5, 8: 2.0}


def sched(corun: dict[int, float], policy: str = "adaptive", slo_ms: float = 20.0, ft_ms: float | None = 10.0):
    clock = Clock()
    s = FineTuneScheduler(Table(ALONE, corun), slo_ms, batch_sizes=SIZES, finetune_batch=32, policy=policy,
                          settings=SchedulerSettings(finetune_ms=ft_ms), clock=clock)
    return s, clock


def feed(s: FineTuneScheduler, clock: Clock, gaps_ms: list[float]) -> None:
    for g in gaps_ms:
        clock.t += g / 1e3
        s.note_arrival()


def test_batch_plan_is_slo_aware() -> None:
    s, clock = sched({1: 2.0, 2: 2.5, 4: 3.0, 8: 12.0})
    plan = s.batch_plan()
    assert plan.target == 1 and not plan.finetune  # no arrivals seen: no batch can be collected
    feed(s, clock, [1.0] * 30)  # 1000 requests/s: 8 requests take 7 ms to collect, + 2 ms <= 17 ms
    plan = s.batch_plan()
    assert plan.target == 8 and plan.max_wait_ms == pytest.approx(0.85 * 20 - 2.0)
    assert s.inference_batch(20) == 8 and s.inference_batch(3) == 3


def test_greedy_admits_everything_and_plans_as_if_alone() -> None:
    s, clock = sched({1: 50.0, 2: 60.0, 4: 80.0, 8: 100.0}, policy="greedy")
    feed(s, clock, [1.0] * 20)
    s.set_queue(8, clock.t - 0.5)
    d = s.decide()
    assert d.admit and d.reason == "greedy"
    assert s.acquire(timeout_s=0.0)
    assert s.batch_plan().target == 8 and not s.batch_plan().finetune


def test_adaptive_corun_shrinks_the_batch_while_finetuning() -> None:
    # co-running: batch 8 would take 12 ms (+7 ms to collect) > 17 ms; batch 4 fits and keeps up
    s, clock = sched({1: 2.0, 2: 2.5, 4: 3.0, 8: 12.0})
    feed(s, clock, [1.0] * 30)
    d = s.decide()
    assert d.admit and d.reason == "co-run" and d.cap == 4
    assert s.acquire(timeout_s=0.0)
    plan = s.batch_plan()
    assert s.finetune_running and plan.finetune and plan.target == 4
    assert plan.max_wait_ms == pytest.approx(0.85 * 20 - 3.0)
    assert s.inference_batch(6) == 4 and s.stats.shrunk_batches == 1
    s.release(duration_ms=12.0)
    assert not s.finetune_running and s.inference_batch(9) == 8
    # requests already queued for long would miss the SLO: defer
    s.set_queue(3, clock.t - 0.015)
    d = s.decide()
    assert not d.admit and "queued" in d.reason
    assert s.acquire(timeout_s=0.0) is False and s.stats.deferrals >= 1


def test_online_correction_only_raises_predictions() -> None:
    s, clock = sched({1: 2.0, 2: 2.5, 4: 3.0, 8: 12.0}, slo_ms=15.0)
    feed(s, clock, [1.0] * 30)
    assert s.batch_plan().target == 8
    for _ in range(30):  # batches of 8 alone take 6x the prediction
        s.inference_started(8)
        s.inference_finished(8, 12.0)
    assert s._latency(8, False) > 9.0
    assert s.batch_plan().target == 4  # 8 no longer fits: 7 ms to collect + ~9.7 ms
    for _ in range(200):  # faster than predicted: predictions are not lowered below the model
        s.inference_started(8)
        s.inference_finished(8, 0.5)
    assert s._latency(8, False) == pytest.approx(2.0)


def test_adaptive_gap_admission_depends_on_burstiness() -> None:
    slow = {1: 30.0, 2: 35.0, 4: 45.0, 8: 60.0}  # co-running always misses the SLO
    s, clock = sched(slow, ft_ms=10.0, slo_ms=20.0)
    feed(s, clock, [50.0] * 30)  # uniform: next arrival 50 ms after the last
    clock.t += 0.002
    d = s.decide()
    assert d.admit and d.reason == "gap"  # ends 40 ms before the next request
    clock.t += 0.045  # 3 ms before the next arrival: the request would wait ~7 ms + 30 ms co-run
    assert not s.decide().admit
    # Poisson-like gaps (same mean): an arrival may come at any time, co-running misses: defer
    s2, clock2 = sched(slow, ft_ms=10.0, slo_ms=20.0)
    rng = np.random.default_rng(0)
    feed(s2, clock2, list(rng.exponential(50.0, 40)))
    assert not s2.decide().admit
    # pending work blocks the gap rule too
    s.set_queue(1, clock.t)
    assert not s.decide().admit


def test_unknown_duration_defers_and_bad_arguments() -> None:
    s, clock = sched({1: 30.0, 2: 35.0, 4: 45.0, 8: 60.0}, ft_ms=None)
    feed(s, clock, [50.0] * 20)
    assert not s.decide().admit
    with pytest.raises(BadInputError):
        sched({}, policy="fifo")
    with pytest.raises(BadInputError):
        FineTuneScheduler(Table(ALONE, ALONE), 0.0, batch_sizes=SIZES, finetune_batch=1)
    with pytest.raises(BadInputError):
        FineTuneScheduler(Table(ALONE, ALONE), 10.0, batch_sizes=[], finetune_batch=1)


def test_training_loop_blocks_until_admitted() -> None:
    s, clock = sched({1: 2.0, 2: 2.5, 4: 3.0, 8: 12.0}, ft_ms=5.0)
    feed(s, clock, [1.0] * 30)
    s.set_queue(3, clock.t - 0.015)  # deferred until the queue drains
    done = threading.Event()

    def loop() -> None:
        with s.finetune_slot(timeout_s=5.0) as ok:
            assert ok
        done.set()

    th = threading.Thread(target=loop)
    th.start()
    assert not done.wait(0.05)
    s.set_queue(0, None)  # the server drained its queue: the waiting iteration is admitted
    assert done.wait(2.0)
    th.join()
    assert s.stats.admitted == 1 and not s.finetune_running


def test_a_nan_measurement_does_not_disable_the_online_correction() -> None:
    s, clock = sched({1: 2.0, 2: 2.5, 4: 3.0, 8: 12.0}, slo_ms=15.0)
    s.inference_started(8)
    s.inference_finished(8, float("nan"))  # a failed timing: ignored (it stuck as NaN: max(1, NaN) == 1 for ever)
    for _ in range(30):
        s.inference_started(8)
        s.inference_finished(8, 12.0)
    assert s._latency(8, False) > 9.0


def test_a_nan_duration_does_not_block_gap_admission_for_ever() -> None:
    slow = {1: 30.0, 2: 35.0, 4: 45.0, 8: 60.0}
    s, clock = sched(slow, ft_ms=10.0, slo_ms=20.0)
    assert s.acquire(timeout_s=0.0)  # no arrivals yet
    s.release(duration_ms=float("nan"))
    feed(s, clock, [50.0] * 30)
    clock.t += 0.002
    assert s.decide().admit and s.decide().reason == "gap"


def test_an_idle_server_admits_fine_tuning_of_unknown_duration() -> None:
    """Co-running misses the SLO and no iteration was ever measured: with no request seen it waited for ever
    (and so its duration could never be learned)."""
    s, clock = sched({1: 30.0, 2: 35.0, 4: 45.0, 8: 60.0}, ft_ms=None)
    assert s.acquire(timeout_s=0.0)
    clock.t += 0.040
    s.release()
    assert s._ft_ms == pytest.approx(40.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"slo_ms": "30"}, "slo_ms must be a finite number"),
    ({"slo_ms": float("inf")}, "slo_ms must be a finite number"),
    ({"batch_sizes": [1.5, 2]}, "batch_sizes must be integers"),
    ({"batch_sizes": "12"}, "batch_sizes must be integers"),
    ({"finetune_batch": "4"}, "finetune_batch must be an integer"),
])
def test_scheduler_bad_arguments_are_typed(kwargs: dict, message: str) -> None:
    args = {"slo_ms": 30.0, "batch_sizes": SIZES, "finetune_batch": 4, **kwargs}
    with pytest.raises(BadInputError, match=message):
        FineTuneScheduler(Table(ALONE, ALONE), args.pop("slo_ms"), **args)


@pytest.mark.parametrize("kwargs", [{"poll_s": -1.0}, {"margin": 0.0}, {"rate_window": 0}, {"finetune_ms": float("nan")},
                                    {"z": "1"}])
def test_scheduler_settings_are_checked(kwargs: dict) -> None:
    with pytest.raises(BadInputError, match=f"scheduler settings: {next(iter(kwargs))} must be"):
        SchedulerSettings(**kwargs)


def test_scheduler_refuses_a_predictor_it_cannot_use() -> None:
    with pytest.raises(BadInputError, match="not been fitted"):  # at construction, not at the first batch
        FineTuneScheduler(LatencyPredictor(INF, FT), 30.0, batch_sizes=SIZES, finetune_batch=4)
    nan = Table(ALONE, {1: float("nan"), 8: float("nan")})  # NaN fits every budget (NaN > x is False)
    with pytest.raises(BadInputError, match="predicts nan ms for batch 1 while fine-tuning"):
        FineTuneScheduler(nan, 30.0, batch_sizes=SIZES, finetune_batch=4)


@pytest.mark.parametrize("make, message", [
    (lambda: WorkloadFeatures(float("nan"), 1.0), "flops_per_sample must be a finite number"),
    (lambda: WorkloadFeatures("1", 1.0), "flops_per_sample must be a finite number"),
    (lambda: LatencySample(1, float("nan"), 1.0), "finetune_batch must be an integer"),
    (lambda: LatencySample(1, 0, "1"), "latency_ms must be a finite number"),
    (lambda: LatencyPredictor.fit_best(_samples(lambda b, fb: 1.0 + b)[:2], INF, FT), "at least 3 latency samples"),
    (lambda: LatencyPredictor(INF, FT).fit(_samples(lambda b, fb: 1.0 + b)).predict(float("nan")), "inference_batch"),
])
def test_predictor_inputs_are_typed_errors(make, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        make()


@pytest.mark.parametrize("report", [
    lambda s: s.note_arrival("soon"),
    lambda s: s.set_queue(2, "earlier"),
    lambda s: s.set_queue("two", 100.0),
    lambda s: s.inference_batch("3"),
    lambda s: s.inference_started(None),
    lambda s: s.inference_finished("8", 5.0),
])
def test_a_report_of_the_wrong_type_is_refused_at_the_call_and_changes_nothing(report) -> None:
    """A server's bad report used to be stored and break every later call of the training loop (TypeError
    in decide/acquire, far from the cause); it is a BadInputError where it is made."""
    s, clock = sched({1: 2.0, 2: 2.5, 4: 3.0, 8: 12.0})
    feed(s, clock, [10.0] * 5)
    before = (s.decide(), s.batch_plan())
    with pytest.raises(BadInputError):
        report(s)
    assert (s.decide(), s.batch_plan()) == before
    assert s.acquire(timeout_s=0.0) is before[0].admit


def test_a_nan_arrival_time_is_ignored() -> None:
    s, clock = sched({1: 2.0, 2: 2.5, 4: 3.0, 8: 12.0})
    feed(s, clock, [10.0] * 5)
    before = (s.decide(), s.batch_plan())
    s.note_arrival(float("nan"))
    s.set_queue(1, float("nan"))  # the oldest's time unknown: as if it arrived now
    assert s.batch_plan() == before[1] and s.decide().admit


@pytest.mark.parametrize("predictor", ["paper", None, 3.0])
def test_a_scheduler_given_no_predictor_is_a_typed_error(predictor) -> None:
    with pytest.raises(BadInputError, match="predictor must be a fitted LatencyPredictor"):
        FineTuneScheduler(predictor, 30.0, batch_sizes=SIZES, finetune_batch=4)


@pytest.mark.parametrize("model, make_batch, message", [
    (3, lambda b: None, "model must be a PyTorch module"),
    ("resnet50", lambda b: None, "model must be a PyTorch module"),
    ("linear", "torch.randn(1, 4)", "make_batch must be a function"),
])
def test_measure_features_of_no_model_is_a_typed_error(model, make_batch, message: str) -> None:
    import torch

    with pytest.raises(BadInputError, match=message):
        measure_features(torch.nn.Linear(4, 2) if model == "linear" else model, make_batch)
