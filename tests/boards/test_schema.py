"""The declared profile schema: a malformed profile fails in one line naming the file and the dotted field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polythrottle.boards.profiles import PROFILE_DIR, load_profile, parse_profile
from polythrottle.errors import ProfileError


def _write(tmp_path: Path, data, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return p


def _orin_data() -> dict:
    return yaml.safe_load((PROFILE_DIR / "jetson-agx-orin.yaml").read_text())


def _bad(tmp_path, mutate) -> str:
    data = _orin_data()
    data["name"] = "bad"
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_non_mapping(tmp_path):
    with pytest.raises(ProfileError, match="expected a mapping"):
        load_profile(_write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ProfileError, match=r"bad\.yaml: field <top>: expected a mapping, got str"):
        load_profile(_write(tmp_path, "just text\n"))


def test_missing_field(tmp_path):
    msg = _bad(tmp_path, lambda d: d.pop("models"))
    assert "field models: missing" in msg
    msg = _bad(tmp_path, lambda d: d["control"]["emc"].pop("unit"))
    assert "field control.emc.unit: missing" in msg


def test_null_counts_as_absent(tmp_path):
    assert "field soc: missing" in _bad(tmp_path, lambda d: d.__setitem__("soc", None))
    # an optional field left empty is fine
    data = _orin_data()
    data["unknown"] = None
    assert parse_profile(data, Path("jetson-agx-orin.yaml")).unknown == ()


def test_wrong_type(tmp_path):
    msg = _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"].__setitem__("steps", "fast"))
    assert "field knobs.gpu_mhz.steps" in msg and "expected a list" in msg
    msg = _bad(tmp_path, lambda d: d["knobs"]["emc_mhz"]["steps"].__setitem__(1, "x"))
    assert "field knobs.emc_mhz.steps[1]" in msg and "expected a number" in msg
    msg = _bad(tmp_path, lambda d: d["power"]["rails"][0].__setitem__("channel", 7))
    assert "field power.rails[0].channel" in msg


def test_wrong_scalar_types_are_not_coerced(tmp_path):
    assert _bad(tmp_path, lambda d: d.__setitem__("schema_version", "1")).endswith(
        "field schema_version: expected an integer, got '1'")
    assert _bad(tmp_path, lambda d: d.__setitem__("schema_version", 1.0)).endswith(
        "field schema_version: expected an integer, got 1.0")
    assert _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"]["steps"].__setitem__(0, True)).endswith(
        "field knobs.gpu_mhz.steps[0]: expected a number, got True")
    assert _bad(tmp_path, lambda d: d.__setitem__("soc", 234)).endswith("field soc: expected a non-empty string, got 234")
    assert _bad(tmp_path, lambda d: d.__setitem__("soc", "  ")).endswith("field soc: expected a non-empty string, got '  '")
    assert _bad(tmp_path, lambda d: d.__setitem__("power", [1])).endswith("field power: expected a mapping, got list")
    assert _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"]["steps"].__setitem__(0, float("inf"))).endswith(
        "field knobs.gpu_mhz.steps[0]: expected a number, got inf")


def test_unsorted_and_duplicate_steps(tmp_path):
    msg = _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"]["steps"].reverse())
    assert "field knobs.gpu_mhz.steps" in msg and "ascending" in msg
    msg = _bad(tmp_path, lambda d: d["knobs"]["cpu_mhz"]["steps"].insert(1, d["knobs"]["cpu_mhz"]["steps"][0]))
    assert "field knobs.cpu_mhz.steps" in msg and "duplicate" in msg


def test_step_messages(tmp_path):
    msg = _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"]["steps"].append(1236.75))
    assert msg.endswith("field knobs.gpu_mhz.steps: steps must be ascending (1300.5 before 1236.75)")
    assert _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"].__setitem__("steps", [])).endswith("steps: no steps")
    assert _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"]["steps"].__setitem__(0, 0)).endswith(
        "steps: steps must be positive")


def test_other_invalid_fields(tmp_path):
    assert "field name" in _bad(tmp_path, lambda d: d.__setitem__("name", "other"))
    assert "field colour" in _bad(tmp_path, lambda d: d.__setitem__("colour", "green"))
    assert "field power.board_power" in _bad(tmp_path, lambda d: d["power"]["board_power"].append("VDD_X"))
    assert "field knobs.gpu_mhz.control" in _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"].__setitem__("control", "nope"))
    assert "field control.gpu.variants[0].jetpack" in _bad(
        tmp_path, lambda d: d["control"]["gpu"]["variants"][0].__setitem__("jetpack", [9])
    )


def test_unknown_fields_name_the_allowed_ones(tmp_path):
    msg = _bad(tmp_path, lambda d: d.__setitem__("colour", "green"))
    assert "field colour: unknown field; expected one of: control, description, knobs," in msg
    msg = _bad(tmp_path, lambda d: d["control"]["gpu"]["variants"][1].__setitem__("kernel", "5.15"))
    assert msg.endswith("field control.gpu.variants[1].kernel: unknown field; expected one of: jetpack, note, path")
    msg = _bad(tmp_path, lambda d: d["power"]["rails"][2].__setitem__("shunt_mohm", 5))
    assert "field power.rails[2].shunt_mohm: unknown field" in msg
    # names filled in from the mapping key cannot be written in the file
    msg = _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"].__setitem__("name", "gpu_mhz"))
    assert msg.endswith("field knobs.gpu_mhz.name: unknown field; expected one of: control, note, steps")
    assert "field path: unknown field" in _bad(tmp_path, lambda d: d.__setitem__("path", "/x.yaml"))
    assert "field knobs.npu_mhz: unknown hardware knob" in _bad(
        tmp_path, lambda d: d["knobs"].__setitem__("npu_mhz", {"steps": [1], "control": "gpu"}))


def test_rules_across_fields(tmp_path):
    assert _bad(tmp_path, lambda d: d["knobs"].pop("gpu_mhz")).endswith("field knobs.gpu_mhz: missing")
    assert _bad(tmp_path, lambda d: d["control"]["cpu"].pop("clusters")).endswith("field control.cpu.clusters: missing")
    msg = _bad(tmp_path, lambda d: d["control"]["cpu"]["clusters"][1].__setitem__("cpus", [3, 4]))
    assert msg.endswith("field control.cpu.clusters[1].cpus: empty, or a CPU listed in two clusters")
    msg = _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"].__setitem__("control", "nope"))
    assert msg.endswith("field knobs.gpu_mhz.control: no control entry 'nope' (have: gpu, emc, cpu)")
    msg = _bad(tmp_path, lambda d: d["power"]["rails"][1].__setitem__("name", "VDD_GPU_SOC"))
    assert msg.endswith("field power.rails[1].name: duplicate rail 'VDD_GPU_SOC'")
    msg = _bad(tmp_path, lambda d: d["power"]["interfaces"][0]["files"].pop("current_ma"))
    assert msg.endswith("field power.interfaces[0].files.current_ma: missing")


def test_value_rules(tmp_path):
    assert _bad(tmp_path, lambda d: d.__setitem__("schema_version", 2)).endswith(
        "field schema_version: unsupported version 2; expected 1")
    assert _bad(tmp_path, lambda d: d["control"]["gpu"].__setitem__("unit", "MHz")).endswith(
        "field control.gpu.unit: 'MHz' is not one of: Hz, kHz")
    assert _bad(tmp_path, lambda d: d["control"]["gpu"]["variants"][0].__setitem__("path", "sys/x")).endswith(
        "field control.gpu.variants[0].path: expected a plain path under /sys (no '..', '.' or '//'), got 'sys/x'")
    assert _bad(tmp_path, lambda d: d["control"]["gpu"]["variants"][0].__setitem__("jetpack", [9])).endswith(
        "expected JetPack major versions from [4, 5, 6], got [9]")
    assert _bad(tmp_path, lambda d: d["power"]["interfaces"][0].__setitem__("channel_base", 2)).endswith(
        "field power.interfaces[0].channel_base: expected 0 or 1, got 2")
    assert _bad(tmp_path, lambda d: d["power"]["rails"][0].__setitem__("address", "0x50")).endswith(
        "field power.rails[0].address: expected an INA3221 I2C address 0x40-0x43, got '0x50'")
    assert _bad(tmp_path, lambda d: d.__setitem__("models", [])).endswith(
        "field models: at least one /proc/device-tree/model string is needed")
    assert _bad(tmp_path, lambda d: d["control"]["gpu"].__setitem__("variants", [])).endswith(
        "field control.gpu.variants: at least one path variant is needed")
    assert _bad(tmp_path, lambda d: d.__setitem__("name", "Bad Name")).endswith(
        "field name: 'Bad Name' is not a valid profile name (lowercase, digits, -_.)")
    assert _bad(tmp_path, lambda d: d.__setitem__("name", "other")).endswith(
        "field name: 'other' does not match the file name 'bad.yaml'")


def test_sim_block_must_be_plain_data(tmp_path):
    assert _bad(tmp_path, lambda d: d.__setitem__("sim", [1, 2])).endswith("field sim: expected a mapping, got list")
    msg = _bad(tmp_path, lambda d: d["sim"]["gpu"].__setitem__("dyn_w", float("nan")))
    assert msg.endswith("field sim.gpu.dyn_w: expected a number, got nan")
    path = _write(tmp_path, yaml.safe_dump({**_orin_data(), "name": "bad"}).replace("static_w: 7.5", "static_w: 2024-01-01"))
    with pytest.raises(ProfileError, match=r"field sim\.static_w: unsupported value datetime\.date"):
        load_profile(path)


def test_huge_values_are_shortened(tmp_path):
    huge = "x" * 10_000
    for mutate, field in [
        (lambda d: d["control"]["gpu"].__setitem__("unit", huge), "control.gpu.unit"),
        (lambda d: d.__setitem__("schema_version", huge), "schema_version"),
        (lambda d: d["knobs"]["gpu_mhz"]["steps"].__setitem__(0, huge), "knobs.gpu_mhz.steps[0]"),
        (lambda d: d["power"]["rails"][0].__setitem__("address", huge), "power.rails[0].address"),
        (lambda d: d["control"]["gpu"]["variants"][0].__setitem__("jetpack", [4] * 5000 + [9]), "control.gpu.variants[0].jetpack"),
    ]:
        msg = _bad(tmp_path, mutate)
        assert f"field {field}: " in msg and len(msg) < len(str(tmp_path)) + 200, msg
        assert "..." in msg
    msg = _bad(tmp_path, lambda d: d.__setitem__(huge, 1))
    assert "unknown field" in msg and len(msg) < len(str(tmp_path)) + 400


@pytest.mark.parametrize("where, value", [
    (("variants", 0, "path"), "/sys/../etc"),
    (("variants", 0, "path"), "/etc/gpu"),
    (("variants", 0, "path"), "/sys/devices//17000000.ga10b"),
    (("files", "min"), "../../../../etc/passwd"),
    (("files", "max"), "/etc/passwd"),
])
def test_a_clock_path_outside_sys_is_refused(tmp_path, where, value):
    """Clock files are written as root: a profile may name only plain paths under /sys for them."""
    def mutate(d):
        target = d["control"]["gpu"]
        for k in where[:-1]:
            target = target[k]
        target[where[-1]] = value
    msg = _bad(tmp_path, mutate)
    field = "variants[0].path" if where[0] == "variants" else ".".join(where)
    assert f"field control.gpu.{field}: expected a" in msg


def test_an_emc_override_path_outside_sys_is_refused(tmp_path):
    msg = _bad(tmp_path, lambda d: d["control"]["emc"]["paths"].__setitem__("override_rate", "/sys/../etc/shadow"))
    assert "field control.emc.paths.override_rate" in msg and "/sys" in msg
