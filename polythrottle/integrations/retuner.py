"""What every framework callback does after a checkpoint is saved: re-tune, or notify the daemon.

Exactly one mode: ``device`` + ``slo_ms`` re-tunes in this process (``polythrottle.retune``, warm
started from the history); ``notify=True`` sends ``model-updated`` with the new version to the daemon's
control socket (``polythrottle.daemon.client``; the checkpoint's path is not sent: the daemon only accepts
files of its own config, and the version already says what changed). The new model version is the
fingerprint of the saved weights. The arguments are checked when the retuner is made (BadInputError), not
at the first checkpoint; errors after a checkpoint are logged and kept in ``last_error`` (training goes
on) unless ``raise_errors``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from polythrottle.checks import is_int
from polythrottle.errors import BadInputError, brief

log = logging.getLogger("polythrottle.integrations")


@dataclass
class CheckpointRetuner:
    """Re-tune or notify after every ``every``-th checkpoint.

    device/slo_ms/budget/knobs/workload/history: as for ``polythrottle.retune`` (re-tune mode).
    notify/socket_path: notify mode. background: re-tune in a thread (training is not blocked; one re-tune
    at a time, a checkpoint saved meanwhile is re-tuned after it; the process waits for a re-tune in
    progress before it exits, so the device is restored). tune_kwargs: other ``polythrottle.tune`` arguments.
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
    _pending: str | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        retune_mode = self.device is not None or self.slo_ms is not None
        if retune_mode == self.notify:
            raise BadInputError("give either device and slo_ms (re-tune here) or notify=True (tell the daemon)")
        if retune_mode and (self.device is None or self.slo_ms is None):
            raise BadInputError("re-tuning needs both device and slo_ms")
        if not is_int(self.every) or self.every < 1:
            raise BadInputError(f"every must be an integer >= 1, got {brief(self.every, 40)}")
        if retune_mode:
            self._check_retune_arguments()
        else:
            from polythrottle.daemon.client import socket_path

            socket_path(self.socket_path)  # a path (the daemon itself is reached at the checkpoint)

    def _check_retune_arguments(self) -> None:
        """The re-tune's arguments as ``tune`` checks them, through ``tune``'s own pre-flight (the spec, the
        carbon intensity, on_record/state_dir, the history's form; knobs and baseline on a device that has
        no hardware), so that a typo fails now and not at the first checkpoint."""
        import inspect

        from polythrottle.api import check_history_arg, check_hooks, check_on_device, open_device, tune, tune_spec
        from polythrottle.devices.registry import SIMULATED_SCHEMES, checked_spec

        if not isinstance(self.tune_kwargs, Mapping):
            raise BadInputError(f"tune_kwargs must be a mapping of tune() arguments, got {brief(self.tune_kwargs, 40)}")
        own = {"device", "slo_ms", "budget", "knobs", "workload", "history", "model_version", "model_files", "model",
               "warm_start"}
        allowed = set(inspect.signature(tune).parameters) - own
        for k in self.tune_kwargs:
            if k not in allowed:
                why = "is set by the retuner" if k in own else "is not an argument of polythrottle.tune"
                raise BadInputError(f"tune_kwargs: {brief(k, 40)} {why}")
        if self.history is None or self.history is False:
            raise BadInputError("history: re-tuning needs a history (the warm start reads the previous version's)")
        kw = dict(self.tune_kwargs)
        hooks = {k: kw.pop(k, None) for k in ("on_record", "state_dir")}
        if not isinstance(self.device, str):  # a spec, opened and closed by each re-tune
            raise BadInputError(f"device=: must be text, got {brief(self.device, 40)}")
        assert self.slo_ms is not None
        spec, _ = tune_spec(self.device, self.slo_ms, budget=self.budget, workload=self.workload, knobs=self.knobs,
                            **kw)  # type: ignore[arg-type]
        check_hooks(hooks["on_record"], hooks["state_dir"], "tune_kwargs: {}".format)
        check_history_arg(self.history, "history:", optional=False)  # the database is opened at the checkpoint
        scheme, _ = checked_spec(spec.device)
        if scheme in SIMULATED_SCHEMES:  # no hardware: opened and closed to check the workload, knobs, baseline
            with open_device(spec.device, workload=spec.workload, slo_metric=spec.slo_metric) as dev:
                check_on_device(dev, spec)

    def checkpoint_saved(self, *, path: str | os.PathLike[str] | None = None, model: Any = None,
                         state_dict: Mapping[str, Any] | None = None, model_version: str | None = None) -> None:
        """Call after a checkpoint was written. The version is ``model_version``, else the fingerprint of
        ``state_dict`` or ``model``'s weights, else of the files at ``path``."""
        self._saved += 1
        if self._saved % self.every:
            return
        try:
            version = model_version or self._fingerprint(path, model, state_dict)
            if self.background:
                self._submit(version)
            else:
                self._act(version)
        except Exception as e:  # noqa: BLE001 - as in the background worker: recorded, training goes on
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

    def _act(self, version: str) -> None:
        if self.notify:
            from polythrottle.daemon.client import notify_model_updated

            self.results.append(notify_model_updated(self.socket_path, model_version=version))
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

    def _submit(self, version: str) -> None:
        with self._lock:
            self._pending = version
            if self._thread is not None and self._thread.is_alive():
                return  # the running worker picks the newest pending checkpoint up
            # not a daemon thread: the interpreter would stop it mid-tune at exit, leaving the clocks set
            self._thread = threading.Thread(target=self._worker, name="polythrottle-retune", daemon=False)
            self._thread.start()

    def _worker(self) -> None:
        while True:
            with self._lock:
                job, self._pending = self._pending, None
            if job is None:
                return
            try:
                self._act(job)
            except Exception as e:  # noqa: BLE001 - no caller to raise to: recorded in last_error, training goes on
                self.last_error = e
                log.warning("polythrottle: after checkpoint: %s", e)

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait for a background re-tune to finish."""
        t = self._thread
        if t is not None:
            t.join(timeout_s)


__all__ = ["CheckpointRetuner"]
