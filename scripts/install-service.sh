#!/usr/bin/env bash
# Install PolyThrottle as a systemd service (run as root):
#   scripts/install-service.sh [--exe PATH] [--no-start] [--print-unit]
# - creates the system group "polythrottle" (members may use `polythrottle status` / `notify`);
# - installs scripts/polythrottle.example.yaml as /etc/polythrottle/daemon.yaml unless it exists;
# - writes /etc/systemd/system/polythrottle.service with ExecStart pointing at the polythrottle
#   executable (--exe, else the one on PATH), checks it with systemd-analyze verify;
# - checks the config (`polythrottle daemon --check`), then enables and starts the service.
# --print-unit prints the unit that would be installed and exits (no root needed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exe=""
start=1
print_unit=0
while [ $# -gt 0 ]; do
    case "$1" in
        --exe) exe="$2"; shift 2 ;;
        --no-start) start=0; shift ;;
        --print-unit) print_unit=1; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "install-service.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

if [ -z "$exe" ]; then
    exe="$(command -v polythrottle || true)"
fi
if [ -z "$exe" ] || [ ! -x "$exe" ]; then
    echo "install-service.sh: no polythrottle executable found; pip install polythrottle, or pass --exe PATH" >&2
    exit 1
fi
exe="$(readlink -f "$exe")"
unit_text="$(sed "s|@POLYTHROTTLE@|$exe|g" "$here/polythrottle.service")"
if [ "$print_unit" = 1 ]; then
    printf '%s\n' "$unit_text"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "install-service.sh: run as root (it writes /etc/systemd/system and /etc/polythrottle)" >&2
    exit 4
fi

getent group polythrottle >/dev/null || groupadd --system polythrottle
install -d -m 0750 -o root -g polythrottle /etc/polythrottle
if [ ! -e /etc/polythrottle/daemon.yaml ]; then
    install -m 0640 -o root -g polythrottle "$here/polythrottle.example.yaml" /etc/polythrottle/daemon.yaml
    echo "installed an example config: edit /etc/polythrottle/daemon.yaml (device, workload, slo_ms, model_files)"
fi

unit=/etc/systemd/system/polythrottle.service
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf '%s\n' "$unit_text" > "$tmp/polythrottle.service"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$tmp/polythrottle.service"
fi
install -m 0644 "$tmp/polythrottle.service" "$unit"
systemctl daemon-reload
echo "installed $unit (ExecStart=$exe daemon --config /etc/polythrottle/daemon.yaml)"

if ! POLYTHROTTLE_STATE_DIR=/var/lib/polythrottle "$exe" daemon --config /etc/polythrottle/daemon.yaml --check; then
    echo "fix /etc/polythrottle/daemon.yaml, then: systemctl enable --now polythrottle" >&2
    exit 2
fi
if [ "$start" = 1 ]; then
    systemctl enable --now polythrottle.service
    systemctl --no-pager status polythrottle.service || true
else
    echo "not started; start with: systemctl enable --now polythrottle"
fi
