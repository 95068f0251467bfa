"""``open_history``'s own arguments: a wrong type or value is one HistoryError line, never a bare
TypeError/ValueError from deep in a driver."""

from __future__ import annotations

import pytest

from polythrottle.history import HistoryError, open_history

PG = "postgresql://u:secret@127.0.0.1:1/db"  # nothing listens on port 1: never reached


@pytest.mark.parametrize("kwargs, message", [
    ({"spool_dir": 5}, "spool_dir must be a path"),
    ({"spool_dir": b"/tmp"}, "spool_dir must be a path"),
    ({"timeout_s": "x"}, "timeout_s must be a number of seconds"),
    ({"timeout_s": float("nan")}, "timeout_s must be a number of seconds"),
    ({"timeout_s": -1}, "timeout_s must be a number of seconds"),
    ({"retry_s": "soon"}, "retry_s must be a number of seconds"),
])
@pytest.mark.parametrize("target", [PG, "h.sqlite"])
def test_bad_arguments_are_one_line(target: str, kwargs: dict, message: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HistoryError, match=message) as e:
        open_history(target, **kwargs)
    assert "secret" not in str(e.value)
    assert not (tmp_path / "h.sqlite").exists()
