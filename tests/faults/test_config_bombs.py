"""YAML bombs in the daemon config and in device profiles: aliases (billion laughs, an alias to itself),
depth, size, tags that would run code, values too long to print.

Each is refused with one line naming the file (daemon config: ``FILE: not valid YAML ...``, exit 2;
profile: ``profile FILE: invalid YAML ...``, exit 2) in milliseconds, no value is printed unbounded,
and nothing is written to the board.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import fake_jetson as fj
from tests.conftest import ROOT
from tests.faults.conftest import one_line

GOOD = "device: sim:jetson-agx-orin\nworkload: efficientnet-b0\nslo_ms: 25\nmetrics: false\n"


def laughs(levels: int = 9, width: int = 9, field: str = "knobs") -> str:
    """The classic alias bomb: ``width ** levels`` strings from a few lines."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    lines.append(f"{field}: *l{levels - 1}")
    return "\n".join(lines) + "\n"


BOMBS = {
    "laughs-in-a-field": GOOD + laughs(),
    "laughs-in-unknown-fields": GOOD + laughs(field="extra"),
    "laughs-in-a-mapping": GOOD + "a: &a {x: 1, y: 1, z: 1, w: 1, v: 1, u: 1, t: 1, s: 1, r: 1}\n"
    + "".join(f"{c}: &{c} {{p: *{p}, q: *{p}, r: *{p}, s: *{p}, t: *{p}, u: *{p}, v: *{p}, w: *{p}, x: *{p}}}\n"
              for p, c in zip("abcdefgh", "bcdefghi")) + "baseline: *i\n",
    "merge-key-bomb": GOOD + "a: &a {x: 1}\n" + "".join(
        f"{c}: &{c} {{<<: [*{p}], {c}1: *{p}, {c}2: *{p}, {c}3: *{p}, {c}4: *{p}, {c}5: *{p}, {c}6: *{p}}}\n"
        for p, c in zip("abcdefghijk", "bcdefghijkl")),
    "self-alias-list": GOOD + "knobs: &k [gpu_mhz, *k]\n",
    "self-alias-map": GOOD + "baseline: &b {gpu_mhz: *b}\n",
    "self-alias-top": "&t {device: sim:jetson-agx-orin, slo_ms: 25, self: *t}\n",
    "self-alias-indirect": GOOD + "a: &a [&b [*a]]\n",
    "deep-lists": GOOD + "knobs: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep-flow-unclosed": GOOD + "knobs: " + "[" * 200_000 + "\n",
    "deep-maps": GOOD + "baseline: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n",
    "deep-block": GOOD + "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "x: 1\n",
    "too-large": GOOD + "# " + "x" * (2 << 20) + "\n",
    "python-tag": GOOD + "seed: !!python/object/apply:os.system ['touch /tmp/polythrottle-pwned']\n",
    "unknown-tag": GOOD + "seed: !custom 3\n",
    "two-documents": GOOD + "---\n" + GOOD,
    "not-utf8": GOOD.replace("25", "\udcff25"),
    "tab-indent": "device: x\n\tslo_ms: 3\n",
}
LONG = {
    "long-string-value": GOOD.replace("slo_ms: 25", "slo_ms: '" + "9" * 100_000 + "'"),
    "long-unknown-field": GOOD + "y" * 100_000 + ": 1\n",
    "many-unknown-fields": GOOD + "".join(f"f{i}: {i}\n" for i in range(11_000)),
    "long-list": GOOD + "knobs: [" + ", ".join(["gpu_mhz"] * 21_000) + "]\n",
    "nested-value": GOOD.replace("slo_ms: 25", "slo_ms: " + "[" * 40 + "1" + "]" * 40),
}


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8", "surrogateescape"))
    return p


@pytest.mark.parametrize("case", sorted(BOMBS) + sorted(LONG))
def test_daemon_config_bomb_is_one_line(tmp_path, case):
    from polythrottle.daemon.config import ConfigError, load_config

    path = write(tmp_path, "daemon.yaml", {**BOMBS, **LONG}[case])
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and len(msg) < 400 + len(str(path)), msg[:500]
    assert e.value.exit_code == 2
    assert not os.path.exists("/tmp/polythrottle-pwned")


@pytest.mark.parametrize("case", ["laughs-in-a-field", "self-alias-top", "deep-flow-unclosed", "python-tag",
                                  "long-device", "long-workload"])
def test_daemon_check_refuses_the_bomb(tmp_path, cli_inproc, case):
    cases = {**BOMBS, **LONG, "long-device": GOOD.replace("sim:jetson-agx-orin", "x" * 100_000),
             "long-workload": GOOD.replace("efficientnet-b0", "y" * 100_000)}
    path = write(tmp_path, "daemon.yaml", cases[case])
    rc, out, err = cli_inproc(None, "daemon", "--config", str(path), "--check")
    line = one_line(err)
    assert rc == 2 and len(line) < 600 and out == ""
    assert case.startswith("long-") or str(path) in line


def test_aliases_within_the_budget_still_work(tmp_path):
    from polythrottle.daemon.config import load_config

    path = write(tmp_path, "daemon.yaml", GOOD + "budget: &b 12\nretune_budget: &r 4\nknobs: &k [gpu_mhz, emc_mhz]\n")
    cfg = load_config(path)
    assert cfg.budget == 12 and cfg.retune_budget == 4 and cfg.knobs == ("gpu_mhz", "emc_mhz")


# ----- device profiles: sim:PATH and POLYTHROTTLE_PROFILE_DIR ------------------------------------------------
def profile_text(extra: str) -> str:
    base = (ROOT / "device_profiles" / "jetson-orin-nano.yaml").read_text()
    return base + extra


PROFILE_BOMBS = {
    "laughs": laughs(field="x_bomb"),
    "self-alias": "x_loop: &x [*x]\n",
    "deep": "x_deep: " + "[" * 100_000 + "\n",
    "too-large": "# " + "x" * (2 << 20) + "\n",
    "python-tag": "x_tag: !!python/name:os.system\n",
}


@pytest.mark.parametrize("case", sorted(PROFILE_BOMBS))
def test_profile_bomb_through_sim_is_one_line(tmp_path, cli_inproc, case):
    path = write(tmp_path, "jetson-orin-nano.yaml", profile_text(PROFILE_BOMBS[case]))
    rc, out, err = cli_inproc(None, "tune", "--device", f"sim:{path}", "--workload", "efficientnet-b0",
                              "--slo-ms", "30", "--budget", "2", "--json")
    line = one_line(err)
    assert rc == 2 and line.startswith(f"polythrottle: error: profile {path}") and len(line) < 600, line


def test_a_bomb_in_the_profile_directory_stops_nothing_but_itself(board, tmp_path):
    """``apply --device jetson`` detects the board from every profile; a bomb among them is refused, one
    line, and nothing is written."""
    d = tmp_path / "profiles"
    d.mkdir()
    for p in (ROOT / "device_profiles").glob("*.yaml"):
        (d / p.name).write_text(p.read_text())
    (d / "jetson-agx-orin.yaml").write_text((d / "jetson-agx-orin.yaml").read_text() + laughs(field="x_bomb"))
    env = board.env(POLYTHROTTLE_PROFILE_DIR=str(d))
    r = subprocess.run([sys.executable, "-m", "tests.fake_jetson", "apply", "--device", "jetson", "--set",
                        "gpu_mhz=624.75"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 2 and "alias" in one_line(r.stderr)
    assert fj.writes_attempted(board.root) == 0
    board.assert_restored()
