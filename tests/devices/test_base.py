"""A device as a composition: hardware knobs x software knobs, validation before any write, defaults, close."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from polythrottle.clocks.base import Write
from polythrottle.devices.base import Control, Device, joined
from polythrottle.devices.originals import OriginalsLocation
from polythrottle.devices.table import ReplayTable, TableMeasurer
from polythrottle.errors import BadInputError, InvalidValueError, PolyThrottleError, UnsupportedError
from polythrottle.identity import DeviceIdentity
from polythrottle.space import Config, Knob, KnobStatus, SearchSpace, Value

GPU = Knob("gpu_mhz", (100, 200, 300))
MEM = Knob("mem_mhz", (1000, 2000))


class FakeControl(Control):
    """Two clocks; ``gpu_mhz=300`` only with ``mem_mhz=2000``; records what it is asked and in which order."""

    def __init__(self, *, whole: bool = True, offered: tuple[Knob, ...] = (GPU, MEM), log: list | None = None):
        self.whole_configs = whole
        self.offered = list(offered)
        self.set: dict[str, Value] = {}
        self.log = log if log is not None else []

    def knobs(self) -> list[Knob]:
        return list(self.offered)

    def statuses(self) -> list[KnobStatus]:
        return [KnobStatus(k.name, True) for k in self.offered]

    def restrict(self, space: SearchSpace) -> SearchSpace:
        if {"gpu_mhz", "mem_mhz"} - set(space.names):
            return space
        g, m = space.names.index("gpu_mhz"), space.names.index("mem_mhz")
        ok = ~((space.rows[:, g] == 2) & (space.rows[:, m] == 0))
        return SearchSpace(space.knobs, space.rows[ok])

    def default_config(self) -> Config:
        return {k.name: k.values[-1] for k in self.offered}

    def no_knob_error(self) -> PolyThrottleError:
        return UnsupportedError("no knob here")

    def apply(self, settings: Mapping[str, Value]) -> None:
        for k in settings:
            if k not in ("gpu_mhz", "mem_mhz"):
                raise BadInputError(f"unknown knob {k}")
        self.log.append(("hardware", dict(settings)))
        self.set.update(settings)

    @property
    def hardware_knobs(self) -> list[str]:
        return [k.name for k in self.offered]

    @property
    def last_writes(self) -> list[Write]:
        return [Write(k, str(v)) for k, v in self.set.items()]

    def current(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.set.items()}

    def restore(self) -> None:
        self.log.append(("restore",))

    def keep(self) -> None:
        self.log.append(("keep",))

    def restore_saved(self) -> list[str]:
        return list(self.set)

    def originals_location(self) -> OriginalsLocation:
        return OriginalsLocation(Path("/state"), "fake", Path("/state/fake.json"))

    def close(self) -> None:
        self.log.append(("close control",))


def table(sparse: bool = False) -> ReplayTable:
    soft = SearchSpace.product([Knob("batch_size", (1, 2, 4)), Knob("precision", ("fp32", "fp16"))])
    if sparse:
        soft = SearchSpace(soft.knobs, soft.rows[[0, 3, 5]])
    n = len(soft)
    return ReplayTable.from_arrays("t", soft, {"energy_j": np.arange(1, n + 1.0), "latency_ms": np.full(n, 5.0)})


class LoggingMeasurer(TableMeasurer):
    def __init__(self, t: ReplayTable, log: list) -> None:
        super().__init__(t, default={"batch_size": 1, "precision": "fp32"})
        self.log = log

    def set_config(self, config: Mapping[str, Value]) -> None:
        self.log.append(("software", {k: config[k] for k in ("batch_size", "precision") if k in config}))
        super().set_config({**self.default_config(), **{k: config[k] for k in config if k in self.space().names}})

    def close(self) -> None:
        self.log.append(("close measurer",))


def device(control: Control | None, log: list, sparse: bool = False) -> Device:
    return Device(DeviceIdentity("fake", "", ""), name="fake:0", control=control,
                  measurer=LoggingMeasurer(table(sparse), log))


@pytest.mark.parametrize("sparse", [False, True])
def test_space_is_hardware_times_software_in_product_order(sparse):
    soft = table(sparse).space
    space = joined([GPU, MEM], soft)
    if not sparse:
        dense = SearchSpace.product([GPU, MEM, *soft.knobs])
        assert np.array_equal(space.rows, dense.rows)
    assert len(space) == 6 * len(soft)
    assert [space.config(i) for i in range(len(soft))] == [{"gpu_mhz": 100, "mem_mhz": 1000, **soft.config(i)}
                                                           for i in range(len(soft))]
    assert joined([], soft) is soft


def test_whole_configs_are_validated_before_any_write():
    log: list = []
    dev = device(FakeControl(log=log), log)
    assert len(dev.space()) == 5 * 6  # gpu 300 with mem 1000 is refused by the control
    assert dev.default_config() == {"gpu_mhz": 300, "mem_mhz": 2000, "batch_size": 1, "precision": "fp32"}
    for bad in ({"gpu_mhz": 300, "mem_mhz": 1000}, {"precision": "fp8"}, {"warp": 1}):
        with pytest.raises(BadInputError):
            dev.apply({**dev.default_config(), **bad})
    with pytest.raises(BadInputError, match="missing"):
        dev.apply({"gpu_mhz": 100})
    assert log == []
    dev.apply({"gpu_mhz": "200", "mem_mhz": 1000, "batch_size": 4, "precision": "fp16"})
    assert log == [("hardware", {"gpu_mhz": 200, "mem_mhz": 1000}), ("software", {"batch_size": 4, "precision": "fp16"})]
    assert dev.measure().energy_j == 6.0 and dev.last_writes and dev.current() == {"gpu_mhz": 200.0, "mem_mhz": 1000.0}


def test_apply_part_writes_only_the_knobs_given_checked_against_the_whole_space():
    """`polythrottle apply` on a control that takes whole configs (nvml): the knobs left out are not written."""
    log: list = []
    dev = device(FakeControl(log=log), log)
    for bad in ({"gpu_mhz": 300, "mem_mhz": 1000}, {"gpu_mhz": 250}, {"warp": 1}):
        with pytest.raises(BadInputError):
            dev.apply_part(bad)
    assert log == []
    dev.apply_part({"gpu_mhz": "300"})  # some valid config has it (with mem 2000): the memory clock is left alone
    dev.apply_part({"mem_mhz": 1000, "precision": "fp16"})
    assert log == [("hardware", {"gpu_mhz": 300}), ("hardware", {"mem_mhz": 1000}), ("software", {"precision": "fp16"})]
    dev.apply_part(dev.default_config())  # a whole config: Device.apply
    assert log[-2:] == [("hardware", {"gpu_mhz": 300, "mem_mhz": 2000}),
                        ("software", {"batch_size": 1, "precision": "fp32"})]


def test_a_control_taking_subsets_gets_what_is_not_software_after_the_software_is_checked():
    log: list = []
    dev = device(FakeControl(whole=False, log=log), log)
    with pytest.raises(InvalidValueError):
        dev.apply({"gpu_mhz": 100, "batch_size": 3})
    assert log == []
    dev.apply({"gpu_mhz": 100, "batch_size": "2"})
    assert log == [("hardware", {"gpu_mhz": 100}), ("software", {"batch_size": 2})]
    with pytest.raises(BadInputError, match="unknown knob gpu_min_mhz"):  # the control judges its own part
        dev.apply({"gpu_min_mhz": 100})


def test_defaults_fall_back_to_a_valid_config_and_no_knob_says_why():
    dev = Device(DeviceIdentity("fake", "", ""), name="fake:0", control=FakeControl(offered=(GPU,)),
                 measurer=TableMeasurer(table(sparse=True), default={"batch_size": 4, "precision": "fp32"}))
    assert dev.default_config() == dev.space().config(0)  # batch 4 fp32 is not in the sparse table
    bare = Device(DeviceIdentity("fake", "", ""), name="fake:0", control=FakeControl(offered=()))
    with pytest.raises(UnsupportedError, match="no knob here"):
        bare.space()
    with pytest.raises(BadInputError, match=r"the fake device measures a workload: give one \(--workload, "):
        bare.measure()


def test_reporting_and_close():
    log: list = []
    dev = device(FakeControl(log=log), log)
    info = dev.info()
    assert info.name == "fake:0" and info.kind == "fake" and info.touches_hardware
    assert [k.name for k in info.knobs] == ["gpu_mhz", "mem_mhz", "batch_size", "precision"]
    assert info.details["points"] == "6" and dev.hardware_knobs == ["gpu_mhz", "mem_mhz"]
    assert dev.originals_location().device_id == "fake"
    dev.keep()
    with dev:
        pass
    assert log == [("keep",), ("restore",), ("close measurer",), ("close control",)]
    sim = Device(DeviceIdentity("fake", "", ""), name="t", measurer=TableMeasurer(table()))
    assert sim.hardware_knobs == [] and sim.originals_location() is None and sim.restore_saved() == []
    assert not sim.info().touches_hardware


def test_complete_config_fills_in_the_defaults_and_normalizes_without_writing():
    """One rule for 'a partial config on this device' (the API's apply and the daemon's stored best use it)."""
    log: list = []
    dev = device(FakeControl(log=log), log)
    assert dev.complete_config({"gpu_mhz": "200", "precision": "fp16"}) == \
        {"gpu_mhz": 200, "mem_mhz": 2000, "batch_size": 1, "precision": "fp16"}
    assert dev.complete_config({}) == dev.default_config()
    for bad in ({"gpu_mhz": 300, "mem_mhz": 1000}, {"precision": "fp8"}, {"warp": 1}):
        with pytest.raises(BadInputError):
            dev.complete_config(bad)
    assert log == []
