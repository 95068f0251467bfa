"""Many processes writing one history at once (PostgreSQL and SQLite): no row lost, none doubled, also
when every writer repeats all its writes (what a retry after a lost reply does)."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path

import pytest

from polythrottle.history import HistoryKey, HistoryStore, open_history

WRITERS, TUNES, STEPS = 6, 2, 8


def _writer(target: str, unit: str) -> None:
    """One unit: TUNES tunes of STEPS measurements, every write twice, then everything again at once."""
    key = HistoryKey("sim:jetson-agx-orin", "w", "s")
    with open_history(target, timeout_s=60) as h:
        for t in range(TUNES):
            tid = h.begin_tune(key, "v1", slo_ms=10, optimizer="cbo", knobs=["k"], unit=unit, client_id=f"{unit}-t{t}")
            for i in range(STEPS):
                for _ in range(2):  # the second is a repeat (a retry after a lost reply)
                    h.add_measurement(tid, step=i, config={"k": i}, energy_j=1.0 + i, latency_ms=1.0, role="explore")
            h.finish_tune(tid, best_config={"k": 0}, best_energy_j=1.0, best_latency_ms=1.0)
        h.merge(*h.rows())  # everything once more, in one transaction


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_writers_lose_and_double_nothing(tmp_path: Path, backend: str, request) -> None:
    target = str(tmp_path / "h.sqlite") if backend == "sqlite" else request.getfixturevalue("pg_url")
    HistoryStore(target).close()
    ctx = multiprocessing.get_context("fork")  # forked writers: no interpreter start-up per process
    procs = [ctx.Process(target=_writer, args=(target, f"u{n}")) for n in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    with HistoryStore(target) as s:
        trows, mrows = s.rows()
    expected = {f"u{n}-t{t}:{i}" for n in range(WRITERS) for t in range(TUNES) for i in range(STEPS)}
    counts = Counter(m.client_id for m in mrows)
    assert set(counts) == expected  # none lost, none foreign
    assert max(counts.values()) == 1  # none doubled
    assert sorted(t.client_id for t in trows) == sorted(f"u{n}-t{t}" for n in range(WRITERS) for t in range(TUNES))
    assert {t.status for t in trows} == {"done"}
