"""Atomic file replacement: the target is either the old file or the whole new one, never half."""

from __future__ import annotations

import os
import stat

import pytest

from polythrottle.atomicfile import atomic_write_text, atomic_writer


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_replaces_the_content_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert _leftovers(tmp_path) == []


def test_an_error_while_writing_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target) as f:
        f.write("half of a resu")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_a_new_file_gets_the_umask_mode_and_a_replaced_one_keeps_its_own(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.txt"
        atomic_write_text(fresh, "x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # not mkstemp's 0600
        kept = tmp_path / "kept.txt"
        kept.write_text("x")
        kept.chmod(0o640)
        atomic_write_text(kept, "y")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_an_explicit_mode_wins(tmp_path):
    target = tmp_path / "private.json"
    target.write_text("{}")
    target.chmod(0o644)
    atomic_write_text(target, "{}", mode=0o600, sync_dir=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_an_unwritable_directory_raises_oserror_and_changes_nothing(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    d = tmp_path / "ro"
    d.mkdir()
    (d / "f").write_text("old")
    d.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            atomic_write_text(d / "f", "new")
        assert (d / "f").read_text() == "old"
    finally:
        d.chmod(0o700)
