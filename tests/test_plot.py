"""``polythrottle plot``: figures rendered (Agg, no display) from a result file and from the history; the trace
arithmetic they draw (best feasible so far, Pareto front); clear errors, also without matplotlib."""

from __future__ import annotations

import json
import sys

import pytest

from polythrottle.cli import main
from polythrottle.history import HistoryStore
from polythrottle.tuning.trace import TracePoint, TuneTrace
from tests.conftest import write_table

# pytest-xdist (--dist loadgroup): every test here on one worker, so that the module-scoped `tuned` fixture is made once
pytestmark = pytest.mark.xdist_group("test_plot")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A result file of a real tune (cbo, with noise) of a small replayed table; made once for the module."""
    d = tmp_path_factory.mktemp("plot")
    rows = [{"gpu_mhz": f, "batch_size": b, "energy_j": (0.2 + 0.4 * (f / 900) ** 2) / b**0.5,
             "latency_ms": 10.0 * b * 900 / f} for f in (300.0, 600.0, 900.0) for b in (1, 2, 4, 8)]
    table = write_table(d / "small.csv", rows)
    out = d / "result.json"
    assert main(["tune", "--device", f"replay:{table}", "--slo-ms", "50", "--budget", "8", "--noise", "0.02",
                 "--seed", "3", "--quiet", "--out", str(out)]) == 0
    return table, json.loads(out.read_text())


@pytest.fixture
def result_file(tuned, tmp_path):
    out = tmp_path / "result.json"
    out.write_text(json.dumps(tuned[1]))
    return out


def test_trace_best_so_far_and_pareto_front():
    pts = [(30, 1.0, 10, "baseline"), (20, 0.5, 60, "explore"), (10, 0.7, 40, "explore"),
           (20, 0.5, 45, "recheck"), (40, 0.3, 90, "explore"), (30, 1.2, 10, "recheck")]
    t = TuneTrace(slo_ms=50, points=[TracePoint(i, {"f": f}, e, lat, role) for i, (f, e, lat, role) in enumerate(pts)])
    # f=20 is over the SLO (60 ms), still over on its mean after a recheck ((60+45)/2 = 52.5 ms)
    assert t.best_so_far() == [1.0, 1.0, 0.7, 0.7, 0.7, 0.7]
    t.add(TracePoint(6, {"f": 20}, 0.5, 40, "recheck"))  # mean latency (60+45+40)/3 = 48.3: now feasible
    assert t.best_so_far()[-1] == 0.5
    assert t.stats_of({"f": 30}).energy_j == pytest.approx(1.1)  # the baseline's mean over two measurements
    assert [s.config["f"] for s in t.pareto_front()] == [30, 10, 20, 40]
    assert t.tuned_knobs() == ["f"]


def test_plot_result_png_and_svg(result_file, tmp_path, capsys):
    assert main(["plot", str(result_file)]) == 0
    png = result_file.with_suffix(".png")
    assert capsys.readouterr().out.strip() == f"wrote {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    for kind in ("convergence", "tradeoff"):
        svg = tmp_path / f"{kind}.svg"
        assert main(["plot", str(result_file), "--kind", kind, "--out", str(svg)]) == 0
        text = svg.read_text()
        assert text.lstrip().startswith("<?xml") and len(text) > 20_000
        title = "Convergence" if kind == "convergence" else "Energy vs latency"
        assert title in text and "SLO 50 ms" in text and "small.csv" in text  # title: device and SLO
        assert "mean" in text  # the legend says what "feasible" means here


def test_plot_from_history_by_tune_id(small_table, tmp_path, capsys):
    """Two tunes recorded in a history database; the first plotted by its id."""
    db = tmp_path / "h.sqlite"
    base = ["tune", "--device", f"replay:{small_table}", "--budget", "4", "--seed", "0", "--quiet", "--history",
            str(db), "--json", "--optimizer", "random"]
    assert main([*base, "--slo-ms", "50"]) == 0
    first = json.loads(capsys.readouterr().out)["history_tune_id"]
    assert main([*base, "--slo-ms", "80", "--no-warm-start"]) == 0
    capsys.readouterr()
    with HistoryStore(db) as store:
        tune, measurements = store.tune(first)
        assert tune.slo_ms == 50 and tune.key.device == "replay" and len(measurements) == 4
        assert store.tunes(limit=1)[0].slo_ms == 80  # the latest
    out = tmp_path / "t.png"
    assert main(["plot", "--history", str(db), "--tune", str(first), "--out", str(out), "--kind", "tradeoff"]) == 0
    assert out.stat().st_size > 20_000


@pytest.mark.parametrize("args, message", [
    ([], "give a result file or --history PATH"),
    # both, and --tune alone, were answered "give a result file or --history PATH (one of them)"
    (["{result}", "--history", "x.sqlite"], "give a result file or --history PATH, not both"),
    (["--tune", "1"], "--tune needs --history"),
    (["{result}", "--tune", "1"], "--tune needs --history"),
    (["{result}", "--out", "x.jpg"], "unsupported format '.jpg'"),
    (["{missing}"], "result file not found"),
    (["{notjson}"], "not JSON"),
    (["{deep}"], "not JSON (nested too deeply)"),  # said "error: RecursionError: ...", exit 1
    (["{bigint}"], "not JSON (Exceeds the limit (4300 digits)"),  # said "error: ValueError: ...", exit 1
    (["{notresult}"], "not a PolyThrottle tune result"),
    (["--history", "{missing}"], "no history database at"),
    (["--history", "{db}", "--tune", "7"], "has no tune 7"),
])
def test_bad_input_one_line_exit_2(result_file, tmp_path, capsys, args, message):
    (tmp_path / "bad.txt").write_text("hello")
    (tmp_path / "other.json").write_text('{"best": null}')
    (tmp_path / "deep.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    (tmp_path / "bigint.json").write_text('{"best": ' + "9" * 5000 + "}")
    HistoryStore(tmp_path / "empty.sqlite").close()
    paths = {"result": result_file, "missing": tmp_path / "nope.json", "notjson": tmp_path / "bad.txt",
             "notresult": tmp_path / "other.json", "db": tmp_path / "empty.sqlite",
             "deep": tmp_path / "deep.json", "bigint": tmp_path / "bigint.json"}
    code = main(["plot", *(a.format(**paths) for a in args)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "nope.sqlite").exists()  # plotting never creates a database


@pytest.mark.parametrize("tune_id", ["99999999999999999999999", "-5"])
def test_a_tune_id_out_of_range_is_one_line_exit_2(tmp_path, capsys, tune_id):
    """It was ``OverflowError: Python int too large to convert to SQLite INTEGER``, exit 1 (and -5 was looked up)."""
    db = tmp_path / "h.sqlite"
    HistoryStore(db).close()
    with pytest.raises(SystemExit) as e:
        main(["plot", "--history", str(db), "--tune", tune_id, "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--tune" in err and "out of range" in err, err


def test_an_unknown_tune_names_the_history_by_its_path(tmp_path, capsys):
    db = tmp_path / "h.sqlite"
    HistoryStore(db).close()
    assert main(["plot", "--history", str(db), "--tune", "7"]) == 2
    err = capsys.readouterr().err
    assert f"history {db} has no tune 7" in err and "HistoryStore(" not in err, err


def test_without_matplotlib_one_line_exit_5(result_file, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["plot", str(result_file)]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'polythrottle[plot]'" in err
    assert not result_file.with_suffix(".png").exists()
