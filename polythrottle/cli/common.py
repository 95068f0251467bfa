"""What several subcommands share: the device and tune flags read into the declared spec (``device_spec``,
``tune_spec``), closing a device (``close_device``), output files (``check_output``, ``write_output``) and
argument types and text for tables (``row_number``, ``printable``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from polythrottle.atomicfile import atomic_write_text
from polythrottle.devices import Device, DeviceOptions
from polythrottle.errors import BadInputError, PolyThrottleError
from polythrottle.space import parse_assignments
from polythrottle.spec import DEVICE_FIELDS, DeviceSpec, Face, TuneSpec
from polythrottle.workloads.base import SLO_METRICS


def add_device_args(p: argparse.ArgumentParser, *, measuring: bool = True) -> None:
    """--device, --no-clock-control, --state-dir; with ``measuring``, also --workload, --noise, --seed,
    --percentile, --window-s, --repeats and --slo-metric (the flags of ``DeviceSpec``'s fields)."""
    p.add_argument("--device", required=True, help="replay:TABLE.csv, sim:PROFILE, jetson[:PROFILE], nvml[:INDEX]")
    p.add_argument("--no-clock-control", action="store_true",
                   help="never change any hardware setting; tune software knobs only")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="where original hardware values are saved (env POLYTHROTTLE_STATE_DIR)")
    if measuring:
        p.add_argument("--workload", default=None, help="workload to measure (device-specific)")
        p.add_argument("--noise", type=float, default=0.0,
                       help="relative measurement noise for sim/replay devices (0.02 = 2%%)")
        p.add_argument("--seed", type=int, default=None, help="random seed (runs are reproducible)")
        p.add_argument("--percentile", type=float, default=99.0,
                       help="latency percentile the SLO is judged on for live workloads (default 99)")
        p.add_argument("--window-s", type=float, default=None,
                       help="live workloads: seconds per metered window (default 2)")
        p.add_argument("--repeats", type=int, default=None,
                       help="live workloads: metered windows per measurement (default 3)")
        p.add_argument("--slo-metric", choices=SLO_METRICS, default=None,
                       help="live workloads: the latency the SLO bounds: time to first token, time per output "
                            "token (llm: workloads; their default: tpot) or per batch (the default otherwise)")


def _fields(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The named arguments that were given (argparse's None means "not given": the spec's default applies)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def device_spec(args: argparse.Namespace) -> DeviceSpec:
    """The device part of the declared spec from the arguments. Raises BadInputError naming the flag."""
    return DeviceSpec.parse(_fields(args, DEVICE_FIELDS), Face.CLI)


def device_options(args: argparse.Namespace) -> DeviceOptions:
    """How to open the device the arguments name (validated: ``device_spec``)."""
    return device_spec(args).device_options()


def tune_spec(args: argparse.Namespace) -> TuneSpec:
    """The declared spec of a tune from ``tune``'s arguments. Raises BadInputError naming the flag."""
    fields = _fields(args, (*DEVICE_FIELDS, "slo_ms", "knobs", "budget", "optimizer", "model_version",
                            "carbon_country"))
    if getattr(args, "baseline", None):
        fields["baseline"] = parse_assignments(args.baseline)
    if getattr(args, "carbon_intensity", None) is not None:
        fields["carbon_intensity_g_per_kwh"] = args.carbon_intensity
    if getattr(args, "model_file", None):
        fields["model_files"] = tuple(args.model_file)
    if getattr(args, "no_history", False):
        fields["history"] = False
    elif getattr(args, "history", None) is not None:
        fields["history"] = str(args.history)
    fields["warm_start"] = not getattr(args, "no_warm_start", False)
    return TuneSpec.parse(fields, Face.CLI)


def close_device(device: Device, cause: BaseException | None = None) -> None:
    """``device.close()``: put back what the command changed. When the command is failing with ``cause`` (a
    PolyThrottleError) and the restore fails too, the restore's error (its type: exit 1) says both, why the
    command stopped first: alone, "could not restore ..." hid the reason (a refused write, a file gone)."""
    try:
        device.close()
    except PolyThrottleError as e:
        if isinstance(cause, PolyThrottleError) and cause is not e:
            e.args = (f"{cause}; {e}",)
        raise


MAX_ROW_ID = 2**63 - 1
"""The largest row id (and LIMIT) both history databases take."""


def row_number(text: str) -> int:
    """An argparse type: a whole number from 0 to 2**63-1 (a larger one failed as OverflowError, exit 1)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= n <= MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"{n} is out of range (0 to {MAX_ROW_ID})")
    return n


def printable(text: object) -> str:
    """``text`` safe to print in a table cell: control and format characters (newlines, terminal escape
    sequences, bidi overrides) shown as ``\\xNN``/``\\uNNNN``, so text stored by any fleet member cannot
    break a table or drive the reader's terminal."""
    import unicodedata

    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if unicodedata.category(c)[0] not in "CZ" or c == " "
                   else ascii(c)[1:-1] for c in s)


def check_output(path: Path | None, flag: str = "--out") -> None:
    """Refuse an output file that cannot be written, before any work (and any hardware write) starts:
    its directory must exist and be writable, and it must not be a directory. Raises BadInputError."""
    if path is None:
        return
    if not str(path).strip() or path.is_dir():
        raise BadInputError(f"{flag} {path}: is a directory, not a file")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise BadInputError(f"{flag} {path}: not writable (permission denied)")
        return
    parent = path.parent
    if not parent.exists():
        raise BadInputError(f"{flag} {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise BadInputError(f"{flag} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"{flag} {path}: cannot create files in {parent} (permission denied)")


def refuse_output_over_input(device: str, path: Path | None, flag: str = "--out") -> None:
    """Refuse an output file that is the file the device reads (``replay:TABLE.csv``, ``sim:BOARD.yaml``):
    ``profile --device replay:t.csv --out t.csv`` replaced the measured table by a sweep of it. Raises
    BadInputError."""
    if path is None or not isinstance(device, str):
        return
    kind, _, arg = device.strip().partition(":")
    kind = kind.strip().lower()
    target = arg.strip() if kind == "replay" else arg.partition("?")[0].strip()
    if not target or not (kind == "replay" or kind in ("sim", "jetson") and Path(target).suffix in (".yaml", ".yml")):
        return
    if Path(path).expanduser().resolve() == Path(target).expanduser().resolve():
        raise BadInputError(f"{flag} {path} is the file the device {device} reads; write to another file")


def write_output(path: Path, text: str, flag: str = "--out") -> None:
    """Write ``text`` to ``path``: a regular file is replaced atomically (a temporary file renamed over it,
    so a failure never leaves half a result); anything else (``/dev/stdout``) is written in place.
    Raises BadInputError (exit 2) naming the file and the reason."""
    try:
        if path.exists() and not path.is_file():
            with path.open("w") as f:
                f.write(text)
            return
        atomic_write_text(path, text)
    except OSError as e:
        raise BadInputError(f"{flag} {path}: cannot write ({e.strerror or e})") from None
