"""``LiveState.document``: JSON-safe numbers (NaN and ±inf as null), ratios per district
and system, a system without devices has no online ratio."""

from __future__ import annotations

import math

import numpy as np
import orjson

from hub.live import LiveState, _num
from seeds.city import City


def test_num_keeps_finite_numbers_and_nulls_the_rest() -> None:
    assert _num(None) is None
    assert _num(np.float64(1.5)) == 1.5 and _num(2) == 2.0 and _num(np.int64(3)) == 3.0
    assert _num(float("nan")) is None and _num(np.inf) is None and _num(-math.inf) is None


def test_document_numbers_ratios_and_nulls() -> None:
    city = City(1.0)
    live = LiveState(city)
    live.district_aqi[:] = np.nan
    live.district_aqi[0], live.district_aqi[1] = 87.0, np.inf
    live.district_category[0] = 2
    live.bay_occupancy[0] = 0.25
    live.sys_online[:] = 1
    live.sys_devices[0] = 0  # a system without devices
    live.sys_completeness[:] = np.nan
    live.sys_completeness[1] = 0.5
    live.sys_validity[1] = -np.inf
    doc = live.document(None)
    d0, d1 = doc["districts"][0], doc["districts"][1]
    assert d0["aqi"] == 87.0 and d0["category"] == 2 and d0["bay_occupancy"] == 0.25
    assert d1["aqi"] is None and d1["category"] is None and d0["lot_occupancy"] is None
    s0, s1 = doc["systems"][0], doc["systems"][1]
    assert s0["devices"] == 0 and s0["online"] == 1 and s0["online_ratio"] is None
    assert s1["online_ratio"] == 1 / int(live.sys_devices[1])
    assert s1["completeness"] == 0.5 and s1["validity"] is None and s0["completeness"] is None
    assert all(isinstance(s["devices"], int) for s in doc["systems"])
    d = live.codes.index(city.systems[1].district_code)
    online = live.sys_online[live.sys_district == d].sum()
    devices = live.sys_devices[live.sys_district == d].sum()
    assert doc["districts"][d]["online_ratio"] == float(online / devices)
    orjson.dumps(doc)  # JSON-safe
