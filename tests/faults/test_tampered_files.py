"""Tampered files: the saved originals (jetson and nvml), the history database.

The saved-originals file is data, not a capability: whoever can write the state directory (a shared
``--state-dir``, the variable kept through ``sudo -E``) must not make root write anything but the
board's own clock files. A tampered entry (a path outside the layout, ``..``, a link out of the root, a
value that is not an integer, wrong types, an unknown format) is refused whole: one line naming the
file, exit 2, nothing written, no file outside touched. History rows of the wrong type are refused
with one line (HistoryError, exit 2), never a traceback.
"""

from __future__ import annotations

import json
import os
import sqlite3
from unittest.mock import patch

import pytest

from tests import fake_jetson as fj
from tests.faults.conftest import APPLY, message_length, one_line, sets
from tests.faults.test_signals import TUNE

GPU = "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b"
POLICY0 = "/sys/devices/system/cpu/cpufreq/policy0"
LEGIT = {f"{GPU}/min_freq": "114750000", f"{GPU}/max_freq": "1300500000"}


def saved_path(board):
    """Where the device keeps its saved originals, as the device itself says (``originals_location()``)."""
    import polythrottle as pt

    with patch.dict(os.environ, {"POLYTHROTTLE_ROOT": str(board.root)}):
        dev = pt.open_device("jetson", state_dir=board.state)
    where = dev.originals_location()
    return where.device_id, where.file


def write_state(board, originals, **top) -> None:
    """A saved-originals file as a crashed run (a dead owner) leaves it, with ``originals`` and ``top``."""
    device_id, path = saved_path(board)
    doc = {"format": 1, "device": device_id, "originals": originals,
           "meta": {"pid": 999_999_999, "kept": False}, "created": 0.0, "updated": 0.0, "pid": 0}
    doc.update(top)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def state_file(board):
    files = board.saved_originals()
    assert len(files) == 1
    return files[0]


