"""The jetson device through the CLI, each command a separate process, on a fake tree of each board.

The processes run ``python -m tests.fake_jetson`` (the polythrottle CLI with the kernel double, which
refuses a min above max with EINVAL and denied writes with EACCES, and logs every write).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import fake_jetson as fj
from tests.conftest import ROOT

# per board: a first config and a second one (MHz), both valid steps of the board
CONFIGS = {
    "agx-orin-jp5": ({"gpu_mhz": 624.75, "emc_mhz": 665.6, "cpu_mhz": 1036.8},
                     {"gpu_mhz": 1300.5, "emc_mhz": 204, "cpu_mhz": 729.6}),
    "agx-orin-jp6": ({"gpu_mhz": 420.75, "emc_mhz": 2133, "cpu_mhz": 1497.6},
                     {"gpu_mhz": 114.75, "emc_mhz": 3199, "cpu_mhz": 2201.6}),
    "xavier-nx": ({"gpu_mhz": 599.25, "emc_mhz": 1065.6, "cpu_mhz": 1190.4},
                  {"gpu_mhz": 1109.25, "emc_mhz": 204, "cpu_mhz": 268.8}),
    "tx2": ({"gpu_mhz": 854.25, "emc_mhz": 1331.2, "cpu_mhz": 1267.2},
            {"gpu_mhz": 114.75, "emc_mhz": 1866, "cpu_mhz": 2035.2}),
    "nano": ({"gpu_mhz": 460.8, "emc_mhz": 800, "cpu_mhz": 921.6},
             {"gpu_mhz": 921.6, "emc_mhz": 204, "cpu_mhz": 102}),
}
BOARDS = list(CONFIGS)


def cli(root: Path, state: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, POLYTHROTTLE_ROOT=str(root), POLYTHROTTLE_STATE_DIR=str(state))
    return subprocess.run([sys.executable, "-m", "tests.fake_jetson", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def sets(config: dict) -> list[str]:
    return [a for k, v in config.items() for a in ("--set", f"{k}={v}")]


def expected_files(board: fj.FakeBoard, config: dict) -> dict[str, str]:
    """The files a config must end up in, in the kernel's units (Hz for GPU/EMC, kHz for CPU)."""
    out = {f"{board.gpu_dir}/min_freq": str(round(config["gpu_mhz"] * 1e6)),
           f"{board.gpu_dir}/max_freq": str(round(config["gpu_mhz"] * 1e6)),
           board.emc_files["rate"]: str(round(config["emc_mhz"] * 1e6)),
           board.emc_files["lock"]: "1"}
    for pd in board.online_policies:
        out[f"{pd}/scaling_min_freq"] = out[f"{pd}/scaling_max_freq"] = str(round(config["cpu_mhz"] * 1e3))
    return out


def settings(snap: dict[str, str]) -> dict[str, str]:
    """Snapshot without the files the kernel owns (current clocks follow the limits by themselves)."""
    return {p: v.strip() for p, v in snap.items() if not p.endswith("cur_freq")}


