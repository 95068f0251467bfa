"""The twin's declared parameters: a board's sim block and the workloads; bad ones fail in one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polythrottle.boards.profiles import PROFILE_DIR, list_profiles, load_profile
from polythrottle.devices.sim import SimDevice
from polythrottle.errors import ProfileError
from polythrottle.twin.params import board_from_profile, generic_workloads, with_params
from polythrottle.twin.workloads import GENERIC_WORKLOADS


def _bad_profile(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((PROFILE_DIR / "jetson-tx2.yaml").read_text())
    data["name"] = "bad"
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _error(tmp_path: Path, mutate) -> str:
    path = _bad_profile(tmp_path, mutate)
    with pytest.raises(ProfileError) as e:
        board_from_profile(load_profile(path))
    msg = str(e.value)
    assert msg.startswith(f"profile {path}: field ") and "\n" not in msg
    return msg


@pytest.mark.parametrize("name", list_profiles())
def test_every_board_has_valid_params(name):
    board = board_from_profile(load_profile(name))
    assert board.name == name and set(GENERIC_WORKLOADS) <= set(board.workloads)
    assert all(w.name == key for key, w in board.workloads.items())
    assert set(board.cpu_steps) <= set(load_profile(name).steps("cpu_mhz"))
    assert all(type(s) is float for s in board.cpu_steps + board.gpu_steps + board.emc_steps)
    assert 0 < board.target_util <= 1 and board.gpu.v_min <= board.gpu.v_max


def test_generic_workloads_are_valid():
    wls = generic_workloads()
    assert set(wls) == set(GENERIC_WORKLOADS)
    assert wls["resnet50"].name == "resnet50" and wls["resnet50"].gflop == GENERIC_WORKLOADS["resnet50"]["gflop"]


def test_a_board_overrides_only_the_fields_it_names(tmp_path):
    path = _bad_profile(tmp_path, lambda d: d["sim"].__setitem__("workloads", {"resnet50": {"pre_ms": 9.5}}))
    wl = board_from_profile(load_profile(path)).workloads["resnet50"]
    assert wl.pre_ms == 9.5 and wl.gflop == GENERIC_WORKLOADS["resnet50"]["gflop"]


def test_bad_sim_block_names_file_and_field(tmp_path):
    path = _bad_profile(tmp_path, lambda d: d["sim"]["gpu"].__setitem__("dyn_w", "lots"))
    with pytest.raises(ProfileError, match=r"bad\.yaml: field sim\.gpu\.dyn_w: expected a number"):
        SimDevice(str(path), "bert-base")
    path = _bad_profile(tmp_path, lambda d: d["sim"]["cpu_mhz"].append(9999.0))
    with pytest.raises(ProfileError, match=r"field sim\.cpu_mhz: 9999 MHz is not one of knobs\.cpu_mhz\.steps"):
        SimDevice(str(path), "bert-base")
    path = _bad_profile(tmp_path, lambda d: d["sim"].__setitem__("workloads", {"x": {"gflop": 1}}))
    with pytest.raises(ProfileError, match=r"field sim\.workloads\.x\.\w+: missing"):
        SimDevice(str(path), "bert-base")


def test_value_rules(tmp_path):
    assert _error(tmp_path, lambda d: d["sim"]["gpu"].__setitem__("v_knee_mhz", -5)).endswith(
        "field sim.gpu.v_knee_mhz: must be positive, got -5")
    assert _error(tmp_path, lambda d: d["sim"]["gpu"].__setitem__("v_knee_mhz", 0)).endswith(
        "field sim.gpu.v_knee_mhz: must be positive, got 0")
    assert _error(tmp_path, lambda d: d["sim"].__setitem__("static_w", -1)).endswith("field sim.static_w: must be >= 0, got -1")
    assert _error(tmp_path, lambda d: d["sim"]["gpu"].__setitem__("idle_frac", 1.5)).endswith(
        "field sim.gpu.idle_frac: must be <= 1, got 1.5")
    assert _error(tmp_path, lambda d: d["sim"]["gpu"].update(v_min=2.0, v_max=1.1)).endswith(
        "field sim.gpu.v_min: v_min 2 is above v_max 1.1")
    assert _error(tmp_path, lambda d: d["sim"]["cpu"].__setitem__("cores", 0)).endswith("field sim.cpu.cores: must be >= 1, got 0")
    assert _error(tmp_path, lambda d: d["sim"]["governor"].__setitem__("target_util", 0)).endswith(
        "field sim.governor.target_util: must be in (0, 1], got 0")
    assert _error(tmp_path, lambda d: d["sim"].__setitem__("batch_sizes", [4, 2])).endswith(
        "field sim.batch_sizes: expected ascending, unique, positive integers")
    assert _error(tmp_path, lambda d: d["sim"].__setitem__("precisions", ["fp16", "int4"])).endswith(
        "field sim.precisions: expected unique values from: fp16, fp32, native")
    assert _error(tmp_path, lambda d: d["sim"]["cpu_mhz"].reverse()).endswith("field sim.cpu_mhz: expected ascending, unique steps")
    msg = _error(tmp_path, lambda d: d["sim"].__setitem__("workloads", {"resnet50": {"compute_eff": 1.2}}))
    assert msg.endswith("field sim.workloads.resnet50.compute_eff: must be <= 1, got 1.2")
    msg = _error(tmp_path, lambda d: d["sim"].__setitem__("workloads", {"resnet50": {"tensor_cores": "yes"}}))
    assert msg.endswith("field sim.workloads.resnet50.tensor_cores: expected true or false, got 'yes'")


def test_unknown_and_missing_fields(tmp_path):
    msg = _error(tmp_path, lambda d: d["sim"]["gpu"].__setitem__("boost_w", 3))
    assert "field sim.gpu.boost_w: unknown field; expected one of: dyn_w, fp16_speedup," in msg
    msg = _error(tmp_path, lambda d: d["sim"].__setitem__("fan_w", 1))
    assert "field sim.fan_w: unknown field; expected one of: batch_sizes, cpu, cpu_mhz, emc, governor," in msg
    msg = _error(tmp_path, lambda d: d["sim"].__setitem__("workloads", {"resnet50": {"name": "other"}}))
    assert "field sim.workloads.resnet50.name: unknown field" in msg
    assert _error(tmp_path, lambda d: d["sim"]["emc"].pop("bus_bytes")).endswith("field sim.emc.bus_bytes: missing")
    assert _error(tmp_path, lambda d: d["sim"].pop("governor")).endswith("field sim.governor: missing")


def test_wrong_types_and_huge_values(tmp_path):
    assert _error(tmp_path, lambda d: d["sim"].__setitem__("gpu", [1, 2])).endswith("field sim.gpu: expected a mapping, got list")
    assert _error(tmp_path, lambda d: d["sim"]["cpu"].__setitem__("cores", 4.0)).endswith(
        "field sim.cpu.cores: expected an integer, got 4.0")
    msg = _error(tmp_path, lambda d: d["sim"]["gpu"].__setitem__("dyn_w", "w" * 5000))
    assert "field sim.gpu.dyn_w: expected a number, got 'www" in msg and msg.endswith("...") and len(msg) < 200 + len(str(tmp_path))


def test_with_params_overrides_a_copy():
    board = board_from_profile(load_profile("jetson-agx-xavier"))
    b = with_params(board, {"static_w": 4.0, "gpu.dyn_w": 20.0, "workloads.triton-loudva.gflop": 3.0})
    assert (b.static_w, b.gpu.dyn_w, b.workloads["triton-loudva"].gflop) == (4.0, 20.0, 3.0)
    assert board.gpu.dyn_w != 20.0 and b.gpu.leak_w == board.gpu.leak_w
