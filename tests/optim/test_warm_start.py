"""Warm-started re-tuning: the optimizer on a shifted landscape, and the tune CLI with a history store."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from polythrottle.cli import main
from polythrottle.errors import BadInputError
from polythrottle.history import HistoryStore
from polythrottle.optim import Observation, make_optimizer
from polythrottle.optim.cbo import CBOSettings
from polythrottle.optim.warm_start import WarmStartBO, configs_to_prior
from polythrottle.space import Knob, SearchSpace
from tests.conftest import write_table

# pytest-xdist (--dist loadgroup): every test here on one worker, so that old_history() (cached) runs once per seed
pytestmark = pytest.mark.xdist_group("test_warm_start")

SPACE = SearchSpace.product(
    [Knob("gpu_mhz", tuple(range(100, 1400, 100))), Knob("batch_size", (1, 2, 4, 8, 16, 32))]
)
SLO = 60.0
X = SPACE.encoded()


def old_truth() -> tuple[np.ndarray, np.ndarray]:
    f = np.array([SPACE.config(i)["gpu_mhz"] for i in range(len(SPACE))], dtype=float)
    b = np.array([SPACE.config(i)["batch_size"] for i in range(len(SPACE))], dtype=float)
    latency = 5.0 * b * (1300 / f) ** 0.9 + 3.0
    energy = (0.3 + 1.2 * (f / 1300) ** 2) * (1 + 2.0 / b) * (1300 / f) ** 0.3
    return energy, latency


def new_truth(kind: str) -> tuple[np.ndarray, np.ndarray]:
    e, lat = old_truth()
    if kind == "small":  # a model update: energy -10%..+5% and latency +5..+12% varying smoothly over the space
        return e * (0.90 + 0.15 * X[:, 0]), lat * (1.05 + 0.07 * X[:, 1])
    # a different model: its energy favours the other end of the clock axis (static power dominates: lowest
    # energy at the highest clock) and batches cost it more energy and latency than before, unevenly
    return e * np.exp(-2.4 * X[:, 0] + 1.2 * X[:, 1] ** 2), lat * np.exp(1.2 * X[:, 1] ** 2)


def drive(opt, energy, latency, budget, seed, noise=0.02):
    """Ask/tell loop; the first (1-based) measurement truly feasible and within 5% of the optimum."""
    rng = np.random.default_rng(seed)
    best = energy[latency <= SLO].min()
    first = None
    for step in range(budget):
        i = opt.ask(remaining=budget - step)
        opt.tell(Observation(i, energy[i] * (1 + noise * rng.standard_normal()),
                             latency[i] * (1 + noise * rng.standard_normal())))
        if first is None and latency[i] <= SLO and energy[i] <= 1.05 * best:
            first = step + 1
        if opt.stop_reason:
            break
    return first


@functools.cache
def old_history(seed: int) -> list[Observation]:
    e, lat = old_truth()
    opt = make_optimizer("cbo", SPACE, SLO, seed)
    drive(opt, e, lat, 10, seed)
    return list(opt.observations)


@pytest.mark.parametrize("seed", [0, 1])
def test_warm_start_finds_shifted_optimum_fast(seed: int) -> None:
    prior = old_history(seed)
    e1, l1 = new_truth("small")
    warm = WarmStartBO(SPACE, SLO, seed, prior=prior)
    baseline = SPACE.index_of({"gpu_mhz": 1300, "batch_size": 1})
    first_warm = drive(_told(warm, baseline, e1, l1), e1, l1, 5, seed)
    assert warm.fallback_reason is None
    assert first_warm is not None and first_warm + 1 <= 5  # +1: the baseline measurement
    rec = warm.recommend()
    assert rec.index is not None and l1[rec.index] <= SLO and e1[rec.index] <= 1.05 * e1[l1 <= SLO].min()
    # the estimated level shift of latency is in the right direction
    assert 0.0 < warm.shift[1] < 0.2


def _told(opt, index: int, e: np.ndarray, lat: np.ndarray):
    opt.tell(Observation(index, float(e[index]), float(lat[index])))
    return opt


def test_large_shift_falls_back_and_still_converges() -> None:
    prior = old_history(0)
    e1, l1 = new_truth("large")
    warm = WarmStartBO(SPACE, SLO, 0, prior=prior)
    first = drive(warm, e1, l1, 16, 0)
    assert warm.fallback_reason is not None and "large shift" in warm.fallback_reason
    rec = warm.recommend()
    assert first is not None
    assert rec.index is not None and l1[rec.index] <= SLO
    assert e1[rec.index] <= 1.10 * e1[l1 <= SLO].min()


def test_no_prior_is_a_cold_start_and_bad_prior_is_refused() -> None:
    cold = WarmStartBO(SPACE, SLO, 0)
    assert not cold.prior_active and cold.settings == CBOSettings()  # the cold settings, not the warm ones
    with pytest.raises(BadInputError):
        WarmStartBO(SPACE, SLO, 0, prior=[Observation(len(SPACE), 1.0, 1.0)])
    prior = configs_to_prior(SPACE, [({"gpu_mhz": 100, "batch_size": 1}, 1.0, 2.0),
                                     ({"gpu_mhz": 150, "batch_size": 1}, 1.0, 2.0),  # not a step: skipped
                                     ({"batch_size": 1}, 1.0, 2.0)])                 # other space: skipped
    assert [p.index for p in prior] == [SPACE.index_of({"gpu_mhz": 100, "batch_size": 1})]


def _table(path: Path, scale_e: float, scale_l: float) -> Path:
    e, lat = old_truth()
    rows = [{**SPACE.config(i), "energy_j": e[i] * scale_e * (1 + 0.1 * X[i, 0]), "latency_ms": lat[i] * scale_l}
            for i in range(len(SPACE))]
    return write_table(path, rows)


def _tune(capsys, *args: str) -> dict:
    code = main(["tune", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_cli_records_history_and_warm_starts_after_update(tmp_path: Path, capsys) -> None:
    db = tmp_path / "h.sqlite"
    v1 = _table(tmp_path / "v1.csv", 1.0, 1.0)
    v2 = _table(tmp_path / "v2.csv", 1.08, 0.93)
    first = _tune(capsys, "--device", f"replay:{v1}", "--slo-ms", str(SLO), "--budget", "10", "--seed", "0",
                  "--noise", "0.02", "--history", str(db), "--model-version", "v1")
    assert first["model_version"] == "v1" and first["warm_start"] is None
    second = _tune(capsys, "--device", f"replay:{v2}", "--slo-ms", str(SLO), "--budget", "6", "--seed", "1",
                   "--noise", "0.02", "--history", str(db), "--model-version", "v2")
    ws = second["warm_start"]
    assert ws["from_version"] == "v1" and ws["prior_measurements"] == first["measurements"]
    assert math.isclose(ws["shift_latency"], math.log(0.93), abs_tol=0.05)
    assert second["optimizer"] == "warm-cbo" and second["best"] is not None
    with HistoryStore(db) as s:
        versions = {}
        for key in s.keys():
            versions = {v.model_version: v.measurements for v in s.model_versions(key)}
            best = s.best(key, model_version="v2", slo_ms=SLO)
        assert versions == {"v1": first["measurements"], "v2": second["measurements"]}
        assert best is not None and best.config == second["best"]["config"] and best.warm_from == "v1"
    cold = _tune(capsys, "--device", f"replay:{v2}", "--slo-ms", str(SLO), "--budget", "2", "--seed", "1",
                 "--history", str(db), "--model-version", "v3", "--no-warm-start")
    assert cold["warm_start"] is None and cold["optimizer"] == "cbo"


def test_cli_model_file_fingerprint_and_bad_combinations(tmp_path: Path, capsys, small_table: Path) -> None:
    w = tmp_path / "model.pt"
    w.write_bytes(b"weights")
    res = _tune(capsys, "--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "3",
                "--history", str(tmp_path / "h.sqlite"), "--model-file", str(w))
    assert res["model_version"].startswith("sha256:")
    for bad in (["--model-version", "a", "--model-file", str(w)], ["--no-history", "--history", "x.db"],
                ["--model-file", str(tmp_path / "missing.pt")]):
        code = main(["tune", "--device", f"replay:{small_table}", "--slo-ms", "50", *bad])
        assert code == 2
    assert "missing.pt" in capsys.readouterr().err


def test_default_history_is_best_effort(tmp_path: Path, monkeypatch, capsys, small_table: Path) -> None:
    import argparse

    from polythrottle.cli.history_args import open_history

    bad = tmp_path / "state"
    bad.mkdir()
    (bad / "history.sqlite").write_bytes(b"garbage" * 100)
    monkeypatch.setenv("POLYTHROTTLE_STATE_DIR", str(bad))
    args = argparse.Namespace(model_version="v1", model_file=None, no_history=False, history=None,
                              device="nvml:0", state_dir=None)
    store, version = open_history(args)  # a real device: the default database, unusable -> a warning
    assert store is None and version == "v1" and "not recording history" in capsys.readouterr().err
    args.history = bad / "history.sqlite"  # named explicitly: an error
    with pytest.raises(BadInputError, match="corrupt"):
        open_history(args)
    args.history, args.device = None, f"replay:{small_table}"
    assert open_history(args) == (None, "v1")  # simulated devices: no history unless asked


def test_warm_retune_never_picks_costlier_than_a_previous_best_that_remeasures_feasible() -> None:
    # the same landscape again: the previous best (what the prior alone recommends) is measured second;
    # once it re-measures feasible, nothing costlier is recommended, whatever the rest of the budget finds
    e, lat = old_truth()
    for seed in (0, 1):
        prior = old_history(seed)
        warm = WarmStartBO(SPACE, SLO, seed, prior=prior)
        prev = warm.previous_best
        assert prev is not None and lat[prev] <= SLO
        baseline = SPACE.index_of({"gpu_mhz": 1300, "batch_size": 1})
        _told(warm, baseline, e, lat)
        assert warm.ask(remaining=5) == prev
        warm.tell(Observation(prev, float(e[prev]), float(0.999 * SLO)))  # feasible, by a hair
        rec = warm.recommend()
        assert rec.index is not None and rec.objective <= e[prev] * (1 + 1e-9)


def test_readme_api_example_saves_energy_on_the_retune(xavier_table: Path, tmp_path: Path) -> None:
    import polythrottle as pt

    for seed in (0, 1):
        hist = str(tmp_path / f"h{seed}.sqlite")
        dev = pt.open_device(f"replay:{xavier_table}", noise=0.02, seed=seed)
        try:
            r1 = pt.tune(dev, slo_ms=100, budget=15, history=hist, model_version="v1", seed=seed)
            r2 = pt.retune(dev, slo_ms=100, budget=6, history=hist, model_version="v2", seed=seed)
        finally:
            dev.close()
        assert r1.best is not None and r2.best is not None and r2.saving_pct > 0
        assert r2.extra["warm_start"]["from_version"] == "v1"


def test_a_retune_over_another_knob_space_starts_from_the_configs_the_spaces_share(tmp_path: Path) -> None:
    """A new model version tuned over other knobs (here one more) has another history key; the previous
    version's measurements whose configs lie in the new space (the added knob at its baseline value) are its
    prior. Measurements at another value of a knob the new tune holds fixed are not."""
    import polythrottle as pt

    db = tmp_path / "h.sqlite"
    dev = "sim:jetson-agx-xavier"
    first = pt.tune(dev, 60.0, budget=8, seed=0, workload="resnet50", knobs=["gpu_mhz", "batch_size"],
                    history=db, model_version="v1")
    v1 = [r.config for r in first.history]
    wider = pt.tune(dev, 60.0, budget=4, seed=1, workload="resnet50", knobs=["gpu_mhz", "batch_size", "emc_mhz"],
                    history=db, model_version="v2")
    ws = wider.extra["warm_start"]
    assert ws is not None and ws["from_version"] == "v1" and ws["from_space"]
    assert ws["prior_measurements"] == len(v1) and wider.optimizer == "warm-cbo"

    batch = str(v1[-1]["batch_size"])
    narrower = pt.tune(dev, 60.0, budget=3, seed=2, workload="resnet50", knobs=["gpu_mhz"],
                       baseline={"batch_size": batch}, history=db, model_version="v3")
    ws = narrower.extra["warm_start"]
    emc = str(wider.history[0].config["emc_mhz"])  # the baseline's: v1 held emc there
    from_v1 = sum(str(c["batch_size"]) == batch for c in v1)
    from_v2 = sum(str(r.config["batch_size"]) == batch and str(r.config["emc_mhz"]) == emc for r in wider.history)
    assert ws is not None and ws["from_space"] and from_v1 >= 1
    # the other space that shares the most measurements: those at the held batch size and emc, no others
    assert ws["prior_measurements"] == max(from_v1, from_v2)
    assert ws["from_version"] in ({"v1"} if from_v1 > from_v2 else {"v2"} if from_v2 > from_v1 else {"v1", "v2"})
