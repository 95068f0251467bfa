"""The daemon's config file: defaults, paths relative to the file, one-line errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from polythrottle.daemon.config import DEFAULT_CARBON_G_PER_KWH, ConfigError, DaemonConfig, load_config

GOOD = "device: sim:jetson-agx-orin\nworkload: efficientnet-b0\nslo_ms: 25\n"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "daemon.yaml"
    p.write_text(text)
    return p


# ----- config -------------------------------------------------------------------------------------
def test_config_defaults_and_relative_paths(tmp_path):
    cfg = load_config(write(tmp_path, GOOD + "model_files: [m.bin]\nstate_dir: st\nknobs: gpu_mhz,emc_mhz\n"))
    assert cfg.slo_ms == 25.0 and cfg.budget == 15 and cfg.retune_budget == 5
    assert cfg.model_files == (tmp_path / "m.bin",) and cfg.state_dir == tmp_path / "st"
    assert cfg.history_path() == str(tmp_path / "st" / "history.sqlite")
    assert cfg.knobs == ("gpu_mhz", "emc_mhz")
    assert cfg.carbon_intensity_g_per_kwh == DEFAULT_CARBON_G_PER_KWH
    assert cfg.metrics is not None and cfg.metrics.address == "127.0.0.1"
    assert load_config(write(tmp_path, GOOD + "metrics: false\n")).metrics is None


@pytest.mark.parametrize("text, message", [
    ("device: [unclosed\n", "not valid YAML at line 2"),
    ("- a\n- b\n", "expected a mapping of fields"),
    ("", "got an empty file"),
    ("workload: x\nslo_ms: 25\n", "device: is required"),
    (GOOD.replace("25", "fast"), "slo_ms: must be a number, got 'fast'"),
    (GOOD.replace("25", "-3"), "slo_ms: must be >= 0.001"),
    (GOOD + "slo: 20\n", "unknown field 'slo' (did you mean 'slo_ms'?)"),
    (GOOD + "budget: 4\nretune_budget: 6\n", "retune_budget: must be <= budget (4)"),
    (GOOD + "budget: 1.5\n", "budget: must be an integer"),
    (GOOD + "optimizer: magic\n", "optimizer: must be one of cbo, random"),
    (GOOD + "metrics: {port: 99999}\n", "metrics.port: must be <= 65535"),
    (GOOD + "metrics: {prt: 1}\n", "metrics.unknown field 'prt'"),
    (GOOD + "model_files: [a]\nmodel_version: v1\n", "give model_version or model_files, not both"),
    (GOOD + "knobs: [gpu_mhz, gpu_mhz]\n", "knobs: lists a knob twice"),
    (GOOD + "no_clock_control: maybe\n", "no_clock_control: must be true or false"),
])
def test_config_errors_name_file_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_a_socket_path_too_long_for_a_unix_socket_is_refused_at_load(tmp_path):
    """``daemon --check`` said OK and the daemon then could not listen ("AF_UNIX path too long")."""
    long_dir = "d" * 120
    path = write(tmp_path, GOOD + f"socket: {long_dir}/c.sock\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: socket: ") and "at most 107" in str(e.value)
    short = write(tmp_path, GOOD + "socket: c.sock\n")
    assert load_config(short).socket == tmp_path / "c.sock"


def test_a_default_socket_path_too_long_for_a_unix_socket_is_refused_at_load(tmp_path, monkeypatch):
    """A config without ``socket:`` takes the default ($POLYTHROTTLE_SOCKET here): ``daemon --check`` said OK
    for one no client could connect to."""
    monkeypatch.setenv("POLYTHROTTLE_SOCKET", str(tmp_path / ("d" * 120) / "c.sock"))
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: socket: ") and "at most 107" in str(e.value)
    assert "$POLYTHROTTLE_SOCKET" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("POLYTHROTTLE_SOCKET", str(tmp_path / "c.sock"))
    assert load_config(path).socket == tmp_path / "c.sock"


def test_a_socket_group_that_does_not_exist_is_refused_at_load(tmp_path):
    """``daemon --check`` said OK and the daemon then refused to start ("socket_group ...: no such group")."""
    import grp

    path = write(tmp_path, GOOD + "socket_group: no-such-group-polythrottle\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: socket_group: no such group 'no-such-group-polythrottle'"
    group = grp.getgrgid(0).gr_name
    assert load_config(write(tmp_path, GOOD + f"socket_group: {group}\n")).socket_group == group


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")



def test_paths_relative_to_the_file_and_urls_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    cfg = load_config(write(tmp_path, GOOD.replace("efficientnet-b0", "wl.py:make")
                            + "model_files: a.bin, sub/b.bin\nhistory: h.sqlite\nsocket: run/c.sock\n"))
    assert cfg.model_files == (tmp_path / "a.bin", tmp_path / "sub" / "b.bin")
    assert cfg.history_path() == str(tmp_path / "h.sqlite") and cfg.socket == tmp_path / "run" / "c.sock"
    assert cfg.workload == f"{tmp_path / 'wl.py'}:make" and cfg.path == tmp_path / "daemon.yaml"
    cfg = load_config(write(tmp_path, GOOD.replace("efficientnet-b0", "torchvision:resnet18")
                            + "history: postgresql://u@db/pt\n"))
    assert cfg.history_path() == "postgresql://u@db/pt" and cfg.workload == "torchvision:resnet18"


def test_yaml_types_are_taken_as_written_and_an_empty_value_is_the_default(tmp_path):
    with pytest.raises(ConfigError, match="slo_ms: must be a number, got '25'"):
        load_config(write(tmp_path, GOOD.replace("25", "'25'")))
    with pytest.raises(ConfigError, match="budget: must be .*, got True"):
        load_config(write(tmp_path, GOOD + "budget: true\n"))
    with pytest.raises(ConfigError, match="baseline: value of 'gpu_mhz' must be a number or a name"):
        load_config(write(tmp_path, GOOD + "baseline: {gpu_mhz: [1]}\n"))
    cfg = load_config(write(tmp_path, GOOD + "budget:\nhistory:\nmetrics: true\nwarm_start: false\n"))
    assert cfg.budget == 15 and cfg.history is None and cfg.metrics is not None and cfg.warm_start is False
    assert load_config(write(tmp_path, GOOD + "metrics:\n")).metrics is None


@pytest.mark.parametrize("text, message", [
    (GOOD + "1: x\n", "unknown field 1; known fields: baseline, budget"),
    (GOOD + "budget: 4\nretune_budgt: 2\n", "unknown field 'retune_budgt' (did you mean 'retune_budget'?)"),
    (GOOD + "metrics: 9347\n", "metrics: must be false or a mapping (address, port), got 9347"),
    (GOOD + "state_dir: 5\n", "state_dir: must be a path, got 5"),
    (GOOD + "watch_interval_s: .inf\n", "watch_interval_s: must be a finite number"),
    (GOOD + "watch_interval_s: 0.001\n", "watch_interval_s: must be >= 0.1"),  # the daemon spun on stat()
    (GOOD + "slo_metric: p99\n", "slo_metric: must be one of ttft, tpot, batch"),
    (GOOD + "carbon_country: Atlantis\n", "carbon_country: unknown country code 'Atlantis'"),
    (GOOD + "y" * 1000 + ": 1\n", "unknown field 'yyyyyyyy"),
    (GOOD + "history: ''\n", "history: must not be empty"),
    # named only when the history was opened: "history URL mysql://x: ...", no file, no field
    (GOOD + "history: mysql://db/pt\n", "daemon.yaml: history: history URL mysql://db/pt: unsupported scheme 'mysql'"),  # --check said OK, the daemon then refused to start
    (GOOD.replace("efficientnet-b0", "' '"), "workload: must not be empty"),
    # PyYAML kept the last of two equal keys: the config ran at 30 ms
    (GOOD + "budget: 8\nslo_ms: 30\n", "not valid YAML at line 5, column 1: key 'slo_ms' given twice in one mapping"),
])
def test_more_errors_are_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 600 + len(str(path))


def test_a_config_is_a_tune_spec_and_can_be_built_in_code(tmp_path):
    from polythrottle.spec import TuneSpec

    cfg = DaemonConfig(device="sim:jetson-tx2", slo_ms=20, carbon_intensity_g_per_kwh=100, state_dir=tmp_path)
    assert isinstance(cfg, TuneSpec) and cfg.budget == 15 and cfg.carbon.source == "given"
    assert cfg.resolved_state_dir() == tmp_path and cfg.device_options().state_dir == tmp_path
    other = DaemonConfig(device="sim:jetson-tx2", slo_ms=30, state_dir=tmp_path)
    assert other.carbon.intensity_g_per_kwh == DEFAULT_CARBON_G_PER_KWH and other.carbon_country is None
    assert cfg.same_device(other) and not cfg.same_device(DaemonConfig(device="sim:jetson-tx2", slo_ms=20, seed=1))


@pytest.mark.parametrize("written, resolved", [
    ("replay:tables/t.csv", "replay:{d}/tables/t.csv"),
    ("sim:boards/my-board.yaml", "sim:{d}/boards/my-board.yaml"),
    ("sim:./my-board.yaml?gpu=range&unit=2", "sim:{d}/my-board.yaml?gpu=range&unit=2"),
    ("jetson:my-board.yaml", "jetson:{d}/my-board.yaml"),
    ("sim:jetson-agx-orin?gpu=range", "sim:jetson-agx-orin?gpu=range"),  # a profile name, not a file
    ("jetson", "jetson"),
    ("replay:/abs/t.csv", "replay:/abs/t.csv"),
])
def test_a_file_in_the_device_spec_is_relative_to_the_config(tmp_path, written, resolved):
    """README: relative paths are relative to the config file. `device: replay:t.csv` was opened relative to the
    daemon's working directory (`/` under systemd): `daemon --check` in another directory said "not found"."""
    cfg = load_config(write(tmp_path, GOOD.replace("sim:jetson-agx-orin", written)))
    assert cfg.device == resolved.format(d=tmp_path)


def test_daemon_check_finds_a_replay_table_beside_the_config(tmp_path, monkeypatch):
    from polythrottle.daemon.service import check_config

    d = tmp_path / "conf"
    d.mkdir()
    (d / "t.csv").write_text("gpu_mhz,energy_j,latency_ms\n100,1.0,50\n200,0.8,30\n")
    path = d / "daemon.yaml"
    path.write_text(f"device: replay:t.csv\nslo_ms: 40\nmodel_version: v1\nstate_dir: st\nsocket: {d}/c.sock\n"
                    "metrics: false\n")
    monkeypatch.chdir(tmp_path)
    assert check_config(path).startswith(f"{path}: OK (device replay")
