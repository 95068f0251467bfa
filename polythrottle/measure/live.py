"""Measuring a live workload: the meter, the workload runner and the harness, for Jetsons and GPUs alike.

``LiveMeasurer`` runs a workload (``polythrottle.workloads.runner.LiveWorkload``: software knobs and the
runner of the current config) under the measurement harness (``polythrottle.measure.harness``) with
an energy meter, and adds what the hardware says during the measurement (``observe``: e.g. the clocks
the device really ran at) and the meter's own overhead. The meter depends on the hardware:

- Jetson (``jetson_meter``): board power from the INA3221 monitors, else jtop (jetson-stats);
- NVIDIA GPU (``gpu_meter``): the NVML energy counter, or sampled power where the GPU has none; plus
  CPU package energy from RAPL when it is readable (reported in ``details``).

Nothing here changes hardware, and nothing imports ``polythrottle.devices``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from polythrottle.clocks.sysfs import SysfsIO
from polythrottle.energy.base import EnergyMeter
from polythrottle.errors import DeviceError, PermissionDeniedError, UnsupportedError
from polythrottle.measure.harness import HarnessSettings, measure
from polythrottle.measure.measurement import Measurement
from polythrottle.space import Config, Knob, KnobStatus, SearchSpace, Value

if TYPE_CHECKING:
    from polythrottle.energy.ina3221 import RailPlace


class LiveWorkload(Protocol):
    """A workload on one torch device (``polythrottle.workloads.runner.LiveWorkload`` or a test double)."""

    spec: Any  # has .name
    device: Any
    knobs: list[Knob]
    knob_status: list[KnobStatus]

    def default_config(self) -> dict[str, Value]: ...

    def details(self) -> dict[str, str]: ...

    def set_config(self, config: Mapping[str, Value]) -> Any: ...

    @property
    def runner(self) -> Any: ...

    def close(self) -> None: ...


class LiveMeasurer:
    """Measures ``workload`` with ``meter`` under ``harness``; implements ``polythrottle.devices.Measurer``.

    energy: the energy source in words (``info()``); notes: more facts for ``info()`` (e.g. CPU energy);
    observe: read after each measurement, merged into ``Measurement.extra`` (e.g. ``observed_gpu_mhz``).
    """

    def __init__(self, workload: LiveWorkload, meter: EnergyMeter, harness: HarnessSettings, *, energy: str,
                 notes: Mapping[str, str] | None = None,
                 observe: Callable[[], Mapping[str, float]] | None = None) -> None:
        self.workload: LiveWorkload | None = workload
        self.meter: EnergyMeter | None = meter
        self.harness = harness
        self.energy = energy
        self.notes = dict(notes or {})
        self.observe = observe
        self._name = str(workload.spec.name)
        self._space = SearchSpace.product(workload.knobs)
        self._statuses = list(workload.knob_status)

    @property
    def workload_name(self) -> str:
        return self._name

    def space(self) -> SearchSpace:
        return self._space

    def _open(self) -> LiveWorkload:
        if self.workload is None:
            raise DeviceError(f"the measurement of {self._name} is closed")
        return self.workload

    def statuses(self) -> list[KnobStatus]:
        return list(self._statuses)

    def default_config(self) -> Config:
        """The first value of every software knob: fp32, smallest batch, no graphs."""
        return dict(self._open().default_config())

    def set_config(self, config: Mapping[str, Value]) -> None:
        self._open().set_config(config)

    def measure(self) -> Measurement:
        """Warm-up, metered windows, the latency percentile, repeats (``polythrottle.measure.harness``)."""
        workload = self._open()
        if self.meter is None:
            raise DeviceError(f"the measurement of {self._name} is closed")
        m = measure(workload.runner, self.meter, self.harness)
        extra = dict(m.extra)
        extra.update(self.observe() if self.observe is not None else {})
        stats = getattr(self.meter, "last_stats", None)  # sampled meters report their own overhead
        if stats is not None:
            extra["meter_overhead"] = round(stats.overhead, 4)
            extra["meter_failed_reads"] = stats.failures
        return replace(m, extra=extra)

    def details(self) -> dict[str, str]:
        """Energy source, window, workload, torch device, and what the workload's runtime chose (none once closed)."""
        workload = self.workload
        if workload is None:
            return {}
        return {"energy": self.energy, **self.notes,
                "window": f"{self.harness.window_s:g} s x {self.harness.repeats}",
                "workload": self._name, "torch device": str(workload.device), **workload.details()}

    def close(self) -> None:
        try:
            if self.workload is not None:
                self.workload.close()
        finally:
            self.workload = None
            if self.meter is not None:
                self.meter.close()
                self.meter = None


