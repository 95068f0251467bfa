"""``polythrottle profile``: measure every config (or a random sample) of a device into a replay table.

Generic over devices: the sweep covers ``device.space()`` restricted to ``--knobs`` (the other knobs
stay at the device's default config). Rows are written and flushed as they are measured, so an
interrupted sweep leaves a valid partial table. The device is restored (closed) at the end. A table that
cannot be written (the disk full, an I/O error) stops the sweep with one line naming ``--out`` (exit 2).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from polythrottle.cli.common import (
    add_device_args,
    check_output,
    close_device,
    device_options,
    refuse_output_over_input,
)
from polythrottle.devices import open_device
from polythrottle.devices.table import METRIC_COLUMNS
from polythrottle.errors import BadInputError
from polythrottle.spec import knob_list


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure every config (or a sample) of a device into a replay table (CSV)")
    add_device_args(p)
    p.add_argument("--knobs", default=None, help="comma-separated knobs to sweep (default: all)")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="measure N configs drawn at random (seeded by --seed) instead of all")
    p.add_argument("--out", type=Path, required=True, help="CSV file to write (replay format)")
    p.set_defaults(func=run)


def _fmt(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


class _Table:
    """The CSV being written, a row flushed at a time; an OSError of the file is BadInputError naming ``--out``
    (exit 2), not an unexpected error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.file = path.open("w", newline="")
        except OSError as e:
            raise self._error(e) from None
        self.writer = csv.writer(self.file)

    def _error(self, e: OSError) -> BadInputError:
        return BadInputError(f"--out {self.path}: cannot write ({e.strerror or e})")

    def row(self, values: list[object]) -> None:
        try:
            self.writer.writerow(values)
            self.file.flush()
        except OSError as e:
            raise self._error(e) from None

    def close(self, *, quiet: bool = False) -> None:
        """Close the file; ``quiet``: another error is already on its way, this one would hide it."""
        try:
            self.file.close()
        except OSError as e:
            if not quiet:
                raise self._error(e) from None


def run(args: argparse.Namespace) -> int:
    knobs = knob_list(args.knobs, "--knobs")  # names stripped, none twice
    if args.sample is not None and args.sample < 1:
        raise BadInputError(f"--sample must be at least 1, got {args.sample}")
    check_output(args.out)
    refuse_output_over_input(args.device, args.out)
    console = Console(stderr=True)
    device = open_device(args.device, device_options(args))
    try:
        full = device.space()
        base = full.normalize(device.default_config())
        names = list(knobs) if knobs else full.names
        sub = full.restrict(names, base)
        order = np.arange(len(sub))
        if args.sample is not None and args.sample < len(sub):
            order = np.sort(np.random.default_rng(args.seed).choice(len(sub), size=args.sample, replace=False))
        table = _Table(args.out)
        try:
            table.row([*names, *METRIC_COLUMNS])
            with Progress(
                TextColumn("[bold]profiling[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not console.is_terminal,
            ) as progress:
                task = progress.add_task("profile", total=len(order), last="")
                for i in order:
                    point = sub.config(int(i))
                    config = full.normalize({**base, **point})
                    device.apply(config)
                    m = device.measure()
                    table.row([*(point[n] for n in names), _fmt(m.energy_j), _fmt(m.latency_ms),
                               _fmt(m.throughput_ips), _fmt(m.power_w)])
                    progress.update(task, advance=1, last=f"{m.energy_j:.4g} J {m.latency_ms:.4g} ms")
        except BaseException:
            table.close(quiet=True)
            raise
        table.close()
    except BaseException as e:
        close_device(device, e)  # a restore that fails names the cause too
        raise
    close_device(device)
    print(f"polythrottle: wrote {len(order)} configs of {', '.join(names)} to {args.out}", file=sys.stderr)
    return 0
