#!/usr/bin/env bash
# Install PolyThrottle as a systemd service (run as root). Kept for old instructions: the installer is
# part of the package now (`polythrottle install-service --help`), with the unit and example config it ships.
set -euo pipefail
exec polythrottle install-service "$@"
