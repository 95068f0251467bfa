"""GPU energy through NVML (module ``pynvml`` of nvidia-ml-py): the energy counter, or sampled power.

``NvmlEnergyMeter``: nvmlDeviceGetTotalEnergyConsumption (mJ since the driver loaded; Volta and
newer). The counter advances in steps (about every 100 ms on an H100) and one read costs about 4 ms,
so it is read only at window boundaries: ``begin()`` and ``end()`` each wait for the next step
(one read every ``poll_s``, at most ``max_wait_s``), so a window spans whole counter periods and its
duration is measured between the two steps. Overhead: up to one counter period of waiting at each
boundary; the idle tail after the workload stops is inside the window (a bias of roughly
idle power x 50 ms per window). A counter that went backwards raises CounterResetError.

``NvmlPowerMeter`` (``polythrottle.energy.sampling``): a background thread reads instantaneous power
(NVML_FI_DEV_POWER_INSTANT, else nvmlDeviceGetPowerUsage, which is a 1 s average on Ampere and newer
except GA100) every ``interval_s`` and integrates it (trapezoids). Used where the counter is missing,
and as a cross-check of the counter over exactly the same windows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pynvml

from polythrottle.energy.base import CounterResetError, EnergyMeter, EnergyWindow
from polythrottle.energy.sampling import PowerSampler, SampledPowerMeter
from polythrottle.errors import DeviceError, UnsupportedError

Clock = Callable[[], float]


def nvml_reason(e: Exception) -> str:
    """A short reason for an NVML error ("Not Supported", "Insufficient Permissions", ...)."""
    try:
        return str(e) or type(e).__name__
    except Exception:  # noqa: BLE001 - NVMLError.__str__ itself calls into NVML
        return type(e).__name__


def read_energy_mj(handle: Any) -> int:
    """The GPU's total energy counter in mJ. Raises UnsupportedError if the GPU has none."""
    try:
        return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    except pynvml.NVMLError as e:
        raise UnsupportedError(f"NVML energy counter unavailable: {nvml_reason(e)}") from None


_VALUE_ATTR = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
}


def _field_value(v: Any) -> float:
    return float(getattr(v.value, _VALUE_ATTR.get(int(v.valueType), "uiVal")))


def power_reader(handle: Any) -> tuple[Callable[[], float], str]:
    """A function returning the GPU's power in watts, and its name. Raises UnsupportedError if none works."""

    def instant() -> float:
        v = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
        if int(v.nvmlReturn) != pynvml.NVML_SUCCESS:
            raise pynvml.NVMLError(int(v.nvmlReturn))
        return _field_value(v) / 1000.0

    def usage() -> float:
        return pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0

    reasons = []
    for fn, name in ((instant, "NVML_FI_DEV_POWER_INSTANT"), (usage, "nvmlDeviceGetPowerUsage")):
        try:
            fn()
            return fn, name
        except pynvml.NVMLError as e:
            reasons.append(f"{name}: {nvml_reason(e)}")
    raise UnsupportedError("NVML power readings unavailable (" + "; ".join(reasons) + ")")


class NvmlPowerMeter(SampledPowerMeter):
    """Energy by integrating sampled power; for GPUs without the energy counter."""

    name = "nvml-power"

    def __init__(self, handle: Any, interval_s: float = 0.02, clock: Clock = time.perf_counter) -> None:
        read, self.source = power_reader(handle)
        super().__init__(read, interval_s, clock)


class NvmlEnergyMeter(EnergyMeter):
    """Energy from the NVML counter, windows aligned to counter steps (see the module docstring).

    cross_check: also sample instantaneous power over the same windows; each window's details then
    hold ``power_integral_j`` and ``counter_vs_power`` (counter energy / integrated power).
    """

    name = "nvml"

    def __init__(
        self,
        handle: Any,
        *,
        align: bool = True,
        poll_s: float = 0.01,
        max_wait_s: float = 0.5,
        cross_check: bool = False,
        sample_interval_s: float = 0.02,
        clock: Clock = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.handle = handle
        read_energy_mj(handle)  # raises UnsupportedError where the counter is missing
        self.align, self.poll_s, self.max_wait_s = align, poll_s, max_wait_s
        self.clock, self.sleep = clock, sleep
        self.sampler: PowerSampler | None = None
        if cross_check:
            read, self.power_source = power_reader(handle)
            self.sampler = PowerSampler(read, sample_interval_s, clock)
        self._start: tuple[int, float, int] | None = None

    def _read(self) -> tuple[int, float, int]:
        """(counter mJ, clock time of the step it shows, reads made)."""
        a = self.clock()
        v = read_energy_mj(self.handle)
        t = (a + self.clock()) / 2
        if not self.align:
            return v, t, 1
        reads = 1
        deadline = a + self.max_wait_s
        while True:
            self.sleep(self.poll_s)
            a = self.clock()
            v2 = read_energy_mj(self.handle)
            t2 = (a + self.clock()) / 2
            reads += 1
            if v2 != v or t2 >= deadline:
                return v2, t2, reads

    def begin(self) -> None:
        if self.sampler is not None:
            self.sampler.start()
        self._start = self._read()

    def end(self) -> EnergyWindow:
        if self._start is None:
            raise DeviceError("end() called before begin()")
        v0, t0, n0 = self._start
        v1, t1, n1 = self._read()
        self._start = None
        if v1 < v0:
            if self.sampler is not None:
                self.sampler.stop()
            raise CounterResetError(f"NVML energy counter went backwards ({v0} -> {v1} mJ): driver reloaded?")
        energy_j = (v1 - v0) / 1000.0
        details: dict[str, float] = {}
        if self.sampler is not None:
            self.sampler.stop()
            pj = self.sampler.integrate(t0, t1)
            details = {"power_integral_j": pj, "counter_vs_power": energy_j / pj if pj > 0 else float("nan")}
        return EnergyWindow(energy_j, t1 - t0, n0 + n1, details)

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
