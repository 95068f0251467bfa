"""The bounded YAML loader: numbers as a user writes them."""

from polythrottle import safe_yaml


def test_an_exponent_without_a_decimal_point_is_a_number():
    # YAML 1.1 reads 1e3 as text: `slo_ms: 1e3` was refused as "must be a number, got '1e3'"
    doc = safe_yaml.load("a: 1e-3\nb: 2E6\nc: -1.5e3\nd: 12\ne: 1e\nf: x1e3\ng: '1e3'\nh: 0.5\n")
    assert doc == {"a": 1e-3, "b": 2e6, "c": -1500.0, "d": 12, "e": "1e", "f": "x1e3", "g": "1e3", "h": 0.5}
    assert isinstance(doc["d"], int)
