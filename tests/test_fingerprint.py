"""Model-file fingerprints: what is refused, in one line (more in tests/history/test_store.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from polythrottle.errors import BadInputError
from polythrottle.fingerprint import fingerprint_files


def test_a_fifo_or_a_device_is_named_as_such_not_missing(tmp_path: Path) -> None:
    """`--model-file /dev/zero` said "model file /dev/zero not found" (it is never read: it has no end)."""
    os.mkfifo(tmp_path / "pipe")
    for path in (tmp_path / "pipe", Path("/dev/zero")):
        with pytest.raises(BadInputError, match=f"model file {path} is not a regular file or a directory"):
            fingerprint_files([path])
    with pytest.raises(BadInputError, match="none.bin not found"):
        fingerprint_files([tmp_path / "none.bin"])
