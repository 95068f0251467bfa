"""Device profiles: every built-in profile validates; malformed ones fail naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polythrottle.errors import BadInputError, ProfileError
from polythrottle.profiles import PROFILE_DIR, list_profiles, load_profile, match_model

BOARDS = [
    "jetson-agx-orin", "jetson-orin-nx", "jetson-orin-nano", "jetson-agx-xavier",
    "jetson-xavier-nx", "jetson-tx2", "jetson-nano",
]


def test_every_listed_board_has_a_profile():
    assert set(BOARDS) <= set(list_profiles())


@pytest.mark.parametrize("name", BOARDS)
def test_profile_loads_and_is_consistent(name):
    p = load_profile(name)
    assert p.name == name and p.models
    for knob in ("gpu_mhz", "emc_mhz", "cpu_mhz"):
        steps = p.steps(knob)
        assert list(steps) == sorted(set(steps))
        ctl = p.control_for(knob)
        assert ctl.unit in ("Hz", "kHz") and ctl.variants
        assert all(v.path.startswith("/") for v in ctl.variants)
    assert p.control_for("cpu_mhz").clusters
    assert set(p.power.board_power) <= {r.name for r in p.power.rails}
    # the twin's CPU subset must be real steps
    assert set(p.sim["cpu_mhz"]) <= set(p.steps("cpu_mhz"))


def test_units_and_power_paths():
    orin = load_profile("jetson-agx-orin")
    assert orin.control_for("gpu_mhz").to_unit(1300.5) == 1_300_500_000
    assert orin.control_for("cpu_mhz").to_unit(2201.6) == 2_201_600
    iface = orin.power.interfaces[0]
    rail = orin.power.rails[0]
    assert iface.kind == "hwmon" and iface.file("label", rail) == "in1_label"
    assert "-0040/" in iface.sensor_glob(rail)
    nano = load_profile("jetson-nano")
    iio = nano.power.interfaces[0]
    assert iio.kind == "iio" and iio.file("power_mw", nano.power.rails[0]) == "in_power0_input"


def test_match_model():
    assert match_model("NVIDIA Jetson AGX Orin Developer Kit\x00").name == "jetson-agx-orin"
    assert match_model("Jetson-AGX").name == "jetson-agx-xavier"
    assert match_model("NVIDIA Jetson Xavier NX Developer Kit").name == "jetson-xavier-nx"
    assert match_model("NVIDIA Jetson Orin Nano Developer Kit").name == "jetson-orin-nano"
    assert match_model("Some Jetson Orin NX carrier").name == "jetson-orin-nx"
    assert match_model("Raspberry Pi 4 Model B") is None
    assert match_model("") is None


def test_unknown_name_and_missing_file():
    with pytest.raises(ProfileError, match="unknown profile 'jetson-foo'"):
        load_profile("jetson-foo")
    with pytest.raises(ProfileError, match="not found"):
        load_profile("/nonexistent/x.yaml")
    assert issubclass(ProfileError, BadInputError)


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


def test_bad_yaml(tmp_path):
    p = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ProfileError, match=r"invalid YAML at line \d+"):
        load_profile(p)


def test_empty_and_non_mapping(tmp_path):
    with pytest.raises(ProfileError, match="empty"):
        load_profile(_write(tmp_path, ""))
    with pytest.raises(ProfileError, match="expected a mapping"):
        load_profile(_write(tmp_path, "- 1\n- 2\n"))


def test_missing_field(tmp_path):
    msg = _bad(tmp_path, lambda d: d.pop("models"))
    assert "field models: missing" in msg
    msg = _bad(tmp_path, lambda d: d["control"]["emc"].pop("unit"))
    assert "field control.emc.unit: missing" in msg


def test_wrong_type(tmp_path):
    msg = _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"].__setitem__("steps", "fast"))
    assert "field knobs.gpu_mhz.steps" in msg and "expected a list" in msg
    msg = _bad(tmp_path, lambda d: d["knobs"]["emc_mhz"]["steps"].__setitem__(1, "x"))
    assert "field knobs.emc_mhz.steps[1]" in msg and "expected a number" in msg
    msg = _bad(tmp_path, lambda d: d["power"]["rails"][0].__setitem__("channel", 7))
    assert "field power.rails[0].channel" in msg


def test_unsorted_and_duplicate_steps(tmp_path):
    msg = _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"]["steps"].reverse())
    assert "field knobs.gpu_mhz.steps" in msg and "ascending" in msg
    msg = _bad(tmp_path, lambda d: d["knobs"]["cpu_mhz"]["steps"].insert(1, d["knobs"]["cpu_mhz"]["steps"][0]))
    assert "field knobs.cpu_mhz.steps" in msg and "duplicate" in msg


def test_other_invalid_fields(tmp_path):
    assert "field name" in _bad(tmp_path, lambda d: d.__setitem__("name", "other"))
    assert "field colour" in _bad(tmp_path, lambda d: d.__setitem__("colour", "green"))
    assert "field power.board_power" in _bad(tmp_path, lambda d: d["power"]["board_power"].append("VDD_X"))
    assert "field knobs.gpu_mhz.control" in _bad(tmp_path, lambda d: d["knobs"]["gpu_mhz"].__setitem__("control", "nope"))
    assert "field control.gpu.variants[0].jetpack" in _bad(
        tmp_path, lambda d: d["control"]["gpu"]["variants"][0].__setitem__("jetpack", [9])
    )
