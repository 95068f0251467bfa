"""Serialized, cancellable access to the daemon's device.

Every device call of the daemon (the tuner's applies and measurements, the serving loop's
measurements, restores) goes through one ``LockedDevice``: a lock serializes them, and once
``cancel`` is set (stop, reload) ``apply``/``measure`` raise ``Cancelled`` before touching the
device, so a tune in progress ends at its next device call. ``restore`` is never refused.
``cancel`` events: any of them set cancels (the daemon passes its stop and its cancel-the-job events).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from polythrottle.clocks.base import Write
from polythrottle.devices.base import Device, DeviceInfo
from polythrottle.devices.originals import OriginalsLocation
from polythrottle.identity import DeviceIdentity
from polythrottle.measure.measurement import Measurement
from polythrottle.space import Config, SearchSpace, Value


class Cancelled(Exception):
    """A device call was refused because the daemon is stopping or reloading."""


class LockedDevice(Device):
    """Wraps ``device``; see the module docstring. ``applied`` is the config last applied (None: the
    device's own settings). Every method of ``Device`` is delegated to ``device`` (under the lock where
    it changes the hardware or runs the workload)."""

    def __init__(self, device: Device, *cancel: threading.Event) -> None:
        super().__init__(device.identity(), name=device.name, control=device.control, measurer=device.measurer,
                         meters=device.meters)
        self.device = device
        self.cancel = cancel
        self.lock = threading.RLock()
        self.applied: Config | None = None
        self.closed = False

    def _check(self) -> None:
        if self.closed or any(e.is_set() for e in self.cancel):
            raise Cancelled()

    def identity(self) -> DeviceIdentity:
        return self.device.identity()

    @property
    def workload_name(self) -> str:
        return self.device.workload_name

    def space(self) -> SearchSpace:
        return self.device.space()

    def default_config(self) -> Config:
        return self.device.default_config()

    def apply(self, config: Mapping[str, Value]) -> None:
        with self.lock:
            self._check()
            self.device.apply(config)
            self.applied = dict(config)

    def measure(self) -> Measurement:
        with self.lock:
            self._check()
            return self.device.measure()

    def restore(self) -> None:
        with self.lock:
            self.applied = None
            if not self.closed:
                self.device.restore()

    def restore_saved(self) -> list[str]:
        with self.lock:
            return list(self.device.restore_saved())

    def keep(self) -> None:
        with self.lock:
            self.device.keep()

    @property
    def hardware_knobs(self) -> list[str]:
        return self.device.hardware_knobs

    @property
    def last_writes(self) -> list[Write]:
        return self.device.last_writes

    def originals_location(self) -> OriginalsLocation | None:
        return self.device.originals_location()

    def current(self) -> dict[str, float]:
        return self.device.current()

    def info(self) -> DeviceInfo:
        return self.device.info()

    def close(self) -> None:
        """Restore and close the device (once; later calls do nothing)."""
        with self.lock:
            self.applied = None
            if not self.closed:
                self.closed = True
                self.device.close()


__all__ = ["Cancelled", "LockedDevice"]
