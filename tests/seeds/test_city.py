from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from seeds.city import City, catalogue_by_kind, load_catalogue
from seeds.generate_systems import rows

REFERENCE = Path(__file__).parents[3] / "shared" / "reference" / "chongqing_districts.csv"


def test_201_systems_over_38_districts() -> None:
    city = City()
    assert len(city.systems) == 201
    assert len(city.districts) == 38
    assert {s.district_code for s in city.systems} == {d.code for d in city.districts}
    assert Counter(s.domain for s in city.systems).keys() == {"environment", "parking",
                                                              "kitchen"}
    assert len({s.system_id for s in city.systems}) == 201


def test_districts_match_reference() -> None:
    if REFERENCE.exists():
        with REFERENCE.open(encoding="utf-8") as fh:
            ref = [r["code"] for r in csv.DictReader(fh)]
        assert [d.code for d in City().districts] == ref
    assert Counter(d.kind for d in City().districts) == {"district": 26, "county": 8,
                                                         "autonomous_county": 4}


def test_systems_csv_is_what_the_generator_writes() -> None:
    city = City()
    assert [s.system_id for s in city.systems] == [r["system_id"] for r in rows()]


def test_scale() -> None:
    assert 3000 < City().device_total < 5000
    assert City(270).device_total >= 990_000


def test_lookup_device() -> None:
    city = City()
    d = next(city.devices())
    assert city.lookup_device(d.device_id) == d
    s = city.systems[0]
    assert city.lookup_device(s.device_id(s.device_count(1.0))) is None
    for bad in ("", "x", "500103-air-01-1", "nope-00001", "500103-air-01-0000a",
                # Unicode digits: '²' made int() raise, Arabic-Indic ones aliased device 00001
                "500103-air-01-²²²²²", "500103-air-01-٠٠٠٠١", "500103-air-01-０００１０"):
        assert city.lookup_device(bad) is None


def test_catalogue_ranges() -> None:
    for m in load_catalogue():
        assert m.min < m.max, m
    assert set(catalogue_by_kind()["air"]) == {"pm2_5", "pm10", "so2", "no2", "co", "o3", "temp",
                                               "humidity"}
