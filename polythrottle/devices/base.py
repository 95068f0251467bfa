"""A device = identity + hardware control + measurement. The device layer knows nothing of optimization.

- ``Control``: the hardware knobs of one device (clocks, power limits): which can be set here and why
  not, validating and applying a setting, and the originals (``originals_session.OriginalsSession``:
  saved before the first write, put back by ``restore``, kept by ``keep``, a crashed run's put back by
  ``restore_saved``). Implementations: ``jetson.JetsonControl``, ``nvml.NvmlControl``.
- ``Measurer``: the software knobs of what is measured and ``measure()``. Implementations:
  ``polythrottle.measure.live.LiveMeasurer`` (a live workload, metered), ``table.TableMeasurer`` (a
  measured or computed table: ``replay:``, ``sim:``). A Protocol, so ``polythrottle.measure`` does not
  depend on this package.
- ``Device``: one of each (either may be absent), with the API every face uses: ``space()`` is every
  valid config of hardware x software knobs, ``apply`` validates everything before the first write.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

import numpy as np

from polythrottle.clocks.base import Write
from polythrottle.devices.originals import OriginalsLocation
from polythrottle.errors import (
    BadInputError,
    DeviceError,
    PermissionDeniedError,
    PolyThrottleError,
    UnsupportedError,
    every_face,
)
from polythrottle.identity import DeviceIdentity
from polythrottle.measure.measurement import Measurement
from polythrottle.space import MAX_POINTS, Config, Knob, KnobStatus, SearchSpace, Value


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


class Control(ABC):
    """The hardware knobs of one device.

    Every control validates a setting fully before writing anything, saves the originals before the
    first write, rolls an apply back on any exception (KeyboardInterrupt and SystemExit included) and
    restores with signals deferred; one ``OriginalsSession`` does the bookkeeping for all of them.
    """

    whole_configs: bool = True
    """True: ``Device.apply`` takes a value for every knob of the device's space and checks the config
    against the whole space (combinations included). False: any subset of the knobs, each part checked
    by its owner (the control may then accept settings outside the tuned space, e.g. a clock range)."""

    @abstractmethod
    def knobs(self) -> list[Knob]:
        """The hardware knobs that can be set here, with their declared semantics (empty: none can)."""

    @abstractmethod
    def statuses(self) -> list[KnobStatus]:
        """Every hardware knob of the device, settable here or not, and why not."""

    def restrict(self, space: SearchSpace) -> SearchSpace:
        """``space`` (hardware x software knobs) without the combinations this hardware refuses."""
        return space

    @abstractmethod
    def default_config(self) -> Config:
        """The settings of ``knobs()`` the device runs at when nobody tunes it."""

    @abstractmethod
    def no_knob_error(self) -> PolyThrottleError:
        """The error for a device offering no knob at all (neither this control nor its measurer)."""

    @abstractmethod
    def apply(self, settings: Mapping[str, Value]) -> None:
        """Validate, then set ``settings`` (hardware knobs only). Raises BadInputError (nothing written),
        PermissionDeniedError, DeviceError (what this apply wrote is rolled back)."""

    @property
    @abstractmethod
    def hardware_knobs(self) -> list[str]:
        """The names ``apply`` takes as hardware settings (a result's other knobs are software)."""

    @property
    @abstractmethod
    def last_writes(self) -> list[Write]:
        """What the last ``apply`` wrote, in order (empty: nothing changed)."""

    @abstractmethod
    def current(self) -> dict[str, float]:
        """The hardware's values now (MHz, W), as it reports them (a value it cannot read is left out)."""

    @abstractmethod
    def restore(self) -> None:
        """Put back every value this process changed (and did not keep). Signals deferred until done."""

    @abstractmethod
    def keep(self) -> None:
        """Leave what is applied, and what later applies set, in place; ``restore_saved`` undoes it."""

    @abstractmethod
    def restore_saved(self) -> list[str]:
        """Put back every saved original, also a crashed run's, and forget them. Returns what was restored."""

    @abstractmethod
    def originals_location(self) -> OriginalsLocation:
        """Where this device's saved originals are kept."""

    def details(self) -> dict[str, str]:
        """Facts for ``Device.info()`` (board, driver, saved originals, ...)."""
        return {}

    @property
    def touches_hardware(self) -> bool:
        """Whether this control can change hardware here."""
        return True

    def close(self) -> None:
        """Release what the control holds (e.g. the NVML handle). Does not restore: ``Device.close`` does."""


class Measurer(Protocol):
    """What is measured on a device: its software knobs and ``measure()`` (see the module docstring)."""

    @property
    def workload_name(self) -> str:
        """The canonical name of the workload measured (``""`` if unknown): part of the history key."""

    def space(self) -> SearchSpace:
        """Every valid config of the measurer's knobs (software knobs; a table's columns)."""

    def statuses(self) -> list[KnobStatus]:
        """Every knob of the measurer, usable here or not, and why not."""

    def default_config(self) -> Config:
        """The software config the workload runs at when nobody tunes it."""

    def set_config(self, config: Mapping[str, Value]) -> None:
        """Use ``config`` (its own knobs; others are ignored) for the next ``measure()``."""

    def measure(self) -> Measurement:
        """Measure under the config set last. Raises DeviceError before any ``set_config``."""

    def details(self) -> dict[str, str]:
        """Facts for ``Device.info()`` (workload, energy source, window)."""

    def close(self) -> None:
        """Free the workload and the meter."""


def joined(hardware: Sequence[Knob], software: SearchSpace | None) -> SearchSpace:
    """Every combination of ``hardware`` knob values with every point of ``software`` (in the order
    ``SearchSpace.product`` gives: hardware first, the last knob varying fastest)."""
    if software is None:
        return SearchSpace.product(hardware)
    if not hardware:
        return software
    hw = SearchSpace.product(hardware)
    size = len(hw) * len(software)
    if size > MAX_POINTS:
        raise BadInputError(f"search space has {size} points, more than the {MAX_POINTS} supported")
    rows = np.hstack([np.repeat(hw.rows, len(software), axis=0), np.tile(software.rows, (len(hw), 1))])
    return SearchSpace((*hw.knobs, *software.knobs), rows)


class Device:
    """A device that can be set to a config and measured under it: ``identity`` plus an optional
    ``control`` (hardware knobs) and an optional ``measurer`` (software knobs and measurements).
    ``name`` is what ``info()`` shows (``jetson:jetson-agx-orin``, ``nvml:0``, ``replay:t.csv``);
    ``meters`` lists the energy sources the board offers (for ``polythrottle devices``). ``close()``
    restores."""

    def __init__(self, identity: DeviceIdentity, *, name: str, control: Control | None = None,
                 measurer: Measurer | None = None, meters: Callable[[], list[KnobStatus]] | None = None) -> None:
        self._identity = identity
        self.name = name
        self.control = control
        self.measurer = measurer
        self.meters = meters
        self.closed = False

    def identity(self) -> DeviceIdentity:
        """Who this device is (kind, board, unit); the history key is built from it."""
        return self._identity

    @property
    def workload_name(self) -> str:
        """The canonical name of the workload this device measures (``""`` if none): part of the history key."""
        return self.measurer.workload_name if self.measurer is not None else ""

    def space(self) -> SearchSpace:
        """Every valid config of this device's knobs: hardware x software, less what the control refuses."""
        hardware = self.control.knobs() if self.control is not None else []
        software = self.measurer.space() if self.measurer is not None else None
        if not hardware and software is None:
            if self.control is not None:
                raise self.control.no_knob_error()
            raise BadInputError(f"{self.name} offers no knob")
        space = joined(hardware, software)
        return self.control.restrict(space) if self.control is not None else space

    def default_config(self) -> Config:
        """The config the device runs at when nobody tunes it (the baseline): the control's and the
        measurer's defaults, a knob neither names at its highest value; the first valid config when that
        combination is not valid."""
        space = self.space()
        want = dict(self.control.default_config()) if self.control is not None else {}
        want.update(self.measurer.default_config() if self.measurer is not None else {})
        cfg = {k.name: want.get(k.name, k.values[-1]) for k in space.knobs}
        return space.normalize(cfg) if space.contains(cfg) else space.config(0)

    def complete_config(self, config: Mapping[str, Value | str]) -> Config:
        """``config`` with every knob it leaves out at the device's default (``default_config``), normalized
        against ``space()`` (values parsed, knobs in the space's order). Writes nothing. Raises BadInputError
        for an unknown knob, a value that is not one of its steps or a combination the device refuses."""
        full: dict[str, Value | str] = dict(self.default_config())
        full.update(config)
        return self.space().normalize(full)

    def unavailable_knob_error(self, names: Iterable[str]) -> PolyThrottleError | None:
        """The error for the first of ``names`` that is a knob of this device which cannot be set here, with
        the reason its status gives: BadInputError under --no-clock-control, PermissionDeniedError where root
        is needed, else UnsupportedError. None if no name is such a knob (offered, or unknown to the device)."""
        statuses = (self.control.statuses() if self.control is not None else []) + \
            (self.measurer.statuses() if self.measurer is not None else [])
        why = {k.name: k.reason for k in statuses if not k.available}
        for name in names:
            if name in why:
                msg = f"{name} cannot be set here: {why[name] or 'unavailable'}"
                if "--no-clock-control" in why[name]:
                    return BadInputError(msg)
                return PermissionDeniedError(msg) if "root" in why[name] else UnsupportedError(msg)
        return None

    def apply(self, config: Mapping[str, Value]) -> None:
        """Validate ``config`` whole, then set the hardware knobs, then the software ones. Raises
        BadInputError (nothing written) or DeviceError (what this apply wrote is rolled back; also when the
        device is closed: nothing is written, as nobody would put it back)."""
        if self.closed:
            raise DeviceError(f"{self.name} is closed (its settings were restored); open the device again")
        if self.control is None or self.control.whole_configs:
            space = self.space()
            err = self.unavailable_knob_error(n for n in config if n not in space.names)
            if err is not None:
                raise err
            cfg = space.normalize(config)
            if self.control is not None:
                hardware = {k.name for k in self.control.knobs()}
                self.control.apply({k: v for k, v in cfg.items() if k in hardware})
            if self.measurer is not None:
                self.measurer.set_config(cfg)
            return
        software = self.measurer.space().knobs if self.measurer is not None else ()
        soft = {k.name: k.parse(config[k.name]) for k in software if k.name in config}  # before any write
        self.control.apply({k: v for k, v in config.items() if k not in soft})
        if soft and self.measurer is not None:
            self.measurer.set_config(soft)

    def apply_part(self, config: Mapping[str, Value | str]) -> None:
        """Set the knobs ``config`` names and leave every other knob as it is, unwritten (``polythrottle
        apply``): a whole config goes to ``apply``; a part, on a control that takes whole configs, is checked
        against the whole space (its values steps, some valid config agreeing with it) before any write."""
        if self.control is None or not self.control.whole_configs or set(self.space().names) <= set(config):
            self.apply(config)
            return
        if self.closed:
            raise DeviceError(f"{self.name} is closed (its settings were restored); open the device again")
        space = self.space()
        err = self.unavailable_knob_error(n for n in config if n not in space.names)
        if err is not None:
            raise err
        part = space.normalize_part(config)
        hardware = {k.name for k in self.control.knobs()}
        self.control.apply({k: v for k, v in part.items() if k in hardware})
        soft = {k: v for k, v in part.items() if k not in hardware}
        if soft and self.measurer is not None:
            self.measurer.set_config(soft)

    def measure(self) -> Measurement:
        """Measure inference under the currently applied config."""
        if self.measurer is None:
            raise BadInputError(f"the {self._identity.kind} device measures a workload: give one "
                                f"({every_face('workload')}), e.g. torchvision:resnet50, builtin:mlp, "
                                "mymodule:make_workload")
        return self.measurer.measure()

    def restore(self) -> None:
        """Put back every hardware value this process changed (and did not keep)."""
        if self.control is not None:
            self.control.restore()

    def keep(self) -> None:
        """Leave the applied settings, and those a later ``apply`` sets, in place on close (``apply``
        calls it first, ``tune --apply`` once the result is saved); the saved originals stay for
        ``restore_saved``. An apply that fails or is interrupted is still rolled back."""
        if self.control is not None:
            self.control.keep()

    def restore_saved(self) -> list[str]:
        """Put back every original value saved in the state directory, also those left by a process
        that crashed, and forget them. Returns the settings restored."""
        return self.control.restore_saved() if self.control is not None else []

    @property
    def hardware_knobs(self) -> list[str]:
        """The names ``apply`` takes as hardware settings (empty without a control)."""
        return self.control.hardware_knobs if self.control is not None else []

    @property
    def last_writes(self) -> list[Write]:
        """What the last ``apply`` wrote to the hardware, in order."""
        return self.control.last_writes if self.control is not None else []

    def originals_location(self) -> OriginalsLocation | None:
        """Where the saved originals of this device are kept (None: it changes no hardware)."""
        return self.control.originals_location() if self.control is not None else None

    def current(self) -> dict[str, float]:
        """The hardware's values now, as it reports them."""
        return self.control.current() if self.control is not None else {}

    def info(self) -> DeviceInfo:
        """What the device is and offers: its details, every knob (settable here or not, and why not) and
        its meters, for ``polythrottle devices`` and a tune's result."""
        details = self.control.details() if self.control is not None else {}
        knobs = self.control.statuses() if self.control is not None else []
        if self.measurer is not None:
            details.update(self.measurer.details())
            knobs += self.measurer.statuses()
        return DeviceInfo(name=self.name, kind=self._identity.kind, details=details, knobs=knobs,
                          touches_hardware=self.control is not None and self.control.touches_hardware,
                          meters=self.meters() if self.meters is not None else [])

    def close(self) -> None:
        """Restore, then free the measurer and the control. A closed device refuses ``apply``."""
        self.closed = True
        try:
            self.restore()
        finally:
            try:
                if self.measurer is not None:
                    self.measurer.close()
            finally:
                if self.control is not None:
                    self.control.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["Control", "Device", "DeviceInfo", "Measurer", "joined"]
