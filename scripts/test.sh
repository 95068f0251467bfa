#!/usr/bin/env bash
# Set up, then run the test suite in parallel (pytest-xdist): one worker per logical CPU, each with its own
# temporary directories and PostgreSQL cluster (tests/conftest.py); --dist loadgroup keeps every test of a module
# with an expensive shared fixture on one worker (its xdist_group mark). Arguments go to pytest: a -n or --dist of
# yours replaces ours (-n 0: no workers, as does -p no:xdist); PYTEST_XDIST_AUTO_NUM_WORKERS sets the count.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The tests start many CLIs and daemons as subprocesses; with PYTHONDONTWRITEBYTECODE set (as on CI) each of
# them would compile the package's sources again (8-13% of their CPU time). Compile them once (a file that does
# not compile is pytest's to report).
.venv/bin/python -m compileall -qq polythrottle tests || true
workers=(-n logical) dist=(--dist loadgroup)
for a in "$@"; do
  case $a in
    -n | -n?* | --numprocesses | --numprocesses=*) workers=() ;;
    --dist | --dist=*) dist=() ;;
    *no:xdist) workers=() dist=() ;;
  esac
done
exec .venv/bin/python -m pytest ${workers[@]+"${workers[@]}"} ${dist[@]+"${dist[@]}"} "$@"
