"""Typed exceptions. Every error a user can cause maps to one clear line and an exit code."""

from __future__ import annotations


class PolyThrottleError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with when this reaches it."""

    exit_code: int = 1


class BadInputError(PolyThrottleError):
    """Malformed or impossible input (file, knob, value, SLO, budget). Exit 2."""

    exit_code = 2


class UnknownKnobError(BadInputError):
    """A knob name the device or space does not offer."""


class InvalidValueError(BadInputError):
    """A value that is not one of a knob's steps."""


class ProfileError(BadInputError):
    """A device profile that is missing, malformed or fails validation."""


class DeviceError(PolyThrottleError):
    """A device could not be opened, set or read."""


class PermissionDeniedError(DeviceError):
    """The OS refused a write or read (typically: not root). Exit 4."""

    exit_code = 4


class UnsupportedError(DeviceError):
    """The hardware or driver does not support a knob or sensor. Exit 5."""

    exit_code = 5


class DeviceNotFoundError(UnsupportedError):
    """No such device on this machine (no Jetson board, no NVIDIA GPU at that index). Exit 5."""


class MissingDependencyError(PolyThrottleError):
    """An optional dependency (an extra, e.g. ``polythrottle[plot]``) is not installed. Exit 5."""

    exit_code = 5


class NoFeasibleConfigError(PolyThrottleError):
    """No measured configuration met the latency SLO. Exit 3."""

    exit_code = 3
