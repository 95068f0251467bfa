"""What an installed copy needs: version, board profiles and service files as package data, the
service installer, a user profile directory on top of the built-in profiles."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

import polythrottle
from polythrottle.boards.profiles import PROFILE_DIR, list_profiles, load_profile
from tests.conftest import ROOT, run_cli


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"polythrottle {polythrottle.__version__}"


def test_profiles_and_service_files_are_package_data() -> None:
    pkg = resources.files("polythrottle")
    assert Path(str(PROFILE_DIR)) == Path(str(pkg.joinpath("device_profiles")))
    shipped = sorted(p.name for p in pkg.joinpath("device_profiles").iterdir() if p.name.endswith(".yaml"))
    assert shipped == sorted(p.name for p in (ROOT / "device_profiles").glob("*.yaml")) and len(shipped) >= 7
    for name in ("polythrottle.service", "daemon.example.yaml"):
        assert resources.files("polythrottle.daemon").joinpath("data", name).is_file()


def test_a_user_profile_directory_adds_to_the_built_in_profiles(tmp_path: Path, monkeypatch) -> None:
    data = yaml.safe_load((PROFILE_DIR / "jetson-tx2.yaml").read_text())
    data["name"] = "my-board"
    (tmp_path / "my-board.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("POLYTHROTTLE_PROFILE_DIR", str(tmp_path))
    names = list_profiles()
    assert "my-board" in names and "jetson-agx-orin" in names
    assert load_profile("my-board").name == "my-board"


def test_the_packaged_example_config_checks() -> None:
    example = resources.files("polythrottle.daemon").joinpath("data", "daemon.example.yaml")
    r = run_cli("daemon", "--check", "--config", str(example))
    assert r.returncode == 0 and ": OK (device sim:jetson-agx-orin" in r.stdout, r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_install_service_into_a_staging_root(tmp_path: Path) -> None:
    exe = tmp_path / "bin" / "polythrottle"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m polythrottle \"$@\"\n")
    exe.chmod(0o755)
    root = tmp_path / "root"
    env = {**os.environ, "POLYTHROTTLE_STATE_DIR": str(tmp_path / "state")}
    args = [sys.executable, "-m", "polythrottle", "install-service", "--root", str(root), "--exe", str(exe)]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    unit = root / "etc/systemd/system/polythrottle.service"
    config = root / "etc/polythrottle/daemon.yaml"
    assert f"ExecStart={exe} daemon --config /etc/polythrottle/daemon.yaml" in unit.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640 and stat.S_IMODE(config.parent.stat().st_mode) == 0o750
    assert ": OK (device sim:jetson-agx-orin" in r.stdout and "not started" in r.stdout
    config.write_text(config.read_text().replace("slo_ms: 25", "slo_ms: 30"))
    r = subprocess.run([*args, "--device", "sim:jetson-tx2"], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=120)
    assert r.returncode == 0 and "kept the existing config" in r.stdout and "slo_ms: 30" in config.read_text()


def test_install_service_sets_the_device_of_a_new_config(tmp_path: Path) -> None:
    from polythrottle.cli.install_service import config_text

    text = config_text("nvml:0", "torchvision:resnet50")
    doc = yaml.safe_load(text)
    assert doc["device"] == "nvml:0" and doc["workload"] == "torchvision:resnet50" and doc["slo_ms"] == 25


def test_import_and_help_load_no_heavy_library() -> None:
    """``import polythrottle`` and ``polythrottle --help`` stay fast: torch, SQLAlchemy, pydantic-backed
    schemas, onnxruntime and transformers load only when used."""
    code = ("import sys, polythrottle\nfrom polythrottle.cli import build_parser\nbuild_parser().format_help()\n"
            "heavy = [m for m in ('torch', 'sqlalchemy', 'alembic', 'onnxruntime', 'transformers', 'matplotlib', "
            "'botorch') if m in sys.modules]\nassert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr


def test_the_console_script_turns_a_ctrl_c_while_starting_into_one_line(monkeypatch, capsys) -> None:
    """The installed ``polythrottle`` script calls its entry point as ``sys.exit(entry())``: a SIGINT while
    the subcommands are imported (before the command's handlers are in place) exits 130 with one line."""
    import polythrottle.cli as cli

    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1]
    target = next(line for line in scripts.splitlines() if line.startswith("polythrottle ="))
    module, _, name = target.partition("=")[2].strip().strip('"').partition(":")
    assert module == "polythrottle.cli"

    def slow_imports():
        raise KeyboardInterrupt

    monkeypatch.setattr("polythrottle.cli.app.build_parser", slow_imports)
    monkeypatch.setattr(sys, "argv", ["polythrottle", "devices"])
    with pytest.raises(SystemExit) as e:
        try:
            sys.exit(getattr(cli, name)())
        except KeyboardInterrupt:
            pytest.fail(f"{target}: a Ctrl-C while starting ends in a traceback")
    assert e.value.code == 130
    assert capsys.readouterr().err == "polythrottle: interrupted\n"


SLOW_IMPORT = """
import os, sys, time


class _Slow:  # an import that takes a while (torch, botorch, a cold disk), and says when it has begun
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["SLOW_MODULE"]:
            sys.meta_path.remove(self)
            open(os.environ["SLOW_BEGUN"], "w").close()
            time.sleep(30)
        return None


sys.meta_path.insert(0, _Slow())
"""


@pytest.mark.parametrize("slow", ["polythrottle.interrupts", "argparse", "polythrottle.cli.tune"])
def test_the_console_script_exits_130_quietly_on_a_ctrl_c_during_a_slow_import(tmp_path, slow) -> None:
    """A real SIGINT while the console script loads the command line (a sitecustomize makes one import slow),
    before the command's own signal handling is in place: one line, exit 130. A Ctrl-C in the modules
    ``polythrottle.cli`` imported itself (``polythrottle.interrupts``, ``argparse``) ended in a KeyboardInterrupt
    traceback: the console script imports it before ``run`` can catch anything."""
    import signal
    import time

    (tmp_path / "sitecustomize.py").write_text(SLOW_IMPORT)
    begun = tmp_path / "begun"
    env = {**os.environ, "SLOW_MODULE": slow, "SLOW_BEGUN": str(begun),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    script = "import re\nimport sys\nfrom polythrottle.cli import run\nsys.exit(run())\n"  # as pip writes it
    p = subprocess.Popen([sys.executable, "-c", script, "devices"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 10
    while not begun.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert begun.exists(), err
    assert (p.returncode, err) == (130, "polythrottle: interrupted\n"), err


def test_the_command_line_starts_without_the_api_so_a_ctrl_c_lands_in_its_handler() -> None:
    """The console script imports ``polythrottle.cli`` before any handler can run: that import loads no
    numpy, pydantic or API (a Ctrl-C during it would be a traceback), and the package's names still load
    on first use."""
    code = ("import sys, polythrottle.cli\n"
            "early = [m for m in ('numpy', 'pydantic', 'polythrottle.api') if m in sys.modules]\n"
            "assert not early, early\n"
            "import polythrottle\n"
            "from polythrottle import HistoryKey, TuneResult, tune\n"
            "assert tune is polythrottle.api.tune and 'open_device' in dir(polythrottle)\n"
            "assert all(getattr(polythrottle, n) is not None for n in polythrottle.__all__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
