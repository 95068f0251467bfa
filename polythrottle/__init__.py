"""PolyThrottle: lowest energy per inference under a latency SLO, by constrained Bayesian optimization.

Python API (see ``polythrottle.api``): ``open_device``, ``tune``, ``retune``, ``apply``, ``restore``,
``applied`` (context manager), ``HistoryStore``; fine-tuning scheduling in ``polythrottle.finetune``;
training-framework callbacks in ``polythrottle.integrations``.

The names load when first used: ``import polythrottle.cli`` (the console script) loads neither numpy nor
the API, so a Ctrl-C while the command line starts lands in its handler (one line, exit 130).
"""

from __future__ import annotations

import importlib

from polythrottle._version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the console script starts here

if TYPE_CHECKING:
    from polythrottle.api import applied, apply, model_version_of, open_device, restore, retune, tune
    from polythrottle.history import HistoryKey, HistoryStore, open_history
    from polythrottle.tuning.tuner import TuneResult

_LAZY = {
    **dict.fromkeys(("applied", "apply", "model_version_of", "open_device", "restore", "retune", "tune"),
                    "polythrottle.api"),
    **dict.fromkeys(("HistoryKey", "HistoryStore", "open_history"), "polythrottle.history"),  # SQLAlchemy: on use
    "TuneResult": "polythrottle.tuning.tuner",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
