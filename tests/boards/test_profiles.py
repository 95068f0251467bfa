"""Finding and loading board profiles: every built-in profile validates and is consistent; names, paths,
model strings and unreadable files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polythrottle.boards.profiles import (
    PROFILE_DIR,
    list_profiles,
    load_profile,
    match_model,
    profile_dirs,
    profile_path,
)
from polythrottle.errors import BadInputError, ProfileError

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
        assert p.knobs[knob].name == knob
        ctl = p.control_for(knob)
        assert ctl.unit in ("Hz", "kHz") and ctl.variants and ctl.name == p.knobs[knob].control
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


def test_steps_are_floats_in_mhz():
    """Knob values are the same type whether the YAML wrote 204 or 204.0 (knob values, CSV columns)."""
    steps = load_profile("jetson-agx-orin").steps("emc_mhz")
    assert steps[0] == 204 and all(type(s) is float for s in steps)


def test_match_model():
    assert match_model("NVIDIA Jetson AGX Orin Developer Kit\x00").name == "jetson-agx-orin"
    assert match_model("Jetson-AGX").name == "jetson-agx-xavier"
    assert match_model("NVIDIA Jetson Xavier NX Developer Kit").name == "jetson-xavier-nx"
    assert match_model("NVIDIA Jetson Orin Nano Developer Kit").name == "jetson-orin-nano"
    assert match_model("Some Jetson Orin NX carrier").name == "jetson-orin-nx"
    assert match_model("Raspberry Pi 4 Model B") is None
    assert match_model("") is None


def test_match_model_in_a_directory(tmp_path):
    data = yaml.safe_load((PROFILE_DIR / "jetson-tx2.yaml").read_text())
    data.update(name="my-board", models=["ACME Board 1"], model_substrings=["ACME"])
    (tmp_path / "my-board.yaml").write_text(yaml.safe_dump(data))
    assert match_model("ACME Board 1", tmp_path).name == "my-board"
    assert match_model("an ACME board", tmp_path).name == "my-board"
    assert match_model("NVIDIA Jetson AGX Orin", tmp_path) is None


def test_unknown_name_and_missing_file():
    with pytest.raises(ProfileError, match="unknown profile 'jetson-foo'"):
        load_profile("jetson-foo")
    with pytest.raises(ProfileError, match="not found"):
        load_profile("/nonexistent/x.yaml")
    with pytest.raises(ProfileError, match="empty profile name; expected one of: .*jetson-agx-orin"):
        load_profile("  ")
    assert issubclass(ProfileError, BadInputError)


def test_names_and_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("POLYTHROTTLE_PROFILE_DIR", raising=False)
    assert profile_dirs() == [PROFILE_DIR]
    assert profile_path("jetson-nano") == PROFILE_DIR / "jetson-nano.yaml"
    monkeypatch.setenv("POLYTHROTTLE_PROFILE_DIR", str(tmp_path))
    assert profile_dirs() == [tmp_path, PROFILE_DIR]
    (tmp_path / "jetson-nano.yaml").write_text((PROFILE_DIR / "jetson-nano.yaml").read_text())
    assert profile_path("jetson-nano") == tmp_path / "jetson-nano.yaml"  # the user's copy wins
    assert load_profile("jetson-nano").path == tmp_path / "jetson-nano.yaml"


def _write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_bad_yaml(tmp_path):
    p = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ProfileError, match=r"invalid YAML at line \d+"):
        load_profile(p)


def test_empty_and_unreadable(tmp_path):
    with pytest.raises(ProfileError, match="empty"):
        load_profile(_write(tmp_path, ""))
    p = tmp_path / "binary.yaml"
    p.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ProfileError, match=r"binary\.yaml: cannot read"):
        load_profile(p)


@pytest.mark.parametrize("make, said", [
    (lambda p: p / "missing", "no such directory"),
    (lambda p: (p / "afile").write_text("x") and p / "afile", "not a directory"),
])
def test_a_profile_dir_that_is_no_directory_is_one_line_naming_the_variable(tmp_path, monkeypatch, capsys, make, said):
    """It was ignored: `sim:jetson-nano` quietly used the built-in profile, not the user's copy they meant."""
    from polythrottle.cli import main

    path = make(tmp_path)
    monkeypatch.setenv("POLYTHROTTLE_PROFILE_DIR", str(path))
    with pytest.raises(ProfileError, match=f"^POLYTHROTTLE_PROFILE_DIR='{path}': {said}$"):
        profile_dirs()
    with pytest.raises(ProfileError, match="POLYTHROTTLE_PROFILE_DIR"):
        load_profile("jetson-nano")
    for argv in (["devices"], ["tune", "--device", "sim:jetson-nano", "--workload", "resnet50", "--slo-ms", "50",
                               "--no-history"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err == f"polythrottle: error: POLYTHROTTLE_PROFILE_DIR='{path}': {said}\n", err
    monkeypatch.setenv("POLYTHROTTLE_PROFILE_DIR", " ")  # set empty: not set
    assert profile_dirs() == [PROFILE_DIR]
