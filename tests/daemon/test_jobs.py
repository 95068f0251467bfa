"""The job queue: order, ids, and the coalescing rules (model jobs merge, a reload replaces what is queued)."""

from __future__ import annotations

import threading
import time

import pytest

from polythrottle.daemon.jobs import MODEL, RELOAD, START, JobQueue


def test_jobs_come_out_in_order_with_increasing_ids():
    q = JobQueue()
    a, b = q.put(START, "up"), q.put(MODEL, "changed", model_version="v2")
    assert (a, b) == (1, 2) and len(q) == 2
    first, second = q.get(0), q.get(0)
    assert (first.id, first.kind) == (1, START) and (second.kind, second.model_version) == (MODEL, "v2")
    assert q.get(0.01) is None and len(q) == 0


def test_a_queued_model_job_absorbs_the_next():
    q = JobQueue()
    a = q.put(MODEL, "file changed")
    assert q.put(MODEL, "request", force=True) == a  # force sticks, the version stays unknown
    assert q.put(MODEL, "request", model_version="v3") == a  # the newer one names the version
    assert q.put(MODEL, "file changed again") == a  # names nothing: keeps v3
    (job,) = q.pending()
    assert (job.reason, job.force, job.model_version, job.model_files) == ("file changed again", True, "v3", None)
    assert q.put(MODEL, "files", model_files=["/m/a.bin"]) == a
    assert q.pending()[0].model_version is None and q.pending()[0].model_files == ["/m/a.bin"]


def test_a_reload_replaces_everything_queued_but_start():
    q = JobQueue()
    q.put(START, "up")
    q.put(MODEL, "changed")
    q.put(RELOAD, "first reload", config=None)
    last = q.put(RELOAD, "second reload", config=None)
    assert [(j.kind, j.reason) for j in q.pending()] == [(START, "up"), (RELOAD, "second reload")]
    assert q.pending()[-1].id == last
    assert q.put(MODEL, "after the reload") == last + 1  # a new model job, after the reload


def test_get_waits_for_a_job_and_close_wakes_it():
    q = JobQueue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(10)))
    t.start()
    time.sleep(0.05)
    q.put(START, "up")
    t.join(5)
    assert got and got[0].kind == START
    t = threading.Thread(target=lambda: got.append(q.get(10)))
    t0 = time.monotonic()
    t.start()
    q.close()
    t.join(5)
    assert got[-1] is None and time.monotonic() - t0 < 5
    q.put(MODEL, "too late")
    assert q.get(0) is None  # closed: nothing more is handed out


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown job kind"):
        JobQueue().put("format", "no")


def test_get_waits_at_most_timeout_s_seconds():
    q = JobQueue()
    t0 = time.monotonic()
    assert q.get(timeout_s=0.05) is None
    assert 0.04 <= time.monotonic() - t0 < 5
