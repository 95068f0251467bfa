"""Board energy on Jetsons from the INA3221 power monitors, sampled and integrated.

The monitors sit under ``/sys/bus/i2c/devices/*/`` (read relative to ``POLYTHROTTLE_ROOT``):

- JetPack 5+ (hwmon): ``.../hwmon/hwmonN/inK_label`` names channel K, ``inK_input`` is the bus
  voltage (mV) and ``currK_input`` the current (mA); power = V x I. Channel 7 ("sum of shunt
  voltages") and unconnected channels labelled ``NC`` are skipped.
- JetPack 4 (iio): ``.../iio:deviceN/rail_name_K``, ``in_powerK_input`` (mW), else
  ``in_voltageK_input`` (mV) x ``in_currentK_input`` (mA).

Where a rail is: the board profile's ``power`` section says it (``RailPlace``: the sensor directory's glob
for the rail's I2C address, and the channel's label, voltage, current and power files); a rail is taken
from there when the label file there names it. A rail the profile does not place, or that is not where the
profile says, is looked for by its label under ``/sys/bus/i2c/devices`` (``find_rails``).

``INA3221Meter`` sums the rails that make up board power (the board profile says which) and
integrates them with ``PowerSampler``: period 20 ms by default (10-50 ms are sensible; the sensor
itself averages over its conversion time). Overhead: each sample reads two small sysfs files per
rail (one on iio); on a real board each read is an I2C transaction of the order of 0.1-1 ms, so
with 3 rails at 20 ms the sampler thread is busy a few percent of one core. The meter measures
this itself: ``last_stats.overhead`` is the fraction of each window spent reading. A failed read
(I/O error, a torn value) skips that sample (see ``polythrottle.energy.sampling``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from polythrottle.clocks.sysfs import SysfsIO, open_io
from polythrottle.energy.sampling import Clock, SampledPowerMeter
from polythrottle.errors import UnsupportedError

I2C_DEVICES = "/sys/bus/i2c/devices"


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel. Paths are board paths; ``power_path`` (mW) wins over volt x curr."""

    name: str
    volt_path: str | None = None  # mV
    curr_path: str | None = None  # mA
    power_path: str | None = None  # mW

    def read_w(self, io: SysfsIO) -> float:
        if self.power_path:
            return io.read_int(self.power_path) / 1000.0
        return io.read_int(self.volt_path) * io.read_int(self.curr_path) / 1e6  # type: ignore[arg-type]


@dataclass(frozen=True)
class RailPlace:
    """Where a board profile says rail ``name`` is on one interface (hwmon or iio): ``glob`` matches the
    sensor's directory (board path); ``label``/``volt``/``curr``/``power`` are its channel's files there
    (label, mV, mA, mW; ``power`` None where the interface has none)."""

    name: str
    glob: str
    label: str
    volt: str
    curr: str
    power: str | None = None


def placed_rail(io: SysfsIO, name: str, places: Sequence[RailPlace]) -> Rail | None:
    """Rail ``name`` where ``places`` put it (the first place whose label file names it and whose
    value files exist; ``power`` wins over volt x curr), or None."""
    for place in (p for p in places if p.name == name):
        for d in io.glob(place.glob):
            label = f"{d}/{place.label}"
            if not io.is_file(label) or io.read(label) != name:
                continue
            if place.power and io.is_file(f"{d}/{place.power}"):
                return Rail(name, power_path=f"{d}/{place.power}")
            volt, curr = f"{d}/{place.volt}", f"{d}/{place.curr}"
            if io.is_file(volt) and io.is_file(curr):
                return Rail(name, volt_path=volt, curr_path=curr)
    return None


def _skip_label(label: str) -> bool:
    return not label or label.upper().startswith("NC") or "sum of shunt" in label.lower()


def _hwmon_rails(io: SysfsIO, hwmon_dir: str) -> list[Rail]:
    rails = []
    for f in io.listdir(hwmon_dir):
        m = re.fullmatch(r"in(\d+)_label", f)
        if not m or m.group(1) == "7":
            continue
        k = m.group(1)
        label = io.read(f"{hwmon_dir}/{f}")
        volt, curr = f"{hwmon_dir}/in{k}_input", f"{hwmon_dir}/curr{k}_input"
        if _skip_label(label) or not (io.is_file(volt) and io.is_file(curr)):
            continue
        rails.append(Rail(label, volt_path=volt, curr_path=curr))
    return rails


