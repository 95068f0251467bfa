"""One history file, three faces: the CLI, the Python API and the daemon find each other's tunes.

CLI tune (model v1) -> API ``retune`` (v2) warm-starts from v1 -> a daemon for v2 applies the API's stored
best without tuning (``applied_source`` "history") -> CLI tune (v3) warm-starts from v2. The device is
named differently by each face (profile name, YAML path), as users do.
"""

from __future__ import annotations

import json
import sqlite3

import polythrottle as pt
from polythrottle.boards.profiles import PROFILE_DIR
from tests.conftest import run_cli
from tests.daemon.helpers import DaemonProcess, NotifyListener, write_config

SLO_MS = 25.0
KNOBS = "gpu_mhz,emc_mhz,batch_size"


def _cli_tune(history, version: str, seed: int) -> dict:
    r = run_cli("tune", "--device", "sim:jetson-agx-orin", "--workload", "efficientnet-b0", "--slo-ms", str(SLO_MS),
                "--knobs", KNOBS, "--budget", "8", "--noise", "0.02", "--seed", str(seed), "--history", str(history),
                "--model-version", version, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_cli_api_daemon_cli_share_one_history(tmp_path):
    history = tmp_path / "history.sqlite"

    v1 = _cli_tune(history, "v1", seed=0)
    assert v1["warm_start"] is None and v1["best"] is not None

    # the API names the board by its profile file, and re-tunes after the model update
    dev = pt.open_device(f"sim:{PROFILE_DIR / 'jetson-agx-orin.yaml'}", workload="efficientnet-b0",
                         noise=0.02, seed=1)
    try:
        r2 = pt.retune(dev, slo_ms=SLO_MS, budget=6, knobs=KNOBS.split(","), history=history, model_version="v2")
    finally:
        dev.close()
    assert r2.extra["warm_start"] is not None and r2.extra["warm_start"]["from_version"] == "v1"
    assert r2.best is not None

    # a daemon for v2 on the same history applies the API's stored best: no tune
    cfg = write_config(tmp_path / "daemon.yaml", device="sim:jetson-agx-orin", workload="efficientnet-b0",
                       slo_ms=SLO_MS, knobs=KNOBS.split(","), model_version="v2", history=str(history),
                       state_dir="state", socket="ctl.sock", monitor_interval_s=0, watch_interval_s=0.2,
                       metrics=False, seed=0)
    notify = NotifyListener(tmp_path / "notify.sock")
    d = DaemonProcess(cfg, notify, tmp_path / "daemon.log")
    try:
        s = d.wait(lambda s: s["state"] == "serving", 60, "the daemon to apply the stored v2 best")
        assert s["applied_source"] == "history", s
        assert s["last_tune"] is None and s["tunes"] == 0
        assert {k: s["applied"][k] for k in r2.best.config} == r2.best.config
        assert d.stop() == 0
    finally:
        d.kill()
        notify.close()

    v3 = _cli_tune(history, "v3", seed=2)
    assert v3["warm_start"] is not None and v3["warm_start"]["from_version"] == "v2"
    assert v3["device_identity"] == {"kind": "sim", "board": "jetson-agx-orin", "unit": "0"}


def test_knob_order_does_not_split_the_history(small_table, tmp_path):
    """The same knobs listed in another order (a daemon's YAML, a CLI flag, an API list) are the same space:
    one history key, so the second tune warm-starts from the first."""
    history = tmp_path / "history.sqlite"
    first = pt.tune(f"replay:{small_table}", 50.0, budget=3, knobs=["gpu_mhz", "batch_size"], history=history,
                    model_version="v1", seed=0)
    assert first.extra["warm_start"] is None
    again = pt.tune(f"replay:{small_table}", 50.0, budget=3, knobs=["batch_size", "gpu_mhz"], history=history,
                    model_version="v1", seed=0)
    assert again.extra["warm_start"] is not None and again.extra["warm_start"]["prior_measurements"] == 3
    with sqlite3.connect(history) as db:
        assert db.execute("SELECT COUNT(DISTINCT space) FROM tunes").fetchone()[0] == 1
