"""History store: round trip, schema versioning, corrupt files, and durability under SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from polythrottle.fingerprint import fingerprint_files, fingerprint_state_dict
from polythrottle.history import (
    SCHEMA_VERSION,
    HistoryError,
    HistoryKey,
    HistoryStore,
    default_history_path,
    space_fingerprint,
)
from polythrottle.space import Knob, SearchSpace
from tests.conftest import ROOT, run_cli

KEY = HistoryKey("sim:jetson-agx-orin", "efficientnet-b0", "abc")


def _fill(store: HistoryStore, version: str, n: int = 3, slo_ms: float = 50.0) -> int:
    tid = store.begin_tune(KEY, version, slo_ms=slo_ms, optimizer="cbo", knobs=["gpu_mhz"])
    for i in range(n):
        store.add_measurement(tid, step=i, config={"gpu_mhz": 100.0 * (i + 1)}, energy_j=1.0 / (i + 1),
                              latency_ms=10.0 * (i + 1), role="explore" if i else "baseline")
    store.finish_tune(tid, best_config={"gpu_mhz": 200.0}, best_energy_j=0.5, best_latency_ms=20.0,
                      baseline_energy_j=1.0, stop_reason="budget")
    return tid


def test_round_trip_and_versions(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "h.sqlite"
    with HistoryStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        _fill(s, "v1", 3)
        _fill(s, "v2", 2, slo_ms=40.0)
    with HistoryStore(path) as s:  # reopened: everything is there
        obs = s.observations(KEY, model_version="v1")
        assert [o.step for o in obs] == [0, 1, 2]
        assert obs[1].config == {"gpu_mhz": 200.0} and obs[1].energy_j == 0.5 and obs[0].role == "baseline"
        assert len(s.observations(KEY)) == 5
        assert [v.model_version for v in s.model_versions(KEY)] == ["v1", "v2"]
        assert s.previous_version(KEY, "v2") == "v1"
        assert s.previous_version(KEY, "v1") == "v2"
        best = s.best(KEY, model_version="v2")
        assert best is not None and best.config == {"gpu_mhz": 200.0} and best.measurements == 2
        assert s.best(KEY, model_version="v2", slo_ms=50.0) is None  # a best found for another SLO
        assert s.best(KEY, model_version="v3") is None
        other = HistoryKey(KEY.device, "bert-base", KEY.space)
        assert s.observations(other) == [] and s.model_versions(other) == []
        assert s.integrity_check() == "ok"
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unfinished_tune_keeps_measurements_but_no_best(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite") as s:
        tid = s.begin_tune(KEY, "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"])
        s.add_measurement(tid, step=0, config={"gpu_mhz": 1.0}, energy_j=1.0, latency_ms=1.0, role="baseline")
        assert len(s.observations(KEY, model_version="v1")) == 1
        assert s.best(KEY, model_version="v1") is None
        with pytest.raises(HistoryError, match="refusing"):
            s.add_measurement(tid, step=1, config={}, energy_j=float("nan"), latency_ms=1.0, role="explore")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    HistoryStore(path).close()
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(HistoryError, match=rf"schema version {SCHEMA_VERSION + 1}, newer"):
        HistoryStore(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_corrupt_or_foreign_database_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "h.sqlite"
    if damage == "garbage":
        path.write_bytes(b"this is not a database at all\n" * 200)
    elif damage == "truncated":
        with HistoryStore(path) as s:
            for v in range(30):
                _fill(s, f"v{v}", 20)
        con = sqlite3.connect(path)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        data = path.read_bytes()
        path.write_bytes(data[:100] + os.urandom(4096) + data[4196 : len(data) // 2])
    else:
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE users (name TEXT)")
        con.commit()
        con.close()
    with pytest.raises(HistoryError) as e:
        HistoryStore(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_cli_reports_corrupt_history_in_one_line(tmp_path: Path, small_table: Path) -> None:
    bad = tmp_path / "h.sqlite"
    bad.write_bytes(b"\x00garbage" * 1000)
    r = run_cli("tune", "--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "3",
                "--history", str(bad), "--json")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "corrupt" in r.stderr and "Traceback" not in r.stderr


_WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from polythrottle.history import HistoryKey, HistoryStore
    s = HistoryStore(sys.argv[1])
    key = HistoryKey("d", "w", "s")
    tid = s.begin_tune(key, "v1", slo_ms=10, optimizer="cbo", knobs=["k"])
    i = 0
    while True:
        s.add_measurement(tid, step=i, config={{"k": i, "pad": "x" * 2000}}, energy_j=1.0 + i,
                          latency_ms=1.0, role="explore")
        print(i, flush=True)   # printed only after the commit returned
        i += 1
    """
)


