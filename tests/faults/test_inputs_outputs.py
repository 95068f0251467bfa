"""Bad inputs and outputs: one line, a documented exit code (2 for bad input), checked before the first
write to hardware; the API raises typed errors (BadInputError) instead of tracebacks.

Outputs first: ``tune --apply --out /nonexistent/r.json`` must be refused before the tune starts (no
write at all), and an output that fails at the end (``/dev/full``) must not leave the best config
applied as if the command had succeeded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests import fake_jetson as fj
from tests.faults.conftest import APPLY, one_line, sets
from tests.faults.test_signals import TUNE

SIM = ["--device", "sim:jetson-orin-nano", "--workload", "efficientnet-b0"]
SIM_TUNE = ["tune", *SIM, "--slo-ms", "50", "--budget", "3", "--optimizer", "random", "--seed", "0", "--json"]


# ----- outputs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["missing-dir", "is-a-dir", "under-a-file", "empty"])
@pytest.mark.parametrize("apply", [True, False])
def test_tune_out_unwritable_is_refused_before_any_write(board, cli_inproc, tmp_path, where, apply):
    (tmp_path / "file").write_text("x")
    out = {"missing-dir": tmp_path / "nonexistent" / "r.json", "is-a-dir": tmp_path,
           "under-a-file": tmp_path / "file" / "r.json", "empty": ""}[where]
    rc, stdout, err = cli_inproc(board, *TUNE, *(["--apply"] if apply else []), "--out", str(out))
    assert rc == 2 and "--out" in one_line(err) and stdout == ""
    assert fj.writes_attempted(board.root) == 0  # refused before the tune started
    board.assert_restored()


def test_tune_apply_out_failing_at_the_end_is_not_kept(board, cli_inproc):
    rc, stdout, err = cli_inproc(board, *TUNE, "--apply", "--out", "/dev/full")
    line = one_line(err)
    assert rc == 2 and "--out /dev/full" in line and "No space left" in line
    board.assert_restored()  # the result was lost: the best config is not left applied either


def test_tune_apply_out_ok_keeps_and_restore_undoes(board, cli_inproc, tmp_path):
    rc, stdout, err = cli_inproc(board, *TUNE, "--apply", "--out", str(tmp_path / "r.json"))
    assert rc == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["applied"] == json.loads(stdout)["applied"]
    assert board.changed() and board.saved_originals()
    assert cli_inproc(board, "restore", "--device", "jetson")[0] == 0
    board.assert_restored()


@pytest.mark.parametrize("device", ["sim", "jetson"])
def test_profile_out_missing_dir_is_refused_first(board, cli_inproc, tmp_path, device):
    dev = SIM if device == "sim" else ["--device", "jetson", "--workload", "builtin:fake"]
    rc, _, err = cli_inproc(board, "profile", *dev, "--knobs", "gpu_mhz", "--out", str(tmp_path / "no" / "t.csv"))
    assert rc == 2 and "--out" in one_line(err)
    assert fj.writes_attempted(board.root) == 0
    board.assert_restored()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a file whose writes fail: disk full)")
@pytest.mark.parametrize("device", ["sim", "jetson"])
def test_profile_out_failing_midway_is_one_line_and_the_board_is_back(board, cli_inproc, device):
    """The table's writes fail (the disk full) after the sweep started: one line naming --out, exit 2 (was an
    unexpected ``OSError``, exit 1), and what the sweep set is put back."""
    dev = SIM if device == "sim" else ["--device", "jetson", "--workload", "builtin:fake"]
    rc, _, err = cli_inproc(board, "profile", *dev, "--knobs", "gpu_mhz", "--out", "/dev/full")
    line = one_line(err)
    assert rc == 2 and "--out /dev/full: cannot write" in line and "OSError" not in line, err
    board.assert_restored()


@pytest.mark.parametrize("text", ["{not json", "[" * 100_000, '{"best": {"config": [1]}}', '{"best": "x"}',
                                  '{"best": {"config": {"gpu_mhz": 1e999}}}', '{"config": {"gpu_mhz": NaN}}',
                                  '{"config": {"gpu_mhz": [624.75]}}', "\xff\xfe"])
def test_apply_config_file_bad(board, cli_inproc, tmp_path, text):
    f = tmp_path / "result.json"
    f.write_bytes(text.encode("latin-1"))
    rc, _, err = cli_inproc(board, "apply", "--device", "jetson", "--config", str(f))
    assert rc == 2 and len(one_line(err)) < 400
    assert fj.writes_attempted(board.root) == 0
    board.assert_restored()


def test_apply_config_file_missing(board, cli_inproc, tmp_path):
    rc, _, err = cli_inproc(board, "apply", "--device", "jetson", "--config", str(tmp_path / "none.json"))
    assert rc == 2 and "not found" in one_line(err)
    assert fj.writes_attempted(board.root) == 0


@pytest.mark.parametrize("bad", ["gpu_mhz=inf", "gpu_mhz=nan", "gpu_mhz=-624.75", "gpu_mhz=" + "9" * 400,
                                 "gpu_mhz=", "=624.75", "gpu_mhz"])
def test_apply_bad_values_write_nothing(board, cli_inproc, bad):
    rc, _, err = cli_inproc(board, "apply", "--device", "jetson", "--set", "emc_mhz=204", "--set", bad)
    assert rc == 2 and len(one_line(err)) < 400
    assert fj.writes_attempted(board.root) == 0
    board.assert_restored()


@pytest.mark.parametrize("file, text", [("gpu:min_freq", "abc\n"), ("gpu:max_freq", ""),
                                        ("cpu:scaling_min_freq", "abc\n"), ("cpu:scaling_max_freq", " \n"),
                                        ("emc:rate", "fast\n")])
def test_a_clock_file_that_is_no_integer_is_refused_before_anything_is_saved(board, cli_inproc, file, text):
    """A copied tree whose clock file holds no integer: its "original" could never be written back, so the
    apply is refused up front (one line naming the file, exit 1): nothing saved, nothing written."""
    b = board.board
    clock, name = file.split(":")
    path = {"gpu": f"{b.gpu_dir}/{name}", "cpu": f"{b.online_policies[0]}/{name}",
            "emc": b.emc_files.get(name, "")}[clock]
    (board.root / path.lstrip("/")).write_text(text)
    board.original = board.files()
    rc, out, err = cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))
    line = one_line(err)
    assert rc == 1 and out == "" and path in line and "not an integer" in line, line
    assert fj.writes_attempted(board.root) == 0
    board.assert_restored()  # nothing written, no originals saved


# ----- the CLI on sim/replay devices: one line, exit 2 ------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["--noise", "inf"], "--noise"), (["--noise", "nan"], "--noise"), (["--noise", "-1"], "--noise"),
    (["--noise", "1e308"], "--noise"),
    (["--seed", "-1"], "--seed"), (["--seed", str(2**70)], "--seed"),
    (["--slo-ms", "inf"], "--slo-ms"), (["--slo-ms", "nan"], "--slo-ms"), (["--slo-ms", "0"], "--slo-ms"),
    (["--budget", "1"], "--budget"), (["--budget", "-5"], "--budget"),
    (["--percentile", "0"], "--percentile"), (["--percentile", "nan"], "--percentile"),
    (["--window-s", "inf"], "--window-s"), (["--window-s", "nan"], "--window-s"), (["--repeats", "0"], "--repeats"),
    (["--knobs", ",,"], "--knobs"), (["--knobs", "gpu_mhz,nosuch"], "nosuch"),
    (["--knobs", "gpu_mhz,gpu_mhz"], "twice"),
    (["--baseline", "gpu_mhz=inf"], "gpu_mhz"), (["--baseline", "batch_size=1e400"], "batch_size"),
    (["--baseline", "precision=" + "x" * 5000], "precision"),
    (["--optimizer", "magic"], "optimizer"),
    (["--model-file", "/nonexistent/model.bin"], "model file"),
])
def test_tune_bad_argument_one_line(cli_inproc, args, words):
    rc, out, err = cli_inproc(None, *SIM_TUNE, *args)
    line = one_line(err)
    assert rc == 2 and words in line and len(line) < 400 and out == "", err


@pytest.mark.parametrize("device, words", [
    ("sim:jetson-agx-orin?gpu=bogus", "gpu"), ("sim:", "profile"), ("sim:no-such-board", "profile"),
    ("", "device"), ("nope:1", "unknown device"), ("nvml:abc", "GPU index"), ("replay:/nonexistent.csv", "not found"),
    # a name longer than a file name may be: the lookup's stat failed with ENAMETOOLONG (exit 1, "OSError: ...")
    ("sim:" + "a" * 5000, "profile"), ("sim:" + "a" * 300 + ".yaml", "profile"), ("sim:d/" + "a" * 5000, "profile"),
    ("jetson:" + "a" * 5000, "profile"),
])
def test_tune_bad_device_one_line(cli_inproc, device, words):
    workload = [] if device.startswith("replay:") else ["--workload", "efficientnet-b0"]
    rc, _, err = cli_inproc(None, "tune", "--device", device, *workload, "--slo-ms", "50", "--no-history")
    assert rc == 2 and words in one_line(err), err


LONG = "/tmp/" + "a" * 5000
TOO_LONG = {
    "replay": ["tune", "--device", "replay:" + LONG + ".csv", "--slo-ms", "5", "--no-history"],
    "out": ["tune", "--device", "sim:jetson-agx-orin", "--workload", "efficientnet-b0", "--slo-ms", "50",
            "--no-history", "--budget", "2", "--out", LONG],
    "history": ["tune", "--device", "sim:jetson-agx-orin", "--workload", "efficientnet-b0", "--slo-ms", "50",
                "--budget", "2", "--history", LONG],
    "export": ["history", "export", "--history", LONG],
}


@pytest.mark.parametrize("case", sorted(TOO_LONG))
def test_a_file_name_too_long_is_bad_input(cli_inproc, case):
    """ENAMETOOLONG from a name the user gave was 'OSError: [Errno 36] ...', exit 1 (a device error)."""
    rc, out, err = cli_inproc(None, *TOO_LONG[case])
    line = one_line(err)
    assert rc == 2 and "file name too long" in line and len(line) < 200, err
    assert "Tuning" not in err and out == ""  # refused before anything ran


TABLES = {
    "inf-knob": b"gpu_mhz,energy_j,latency_ms\n300,1,10\ninf,2,5\n",
    "nan-knob": b"gpu_mhz,energy_j,latency_ms\n300,1,10\nnan,2,5\n",
    "inf-metric": b"gpu_mhz,energy_j,latency_ms\n300,1,10\n600,inf,5\n",
    "empty": b"",
    "header-only": b"gpu_mhz,energy_j,latency_ms\n",
    "not-utf8": b"gpu_mhz,energy_j,latency_ms\n\xff\xfe,1,2\n",
    "bom-duplicate": b"\xef\xbb\xbfgpu_mhz,gpu_mhz,energy_j,latency_ms\n300,300,1,10\n",
    "no-metrics": b"gpu_mhz,batch_size\n300,1\n",
    "extra-field": b"gpu_mhz,energy_j,latency_ms\n300,1,10,99\n",
    "nul-bytes": b"gpu_mhz,energy_j,latency_ms\n3\x0000,1,10\n",
    "huge-field": b"gpu_mhz,energy_j,latency_ms\n" + b"9" * 200_000 + b",1,10\n",
}


@pytest.mark.parametrize("text, missing", [(b"gpu_mhz,energy_j,latency_ms\n300,1,10\n600,2\n", "latency_ms"),
                                           (b"gpu_mhz,batch_size,energy_j,latency_ms\n300\n", "batch_size")])
def test_replay_table_row_with_fewer_fields_names_what_is_missing(cli_inproc, tmp_path, text, missing):
    """A short row is named as such (it read "latency_ms=None is not a number": a None the file never held)."""
    t = tmp_path / "t.csv"
    t.write_bytes(text)
    rc, _, err = cli_inproc(None, "tune", "--device", f"replay:{t}", "--slo-ms", "50", "--budget", "3", "--json")
    line = one_line(err)
    assert rc == 2 and "fewer fields than the header" in line and repr(missing) in line and "None" not in line, err


def test_replay_table_row_without_a_trailing_optional_metric_is_read(cli_inproc, tmp_path):
    t = tmp_path / "t.csv"
    t.write_bytes(b"gpu_mhz,energy_j,latency_ms,throughput_ips\n300,1,10\n600,2,5,3\n")
    rc, _, err = cli_inproc(None, "tune", "--device", f"replay:{t}", "--slo-ms", "50", "--budget", "2", "--json")
    assert rc == 0, err


@pytest.mark.parametrize("case", sorted(TABLES))
def test_replay_table_bad_one_line(cli_inproc, tmp_path, case):
    t = tmp_path / "t.csv"
    t.write_bytes(TABLES[case])
    rc, _, err = cli_inproc(None, "tune", "--device", f"replay:{t}", "--slo-ms", "50", "--budget", "3", "--json")
    line = one_line(err)
    assert rc == 2 and "replay table" in line and len(line) < 400, err


def test_replay_table_with_a_byte_order_mark_reads_its_knob(cli_inproc, tmp_path):
    t = tmp_path / "bom.csv"
    t.write_bytes(b"\xef\xbb\xbfgpu_mhz,energy_j,latency_ms\n300,1,10\n600,2,5\n")
    rc, out, err = cli_inproc(None, "tune", "--device", f"replay:{t}", "--knobs", "gpu_mhz", "--slo-ms", "50",
                              "--budget", "2", "--optimizer", "random", "--json")
    assert rc == 0, err
    assert json.loads(out)["knobs"] == ["gpu_mhz"]


# ----- the Python API: typed exceptions ------------------------------------------------------------------------
def test_api_knobs_as_one_string_is_a_list_of_names():
    import polythrottle as pt

    dev = pt.open_device("sim:jetson-orin-nano", workload="efficientnet-b0")
    r = pt.tune(dev, slo_ms=50, budget=3, optimizer="random", seed=0, knobs="gpu_mhz")
    assert r.tuned_knobs == ["gpu_mhz"]
    r = pt.tune(dev, slo_ms=50, budget=3, optimizer="random", seed=0, knobs="gpu_mhz, batch_size")
    assert r.tuned_knobs == ["gpu_mhz", "batch_size"]


@pytest.mark.parametrize("kwargs", [
    {"knobs": [1]}, {"knobs": 5}, {"knobs": ""}, {"knobs": ["gpu_mhz", None]},
    {"seed": -1}, {"seed": "x"}, {"seed": 1.5}, {"seed": True},
    {"slo_ms": "fast"}, {"slo_ms": math.inf}, {"slo_ms": None},
    {"budget": "x"}, {"budget": 2.5}, {"budget": math.nan},
    {"baseline": {"gpu_mhz": "inf"}}, {"baseline": {"gpu_mhz": math.nan}}, {"baseline": ["gpu_mhz"]},
    {"optimizer": "nope"}, {"optimizer": None},
    {"model_version": ""}, {"model_files": ["/nonexistent"]},
])
def test_api_bad_arguments_raise_bad_input(kwargs):
    import polythrottle as pt
    from polythrottle.errors import BadInputError

    dev = pt.open_device("sim:jetson-orin-nano", workload="efficientnet-b0")
    args = {"slo_ms": 50, "budget": 3, "optimizer": "random", "seed": 0, **kwargs}
    with pytest.raises(BadInputError) as e:
        pt.tune(dev, **args)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


@pytest.mark.parametrize("kwargs", [{"noise": math.inf}, {"noise": math.nan}, {"noise": -0.1}, {"noise": "x"},
                                    {"seed": -1}, {"seed": "x"}, {"workload": 5}, {"percentile": math.nan}])
def test_api_open_device_bad_arguments(kwargs):
    import polythrottle as pt
    from polythrottle.errors import BadInputError

    with pytest.raises(BadInputError) as e:
        pt.open_device("sim:jetson-orin-nano", **{"workload": "efficientnet-b0", **kwargs})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("config", [{"gpu_mhz": math.inf}, {"gpu_mhz": "fast"}, {"nosuch": 1}, ["gpu_mhz"],
                                    {"batch_size": 10**400}])
def test_api_apply_bad_config(config):
    import polythrottle as pt
    from polythrottle.errors import BadInputError

    dev = pt.open_device("sim:jetson-orin-nano", workload="efficientnet-b0")
    with pytest.raises(BadInputError) as e:
        pt.apply(dev, config)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400
