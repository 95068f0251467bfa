"""The declared spec (``polythrottle.spec``): quoted numbers and non-printable identifiers are refused in one
line naming the field, from the Python API and the daemon YAML; the CLI, which converts its own flags, works."""

from __future__ import annotations

from pathlib import Path

import pytest

from polythrottle.errors import BadInputError
from polythrottle.spec import DeviceSpec, Face, TuneSpec
from tests.conftest import run_cli

BASE = {"device": "sim:jetson-orin-nano", "workload": "efficientnet-b0", "slo_ms": 50}


@pytest.mark.parametrize("field, value, kind", [
    ("slo_ms", "25", "a number"), ("budget", "5", "an integer"), ("seed", "0", "an integer"),
    ("noise", "0.1", "a number"), ("percentile", "99", "a number"), ("window_s", "2", "a number"),
    ("repeats", "3", "an integer"), ("carbon_intensity_g_per_kwh", "400", "a number"),
])
def test_api_quoted_numbers_are_refused(field: str, value: str, kind: str) -> None:
    with pytest.raises(BadInputError) as e:
        TuneSpec.parse({**BASE, field: value}, Face.API)
    assert str(e.value) == f"{field}=: must be {kind}, got {value!r}"


@pytest.mark.parametrize("field", ["slo_ms", "carbon_intensity_g_per_kwh"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_number_that_is_not_finite_says_so(field: str, value: float) -> None:
    """NaN was refused by the bound (`--slo-ms nan`: "must be >= 0.001, got nan"), infinity as not finite."""
    with pytest.raises(BadInputError) as e:
        TuneSpec.parse({**BASE, field: value}, Face.CLI)
    assert str(e.value).endswith(f": the value must be a finite number, got {value}")


@pytest.mark.parametrize("field", ["noise", "percentile", "window_s"])
def test_a_measurement_setting_that_is_nan_says_so(field: str) -> None:
    """`--noise nan` said "must be <= 10, got nan" (the bound), `--percentile nan` "must be > 0"."""
    with pytest.raises(BadInputError) as e:
        TuneSpec.parse({**BASE, field: float("nan")}, Face.CLI)
    assert str(e.value) == f"--{field.replace('_', '-')}: the value must be a finite number, got nan"


def test_api_tune_and_open_device_refuse_quoted_numbers() -> None:
    import polythrottle as pt

    with pytest.raises(BadInputError, match=r"^slo_ms=: must be a number, got '25'$"):
        pt.tune("sim:jetson-orin-nano", workload="efficientnet-b0", slo_ms="25", budget=3, optimizer="random")
    with pytest.raises(BadInputError, match=r"^noise=: must be a number, got .0\.1.$"):
        pt.open_device("sim:jetson-orin-nano", workload="efficientnet-b0", noise="0.1")


def test_yaml_quoted_number_is_refused(tmp_path: Path) -> None:
    from polythrottle.daemon.config import ConfigError, load_config

    path = tmp_path / "daemon.yaml"
    path.write_text('device: sim:jetson-orin-nano\nworkload: efficientnet-b0\nslo_ms: "25"\n')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: slo_ms: must be a number, got '25'"


@pytest.mark.parametrize("field, value", [
    ("model_version", "v1\nv2"), ("model_version", "v1\x1b[31m"), ("model_version", "v1\tx"),
    ("model_version", "v\u202e1"), ("model_version", "v1\x00"), ("workload", "efficientnet-b0\nx"),
    ("device", "sim:jetson-orin-nano\x07"),
])
def test_identifiers_with_control_characters_are_refused(tmp_path: Path, field: str, value: str) -> None:
    from polythrottle.daemon.config import ConfigError, parse_config

    with pytest.raises(BadInputError) as e:
        TuneSpec.parse({**BASE, field: value}, Face.API)
    assert str(e.value).startswith(f"{field}=: must be printable text on one line") and "\n" not in str(e.value)
    if field != "model_version":
        with pytest.raises(BadInputError, match=f"^{field}=: must be printable"):
            DeviceSpec.parse({"device": BASE["device"], field: value}, Face.API)
    with pytest.raises(ConfigError) as c:
        parse_config({**BASE, field: value}, tmp_path / "d.yaml")
    assert f"d.yaml: {field}: must be printable text on one line" in str(c.value) and "\n" not in str(c.value)


def test_history_refuses_to_store_a_non_printable_identifier(tmp_path: Path) -> None:
    from polythrottle.history import HistoryError, HistoryKey, HistoryStore

    key = HistoryKey("sim:jetson-orin-nano", "efficientnet-b0", "abc")
    with HistoryStore(str(tmp_path / "h.sqlite")) as s:
        for k, version, unit in ((key, "v1\nforged row", ""), (key, "v1", "0\r"),
                                 (HistoryKey("sim:x", "w\x1b[2J", "abc"), "v1", "")):
            with pytest.raises(HistoryError, match="not printable text on one line"):
                s.begin_tune(k, version, slo_ms=50.0, optimizer="cbo", knobs=["gpu_mhz"], unit=unit)
        assert s.begin_tune(key, "v1 (ok, spaces and ü)", slo_ms=50.0, optimizer="cbo", knobs=["gpu_mhz"]) > 0


def test_cli_numeric_flags_still_work(tmp_path: Path) -> None:
    """argv is text; the CLI converts its flags itself, so the strict spec does not refuse them."""
    r = run_cli("tune", "--device", "sim:jetson-orin-nano", "--workload", "efficientnet-b0", "--slo-ms", "50",
                "--budget", "3", "--seed", "0", "--noise", "0.01", "--percentile", "99", "--optimizer", "random",
                "--carbon-intensity", "400", "--quiet", "--no-history")
    assert r.returncode in (0, 3), r.stderr
    bad = run_cli("tune", "--device", "sim:jetson-orin-nano", "--slo-ms", "50", "--model-version", "a\tb",
                  "--budget", "3", "--quiet", "--no-history")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "polythrottle: error: --model-version: must be printable text on one line (no newline, tab or control "
        "characters), got 'a\\tb'"], bad.stderr


@pytest.mark.parametrize("name", ["optuna-tpe", "optuna-gp"])
def test_optuna_optimizer_without_optuna_is_a_missing_extra(name: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """README "Exit codes": an optional dependency missing is exit 5, on every face, and the daemon's config check
    refuses it (naming the file) instead of passing a config whose first tune would fail."""
    import sys

    from polythrottle.cli import main
    from polythrottle.daemon.config import ConfigError, load_config
    from polythrottle.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "optuna", None)  # as if the `bench` extra were not installed
    with pytest.raises(MissingDependencyError, match=r"needs Optuna: pip install 'polythrottle\[bench\]'"):
        TuneSpec.parse({**BASE, "optimizer": name}, Face.API)
    assert main(["tune", "--device", "sim:jetson-orin-nano", "--workload", "efficientnet-b0", "--slo-ms", "50",
                 "--budget", "3", "--optimizer", name, "--quiet"]) == 5
    path = tmp_path / "daemon.yaml"
    path.write_text(f"device: sim:jetson-orin-nano\nworkload: efficientnet-b0\nslo_ms: 50\noptimizer: {name}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: optimizer {name!r} needs Optuna"):
        load_config(path)


def test_device_fields_are_the_device_specs_and_every_one_has_a_flag() -> None:
    """One list of what says how a device is opened: the CLI reads these flags into a ``DeviceSpec`` and the
    daemon keeps its device across a reload that changes none of them."""
    import argparse

    from polythrottle.cli.common import add_device_args, device_spec
    from polythrottle.daemon.config import DaemonConfig
    from polythrottle.spec import DEVICE_FIELDS

    assert DEVICE_FIELDS == tuple(DeviceSpec.model_fields)
    p = argparse.ArgumentParser()
    add_device_args(p)
    assert set(DEVICE_FIELDS) <= set(vars(p.parse_args(["--device", "sim:x"])))
    args = p.parse_args(["--device", "sim:jetson-orin-nano", "--workload", "w", "--noise", "0.1", "--seed", "3",
                         "--percentile", "90", "--window-s", "1", "--repeats", "2", "--no-clock-control",
                         "--state-dir", "/tmp/s", "--slo-metric", "batch"])
    assert device_spec(args).model_fields_set == set(DEVICE_FIELDS)
    base = DaemonConfig(device="sim:jetson-orin-nano", slo_ms=20)
    assert not base.same_device(DaemonConfig(device="sim:jetson-orin-nano", slo_ms=20, window_s=1.0))
    assert base.same_device(DaemonConfig(device="sim:jetson-orin-nano", slo_ms=30, budget=5))


@pytest.mark.parametrize("face, line", [
    (Face.CLI, "give --model-version or --model-file, not both"),
    (Face.YAML, "daemon.yaml: give model_version or model_files, not both"),
    (Face.API, "give model_version= or model_files=, not both"),
])
def test_model_version_and_model_files_together_are_named_as_each_face_names_them(face: Face, line: str) -> None:
    with pytest.raises(BadInputError) as e:
        TuneSpec.parse({**BASE, "model_version": "v2", "model_files": ("model.pt",)}, face, source="daemon.yaml")
    assert str(e.value) == line


def test_model_version_and_model_files_are_refused_by_every_face_naming_its_own_fields(tmp_path: Path, capsys) -> None:
    """One rule (spec.refuse_two_model_versions) on the same inputs: the CLI's tune and its --model-version
    reader, the API's tune and model_version_of, the daemon config; each names the fields its way."""
    import argparse

    import polythrottle as pt
    from polythrottle.cli import main
    from polythrottle.cli.history_args import model_version
    from polythrottle.daemon.config import ConfigError, load_config

    weights = tmp_path / "model.pt"
    weights.write_bytes(b"w")
    history = tmp_path / "h.sqlite"
    cli = ["--model-version", "v2", "--model-file", str(weights)]
    assert main(["tune", "--device", "sim:jetson-orin-nano", "--workload", "efficientnet-b0", "--slo-ms", "50",
                 "--history", str(history), "--quiet", *cli]) == 2
    assert capsys.readouterr().err == "polythrottle: error: give --model-version or --model-file, not both\n"
    with pytest.raises(BadInputError) as e:
        model_version(argparse.Namespace(model_version="v2", model_file=[weights]))
    assert str(e.value) == "give --model-version or --model-file, not both"
    for call in (lambda: pt.tune("sim:jetson-orin-nano", 50, workload="efficientnet-b0", history=history,
                                 model_version="v2", model_files=[weights]),
                 lambda: pt.model_version_of("v2", model_files=[weights])):
        with pytest.raises(BadInputError) as e:
            call()
        assert str(e.value) == "give model_version= or model_files=, not both"
    with pytest.raises(BadInputError) as e:
        pt.model_version_of("v2", model_files=[weights], model={"w": 1})
    assert str(e.value) == "give one of model_version=, model_files= and model="
    config = tmp_path / "daemon.yaml"
    config.write_text(f"device: sim:jetson-orin-nano\nworkload: efficientnet-b0\nslo_ms: 50\nmodel_version: v2\n"
                      f"model_files: [{weights}]\n")
    with pytest.raises(ConfigError) as e:
        load_config(config)
    assert str(e.value) == f"{config}: give model_version or model_files, not both"
    assert not history.exists()


def test_cli_names_the_flags_when_model_version_and_model_file_are_both_given(tmp_path: Path) -> None:
    # the CLI said "give model_version or model_files, not both": field names, not its flags
    r = run_cli("tune", "--device", "sim:jetson-orin-nano", "--workload", "efficientnet-b0", "--slo-ms", "50",
                "--model-version", "v2", "--model-file", str(tmp_path / "model.pt"), "--history",
                str(tmp_path / "h.sqlite"), "--quiet")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "polythrottle: error: give --model-version or --model-file, not both"], r.stderr
    assert not (tmp_path / "h.sqlite").exists()


