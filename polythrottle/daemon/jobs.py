"""The daemon's job queue: work for the one thread that owns the device, with its coalescing rules.

Jobs run one at a time, in order. What may be queued together:

- ``start`` (bring the device up) is queued once, first, and never dropped;
- a queued ``model`` job absorbs a new one (one re-check covers both; ``force`` if either asked for it,
  the newer version or files when the newer one names them);
- a ``reload`` replaces everything queued but ``start`` (the old config's work is moot under the new one).

Thread-safe; ``get`` blocks until a job is queued, ``timeout`` passes or the queue is closed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polythrottle.daemon.config import DaemonConfig

START = "start"
MODEL = "model"
RELOAD = "reload"
KINDS = (START, MODEL, RELOAD)


@dataclass
class Job:
    """Work for the worker. kind: ``start``, ``model`` (re-check the model, re-tune if it changed: the
    given version, else the fingerprint of ``model_files``, else of the configured files), ``reload``
    (switch to ``config``). ``id`` orders jobs (``status`` reports the last one done)."""

    id: int
    kind: str
    reason: str
    model_version: str | None = None
    model_files: list[str] | None = None
    force: bool = False
    config: DaemonConfig | None = None


class JobQueue:
    """See the module docstring."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._jobs: list[Job] = []
        self._next_id = 1
        self._closed = False

    def put(self, kind: str, reason: str, *, model_version: str | None = None, model_files: list[str] | None = None,
            force: bool = False, config: DaemonConfig | None = None) -> int:
        """Queue a job (or fold it into a queued one, see the module docstring); returns the id that reports
        it done. Raises ValueError for an unknown kind."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        with self._cv:
            if kind == RELOAD:
                self._jobs = [j for j in self._jobs if j.kind == START]
            elif kind == MODEL:
                for j in self._jobs:
                    if j.kind == MODEL:
                        j.reason, j.force = reason, j.force or force
                        if model_version or model_files:
                            j.model_version, j.model_files = model_version, model_files
                        return j.id
            job = Job(self._next_id, kind, reason, model_version, model_files, force, config)
            self._next_id += 1
            self._jobs.append(job)
            self._cv.notify_all()
            return job.id

    def get(self, timeout_s: float) -> Job | None:
        """The next job; None after ``timeout_s`` seconds without one, or once the queue is closed."""
        with self._cv:
            if not self._jobs and not self._closed:
                self._cv.wait(timeout_s)
            return self._jobs.pop(0) if self._jobs and not self._closed else None

    def close(self) -> None:
        """Stop handing out jobs (the daemon is stopping); wakes a waiting ``get``."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def __len__(self) -> int:
        with self._cv:
            return len(self._jobs)

    def pending(self) -> list[Job]:
        """A copy of the queued jobs, first first."""
        with self._cv:
            return list(self._jobs)


__all__ = ["KINDS", "MODEL", "RELOAD", "START", "Job", "JobQueue"]
