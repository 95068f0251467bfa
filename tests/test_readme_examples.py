"""The README's Python examples that need no hardware run as written (the API on the twin, the fine-tuning
scheduler on the CPU). Fragments that need a training framework or a board are not run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def block(starting: str) -> str:
    (code,) = [b for b in python_blocks() if b.startswith(starting)]
    return code


@pytest.mark.parametrize("starting", ["import polythrottle as pt", "import torch\nfrom polythrottle.finetune"])
def test_readme_example_runs(starting: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = block(starting).replace("/tmp/pt-history.sqlite", str(tmp_path / "h.sqlite"))
    exec(compile(code, f"README.md ({starting.splitlines()[0]})", "exec"), {"__name__": "readme_example"})
    if starting.startswith("import polythrottle"):
        assert "'from_version': 'v1'" in capsys.readouterr().out  # the re-tune started warm from v1


def test_readme_live_view_example_is_what_the_command_prints(xavier_table: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The "What you see" block shows a replay tune of the measured Xavier table: every row it shows is a row the
    command prints today (the block had gone stale: 14 measurements and a pick the tune no longer makes)."""
    import shlex

    from polythrottle.cli import main

    (text,) = [b for b in re.findall(r"```text\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
               if b.startswith("$ polythrottle tune --device replay:")]
    first, second = text.splitlines()[:2]
    args = shlex.split(first.removeprefix("$ ").removesuffix("\\") + second)[1:]
    args[args.index("--device") + 1] = f"replay:{xavier_table}"
    assert main(args) == 0
    out, err = capsys.readouterr()
    shown = [line for line in text.splitlines()[2:] if line and line != "..."]
    printed = set(err.splitlines()) | set(out.splitlines())
    assert [line for line in shown if line not in printed] == []
