"""``sim:PROFILE``: the digital twin of a board (``polythrottle.twin``) as a Device: a table measurer over
the twin's values, no control.

``PROFILE`` is a built-in profile name (``jetson-agx-orin``) or a path to a profile YAML. Append
``?gpu=range`` to tune the GPU devfreq range (``gpu_min_mhz``/``gpu_max_mhz``, governor in between)
instead of a locked clock (``gpu_mhz``), and ``?unit=N`` for unit N of the board: the twin with a seeded
manufacturing spread (``polythrottle.twin.units``; unit 0, the default, is the nominal board). Options
combine: ``sim:jetson-orin-nano?unit=3&gpu=range``. A workload is required (``--workload``, a daemon
config's ``workload:``, the API's ``workload=``). Knobs: GPU clock(s), ``emc_mhz``, ``cpu_mhz`` (the
profile's ``sim.cpu_mhz`` subset), ``batch_size``, ``precision``. The whole space is evaluated once when opened; measurements are the noise-free
values times ``1 + noise * N(0, 1)`` (independently for energy and latency, seeded), exactly as
for ``replay:`` tables. Touches no hardware.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs

import numpy as np

from polythrottle.boards.profiles import load_profile
from polythrottle.devices.base import Device
from polythrottle.devices.registry import DeviceOptions
from polythrottle.devices.table import ReplayTable, TableMeasurer
from polythrottle.errors import BadInputError, brief, every_face
from polythrottle.identity import DeviceIdentity
from polythrottle.measure.measurement import Measurement
from polythrottle.space import Config, Knob, SearchSpace, Value
from polythrottle.twin.model import Outcome, evaluate
from polythrottle.twin.params import BoardParams, Workload, board_from_profile
from polythrottle.twin.units import unit_board

GPU_MODES = ("locked", "range")


def build_space(board: BoardParams, wl: Workload, gpu_mode: str = "locked") -> SearchSpace:
    """Every config of the twin: GPU knob(s), emc_mhz, cpu_mhz, batch_size, precision."""
    batch = wl.batch_sizes or board.batch_sizes
    precs = wl.precisions or board.precisions
    rest = [
        Knob("emc_mhz", board.emc_steps),
        Knob("cpu_mhz", board.cpu_steps),
        Knob("batch_size", batch),
        Knob("precision", precs),
    ]
    if gpu_mode == "locked":
        return SearchSpace.product([Knob("gpu_mhz", board.gpu_steps), *rest])
    dense = SearchSpace.product([Knob("gpu_min_mhz", board.gpu_steps), Knob("gpu_max_mhz", board.gpu_steps), *rest])
    keep = dense.rows[:, 0] <= dense.rows[:, 1]
    return SearchSpace(dense.knobs, dense.rows[keep])


def evaluate_space(board: BoardParams, wl: Workload, space: SearchSpace) -> Outcome:
    """The twin's noise-free outcome for every point of ``space``."""
    cols = {k.name: np.asarray(k.values, dtype=object)[space.rows[:, j]] for j, k in enumerate(space.knobs)}
    gpu = {n: cols[n].astype(float) for n in ("gpu_mhz", "gpu_min_mhz", "gpu_max_mhz") if n in cols}
    return evaluate(
        board, wl,
        emc_mhz=cols["emc_mhz"].astype(float), cpu_mhz=cols["cpu_mhz"].astype(float),
        batch_size=cols["batch_size"].astype(float), precision=cols["precision"], **gpu,
    )


def default_config(space: SearchSpace) -> Config:
    """Highest clocks (range mode: the full GPU range, as the board ships), smallest batch, the first
    precision listed."""
    cfg: Config = {}
    for k in space.knobs:
        if k.name == "gpu_min_mhz":
            cfg[k.name] = k.values[0]
        elif k.name.endswith("_mhz"):
            cfg[k.name] = k.values[-1]
        else:
            cfg[k.name] = k.values[0]
    return cfg


class SimDevice(Device):
    """A board's twin for one workload; measurements are the model's values with optional noise."""

    def __init__(self, profile: str, workload: str, *, gpu_mode: str = "locked", noise: float = 0.0,
                 seed: int | None = None, unit: int = 0) -> None:
        if gpu_mode not in GPU_MODES:
            raise BadInputError(f"sim device: gpu mode must be one of {', '.join(GPU_MODES)}, got {gpu_mode!r}")
        self.profile = load_profile(profile)
        self.unit = unit
        self.board = unit_board(board_from_profile(self.profile), unit)
        if workload not in self.board.workloads:
            raise BadInputError(
                f"unknown workload {brief(workload, 60)} for sim:{self.profile.name}; expected one of: "
                + ", ".join(sorted(self.board.workloads))
            )
        self.workload = self.board.workloads[workload]
        self.gpu_mode = gpu_mode
        self.noise = noise
        space = build_space(self.board, self.workload, gpu_mode)
        out = evaluate_space(self.board, self.workload, space)
        self.outcome = out
        self.table = ReplayTable.from_arrays(
            f"sim:{self.profile.name}/{workload}", space,
            {"energy_j": out.energy_j, "latency_ms": out.latency_ms, "throughput_ips": out.throughput_ips,
             "power_w": out.power_w},
        )
        facts = {"profile": str(self.profile.path), "workload": self.workload.name, "gpu": gpu_mode,
                 "unit": str(unit)}
        measurer = TableMeasurer(self.table, noise=noise, seed=seed, default=default_config(space),
                                 workload_name=self.workload.name, facts=facts)
        # the board profile's name (however the profile was given) and the twin unit
        super().__init__(DeviceIdentity("sim", self.profile.name, str(unit)), name=f"sim:{self.profile.name}",
                         measurer=measurer)

    def truth(self, config: Mapping[str, Value]) -> Measurement:
        """The twin's own (noise-free) values for ``config``."""
        return self.table.truth(config)


MAX_UNIT = 1_000_000


def parse_spec(arg: str) -> tuple[str, str, int]:
    """``"jetson-tx2?gpu=range&unit=3"`` -> ``("jetson-tx2", "range", 3)``."""
    name, _, query = arg.partition("?")
    mode, unit = "locked", 0
    if query:
        params = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(params) - {"gpu", "unit"})
        if unknown:
            raise BadInputError(f"sim device: unknown option {brief(unknown[0], 40)}; expected gpu=locked|range, unit=N")
        if "gpu" in params:
            mode = params["gpu"][-1]
        if "unit" in params:
            text = params["unit"][-1]
            if not text.isdigit() or int(text) > MAX_UNIT:
                raise BadInputError(f"sim device: unit must be an integer from 0 to {MAX_UNIT}, got {brief(text, 40)}")
            unit = int(text)
    return name, mode, unit


def open_device(arg: str, options: DeviceOptions) -> SimDevice:
    if not arg:
        raise BadInputError("sim device needs a profile: sim:PROFILE (e.g. sim:jetson-agx-orin)")
    name, mode, unit = parse_spec(arg)
    if not options.workload:
        prof = board_from_profile(load_profile(name))
        raise BadInputError(  # any face opens it (CLI, daemon config, API): each one's way of setting it is named
            f"sim:{name} needs a workload ({every_face('workload')}); "
            f"one of: {', '.join(sorted(prof.workloads))}"
        )
    return SimDevice(name, options.workload, gpu_mode=mode, noise=options.noise, seed=options.seed, unit=unit)
