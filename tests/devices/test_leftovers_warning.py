"""--no-clock-control restores nothing (a restore is a write): every backend says, in the same one line,
when a run that did not finish left settings changed, and says nothing about kept settings."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from polythrottle.devices.originals import OriginalsStore
from polythrottle.devices.registry import DeviceOptions
from tests import fake_jetson as fj

LINE = re.compile(r"polythrottle: warning: (\d+) setting\(s\) of (\S+) were left changed by a run that did not "
                  r"finish \(pid (\d+)\): (.+); --no-clock-control leaves them as they are: "
                  r"`polythrottle restore --device (\S+)` puts them back")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _jetson(tmp_path, monkeypatch):
    from polythrottle.devices.jetson import open_device

    root = tmp_path / "root"
    fj.build(root, "agx-orin-jp5")
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    monkeypatch.setattr("polythrottle.clocks.sysfs.IO_CLASS", fj.FakeKernelIO)
    return lambda opts: open_device("", opts), lambda dev: {"gpu_mhz": 114.75}, "jetson"


def _nvml(tmp_path, monkeypatch):
    from polythrottle.devices.nvml import open_device
    from tests.fake_nvml import FakeGpu

    (tmp_path / "sysroot").mkdir()
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(tmp_path / "sysroot"))
    FakeGpu().install(monkeypatch.setattr)
    return (lambda opts: open_device("0", opts, torch_device="cpu"),
            lambda dev: {**dev.default_config(), "gpu_mhz": 1005}, "nvml:0")  # NVML applies whole configs


@pytest.mark.parametrize("backend", [_jetson, _nvml], ids=["jetson", "nvml"])
def test_no_clock_control_warns_about_a_crashed_runs_leftovers_in_one_format(tmp_path, monkeypatch, capsys, backend):
    open_dev, change, device_arg = backend(tmp_path, monkeypatch)
    opts = DeviceOptions(state_dir=tmp_path / "state")
    crashed = open_dev(opts)
    crashed.apply(change(crashed))
    device_id = crashed.originals_location().device_id
    store = OriginalsStore(opts.state_dir)
    dead = _dead_pid()
    store.record(device_id, {}, meta={"pid": dead})  # its owner died without restoring
    saved = store.originals(device_id)
    capsys.readouterr()

    dev = open_dev(DeviceOptions(state_dir=opts.state_dir, no_clock_control=True))
    err = capsys.readouterr().err
    dev.close()
    assert err.count("\n") == 1, err
    m = LINE.fullmatch(err.strip())
    assert m is not None, err
    assert (int(m[1]), m[2], int(m[3]), m[5]) == (len(saved), device_id, dead, device_arg)
    assert all(k in m[4] for k in saved)
    assert store.originals(device_id) == saved  # left as they are

    store.record(device_id, {}, meta={"kept": True})  # a kept apply is the user's choice, not a leftover
    dev = open_dev(DeviceOptions(state_dir=opts.state_dir, no_clock_control=True))
    dev.close()
    assert capsys.readouterr().err == ""
    crashed.restore_saved()
    crashed.close()
