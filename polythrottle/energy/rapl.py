"""CPU package energy from RAPL through powercap: /sys/class/powercap/intel-rapl:N/energy_uj.

Every top-level package zone (``intel-rapl:N``, not its ``intel-rapl:N:M`` sub-zones) is summed.
The counter (µJ) wraps at ``max_energy_range_uj``; one wrap per window is undone (a window shorter
than a wrap period, which is tens of minutes at package powers). ``energy_uj`` is root-only since
Linux 5.10 (a fix for the PLATYPUS side channel): unreadable zones raise UnsupportedError with the reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from polythrottle.energy.base import EnergyMeter, EnergyWindow
from polythrottle.errors import DeviceError, UnsupportedError

POWERCAP = Path("/sys/class/powercap")
_PACKAGE = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class RaplZone:
    path: Path
    name: str
    max_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().split()[0])


def find_zones(root: Path = POWERCAP) -> list[RaplZone]:
    """Readable package zones under ``root``. Raises UnsupportedError naming why none can be used."""
    if not root.is_dir():
        raise UnsupportedError(f"no RAPL: {root} does not exist")
    dirs = sorted(p for p in root.iterdir() if _PACKAGE.match(p.name))
    if not dirs:
        raise UnsupportedError(f"no RAPL package zones (intel-rapl:N) under {root}")
    zones = []
    for d in dirs:
        try:
            name = (d / "name").read_text().strip() if (d / "name").exists() else d.name
            zone = RaplZone(d, name, int((d / "max_energy_range_uj").read_text().split()[0]))
            zone.read_uj()
        except PermissionError:
            raise UnsupportedError(
                f"RAPL {d / 'energy_uj'} is not readable (root-only since Linux 5.10)"
            ) from None
        except (OSError, ValueError, IndexError) as e:
            raise UnsupportedError(f"RAPL zone {d} unreadable: {e}") from None
        zones.append(zone)
    return zones


def delta_uj(start: int, end: int, max_range_uj: int) -> int:
    """Counter increase from ``start`` to ``end`` with at most one wrap at ``max_range_uj``."""
    return end - start if end >= start else end + max_range_uj - start


class RaplMeter(EnergyMeter):
    """Sum of every RAPL package zone's energy over a window (two reads per zone per window)."""

    name = "rapl"

    def __init__(self, root: str | Path = POWERCAP, clock: Callable[[], float] = time.perf_counter) -> None:
        self.zones = find_zones(Path(root))
        self.clock = clock
        self._start: tuple[list[int], float] | None = None

    def begin(self) -> None:
        self._start = ([z.read_uj() for z in self.zones], self.clock())

    def end(self) -> EnergyWindow:
        if self._start is None:
            raise DeviceError("end() called before begin()")
        values, t0 = self._start
        self._start = None
        now = [z.read_uj() for z in self.zones]
        t1 = self.clock()
        total = sum(delta_uj(a, b, z.max_range_uj) for a, b, z in zip(values, now, self.zones))
        return EnergyWindow(total / 1e6, t1 - t0, 2 * len(self.zones))
