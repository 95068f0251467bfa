"""A message of a layer every face reaches (a device, the workload loader) about the workload names how
each face sets it: ``--workload`` (CLI), ``workload:`` (daemon config), ``workload=`` (Python), not the
CLI flag alone (as the sim device's "needs a workload" does)."""

from __future__ import annotations

import pynvml
import pytest

import polythrottle as pt
from polythrottle.devices import DeviceOptions, open_device
from polythrottle.devices.nvml import open_device as open_nvml
from polythrottle.errors import BadInputError
from polythrottle.workloads import load_workload
from tests.fake_nvml import FakeGpu

FACES = ("--workload", "workload: in a daemon config", "workload= in Python")


def names_every_face(e: pytest.ExceptionInfo) -> bool:
    text = str(e.value)
    return all(f in text for f in FACES) and "\n" not in text


def test_a_replay_device_refuses_a_workload_in_every_face_s_terms(small_table):
    with pytest.raises(BadInputError, match="does not apply") as e:
        open_device(f"replay:{small_table}", DeviceOptions(workload="builtin:mlp"))
    assert names_every_face(e)
    with pytest.raises(BadInputError, match="does not apply") as e:
        pt.open_device(f"replay:{small_table}", workload="builtin:mlp")
    assert names_every_face(e)


def test_the_workload_loader_names_every_face():
    with pytest.raises(BadInputError, match="expected builtin:NAME") as e:
        load_workload("resnet50")
    assert names_every_face(e) and "'resnet50'" in str(e.value)


def test_an_nvml_gpu_without_a_workload_says_how_to_give_one(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(tmp_path))
    refuse = {n: pynvml.NVMLError_NoPermission for n in
              ("nvmlDeviceSetGpuLockedClocks", "nvmlDeviceSetMemoryLockedClocks", "nvmlDeviceSetPowerManagementLimit")}
    FakeGpu(refuse=refuse).install(monkeypatch.setattr)
    dev = open_nvml("0", DeviceOptions(state_dir=tmp_path / "state"), torch_device="cpu")
    try:
        with pytest.raises(BadInputError, match="offers no knob to set .*for software knobs") as e:
            dev.space()
        assert names_every_face(e)
        with pytest.raises(BadInputError, match="the nvml device measures a workload") as e:
            dev.measure()
        assert names_every_face(e)
    finally:
        dev.close()
