#!/usr/bin/env bash
# Build the wheel, install it into a fresh virtualenv outside the checkout, and use it from there:
# the version, a short simulated tune, `devices`, and `daemon --check` on the packaged example config.
# CI runs this (.ci/run). To stay fast and offline the new virtualenv borrows the dependencies already in
# .venv (a .pth line; pip sees them as installed, so the wheel's declared dependencies must all be there), and
# polythrottle itself comes only from the wheel (.venv's editable install is not active in the new venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BASE_PY=${BASE_PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" . 2>&1 | grep -v 'is ignored' || true
wheel=$(ls "$work"/dist/polythrottle-*.whl)
echo "built $(basename "$wheel")"
python3 - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
profiles = [n for n in names if n.startswith("polythrottle/device_profiles/") and n.endswith(".yaml")]
service = [n for n in names if n.startswith("polythrottle/daemon/data/")]
print(f"wheel ships {len(profiles)} board profiles and {', '.join(n.rsplit('/', 1)[1] for n in service)}")
assert len(profiles) >= 7 and len(service) == 2, (profiles, service)
PY
"$BASE_PY" -m venv --without-pip "$work/venv"   # pip and setuptools come from .venv too
deps=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
new=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$new/_borrowed_dependencies.pth"
"$PY" -m pip --python "$work/venv/bin/python" install -q --no-index "$wheel" 2>&1 | grep -v 'is ignored' || true
cd "$work"   # away from the checkout: only the installed copy can be imported
pt="$work/venv/bin/polythrottle"
"$pt" --version
"$work/venv/bin/python" -c 'import polythrottle, sys; assert "site-packages" in polythrottle.__file__, polythrottle.__file__'
"$pt" tune --device sim:jetson-agx-orin --workload efficientnet-b0 --slo-ms 25 --budget 6 --seed 0 --json > tune.json
"$work/venv/bin/python" -c 'import json; r = json.load(open("tune.json")); print("sim tune:", r["measurements"], "measurements, saving", r["saving_pct"], "%")'
"$pt" devices > devices.txt && head -3 devices.txt
example=$("$work/venv/bin/python" -c 'from importlib import resources; print(resources.files("polythrottle.daemon") / "data" / "daemon.example.yaml")')
POLYTHROTTLE_STATE_DIR="$work/state" "$pt" daemon --check --config "$example"
"$pt" install-service --exe "$pt" --print-unit | grep -q "ExecStart=$pt daemon"
echo "wheel check: OK"
