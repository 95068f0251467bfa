"""Open a device from a string such as ``replay:table.csv``, ``sim:jetson-agx-orin``, ``jetson``, ``nvml:0``.

Each scheme lives in its own module under ``polythrottle.devices`` and exposes
``open_device(arg: str, options: DeviceOptions) -> Device``; modules are imported only when used.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

from polythrottle.devices.base import Device
from polythrottle.errors import BadInputError, UnsupportedError, brief
from polythrottle.workloads.base import SLO_METRICS

SCHEMES: dict[str, str] = {
    "replay": "polythrottle.devices.replay",
    "sim": "polythrottle.devices.sim",
    "jetson": "polythrottle.devices.jetson",
    "nvml": "polythrottle.devices.nvml",
}
SIMULATED_SCHEMES = ("replay", "sim")
"""Schemes whose devices compute or replay measurements: no hardware is written, history is off by default."""


OPTIONAL_LIBRARIES: dict[str, tuple[str, str]] = {"pynvml": ("nvidia-ml-py", "nvml")}
"""Import name -> (distribution, polythrottle extra) of the libraries only some device kinds need."""


@dataclass(frozen=True)
class DeviceOptions:
    """Options common to every device.

    noise: relative measurement noise added by simulated/replayed devices (0.02 = 2%).
    no_clock_control: never write any hardware setting (software knobs only).
    state_dir: where original hardware values are saved before the first write.
    percentile: latency percentile the SLO is judged on, for live workloads.
    window_s / repeats: live workloads: seconds per metered window and windows per measurement
    (None: the harness defaults, 2 s x 3).
    slo_metric: live workloads: the latency the SLO bounds: "batch", "ttft" or "tpot" (the last two
    for ``llm:`` workloads); None: the workload's default (tpot for llm:, batch otherwise).
    """

    workload: str | None = None
    noise: float = 0.0
    seed: int | None = None
    no_clock_control: bool = False
    state_dir: Path | None = None
    percentile: float = 99.0
    window_s: float | None = None
    repeats: int | None = None
    slo_metric: str | None = None


LIVE_ONLY_METRICS = tuple(m for m in SLO_METRICS if m != "batch")
"""What only a live workload times (a simulated or replayed device measures batches)."""


MAX_NOISE = 10.0
"""Relative noise above 1000% is no measurement model any more (and 1e308 overflows to inf)."""


def _real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_options(o: DeviceOptions) -> None:
    """BadInputError (one line) for an option of the wrong type or out of range."""
    from polythrottle.checks import check_seed

    if not _real(o.noise) or not 0 <= o.noise <= MAX_NOISE:  # type: ignore[operator]
        raise BadInputError(f"noise must be a number from 0 to {MAX_NOISE:g}, got {brief(o.noise, 40)}")
    check_seed(o.seed)
    if o.workload is not None and (not isinstance(o.workload, str) or not o.workload.strip()):
        raise BadInputError(f"workload must be a non-empty string, got {brief(o.workload, 40)}")
    if not _real(o.percentile) or not 0 < o.percentile <= 100:  # type: ignore[operator]
        raise BadInputError(f"percentile must be in (0, 100], got {brief(o.percentile, 40)}")
    if o.window_s is not None and (not _real(o.window_s) or not o.window_s > 0):  # type: ignore[operator]
        raise BadInputError(f"window_s must be a positive number, got {brief(o.window_s, 40)}")
    if o.repeats is not None and (isinstance(o.repeats, bool) or not isinstance(o.repeats, int) or o.repeats < 1):
        raise BadInputError(f"repeats must be an integer >= 1, got {brief(o.repeats, 40)}")


def split_spec(spec: str) -> tuple[str, str]:
    """``"replay:a.csv"`` -> ``("replay", "a.csv")``; ``"jetson"`` -> ``("jetson", "")``."""
    scheme, _, arg = spec.partition(":")
    return scheme.strip().lower(), arg.strip()


def is_simulated(spec: str) -> bool:
    """Whether ``spec`` names a simulated or replayed device (``sim:...``, ``replay:...``; any case)."""
    return split_spec(spec)[0] in SIMULATED_SCHEMES


def checked_spec(spec: object) -> tuple[str, str]:
    """``split_spec`` of a device spec whose scheme is known; BadInputError if it is not a string or its
    scheme is unknown (nothing is opened)."""
    if not isinstance(spec, str):
        raise BadInputError(f"a device is named by a string such as sim:jetson-agx-orin, got {brief(spec, 40)}")
    scheme, arg = split_spec(spec or "")
    if scheme not in SCHEMES:
        raise BadInputError(
            f"unknown device {brief(spec, 60)}; expected one of: " + ", ".join(f"{s}:..." for s in SCHEMES)
        )
    return scheme, arg


def open_device(spec: str, options: DeviceOptions | None = None) -> Device:
    """Open the device named by ``spec``. Raises BadInputError for an unknown scheme or bad argument."""
    options = options or DeviceOptions()
    check_options(options)
    scheme, arg = checked_spec(spec)
    metric = getattr(options, "slo_metric", None)
    if metric is not None and metric not in SLO_METRICS:
        raise BadInputError(f"slo_metric {metric!r}: expected one of {', '.join(SLO_METRICS)}")
    if metric in LIVE_ONLY_METRICS and scheme in SIMULATED_SCHEMES:
        raise BadInputError(f"slo_metric {metric} applies to live workloads (nvml, jetson), not to {scheme} devices")
    try:
        module = importlib.import_module(SCHEMES[scheme])
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("polythrottle"):
            raise BadInputError(f"device kind {scheme!r} is not available in this build") from None
        extra = OPTIONAL_LIBRARIES.get(e.name or "")
        if extra is None:
            raise
        raise UnsupportedError(
            f"{scheme} devices need {extra[0]}, which is not installed: pip install 'polythrottle[{extra[1]}]'"
        ) from None
    return module.open_device(arg, options)
