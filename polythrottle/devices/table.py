"""A measured or computed table as a measurer: ``ReplayTable`` (a CSV parsed into a sparse space and the
metrics of each config) and ``TableMeasurer`` (measurements looked up in it, with optional noise).

Every column of a CSV is a knob except the metric columns ``energy_j`` (per inference), ``latency_ms``
and the optional ``throughput_ips`` and ``power_w``. Only configs present in the table are valid
(tables may be sparse). Rows repeating a config are averaged. With ``noise`` > 0 each measured value
is multiplied by ``1 + noise * N(0, 1)``, independently per measurement. Touches no hardware.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from polythrottle.errors import BadInputError, DeviceError, brief, clip
from polythrottle.measure.measurement import Measurement
from polythrottle.space import Config, Knob, KnobStatus, SearchSpace, Value

METRIC_COLUMNS = ("energy_j", "latency_ms", "throughput_ips", "power_w")
REQUIRED_METRICS = ("energy_j", "latency_ms")
CLOCK_SUFFIXES = ("_mhz", "_khz", "_hz", "_ghz")


def _parse_value(text: str) -> Value:
    try:
        x = float(text)
    except ValueError:
        return text
    return int(x) if x.is_integer() and "." not in text and "e" not in text.lower() else x


def is_clock_knob(name: str) -> bool:
    return name.endswith(CLOCK_SUFFIXES)


def default_config_for(space: SearchSpace) -> Config:
    """Highest value of every clock knob, smallest batch, first value of anything else.

    If that combination is not in a sparse space, the valid config nearest to it is returned.
    """
    want = []
    for k in space.knobs:
        want.append(len(k) - 1 if is_clock_knob(k.name) else 0)
    target = np.asarray(want)
    scale = np.asarray([max(len(k) - 1, 1) for k in space.knobs], dtype=float)
    dist = (np.abs(space.rows - target) / scale).sum(axis=1)
    return space.config(int(np.argmin(dist)))


class ReplayTable:
    """A parsed measured table: a sparse space plus the (averaged) metrics of each config."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            what = "is a directory, not a CSV file" if path.is_dir() else \
                "is not a regular file" if path.exists() else "not found"
            raise BadInputError(f"replay table {path} {what}")
        configs: list[tuple[Value, ...]] = []
        metrics: list[list[float]] = []
        # per knob column and kind (text or not): how many rows, the first value and its line
        kinds: dict[tuple[int, bool], list[Any]] = {}
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:  # a byte-order mark is not part of a name
                reader = csv.DictReader(f)
                header = [h.strip() for h in (reader.fieldnames or [])]
                self._check_header(path, header)
                # rows are parsed as they are read: a list of every row's dict first held ~65 bytes of
                # Python objects per byte of CSV
                for lineno, row in enumerate(reader, start=2):
                    vals, ms = self._parse_row(path, lineno, row)
                    for j, v in enumerate(vals):
                        kinds.setdefault((j, isinstance(v, str)), [0, lineno, v])[0] += 1
                    configs.append(vals)
                    metrics.append(ms)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise BadInputError(f"replay table {path}: cannot read CSV ({clip(str(e), 120)})") from None
        if not configs:
            raise BadInputError(f"replay table {path} has no data rows")

        knobs = []
        for j, name in enumerate(self.knob_names):
            values = {c[j] for c in configs}
            if (j, True) in kinds and (j, False) in kinds:
                # one typo (`abc` for 1377) made the whole column text: a clock without its speed order,
                # every config's value a string. The rarer kind is the typo.
                texts, numbers = kinds[(j, True)], kinds[(j, False)]
                odd, what = (texts, "is not a number, as the column's other values are") if texts[0] <= numbers[0] \
                    else (numbers, "is a number, where the column's other values are names")
                raise BadInputError(f"replay table {path}, line {odd[1]}: {clip(name, 40)}={brief(str(odd[2]), 40)} "
                                    f"{what} (a knob column holds numbers or names, not both)")
            ordered = sorted(values) if not any(isinstance(v, str) for v in values) else list(
                dict.fromkeys(c[j] for c in configs)
            )
            knobs.append(Knob(name, tuple(ordered)))
        # each distinct value is looked up once (``Knob.index``: numeric steps match within a tolerance),
        # then every row's value indices; rows measured more than once are averaged
        steps = [{v: k.index(v) for v in {c[j] for c in configs}} for j, k in enumerate(knobs)]
        keys = np.asarray([[steps[j][v] for j, v in enumerate(c)] for c in configs], dtype=np.int32)
        rows, point = np.unique(keys, axis=0, return_inverse=True)
        self.space = SearchSpace(tuple(knobs), rows)
        m = np.asarray(metrics, dtype=float).reshape(len(configs), len(self.metric_names))
        ok = ~np.isnan(m)
        sums = np.zeros((len(self.space), len(self.metric_names)))
        counts = np.zeros((len(self.space), len(self.metric_names)))
        np.add.at(sums, point.reshape(-1), np.where(ok, m, 0.0))
        np.add.at(counts, point.reshape(-1), ok.astype(float))
        with np.errstate(invalid="ignore", divide="ignore"):
            self.values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def _check_header(self, path: Path, header: list[str]) -> None:
        """Sets ``knob_names`` and ``metric_names`` from the CSV header; BadInputError if it is unusable."""
        if not header:
            raise BadInputError(f"replay table {path} is empty (no header)")
        if "" in header:
            raise BadInputError(f"replay table {path}: column {header.index('') + 1} of the header has no name")
        if len(set(header)) != len(header):
            raise BadInputError(f"replay table {path}: duplicate column names in header")
        missing = [m for m in REQUIRED_METRICS if m not in header]
        if missing:
            raise BadInputError(f"replay table {path}: missing column(s) {', '.join(missing)}")
        self.knob_names = [h for h in header if h not in METRIC_COLUMNS]
        self.metric_names = [h for h in header if h in METRIC_COLUMNS]
        if not self.knob_names:
            raise BadInputError(f"replay table {path}: no knob columns (only metrics)")

    def _parse_row(self, path: Path, lineno: int, raw: dict) -> tuple[tuple[Value, ...], list[float]]:
        """One data row: its knob values and its metrics (NaN where an optional metric is empty);
        BadInputError naming the line and the field that is wrong."""
        row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else v for k, v in raw.items()}
        if None in row or "" in row and row[""]:
            raise BadInputError(f"replay table {path}, line {lineno}: more fields than the header")
        # DictReader fills the fields a short row lacks with None (an absent optional metric is NaN, as empty)
        short = [name for name in (*self.knob_names, *REQUIRED_METRICS) if name in row and row[name] is None]
        if short:
            raise BadInputError(f"replay table {path}, line {lineno}: fewer fields than the header "
                                f"(no {brief(short[0], 40)})")
        vals: list[Value] = []
        for name in self.knob_names:
            text = row.get(name)
            if text is None or text == "":
                raise BadInputError(f"replay table {path}, line {lineno}: empty value for {brief(name, 40)}")
            value = _parse_value(text)
            if isinstance(value, float) and not math.isfinite(value) or "\x00" in text or len(text) > 200:
                raise BadInputError(f"replay table {path}, line {lineno}: {brief(name, 40)}={brief(text, 40)} "
                                    "is not a knob value (a finite number or a name)")
            vals.append(value)
        ms: list[float] = []
        for name in self.metric_names:
            text = row.get(name)
            if (text is None or text == "") and name not in REQUIRED_METRICS:
                ms.append(math.nan)
                continue
            try:
                x = float(text)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise BadInputError(
                    f"replay table {path}, line {lineno}: {name}={brief(text, 40)} is not a number"
                ) from None
            if not math.isfinite(x) or (name in REQUIRED_METRICS and x <= 0) or x < 0:
                raise BadInputError(f"replay table {path}, line {lineno}: {name}={brief(text, 40)} is out of range")
            ms.append(x)
        return tuple(vals), ms

    @classmethod
    def from_arrays(cls, label: str, space: SearchSpace, metrics: Mapping[str, np.ndarray]) -> ReplayTable:
        """A table computed rather than read (e.g. a digital twin): ``metrics[name][i]`` for point i.

        ``label`` stands in for the path in messages; ``energy_j`` and ``latency_ms`` are required.
        """
        missing = [m for m in REQUIRED_METRICS if m not in metrics]
        if missing:
            raise BadInputError(f"table {label}: missing metric(s) {', '.join(missing)}")
        self = cls.__new__(cls)
        self.path = Path(label)
        self.knob_names = space.names
        self.metric_names = [m for m in METRIC_COLUMNS if m in metrics]
        self.space = space
        self.values = np.stack([np.asarray(metrics[m], dtype=float) for m in self.metric_names], axis=1)
        return self

    def metric(self, name: str) -> np.ndarray:
        """Column ``name`` for every point of ``space`` (NaN where absent)."""
        if name not in self.metric_names:
            return np.full(len(self.space), np.nan)
        return self.values[:, self.metric_names.index(name)]

    def truth(self, config: Mapping[str, Value]) -> Measurement:
        """The table's own (noise-free) values for ``config``."""
        return self.measurement(self.space.index_of(config), 1.0, 1.0)

    def measurement(self, i: int, e_mult: float, l_mult: float) -> Measurement:
        """Point ``i``'s metrics with energy times ``e_mult`` and latency times ``l_mult`` (power and
        throughput follow)."""
        def opt(name: str) -> float | None:
            x = float(self.metric(name)[i])
            return None if math.isnan(x) else x

        tp = opt("throughput_ips")
        pw = opt("power_w")
        return Measurement(
            energy_j=float(self.metric("energy_j")[i]) * e_mult,
            latency_ms=float(self.metric("latency_ms")[i]) * l_mult,
            throughput_ips=None if tp is None else tp / l_mult,
            power_w=None if pw is None else pw * e_mult / l_mult,
        )


