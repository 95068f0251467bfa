"""``polythrottle devices`` on a machine without a Jetson: NVML read-only view, mocked at the pynvml boundary."""

import json

import pynvml
import pytest

from polythrottle.cli import main


@pytest.fixture
def one_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYTHROTTLE_ROOT", "/")
    monkeypatch.setattr("polythrottle.boards.layout.MODEL_PATH", "/nonexistent/model")
    calls = []

    def not_supported(h):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    for name, fn in {
        "nvmlInit": lambda: calls.append("init"),
        "nvmlShutdown": lambda: calls.append("shutdown"),
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda i: f"h{i}",
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetTotalEnergyConsumption": lambda h: 123456,
        "nvmlDeviceGetPowerUsage": not_supported,
    }.items():
        monkeypatch.setattr(pynvml, name, fn)
    return calls


def test_devices_without_jetson_lists_the_gpu(one_gpu, capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "jetson: no Jetson found" in out
    assert "nvml:0: NVIDIA H100 80GB HBM3" in out
    assert "[yes] energy counter" in out and "[no ] power: NVML reports Not Supported" in out
    assert one_gpu == ["init", "shutdown"]  # read-only, and NVML is shut down again


def test_devices_lists_the_simulated_boards_and_their_workloads(one_gpu, capsys):
    from polythrottle.boards.profiles import list_profiles

    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "Simulated boards" in out
    for name in list_profiles():
        assert f"sim:{name}: " in out
    xavier = out.split("sim:jetson-agx-xavier: ")[1].splitlines()[1]
    assert xavier.strip().startswith("workloads:") and "triton-loudva" in xavier and "resnet50" in xavier
    assert "Try: polythrottle tune --device sim:" in out
    assert main(["devices", "--json"]) == 0
    sims = [d for d in json.loads(capsys.readouterr().out) if d["kind"] == "sim"]
    assert len(sims) == len(list_profiles()) and all(d["found"] and d["details"]["workloads"] for d in sims)
