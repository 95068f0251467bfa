"""Carbon intensity by country: the packaged dated snapshot, the lookup, and where it shows (tune JSON, API,
daemon config, metrics, status)."""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources

import pytest

import polythrottle as pt
from polythrottle.carbon import GIVEN_SOURCE, WORLD_AVERAGE, countries, lookup, resolve, snapshot
from polythrottle.cli import main
from polythrottle.daemon.config import ConfigError, load_config
from polythrottle.daemon.metrics import DaemonMetrics
from polythrottle.errors import BadInputError


def test_france_and_germany_give_different_dated_intensities():
    fra, deu = lookup("FRA"), lookup("deu")
    assert fra.country == "FRA" and deu.country == "DEU"
    assert fra.intensity_g_per_kwh != deu.intensity_g_per_kwh
    assert fra.intensity_g_per_kwh < deu.intensity_g_per_kwh  # nuclear and hydro vs coal and gas
    for c in (fra, deu):
        assert isinstance(c.year, int) and 2015 <= c.year <= dt.date.today().year
        assert "Our World in Data" in c.source and "Ember" in c.source
        assert c.co2_g(3.6e6) == pytest.approx(c.intensity_g_per_kwh)  # 1 kWh


def test_snapshot_carries_its_provenance_and_licence():
    snap = snapshot()
    for key in ("source", "source_url", "extracted_from", "extracted_on", "licence", "unit"):
        assert snap[key]
    assert len(countries()) > 150 and countries()["DEU"] == "Germany"
    lic = resources.files("polythrottle").joinpath("data", "carbon_intensity.LICENSE").read_text()
    assert "MIT License" in lic and "Creative Commons BY 4.0" in lic


@pytest.mark.parametrize("code, hint", [("XYZ", None), ("France", "FRA (France)"), ("germany", "DEU (Germany)")])
def test_unknown_country_names_it(code, hint):
    with pytest.raises(BadInputError) as e:
        lookup(code)
    msg = str(e.value)
    assert f"unknown country code {code!r}" in msg and "\n" not in msg
    if hint:
        assert f"did you mean {hint}" in msg


def test_explicit_intensity_overrides_the_dataset():
    assert resolve() == WORLD_AVERAGE
    given = resolve("FRA", 30)
    assert (given.country, given.intensity_g_per_kwh, given.year, given.source) == ("FRA", 30.0, None, GIVEN_SOURCE)
    with pytest.raises(BadInputError, match="unknown country code 'XX'"):
        resolve("XX", 30)  # a typo is not hidden by the override
    with pytest.raises(BadInputError, match=">= 0"):
        resolve(None, -1)


def test_tune_json_carries_carbon_and_co2(small_table, capsys):
    args = ["tune", "--device", f"replay:{small_table}", "--slo-ms", "50", "--budget", "4", "--seed", "1", "--json"]
    assert main([*args, "--carbon-country", "FRA"]) == 0
    res = json.loads(capsys.readouterr().out)
    fra = lookup("FRA")
    assert res["carbon"] == fra.to_dict()
    co2 = res["co2_g_per_inference"]
    assert co2["baseline"] == pytest.approx(res["baseline"]["energy_j"] / 3.6e6 * fra.intensity_g_per_kwh)
    assert co2["best"] == pytest.approx(res["best"]["energy_j"] / 3.6e6 * fra.intensity_g_per_kwh)
    assert main([*args, "--carbon-country", "FRA", "--carbon-intensity", "12.5"]) == 0
    assert json.loads(capsys.readouterr().out)["carbon"] == {"country": "FRA", "intensity_g_per_kwh": 12.5,
                                                             "year": None, "source": "given"}


def test_tune_unknown_country_exits_2_before_measuring(small_table, capsys):
    code = main(["tune", "--device", f"replay:{small_table}", "--slo-ms", "50", "--carbon-country", "XYZ"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unknown country code 'XYZ'" in err


def test_api_tune_with_carbon_country(small_table):
    r = pt.tune(f"replay:{small_table}", slo_ms=50, budget=3, seed=0, carbon_country="DEU")
    assert r.extra["carbon"]["country"] == "DEU" and r.extra["carbon"]["year"] == lookup("DEU").year
    assert r.extra["co2_g_per_inference"]["baseline"] == pytest.approx(lookup("DEU").co2_g(r.baseline.energy_j))
    with pytest.raises(BadInputError, match="unknown country code"):
        pt.tune(f"replay:{small_table}", slo_ms=50, budget=3, carbon_country="ZZZ")


GOOD = "device: sim:jetson-agx-orin\nworkload: efficientnet-b0\nslo_ms: 25\n"


def test_daemon_config_and_metrics_carry_the_country(tmp_path):
    p = tmp_path / "daemon.yaml"
    p.write_text(GOOD + "carbon_country: fra\n")
    cfg = load_config(p)
    assert cfg.carbon == lookup("FRA") and cfg.carbon_intensity_g_per_kwh == lookup("FRA").intensity_g_per_kwh
    p.write_text(GOOD + "carbon_country: FRA\ncarbon_intensity_g_per_kwh: 20\n")
    assert load_config(p).carbon.source == GIVEN_SOURCE and load_config(p).carbon_intensity_g_per_kwh == 20
    p.write_text(GOOD + "carbon_country: Atlantis\n")
    with pytest.raises(ConfigError, match=r"daemon.yaml: carbon_country: unknown country code 'Atlantis'"):
        load_config(p)

    m = DaemonMetrics(25, lookup("FRA"), 1)
    fra = lookup("FRA")
    assert (f'polythrottle_grid_carbon_intensity_grams_per_kwh{{country="FRA",source="{fra.source}",'
            f'year="{fra.year}"}} {fra.intensity_g_per_kwh}') in m.text()
    m.set_carbon(lookup("DEU"))
    assert 'country="FRA"' not in m.text() and 'country="DEU"' in m.text()
    assert m.carbon_g_per_kwh == lookup("DEU").intensity_g_per_kwh
