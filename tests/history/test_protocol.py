"""polythrottle.history.protocol: what counts as a history store (the API and the retuner ask the same)."""

from __future__ import annotations

from pathlib import Path

from polythrottle.history import HistoryStore
from polythrottle.history.protocol import is_history


class _Partial:
    def begin_tune(self) -> None: ...

    add_measurement = "not callable"

    def observations(self) -> None: ...


def test_is_history(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite")
    try:
        assert is_history(store)
    finally:
        store.close()
    assert not is_history(object())
    assert not is_history(_Partial())
    assert not is_history("h.sqlite") and not is_history(True)
