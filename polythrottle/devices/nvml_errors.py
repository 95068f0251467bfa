"""NVML errors as typed exceptions, mapped in one place (as Zeus maps NVML return codes in one decorator).

``@nvml_errors("setting {0}={1}")`` on a method turns an ``NVMLError`` it raises into the typed error of
its return code: NoPermission -> PermissionDeniedError (exit 4), NotSupported/FunctionNotFound ->
UnsupportedError (exit 5), anything else -> DeviceError (exit 1), naming what was being done. The NVML
error stays the ``__cause__`` (``nvml_cause`` gives the driver's own words).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import pynvml

from polythrottle.energy.nvml import nvml_reason
from polythrottle.errors import DeviceError, PermissionDeniedError, UnsupportedError

F = TypeVar("F", bound=Callable[..., Any])


def nvml_error(what: str, e: Exception) -> DeviceError:
    """The typed error for NVML error ``e`` while doing ``what`` (``e`` is its ``__cause__``)."""
    if isinstance(e, pynvml.NVMLError_NoPermission):
        err: DeviceError = PermissionDeniedError(f"{what}: NVML says {nvml_reason(e)} (setting clocks needs root)")
    elif isinstance(e, (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound)):
        err = UnsupportedError(f"{what}: not supported by this GPU/driver")
    else:
        err = DeviceError(f"{what}: NVML error {nvml_reason(e)}")
    err.__cause__ = e
    return err


def nvml_errors(what: str) -> Callable[[F], F]:
    """Decorator for methods: an NVMLError becomes ``nvml_error(what formatted with the method's arguments)``."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def call(self: Any, *args: Any) -> Any:
            try:
                return fn(self, *args)
            except pynvml.NVMLError as e:
                raise nvml_error(what.format(*args), e) from e

        return call  # type: ignore[return-value]

    return wrap


def nvml_cause(e: BaseException) -> str:
    """The driver's own words for a mapped NVML error ("Not Supported", ...), else the error's message."""
    return nvml_reason(e.__cause__) if isinstance(e.__cause__, pynvml.NVMLError) else str(e)


def nvml_list(fn: Callable[..., Any], *args: Any) -> list[Any]:
    """``fn(*args)`` as a list; empty when NVML cannot say (a GPU that lists no clocks offers no clock knob)."""
    try:
        return list(fn(*args))
    except pynvml.NVMLError:
        return []
