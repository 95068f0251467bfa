"""What a terminal shows while tuning: a line per measurement and the final table, within 80 columns;
``--quiet`` shows nothing."""

from __future__ import annotations

import io

from rich.console import Console

from polythrottle.cli import main
from polythrottle.cli.render import LiveView, print_result
from polythrottle.devices import DeviceOptions, open_device
from polythrottle.tuning.tuner import Tuner


def test_live_view_and_final_table_fit_80_columns():
    dev = open_device("sim:jetson-agx-xavier?gpu=range", DeviceOptions(workload="triton-loudva", noise=0.02, seed=2))
    buf = io.StringIO()
    live = LiveView(Console(file=buf, width=80, color_system=None), slo_ms=100, budget=8,
                    device="replay:/a/very/long/path/to/somewhere/with/a/table-of-measurements.csv")
    result = Tuner(dev, 100, 8, seed=2, optimizer="random").run(live.on_record)  # the view, not the search
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 + 1 + len(result.history)  # title, config = knobs, column heads, a line each
    assert max(len(line) for line in lines) <= 80
    assert "gpu_min_mhz/gpu_max_mhz/emc_mhz/cpu_mhz/batch_size/precision" in lines[1]
    rows = lines[3:]
    for r, line in zip(result.history, rows):
        assert line.split()[:2] == [str(r.step + 1), r.role]
        assert ("ok" if r.feasible else "over") in line.split()
    assert rows[0].split()[-2].endswith("*")  # the baseline is the first best so far (it met the SLO)
    buf = io.StringIO()
    print_result(result, Console(file=buf, width=80, color_system=None))
    assert max(len(line) for line in buf.getvalue().splitlines()) <= 80
    dev.close()


def test_tune_shows_measurements_unless_quiet(small_table, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    args = ["tune", "--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "4", "--seed", "1",
            "--optimizer", "random"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    rows = [line for line in err.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"], ["4"])]
    assert len(rows) == 4 and rows[0].split()[1] == "baseline"
    assert "best" in out and "energy per inference (J)" in out and "CO2 at 481 g/kWh (world, 2023" in out
    assert max(len(line) for line in (out + err).splitlines()) <= 80
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert main([*args, "--quiet", "--slo-ms", "1"]) == 3  # nothing feasible: one line says it
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "no config met the 1 ms SLO" in err


def test_markup_in_knob_values_is_printed_as_text(tmp_path, capsys, monkeypatch):
    """A table's text values ("[/]", "[bold]x") are shown as they are, never parsed as rich markup (a
    closing tag with nothing to close used to fail the command after the tune: exit 1, MarkupError)."""
    from tests.conftest import write_table

    monkeypatch.setenv("COLUMNS", "100")
    rows = [{"gpu_mhz": f, "mode": m, "energy_j": e, "latency_ms": lat}
            for f, m, e, lat in ((300, "[/]", 1.0, 40), (600, "[/]", 1.5, 20), (300, "[bold]x", 0.9, 45),
                                 (600, "[bold]x", 1.4, 25))]
    table = write_table(tmp_path / "markup.csv", rows)
    assert main(["tune", "--device", f"replay:{table}", "--slo-ms", "30", "--budget", "4", "--optimizer", "grid"]) == 0
    out, err = capsys.readouterr()
    assert "[/]" in out and "[bold]x" in out and "error" not in err


def test_terminal_escapes_in_a_table_are_shown_not_sent(tmp_path, capsys, monkeypatch):
    """A replayed table's knob names and values may hold control characters (a screen clear, a window-title
    sequence): the live view, the final table and the no-feasible line show them as ``\\x1b``, never send them."""
    monkeypatch.setenv("COLUMNS", "100")
    table = tmp_path / "esc.csv"
    table.write_bytes(b"k\x1b[2J,energy_j,latency_ms\na\x1b]0;pwned\x07,1,10\nb,2,5\n")
    assert main(["tune", "--device", f"replay:{table}", "--slo-ms", "50", "--budget", "3"]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "k\\x1b[2J" in err and "a\\x1b]0;pwned\\x07" in err and "a\\x1b]0;pwned\\x07" in out
    assert main(["tune", "--device", f"replay:{table}", "--slo-ms", "0.5", "--budget", "3", "--quiet"]) == 3
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "k\\x1b[2J=b" in err


def test_markup_in_a_model_version_is_printed_as_text(tmp_path, capsys):
    """The warm-start line names the previous model version, which is the user's text."""
    history = str(tmp_path / "h.sqlite")
    args = ["tune", "--device", "sim:jetson-agx-orin", "--workload", "resnet50", "--slo-ms", "60", "--budget", "6",
            "--history", history]
    assert main([*args, "--model-version", "v[/]1", "--quiet"]) == 0
    capsys.readouterr()
    assert main([*args, "--model-version", "v2"]) == 0
    out, err = capsys.readouterr()
    assert "Warm start from model version v[/]1" in out and "error" not in err