@pytest.fixture
def sentinels(board, tmp_path):
    """A secret inside the fake root and a file outside it; neither may change."""
    inside = board.root / "etc" / "shadow"
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_text("root:secret\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "scaling_min_freq").write_text("outside\n")
    (outside / "target").write_text("outside\n")
    # a policy directory that is a link out of the root, and one to a non-clock directory inside it
    (board.root / "sys/devices/system/cpu/cpufreq/policy99").symlink_to(outside)
    (board.root / "etc" / "scaling_min_freq").write_text("inside\n")
    (board.root / "sys/devices/system/cpu/cpufreq/policy98").symlink_to(board.root / "etc")
    board.original = board.files()
    return {inside: inside.read_text(), outside / "scaling_min_freq": "outside\n", outside / "target": "outside\n",
            board.root / "etc" / "scaling_min_freq": "inside\n"}


BAD_ENTRIES = {
    "dotdot": {f"{POLICY0}/../../../../../../etc/shadow": "1"},
    "dotdot-out-of-root": {"/../../outside/target": "1"},
    "absolute-elsewhere": {"/etc/shadow": "1"},
    "relative": {"sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq": "1"},
    "double-slash": {f"/{POLICY0}/scaling_min_freq": "1"},
    "nul-in-path": {f"{GPU}/min_freq\x00/etc/shadow": "1"},
    "link-out-of-root": {"/sys/devices/system/cpu/cpufreq/policy99/scaling_min_freq": "1"},
    "link-to-other-file": {"/sys/devices/system/cpu/cpufreq/policy98/scaling_min_freq": "1"},
    "not-a-clock-file": {f"{GPU}/governor": "performance"},
    "value-shell": {f"{GPU}/min_freq": "114750000; rm -rf /"},
    "value-float": {f"{GPU}/min_freq": 1.5e8},
    "value-list": {f"{GPU}/min_freq": [1, 2]},
    "value-dict": {f"{GPU}/min_freq": {"a": 1}},
    "value-bool": {f"{GPU}/min_freq": True},
    "value-null": {f"{GPU}/min_freq": None},
    "value-huge": {f"{GPU}/min_freq": "1" * 10_000},
    "key-huge": {"/" + "a" * 10_000: "1"},
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_restore_refuses_a_tampered_entry_and_writes_nothing(board, cli_inproc, sentinels, case):
    write_state(board, {**LEGIT, **BAD_ENTRIES[case]})
    rc, _out, err = cli_inproc(board, "restore", "--device", "jetson")
    line = one_line(err)
    assert rc == 2 and "saved originals" in line and message_length(line, board.root.parent) < 400, line
    assert fj.writes_attempted(board.root) == 0
    assert board.changed() == {}
    assert all(p.read_text() == text for p, text in sentinels.items())


@pytest.mark.parametrize("command", ["apply", "tune"])
@pytest.mark.parametrize("case", ["dotdot", "link-out-of-root", "absolute-elsewhere", "value-shell"])
def test_a_crash_leftover_that_was_tampered_is_not_restored_by_the_next_run(board, cli_inproc, sentinels,
                                                                          command, case):
    write_state(board, {**LEGIT, **BAD_ENTRIES[case]})  # owner pid dead: the next writer restores first
    args = ["apply", "--device", "jetson", *sets(APPLY)] if command == "apply" else TUNE
    rc, _out, err = cli_inproc(board, *args)
    assert rc == 2 and "saved originals" in one_line(err)
    assert fj.writes_attempted(board.root) == 0 and board.changed() == {}
    assert all(p.read_text() == text for p, text in sentinels.items())


EMC_LOCK = "/sys/kernel/debug/bpmp/debug/clk/emc/mrq_rate_locked"
EMC_RATE = "/sys/kernel/debug/bpmp/debug/clk/emc/rate"
OUT_OF_RANGE = {  # integers, but no value the kernel held: restoring them would leave a clock at its lowest step
    "gpu-max-1": {f"{GPU}/max_freq": "1"},
    "gpu-locked-at-1": {f"{GPU}/min_freq": "1", f"{GPU}/max_freq": "1"},
    "gpu-max-negative": {f"{GPU}/max_freq": "-5"},
    "gpu-max-above-every-step": {f"{GPU}/max_freq": "99999999999999999"},
    "cpu-max-1": {f"{POLICY0}/scaling_max_freq": "1"},
    "cpu-max-0": {f"{POLICY0}/scaling_max_freq": "0"},
    "cpu-min-above-every-step": {f"{POLICY0}/scaling_min_freq": "9999999999"},
    "cpu-through-a-cpu-link": {"/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq": "1"},
    "emc-lock-5": {EMC_LOCK: "5"},
    "emc-locked-at-1-hz": {EMC_RATE: "1", EMC_LOCK: "1"},
    "emc-rate-above-every-step": {EMC_RATE: "99999999999", EMC_LOCK: "1"},
    "emc-rate-0-locked": {EMC_RATE: "0", EMC_LOCK: "1"},
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_restore_refuses_a_value_outside_the_clock_and_writes_nothing(board, cli_inproc, case):
    write_state(board, {**LEGIT, **OUT_OF_RANGE[case]})
    rc, _out, err = cli_inproc(board, "restore", "--device", "jetson")
    line = one_line(err)
    assert rc == 2 and "saved originals" in line and "outside" in line, line
    assert fj.writes_attempted(board.root) == 0 and board.changed() == {}
    assert len(board.saved_originals()) == 1  # kept for a restore by hand


def test_a_cpu_limit_beyond_the_hardware_is_refused_though_the_table_lists_it(board, cli_inproc):
    """A saved cpufreq limit above ``cpuinfo_max_freq`` was never held (cpufreq holds every limit within the
    hardware's): refused, also where ``scaling_available_frequencies`` lists it (the table widened the range)."""
    avail = board.root / POLICY0.lstrip("/") / "scaling_available_frequencies"
    avail.write_text(avail.read_text().strip() + " 2304000\n")
    board.original = board.files()
    write_state(board, {**LEGIT, f"{POLICY0}/scaling_max_freq": "2304000"})
    rc, _out, err = cli_inproc(board, "restore", "--device", "jetson")
    assert rc == 2 and "outside" in one_line(err)
    assert fj.writes_attempted(board.root) == 0 and board.changed() == {}


@pytest.mark.parametrize("case", ["gpu-locked-at-1", "cpu-max-1", "emc-locked-at-1-hz"])
def test_a_crash_leftover_outside_the_clock_is_not_restored_by_the_next_apply(board, cli_inproc, case):
    write_state(board, {**LEGIT, **OUT_OF_RANGE[case]})
    rc, _out, err = cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))
    assert rc == 2 and "outside" in one_line(err)
    assert fj.writes_attempted(board.root) == 0 and board.changed() == {}


def test_an_emc_lock_taken_before_us_is_an_original_and_is_restored(board, cli_inproc):
    """jetson_clocks locks EMC at its highest rate: a legitimate original (the rate within the firmware's range)."""
    write_state(board, {EMC_RATE: "3199000000", EMC_LOCK: "1"})
    rc, _out, err = cli_inproc(board, "restore", "--device", "jetson")
    assert rc == 0, err
    assert fj.read(board.root, EMC_LOCK) == "1" and board.saved_originals() == []


def test_a_devfreq_limit_of_0_is_an_original_and_is_restored(board, cli_inproc):
    """devfreq reads (and takes) 0 as "no limit" on older kernels: a legitimate original."""
    write_state(board, {f"{GPU}/min_freq": "0", f"{GPU}/max_freq": "1300500000"})
    rc, _out, err = cli_inproc(board, "restore", "--device", "jetson")
    assert rc == 0, err
    assert fj.read(board.root, f"{GPU}/min_freq") == "0" and board.saved_originals() == []


RUN_OVER_KEPT = {
    "not-an-object": "back",
    "owner-not-kept": {"owner": {"kept": False, "pid": 1}, "before": LEGIT, "new": []},
    "before-list": {"owner": {"kept": True, "pid": 1}, "before": ["/etc/shadow"], "new": []},
    "before-value-shell": {"owner": {"kept": True, "pid": 1}, "before": {f"{GPU}/min_freq": "1; rm -rf /"},
                           "new": []},
}


@pytest.mark.parametrize("case", sorted(RUN_OVER_KEPT))
def test_a_tampered_run_over_kept_settings_is_not_put_back(board, cli_inproc, sentinels, case):
    """What a run killed over kept settings started from is checked like the originals: refused whole."""
    write_state(board, LEGIT, meta={"pid": 999_999_999, "kept": False, "run_over_kept": RUN_OVER_KEPT[case]})
    rc, _out, err = cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))
    assert rc == 2 and "saved originals" in one_line(err)
    assert fj.writes_attempted(board.root) == 0 and board.changed() == {}