# ----- the knob list: one rule (``polythrottle.spec.parse_knob_list``) on every face ----------------------
def _knobs_on_every_face(tmp_path: Path, given: object) -> dict[str, object]:
    """What each face makes of ``knobs`` = ``given``: the names, or ``"refused"`` (a one-line BadInputError)."""
    import json

    import polythrottle as pt
    from polythrottle.daemon.config import parse_config
    from polythrottle.spec import knob_list
    from polythrottle.tuning.tuner import Tuner

    def outcome(f):  # f: () -> names
        try:
            names = f()
        except BadInputError as e:
            assert "\n" not in str(e)
            return "refused"
        return list(names) if names is not None else None

    dev = pt.open_device("sim:jetson-orin-nano", workload="efficientnet-b0")
    raw = {"device": "sim:jetson-orin-nano", "workload": "efficientnet-b0", "slo_ms": 25, "knobs": given}
    return {
        "api": outcome(lambda: TuneSpec.parse({**BASE, "knobs": given}, Face.API).knobs),
        "daemon": outcome(lambda: parse_config(json.loads(json.dumps(raw)), tmp_path / "daemon.yaml").knobs),
        "tuner": outcome(lambda: Tuner(dev, 50.0, 3, optimizer="random", knobs=given).tuned_knobs),  # type: ignore[arg-type]
        "profile": outcome(lambda: knob_list(given, "--knobs")),
    }


