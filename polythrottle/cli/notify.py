"""``polythrottle notify model-updated|reload``: tell the running daemon the model changed, or to reload."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from polythrottle.cli.socket_args import add_socket_args, resolve_socket, seconds
from polythrottle.daemon.protocol import EVENTS, MODEL_UPDATED, RELOAD, ModelUpdated
from polythrottle.errors import BadInputError, brief


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("notify", help="tell the daemon the model was updated (it re-tunes) or to reload its config")
    p.add_argument("event", choices=EVENTS, help="what happened")
    p.add_argument("--model-version", default=None, metavar="V", help="the new model's version (default: "
                   "fingerprint of --model-file, else of the daemon's model_files)")
    p.add_argument("--model-file", action="append", default=None, type=Path, metavar="PATH",
                   help="the new model's files (their hash is the version; repeatable)")
    p.add_argument("--force", action="store_true", help="re-tune even if the model version did not change")
    p.add_argument("--wait", action="store_true", help="wait until the daemon has handled it; print the outcome")
    p.add_argument("--wait-timeout", type=seconds, default=1800.0, help="seconds --wait waits at most (default 1800)")
    p.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    add_socket_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from polythrottle.daemon.client import DaemonError, send_command
    from polythrottle.daemon.client import status as daemon_status

    where = resolve_socket(args)
    if args.event == RELOAD:
        if args.model_version or args.model_file or args.force:
            raise BadInputError("notify reload takes no model options")
        reply = send_command(RELOAD, where, timeout_s=args.timeout)
    else:
        if args.model_version is not None and args.model_file:
            raise BadInputError("give --model-version or --model-file, not both")
        files = [str(f.expanduser().resolve()) for f in args.model_file] if args.model_file else None
        request = ModelUpdated.parse(ModelUpdated(args.model_version, files, args.force).fields())  # as the daemon will
        reply = send_command(MODEL_UPDATED, where, timeout_s=args.timeout, **request.fields())
    if args.wait:
        job = int(reply.get("job", 0))
        deadline = time.monotonic() + args.wait_timeout
        while True:
            status = daemon_status(where, timeout_s=args.timeout)
            jobs = status.get("jobs")
            done = jobs.get("last_done") if isinstance(jobs, dict) else None
            if not isinstance(done, int) or isinstance(done, bool):  # a daemon of another version: said KeyError
                raise DaemonError(f"the daemon's status has no jobs.last_done to wait on: {brief(status, 120)}")
            if done >= job:
                break
            if time.monotonic() > deadline:
                raise DaemonError(f"the daemon did not finish within {args.wait_timeout:g} s (still {status.get('state')})")
            time.sleep(0.5)
        reply["status"] = status
    if args.json:
        json.dump(reply, sys.stdout, default=str)
        sys.stdout.write("\n")
    elif args.wait:
        from polythrottle.cli.status import print_status

        print_status(reply["status"])
    else:
        print(f"daemon: {args.event} accepted (job {reply.get('job')})")
    if args.wait and reply["status"].get("state") not in ("serving",):
        return 1
    if args.wait and reply.get("job") and reply["status"]["jobs"].get("last_failed") == reply["job"]:
        print(f"polythrottle: error: {reply['status'].get('last_error') or f'the daemon refused the {args.event}'}",
              file=sys.stderr)
        return 1  # refused (a reload whose device or workload cannot be opened): the old config still serves
    return 0
