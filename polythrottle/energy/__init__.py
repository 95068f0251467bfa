"""Energy meters: read energy over a window from a hardware source (NVML counter, RAPL, INA3221...)."""

from polythrottle.energy.base import EnergyMeter, EnergyWindow

__all__ = ["EnergyMeter", "EnergyWindow"]