@pytest.mark.parametrize("given, names", [
    ("gpu_mhz", ["gpu_mhz"]), (" gpu_mhz , batch_size ", ["gpu_mhz", "batch_size"]),
    # the daemon read a blank between commas as an error, every other face skipped it
    ("gpu_mhz,,batch_size", ["gpu_mhz", "batch_size"]), ("gpu_mhz,", ["gpu_mhz"]),
    ([" gpu_mhz", "batch_size"], ["gpu_mhz", "batch_size"]),
])
def test_a_knob_list_reads_the_same_on_every_face(tmp_path: Path, given: object, names: list[str]) -> None:
    assert _knobs_on_every_face(tmp_path, given) == dict.fromkeys(("api", "daemon", "tuner", "profile"), names)


@pytest.mark.parametrize("given", [
    "", " , ,", [], ["gpu_mhz", ""], ["gpu_mhz", 1], 5, "gpu_mhz,gpu_mhz", ["gpu_mhz", " gpu_mhz"],
])  # [] was "all knobs" to ``Tuner`` and refused by every other face
def test_a_bad_knob_list_is_refused_on_every_face(tmp_path: Path, given: object) -> None:
    assert _knobs_on_every_face(tmp_path, given) == dict.fromkeys(("api", "daemon", "tuner", "profile"), "refused")


