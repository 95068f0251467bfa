"""``polythrottle plot``: draw a tune (convergence; energy vs latency) from a result file or the history.

Exit codes: 0 written; 2 bad input (missing or malformed result, unknown tune, unsupported format);
5 matplotlib is not installed (``pip install 'polythrottle[plot]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polythrottle.cli.common import row_number
from polythrottle.errors import BadInputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot a tune: convergence and energy vs latency (needs polythrottle[plot])")
    p.add_argument("result", nargs="?", type=Path, default=None, metavar="RESULT.json",
                   help="a tune result (`tune --json` output or `tune --out` file)")
    p.add_argument("--history", default=None, metavar="PATH",
                   help="read the tune from this history database instead of a result file")
    p.add_argument("--tune", type=row_number, default=None, metavar="ID",
                   help="with --history: the tune id (`history_tune_id` in the JSON; default: the latest)")
    p.add_argument("--kind", default="both", choices=("both", "convergence", "tradeoff"),
                   help="which plot: both side by side (default), convergence, or tradeoff (energy vs latency)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.png|.svg",
                   help="output file (.png, .svg or .pdf); default: RESULT.png next to the result, or "
                        "tune-ID.png here")
    p.set_defaults(func=run)


def _default_out(args: argparse.Namespace, tune_id: int | None) -> Path:
    suffix = "" if args.kind == "both" else f"-{args.kind}"
    if args.result is not None:
        return args.result.with_name(args.result.stem + suffix + ".png")
    return Path(f"tune-{tune_id}{suffix}.png")


def run(args: argparse.Namespace) -> int:
    from polythrottle.plot import FORMATS, render, require_matplotlib
    from polythrottle.tuning.trace import TuneTrace

    # each mistake its own line: both, or --tune with a result file, were answered "give ... (one of them)"
    if args.result is not None and args.history is not None:
        raise BadInputError("give a result file or --history PATH, not both")
    if args.tune is not None and args.history is None:
        raise BadInputError("--tune needs --history")
    if args.result is None and args.history is None:
        raise BadInputError("give a result file or --history PATH")
    if args.out is not None and args.out.suffix.lower() not in FORMATS:
        raise BadInputError(f"--out {args.out}: unsupported format {args.out.suffix or '(none)'!r}; "
                            f"expected one of: {', '.join(FORMATS)}")
    require_matplotlib()  # fail before reading anything
    tune_id = None
    if args.result is not None:
        trace = TuneTrace.load_result(args.result)
    else:
        from polythrottle.history import HistoryStore

        with HistoryStore(args.history, read_only=True) as store:  # a missing file is refused, not created
            trace = TuneTrace.from_history(store, args.tune)
            tune_id = args.tune if args.tune is not None else store.tunes(limit=1)[0].id
    out = render(trace, args.out or _default_out(args, tune_id), args.kind)
    print(f"wrote {out}")
    return 0
