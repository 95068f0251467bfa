"""A fake GPU behind the real ``pynvml`` module's API: every NVML function the code uses is replaced
on the module object (the library boundary); the error classes are the real ones.

Every setter/reset call is recorded in ``FakeGpu.calls`` (and appended to ``log_path`` if given, one
JSON line per call, for subprocess tests, along with the first energy-counter read). ``refuse`` maps a function name to the NVMLError subclass
it raises. ``forbid_writes=True`` makes every nvmlDeviceSet*/Reset*/Clear* function of the module
raise AssertionError (after recording the attempt).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pynvml

MEM_CLOCKS = [2619, 1593]
GPU_CLOCKS = {2619: list(range(345, 1981, 15)), 1593: list(range(345, 1606, 15))}
WRITE_PREFIXES = ("nvmlDeviceSet", "nvmlDeviceReset", "nvmlDeviceClear", "nvmlSystemSet", "nvmlUnitSet")


class FakeField:
    def __init__(self, watts: float) -> None:
        self.nvmlReturn = pynvml.NVML_SUCCESS
        self.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
        self.value = type("V", (), {"uiVal": int(watts * 1000), "dVal": watts * 1000})()


class FakeGpu:
    def __init__(
        self,
        *,
        power_w: float = 100.0,
        refuse: dict[str, type[Exception]] | None = None,
        forbid_writes: bool = False,
        log_path: Path | None = None,
        counter_step_s: float = 0.0,
        energy_counter: bool = True,
        power_limit_mw: int = 700_000,
    ) -> None:
        self.power_w = power_w
        self.refuse = refuse or {}
        self.forbid_writes = forbid_writes
        self.log_path = log_path
        self.counter_step_s = counter_step_s
        self.energy_counter = energy_counter
        self.power_limit_mw = power_limit_mw
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.t0 = time.perf_counter()
        self.offset_mj = 5_000_000
        self.locked_gpu: tuple[int, int] | None = None
        self.locked_mem: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._energy_logged = False

    # ----- recording ----------------------------------------------------------------------------
    def _record(self, name: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self.calls.append((name, args))
            if self.log_path is not None:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps([name, list(args)]) + "\n")
                    f.flush()
        if self.forbid_writes:
            raise AssertionError(f"hardware write attempted: {name}{args}")
        if name in self.refuse:
            raise self.refuse[name]()

    def setter_calls(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [c for c in self.calls if c[0].startswith(WRITE_PREFIXES)]

    # ----- readings -----------------------------------------------------------------------------
    def energy_mj(self) -> int:
        t = time.perf_counter() - self.t0
        if self.counter_step_s:
            t = (t // self.counter_step_s) * self.counter_step_s
        return self.offset_mj + int(t * self.power_w * 1000)

    # ----- install ------------------------------------------------------------------------------
    def install(self, setattr_fn: Any = None) -> None:
        """Replace pynvml's functions (``setattr_fn``: e.g. pytest's monkeypatch.setattr)."""
        put = setattr_fn or (lambda obj, name, value: setattr(obj, name, value))
        gpu = self
        handle = object()

        def setter(name: str, effect: Any = None) -> Any:
            def fn(*args: Any) -> None:
                gpu._record(name, args[1:])
                if effect is not None:
                    effect(*args[1:])
            return fn

        if self.forbid_writes:
            for name in dir(pynvml):
                if name.startswith(WRITE_PREFIXES) and callable(getattr(pynvml, name)):
                    put(pynvml, name, setter(name))

        def energy(h: Any) -> int:
            if not gpu.energy_counter:
                raise pynvml.NVMLError_NotSupported()
            if gpu.log_path is not None and not gpu._energy_logged:  # the first read: the device is open
                gpu._energy_logged = True
                with open(gpu.log_path, "a") as f:
                    f.write(json.dumps(["nvmlDeviceGetTotalEnergyConsumption", []]) + "\n")
            return gpu.energy_mj()

        def set_gpu(lo: int, hi: int) -> None:
            gpu.locked_gpu = (lo, hi)

        def set_mem(lo: int, hi: int) -> None:
            gpu.locked_mem = (lo, hi)

        def set_power(mw: int) -> None:
            gpu.power_limit_mw = mw

        funcs = {
            "nvmlInit": lambda: None,
            "nvmlShutdown": lambda: None,
            "nvmlDeviceGetCount": lambda: 1,
            "nvmlDeviceGetHandleByIndex": lambda i: handle,
            "nvmlDeviceGetName": lambda h: "Fake H100",
            "nvmlDeviceGetUUID": lambda h: "GPU-00000000-1111-2222-3333-444444444444",
            "nvmlSystemGetDriverVersion": lambda: "580.00",
            "nvmlDeviceGetSupportedMemoryClocks": lambda h: list(MEM_CLOCKS),
            "nvmlDeviceGetSupportedGraphicsClocks": lambda h, m: list(reversed(GPU_CLOCKS[m])),
            "nvmlDeviceGetTotalEnergyConsumption": energy,
            "nvmlDeviceGetPowerUsage": lambda h: int(gpu.power_w * 1000),
            "nvmlDeviceGetFieldValues": lambda h, ids: [FakeField(gpu.power_w) for _ in ids],
            "nvmlDeviceGetPowerManagementLimit": lambda h: gpu.power_limit_mw,
            "nvmlDeviceGetPowerManagementLimitConstraints": lambda h: (200_000, 700_000),
            "nvmlDeviceGetClockInfo": lambda h, t: 1980,
            "nvmlDeviceGetTemperature": lambda h, t: 40,
            "nvmlDeviceSetGpuLockedClocks": setter("nvmlDeviceSetGpuLockedClocks", set_gpu),
            "nvmlDeviceResetGpuLockedClocks": setter("nvmlDeviceResetGpuLockedClocks",
                                                     lambda: setattr(gpu, "locked_gpu", None)),
            "nvmlDeviceSetMemoryLockedClocks": setter("nvmlDeviceSetMemoryLockedClocks", set_mem),
            "nvmlDeviceResetMemoryLockedClocks": setter("nvmlDeviceResetMemoryLockedClocks",
                                                        lambda: setattr(gpu, "locked_mem", None)),
            "nvmlDeviceSetPowerManagementLimit": setter("nvmlDeviceSetPowerManagementLimit", set_power),
        }
        for name, fn in funcs.items():
            if self.forbid_writes and name.startswith(WRITE_PREFIXES):
                continue
            put(pynvml, name, fn)
