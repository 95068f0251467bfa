"""Typed exceptions. Every error a user can cause maps to one clear line and an exit code.

A tune that finds no config meeting the SLO is a result, not an error: ``TuneResult.best`` is None (the API
returns it, the daemon reports it) and ``polythrottle tune`` exits 3 (README "Exit codes")."""

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


SHOWN_CHARS = 60
"""Characters of an offending value a validation message shows at most."""


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (``...`` marks the cut): a value in a validation message
    (spec fields, board profiles), never printed whole."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def brief(value: object, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters: for messages that must stay one short
    line whatever a file or a client sent (a huge or deeply nested value is never printed whole)."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = r.maxlong = max(limit, 10)
    r.maxlevel = 3
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 6
    try:
        text = r.repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails must not turn a refusal into a traceback
        text = f"<{type(value).__name__}>"
    return clip(text, limit)


def every_face(name: str) -> str:
    """How each face sets the option ``name``, for a message of a layer any face reaches (a device, a loader):
    ``--workload, workload: in a daemon config, or workload= in Python``."""
    return f"--{name.replace('_', '-')}, {name}: in a daemon config, or {name}= in Python"


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a library said,
    without the stack of context lines some of them add."""
    text = str(e).strip().splitlines()
    return text[0].strip() if text else type(e).__name__


def clip(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs become one space), cut to ``limit`` characters."""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: max(limit - 3, 1)] + "..."


class DeviceBusyError(DeviceError):
    """Another live process is changing the same device's settings (a tune, the daemon). Exit 1."""
