"""The measurement harness (fake clock, fake meter, and the built-in CPU models) and the workloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polythrottle.energy.base import CounterResetError, EnergyMeter, EnergyWindow
from polythrottle.errors import BadInputError, UnsupportedError
from polythrottle.measure.harness import HarnessSettings, measure
from polythrottle.workloads import load_workload
from polythrottle.workloads.runner import LiveWorkload, TorchRunner, software_knobs

torch.set_num_threads(1)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ScriptedWorkload:
    """Each batch takes the next latency of ``latencies_s`` (cycled) on the fake clock."""

    def __init__(self, clock: Clock, latencies_s: list[float], batch_size: int = 4) -> None:
        self.clock, self.lat, self.batch_size = clock, latencies_s, batch_size
        self.batches = self.syncs = 0

    def run_batch(self) -> None:
        self.clock.t += self.lat[self.batches % len(self.lat)]
        self.batches += 1

    def synchronize(self) -> None:
        self.syncs += 1


class PowerMeter(EnergyMeter):
    """Energy = power x fake-clock time; ``reset_windows``: windows that raise CounterResetError."""

    name = "fake"

    def __init__(self, clock: Clock, power_w: float, reset_windows: set[int] = frozenset()) -> None:
        self.clock, self.power_w, self.reset_windows = clock, power_w, set(reset_windows)
        self.begins = 0

    def begin(self) -> None:
        self.begins += 1
        self.t0 = self.clock()

    def end(self) -> EnergyWindow:
        if self.begins in self.reset_windows:
            raise CounterResetError("counter went backwards")
        d = self.clock() - self.t0
        return EnergyWindow(self.power_w * d, d, 2)


def test_energy_per_inference_latency_percentile_and_windows():
    clock = Clock()
    lat = [0.010] * 99 + [0.050]  # one slow batch in a hundred
    wl = ScriptedWorkload(clock, lat, batch_size=4)
    meter = PowerMeter(clock, power_w=200.0)
    s = HarnessSettings(window_s=1.0, warmup_s=0.0, warmup_batches=7, repeats=3, percentile=50)
    m = measure(wl, meter, s, clock=clock)
    assert meter.begins == 3  # warm-up is not metered
    assert m.extra["windows"] == 3 and m.extra["batch_size"] == 4
    # 200 W, each inference 1/4 of a ~10 ms batch -> ~0.5 J; the slow batches raise the mean a bit
    assert m.energy_j == pytest.approx(200.0 * np.mean(lat) / 4, rel=0.05)
    assert m.latency_ms == pytest.approx(10.0)  # p50
    assert m.power_w == pytest.approx(200.0)
    assert m.throughput_ips == pytest.approx(4 / np.mean(lat), rel=0.05)
    assert wl.syncs >= wl.batches  # every batch is synchronised before its latency is taken


def test_high_percentile_sees_the_tail_and_spread_is_reported():
    clock = Clock()
    wl = ScriptedWorkload(clock, [0.010] * 49 + [0.040])
    s = HarnessSettings(window_s=2.0, warmup_s=0.0, warmup_batches=0, repeats=4, percentile=99)
    m = measure(wl, PowerMeter(clock, 100.0), s, clock=clock)
    assert m.latency_ms > 30.0  # p99 lands on the slow batches
    assert m.extra["latency_p50_ms"] == pytest.approx(10.0)
    assert m.energy_rel_std is not None and m.energy_rel_std < 0.05
    per_window = np.array(m.extra["energy_per_window_j"])
    assert len(per_window) == 4
    assert m.energy_rel_std == pytest.approx(per_window.std(ddof=1) / per_window.mean() / 2, rel=1e-6)


def test_window_has_min_batches_even_when_batches_are_slow():
    clock = Clock()
    wl = ScriptedWorkload(clock, [1.0])
    s = HarnessSettings(window_s=0.1, warmup_s=0.0, warmup_batches=0, repeats=1, min_batches=5)
    m = measure(wl, PowerMeter(clock, 100.0), s, clock=clock)
    assert m.extra["batches"] == 5
    assert m.energy_rel_std is None  # one window: no spread


def test_counter_reset_window_is_retried_then_gives_up():
    clock = Clock()
    s = HarnessSettings(window_s=0.1, warmup_s=0.0, warmup_batches=0, repeats=2, max_window_retries=2)
    m = measure(ScriptedWorkload(clock, [0.01]), PowerMeter(clock, 100.0, reset_windows={2}), s, clock=clock)
    assert m.extra["windows"] == 2 and m.extra["counter_resets"] == 1
    with pytest.raises(CounterResetError):
        measure(ScriptedWorkload(clock, [0.01]), PowerMeter(clock, 100.0, reset_windows={1, 2, 3}), s, clock=clock)


@pytest.mark.parametrize("kwargs", [{"window_s": 0}, {"repeats": 0}, {"percentile": 0}, {"percentile": 101},
                                    {"min_batches": 0}])
def test_bad_settings(kwargs):
    with pytest.raises(BadInputError):
        HarnessSettings(**kwargs)


def test_builtin_cpu_model_end_to_end_with_a_fake_meter():
    import time

    live = LiveWorkload(load_workload("builtin:tiny-cnn"), "cpu")
    runner = live.set_config({"batch_size": 4, "precision": "bf16", "channels_last": "on"})
    meter = PowerMeter(time.perf_counter, 50.0)  # type: ignore[arg-type]
    m = measure(runner, meter, HarnessSettings(window_s=0.05, warmup_s=0.0, warmup_batches=1, repeats=2))
    assert m.energy_j > 0 and m.latency_ms > 0 and m.extra["batch_size"] == 4
    assert live.set_config({"batch_size": 4, "precision": "bf16", "channels_last": "on"}) is runner  # reused
    assert live.set_config({"batch_size": 1, "precision": "fp32", "channels_last": "off"}) is not runner
    live.close()


# ----- workloads -----------------------------------------------------------------------------------
def test_software_knobs_on_cpu():
    knobs, status = software_knobs(load_workload("builtin:tiny-cnn"), torch.device("cpu"))
    names = {k.name: k.values for k in knobs}
    assert names == {"batch_size": (1, 4, 16), "precision": ("fp32", "bf16"), "channels_last": ("off", "on")}
    why = {s.name: s.reason for s in status if not s.available}
    assert "cuda_graphs" in why and "CUDA" in why["cuda_graphs"]
    knobs, status = software_knobs(load_workload("builtin:mlp"), torch.device("cpu"))
    assert "channels_last" not in {k.name for k in knobs}
    assert "4-D" in {s.name: s.reason for s in status}["channels_last"]


def test_runner_refuses_what_the_device_cannot_do():
    spec = load_workload("builtin:mlp")
    with pytest.raises(BadInputError, match="cuda_graphs"):
        TorchRunner(spec, {"batch_size": 1, "cuda_graphs": "on"}, "cpu")
    with pytest.raises(BadInputError, match="precision"):
        TorchRunner(spec, {"batch_size": 1, "precision": "int3"}, "cpu")


WORKLOAD_FILE = '''
import torch
from polythrottle.workloads.base import WorkloadSpec

def as_tuple():
    return torch.nn.Linear(8, 2), lambda n: torch.randn(n, 8)

def as_dict():
    return {"model": torch.nn.Linear(8, 2), "make_input": lambda n: torch.randn(n, 8), "batch_sizes": [2, 1]}

def as_spec():
    return WorkloadSpec("mine", torch.nn.Linear(8, 2), lambda n: torch.randn(n, 8), batch_sizes=(3,))

def wrong():
    return 42
'''


def test_module_function_workloads(tmp_path, monkeypatch):
    path = tmp_path / "my_workload.py"
    path.write_text(WORKLOAD_FILE)
    assert load_workload(f"{path}:as_tuple").batch_sizes[0] == 1
    assert load_workload(f"{path}:as_dict").batch_sizes == (1, 2)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = load_workload("my_workload:as_spec")
    assert spec.name == "mine" and spec.batch_sizes == (3,)
    r = TorchRunner(spec, {"batch_size": 3}, "cpu")
    r.run_batch()
    r.synchronize()
    with pytest.raises(BadInputError, match="returned int"):
        load_workload("my_workload:wrong")
    with pytest.raises(BadInputError, match="no function"):
        load_workload("my_workload:nope")


@pytest.mark.parametrize("spec,msg", [
    ("resnet50", "expected builtin:NAME"),
    ("builtin:nope", "unknown builtin"),
    ("no_such_module_xyz:f", "cannot import"),
    ("/nonexistent/w.py:f", "not found"),
])
def test_bad_workload_specs(spec, msg):
    with pytest.raises(BadInputError, match=msg):
        load_workload(spec)


def test_torchvision_missing_is_one_clear_error():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(UnsupportedError, match="needs torchvision"):
            load_workload("torchvision:resnet50")
    else:
        with pytest.raises(BadInputError, match="unknown torchvision model"):
            load_workload("torchvision:not_a_model")


def test_a_workload_file_that_cannot_be_read_is_one_line(tmp_path, monkeypatch):
    """It said 'error: PermissionError: [Errno 13] ...', exit 1 (emulated: tests may run as root)."""
    import errno
    import importlib.machinery
    import os

    path = tmp_path / "w.py"
    path.write_text("def f():\n    return None\n")
    real = importlib.machinery.SourceFileLoader.get_data

    def get_data(self, p):
        if os.fspath(p) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(p))
        return real(self, p)

    monkeypatch.setattr(importlib.machinery.SourceFileLoader, "get_data", get_data)
    with pytest.raises(BadInputError, match=f"cannot read {path} \\(Permission denied\\)") as e:
        load_workload(f"{path}:f")
    assert "\n" not in str(e.value)