class TableMeasurer:
    """Measurements of ``table`` under the config set last, times ``1 + noise * N(0, 1)`` (seeded);
    implements ``polythrottle.devices.Measurer``. ``default``: the baseline config (default: the highest
    clocks, smallest batch, nearest valid config); ``facts``: shown first in ``details()``."""

    def __init__(self, table: ReplayTable, *, noise: float = 0.0, seed: int | None = None,
                 default: Config | None = None, workload_name: str = "",
                 facts: Mapping[str, str] | None = None) -> None:
        self.table = table
        self.noise = noise
        self._rng = np.random.default_rng(seed)
        self._applied: int | None = None
        self._default = dict(default) if default is not None else None
        self._workload_name = workload_name
        self._facts = dict(facts or {})

    @property
    def workload_name(self) -> str:
        return self._workload_name

    def space(self) -> SearchSpace:
        return self.table.space

    def statuses(self) -> list[KnobStatus]:
        return [KnobStatus(k.name, True) for k in self.table.space.knobs]

    def default_config(self) -> Config:
        return dict(self._default) if self._default is not None else default_config_for(self.table.space)

    def set_config(self, config: Mapping[str, Value]) -> None:
        self._applied = self.table.space.index_of(config)

    def measure(self) -> Measurement:
        if self._applied is None:
            raise DeviceError("measure() called before apply()")
        if not self.noise:
            # exact: say so, so that nothing is measured twice; with noise the level stays unknown to the
            # optimizer (None), as on real hardware
            return replace(self.table.measurement(self._applied, 1.0, 1.0), energy_rel_std=0.0, latency_rel_std=0.0)
        e, lat = 1.0 + self.noise * self._rng.standard_normal(2)
        e, lat = max(float(e), 0.05), max(float(lat), 0.05)  # keep values positive under huge noise
        return self.table.measurement(self._applied, e, lat)

    def details(self) -> dict[str, str]:
        return {**self._facts, "points": str(len(self.table.space)), "noise": str(self.noise)}

    def close(self) -> None:
        """Nothing to free."""