# ----- the pieces: settings, workload, meters --------------------------------------------------------
def harness_settings(window_s: float | None = None, percentile: float = 99.0,
                     repeats: int | None = None) -> HarnessSettings:
    """Harness settings from the device options (None: the harness's defaults, 2 s x 3)."""
    return HarnessSettings(window_s=window_s or HarnessSettings.window_s, percentile=percentile,
                           repeats=repeats or HarnessSettings.repeats)


def load_spec(spec: str) -> Any:
    """The workload named ``spec`` (``builtin:NAME``, ``torchvision:NAME``, ``onnx:...``, ``llm:...``,
    ``module:function``). Raises BadInputError, or UnsupportedError when this build lacks what it needs."""
    try:
        from polythrottle.workloads import load_workload
    except ModuleNotFoundError as e:
        raise UnsupportedError(f"measuring a workload needs {e.name}, which this build lacks") from None
    return load_workload(spec)


def open_workload(spec: Any, torch_device: Any, slo_metric: str | None = None) -> LiveWorkload:
    """``spec`` ready to run on ``torch_device``; ``slo_metric``: the latency the SLO bounds (None: its default)."""
    from polythrottle.workloads.runner import LiveWorkload as Runner

    return Runner(spec, torch_device, slo_metric=slo_metric)


def default_torch_device() -> str:
    """``cuda`` where PyTorch sees a GPU (a Jetson's integrated one), else ``cpu``."""
    try:
        import torch
    except ModuleNotFoundError as e:
        raise UnsupportedError(f"measuring a workload needs {e.name}, which this build lacks") from None
    return "cuda" if torch.cuda.is_available() else "cpu"


def cuda_device_for(uuid: str, index: int) -> Any:
    """The torch CUDA device of the GPU with NVML ``uuid``. Raises UnsupportedError if torch cannot see it."""
    import os

    import torch

    if not torch.cuda.is_available():
        raise UnsupportedError("PyTorch sees no CUDA device (CPU-only torch, or CUDA_VISIBLE_DEVICES hides it)")
    want = uuid.lower().removeprefix("gpu-")
    for i in range(torch.cuda.device_count()):
        got = str(getattr(torch.cuda.get_device_properties(i), "uuid", "")).lower().removeprefix("gpu-")
        if got and got == want:
            return torch.device("cuda", i)
    if "CUDA_VISIBLE_DEVICES" not in os.environ and index < torch.cuda.device_count():
        return torch.device("cuda", index)
    raise UnsupportedError(f"GPU {uuid} (NVML index {index}) is not visible to PyTorch (CUDA_VISIBLE_DEVICES?)")


def observed(current: Mapping[str, float]) -> dict[str, float]:
    """``{"gpu_mhz": 624.75}`` -> ``{"observed_gpu_mhz": 624.75}``: what the hardware ran at."""
    return {f"observed_{k}": v for k, v in current.items()}


