"""What every framework callback does after a checkpoint is saved: re-tune, or notify the daemon.

Exactly one mode: ``device`` + ``slo_ms`` re-tunes in this process (``polythrottle.retune``, warm
started from the history); ``notify=True`` sends ``model-updated`` to the daemon's control socket
(``polythrottle.daemon.client``). The new model version is the fingerprint of the saved weights.
Errors are logged and kept in ``last_error`` (training goes on) unless ``raise_errors``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polythrottle.errors import BadInputError, PolyThrottleError

log = logging.getLogger("polythrottle.integrations")


@dataclass
class CheckpointRetuner:
    """Re-tune or notify after every ``every``-th checkpoint.

    device/slo_ms/budget/knobs/workload/history: as for ``polythrottle.retune`` (re-tune mode).
    notify/socket_path: notify mode. background: re-tune in a daemon thread (training is not blocked;
    one re-tune at a time, a checkpoint saved meanwhile is re-tuned after it).
    """

    device: str | None = None
    slo_ms: float | None = None
    budget: int = 10
    knobs: Sequence[str] | None = None
    workload: str | None = None
    history: str | os.PathLike[str] | bool = True
    notify: bool = False
    socket_path: str | os.PathLike[str] | None = None
    every: int = 1
    background: bool = False
    raise_errors: bool = False
    tune_kwargs: Mapping[str, Any] = field(default_factory=dict)
    results: list[Any] = field(default_factory=list, init=False)
    last_error: BaseException | None = field(default=None, init=False)
    _saved: int = field(default=0, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _pending: tuple[str, list[str]] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        retune_mode = self.device is not None or self.slo_ms is not None
        if retune_mode == self.notify:
            raise BadInputError("give either device and slo_ms (re-tune here) or notify=True (tell the daemon)")
        if retune_mode and (self.device is None or self.slo_ms is None):
            raise BadInputError("re-tuning needs both device and slo_ms")
        if self.every < 1:
            raise BadInputError(f"every must be >= 1, got {self.every}")

    def checkpoint_saved(self, *, path: str | os.PathLike[str] | None = None, model: Any = None,
                         state_dict: Mapping[str, Any] | None = None, model_version: str | None = None) -> None:
        """Call after a checkpoint was written. The version is ``model_version``, else the fingerprint of
        ``state_dict`` or ``model``'s weights, else of the files at ``path``."""
        self._saved += 1
        if self._saved % self.every:
            return
        try:
            version = model_version or self._fingerprint(path, model, state_dict)
            files = [str(path)] if path is not None and Path(path).exists() else []
            if self.background:
                self._submit(version, files)
            else:
                self._act(version, files)
        except PolyThrottleError as e:
            self._fail(e)

    @staticmethod
    def _fingerprint(path: Any, model: Any, state_dict: Mapping[str, Any] | None) -> str:
        from polythrottle.fingerprint import fingerprint_files, fingerprint_state_dict

        if state_dict is not None:
            return fingerprint_state_dict(state_dict)
        if model is not None:
            return fingerprint_state_dict(model)
        if path is not None:
            return fingerprint_files([path])
        raise BadInputError("a checkpoint callback needs the model, its state_dict or the checkpoint path")

    def _act(self, version: str, files: list[str]) -> None:
        if self.notify:
            from polythrottle.daemon.client import notify_model_updated

            self.results.append(notify_model_updated(self.socket_path, model_version=version, model_files=files))
        else:
            from polythrottle.api import retune

            assert self.device is not None and self.slo_ms is not None
            self.results.append(retune(self.device, self.slo_ms, budget=self.budget, knobs=self.knobs,
                                       workload=self.workload, history=self.history, model_version=version,
                                       **dict(self.tune_kwargs)))
        log.info("polythrottle: handled checkpoint of model version %s", version)

    def _fail(self, e: BaseException) -> None:
        self.last_error = e
        log.warning("polythrottle: after checkpoint: %s", e)
        if self.raise_errors:
            raise e

    def _submit(self, version: str, files: list[str]) -> None:
        with self._lock:
            self._pending = (version, files)
            if self._thread is not None and self._thread.is_alive():
                return  # the running worker picks the newest pending checkpoint up
            self._thread = threading.Thread(target=self._worker, name="polythrottle-retune", daemon=True)
            self._thread.start()

    def _worker(self) -> None:
        while True:
            with self._lock:
                job, self._pending = self._pending, None
            if job is None:
                return
            try:
                self._act(*job)
            except PolyThrottleError as e:  # no caller to raise to: recorded in last_error
                self.last_error = e
                log.warning("polythrottle: after checkpoint: %s", e)

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait for a background re-tune to finish."""
        t = self._thread
        if t is not None:
            t.join(timeout_s)


__all__ = ["CheckpointRetuner"]