STRUCTURE = {
    "originals-list": {"originals": ["/etc/shadow"]},
    "format-99": {"format": 99},
    "format-text": {"format": "1"},
    "pid-text": {"pid": "not-a-pid"},
    "meta-text": {"meta": "kept"},
    "device-other": {"device": "nvml:0"},
    "device-list": {"device": ["jetson"]},
    "created-text": {"created": "yesterday"},
}


@pytest.mark.parametrize("case", sorted(STRUCTURE))
def test_restore_refuses_a_malformed_file(board, cli_inproc, case):
    fields = dict(STRUCTURE[case])
    write_state(board, fields.pop("originals", LEGIT), **fields)
    rc, _, err = cli_inproc(board, "restore", "--device", "jetson")
    line = one_line(err)
    assert rc == 2 and "saved originals" in line and message_length(line, board.root.parent) < 400, line
    assert fj.writes_attempted(board.root) == 0 and board.changed() == {}


@pytest.mark.parametrize("text", ["{not json", "[" * 200_000, "\x00\xff" * 10, json.dumps([1, 2]),
                                  '{"originals": {}' + " " * 3_000_000 + "}"])
def test_restore_refuses_a_file_that_is_not_json(board, cli_inproc, text):
    write_state(board, LEGIT)
    state_file(board).write_text(text)
    rc, _, err = cli_inproc(board, "restore", "--device", "jetson")
    line = one_line(err)
    assert rc == 2 and "saved originals" in line and message_length(line, board.root.parent) < 400
    assert fj.writes_attempted(board.root) == 0 and board.changed() == {}


def test_a_state_file_linked_to_a_secret_does_not_print_it(board, cli_inproc, sentinels):
    write_state(board, LEGIT)
    path = state_file(board)
    path.unlink()
    path.symlink_to(board.root / "etc" / "shadow")
    rc, _, err = cli_inproc(board, "restore", "--device", "jetson")
    assert rc == 2 and "secret" not in err and "saved originals" in one_line(err)
    assert fj.writes_attempted(board.root) == 0


