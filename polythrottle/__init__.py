"""PolyThrottle: lowest energy per inference under a latency SLO, by constrained Bayesian optimization.

Python API (see ``polythrottle.api``): ``open_device``, ``tune``, ``retune``, ``apply``, ``restore``,
``applied`` (context manager), ``HistoryStore``; fine-tuning scheduling in ``polythrottle.finetune``;
training-framework callbacks in ``polythrottle.integrations``.
"""

from polythrottle._version import __version__
from polythrottle.api import applied, apply, model_version_of, open_device, restore, retune, tune
from polythrottle.history import HistoryKey, HistoryStore
from polythrottle.tuner import TuneResult

__all__ = [
    "HistoryKey",
    "HistoryStore",
    "TuneResult",
    "__version__",
    "applied",
    "apply",
    "model_version_of",
    "open_device",
    "restore",
    "retune",
    "tune",
]
