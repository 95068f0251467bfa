"""Grid carbon intensity: per country from a dated snapshot shipped with PolyThrottle, or given.

The snapshot (``polythrottle/data/carbon_intensity.json``, provenance and licences in
``carbon_intensity.LICENSE``) holds, per ISO 3166-1 alpha-3 country, the lifecycle carbon intensity
of electricity generation of the latest year Our World in Data publishes (data from Ember and the
Energy Institute), as packaged by CodeCarbon; ``scripts/update_carbon_data.py`` refreshes it.

    resolve(country="FRA")                        # France, its year and source
    resolve(country="FRA", intensity_g_per_kwh=30) # a given intensity overrides the dataset
    resolve()                                     # the world average (481 g/kWh, Ember, 2023)

CO2 of an inference = energy per inference (J) / 3.6e6 (J per kWh) x intensity (g/kWh). Errors: an
unknown country code or a negative intensity raises BadInputError (one line, exit 2).
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from polythrottle.errors import BadInputError

J_PER_KWH = 3.6e6
DATA_FILE = "carbon_intensity.json"


@dataclass(frozen=True)
class CarbonIntensity:
    """Grams of CO2-equivalent per kWh of electricity, where it comes from and for which year.

    country: ISO 3166-1 alpha-3 code, or None (world average, or a given intensity without one).
    year: the year the value describes (None when given by the user). source: who published it.
    """

    country: str | None
    intensity_g_per_kwh: float
    year: int | None
    source: str

    def co2_g(self, energy_j: float) -> float:
        """Grams of CO2 for ``energy_j`` joules."""
        return co2_grams(energy_j, self.intensity_g_per_kwh)

    def to_dict(self) -> dict[str, Any]:
        return {"country": self.country, "intensity_g_per_kwh": self.intensity_g_per_kwh, "year": self.year,
                "source": self.source}

    def describe(self) -> str:
        """One short phrase: ``56.04 g/kWh (FRA, 2023; Our World in Data ...)``."""
        where = ", ".join(x for x in (self.country or ("" if self.source == GIVEN_SOURCE else "world"),
                                      str(self.year or "")) if x)
        return f"{self.intensity_g_per_kwh:.4g} g/kWh ({where + '; ' if where else ''}{self.source})"


GIVEN_SOURCE = "given"
WORLD_AVERAGE = CarbonIntensity(
    country=None, intensity_g_per_kwh=481.0, year=2023,
    source="Ember, global average (2024 data release)",
)
"""The default: 481 gCO2/kWh, the 2023 world average published by Ember."""


def co2_grams(energy_j: float, g_per_kwh: float) -> float:
    """Grams of CO2 for ``energy_j`` joules at ``g_per_kwh`` grams per kWh."""
    return energy_j / J_PER_KWH * g_per_kwh


@lru_cache(maxsize=1)
def snapshot() -> dict[str, Any]:
    """The packaged snapshot: ``source``, ``source_url``, ``extracted_on``, ``countries`` {ISO3: {name,
    g_per_kwh, year}}, ..."""
    text = resources.files("polythrottle").joinpath("data").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def countries() -> dict[str, str]:
    """ISO3 code -> country name, for every country the snapshot covers."""
    return {code: row["name"] for code, row in snapshot()["countries"].items()}


def lookup(country: str) -> CarbonIntensity:
    """The snapshot's intensity for ``country`` (ISO 3166-1 alpha-3, any case). Raises BadInputError
    naming the code (and a close match by code or name) when the snapshot does not have it."""
    code = str(country).strip().upper()
    data = snapshot()
    row = data["countries"].get(code)
    if row is None:
        raise BadInputError(f"unknown country code {country!r} for the carbon intensity; expected an ISO 3166-1 "
                            f"alpha-3 code (FRA, DEU, USA, ...){_hint(str(country))}")
    return CarbonIntensity(code, float(row["g_per_kwh"]), int(row["year"]), str(data["source"]))


def _hint(text: str) -> str:
    names = countries()
    by_name = {n.lower(): c for c, n in names.items()}
    match = by_name.get(text.strip().lower()) or next(iter(difflib.get_close_matches(
        text.strip().lower(), list(by_name), n=1, cutoff=0.75)), None)
    if match is not None:
        code = by_name.get(match, match)
        return f"; did you mean {code} ({names[code]})?"
    close = difflib.get_close_matches(text.strip().upper(), list(names), n=1, cutoff=0.6)
    return f"; did you mean {close[0]} ({names[close[0]]})?" if close else ""


def resolve(country: str | None = None, intensity_g_per_kwh: float | None = None) -> CarbonIntensity:
    """The intensity to use: ``intensity_g_per_kwh`` when given (source ``given``; ``country`` is kept as
    a label but must still be known), else the snapshot's value for ``country``, else the world average.
    Raises BadInputError for an unknown country or a negative or non-finite intensity."""
    found = lookup(country) if country is not None else None
    if intensity_g_per_kwh is not None:
        g = intensity_g_per_kwh
        if isinstance(g, bool) or not isinstance(g, int | float) or not math.isfinite(g) or g < 0:
            raise BadInputError(f"carbon intensity must be a number >= 0 g/kWh, got {g!r}")
        return CarbonIntensity(found.country if found else None, float(g), None, GIVEN_SOURCE)
    return found or WORLD_AVERAGE


def tune_extra(carbon: CarbonIntensity, result: Any) -> dict[str, Any]:
    """What a tune's result gains (``result.extra.update(...)``; JSON of ``tune``): ``carbon`` (the
    intensity used) and ``co2_g_per_inference`` of the baseline and of the pick (None if nothing met
    the SLO). ``result`` is a ``polythrottle.tuner.TuneResult``."""
    best = getattr(result, "best", None)
    return {
        "carbon": carbon.to_dict(),
        "co2_g_per_inference": {"baseline": carbon.co2_g(result.baseline.energy_j),
                                "best": None if best is None else carbon.co2_g(best.energy_j)},
    }


__all__ = ["GIVEN_SOURCE", "J_PER_KWH", "WORLD_AVERAGE", "CarbonIntensity", "co2_grams", "countries", "lookup",
           "resolve", "snapshot", "tune_extra"]
