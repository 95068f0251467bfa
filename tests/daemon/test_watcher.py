"""Model-file watching by polling ``stat``."""

from __future__ import annotations

import os

from polythrottle.daemon.watcher import ModelWatcher


def test_watcher_reports_a_change_once_it_settles(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"a")
    w = ModelWatcher([f])
    assert not w.poll()
    f.write_bytes(b"bb")
    assert not w.poll()  # changed: wait one interval for it to settle
    assert w.poll()
    assert not w.poll()  # reported once
    f.unlink()
    assert not w.poll() and w.poll() and w.missing == [f]
    tmp = tmp_path / "new"
    tmp.write_bytes(b"ccc")
    os.replace(tmp, f)  # atomic replace: a new inode
    assert not w.poll() and w.poll() and not w.missing

