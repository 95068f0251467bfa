"""The bounded YAML loader: numbers as a user writes them."""

from polythrottle import safe_yaml


def test_an_exponent_without_a_decimal_point_is_a_number():
    # YAML 1.1 reads 1e3 as text: `slo_ms: 1e3` was refused as "must be a number, got '1e3'"
    doc = safe_yaml.load("a: 1e-3\nb: 2E6\nc: -1.5e3\nd: 12\ne: 1e\nf: x1e3\ng: '1e3'\nh: 0.5\n")
    assert doc == {"a": 1e-3, "b": 2e6, "c": -1500.0, "d": 12, "e": "1e", "f": "x1e3", "g": "1e3", "h": 0.5}
    assert isinstance(doc["d"], int)


def test_a_key_given_twice_is_refused_with_its_line():
    # PyYAML keeps the last of two equal keys silently: `slo_ms: 25` ... `slo_ms: 30` ran at 30
    import pytest

    with pytest.raises(safe_yaml.YamlLimitError) as e:
        safe_yaml.load("device: sim:x\nslo_ms: 25\nknobs: [a]\nslo_ms: 30\n")
    assert e.value.problem == "key 'slo_ms' given twice in one mapping"
    assert e.value.problem_mark.line == 3
    with pytest.raises(safe_yaml.YamlLimitError):
        safe_yaml.load("metrics: {port: 1, port: 2}\n")
    with pytest.raises(safe_yaml.YamlLimitError):
        safe_yaml.load("a: 1\n'a': 2\n")  # the same string key, quoted or not
    # equal keys in different mappings, and merge keys, are fine
    assert safe_yaml.load("a: {x: 1}\nb: {x: 2}\n") == {"a": {"x": 1}, "b": {"x": 2}}
    assert safe_yaml.load("base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n")["c"] == {"x": 1, "y": 2}
    assert safe_yaml.load("a: 1\n1: 2\n") == {"a": 1, 1: 2}  # a string and an integer are different keys