def _iio_rails(io: SysfsIO, iio_dir: str) -> list[Rail]:
    rails = []
    for f in io.listdir(iio_dir):
        m = re.fullmatch(r"rail_name_(\d+)", f)
        if not m:
            continue
        k = m.group(1)
        label = io.read(f"{iio_dir}/{f}")
        if _skip_label(label):
            continue
        power = f"{iio_dir}/in_power{k}_input"
        volt, curr = f"{iio_dir}/in_voltage{k}_input", f"{iio_dir}/in_current{k}_input"
        if io.is_file(power):
            rails.append(Rail(label, power_path=power))
        elif io.is_file(volt) and io.is_file(curr):
            rails.append(Rail(label, volt_path=volt, curr_path=curr))
    return rails


def find_rails(io: SysfsIO, search: str = I2C_DEVICES) -> dict[str, Rail]:
    """Every INA3221 rail under ``search`` (board path), by label."""
    rails: dict[str, Rail] = {}
    for dev in io.listdir(search):
        d = f"{search}/{dev}"
        name = io.read(f"{d}/name") if io.is_file(f"{d}/name") else ""
        for sub in io.listdir(d):
            if sub == "hwmon":
                for h in io.listdir(f"{d}/hwmon"):
                    hd = f"{d}/hwmon/{h}"
                    hname = io.read(f"{hd}/name") if io.is_file(f"{hd}/name") else name
                    if "ina3221" in hname.lower():
                        rails.update((r.name, r) for r in _hwmon_rails(io, hd))
            elif sub.startswith("iio:device") and "ina3221" in name.lower():
                rails.update((r.name, r) for r in _iio_rails(io, f"{d}/{sub}"))
    return rails


def board_rails(io: SysfsIO, wanted: Sequence[str] | None = None, search: str = I2C_DEVICES,
                places: Sequence[RailPlace] = ()) -> list[Rail]:
    """The rails summed for board power: ``wanted`` (all must exist), else VDD_IN/POM_5V_IN, else all.
    A wanted rail is taken where ``places`` (the board profile) put it, else found by label.

    Raises UnsupportedError naming what is missing ("no INA3221 found", "rail X not found").
    """
    placed = {name: rail for name in (wanted or ()) if (rail := placed_rail(io, name, places)) is not None}
    if wanted and len(placed) == len(wanted):
        return [placed[r] for r in wanted]
    found = find_rails(io, search)
    if not found and not placed:
        raise UnsupportedError(f"no INA3221 found under {search}")
    if wanted:
        missing = [r for r in wanted if r not in placed and r not in found]
        if missing:
            raise UnsupportedError(
                f"INA3221 rail(s) {', '.join(missing)} not found; found: {', '.join(sorted({*found, *placed}))}"
            )
        return [placed.get(r) or found[r] for r in wanted]
    for total in ("VDD_IN", "POM_5V_IN"):
        if total in found:
            return [found[total]]
    return [found[k] for k in sorted(found)]


class INA3221Meter(SampledPowerMeter):
    """Board energy: the sum of ``rails`` (names; default: see ``board_rails``) sampled every ``period_s``;
    ``places``: where the board profile puts them.

    Raises UnsupportedError if no INA3221 or a named rail is absent. See the module docstring for
    period, overhead and failed reads.
    """

    name = "ina3221"

    def __init__(
        self,
        rails: Sequence[str] | None = None,
        *,
        io: SysfsIO | None = None,
        places: Sequence[RailPlace] = (),
        period_s: float = 0.02,
        clock: Clock = time.monotonic,
    ) -> None:
        self.io = io or open_io()
        self.rails = board_rails(self.io, rails, places=places)
        super().__init__(self.read_w, period_s, clock)

    def read_w(self) -> float:
        """Board power now (W): the sum of the rails."""
        return sum(r.read_w(self.io) for r in self.rails)