def test_sigkill_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(root=str(ROOT)))
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    committed = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        committed = int(line)
        if committed >= 150:
            break
    os.kill(proc.pid, signal.SIGKILL)  # almost surely inside a transaction: the loop does nothing else
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with HistoryStore(path) as s:
        assert s.integrity_check() == "ok"
        steps = [o.step for o in s.observations(HistoryKey("d", "w", "s"))]
    assert steps[: committed + 1] == list(range(committed + 1))  # every committed row, in order
    assert len(steps) >= committed + 1


def test_space_fingerprint_and_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a = SearchSpace.product([Knob("gpu_mhz", (100.0, 200.0)), Knob("batch_size", (1, 2))])
    b = SearchSpace.product([Knob("gpu_mhz", (100.0, 300.0)), Knob("batch_size", (1, 2))])
    assert space_fingerprint(a) == space_fingerprint(a) != space_fingerprint(b)
    assert space_fingerprint(a, {"x": 1}) != space_fingerprint(a, {"x": 2})
    monkeypatch.setenv("POLYTHROTTLE_STATE_DIR", str(tmp_path))
    assert default_history_path() == tmp_path / "history.sqlite"


def test_fingerprints(tmp_path: Path) -> None:
    import torch

    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    fp = fingerprint_files([f])
    assert fp.startswith("sha256:") and fp == fingerprint_files([f])
    f.write_bytes(b"abd")
    assert fingerprint_files([f]) != fp
    m = torch.nn.Linear(3, 2)
    fp1 = fingerprint_state_dict(m)
    assert fp1 == fingerprint_state_dict(m.state_dict())
    with torch.no_grad():
        m.weight[0, 0] += 1.0
    assert fingerprint_state_dict(m) != fp1
    from polythrottle.errors import BadInputError

    with pytest.raises(BadInputError, match="not found"):
        fingerprint_files([tmp_path / "missing.pt"])


def test_a_v1_history_upgrades_in_place_to_identity_keys(tmp_path: Path) -> None:
    """A file written by PolyThrottle 0.1 (keys = the spec a face was given) keeps working: its keys are
    mapped to device identities, so a new tune finds the old measurements."""
    import sqlite3

    from polythrottle.history import _SCHEMA_V1, APPLICATION_ID

    path = tmp_path / "old.sqlite"
    c = sqlite3.connect(path)
    c.executescript(_SCHEMA_V1)
    c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    c.execute("PRAGMA user_version = 1")
    rows = [("sim:./profiles/jetson-agx-orin.yaml?gpu=range", "", "efficientnet-b0"),
            ("jetson", "jetson-tx2", "torchvision:resnet50"), ("nvml:0", "", "builtin:mlp"), ("replay", "", "")]
    for i, (device, profile, workload) in enumerate(rows, start=1):
        c.execute("INSERT INTO tunes (id, device, profile, workload, space, model_version, slo_ms, optimizer, knobs,"
                  " status, started_at, finished_at, best_config, best_energy_j, best_latency_ms)"
                  " VALUES (?, ?, ?, ?, 's', 'v1', 10, 'cbo', '[]', 'done', 1, 2, '{\"a\": 1}', 0.5, 5)",
                  (i, device, profile, workload))
        c.execute("INSERT INTO measurements (tune_id, step, config, energy_j, latency_ms, role, measured_at)"
                  " VALUES (?, 0, '{\"a\": 1}', 0.5, 5, 'baseline', 1)", (i,))
    c.commit()
    c.close()
    with HistoryStore(path) as s:
        assert s.schema_version == 2
        found = {k.device: (s.best(k, model_version="v1"), s.observations(k)) for k in [
            HistoryKey("sim:jetson-agx-orin", "efficientnet-b0", "s"),
            HistoryKey("jetson:jetson-tx2", "torchvision:resnet50", "s"),
            HistoryKey("nvml:0", "builtin:mlp", "s"),  # an index is no identity: kept as it was
            HistoryKey("replay", "", "s"),
        ]}
    for device, (best, obs) in found.items():
        assert best is not None and best.energy_j == 0.5 and len(obs) == 1, device
    assert found["sim:jetson-agx-orin"][1][0].unit == "0" and found["jetson:jetson-tx2"][1][0].unit == ""
