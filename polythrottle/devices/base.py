"""The device interface: what knobs a device offers, apply a config, measure, restore.

The device layer knows nothing about optimization. A device is opened for one workload; its
``space()`` is every valid config of its knobs (hardware clocks and software knobs alike).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

from polythrottle.identity import DeviceIdentity
from polythrottle.measurement import Measurement
from polythrottle.space import Config, SearchSpace, Value


@dataclass(frozen=True)
class KnobStatus:
    """Whether a knob can be used on this device, and why not."""

    name: str
    available: bool
    reason: str = ""


@dataclass
class DeviceInfo:
    """Human-facing facts about a device: what can be controlled (``knobs``) and measured
    (``meters``), and why not; ``found`` is False when a probe found no such device (``notes`` say why).
    """

    name: str
    kind: str
    details: dict[str, str] = field(default_factory=dict)
    knobs: list[KnobStatus] = field(default_factory=list)
    touches_hardware: bool = False
    meters: list[KnobStatus] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    found: bool = True


class Device(ABC):
    """A device that can be set to a config and measured under it.

    Subclasses must validate a config fully before writing anything, record original hardware
    values before the first write, roll an apply back on any exception (KeyboardInterrupt and
    SystemExit included), and put the originals back in ``restore()`` with signals deferred
    (``polythrottle.interrupts.deferred``). ``close()`` restores.
    """

    @abstractmethod
    def identity(self) -> DeviceIdentity:
        """Who this device is (kind, board, unit); the history key is built from it."""

    @property
    def workload_name(self) -> str:
        """The canonical name of the workload this device measures (``""`` if none): part of the history key."""
        return ""

    @abstractmethod
    def space(self) -> SearchSpace:
        """Every valid config of this device's knobs."""

    @abstractmethod
    def default_config(self) -> Config:
        """The config the device runs at when nobody tunes it (the baseline)."""

    @abstractmethod
    def apply(self, config: Mapping[str, Value]) -> None:
        """Set every knob in ``config``. Raises BadInputError (nothing written) or DeviceError."""

    @abstractmethod
    def measure(self) -> Measurement:
        """Measure inference under the currently applied config."""

    def restore(self) -> None:
        """Put back every hardware value changed since open. Default: nothing to restore."""

    def keep(self) -> None:
        """Leave the applied settings, and those a later ``apply`` sets, in place on close (``apply``
        calls it first, ``tune --apply`` once the result is saved); the saved originals stay for
        ``restore``. An apply that fails or is interrupted is still rolled back. Default: nothing to do."""

    def restore_saved(self) -> list[str]:
        """Put back every original value saved in the state directory, also those left by a process
        that crashed, and forget them. Returns the settings restored. Default: nothing saved."""
        return []

    def info(self) -> DeviceInfo:
        return DeviceInfo(name=type(self).__name__, kind=type(self).__name__)

    def close(self) -> None:
        self.restore()

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
