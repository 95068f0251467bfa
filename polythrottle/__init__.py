"""PolyThrottle: lowest energy per inference under a latency SLO, by constrained Bayesian optimization.

Python API (see ``polythrottle.api``): ``open_device``, ``tune``, ``retune``, ``apply``, ``restore``,
``applied`` (context manager), ``HistoryStore``; fine-tuning scheduling in ``polythrottle.finetune``;
training-framework callbacks in ``polythrottle.integrations``.
"""

from polythrottle._version import __version__
from polythrottle.api import (
    applied,
    apply,
    model_version_of,
    open_device,
    restore,
    retune,
    tune,
)
from polythrottle.history import HistoryKey
from polythrottle.tuner import TuneResult


def __getattr__(name: str) -> object:
    if name in ("HistoryStore", "open_history"):  # loads SQLAlchemy: only when used
        from polythrottle import history

        return getattr(history, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HistoryKey",
    "HistoryStore",
    "TuneResult",
    "__version__",
    "applied",
    "apply",
    "model_version_of",
    "open_device",
    "open_history",
    "restore",
    "retune",
    "tune",
]
