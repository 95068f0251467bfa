"""Refresh ``polythrottle/data/carbon_intensity.json`` from CodeCarbon's packaged per-country data.

CodeCarbon (MIT licence) ships ``codecarbon/data/private_infra/global_energy_mix.json``: for each
country (ISO 3166-1 alpha-3) the electricity mix and ``carbon_intensity`` (gCO2eq/kWh) of the last
year Our World in Data publishes (OWID "Carbon intensity of electricity generation", data from Ember
and the Energy Institute, CC BY 4.0). We keep only the name, intensity and year of each country.

    pip download codecarbon --no-deps -d /tmp/cc          # the wheel; nothing is installed
    python scripts/update_carbon_data.py /tmp/cc/codecarbon-*.whl

Also accepts the extracted ``global_energy_mix.json`` (then give ``--version``). Writes the snapshot
with its provenance; review the diff (years, France vs Germany) before committing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import zipfile
from pathlib import Path

MEMBER = "codecarbon/data/private_infra/global_energy_mix.json"
OUT = Path(__file__).resolve().parents[1] / "polythrottle" / "data" / "carbon_intensity.json"


def read_source(path: Path, version: str | None) -> tuple[dict, str]:
    if path.suffix == ".whl":
        m = re.match(r"codecarbon-([^-]+)-", path.name)
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(MEMBER)), version or (m.group(1) if m else "?")
    if not version:
        sys.exit("give --version (the codecarbon release the JSON file comes from)")
    return json.loads(path.read_text()), version


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="codecarbon wheel, or its global_energy_mix.json")
    ap.add_argument("--version", default=None, help="codecarbon version (read from the wheel's name)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    data, version = read_source(args.source, args.version)
    countries = {}
    for code, row in sorted(data.items()):
        g = row.get("carbon_intensity")
        if not re.fullmatch(r"[A-Z]{3}", code) or not isinstance(g, int | float) or g < 0:
            continue
        countries[code] = {"name": row.get("country_name", code), "g_per_kwh": round(float(g), 3),
                           "year": int(row["year"])}
    doc = {
        "unit": "gCO2eq/kWh",
        "what": "lifecycle carbon intensity of electricity generation per country, latest year available",
        "source": f"Our World in Data (Ember, Energy Institute) via CodeCarbon {version}",
        "source_url": "https://ourworldindata.org/grapher/carbon-intensity-electricity",
        "extracted_from": f"codecarbon {version} (PyPI), {MEMBER}",
        "extracted_on": dt.date.today().isoformat(),
        "licence": "CodeCarbon: MIT (carbon_intensity.LICENSE); data: Our World in Data / Ember, CC BY 4.0",
        "countries": countries,
    }
    head = json.dumps({k: v for k, v in doc.items() if k != "countries"}, indent=1, ensure_ascii=False)
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in countries.items())
    args.out.write_text(head[:-2] + ',\n "countries": {\n' + rows + "\n }\n}\n")  # a country per line
    years = sorted({c["year"] for c in countries.values()})
    print(f"{args.out}: {len(countries)} countries, years {years[0]}-{years[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
