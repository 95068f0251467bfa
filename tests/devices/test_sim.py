"""The digital twin (sim:PROFILE): physics sanity, noise, errors, and the profile command."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from polythrottle.boards.profiles import PROFILE_DIR, list_profiles, load_profile
from polythrottle.cli import main
from polythrottle.devices import DeviceOptions, open_device
from polythrottle.devices.sim import SimDevice
from polythrottle.devices.table import ReplayTable
from polythrottle.errors import BadInputError, ProfileError
from polythrottle.twin.params import board_from_profile
from tests.conftest import ROOT, run_cli

WORKLOADS = ["efficientnet-b0", "efficientnet-b4", "efficientnet-b7", "bert-base", "resnet50"]


def along(dev: SimDevice, knob: str, **fixed) -> tuple[list, np.ndarray, np.ndarray]:
    """Values of ``knob`` and the twin's energy and latency along it, other knobs at ``fixed``/defaults."""
    base = {**dev.default_config(), **fixed}
    vals = list(dev.space().knob(knob).values)
    ms = [dev.truth({**base, knob: v}) for v in vals]
    return vals, np.array([m.energy_j for m in ms]), np.array([m.latency_ms for m in ms])


@pytest.mark.parametrize("profile", list_profiles())
def test_every_profile_opens_for_every_workload(profile):
    for wl in WORKLOADS:
        dev = SimDevice(profile, wl)
        assert len(dev.space()) <= 20_000
        e, lat = dev.table.metric("energy_j"), dev.table.metric("latency_ms")
        assert np.all(np.isfinite(e)) and np.all(e > 0) and np.all(lat > 0)
        assert dev.space().contains(dev.default_config())


def test_physics_monotonic():
    dev = SimDevice("jetson-agx-orin", "resnet50")
    # a faster GPU clock never makes a batch slower; power rises with it
    _, _, lat = along(dev, "gpu_mhz")
    assert np.all(np.diff(lat) <= 1e-9)
    p = [dev.truth({**dev.default_config(), "gpu_mhz": f}).power_w for f in dev.space().knob("gpu_mhz").values]
    assert np.all(np.diff(p) > 0)
    # dynamic power is super-linear in clock: energy per inference rises near the top step (voltage)
    vals, e, _ = along(dev, "gpu_mhz", batch_size=8)
    assert e[-1] > e[vals.index(930.75)]
    # a faster memory clock never slows it down; a faster CPU never slows it down
    for knob in ("emc_mhz", "cpu_mhz"):
        _, _, lat = along(dev, knob)
        assert np.all(np.diff(lat) <= 1e-9)
    # batching: latency per batch rises, energy per inference falls
    _, e, lat = along(dev, "batch_size")
    assert np.all(np.diff(lat) > 0) and np.all(np.diff(e) < 0)
    # fp16 is faster and cheaper than fp32
    _, e, lat = along(dev, "precision")
    assert e[0] < e[1] and lat[0] < lat[1]
    # a memory-starved config costs energy: EMC at its minimum is worse than at its maximum
    _, e, _ = along(dev, "emc_mhz")
    assert e[0] > e[-1]


def test_governor_and_min_gpu_clock():
    """Raising the minimum GPU clock helps a small model more than a large one (range mode)."""
    savings = {}
    for wl in ("efficientnet-b0", "bert-base"):
        dev = SimDevice("jetson-agx-orin", wl, gpu_mode="range")
        base = dev.default_config()
        assert base["gpu_min_mhz"] == 114.75 and base["gpu_max_mhz"] == 1300.5
        e0 = dev.truth(base).energy_j
        best = min(dev.truth({**base, "gpu_min_mhz": f}).energy_j for f in dev.space().knob("gpu_min_mhz").values)
        savings[wl] = 1 - best / e0
        assert all(r[0] <= r[1] for r in dev.space().rows)  # min <= max only
    assert savings["efficientnet-b0"] > savings["bert-base"] + 0.1
    # the governor clocks a small model below the top step, a large one not
    small = SimDevice("jetson-agx-orin", "efficientnet-b0", gpu_mode="range")
    assert small.outcome.gpu_mhz[small.space().index_of(small.default_config())] < 1300.5


def test_noise_seeded_and_independent():
    opts = DeviceOptions(workload="efficientnet-b0", noise=0.05, seed=7)
    a, b = open_device("sim:jetson-tx2", opts), open_device("sim:jetson-tx2", opts)
    cfg = a.default_config()
    a.apply(cfg)
    b.apply(cfg)
    ma = [a.measure() for _ in range(20)]
    mb = [b.measure() for _ in range(20)]
    assert [m.energy_j for m in ma] == [m.energy_j for m in mb]
    es = np.array([m.energy_j for m in ma])
    ls = np.array([m.latency_ms for m in ma])
    truth = a.truth(cfg)
    assert es.std() > 0 and abs(es.mean() / truth.energy_j - 1) < 0.05
    assert abs(np.corrcoef(es, ls)[0, 1]) < 0.8  # energy and latency noise are drawn independently
    quiet = open_device("sim:jetson-tx2", DeviceOptions(workload="efficientnet-b0"))
    quiet.apply(cfg)
    assert quiet.measure().energy_j == truth.energy_j