def jetson_meter(io: SysfsIO, rails: Sequence[str] | None,
                 places: Sequence[RailPlace] = ()) -> tuple[EnergyMeter, str]:
    """Board energy of a Jetson: INA3221 (``rails``: the profile's board rails, taken where ``places``, the
    profile's power section, puts them), else jtop. Returns the meter and its description. Raises
    UnsupportedError naming why neither works."""
    from polythrottle.energy.ina3221 import INA3221Meter

    meter: Any
    try:
        meter = INA3221Meter(rails, io=io, places=places)
    except UnsupportedError as ina:
        try:
            from polythrottle.energy.jtop import JtopMeter

            meter = JtopMeter(rails)
        except UnsupportedError as jt:
            raise UnsupportedError(f"no board energy source: {ina}; jtop: {jt}") from None
    return meter, f"{meter.name} every {meter.sampler.period_s * 1000:g} ms"


def jetson_meter_statuses(io: SysfsIO, rails: Sequence[str] | None,
                          places: Sequence[RailPlace] = ()) -> list[KnobStatus]:
    """Which energy sources a Jetson offers here, and why not (for ``polythrottle devices``)."""
    from polythrottle.energy.ina3221 import board_rails
    from polythrottle.energy.jtop import jtop_status

    out = []
    try:
        found = board_rails(io, rails, places=places)
        out.append(KnobStatus("ina3221", True, "board power = " + " + ".join(r.name for r in found)))
    except (UnsupportedError, DeviceError) as e:
        out.append(KnobStatus("ina3221", False, "not root" if isinstance(e, PermissionDeniedError) else str(e)))
    out.append(KnobStatus("jtop", *jtop_status()))
    out.append(KnobStatus("nvml", False, "NVML reports NotSupported on Jetson (power, energy and clocks)"))
    return out


def gpu_meter(handle: Any, label: str, rapl_root: str | Path | None = None) -> tuple[EnergyMeter, str, str]:
    """Energy of an NVIDIA GPU (NVML ``handle``): its energy counter, else its sampled power; plus CPU
    package energy (RAPL under ``rapl_root``) when readable. Returns the meter, the energy source and
    the CPU energy source in words. Raises UnsupportedError when the GPU reports no energy at all."""
    from polythrottle.energy.combined import CombinedMeter
    from polythrottle.energy.nvml import NvmlEnergyMeter, NvmlPowerMeter
    from polythrottle.energy.rapl import POWERCAP, RaplMeter

    gpu: EnergyMeter
    try:
        gpu = NvmlEnergyMeter(handle)
        source = "NVML energy counter"
    except UnsupportedError as counter_missing:
        try:
            power = NvmlPowerMeter(handle)
        except UnsupportedError as e:
            raise UnsupportedError(f"{label}: no energy source ({counter_missing}; {e})") from None
        gpu, source = power, f"integrated power ({power.source}; no energy counter)"
    try:
        cpu = RaplMeter(rapl_root or POWERCAP)
    except UnsupportedError as e:
        return gpu, source, f"not measured ({e})"
    return CombinedMeter([gpu, cpu]), source, "RAPL package energy (included in energy_j)"


def gpu_temperature(handle: Any) -> dict[str, float]:
    """``{"temperature_c": ...}`` of the GPU (empty when NVML cannot say)."""
    import pynvml

    try:
        return {"temperature_c": float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))}
    except pynvml.NVMLError:
        return {}


def gpu_measurer(spec: Any, handle: Any, label: str, *, torch_device: Any, uuid: str, index: int,
                 harness: HarnessSettings, rapl_root: str | Path | None, slo_metric: str | None,
                 current: Callable[[], Mapping[str, float]]) -> LiveMeasurer:
    """``spec`` measured on NVIDIA GPU ``handle`` (``gpu_meter``), run on ``torch_device`` (None: the CUDA
    device of the GPU with ``uuid``); each measurement adds the clocks ``current()`` reports and the
    GPU's temperature."""
    meter, energy, cpu_energy = gpu_meter(handle, label, rapl_root)
    try:
        device = torch_device if torch_device is not None else cuda_device_for(uuid, index)
        workload = open_workload(spec, device, slo_metric)
    except BaseException:
        meter.close()
        raise
    return LiveMeasurer(workload, meter, harness, energy=energy, notes={"cpu energy": cpu_energy},
                        observe=lambda: {**observed(current()), **gpu_temperature(handle)})