def test_a_knob_list_error_names_the_field_on_every_face(tmp_path: Path) -> None:
    from polythrottle.daemon.config import ConfigError, load_config
    from polythrottle.spec import knob_list

    with pytest.raises(BadInputError, match=r"^knobs=: lists a knob twice: a, a"):
        TuneSpec.parse({**BASE, "knobs": "a,a"}, Face.API)
    with pytest.raises(BadInputError, match=r"^--knobs: lists a knob twice: a, a"):
        TuneSpec.parse({**BASE, "knobs": "a,a"}, Face.CLI)
    path = tmp_path / "daemon.yaml"
    path.write_text("device: sim:jetson-orin-nano\nworkload: efficientnet-b0\nslo_ms: 25\nknobs: [a, a]\n")
    with pytest.raises(ConfigError, match=r": knobs: lists a knob twice: a, a"):
        load_config(path)
    with pytest.raises(BadInputError, match=r"^--knobs is empty, got ',,'$"):
        knob_list(",,", "--knobs")


# ----- the SLO metrics: one list (``polythrottle.workloads.base.SLO_METRICS``) on every face -------------
def test_every_face_knows_the_same_slo_metrics(tmp_path: Path) -> None:
    import argparse

    from polythrottle.cli.common import add_device_args
    from polythrottle.daemon.config import ConfigError, parse_config
    from polythrottle.workloads.base import SLO_METRICS

    assert SLO_METRICS == ("ttft", "tpot", "batch")
    listed = ", ".join(SLO_METRICS)
    p = argparse.ArgumentParser()
    add_device_args(p)
    (flag,) = [a for a in p._actions if "--slo-metric" in a.option_strings]
    assert tuple(flag.choices) == SLO_METRICS  # type: ignore[arg-type]
    for metric in SLO_METRICS:
        assert DeviceSpec.parse({"device": "nvml:0", "slo_metric": metric}, Face.API).slo_metric == metric
    with pytest.raises(BadInputError, match=f"^slo_metric=: must be one of {listed}, got 'p99'$"):
        TuneSpec.parse({**BASE, "slo_metric": "p99"}, Face.API)
    with pytest.raises(ConfigError, match=f": slo_metric: must be one of {listed}, got 'p99'$"):
        parse_config({**BASE, "slo_metric": "p99"}, tmp_path / "daemon.yaml")
    from polythrottle.devices import DeviceOptions, open_device

    with pytest.raises(BadInputError, match=f"expected one of {listed}$"):  # what bypasses the spec
        open_device("sim:jetson-orin-nano", DeviceOptions(slo_metric="p99"))
