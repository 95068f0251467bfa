"""The measurement harness: energy per inference and latency of a workload, over metered windows.

One measurement = warm-up, then ``repeats`` windows of at least ``window_s`` seconds each. In a
window, batches run back to back, each timed from launch to completion (the workload synchronises;
CUDA workloads synchronise the device, CPU ones need not). The meter is read only at window
boundaries (never polled per batch). Results:

- energy_j: mean over windows of window energy / inferences in the window (J per inference; J per
  item for runners that count items, e.g. generated tokens, see ``Runnable``);
- latency_ms: the ``percentile`` of every batch latency of every window (ms per batch), or of the
  runner's own samples of its ``slo_metric`` (e.g. time per output token);
- energy_rel_std / latency_rel_std: relative standard error of those two estimates over windows
  (std over windows / mean / sqrt(windows)): the noise of the reported value, which the optimizer
  uses as observation noise. ``extra`` holds the raw per-window spread and the per-window values.

The harness knows nothing of NVML, sysfs, torch or ONNX Runtime: it takes a meter and a workload.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from polythrottle import interrupts
from polythrottle.energy.base import CounterResetError, EnergyMeter, EnergyWindow
from polythrottle.errors import BadInputError, DeviceError
from polythrottle.measure.measurement import Measurement


class Runnable(Protocol):
    """What the harness measures. ``run_batch`` may be asynchronous; ``synchronize`` waits for it.

    Optional attributes (read with ``getattr``; absent = the default):
    - ``items_per_batch`` (int, default ``batch_size``): what energy and throughput are counted per,
      e.g. the tokens one ``run_batch`` generates; ``item_name`` (default "inference") names it.
    - ``batch_latencies_s`` (mapping of metric name -> latencies in seconds): the runner's own
      timings of the batch it just ran (e.g. ``{"ttft": [...], "tpot": [...]}``), read after each
      batch; every metric gets percentiles in ``extra["latencies_ms"]``.
    - ``slo_metric`` (default "batch"): the latency reported as ``latency_ms``: "batch" is the
      harness's own per-batch timing, any other name one of ``batch_latencies_s``.
    """

    batch_size: int

    def run_batch(self) -> None: ...

    def synchronize(self) -> None: ...


@dataclass(frozen=True)
class HarnessSettings:
    """window_s: seconds per metered window (>= ~2 s for the NVML counter, which updates every ~100 ms).
    warmup_s / warmup_batches: warm-up before the first window (both must be reached).
    repeats: metered windows per measurement. min_batches: batches per window at least.
    percentile: latency percentile reported (0 < p <= 100). max_window_retries: windows retried after
    a counter reset."""

    window_s: float = 2.0
    warmup_s: float = 0.5
    warmup_batches: int = 3
    repeats: int = 3
    min_batches: int = 5
    percentile: float = 99.0
    max_window_retries: int = 2

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise BadInputError(f"measurement window must be > 0 s, got {self.window_s}")
        if self.repeats < 1:
            raise BadInputError(f"repeats must be >= 1, got {self.repeats}")
        if not 0 < self.percentile <= 100:
            raise BadInputError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.warmup_s < 0 or self.warmup_batches < 0 or self.min_batches < 1:
            raise BadInputError("warm-up must be >= 0 and min_batches >= 1")


@dataclass(frozen=True)
class Window:
    """One metered window: its energy reading, batches run and their latencies (seconds)."""

    energy: EnergyWindow
    batches: int
    inferences: int
    busy_s: float
    latencies_s: np.ndarray
    samples_s: dict[str, np.ndarray] | None = None  # the runner's own latency samples, by metric
    batch_size: int | None = None  # None: inferences // batches

    @property
    def energy_per_inference_j(self) -> float:
        return self.energy.energy_j / self.inferences


Clock = Callable[[], float]


def _run_until(workload: Runnable, seconds: float, min_batches: int, clock: Clock,
               samples: dict[str, list[float]] | None = None) -> list[float]:
    lat: list[float] = []
    start = clock()
    while len(lat) < min_batches or clock() - start < seconds:
        interrupts.check()  # a signal whose exception the workload's code lost ends the window here
        t0 = clock()
        workload.run_batch()
        workload.synchronize()
        lat.append(clock() - t0)
        if samples is not None:
            for name, values in (getattr(workload, "batch_latencies_s", None) or {}).items():
                samples.setdefault(name, []).extend(float(v) for v in values)
    return lat


def warm_up(workload: Runnable, settings: HarnessSettings, clock: Clock = time.perf_counter) -> None:
    """Run batches until both warm-up limits are reached (first-call allocation, autotuning, boost)."""
    if settings.warmup_batches or settings.warmup_s:
        _run_until(workload, settings.warmup_s, max(settings.warmup_batches, 1), clock)


def measure_window(
    workload: Runnable, meter: EnergyMeter, settings: HarnessSettings, clock: Clock = time.perf_counter
) -> Window:
    """One metered window. Raises CounterResetError if the meter's counter was reset during it."""
    workload.synchronize()
    samples: dict[str, list[float]] = {}
    meter.begin()
    t0 = clock()
    lat = _run_until(workload, settings.window_s, settings.min_batches, clock, samples)
    busy = clock() - t0
    ew = meter.end()
    if not (ew.energy_j > 0 and math.isfinite(ew.energy_j)):
        raise DeviceError(f"meter {meter.name} read {ew.energy_j} J over {ew.duration_s:.3f} s")
    items = int(getattr(workload, "items_per_batch", None) or workload.batch_size)
    return Window(ew, len(lat), len(lat) * items, busy, np.asarray(lat),
                  {k: np.asarray(v) for k, v in samples.items()} or None, workload.batch_size)


