"""The tune command: JSON contract, exit codes, bad input."""

import json

import pytest

from polythrottle.cli import main
from tests.conftest import run_cli


def tune_json(capsys, *args):
    code = main(["tune", *args, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_json_contract(small_table, capsys):
    code, res, _ = tune_json(capsys, "--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "8",
                             "--noise", "0.01", "--seed", "3")
    assert code == 0
    for key in ("best", "feasible", "baseline", "saving_pct", "history"):
        assert key in res
    assert res["feasible"] is True
    assert set(res["best"]) >= {"config", "energy_j", "latency_ms"}
    assert res["baseline"]["config"] == {"gpu_mhz": 900.0, "batch_size": 1}
    hist = res["history"]
    assert 2 <= len(hist) <= 8 and hist[0]["config"] == res["baseline"]["config"]
    for h in hist:
        assert set(h) >= {"config", "energy_j", "latency_ms", "feasible", "propose_s"}
        assert h["feasible"] == (h["latency_ms"] <= 50)
    assert res["best"]["latency_ms"] <= 50
    expected = 100 * (res["baseline"]["energy_j"] - res["best"]["energy_j"]) / res["baseline"]["energy_j"]
    assert res["saving_pct"] == pytest.approx(expected, abs=1e-3)


def test_seeded_runs_reproducible(small_table, capsys):
    args = ("--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "6", "--noise", "0.02", "--seed", "5")
    _, a, _ = tune_json(capsys, *args)
    _, b, _ = tune_json(capsys, *args)
    strip = lambda r: [(h["config"], h["energy_j"], h["latency_ms"]) for h in r["history"]]
    assert strip(a) == strip(b)


def test_random_optimizer_and_knobs_and_baseline(small_table, capsys, tmp_path):
    out = tmp_path / "r.json"
    code, res, _ = tune_json(capsys, "--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "4",
                             "--optimizer", "random", "--knobs", "batch_size", "--baseline", "gpu_mhz=600",
                             "--seed", "1", "--out", str(out))
    assert code == 0
    assert all(h["config"]["gpu_mhz"] == 600.0 for h in res["history"])
    assert json.loads(out.read_text())["history"] == res["history"]


def test_infeasible_slo_exits_3_and_names_lowest_latency(small_table, capsys):
    code, res, err = tune_json(capsys, "--device", f"replay:{small_table}", "--slo-ms", "1", "--budget", "4")
    assert code == 3
    assert res["best"] is None and res["feasible"] is False
    assert "lowest latency reachable 10 ms, with gpu_mhz=900, batch_size=1" in err  # values as displayed


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "toaster", "--slo-ms", "10"], "unknown device"),
        (["--device", "replay:/nonexistent.csv", "--slo-ms", "10"], "not found"),
        (["--slo-ms", "0"], "--slo-ms: must be >= 0.001"),
        (["--slo-ms", "1e-310"], "--slo-ms: must be >= 0.001"),
        (["--slo-ms", "10", "--budget", "0"], "--budget: must be >= 2"),
        (["--slo-ms", "10", "--knobs", "volts"], "unknown knob 'volts'"),
        (["--slo-ms", "10", "--baseline", "gpu_mhz=123"], "gpu_mhz=123 is not a valid step"),
        (["--slo-ms", "10", "--optimizer", "magic"], "--optimizer: must be one of cbo"),
        (["--slo-ms", "10", "--noise", "-1"], "--noise: must be >= 0"),
        (["--slo-ms", "10", "--carbon-intensity", "-1"], "--carbon-intensity: must be >= 0"),
        (["--slo-ms", "10", "--seed", str(2**40)], f"--seed: must be <= {2**32 - 1}, got {2**40}"),
        (["--slo-ms", "10", "--baseline", "gpu_mhz=300", "--baseline", "gpu_mhz=900"],
         "'gpu_mhz' is given twice (300 and 900)"),
    ],
)
def test_bad_input_one_line_exit_2(small_table, capsys, args, message):
    if "--device" not in args:
        args = ["--device", f"replay:{small_table}", *args]
    code = main(["tune", *args])
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "sim:no-such-board", "--workload", "resnet50"], "unknown profile"),
        (["--device", "sim:jetson-orin-nano", "--workload", "no-such-model"], "unknown workload"),
        (["--knobs", "volts"], "unknown knob 'volts'"),
        (["--baseline", "gpu_mhz=123"], "gpu_mhz=123 is not a valid step"),
    ],
)
def test_bad_input_creates_no_history(small_table, capsys, tmp_path, args, message):
    """Exit 2 means nothing was written: a history database named by --history is not created for a
    tune refused for an unknown device, workload, knob or value."""
    history = tmp_path / "sub" / "h.sqlite"
    if "--device" not in args:
        args = ["--device", f"replay:{small_table}", *args]
    code = main(["tune", *args, "--slo-ms", "10", "--history", str(history)])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and err.count("\n") == 1
    assert not history.exists() and not history.parent.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model-version", "v2", "--no-history"], "--model-version is unused: "),
        (["--model-file", "MODEL", "--no-history"], "--model-file is unused: "),
        (["--device", "nvml:0", "--model-version", "v2", "--no-history"], "--model-version is unused: "),
        (["--model-version", "v2"], "--model-version is unused: "),
        (["--device", "sim:jetson-orin-nano", "--workload", "resnet50", "--model-file", "MODEL"],
         "--model-file is unused: "),
    ],
)
def test_a_model_version_with_no_history_is_refused(small_table, capsys, tmp_path, args, message):
    """The model version only keys the history: a tune that keeps none ignored it silently. Refused in one
    line naming the flag and why no history is kept, before anything is opened (nvml:0 is no GPU here)."""
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    args = [str(model) if a == "MODEL" else a for a in args]
    if "--device" not in args:
        args = ["--device", f"replay:{small_table}", *args]
    code = main(["tune", *args, "--slo-ms", "10", "--budget", "2", "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("polythrottle: error: "), err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    why = "--no-history" if "--no-history" in args else "a sim: or replay: device without --history"
    assert f"keeps none ({why})" in err


@pytest.mark.parametrize("extra", [[], ["--no-history"]])
def test_a_missing_model_file_is_named_before_the_unused_model_version(small_table, capsys, tmp_path, extra):
    code = main(["tune", "--device", f"replay:{small_table}", "--slo-ms", "10", "--budget", "2", "--quiet",
                 "--model-file", str(tmp_path / "missing.pt"), *extra])
    _, err = capsys.readouterr()
    assert code == 2 and "missing.pt not found" in err and "unused" not in err and err.count("\n") == 1


def test_a_model_version_with_a_history_is_recorded(small_table, capsys, tmp_path):
    code, res, _ = tune_json(capsys, "--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "2",
                             "--history", str(tmp_path / "h.sqlite"), "--model-version", "v2")
    assert code == 0 and res["model_version"] == "v2"


def test_malformed_table_via_subprocess(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("gpu_mhz,energy_j\n1,2\n")
    r = run_cli("tune", "--device", f"replay:{bad}", "--slo-ms", "10")
    assert r.returncode == 2
    assert "missing column(s) latency_ms" in r.stderr and "Traceback" not in r.stderr


def test_human_output_has_table(small_table):
    r = run_cli("tune", "--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "5", "--seed", "0")
    assert r.returncode == 0, r.stderr
    assert "baseline" in r.stdout and "best" in r.stdout and "Saving against baseline" in r.stdout
    assert "Stopped:" in r.stdout


def test_shared_table_end_to_end(xavier_table, capsys):
    code, res, _ = tune_json(capsys, "--device", f"replay:{xavier_table}", "--slo-ms", "100", "--budget", "12",
                             "--noise", "0.02", "--seed", "0")
    assert code == 0
    assert res["best"]["latency_ms"] <= 100 and res["saving_pct"] > 20


def test_unreachable_history_server_is_said_once(small_table, tmp_path):
    """A PostgreSQL history out of reach: the tune goes on into the local spool, and stderr says so in one line
    (it was silent: the user believed the measurements were on the server)."""
    r = run_cli("tune", "--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "3", "--quiet",
                "--state-dir", str(tmp_path / "state"), "--history", "postgresql://u:secret@127.0.0.1:1/fleet")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "3 measurements" in lines[0] and "spool" in lines[0]
    assert "secret" not in r.stderr


def test_a_locked_sqlite_history_loses_no_measurement(small_table, tmp_path, capsys, monkeypatch):
    """Another process holds the SQLite history locked through the whole tune: the tune used to wait, then exit 2
    ("bad input") before measuring; now it finishes (exit 0, its JSON), its measurements wait in the local spool
    (one warning line naming the lock and the spool), and the next open writes them to the history."""
    import functools
    import sqlite3

    import polythrottle.history as history
    from polythrottle.history import HistoryStore

    monkeypatch.setattr(history, "open_history", functools.partial(history.open_history, timeout_s=0.2))
    path, state = tmp_path / "h.sqlite", tmp_path / "state"
    HistoryStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, res, err = tune_json(capsys, "--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "4",
                                   "--optimizer", "random", "--seed", "1", "--quiet", "--state-dir", str(state),
                                   "--history", str(path))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "is locked by another process" in lines[0]
    assert f"{len(res['history'])} measurements wait in the local spool" in lines[0]
    history.open_history(path, spool_dir=state).close()  # the next tune's open uploads the spool
    with HistoryStore(path) as s:
        (t,) = s.tunes()
        _, ms = s.tune(t.id)
    assert t.status == "done" and len(ms) == len(res["history"])


def test_a_lock_gone_by_the_end_of_the_tune_is_said_and_leaves_nothing_waiting(tmp_path, capsys):
    """The spooled measurements of a SQLite history whose lock is gone when the tune ends are written at once."""
    import sqlite3

    from polythrottle.cli.tune import _say_spooled
    from polythrottle.history import HistoryKey, HistoryStore, open_history

    path = tmp_path / "h.sqlite"
    HistoryStore(path).close()
    h = open_history(path, spool_dir=tmp_path / "state", timeout_s=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        tid = h.begin_tune(HistoryKey("sim:b", "wl", "abc"), "v1", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"])
        h.add_measurement(tid, step=0, config={"gpu_mhz": 1.0}, energy_j=1.0, latency_ms=1.0, role="baseline")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    _say_spooled(h)
    h.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was locked by another process for a while; 1 measurements" in err
    with HistoryStore(path) as s:
        assert len(s.rows()[1]) == 1


def test_out_over_the_history_is_refused_before_the_tune(tmp_path, capsys):
    """--out naming the --history file used to replace the whole history with the JSON result."""
    history = tmp_path / "h.sqlite"
    args = ["tune", "--device", "sim:jetson-agx-orin", "--workload", "resnet50", "--slo-ms", "60", "--budget", "4",
            "--optimizer", "random", "--quiet", "--history", str(history)]
    assert main(args) == 0
    before = history.read_bytes()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "." / "h.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is the history database itself" in err
    assert history.read_bytes() == before


def test_out_over_the_replayed_table_is_refused_and_the_table_kept(small_table, capsys):
    """`tune --device replay:t.csv --out t.csv` replaced the measured table by the tune's JSON."""
    before = small_table.read_text()
    code = main(["tune", "--device", f"replay:{small_table}", "--slo-ms", "50", "--out", str(small_table)])
    err = capsys.readouterr().err
    assert code == 2 and err == (f"polythrottle: error: --out {small_table} is the file the device "
                                 f"replay:{small_table} reads; write to another file\n")
    assert small_table.read_text() == before
