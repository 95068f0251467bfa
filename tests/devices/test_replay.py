import os

import numpy as np
import pytest

from polythrottle.devices import DeviceOptions, open_device
from polythrottle.errors import BadInputError, InvalidValueError
from tests.conftest import write_table


def test_replay_shared_table(xavier_table):
    dev = open_device(f"replay:{xavier_table}")
    space = dev.space()
    assert space.names == ["gpu_mhz", "batch_size"]
    assert len(space) == 1772  # sparse: 14 x 128 minus missing rows
    assert dev.default_config() == {"gpu_mhz": 1377.0, "batch_size": 1}
    dev.apply({"gpu_mhz": "1236.75", "batch_size": "6"})
    m = dev.measure()
    assert m.energy_j == pytest.approx(0.359596) and m.latency_ms == pytest.approx(96.005)
    assert m.throughput_ips == pytest.approx(51.4923)


def test_sparse_table_only_listed_configs_valid(tmp_path):
    rows = [
        {"gpu_mhz": 100, "batch_size": 1, "energy_j": 1.0, "latency_ms": 10},
        {"gpu_mhz": 200, "batch_size": 2, "energy_j": 0.5, "latency_ms": 12},
    ]
    dev = open_device(f"replay:{write_table(tmp_path / 't.csv', rows)}")
    assert len(dev.space()) == 2
    with pytest.raises(InvalidValueError):
        dev.apply({"gpu_mhz": 100, "batch_size": 2})
    # default: highest clock, smallest batch -> not in the table -> nearest valid config
    assert dev.default_config() in ({"gpu_mhz": 200, "batch_size": 2}, {"gpu_mhz": 100, "batch_size": 1})


def test_noise_is_multiplicative_independent_and_seeded(small_table):
    cfg = {"gpu_mhz": 600.0, "batch_size": 2}
    def sample(seed):
        dev = open_device(f"replay:{small_table}", DeviceOptions(noise=0.05, seed=seed))
        dev.apply(cfg)
        return np.array([[m.energy_j, m.latency_ms] for m in (dev.measure() for _ in range(400))])
    a, b = sample(1), sample(1)
    assert np.array_equal(a, b)
    truth = open_device(f"replay:{small_table}").truth(cfg)
    rel = a / np.array([truth.energy_j, truth.latency_ms]) - 1
    assert abs(rel.mean()) < 0.01
    assert 0.04 < rel.std(axis=0).min() and rel.std(axis=0).max() < 0.06
    assert abs(np.corrcoef(rel.T)[0, 1]) < 0.15  # energy and latency noise independent


def test_repeated_rows_are_averaged(tmp_path):
    rows = [
        {"f_mhz": 1, "energy_j": 1.0, "latency_ms": 10},
        {"f_mhz": 1, "energy_j": 3.0, "latency_ms": 20},
    ]
    dev = open_device(f"replay:{write_table(tmp_path / 't.csv', rows)}")
    assert dev.truth({"f_mhz": 1}).energy_j == 2.0


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("gpu_mhz,latency_ms\n1,2\n", "missing column"),
        ("gpu_mhz,energy_j,latency_ms\n", "no data rows"),
        ("gpu_mhz,energy_j,latency_ms\n1,abc,2\n", "line 2: energy_j='abc' is not a number"),
        ("gpu_mhz,energy_j,latency_ms\n1,-1,2\n", "out of range"),
        ("gpu_mhz,energy_j,latency_ms\n,1,2\n", "empty value"),
        ("energy_j,latency_ms\n1,2\n", "no knob columns"),
        ("gpu_mhz,energy_j,latency_ms\n1,1,2,4\n", "more fields"),
        ("gpu_mhz,,energy_j,latency_ms\n1,1,2,4\n", "column 2 of the header has no name"),
        # one text value among numbers made the whole column text (the clock lost its order): refused
        ("gpu_mhz,energy_j,latency_ms\n1377,1,2\nabc,1,3\n1236.75,1,4\n",
         "line 3: gpu_mhz='abc' is not a number, as the column's other values are"),
        ("precision,energy_j,latency_ms\nfp16,1,2\n16,1,3\nfp32,1,4\n",
         "line 3: precision='16' is a number, where the column's other values are names"),
    ],
)
def test_malformed_tables(tmp_path, content, message):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(BadInputError, match=message):
        open_device(f"replay:{p}")


def test_unknown_device_and_missing_table(tmp_path):
    with pytest.raises(BadInputError, match="unknown device"):
        open_device("toaster:1")
    with pytest.raises(BadInputError, match="not found"):
        open_device(f"replay:{tmp_path / 'none.csv'}")
    with pytest.raises(BadInputError, match="needs a path"):
        open_device("replay:")


def test_a_directory_or_a_fifo_is_not_called_missing(tmp_path):
    with pytest.raises(BadInputError, match="is a directory, not a CSV file"):
        open_device(f"replay:{tmp_path}")
    os.mkfifo(tmp_path / "t.csv")
    with pytest.raises(BadInputError, match=r"t\.csv is not a regular file"):  # and never blocks reading it
        open_device(f"replay:{tmp_path / 't.csv'}")