def _rel_std(x: np.ndarray) -> float:
    if len(x) < 2 or np.mean(x) == 0:
        return 0.0
    return float(np.std(x, ddof=1) / abs(np.mean(x)))


def measure(
    workload: Runnable,
    meter: EnergyMeter,
    settings: HarnessSettings | None = None,
    clock: Clock = time.perf_counter,
) -> Measurement:
    """Warm up, then measure ``settings.repeats`` windows; see the module docstring for the result."""
    settings = settings or HarnessSettings()
    t_start = clock()
    warm_up(workload, settings, clock)
    windows: list[Window] = []
    retries = 0
    while len(windows) < settings.repeats:
        try:
            windows.append(measure_window(workload, meter, settings, clock))
        except CounterResetError:
            retries += 1
            if retries > settings.max_window_retries:
                raise
    return summarize(windows, settings, duration_s=clock() - t_start, counter_resets=retries,
                     slo_metric=str(getattr(workload, "slo_metric", None) or "batch"),
                     item_name=str(getattr(workload, "item_name", None) or "inference"))


def _metric_latencies_s(w: Window, metric: str) -> np.ndarray:
    if metric == "batch":
        return w.latencies_s
    if not w.samples_s or metric not in w.samples_s or len(w.samples_s[metric]) == 0:
        have = ", ".join(["batch", *sorted(w.samples_s or {})])
        raise DeviceError(f"the workload reported no {metric!r} latencies (it reports: {have})")
    return w.samples_s[metric]


def summarize(windows: list[Window], settings: HarnessSettings, duration_s: float,
              counter_resets: int = 0, slo_metric: str = "batch", item_name: str = "inference") -> Measurement:
    """Combine windows into one Measurement (energy mean, pooled latency percentile, standard errors).
    ``slo_metric``: the latency reported as ``latency_ms`` ("batch" or a metric of the windows' samples)."""
    e = np.array([w.energy_per_inference_j for w in windows])
    p = settings.percentile
    per_window = [_metric_latencies_s(w, slo_metric) * 1e3 for w in windows]
    lat_all = np.concatenate(per_window)
    lat_w = np.array([np.percentile(x, p) for x in per_window])
    n = len(windows)
    inferences = sum(w.inferences for w in windows)
    busy = sum(w.busy_s for w in windows)
    metered_j = sum(w.energy.energy_j for w in windows)
    metered_s = sum(w.energy.duration_s for w in windows)
    extra: dict[str, object] = {
        "windows": n,
        "batches": int(sum(w.batches for w in windows)),
        "batch_size": windows[0].batch_size or windows[0].inferences // windows[0].batches,
        "percentile": p,
        "latency_mean_ms": float(lat_all.mean()),
        "latency_p50_ms": float(np.percentile(lat_all, 50)),
        "energy_window_rel_std": _rel_std(e),
        "latency_window_rel_std": _rel_std(lat_w),
        "energy_per_window_j": [float(x) for x in e],
        "latency_per_window_ms": [float(x) for x in lat_w],
    }
    if any(w.samples_s for w in windows) or slo_metric != "batch":
        extra.update(slo_metric=slo_metric, energy_per=item_name,
                     items_per_batch=windows[0].inferences // windows[0].batches,
                     latencies_ms=_latency_table(windows, p))
    if counter_resets:
        extra["counter_resets"] = counter_resets
    details: dict[str, list[float]] = {}
    for w in windows:
        for k, v in w.energy.details.items():
            details.setdefault(k, []).append(float(v))
    for k, vs in details.items():
        extra[k] = float(np.mean(vs))
    return Measurement(
        energy_j=float(e.mean()),
        latency_ms=float(np.percentile(lat_all, p)),
        throughput_ips=inferences / busy if busy > 0 else None,
        power_w=metered_j / metered_s if metered_s > 0 else None,
        duration_s=duration_s,
        energy_rel_std=_rel_std(e) / math.sqrt(n) if n > 1 else None,
        latency_rel_std=_rel_std(lat_w) / math.sqrt(n) if n > 1 else None,
        extra=extra,
    )


def _latency_table(windows: list[Window], percentile: float) -> dict[str, float]:
    """Mean, p50 and ``percentile`` (ms) of every latency metric of the windows, batch included:
    ``{"batch_mean": .., "batch_p50": .., "batch_p99": .., "ttft_mean": .., ...}``."""
    metrics: dict[str, list[np.ndarray]] = {"batch": [w.latencies_s for w in windows]}
    for w in windows:
        for k, v in (w.samples_s or {}).items():
            metrics.setdefault(k, []).append(v)
    out: dict[str, float] = {}
    for k, parts in metrics.items():
        x = np.concatenate(parts) * 1e3
        if len(x) == 0:
            continue
        out[f"{k}_mean"] = float(x.mean())
        out[f"{k}_p50"] = float(np.percentile(x, 50))
        out[f"{k}_p{percentile:g}"] = float(np.percentile(x, percentile))
    return out