def changed(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    return {p: v for p, v in settings(after).items() if settings(before).get(p) != v}


@pytest.fixture(params=BOARDS)
def tree(request, tmp_path):
    root = tmp_path / "root"
    board = fj.build(root, request.param)
    return root, tmp_path / "state", board


def test_apply_twice_then_restore(tree):
    root, state, board = tree
    first, second = CONFIGS[board.key]
    original = fj.snapshot(root)

    r = cli(root, state, "apply", "--device", "jetson", *sets(first))
    assert r.returncode == 0, r.stderr
    expect = expected_files(board, first)
    assert changed(original, fj.snapshot(root)) == {p: v for p, v in expect.items() if settings(original)[p] != v}
    assert {p for p, _ in fj.write_log(root)} <= set(expect)
    for p, v in expect.items():
        assert fj.read(root, p) == v, p
    if board.offline_cpus:  # policies of offline clusters are left alone
        assert all(board.policy_dir(c) not in " ".join(p for p, _ in fj.write_log(root)) for c in board.offline_cpus)

    r = cli(root, state, "apply", "--device", "jetson", *sets(second))
    assert r.returncode == 0, r.stderr
    for p, v in expected_files(board, second).items():
        assert fj.read(root, p) == v, p

    r = cli(root, state, "restore", "--device", "jetson")
    assert r.returncode == 0, r.stderr
    assert settings(fj.snapshot(root)) == settings(original)  # every value back, nothing else touched
    assert not list(state.glob("*.json"))  # the saved originals are consumed
    r = cli(root, state, "restore", "--device", "jetson")
    assert r.returncode == 0 and "nothing to restore" in r.stdout


@pytest.mark.parametrize("bad", ["gpu_mhz=625", "emc_mhz=1234", "cpu_mhz=1000", "gpu_mhz=fast"])
def test_invalid_step_exits_2_and_writes_nothing(tmp_path, bad):
    root = tmp_path / "root"
    fj.build(root, "agx-orin-jp5")
    original = fj.snapshot(root)
    # a valid value of another knob first: nothing of it may be written either (a knob given twice is a
    # different error, tested with the CLI's inputs)
    valid = "cpu_mhz=499.2" if bad.startswith("gpu_mhz") else "gpu_mhz=114.75"
    r = cli(root, tmp_path / "state", "apply", "--device", "jetson", "--set", valid, "--set", bad)
    assert r.returncode == 2
    assert "not an available step" in r.stderr and "Traceback" not in r.stderr
    assert bad.split("=")[1] in r.stderr  # the bad value is named, not the valid one
    assert len(r.stderr.strip().splitlines()) == 1
    assert fj.write_log(root) == [] and fj.snapshot(root) == original
    assert not list((tmp_path / "state").glob("*.json"))


def test_invalid_step_on_every_board(tree):
    root, state, board = tree
    original = fj.snapshot(root)
    r = cli(root, state, "apply", "--device", "jetson", "--set", "cpu_mhz=1", "--set", "gpu_mhz=114.75")
    assert r.returncode == 2 and "cpu_mhz=1 is not an available step" in r.stderr
    assert fj.write_log(root) == [] and fj.snapshot(root) == original


@pytest.mark.parametrize("key", BOARDS)
def test_permission_refusal_says_root_is_needed(tmp_path, key):
    root, state = tmp_path / "root", tmp_path / "state"
    board = fj.build(root, key, nonroot=True)  # writes refused (EACCES) as for a normal user
    original = fj.snapshot(root)
    r = cli(root, state, "apply", "--device", "jetson", *sets(CONFIGS[board.key][0]))
    assert r.returncode == 4, r.stderr
    assert "root" in r.stderr and "permission denied" in r.stderr and "Traceback" not in r.stderr
    assert fj.write_log(root) == [] and fj.snapshot(root) == original
    assert not list(state.glob("*.json"))  # nothing changed, so nothing to restore later


def test_crash_between_apply_and_restore_is_recovered(tree):
    root, state, board = tree
    original = fj.snapshot(root)
    script = (
        "import sys, time\n"
        "from tests import fake_jetson as fj\n"
        "fj.install()\n"
        "from polythrottle.devices import open_device\n"
        "dev = open_device('jetson')\n"
        f"dev.apply({CONFIGS[board.key][0]!r})\n"
        "print('applied', flush=True)\n"
        "time.sleep(60)\n"
    )
    env = dict(os.environ, POLYTHROTTLE_ROOT=str(root), POLYTHROTTLE_STATE_DIR=str(state))
    p = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "applied"
        assert settings(fj.snapshot(root)) != settings(original)
        p.send_signal(signal.SIGKILL)  # no finally, no atexit: a crash
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    r = cli(root, state, "restore", "--device", "jetson")
    assert r.returncode == 0, r.stderr
    assert settings(fj.snapshot(root)) == settings(original)


def test_failed_write_midway_rolls_back(tmp_path):
    root = tmp_path / "root"
    board = fj.build(root, "agx-orin-jp5")
    original = fj.snapshot(root)
    fj.set_rules(root, fail={f"{board.policy_dir(8)}/scaling_min_freq": "EIO"})  # the last cluster fails
    r = cli(root, tmp_path / "state", "apply", "--device", "jetson", *sets(CONFIGS[board.key][0]))
    assert r.returncode != 0 and "rolled back" in r.stderr and "Input/output error" in r.stderr
    assert len(fj.write_log(root)) > 4  # GPU, EMC and two clusters were written, then undone
    assert settings(fj.snapshot(root)) == settings(original)
    assert not list((tmp_path / "state").glob("*.json"))


def test_apply_config_from_a_tune_result(tmp_path):
    root = tmp_path / "root"
    board = fj.build(root, "xavier-nx")
    result = tmp_path / "result.json"
    result.write_text('{"best": {"config": {"gpu_mhz": 599.25, "batch_size": 8}, "energy_j": 0.1}}')
    r = cli(root, tmp_path / "state", "apply", "--device", "jetson", "--config", str(result))
    assert r.returncode == 0, r.stderr
    assert "batch_size=8 is a software knob" in r.stderr
    assert fj.read(root, f"{board.gpu_dir}/max_freq") == "599250000"
    result.write_text('{"best": null}')
    r = cli(root, tmp_path / "state", "apply", "--device", "jetson", "--config", str(result))
    assert r.returncode == 2 and "no feasible config" in r.stderr


def test_devices_names_the_board_or_says_no_jetson(tmp_path):
    root = tmp_path / "root"
    fj.build(root, "agx-orin-jp6")
    r = cli(root, tmp_path / "state", "devices")
    assert r.returncode == 0, r.stderr
    assert "AGX Orin" in r.stdout and "jetson-agx-orin" in r.stdout
    for line in ("gpu_mhz", "emc_mhz", "cpu_mhz", "ina3221", "NVML reports NotSupported on Jetson"):
        assert line in r.stdout
    empty = tmp_path / "x86"
    (empty / "proc").mkdir(parents=True)
    r = cli(empty, tmp_path / "state", "devices")
    assert r.returncode == 0 and "no Jetson found" in r.stdout


def test_forced_profile_and_unknown_board(tmp_path):
    root = tmp_path / "root"
    fj.build(root, "nano")
    (root / "proc/device-tree/model").write_text("Some Other Board\x00")
    r = cli(root, tmp_path / "state", "apply", "--device", "jetson", "--set", "gpu_mhz=76.8")
    assert r.returncode != 0 and "no Jetson found" in r.stderr and "jetson:PROFILE" in r.stderr
    r = cli(root, tmp_path / "state", "apply", "--device", "jetson:jetson-nano", "--set", "gpu_mhz=76.8")
    assert r.returncode == 0, r.stderr
    r = cli(root, tmp_path / "state", "apply", "--device", "jetson:no-such-board", "--set", "gpu_mhz=76.8")
    assert r.returncode == 2 and "unknown profile" in r.stderr


def test_sigterm_during_a_session_restores(tmp_path):
    """A process holding the device (as ``tune`` does) restores on SIGTERM through its finally block."""
    root = tmp_path / "root"
    fj.build(root, "tx2")
    original = fj.snapshot(root)
    script = (
        "import sys, time\n"
        "from tests import fake_jetson as fj\n"
        "fj.install()\n"
        "from polythrottle.cli import _on_sigterm\n"
        "import signal; signal.signal(signal.SIGTERM, _on_sigterm)\n"
        "from polythrottle.devices import open_device\n"
        "dev = open_device('jetson')\n"
        "try:\n"
        "    dev.apply({'gpu_mhz': 114.75, 'emc_mhz': 204, 'cpu_mhz': 345.6})\n"
        "    print('applied', flush=True)\n"
        "    time.sleep(60)\n"
        "finally:\n"
        "    dev.close()\n"
    )
    env = dict(os.environ, POLYTHROTTLE_ROOT=str(root), POLYTHROTTLE_STATE_DIR=str(tmp_path / "state"))
    p = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "applied"
    time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    p.wait(20)
    assert settings(fj.snapshot(root)) == settings(original)
    assert not list((tmp_path / "state").glob("*.json"))


# ----- tune on a fake board: restores on exit and on SIGTERM, keeps with --apply ----------------------
TUNE = ["tune", "--device", "jetson", "--workload", "builtin:mlp", "--slo-ms", "1000", "--window-s", "0.2",
        "--repeats", "1", "--json"]


def test_tune_restores_on_exit_and_keeps_with_apply(tmp_path):
    pytest.importorskip("polythrottle.measure.harness")
    root, state = tmp_path / "root", tmp_path / "state"
    board = fj.build(root, "xavier-nx")
    original = fj.snapshot(root)
    r = cli(root, state, *TUNE, "--budget", "2", "--seed", "0", timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(fj.write_log(root)) > 0  # it did set clocks
    assert settings(fj.snapshot(root)) == settings(original)
    assert not list(state.glob("*.json"))

    result = tmp_path / "out.json"
    r = cli(root, state, *TUNE, "--budget", "2", "--seed", "0", "--apply", "--out", str(result), timeout=300)
    assert r.returncode == 0, r.stderr
    import json

    best = json.loads(result.read_text())["best"]["config"]
    assert fj.read(root, f"{board.gpu_dir}/max_freq") == str(round(best["gpu_mhz"] * 1e6))
    assert list(state.glob("*.json"))  # originals kept for `restore`
    r = cli(root, state, "restore", "--device", "jetson")
    assert r.returncode == 0 and settings(fj.snapshot(root)) == settings(original)


def test_tune_restores_on_sigterm(tmp_path):
    pytest.importorskip("polythrottle.measure.harness")
    root, state = tmp_path / "root", tmp_path / "state"
    fj.build(root, "agx-orin-jp6")
    original = fj.snapshot(root)
    env = dict(os.environ, POLYTHROTTLE_ROOT=str(root), POLYTHROTTLE_STATE_DIR=str(state))
    p = subprocess.Popen([sys.executable, "-m", "tests.fake_jetson", *TUNE, "--budget", "50"], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not fj.write_log(root) and time.monotonic() < deadline:  # wait until clocks were changed
            time.sleep(0.2)
        assert fj.write_log(root), "tune never set a clock"
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143 and "terminated (settings restored)" in err
    assert settings(fj.snapshot(root)) == settings(original)
    assert not list(state.glob("*.json"))