@pytest.mark.parametrize("command", ["apply", "restore"])
@pytest.mark.parametrize("exists", [False, True])
def test_a_lock_file_linked_elsewhere_is_not_followed(board, cli_inproc, tmp_path, command, exists):
    """The lock beside the saved originals is opened with O_CREAT as root: through a link it created (or opened
    for writing) any file the link named, e.g. /etc/nologin. Refused, one line, nothing written."""
    _device_id, path = saved_path(board)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = tmp_path / "elsewhere" / "nologin"
    target.parent.mkdir()
    if exists:
        target.write_text("kept\n")
    path.with_suffix(".lock").symlink_to(target)
    args = ["apply", "--device", "jetson", *sets(APPLY)] if command == "apply" else ["restore", "--device", "jetson"]
    rc, _out, err = cli_inproc(board, *args)
    assert rc == 2 and "lock file" in one_line(err)
    assert target.exists() == exists and (not exists or target.read_text() == "kept\n")
    assert fj.writes_attempted(board.root) == 0 and board.changed() == {} and board.saved_originals() == []


@pytest.mark.parametrize("meta", [{"pid": "not-a-pid"}, {"pid": -1}, {"pid": [1]}, {},
                                  {"kept": "yes", "pid": 999_999_999},
                                  {"pid": 1, "started": -5}])  # the last: a live pid, but not the process that saved
def test_an_unknown_owner_counts_as_a_crash_and_is_restored_first(board, cli_inproc, meta):
    """A legit leftover whose owner cannot be known: restored (checked) before the next apply."""
    assert cli_inproc(board, "apply", "--device", "jetson", "--set", "gpu_mhz=624.75")[0] == 0
    doc = json.loads(state_file(board).read_text())
    doc["meta"] = meta
    state_file(board).write_text(json.dumps(doc))
    rc, _, err = cli_inproc(board, "apply", "--device", "jetson", "--set", "emc_mhz=204")
    assert rc == 0, err
    assert fj.read(board.root, f"{GPU}/max_freq") == "1300500000"  # the leftover was put back first
    assert cli_inproc(board, "restore", "--device", "jetson")[0] == 0
    board.assert_restored()


# ----- nvml: the same rules for its cpufreq files and its NVML settings -------------------------------------
@pytest.fixture
def gpu(monkeypatch, tmp_path):
    from tests.fake_nvml import FakeGpu

    root = tmp_path / "sysroot"
    pol = root / "sys/devices/system/cpu/cpufreq/policy0"
    pol.mkdir(parents=True)
    (pol / "scaling_available_frequencies").write_text("800000 1600000 3200000\n")
    (pol / "scaling_min_freq").write_text("800000\n")
    (pol / "scaling_max_freq").write_text("3200000\n")
    (root / "etc").mkdir()
    (root / "etc/shadow").write_text("secret\n")
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    g = FakeGpu()
    g.install(monkeypatch.setattr)
    g.root = root
    return g


def open_nvml(tmp_path):
    from polythrottle.devices import DeviceOptions
    from polythrottle.devices.nvml import open_device

    return open_device("0", DeviceOptions(state_dir=tmp_path / "state"), torch_device="cpu",
                       rapl_root=tmp_path / "no-rapl")


NVML_BAD = {
    "file-elsewhere": {"/etc/shadow": "1"},
    "file-dotdot": {"/sys/devices/system/cpu/cpufreq/policy0/../../../../../etc/shadow": "1"},
    "file-value": {"/sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq": "1; reboot"},
    "power-text": {"nvml.power_limit_mw": "lots"},
    "power-huge": {"nvml.power_limit_mw": 10**15},
    "lock-value": {"nvml.gpu_locked_clocks": "1000"},
    # integers of the right kind, but outside what this GPU can hold: restored, the GPU would sit at its lowest clock
    "lock-below-every-clock": {"nvml.gpu_locked_clocks": 1},
    "mem-lock-below-every-clock": {"nvml.mem_locked_clocks": 1},
    "lock-above-every-clock": {"nvml.gpu_locked_clocks": 99_999},
    "power-below-the-minimum": {"nvml.power_limit_mw": 1},
    "cpu-max-1": {"/sys/devices/system/cpu/cpufreq/policy0/scaling_max_freq": "1"},
}


@pytest.mark.parametrize("case", sorted(NVML_BAD))
def test_nvml_refuses_tampered_originals(gpu, tmp_path, case):
    from polythrottle.devices.originals import OriginalsStore
    from polythrottle.errors import BadInputError, DeviceError

    store = OriginalsStore(tmp_path / "state")  # the public store API: as a crashed run would have left it
    store.record("nvml:GPU-00000000-1111-2222-3333-444444444444", NVML_BAD[case], meta={"pid": 999_999_999})
    with pytest.raises((BadInputError, DeviceError)) as e:
        open_nvml(tmp_path)
    assert e.value.exit_code == 2 and "saved originals" in str(e.value) and "\n" not in str(e.value)
    assert gpu.setter_calls() == []
    assert (gpu.root / "etc/shadow").read_text() == "secret\n"
    assert (gpu.root / "sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq").read_text() == "800000\n"


