"""The saved-originals store: where it lives, first value wins, atomic files, locking, bad files."""

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from polythrottle.devices.originals import OriginalsStore, default_state_dir
from polythrottle.errors import DeviceError
from polythrottle.paths import SYSTEM_STATE_DIR as ROOT_STATE_DIR


def test_default_dir_env_root_and_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYTHROTTLE_STATE_DIR", str(tmp_path / "env"))
    assert default_state_dir() == tmp_path / "env"
    monkeypatch.delenv("POLYTHROTTLE_STATE_DIR")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_state_dir() == ROOT_STATE_DIR
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "polythrottle"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "polythrottle"


def test_first_value_wins_and_forget(tmp_path):
    s = OriginalsStore(tmp_path)
    assert s.record("jetson", {"/a": "1", "/b": "2"}) == ["/a", "/b"]
    assert s.record("jetson", {"/a": "9", "/c": "3"}) == ["/c"]  # /a keeps its original
    assert s.originals("jetson") == {"/a": "1", "/b": "2", "/c": "3"}
    # a new process (a new store object) sees the same originals
    assert OriginalsStore(tmp_path).originals("jetson")["/a"] == "1"
    s.forget("jetson", ["/a"])
    assert s.originals("jetson") == {"/b": "2", "/c": "3"}
    s.forget("jetson")
    assert s.originals("jetson") == {}
    assert not s.path("jetson").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_devices_are_separate_and_ids_are_safe(tmp_path):
    s = OriginalsStore(tmp_path)
    s.record("nvml:0", {"gpu_locked_clocks": [1000, 1000]})
    s.record("jetson@/tmp/x y", {"/a": "1"})
    assert s.originals("nvml:0") == {"gpu_locked_clocks": [1000, 1000]}
    assert sorted(s.device_ids()) == ["jetson@/tmp/x y", "nvml:0"]
    assert all("/" not in p.name and " " not in p.name for p in tmp_path.iterdir())


def test_malformed_state_file_is_one_clear_error(tmp_path):
    s = OriginalsStore(tmp_path)
    s.path("jetson").parent.mkdir(parents=True, exist_ok=True)
    s.path("jetson").write_text("{not json")
    with pytest.raises(DeviceError, match="unreadable"):
        s.originals("jetson")
    s.path("jetson").write_text(json.dumps({"device": "jetson"}))
    with pytest.raises(DeviceError, match="malformed"):
        s.originals("jetson")


def _record_many(directory: str, worker: int, n: int) -> None:
    s = OriginalsStore(directory)
    for i in range(n):
        with s.lock("jetson"):
            s.record("jetson", {f"/w{worker}/{i}": str(i), "/shared": str(worker)})


def test_lock_serialises_processes(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(str(tmp_path), w, 25)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    orig = OriginalsStore(tmp_path).originals("jetson")
    assert len(orig) == 3 * 25 + 1  # no update lost to a race
    assert orig["/shared"] in {"0", "1", "2"}


def test_unwritable_state_dir_says_what_to_do(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    s = OriginalsStore(Path(blocker) / "sub")  # a directory under a regular file cannot exist
    with pytest.raises(DeviceError, match="state directory"):
        s.record("jetson", {"/a": "1"})


def test_a_file_names_its_device(tmp_path):
    s = OriginalsStore(tmp_path)
    s.record("jetson@/a:b", {"/x": "1"})
    assert s.path("jetson@/a_b") == s.path("jetson@/a:b")  # same file name, different device
    with pytest.raises(DeviceError, match="belong to"):
        s.originals("jetson@/a_b")
