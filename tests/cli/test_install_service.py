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
