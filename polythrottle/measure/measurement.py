"""What one measurement of one configuration yields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """Energy and latency of inference under one applied configuration.

    energy_j: energy per inference (joules; per generated token for ``llm:`` workloads, as
    ``extra["energy_per"]`` says). latency_ms: the latency the SLO is judged on (ms; the mean batch
    latency for replayed tables, a percentile for live workloads: of the batch latency, or of the
    ``extra["slo_metric"]`` the workload reports, e.g. time per output token). Live workloads that
    time more than batches put every metric's mean/p50/percentile in ``extra["latencies_ms"]``
    (e.g. ``ttft_p99``, ``tpot_p50``). throughput_ips: inferences (tokens) per second. Optional
    fields are None where the source does not provide them. ``energy_rel_std``/``latency_rel_std``
    are the relative spread over repeats (None: unknown), used by the optimizer as a noise estimate.
    """

    energy_j: float
    latency_ms: float
    throughput_ips: float | None = None
    power_w: float | None = None
    duration_s: float | None = None
    energy_rel_std: float | None = None
    latency_rel_std: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None and v != {}}
