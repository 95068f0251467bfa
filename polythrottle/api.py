"""The Python API: a thin face over ``polythrottle.tuning.tuner.Tuner`` (through ``polythrottle.tuning.session.run_tune``).

    import polythrottle as pt

    dev = pt.open_device("sim:jetson-agx-orin", workload="efficientnet-b0")
    result = pt.tune(dev, slo_ms=25, budget=15, history="h.sqlite", model_version="v1")
    with pt.applied(dev, result.best.config):        # restored on exit, whatever happens
        serve()
    result2 = pt.retune(dev, slo_ms=25, history="h.sqlite", model_version="v2")   # warm start from v1

Errors are the typed ``polythrottle.errors`` exceptions (``BadInputError`` for bad input, ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from polythrottle import paths
from polythrottle.carbon import CarbonIntensity, tune_extra
from polythrottle.carbon import resolve as resolve_carbon
from polythrottle.devices import open_device as _open_device
from polythrottle.devices.base import Device
from polythrottle.errors import BadInputError, brief
from polythrottle.fingerprint import fingerprint_files, fingerprint_state_dict
from polythrottle.history.protocol import is_history
from polythrottle.space import Config, Value
from polythrottle.spec import DeviceSpec, Face, TuneSpec, refuse_two_model_versions, refuse_unkept_model_version
from polythrottle.tuning.session import check_tune, run_tune
from polythrottle.tuning.tuner import OnRecord, TuneResult

if TYPE_CHECKING:
    from polythrottle.history.protocol import History

HistoryArg: TypeAlias = "History | str | os.PathLike[str] | bool | None"


def open_device(
    spec: str,
    *,
    workload: str | None = None,
    noise: float = 0.0,
    seed: int | None = None,
    no_clock_control: bool = False,
    state_dir: str | os.PathLike[str] | None = None,
    percentile: float = 99.0,
    slo_metric: str | None = None,
) -> Device:
    """Open ``replay:TABLE.csv``, ``sim:PROFILE``, ``jetson[:PROFILE]`` or ``nvml[:INDEX]``.

    slo_metric: live workloads: the latency the SLO bounds, "batch", "ttft" or "tpot" (None: the
    workload's default, tpot for ``llm:`` workloads). The device restores every hardware value it
    changed on ``close()`` (also a context manager). Raises BadInputError for an unknown device or
    bad argument, DeviceError if it cannot be opened.
    """
    given = _given(device=spec, workload=workload, noise=noise, seed=seed, no_clock_control=no_clock_control,
                   state_dir=state_dir, percentile=percentile, slo_metric=slo_metric)
    return _open_device(spec, DeviceSpec.parse(given, Face.API).device_options())


def _given(**kwargs: object) -> dict[str, object]:
    """The keyword arguments that were given (None: the spec's default applies)."""
    return {k: v for k, v in kwargs.items() if v is not None}


def apply(device: Device, config: Mapping[str, Value | str]) -> Config:
    """Validate ``config`` fully, then set it; returns the normalized config. On a device with hardware
    knobs, knobs ``config`` leaves out stay as they are, unwritten (as ``polythrottle apply``), and the
    normalized part is returned; on one without (sim, replay) they take the device's defaults. Nothing is
    written when validation fails (BadInputError)."""
    if not isinstance(config, Mapping):
        raise BadInputError(f"a config is a mapping of knob: value, got {type(config).__name__}")
    space = device.space()
    if device.control is None or set(space.names) <= set(config):
        normalized = device.complete_config(config)
        device.apply(normalized)
        return normalized
    part = space.normalize_part(config)  # every value checked before anything is written
    device.apply_part(part)
    return part


def restore(device: Device) -> None:
    """Put back every hardware value changed since the device was opened."""
    device.restore()


@contextmanager
def applied(device: Device, config: Mapping[str, Value | str]) -> Iterator[Config]:
    """``with applied(dev, cfg):`` run with ``cfg`` set; the original values are restored on exit,
    also on exceptions and KeyboardInterrupt."""
    try:
        yield apply(device, config)
    finally:
        device.restore()


def model_version_of(model_version: str | None = None, model_files: Sequence[str | os.PathLike[str]] | None = None,
                     model: object | None = None) -> str | None:
    """The model version: ``model_version`` as given, else a fingerprint of ``model_files``, else of the
    ``model``'s weights (a PyTorch module or state_dict); None if none is given."""
    refuse_two_model_versions({"model_version": model_version, "model_files": model_files, "model": model}, Face.API)
    if model_version is not None:
        if not str(model_version).strip():
            raise BadInputError("model_version is empty")
        return str(model_version).strip()
    if model_files:
        return fingerprint_files(model_files)
    if model is not None:
        return fingerprint_state_dict(model)
    return None


def _store(history: HistoryArg, state_dir: str | os.PathLike[str] | None) -> tuple[History | None, bool]:
    """(store, whether we opened it and must close it). A PostgreSQL URL gets a spool in the state dir."""
    if history is None or history is False:
        return None, False
    if history is True or isinstance(history, (str, os.PathLike)):
        from polythrottle.history import open_history

        sd = None if state_dir is None else Path(state_dir)
        target = paths.default_history(sd) if history is True else history
        return open_history(target, spool_dir=paths.state_dir(sd)), True
    check_history_arg(history)
    return history, False


def check_history_arg(history: object, name: str = "history=:", *, optional: bool = True) -> None:
    """The form of a ``history`` argument, opening and creating nothing: True (the default database), a path
    or URL (its form: ``parse_target``), a history store, or with ``optional`` None/False (no history).
    Raises BadInputError (HistoryError for a malformed path or URL) naming the argument ``name``."""
    if history is True or (optional and (history is None or history is False)) or is_history(history):
        return
    if isinstance(history, (str, os.PathLike)):
        from polythrottle.history.target import parse_target

        parse_target(history)
        return
    accepted = "a history store, a path or URL, True or None" if optional else "a history store, a path or URL, or True"
    raise BadInputError(f"{name} must be {accepted}, got {type(history).__name__}")


def tune_spec(device: Device | str, slo_ms: float, *, budget: int = 20, optimizer: str = "cbo",
              warm_start: bool = True, baseline: Mapping[str, Value | str] | None = None,
              **optional: object) -> tuple[TuneSpec, CarbonIntensity]:
    """``tune``'s pre-flight, part one, before anything is opened: every argument of the declared spec
    checked and named as the keyword (``optional``: workload, knobs, seed, model_version, slo_metric,
    carbon_country, carbon_intensity_g_per_kwh; None: not given), and the grid's carbon intensity (a bad
    country fails here). Also ``CheckpointRetuner``'s check when it is made. Raises BadInputError."""
    if not isinstance(device, (str, Device)):
        raise BadInputError(f"device=: must be a device spec (text) or an open Device, got {type(device).__name__}")
    spec = TuneSpec.parse({
        "device": device if isinstance(device, str) else device.identity().device, "slo_ms": slo_ms,
        "budget": budget, "optimizer": optimizer, "warm_start": warm_start, "baseline": baseline or {},
        **_given(**optional),
    }, Face.API)
    return spec, resolve_carbon(spec.carbon_country, spec.carbon_intensity_g_per_kwh)


def check_hooks(on_record: object, state_dir: object, named: Callable[[str], str] = "{}=:".format) -> None:
    """``tune``'s pre-flight, part two: ``on_record`` a function (or None), ``state_dir`` a path (or None).
    ``named``: how an error names the argument (``on_record=:``; the retuner's ``tune_kwargs: on_record``)."""
    if on_record is not None and not callable(on_record):
        raise BadInputError(f"{named('on_record')} must be a function of one TuneRecord, got {brief(on_record, 40)}")
    if state_dir is not None and not isinstance(state_dir, (str, os.PathLike)):
        raise BadInputError(f"{named('state_dir')} must be a path, got {brief(state_dir, 40)}")


def check_on_device(dev: Device, spec: TuneSpec) -> list[str] | None:
    """``tune``'s pre-flight against the opened device: the spec's knobs, baseline, SLO, budget and seed
    (``check_tune``). Returns the knobs to tune (None: all)."""
    knobs = list(spec.knobs) if spec.knobs else None
    check_tune(dev, spec.slo_ms, spec.budget, knobs=knobs, baseline=spec.baseline, seed=spec.seed)
    return knobs


def tune(
    device: Device | str,
    slo_ms: float,
    *,
    budget: int = 20,
    knobs: Sequence[str] | None = None,
    baseline: Mapping[str, Value | str] | None = None,
    optimizer: str = "cbo",
    seed: int | None = None,
    workload: str | None = None,
    history: HistoryArg = None,
    state_dir: str | os.PathLike[str] | None = None,
    model_version: str | None = None,
    model_files: Sequence[str | os.PathLike[str]] | None = None,
    model: object | None = None,
    warm_start: bool = True,
    on_record: OnRecord | None = None,
    slo_metric: str | None = None,
    carbon_country: str | None = None,
    carbon_intensity_g_per_kwh: float | None = None,
) -> TuneResult:
    """Tune for the lowest energy per inference with latency <= ``slo_ms``; returns a ``TuneResult``.

    device: an open Device (left open and restored to its own settings when the tune ends, also when it
    raises or is interrupted: the best config is NOT applied, use ``apply``/``applied``) or a spec (opened
    with ``workload``, closed and restored afterwards). history: a store (``open_history``),
    a path or URL, True (``default_history()``: ``$POLYTHROTTLE_HISTORY_URL`` or ``STATE_DIR/history.sqlite``)
    or None (no history). With a history every
    measurement is recorded under the model version (``model_version``, or a fingerprint of
    ``model_files`` or of ``model``'s weights) and, with ``warm_start``, the tune starts from stored
    measurements of this version or the previous one; without one a model version is refused (it would
    key nothing). slo_metric: which latency ``slo_ms`` bounds
    ("batch", "ttft", "tpot"; see ``open_device``); with an open device it must be the one the device
    was opened with. ``result.extra`` holds ``carbon`` (the grid intensity: ``carbon_intensity_g_per_kwh``
    if given, else ``carbon_country``'s (ISO3) from the packaged dataset, else the world average) and
    ``co2_g_per_inference`` of the baseline and the pick. Raises BadInputError, DeviceError, HistoryError.
    """
    spec, carbon = tune_spec(device, slo_ms, budget=budget, optimizer=optimizer, warm_start=warm_start,
                             baseline=baseline, workload=workload, knobs=knobs, seed=seed,
                             model_version=model_version, slo_metric=slo_metric, carbon_country=carbon_country,
                             carbon_intensity_g_per_kwh=carbon_intensity_g_per_kwh)
    version = model_version_of(spec.model_version, model_files, model)  # a missing model file is named first
    refuse_unkept_model_version({"model_version": spec.model_version, "model_files": model_files, "model": model},
                                Face.API, f"history={history}" if history is None or history is False else None)
    check_hooks(on_record, state_dir)
    if not isinstance(device, str):
        if device.closed:
            raise BadInputError(f"device=: {device.name} is closed; open it again")
        if workload is not None and workload != device.workload_name:
            raise BadInputError(f"workload={workload}: the device was opened to measure "
                                f"{device.workload_name or 'no workload'}; pass workload to open_device")
    if slo_metric is not None and not isinstance(device, str):
        opened = device.info().details.get("slo metric", "batch")
        if opened != slo_metric:
            raise BadInputError(f"slo_metric={slo_metric}: the device was opened to bound {opened}; "
                                f"pass slo_metric to open_device")
    owned = isinstance(device, str)
    dev = open_device(device, workload=workload, slo_metric=slo_metric) if isinstance(device, str) else device
    store, close_store = None, False
    try:
        # knobs and baseline checked against the device before the history is opened (which creates it)
        knob_list = check_on_device(dev, spec)
        store, close_store = _store(history, state_dir)
        result = run_tune(dev, spec.slo_ms, spec.budget, store=store, model_version=version,
                          warm_start=spec.warm_start, optimizer=spec.optimizer, knobs=knob_list,
                          baseline=spec.baseline, seed=spec.seed, on_record=on_record)
        result.extra.update(tune_extra(carbon, result))
        return result
    finally:
        try:
            if owned:
                dev.close()
            else:
                dev.restore()  # never left at the last config measured (the caller's device stays open)
        finally:
            if close_store and store is not None:
                store.close()


def retune(
    device: Device | str,
    slo_ms: float,
    *,
    budget: int = 10,
    history: HistoryArg = True,
    model_version: str | None = None,
    model_files: Sequence[str | os.PathLike[str]] | None = None,
    model: object | None = None,
    carbon_country: str | None = None,
    **kwargs: object,
) -> TuneResult:
    """Re-tune after a model update, warm-started from the history of the previous model version.

    Same arguments as ``tune``; the new model's version (``model_version``, ``model_files`` or
    ``model``) is required and the history is on (default database). ``result.extra["warm_start"]``
    says which version it started from (None: nothing stored yet, so a cold tune). A keyword ``tune`` does not
    take (or ``warm_start``) raises BadInputError naming it, before anything is opened.
    """
    if model_version is None and not model_files and model is None:
        raise BadInputError("retune needs the new model's version: model_version, model_files or model")
    if "warm_start" in kwargs:
        raise BadInputError("warm_start=: retune always starts warm; call tune(..., warm_start=False) for a cold tune")
    _refuse_unknown_keywords(kwargs)
    if history is None or history is False:
        raise BadInputError("retune needs a history (a warm start reads the previous version's measurements)")
    return tune(device, slo_ms, budget=budget, history=history, model_version=model_version,
                model_files=model_files, model=model, warm_start=True, carbon_country=carbon_country,
                **kwargs)  # type: ignore[arg-type]


def _refuse_unknown_keywords(kwargs: Mapping[str, object]) -> None:
    """``retune``'s ``**kwargs`` go to ``tune``: a name neither takes was a raw TypeError that named ``tune()``.
    Raises BadInputError naming it, the closest accepted name, and every accepted keyword."""
    import difflib
    import inspect

    named = [n for f in (retune, tune) for n, p in inspect.signature(f).parameters.items()
             if p.kind is not inspect.Parameter.VAR_KEYWORD]
    accepted = sorted(set(named) - {"device", "slo_ms", "warm_start"})
    unknown = next((k for k in kwargs if k not in accepted), None)
    if unknown is None:
        return
    close = difflib.get_close_matches(unknown, accepted, n=1)
    hint = f" (did you mean {close[0]}=?)" if close else ""
    name = unknown if unknown.isidentifier() and len(unknown) <= 40 else brief(unknown, 40)
    raise BadInputError(f"{name}=: not an argument of retune{hint}; accepted: {', '.join(accepted)}")


__all__ = ["applied", "apply", "model_version_of", "open_device", "restore", "retune", "tune"]
