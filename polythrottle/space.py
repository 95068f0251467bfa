"""Search spaces: named knobs with ordered discrete values, and the (possibly sparse) set of valid configs.

A config is a ``dict[str, Value]`` mapping knob names to values exactly as they appear in the knob.
Internally a config is a row of value indices; the space holds an ``(N, d)`` integer matrix of the
valid rows, so spaces of tens of thousands of points stay cheap to enumerate, encode and look up.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from polythrottle.errors import BadInputError, InvalidValueError, UnknownKnobError, brief, clip

Value = int | float | str
Config = dict[str, Value]

MAX_POINTS = 5_000_000
"""Refuse to enumerate spaces larger than this (memory guard)."""


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def default_latency_trend(name: str) -> int:
    """Known direction of latency as knob ``name`` rises: -1 for clocks (``*_mhz``), +1 for
    ``batch_size`` (a batch takes longer than one input), 0 otherwise."""
    if name.endswith("_mhz"):
        return -1
    return 1 if name == "batch_size" else 0


def default_energy_trend(name: str) -> int:
    """Known direction of energy per inference as knob ``name`` rises: -1 for ``batch_size``, else 0."""
    return -1 if name == "batch_size" else 0


PRECISION_SPEED_RANK = {"fp32": 0, "tf32": 1, "fp16": 2, "bf16": 2, "int8": 3}
"""Lower precision runs no slower and uses no more energy: fp32 -> tf32 -> fp16 / bf16 -> int8."""
SWITCH_SPEED_RANK = {
    "cuda_graphs": {"off": 0, "on": 1},
    "kv_cache": {"dynamic": 0, "static": 0, "static_graphs": 1},
}
"""Knobs with a value known to make inference no slower: CUDA graphs remove per-kernel launch overhead;
an LLM's static KV cache replayed as CUDA graphs (``static_graphs``) decodes faster than a dynamic or a
static cache run eagerly (those two are not ordered: which is faster depends on model and batch)."""


RANK_STEP_SLOWDOWN = {"precision": 3.0}
"""The most latency grows one speed rank lower, for knobs where that is known (``Knob.rank_step_slowdown``).
Precision: one step measured at most 2.5x slower (fp16 or bf16 -> tf32, seven H100/H200 tables,
``experiments/results``); tf32 -> fp32 up to 4.1x (BERT on an H100). CUDA graphs off ran up to 17x slower
than on (six of those tables): no bound."""


def default_semantics(name: str, values: Sequence[Value]) -> tuple[int, tuple[int, ...] | None, float | None]:
    """What is known of knob ``name`` from its name alone, used where nothing better is known (e.g. the
    columns of a replayed table): ``(latency_trend, speed_rank, latency_exponent)``, see ``Knob``.

    Clocks (``*_mhz``) and ``batch_size`` change latency at most in proportion to their value (a
    clock halved at most doubles the time; a batch twice as large takes at most twice as long);
    ``precision`` (fp32, tf32, fp16, bf16, int8) and ``cuda_graphs`` (off, on) have a known order.
    """
    numeric = all(_is_number(v) for v in values)
    if numeric:
        trend = default_latency_trend(name)
        return trend, None, (1.0 if trend else None)
    table = PRECISION_SPEED_RANK if name == "precision" else SWITCH_SPEED_RANK.get(name)
    if table is not None and all(isinstance(v, str) and v.lower() in table for v in values):
        return 0, tuple(table[str(v).lower()] for v in values), None
    return 0, None, None


@dataclass(frozen=True)
class Knob:
    """One tunable knob: a name (units in it, e.g. ``gpu_mhz``) and its ordered discrete values.

    Numeric knobs are sorted ascending; categorical knobs keep the given order.
    ``log_scale`` encodes numeric values on a log axis (clocks and batch sizes act multiplicatively).
    ``latency_trend``: how latency moves as a numeric value rises, when physics says so: -1 falls
    (clocks, ``*_mhz``), +1 rises (``batch_size``), 0 unknown. ``latency_exponent``: for a trended
    knob, the most latency can grow when the value moves the slow way, as a power of the value ratio
    (1.0: at most in proportion; None: no bound known). ``speed_rank``: for a categorical knob, one
    integer per value (in ``values`` order); a higher rank is known to run no slower and use no more
    energy (precision fp32 < tf32 < fp16 = bf16 < int8; cuda_graphs off < on); values of equal rank
    are not ordered; None: no order known. ``rank_step_slowdown``: for a ranked knob, the most latency
    grows one rank lower (None: not known; ``RANK_STEP_SLOWDOWN`` by name). ``energy_trend``: how energy
    per inference moves as a numeric value rises, where known: -1 falls (``batch_size``: fixed costs shared by more inputs), 0 unknown
    (clocks: too low wastes static power, too high wastes dynamic power). Defaults: from the name
    (``default_semantics``).
    """

    name: str
    values: tuple[Value, ...]
    log_scale: bool | None = None
    latency_trend: int | None = None
    speed_rank: tuple[int, ...] | None = None
    latency_exponent: float | None = None
    energy_trend: int | None = None
    rank_step_slowdown: float | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise BadInputError("knob name must be a non-empty string")
        if len(self.values) == 0:
            raise BadInputError(f"knob {self.name!r} has no values")
        if len(set(self.values)) != len(self.values):
            raise BadInputError(f"knob {self.name!r} has duplicate values")
        numeric = all(_is_number(v) for v in self.values)
        if numeric:
            object.__setattr__(self, "values", tuple(sorted(self.values)))
        elif any(_is_number(v) for v in self.values):
            raise BadInputError(f"knob {self.name!r} mixes numbers and strings")
        if self.log_scale is None:
            object.__setattr__(self, "log_scale", numeric and min(float(v) for v in self.values) > 0)
        trend, rank, exponent = default_semantics(self.name, self.values)
        if self.latency_trend is None:
            object.__setattr__(self, "latency_trend", trend)
            if self.latency_exponent is None:
                object.__setattr__(self, "latency_exponent", exponent)
        elif self.latency_trend not in (-1, 0, 1):
            raise BadInputError(f"knob {self.name!r}: latency_trend must be -1, 0 or 1")
        elif self.latency_trend and not numeric:
            raise BadInputError(f"knob {self.name!r}: latency_trend needs numeric values (use speed_rank)")
        if self.latency_exponent is not None and not (self.latency_exponent > 0 and self.latency_trend):
            raise BadInputError(f"knob {self.name!r}: latency_exponent needs a latency_trend and must be > 0")
        if self.energy_trend is None:
            object.__setattr__(self, "energy_trend", default_energy_trend(self.name) if numeric else 0)
        elif self.energy_trend not in (-1, 0, 1) or (self.energy_trend and not numeric):
            raise BadInputError(f"knob {self.name!r}: energy_trend must be -1, 0 or 1, on numeric values")
        if self.speed_rank is None:
            object.__setattr__(self, "speed_rank", rank)
            if self.rank_step_slowdown is None and rank is not None:
                object.__setattr__(self, "rank_step_slowdown", RANK_STEP_SLOWDOWN.get(self.name))
        else:
            object.__setattr__(self, "speed_rank", tuple(int(r) for r in self.speed_rank))
            if numeric or len(self.speed_rank) != len(self.values):
                raise BadInputError(f"knob {self.name!r}: speed_rank needs one rank per categorical value")
        if self.rank_step_slowdown is not None and not (self.speed_rank and self.rank_step_slowdown >= 1.0):
            raise BadInputError(f"knob {self.name!r}: rank_step_slowdown needs a speed_rank and must be >= 1")

    @property
    def numeric(self) -> bool:
        return _is_number(self.values[0])

    def __len__(self) -> int:
        return len(self.values)

    def index(self, value: Value | str) -> int:
        """Index of ``value`` (a value or its string form). Raises InvalidValueError if not a step."""
        if self.numeric:
            try:
                x = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError, OverflowError):
                raise InvalidValueError(
                    f"{self.name}={brief(value, 60)} is not a number; valid: {self.describe_values()}"
                ) from None
            floats = self._floats
            i = bisect.bisect_left(floats, x)  # values are sorted: only neighbours can match (no scan)
            while i > 0 and math.isclose(floats[i - 1], x, rel_tol=1e-9, abs_tol=1e-9):
                i -= 1  # the first of several steps within the tolerance, as a scan would find
            if i < len(floats) and math.isclose(floats[i], x, rel_tol=1e-9, abs_tol=1e-9):
                return i
        else:
            if isinstance(value, str) and value in self._names:  # no scan when the text is a value
                return self._names[value]
            for i, v in enumerate(self.values):
                if v == value or str(v) == str(value):
                    return i
        raise InvalidValueError(
            f"{self.name}={clip(str(value), 60)} is not a valid step; valid: {self.describe_values()}"
        )

    @functools.cached_property
    def _floats(self) -> tuple[float, ...]:
        """The numeric values as floats, ascending (for bisecting in ``index``)."""
        return tuple(float(v) for v in self.values)

    @functools.cached_property
    def _names(self) -> dict[str, int]:
        """Index of each text value (categorical knobs; values are distinct)."""
        return {v: i for i, v in enumerate(self.values) if isinstance(v, str)}

    def parse(self, text: Value | str) -> Value:
        """The knob's own value for ``text`` (e.g. "1377" -> 1377.0)."""
        return self.values[self.index(text)]

    def describe_values(self, limit: int = 12) -> str:
        vals = [str(v) for v in self.values]
        if len(vals) > limit:
            vals = vals[: limit // 2] + ["..."] + vals[-limit // 2 :]
        return ", ".join(vals)

    def encode(self) -> np.ndarray:
        """Values mapped to [0, 1] (log axis for log-scale numerics; categoricals by ``speed_rank``, the
        distinct ranks evenly spaced and values of one rank at one place (``encode_ties`` tells them apart),
        else in index order, evenly spaced)."""
        n = len(self.values)
        if n == 1:
            return np.zeros(1)
        if self.numeric:
            x = np.asarray(self.values, dtype=float)
            if self.log_scale:
                x = np.log(x)
            return (x - x.min()) / (x.max() - x.min())
        rank = self.speed_rank
        if not rank:
            return np.arange(n, dtype=float) / (n - 1)
        distinct = sorted(set(rank))
        if len(distinct) == 1:
            return np.zeros(n)
        return np.array([distinct.index(r) for r in rank], dtype=float) / (len(distinct) - 1)

    def encode_ties(self) -> np.ndarray | None:
        """A second coordinate in [0, 1] for a categorical knob whose ``speed_rank`` gives several values
        one rank (fp16 and bf16): the values of each such rank evenly spaced over [0, 1], every other
        value at 0.5. None when no rank is shared. Without it, values of one rank would sit on the rank
        axis in an arbitrary order, one "between" the other and the next rank: a model interpolating on
        that axis would predict fp16 from tf32 and bf16, and never try it."""
        rank = self.speed_rank
        if self.numeric or not rank or len(set(rank)) == len(rank):
            return None
        col = np.full(len(rank), 0.5)
        for r in set(rank):
            members = [i for i, x in enumerate(rank) if x == r]
            if len(members) > 1:
                col[members] = np.arange(len(members), dtype=float) / (len(members) - 1)
        return col


@dataclass(frozen=True)
class KnobStatus:
    """Whether a knob can be used on a device, and why not (``reason``: why not, or a detail)."""

    name: str
    available: bool
    reason: str = ""


@dataclass
class SearchSpace:
    """Knobs plus the valid rows. ``rows[i, j]`` is the index into ``knobs[j].values`` of point ``i``."""

    knobs: tuple[Knob, ...]
    rows: np.ndarray
    _lookup: dict[tuple[int, ...], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        names = [k.name for k in self.knobs]
        if len(set(names)) != len(names):
            raise BadInputError(f"duplicate knob names in {names}")
        self.rows = np.asarray(self.rows, dtype=np.int32).reshape(-1, len(self.knobs))
        if len(self.rows) == 0:
            raise BadInputError("the search space is empty")
        if not self._lookup:
            self._lookup = {tuple(int(v) for v in r): i for i, r in enumerate(self.rows)}
        if len(self._lookup) != len(self.rows):
            raise BadInputError("the search space has duplicate configs")

    # ----- construction -------------------------------------------------------------------------
    @classmethod
    def product(cls, knobs: Sequence[Knob]) -> SearchSpace:
        """Dense space: every combination of every knob's values."""
        size = math.prod(len(k) for k in knobs)
        if size > MAX_POINTS:
            raise BadInputError(f"search space has {size} points, more than the {MAX_POINTS} supported")
        grids = np.meshgrid(*[np.arange(len(k)) for k in knobs], indexing="ij")
        rows = np.stack([g.ravel() for g in grids], axis=1) if knobs else np.zeros((1, 0))
        return cls(tuple(knobs), rows)

    @classmethod
    def from_configs(cls, knobs: Sequence[Knob], configs: Iterable[Mapping[str, Value]]) -> SearchSpace:
        """Sparse space: only the given configs are valid."""
        rows = sorted({tuple(k.index(c[k.name]) for k in knobs) for c in configs})
        return cls(tuple(knobs), np.asarray(rows, dtype=np.int32))

    # ----- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def names(self) -> list[str]:
        return [k.name for k in self.knobs]

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise UnknownKnobError(f"unknown knob {brief(name, 60)}; this device offers: {', '.join(self.names)}")

    def config(self, i: int) -> Config:
        """The config at row ``i``."""
        return {k.name: k.values[int(j)] for k, j in zip(self.knobs, self.rows[i])}

    def index_of(self, config: Mapping[str, Value | str]) -> int:
        """Row of ``config`` (values may be strings). Raises on unknown knob, bad value, invalid combo."""
        if not isinstance(config, Mapping):
            raise BadInputError(f"a config is a mapping of knob: value, got {brief(config, 60)}")
        unknown = [k for k in config if k not in self.names]
        if unknown:
            raise UnknownKnobError(
                f"unknown knob {brief(sorted(map(str, unknown))[0], 60)}; this device offers: {', '.join(self.names)}"
            )
        missing = [n for n in self.names if n not in config]
        if missing:
            raise BadInputError(f"config is missing knob(s): {', '.join(missing)}")
        key = tuple(k.index(config[k.name]) for k in self.knobs)
        try:
            return self._lookup[key]
        except KeyError:
            shown = clip(", ".join(f"{n}={config[n]}" for n in self.names), 300)
            raise InvalidValueError(f"config {shown} is not a valid combination on this device") from None

    def row_of(self, value_indices: Sequence[int]) -> int | None:
        """Row of the point whose ``rows`` entry is ``value_indices`` (one value index per knob), or None
        if that combination is not in the space."""
        return self._lookup.get(tuple(int(v) for v in value_indices))

    def contains(self, config: Mapping[str, Value | str]) -> bool:
        try:
            self.index_of(config)
            return True
        except BadInputError:
            return False

    def normalize(self, config: Mapping[str, Value | str]) -> Config:
        """``config`` with every value replaced by the knob's own value (validated)."""
        return self.config(self.index_of(config))

    def normalize_part(self, config: Mapping[str, Value | str]) -> Config:
        """``config``, any subset of the knobs, with every value replaced by the knob's own value, once some
        valid config agrees with it. Raises on unknown knob, bad value, a combination no valid config has."""
        if not isinstance(config, Mapping):
            raise BadInputError(f"a config is a mapping of knob: value, got {brief(config, 60)}")
        mask = np.ones(len(self), dtype=bool)
        out: Config = {}
        for name, value in config.items():
            k = self.knob(name)
            out[name] = k.values[k.index(value)]
            mask &= self.rows[:, self.names.index(name)] == k.index(value)
        if not mask.any():
            shown = clip(", ".join(f"{n}={config[n]}" for n in config), 300)
            raise InvalidValueError(f"config {shown} is not a valid combination on this device")
        return {n: out[n] for n in self.names if n in out}

    def encoded(self, ties: bool = False) -> np.ndarray:
        """``(N, d)`` float matrix in [0, 1]: every valid point, per-knob encoding (see ``Knob.encode``);
        with ``ties``, one more column per knob whose speed rank holds several values (``Knob.encode_ties``)."""
        cols = [k.encode()[self.rows[:, j]] for j, k in enumerate(self.knobs)]
        if ties:
            cols += [t[self.rows[:, j]] for j, k in enumerate(self.knobs) if (t := k.encode_ties()) is not None]
        return np.stack(cols, axis=1) if cols else np.zeros((len(self), 0))

    # ----- derived spaces -----------------------------------------------------------------------
    def restrict(self, tuned: Sequence[str], fixed: Mapping[str, Value | str]) -> SearchSpace:
        """Subspace over ``tuned`` knobs with every other knob held at ``fixed[name]``.

        Raises UnknownKnobError for an unknown name and BadInputError if nothing valid remains.
        """
        for n in tuned:
            self.knob(n)
        mask = np.ones(len(self), dtype=bool)
        for j, k in enumerate(self.knobs):
            if k.name in tuned:
                continue
            if k.name not in fixed:
                raise BadInputError(f"knob {k.name!r} is neither tuned nor fixed")
            mask &= self.rows[:, j] == k.index(fixed[k.name])
        cols = [self.names.index(n) for n in tuned]
        sub = self.rows[mask][:, cols]
        if len(sub) == 0:
            held = ", ".join(f"{n}={fixed[n]}" for n in self.names if n not in tuned)
            raise BadInputError(f"no valid config of {', '.join(tuned)} with {held}")
        return SearchSpace(tuple(self.knobs[c] for c in cols), np.unique(sub, axis=0))


def parse_assignments(text: str | Sequence[str] | None) -> dict[str, str]:
    """Parse ``"a=1,b=2"`` (or a list of such strings) into ``{"a": "1", "b": "2"}``. A knob given twice
    with different values is refused (BadInputError), never settled silently by the last one."""
    if not text:
        return {}
    parts = [text] if isinstance(text, str) else list(text)
    out: dict[str, str] = {}
    for part in itertools.chain.from_iterable(p.split(",") for p in parts):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise BadInputError(f"expected KNOB=VALUE, got {brief(part, 60)}")
        name, value = (s.strip() for s in part.split("=", 1))
        if not name or not value:
            raise BadInputError(f"expected KNOB=VALUE, got {brief(part, 60)}")
        if out.get(name, value) != value:
            raise BadInputError(f"{brief(name, 60)} is given twice ({clip(out[name], 40)} and {clip(value, 40)})")
        out[name] = value
    return out