# ----- history rows -------------------------------------------------------------------------------------
@pytest.fixture
def history(tmp_path):
    """A history database with one finished tune of sim:jetson-orin-nano (model v1)."""
    import polythrottle as pt

    db = tmp_path / "h.sqlite"
    pt.tune(SIM, slo_ms=50, budget=4, optimizer="random", seed=0, workload=WORKLOAD, history=str(db),
            model_version="v1")
    return db


SIM, WORKLOAD = "sim:jetson-orin-nano", "efficientnet-b0"
MEASUREMENT_ROWS = {
    "config-not-json": "UPDATE measurements SET config = '{not json' WHERE id = 2",
    "config-list": "UPDATE measurements SET config = '[1, 2]' WHERE id = 2",
    "config-nested-bomb": "UPDATE measurements SET config = '" + "[" * 100_000 + "' WHERE id = 2",
    "config-value-object": """UPDATE measurements SET config = '{"gpu_mhz": {"a": 1}}' WHERE id = 2""",
    "energy-text": "UPDATE measurements SET energy_j = 'lots' WHERE id = 2",
    "latency-negative": "UPDATE measurements SET latency_ms = -1 WHERE id = 2",
    "extra-not-json": "UPDATE measurements SET extra = 'oops' WHERE id = 2",
    "step-text": "UPDATE measurements SET step = 'first' WHERE id = 2",
}
TUNE_ROWS = {
    "best-config-text": "UPDATE tunes SET best_config = 'fast'",
    "best-energy-text": "UPDATE tunes SET best_energy_j = 'x'",
    "best-latency-zero": "UPDATE tunes SET best_latency_ms = 0",
    "slo-text": "UPDATE tunes SET slo_ms = 'soon'",
}


def tamper(db, sql: str):
    from polythrottle.history import HistoryKey

    with sqlite3.connect(db) as c:
        c.execute(sql)
        return HistoryKey(*c.execute("SELECT device, workload, space FROM tunes").fetchone())


def check_history_error(e) -> None:
    from polythrottle.history import HistoryError

    assert isinstance(e, HistoryError) and e.exit_code == 2
    assert "\n" not in str(e) and "history database" in str(e) and len(str(e)) < 400


@pytest.mark.parametrize("case", sorted(MEASUREMENT_ROWS))
def test_tampered_measurement_rows_are_one_line(history, case):
    import polythrottle as pt
    from polythrottle.history import HistoryError, HistoryStore

    key = tamper(history, MEASUREMENT_ROWS[case])
    with HistoryStore(history) as store, pytest.raises(HistoryError) as e:
        store.observations(key)
    check_history_error(e.value)
    with pytest.raises(HistoryError) as e:  # a warm start reads every row of v1: the bad one is named
        pt.tune(SIM, slo_ms=50, budget=3, seed=0, workload=WORKLOAD, history=str(history), model_version="v2")
    check_history_error(e.value)


@pytest.mark.parametrize("case", sorted(TUNE_ROWS))
def test_tampered_tune_rows_are_one_line(history, case):
    from polythrottle.history import HistoryError, HistoryStore

    key = tamper(history, TUNE_ROWS[case])
    with HistoryStore(history) as store, pytest.raises(HistoryError) as e:
        store.best(key, model_version="v1", slo_ms=50)
    check_history_error(e.value)


def test_tampered_history_through_the_cli_is_one_line(history, cli_inproc):
    tamper(history, MEASUREMENT_ROWS["config-list"])
    rc, out, err = cli_inproc(None, "tune", "--device", SIM, "--workload", WORKLOAD,
                              "--slo-ms", "50", "--budget", "3", "--history", str(history), "--model-version", "v2",
                              "--json")
    assert rc == 2 and "history database" in one_line(err) and out == ""


def test_state_dir_env_is_not_trusted_for_other_devices(board, cli_inproc, tmp_path):
    """Originals saved for a dry-run root never apply to the real board (and vice versa)."""
    write_state(board, LEGIT)
    other = tmp_path / "other-root"
    fj.build(other, "agx-orin-jp5")
    b2 = type(board)(other, board.state, board.board, board.original)
    rc, out, _ = cli_inproc(b2, "restore", "--device", "jetson")
    assert rc == 0 and "nothing to restore" in out
