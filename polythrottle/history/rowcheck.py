"""Values of stored rows, checked as they are read: a database changed by hand gives one line naming the
row and column (``HistoryError``, exit 2), never a traceback deep in the tuner."""

from __future__ import annotations

import json
import math
from typing import Any

from polythrottle.errors import brief
from polythrottle.history.errors import HistoryError
from polythrottle.space import Config


class RowCheck:
    """The columns of one row of ``where`` (the history's masked URL), ``what`` naming the row."""

    def __init__(self, where: str, what: str) -> None:
        self.where, self.what = where, what

    def bad(self, column: str, value: Any, expected: str) -> HistoryError:
        return HistoryError(f"history database {self.where}: {self.what}: {column} is {brief(value, 40)}, not {expected}; "
                            "the database was changed by hand: move it away to start a new history")

    def number(self, column: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.bad(column, value, "a finite number")
        return float(value)

    def positive(self, column: str, value: Any) -> float:
        x = self.number(column, value)
        if x <= 0:
            raise self.bad(column, value, "a positive number")
        return x

    def optional(self, column: str, value: Any) -> float | None:
        return None if value is None else self.number(column, value)

    def integer(self, column: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.bad(column, value, "an integer")
        return value

    def text(self, column: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.bad(column, value, "text")
        return value

    def mapping(self, column: str, value: Any) -> dict[str, Any]:
        try:
            x = json.loads(value) if isinstance(value, str) else None
        except (ValueError, RecursionError):
            x = None
        if not isinstance(x, dict):
            raise self.bad(column, value, "a JSON object")
        return x

    def names(self, column: str, value: Any) -> list[str]:
        try:
            x = json.loads(value) if isinstance(value, str) else None
        except (ValueError, RecursionError):
            x = None
        if not isinstance(x, list) or not all(isinstance(v, str) for v in x):
            raise self.bad(column, value, "a JSON list of names")
        return x

    def config(self, column: str, value: Any) -> Config:
        x = self.mapping(column, value)
        for k, v in x.items():
            if isinstance(v, bool) or not isinstance(v, (str, int, float)) or (
                    isinstance(v, float) and not math.isfinite(v)):
                raise self.bad(f"{column}.{brief(k, 30)}", v, "a knob value")
        return x


__all__ = ["RowCheck"]
