"""``polythrottle install-service``: install the systemd unit and a daemon config from the installed package.

As root: creates the system group ``polythrottle`` (members may run ``status``/``notify``), installs the
packaged example config as ``/etc/polythrottle/daemon.yaml`` unless one exists (``device: jetson`` on a
Jetson, or what ``--device``/``--workload`` say), writes ``/etc/systemd/system/polythrottle.service``
with ``ExecStart`` pointing at the polythrottle executable (checked with ``systemd-analyze verify``),
checks the config (``daemon --check``), then enables and starts the service (``--no-start``: not).
A new config made from ``--device``/``--workload`` is checked before anything is written (the group, the
config, the unit): one that does not check is refused with its path and the options, and nothing is
installed. An existing config is kept and checked after the install (the message says how to go on).
``--print-unit`` prints the unit and exits (no root needed). ``--root DIR`` installs the files under DIR
instead of ``/`` (packaging, tests) and runs neither groupadd nor systemctl.
Exit codes: 0 installed; 2 bad input (no executable, a unit that does not verify, a config that does not
check); 4 not root; a device a new config names that this machine lacks: that error's code (5: not here).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from polythrottle.atomicfile import atomic_write_text
from polythrottle.errors import BadInputError, PermissionDeniedError, PolyThrottleError
from polythrottle.paths import SYSTEM_STATE_DIR, is_root

UNIT_NAME = "polythrottle.service"
GROUP = "polythrottle"
JETSON_WORKLOAD = "torchvision:efficientnet_b0"


def packaged_file(name: str) -> str:
    """Text of a file shipped in ``polythrottle/daemon/data`` (the unit, the example config)."""
    return resources.files("polythrottle.daemon").joinpath("data").joinpath(name).read_text(encoding="utf-8")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("install-service", help="install the systemd service: unit, example config, group (root)",
                       description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--exe", type=Path, default=None, help="the polythrottle executable the unit runs "
                   "(default: the one running now, else the one on PATH)")
    p.add_argument("--device", default=None, help="device of the installed config (default: jetson on a Jetson, "
                   "else the shipped digital twin)")
    p.add_argument("--workload", default=None, help="workload of the installed config")
    p.add_argument("--no-start", action="store_true", help="install and check, but do not enable or start")
    p.add_argument("--print-unit", action="store_true", help="print the unit that would be installed and exit")
    p.add_argument("--root", type=Path, default=Path("/"), help="install under this directory instead of / "
                   "(no groupadd, no systemctl)")
    p.set_defaults(func=run)


def default_exe() -> Path | None:
    """The ``polythrottle`` console script running now, else the one on PATH."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "polythrottle" and os.access(argv0, os.X_OK):
        return argv0.resolve()
    found = shutil.which("polythrottle")
    return Path(found).resolve() if found else None


def unit_text(exe: Path) -> str:
    return packaged_file(UNIT_NAME).replace("@POLYTHROTTLE@", str(exe))


def detect_device() -> str | None:
    """``jetson`` when the device tree names a board a profile matches, else None."""
    from polythrottle.boards.layout import read_model
    from polythrottle.boards.profiles import match_model
    from polythrottle.clocks.sysfs import open_io

    model = read_model(open_io())
    return "jetson" if model and match_model(model) is not None else None


def config_text(device: str | None, workload: str | None) -> str:
    """The packaged example config with ``device``/``workload`` replaced where given."""
    text = packaged_file("daemon.example.yaml")
    if device is None:
        device = detect_device()
        if device == "jetson" and workload is None:
            workload = JETSON_WORKLOAD
    for field, value in (("device", device), ("workload", workload)):
        if value is not None:
            if not value.strip() or "\n" in value:
                raise BadInputError(f"--{field} must be one line, got {value!r}")
            text = re.sub(rf"^{field}:.*$", f"{field}: {value}    # set by polythrottle install-service", text,
                          count=1, flags=re.MULTILINE)
    return text


