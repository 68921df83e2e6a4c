"""The daily AQI counts a pollutant's 24 h mean only with at least 20 hourly values in the
local day (GB 3095-2012's validity rule): a hub started mid-day writes no daily AQI from a
few hours."""

from __future__ import annotations

import numpy as np

from hub.analytics import DAY_NS, HOUR_NS, TZ_NS, CityAnalytics
from hub.aqi import POLLUTANTS
from hub.series import SeriesRegistry
from seeds.city import City

S = 1_000_000_000
DAY0 = (1_763_712_000 * S + TZ_NS) // DAY_NS * DAY_NS - TZ_NS  # a local midnight (UTC ns)


def _daily_lines(hours_of: dict[str, int]) -> list[bytes]:
    """Feed one station's hourly means (PM2.5 80, the others low) for ``hours_of[p]``
    hours of the day (24 if absent), then close the day: the aqi_1d lines."""
    an = CityAnalytics(City(), SeriesRegistry(City()))
    an.d_district = np.zeros(1, np.int64)
    an.d_air = np.zeros(1, np.int64)  # device 0 is air station 0
    an.registry.device_ids.append("500103-air-01-00000")
    an.registry._device_system.extend([0])
    low = {"pm2_5": 80.0, "pm10": 20.0, "so2": 5.0, "no2": 10.0, "co": 0.5, "o3": 30.0}
    for h in range(24):
        conc = np.array([[low[p] if h < hours_of.get(p, 24) else np.nan for p in POLLUTANTS]])
        an._accumulate_day(DAY0 + (h + 1) * HOUR_NS, np.zeros(1, np.int64), conc)
    out = an._daily(DAY0 + DAY_NS)
    return [ln for body, _ in out.bodies for ln in body.split(b"\n") if ln]


def test_a_full_day_gives_the_daily_aqi() -> None:
    (line,) = _daily_lines({})
    assert line.startswith(b"aqi_1d,") and b"iaqi_pm2_5=" in line and b"iaqi_pm10=" in line


def test_a_pollutant_under_20_hours_takes_no_part() -> None:
    (line,) = _daily_lines({"pm10": 19})
    assert b"iaqi_pm2_5=" in line and b"iaqi_pm10=" not in line
    (line,) = _daily_lines({"pm10": 20})
    assert b"iaqi_pm10=" in line


def test_a_few_hours_give_no_daily_aqi() -> None:
    """The audit's case: a hub started at 10:00 wrote a daily AQI from 6 hours."""
    assert _daily_lines(dict.fromkeys(POLLUTANTS, 6)) == []
