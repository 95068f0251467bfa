"""``CheckpointRetuner``: every argument is checked when the callback is made (``BadInputError``), not
logged as a warning at the first checkpoint, hours into training."""

from __future__ import annotations

import pytest

from polythrottle.errors import BadInputError
from polythrottle.integrations import CheckpointRetuner

OK = {"device": "sim:jetson-agx-orin", "workload": "efficientnet-b0", "slo_ms": 25, "budget": 3, "history": True}


@pytest.mark.parametrize("change, message", [
    ({"tune_kwargs": {"seed": -1}}, "seed=: must be >= 0"),
    ({"tune_kwargs": {"optimizer": "cbx"}}, "optimizer=: must be one of"),
    ({"tune_kwargs": {"carbon_country": "XXX"}}, "unknown country code 'XXX'"),
    ({"tune_kwargs": {"slo_metric": "p99"}}, "slo_metric=: must be one of"),
    ({"tune_kwargs": {"on_record": 3}}, "on_record must be a function"),
    ({"tune_kwargs": {"state_dir": 5}}, "state_dir must be a path"),
    ({"tune_kwargs": {"baseline": {"gpu_mhz": 1}}}, "gpu_mhz=1 is not a valid step"),
    ({"history": 5}, "history: must be a history store"),
    ({"history": "mysql://u@h/db"}, "unsupported scheme 'mysql'"),
    ({"device": "sim:no-such-board"}, "unknown profile 'no-such-board'"),
    ({"device": "gpu0"}, "unknown device 'gpu0'"),
    ({"workload": "no-such-model"}, "unknown workload 'no-such-model'"),
    ({"workload": None}, "needs a workload"),
    ({"knobs": ["gpu_mhz", "fan_rpm"]}, "unknown knob 'fan_rpm'"),
    # the retuner's own copy of tune's checks let these through, to fail at the first checkpoint
    ({"tune_kwargs": {"optimizer": None}}, "optimizer=: must be text"),
    ({"tune_kwargs": {"baseline": ["gpu_mhz"]}}, "baseline=: must be a mapping"),
])
def test_a_mistake_is_refused_when_the_callback_is_made(change: dict, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        CheckpointRetuner(**{**OK, **change})


def test_good_arguments_are_accepted_and_touch_no_history(tmp_path) -> None:
    db = tmp_path / "h.sqlite"
    r = CheckpointRetuner(**{**OK, "history": db, "knobs": ["gpu_mhz", "batch_size"]},
                          tune_kwargs={"seed": 0, "carbon_country": "FRA", "baseline": {"batch_size": 1}})
    assert r.last_error is None and not db.exists()


def _boom(record) -> None:
    raise RuntimeError("the user's on_record failed")


@pytest.mark.parametrize("background", [False, True])
def test_an_unexpected_error_after_a_checkpoint_is_recorded_and_training_goes_on(background: bool, tmp_path) -> None:
    """Foreground re-tunes let any error but PolyThrottle's escape into the training loop (background ones
    were recorded): the README promises training goes on unless raise_errors."""
    r = CheckpointRetuner(**{**OK, "history": tmp_path / "h.sqlite", "background": background},
                          tune_kwargs={"on_record": _boom})
    r.checkpoint_saved(model_version="v1")  # does not raise
    r.wait()
    assert isinstance(r.last_error, RuntimeError)
    strict = CheckpointRetuner(**{**OK, "history": tmp_path / "h.sqlite"}, tune_kwargs={"on_record": _boom},
                               raise_errors=True)
    with pytest.raises(RuntimeError):
        strict.checkpoint_saved(model_version="v2")


@pytest.mark.parametrize("kwargs", [
    {"seed": -1}, {"optimizer": None}, {"optimizer": "cbx"}, {"slo_metric": "p99"}, {"carbon_country": "XXX"},
    {"carbon_intensity_g_per_kwh": -1}, {"on_record": 3}, {"state_dir": 5}, {"baseline": {"gpu_mhz": 1}},
    {"baseline": ["gpu_mhz"]}, {"seed": 0, "optimizer": "random"},
])
def test_the_retuner_refuses_what_tune_refuses(tmp_path, kwargs: dict) -> None:
    """One pre-flight (``polythrottle.api.tune_spec``, ``check_hooks``, ``check_on_device``) for both."""
    import polythrottle as pt

    def refused(f) -> str | None:  # f: () -> anything
        try:
            f()
        except BadInputError as e:
            return type(e).__name__
        return None

    told = refused(lambda: pt.tune(OK["device"], OK["slo_ms"], budget=3, workload=OK["workload"], history=None,
                                   **kwargs))
    made = refused(lambda: CheckpointRetuner(**{**OK, "history": tmp_path / "h.sqlite"}, tune_kwargs=kwargs))
    assert told == made and (told is None) == (kwargs == {"seed": 0, "optimizer": "random"})
