"""Device layer: a device is hardware control plus measurement (``base``). Knows nothing of the optimizer."""

from polythrottle.devices.base import Control, Device, DeviceInfo, Measurer
from polythrottle.devices.registry import DeviceOptions, open_device

__all__ = ["Control", "Device", "DeviceInfo", "DeviceOptions", "Measurer", "open_device"]
