"""``polythrottle install-service --root``: a root that cannot hold the files is one line, exit 2."""

import os

import pytest

from polythrottle.cli import main


@pytest.mark.parametrize("make_root", [
    lambda tmp: tmp.joinpath("a-file").write_text("x") and tmp / "a-file",              # a file, not a directory
    lambda tmp: tmp.joinpath("a-file").write_text("x") and tmp / "a-file" / "below",    # under a file
])
def test_root_that_is_not_a_directory(tmp_path, capsys, make_root):
    exe = tmp_path / "polythrottle"
    exe.write_text("#!/bin/sh\n")
    os.chmod(exe, 0o755)
    root = make_root(tmp_path)
    code = main(["install-service", "--exe", str(exe), "--root", str(root), "--no-start"])
    _, err = capsys.readouterr()
    assert code == 2 and "--root" in err and err.count("\n") == 1 and "NotADirectoryError" not in err


def test_the_unit_names_the_executable_only_in_exec_start():
    """The unit's first comment said "which replaces /usr/bin/polythrottle with the path of the polythrottle
    executable": the placeholder it mentioned was substituted too."""
    from pathlib import Path

    from polythrottle.cli.install_service import unit_text

    exe = Path("/opt/pt/bin/polythrottle")
    unit = unit_text(exe)
    assert [line for line in unit.splitlines() if str(exe) in line] == [
        f"ExecStart={exe} daemon --config /etc/polythrottle/daemon.yaml"]
    assert "@POLYTHROTTLE@" not in unit


def _exe(tmp_path):
    exe = tmp_path / "polythrottle"
    exe.write_text("#!/bin/sh\n")
    os.chmod(exe, 0o755)
    return exe


def test_a_new_config_that_does_not_check_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """``--device bogus`` wrote the config and the unit, then failed the check: a half-installed service."""
    monkeypatch.setenv("POLYTHROTTLE_STATE_DIR", str(tmp_path / "state"))
    root = tmp_path / "root"
    code = main(["install-service", "--exe", str(_exe(tmp_path)), "--root", str(root), "--device", "bogus",
                 "--no-start"])
    out, err = capsys.readouterr()
    cfg = root / "etc" / "polythrottle" / "daemon.yaml"
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{cfg} from --device bogus: unknown device 'bogus'" in err and "nothing was installed" in err
    assert not root.exists() and not (tmp_path / "state").exists() and out == ""


def test_a_new_config_from_options_that_checks_is_installed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POLYTHROTTLE_STATE_DIR", str(tmp_path / "state"))
    root = tmp_path / "root"
    code = main(["install-service", "--exe", str(_exe(tmp_path)), "--root", str(root), "--device",
                 "sim:jetson-tx2", "--no-start"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "device: sim:jetson-tx2" in (root / "etc/polythrottle/daemon.yaml").read_text()
    assert (root / "etc/systemd/system/polythrottle.service").is_file() and ": OK (device sim:jetson-tx2" in out


def _existing_config(tmp_path, monkeypatch, text):
    """A --root under ``tmp_path`` whose daemon config already exists with ``text``: (root, config path)."""
    monkeypatch.setenv("POLYTHROTTLE_STATE_DIR", str(tmp_path / "state"))
    root = tmp_path / "root"
    cfg = root / "etc" / "polythrottle" / "daemon.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(text)
    return root, cfg


def test_an_existing_config_is_kept_and_checked_after_the_install(tmp_path, capsys, monkeypatch):
    root, cfg = _existing_config(tmp_path, monkeypatch, "device: bogus\nworkload: efficientnet-b0\nslo_ms: 25\n")
    code = main(["install-service", "--exe", str(_exe(tmp_path)), "--root", str(root), "--device", "bogus",
                 "--no-start"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and f"; fix {cfg}, then: systemctl enable" in err, err
    assert "kept the existing config" in out and (root / "etc/systemd/system/polythrottle.service").is_file()
    assert cfg.read_text().startswith("device: bogus\n")


def test_an_existing_config_naming_a_device_this_machine_lacks_says_how_to_go_on(tmp_path, capsys, monkeypatch):
    """A device error in the check after the install kept its exit code but lost the "fix ..., then" hint."""
    root, cfg = _existing_config(tmp_path, monkeypatch, "device: nvml:7\nworkload: builtin:mlp\nslo_ms: 25\n")
    code = main(["install-service", "--exe", str(_exe(tmp_path)), "--root", str(root), "--no-start"])
    out, err = capsys.readouterr()
    assert code == 5 and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    assert f"; fix {cfg}, then: systemctl enable --now polythrottle" in err
    assert "kept the existing config" in out
