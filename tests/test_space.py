import numpy as np
import pytest

from polythrottle.errors import BadInputError, InvalidValueError, UnknownKnobError
from polythrottle.space import Knob, SearchSpace, parse_assignments


def test_knob_sorts_numeric_and_parses_strings():
    k = Knob("gpu_mhz", (1300.5, 114.75, 522.75))
    assert k.values == (114.75, 522.75, 1300.5)
    assert k.parse("522.75") == 522.75
    assert k.index(1300.5) == 2
    with pytest.raises(InvalidValueError, match="gpu_mhz=500"):
        k.index("500")


def test_categorical_keeps_order_and_rejects_mixed():
    k = Knob("precision", ("fp32", "fp16", "bf16"))
    assert k.values == ("fp32", "fp16", "bf16")
    assert not k.numeric
    # fp16 and bf16 share a speed rank: one place on the rank axis, apart on the second coordinate
    assert list(k.encode()) == [0.0, 1.0, 1.0]
    assert list(k.encode_ties()) == [0.5, 0.0, 1.0]
    assert Knob("precision", ("fp32", "tf32", "fp16")).encode_ties() is None
    assert list(Knob("precision", ("fp32", "tf32", "fp16")).encode()) == [0.0, 0.5, 1.0]
    space = SearchSpace.product([Knob("batch_size", (1, 2)), k])
    assert space.encoded().shape == (6, 2) and space.encoded(ties=True).shape == (6, 3)
    with pytest.raises(BadInputError):
        Knob("x", (1, "a"))
    with pytest.raises(BadInputError):
        Knob("x", (1, 1))
    with pytest.raises(BadInputError):
        Knob("x", ())


def test_log_encoding_of_clocks():
    k = Knob("batch_size", (1, 2, 4, 8))
    assert np.allclose(k.encode(), [0, 1 / 3, 2 / 3, 1])


def test_product_space_lookup_and_encoding():
    s = SearchSpace.product([Knob("a_mhz", (1, 2, 3)), Knob("b", ("x", "y"))])
    assert len(s) == 6
    for i in range(len(s)):
        assert s.index_of(s.config(i)) == i
    assert s.index_of({"a_mhz": "2", "b": "y"}) == s.index_of({"a_mhz": 2.0, "b": "y"})
    X = s.encoded()
    assert X.shape == (6, 2) and X.min() == 0 and X.max() == 1
    with pytest.raises(UnknownKnobError):
        s.index_of({"a_mhz": 1, "b": "x", "c": 1})
    with pytest.raises(BadInputError, match="missing"):
        s.index_of({"a_mhz": 1})


def test_sparse_space_rejects_missing_combination():
    knobs = [Knob("f", (1, 2)), Knob("g", (1, 2))]
    s = SearchSpace.from_configs(knobs, [{"f": 1, "g": 1}, {"f": 2, "g": 2}])
    assert len(s) == 2
    assert s.contains({"f": 1, "g": 1})
    with pytest.raises(InvalidValueError, match="not a valid combination"):
        s.index_of({"f": 1, "g": 2})
    assert s.row_of([1, 1]) == s.index_of({"f": 2, "g": 2}) and s.row_of([0, 1]) is None  # value indices


def test_restrict_holds_other_knobs_fixed():
    s = SearchSpace.product([Knob("f", (1, 2, 3)), Knob("g", (10, 20)), Knob("h", ("a", "b"))])
    sub = s.restrict(["f"], {"g": 20, "h": "b"})
    assert sub.names == ["f"] and len(sub) == 3
    with pytest.raises(UnknownKnobError):
        s.restrict(["nope"], {})
    sparse = SearchSpace.from_configs(s.knobs[:2], [{"f": 1, "g": 10}])
    with pytest.raises(BadInputError, match="no valid config"):
        sparse.restrict(["f"], {"g": 20})


def test_large_space_is_cheap():
    knobs = [Knob(f"k{i}_mhz", tuple(range(1, 21))) for i in range(3)] + [Knob("batch_size", (1, 2, 4))]
    s = SearchSpace.product(knobs)
    assert len(s) == 24_000
    assert s.encoded().shape == (24_000, 4)
    assert s.index_of(s.config(12_345)) == 12_345


def test_empty_space_and_assignments():
    with pytest.raises(BadInputError, match="empty"):
        SearchSpace((Knob("f", (1,)),), np.zeros((0, 1)))
    assert parse_assignments("a=1, b=x") == {"a": "1", "b": "x"}
    assert parse_assignments(["a=1", "b=2,c=3"]) == {"a": "1", "b": "2", "c": "3"}
    with pytest.raises(BadInputError):
        parse_assignments("a")


def test_value_lookup_does_not_scan_every_step(monkeypatch):
    """A replayed table with 100,000 distinct clock values (or names) is parsed in linear time: a lookup
    compares a few neighbouring steps, not all of them (a 20,000-row table took 90 s before)."""
    import polythrottle.space as space

    clock = Knob("gpu_mhz", tuple(float(i) + 0.25 for i in range(100_000)))
    names = Knob("variant", tuple(f"n{i}" for i in range(100_000)))
    calls = []
    real = space.math.isclose
    monkeypatch.setattr(space.math, "isclose", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert clock.index("77777.25") == 77_777 and clock.index(77_777.25 * (1 + 1e-12)) == 77_777
    assert clock.index(0.25) == 0 and clock.index(99_999.25) == 99_999
    assert names.index("n99999") == 99_999
    assert len(calls) < 20
    with pytest.raises(InvalidValueError, match="not a valid step"):
        clock.index(77_777.5)
    with pytest.raises(InvalidValueError, match="not a valid step"):
        names.index("nope")


def test_value_lookup_keeps_the_tolerance():
    k = Knob("emc_mhz", (204.0, 665.6, 1600.0))
    assert k.index(665.6 + 1e-10) == 1 and k.index("1600") == 2 and k.parse("204") == 204.0
    for bad in (float("nan"), float("inf"), -1.0, 2000.0):
        with pytest.raises(InvalidValueError):
            k.index(bad)


def test_only_precision_bounds_how_much_slower_one_speed_rank_is():
    # one precision step measured <= 2.5x slower; CUDA graphs off up to 17x slower than on: no bound
    assert Knob("precision", ("fp32", "tf32", "fp16")).rank_step_slowdown == 3.0
    assert Knob("cuda_graphs", ("off", "on")).rank_step_slowdown is None
    assert Knob("batch_size", (1, 2)).rank_step_slowdown is None
    assert Knob("mode", ("a", "b"), speed_rank=(0, 1)).rank_step_slowdown is None  # a declared rank: no default
    assert Knob("mode", ("a", "b"), speed_rank=(0, 1), rank_step_slowdown=1.5).rank_step_slowdown == 1.5
    with pytest.raises(BadInputError, match="rank_step_slowdown"):
        Knob("mode", ("a", "b"), rank_step_slowdown=2.0)  # no rank to step down
    with pytest.raises(BadInputError, match="rank_step_slowdown"):
        Knob("mode", ("a", "b"), speed_rank=(0, 1), rank_step_slowdown=0.5)
