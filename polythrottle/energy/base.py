"""The energy-meter interface shared by every backend and by the measurement harness.

A meter measures one window at a time: ``begin()``, run the workload, ``end()`` returns the energy
consumed in between. Implementations state their own overhead and resolution in their docstring.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from polythrottle.errors import DeviceError


@dataclass(frozen=True)
class EnergyWindow:
    """Energy over one window. energy_j: joules; duration_s: seconds; samples: sensor reads used.
    details: meter-specific numbers about the window (e.g. a cross-check), recorded by the harness."""

    energy_j: float
    duration_s: float
    samples: int = 0
    details: Mapping[str, float] = field(default_factory=dict)

    @property
    def power_w(self) -> float:
        return self.energy_j / self.duration_s if self.duration_s > 0 else 0.0


class CounterResetError(DeviceError):
    """An energy counter went backwards during a window (e.g. a driver reload): the window is void."""


class EnergyMeter(ABC):
    """Measures energy over windows. Raises UnsupportedError (polythrottle.errors) if the source is absent."""

    name: str = "meter"

    @abstractmethod
    def begin(self) -> None:
        """Start a window."""

    @abstractmethod
    def end(self) -> EnergyWindow:
        """End the window started by ``begin()`` and return its energy."""

    def close(self) -> None:
        """Release resources (threads, handles)."""