def test_a_missing_workload_is_named_the_way_each_face_sets_it(tmp_path, capsys):
    """The message named the CLI flag, --workload, also for a device opened from a daemon config or the API."""
    import polythrottle as pt
    from polythrottle.daemon.config import ConfigError, load_config
    from polythrottle.daemon.controller import prepare

    config = tmp_path / "daemon.yaml"
    config.write_text("device: sim:jetson-agx-orin\nslo_ms: 25\n")
    with pytest.raises(ConfigError) as yaml_face:
        prepare(load_config(config))
    with pytest.raises(BadInputError) as api_face:
        pt.open_device("sim:jetson-agx-orin")
    assert main(["tune", "--device", "sim:jetson-agx-orin", "--slo-ms", "25", "--no-history"]) == 2
    cli_face = capsys.readouterr().err
    for line, named in ((str(yaml_face.value), "workload: in a daemon config"), (str(api_face.value), "workload="),
                        (cli_face, "--workload")):
        assert "needs a workload" in line and named in line and "bert-base" in line and line.count("\n") <= 1
    assert str(yaml_face.value).startswith(f"{config}: sim:jetson-agx-orin needs a workload")


def test_range_spec_and_bad_specs():
    dev = open_device("sim:jetson-agx-orin?gpu=range", DeviceOptions(workload="bert-base"))
    assert {"gpu_min_mhz", "gpu_max_mhz"} <= set(dev.space().names)
    with pytest.raises(BadInputError, match="needs a workload"):
        open_device("sim:jetson-agx-orin", DeviceOptions())
    with pytest.raises(BadInputError, match="unknown workload 'yolo'"):
        open_device("sim:jetson-agx-orin", DeviceOptions(workload="yolo"))
    with pytest.raises(BadInputError, match="unknown option"):
        open_device("sim:jetson-agx-orin?fast=1", DeviceOptions(workload="bert-base"))
    with pytest.raises(ProfileError, match="unknown profile"):
        open_device("sim:jetson-foo", DeviceOptions(workload="bert-base"))
    assert "triton-loudva" in board_from_profile(load_profile("jetson-agx-xavier")).workloads


def _bad_profile(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((PROFILE_DIR / "jetson-tx2.yaml").read_text())
    data["name"] = "bad"
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_tune_with_malformed_profile_exits_2_with_one_line(tmp_path):
    path = _bad_profile(tmp_path, lambda d: d["knobs"]["gpu_mhz"]["steps"].reverse())
    r = run_cli("tune", "--device", f"sim:{path}", "--workload", "bert-base", "--slo-ms", "50")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "knobs.gpu_mhz.steps" in lines[0]
    assert "Traceback" not in r.stderr
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("name: x\n  knobs: [\n")
    r = run_cli("tune", "--device", f"sim:{bad_yaml}", "--workload", "bert-base", "--slo-ms", "50")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "invalid YAML" in r.stderr


def test_profile_command_writes_a_replay_table(tmp_path, capsys):
    out = tmp_path / "t.csv"
    code = main(["profile", "--device", "sim:jetson-agx-xavier", "--workload", "resnet50",
                 "--knobs", "gpu_mhz,batch_size", "--out", str(out)])
    assert code == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["gpu_mhz", "batch_size", "energy_j", "latency_ms", "throughput_ips", "power_w"]
    assert len(rows) == 14 * 5
    table = ReplayTable(out)
    twin = SimDevice("jetson-agx-xavier", "resnet50")
    for i in (0, 17, 69):
        cfg = table.space.config(i)
        full = {**twin.default_config(), **cfg}
        assert table.truth(cfg).energy_j == pytest.approx(twin.truth(full).energy_j, rel=1e-5)
    # the written table replays through the replay device
    dev = open_device(f"replay:{out}")
    assert len(dev.space()) == 70
    # a seeded random sample
    code = main(["profile", "--device", "sim:jetson-tx2", "--workload", "bert-base", "--sample", "25",
                 "--seed", "3", "--noise", "0.02", "--out", str(tmp_path / "s.csv")])
    assert code == 0 and len(ReplayTable(tmp_path / "s.csv").space) == 25


def test_profile_command_bad_input(tmp_path):
    r = run_cli("profile", "--device", "sim:jetson-tx2", "--workload", "bert-base", "--knobs", "gpu_mhz,warp",
                "--out", str(tmp_path / "x.csv"))
    assert r.returncode == 2 and "unknown knob 'warp'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("profile", "--device", "sim:jetson-tx2", "--workload", "bert-base", "--sample", "0",
                "--out", str(tmp_path / "x.csv"))
    assert r.returncode == 2
    r = run_cli("profile", "--device", "sim:jetson-tx2", "--workload", "bert-base",
                "--out", str(tmp_path / "nodir" / "x.csv"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_calibration_holds(xavier_table, tmp_path):
    """The committed Xavier twin matches the measured table (see experiments/calibrate_xavier.py)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import calibrate_xavier as cal

    out = tmp_path / "twin.csv"
    cal.run_profile_command(out)
    cmp = cal.compare(out, ReplayTable(xavier_table))
    assert cmp["common_points"] >= 150
    assert cmp["median_abs_rel_err_energy"] <= 0.15
    assert cmp["median_abs_rel_err_latency"] <= 0.15
    for slo, r in cmp["slo"].items():
        assert r["feasible"], slo
        assert r["gap_pct"] <= 10.0, (slo, r)