def verify_unit(text: str) -> None:
    """``systemd-analyze verify`` of the unit (skipped where systemd-analyze is missing)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / UNIT_NAME
        path.write_text(text)
        r = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=120)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if UNIT_NAME in line]
    if r.returncode != 0 or problems:
        first = (problems or (r.stdout + r.stderr).strip().splitlines() or ["no output"])[0]
        raise BadInputError(f"systemd-analyze verify refused the unit: {first}")


def _install(path: Path, text: str, mode: int, gid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text, mode=mode, gid=gid)


def _group_id(system: bool) -> int:
    if not system:
        return -1
    import grp

    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", GROUP], check=True, timeout=60)
        return grp.getgrnam(GROUP).gr_gid


def check_config(path: Path, text: str | None = None) -> str:
    """``daemon --check`` of the installed config, in this process; ``text``: of this text as the config at
    ``path`` would be, before it is written. Raises BadInputError (one line), or DeviceError."""
    from polythrottle.daemon.service import check_config as check

    return check(path, text)


def precheck_new_config(path: Path, text: str, options: list[str]) -> None:
    """Check the config about to be installed at ``path`` from ``options`` (``--device X``, ...) before
    anything is written. Raises the check's error (its type, so its exit code) as one line naming ``path``
    and the options, which says that nothing was installed."""
    try:
        check_config(path, text)
    except PolyThrottleError as e:
        said = str(e).removeprefix(f"{path}: ")
        raise type(e)(f"{path} from {' '.join(options)}: {said}; nothing was installed") from None


def run(args: argparse.Namespace) -> int:
    exe = args.exe.expanduser().absolute() if args.exe is not None else default_exe()
    if exe is None or not (exe.is_file() and os.access(exe, os.X_OK)):
        raise BadInputError(f"no polythrottle executable found{f' at {exe}' if exe else ''}; pass --exe PATH")
    unit = unit_text(exe)
    if args.print_unit:
        print(unit, end="" if unit.endswith("\n") else "\n")
        return 0
    root = args.root.expanduser().absolute()
    system = root == Path("/")
    if system and not is_root():
        raise PermissionDeniedError("install-service writes /etc/systemd/system and /etc/polythrottle: run as root")
    verify_unit(unit)
    config = config_text(args.device, args.workload)
    if not system:  # refused before anything is written: the nearest existing part must be a directory
        nearest = next((p for p in (root, *root.parents) if p.exists()), root)
        if not nearest.is_dir():
            raise BadInputError(f"--root {root}: {nearest} is not a directory")
    etc = root / "etc" / "polythrottle"
    cfg_path = etc / "daemon.yaml"
    unit_path = root / "etc" / "systemd" / "system" / UNIT_NAME
    if system:
        os.environ.setdefault("POLYTHROTTLE_STATE_DIR", str(SYSTEM_STATE_DIR))
    given = [f"--{name} {shlex.quote(value)}" for name, value in (("device", args.device), ("workload", args.workload))
             if value is not None]
    if given and not cfg_path.exists():  # the user's options make the new config: refused before any write
        precheck_new_config(cfg_path, config, given)
    gid = _group_id(system)
    try:
        etc.mkdir(parents=True, exist_ok=True)
        os.chmod(etc, 0o750)
        if gid >= 0:
            os.chown(etc, 0, gid)
        if cfg_path.exists():
            print(f"kept the existing config {cfg_path}")
        else:
            _install(cfg_path, config, 0o640, gid)
            print(f"installed a config: edit {cfg_path} (device, workload, slo_ms, model_files)")
        _install(unit_path, unit, 0o644, -1)
    except OSError as e:
        where = f"--root {root}" if not system else str(e.filename or root)
        raise BadInputError(f"{where}: cannot install the service files ({e.strerror or e})") from None
    print(f"installed {unit_path} (ExecStart={exe} daemon --config /etc/polythrottle/daemon.yaml)")
    if system:
        subprocess.run(["systemctl", "daemon-reload"], check=False, timeout=120)
    try:
        print(check_config(cfg_path))
    except PolyThrottleError as e:  # its own type, so its exit code (a device this machine lacks: 5)
        raise type(e)(f"{e}; fix {cfg_path}, then: systemctl enable --now polythrottle") from None
    if not system or args.no_start:
        print("not started; start with: systemctl enable --now polythrottle")
        return 0
    subprocess.run(["systemctl", "enable", "--now", UNIT_NAME], check=True, timeout=300)
    subprocess.run(["systemctl", "--no-pager", "status", UNIT_NAME], check=False, timeout=60)
    return 0
