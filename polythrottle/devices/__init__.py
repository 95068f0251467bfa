"""Device layer: set knobs, measure energy and latency, restore. Knows nothing of the optimizer."""

from polythrottle.devices.base import Device, DeviceInfo, KnobStatus
from polythrottle.devices.registry import DeviceOptions, open_device

__all__ = ["Device", "DeviceInfo", "DeviceOptions", "KnobStatus", "open_device"]
