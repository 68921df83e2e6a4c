"""hub.aqi kernels against the slow reference in tests/naive_aqi.py, plus worked examples."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.naive_aqi as naive
from hub.aqi import (
    COLUMNS,
    DISPLAY_NAMES,
    HOUR_NS,
    POLLUTANTS,
    AirQualityTracker,
    O3EightHour,
    aqi_from_iaqi,
    breakpoints,
    category_info,
    exceeding_mask,
    group_mean,
    iaqi,
    pollutant_index,
    primary_names,
)
from hub.aqi_cli import add_aqi_parser, cmd_aqi

NAN = math.nan
STD_PERIODS = [(s, p) for s in (2012, 2026) for p in ("1h", "24h")]
PM25, PM10, SO2, NO2, CO, O3, O3_8H = range(7)
T0 = 1_780_000_000 // 3600 * HOUR_NS  # a whole hour in 2026


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def row(**kw: float) -> np.ndarray:
    """One station's ``[1, 7]`` concentrations, NaN where not given (keys: COLUMNS)."""
    r = np.full((1, 7), NAN)
    for k, v in kw.items():
        r[0, COLUMNS.index(k)] = v
    return r


def one(conc: np.ndarray, standard: int, period: str = "1h") -> tuple[list[float], float,
                                                                      list[str], int]:
    sub = iaqi(conc, standard, period)
    aqi, mask, cat = aqi_from_iaqi(sub)
    return sub[0].tolist(), float(aqi[0]), primary_names(int(mask[0])), int(cat[0])


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------

ALL_BREAKPOINTS = sorted({float(v) for s, p in STD_PERIODS for v in breakpoints(s, p).ravel()
                          if not math.isnan(v)})
OFFSETS = [0.0, 0.5, -0.5, 1.0, -1.0, 0.05, -0.05, 0.1, -0.1, 0.04999, 0.15, -0.25, 1e-9,
           -1e-9]


@st.composite
def concentration(draw: st.DrawFn) -> float:
    kind = draw(st.integers(0, 9))
    if kind <= 2:  # on or around a breakpoint
        return draw(st.sampled_from(ALL_BREAKPOINTS)) + draw(st.sampled_from(OFFSETS))
    if kind <= 4:  # a decimal as instruments print them (1 or 2 places): ties, x.x5 ...
        places = draw(st.sampled_from([1, 2]))
        return draw(st.integers(0, 400_000)) / 10**places
    if kind <= 6:
        return draw(st.floats(0.0, 4000.0, allow_nan=False))
    if kind == 7:
        return draw(st.floats(0.0, 20.0, allow_nan=False))  # CO-sized
    if kind == 8:
        return NAN
    return draw(st.sampled_from([-0.0, -1.0, -1e-12, math.inf, -math.inf, 1e9, 5000.0,
                                 1e-300, 5e-324, 2.0**53 + 2, 1e300, 99999.95, 1e5 + 0.05]))


@st.composite
def conc_rows(draw: st.DrawFn, max_n: int = 12) -> np.ndarray:
    n = draw(st.integers(0, max_n))
    vals = draw(st.lists(concentration(), min_size=7 * n, max_size=7 * n))
    return np.asarray(vals, dtype=np.float64).reshape(n, 7)


# --------------------------------------------------------------------------------------------
# IAQI against the reference
# --------------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(conc=conc_rows(), sp=st.sampled_from(STD_PERIODS))
def test_iaqi_matches_reference(conc: np.ndarray, sp: tuple[int, str]) -> None:
    standard, period = sp
    got = iaqi(conc, standard, period)
    assert got.shape == conc.shape and got.dtype == np.float64
    for i in range(conc.shape[0]):
        want = naive.iaqi_row(conc[i].tolist(), standard, period)
        for c in range(7):
            assert same(got[i, c], want[c]), (standard, period, DISPLAY_NAMES[c], conc[i, c],
                                              got[i, c], want[c])


@pytest.mark.parametrize(("standard", "period"), STD_PERIODS)
def test_iaqi_on_and_around_every_breakpoint(standard: int, period: str) -> None:
    """Every breakpoint of every table column (the naive's own copy), and ±0.5/±1 (and a few
    finer offsets) around it, for every column."""
    values = sorted({bp + d for name in naive.HEADER[1:] for y in (2012, 2026)
                     for bp, _ in naive.column(name, y) for d in OFFSETS if bp + d >= 0})
    conc = np.repeat(np.asarray(values)[:, None], 7, axis=1)
    got = iaqi(conc, standard, period)
    for i, v in enumerate(values):
        want = naive.iaqi_row([v] * 7, standard, period)
        for c in range(7):
            assert same(got[i, c], want[c]), (DISPLAY_NAMES[c], v, got[i, c], want[c])


@pytest.mark.parametrize(("standard", "period"), STD_PERIODS)
def test_breakpoint_gets_its_level(standard: int, period: str) -> None:
    bp = breakpoints(standard, period)
    levels = [0, 50, 100, 150, 200, 300, 400, 500]
    for c in range(7):
        for k in range(8):
            if not math.isnan(bp[c, k]):
                assert iaqi(row(**{COLUMNS[c]: bp[c, k]}), standard, period)[0, c] == levels[k]


def test_nan_negative_and_inf_are_not_values() -> None:
    conc = np.array([[NAN, -1.0, math.inf, -math.inf, -1e-300, NAN, NAN],
                     [NAN] * 7, [0.0, -0.0, NAN, NAN, NAN, NAN, NAN]])
    for s, p in STD_PERIODS:
        sub = iaqi(conc, s, p)
        assert np.isnan(sub[:2]).all()
        assert sub[2, 0] == 0 and sub[2, 1] == 0
        aqi, mask, cat = aqi_from_iaqi(sub)
        assert math.isnan(aqi[0]) and math.isnan(aqi[1]) and aqi[2] == 0
        assert mask.tolist() == [0, 0, 0] and cat.tolist() == [0, 0, 1]


def test_cap_above_the_table() -> None:
    # PM2.5 top is 500 → IAQI 500; anything above is capped at 500 (1e9 too).
    for s, p in STD_PERIODS:
        for v in (500.0, 501.0, 1e9):
            assert iaqi(row(pm2_5=v, no2=1e6, co=1e4), s, p)[0, [PM25, NO2, CO]].tolist() == \
                [500, 500, 500]


# --------------------------------------------------------------------------------------------
# special rules, rounding, the 2026 changes
# --------------------------------------------------------------------------------------------


def test_so2_1h_above_800() -> None:
    # 2012: SO2 1 h > 800 is rated on the SO2 24 h column with the same value.
    # 801 in the 24 h segment 800→200 .. 1600→300: 200 + 100/800·1 = 200.125 → ceil 201.
    assert iaqi(row(so2=801), 2012, "1h")[0, SO2] == 201
    # 2000: 24 h segment 1600→300 .. 2100→400: 300 + 100/500·400 = 380.
    assert iaqi(row(so2=2000), 2012, "1h")[0, SO2] == 380
    assert iaqi(row(so2=3000), 2012, "1h")[0, SO2] == 500  # past 2620: cap
    assert iaqi(row(so2=800), 2012, "1h")[0, SO2] == 200  # on the top: the 1 h table
    # 2026: SO2 1 h > 800 → 200, whatever the value.
    for v in (800.0, 801.0, 5000.0):
        assert iaqi(row(so2=v), 2026, "1h")[0, SO2] == 200
    # 2026 rounds first: 800.4 → 800 (table: 200); 800.6 → 801 (> 800: 200). Same answer.
    assert iaqi(row(so2=800.4), 2026, "1h")[0, SO2] == 200
    # Daily: the 24 h column, no special rule: 801 → 201 under both.
    assert iaqi(row(so2=801), 2026, "24h")[0, SO2] == 201


def test_o3_8h_above_800() -> None:
    # 2012: not computed; O3 is rated by its 1 h value: O3 1h 500 in 400→200 .. 800→300:
    # 200 + 100/400·100 = 225.
    sub, aqi, prim, cat = one(row(o3=500, o3_8h=801), 2012)
    assert math.isnan(sub[O3_8H]) and sub[O3] == 225 and aqi == 225 and prim == ["O3"]
    assert cat == 5
    sub, aqi, *_ = one(row(o3_8h=801), 2012, "24h")  # no 1 h value: O3 not rated at all
    assert math.isnan(sub[O3_8H]) and math.isnan(aqi)
    # 2026: 300, above the 1 h value's 225, so O3_8h is primary.
    sub, aqi, prim, cat = one(row(o3=500, o3_8h=801), 2026)
    assert sub[O3_8H] == 300 and sub[O3] == 225 and aqi == 300 and prim == ["O3_8h"]
    assert cat == 5
    sub, aqi, prim, cat = one(row(o3_8h=5000), 2026, "24h")
    assert sub[O3_8H] == 300 and aqi == 300
    # 800 exactly is the top of the 8 h column: 300 under both.
    assert iaqi(row(o3_8h=800), 2012, "1h")[0, O3_8H] == 300


def test_2026_pm_breakpoints() -> None:
    assert iaqi(row(pm2_5=60), 2026, "1h")[0, PM25] == 100
    assert iaqi(row(pm2_5=75), 2012, "1h")[0, PM25] == 100
    # 2012 PM2.5 60: 50 + 50/40·25 = 81.25 → 82.
    assert iaqi(row(pm2_5=60), 2012, "1h")[0, PM25] == 82
    # 2026 PM2.5 75: 100 + 50/55·15 = 113.63 → 114.
    assert iaqi(row(pm2_5=75), 2026, "24h")[0, PM25] == 114
    assert iaqi(row(pm10=120), 2026, "24h")[0, PM10] == 100
    assert iaqi(row(pm10=150), 2012, "24h")[0, PM10] == 100
    # 2026 PM10 150: 100 + 50/130·30 = 111.54 → 112.
    assert iaqi(row(pm10=150), 2026, "24h")[0, PM10] == 112


def test_2026_rounding_half_even() -> None:
    # Integers, half to even: 60.5 → 60 (IAQI 100), 61.5 → 62 (100 + 50/55·2 = 101.8 → 102).
    assert iaqi(row(pm2_5=60.5), 2026, "1h")[0, PM25] == 100
    assert iaqi(row(pm2_5=61.5), 2026, "1h")[0, PM25] == 102
    assert iaqi(row(pm2_5=60.4999), 2026, "1h")[0, PM25] == 100
    # 2012 uses the value as given: 60.5 → 50 + 50/40·25.5 = 81.875 → 82.
    assert iaqi(row(pm2_5=60.5), 2012, "1h")[0, PM25] == 82
    # CO to 0.1 mg/m³, half to even on the printed decimal: 1.25 → 1.2 (24 h: 50·1.2/2 = 30);
    # 1.35 → 1.4 (35); 1.15 → 1.2 (30) although the float 1.15 is 1.149999...
    for v, want in ((1.25, 30), (1.35, 35), (1.15, 30), (1.249, 30), (1.2501, 33)):
        assert iaqi(row(co=v), 2026, "24h")[0, CO] == want, v


def test_ceil_is_exact_on_decimals() -> None:
    # CO 24 h 2.2: 50 + 50/2·0.2 = 55 exactly; the textbook float formula gives
    # 55.00000000000001 and a ceil of 56. Same trap for PM2.5 16.1 (50/35·16.1 = 23).
    assert (50 - 0) / (2 - 0) * (2.2 - 0) + 0 > 55  # the trap
    assert 50 / 35 * 16.1 > 23
    for s in (2012, 2026):
        assert iaqi(row(co=2.2, pm2_5=16.1), s, "24h")[0, [CO, PM25]].tolist() == [55, 23]
    # A hair above the exact integer rounds up under 2012 (no concentration rounding) only.
    assert iaqi(row(co=2.2000001), 2012, "24h")[0, CO] == 56
    assert iaqi(row(co=2.2000001), 2026, "24h")[0, CO] == 55


# --------------------------------------------------------------------------------------------
# AQI, primary pollutant, categories
# --------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.one_of(st.sampled_from([0.0, 50.0, 51.0, 100.0, 101.0, 300.0,
                                                     301.0, 500.0, NAN]),
                                   st.integers(0, 500).map(float)),
                         min_size=7, max_size=7), max_size=20))
def test_aqi_matches_reference(rows: list[list[float]]) -> None:
    sub = np.asarray(rows, dtype=np.float64).reshape(len(rows), 7)
    aqi, mask, cat = aqi_from_iaqi(sub)
    assert aqi.dtype == np.float64 and mask.dtype == np.uint8 and cat.dtype == np.int8
    for i, r in enumerate(rows):
        a, prim, c = naive.aqi(r)
        assert same(aqi[i], a) and primary_names(int(mask[i])) == prim and cat[i] == c


@pytest.mark.parametrize(("aqi", "cat"), [(0, 1), (50, 1), (51, 2), (100, 2), (101, 3),
                                          (150, 3), (151, 4), (200, 4), (201, 5), (300, 5),
                                          (301, 6), (500, 6)])
def test_category_boundaries(aqi: int, cat: int) -> None:
    a, mask, c = aqi_from_iaqi(np.array([[aqi, NAN, 0, NAN, NAN, NAN, NAN]], dtype=float))
    assert a[0] == aqi and c[0] == cat
    assert mask[0] == (1 if aqi > 50 else 0)  # no primary pollutant at AQI <= 50
    zh, _, colour = category_info(cat)
    assert (zh, colour) == naive.CATEGORIES[cat]


def test_category_info() -> None:
    assert category_info(3) == ("轻度污染", "Lightly polluted", "#FF7E00")
    assert category_info(6) == ("严重污染", "Severely polluted", "#7E0023")
    assert category_info(0) == ("—", "no data", "")
    with pytest.raises(ValueError):
        category_info(7)


def test_primary_ties_all_listed() -> None:
    # PM2.5 115 → 150 and PM10 250 → 150 (2012): both primary.
    sub, aqi, prim, _ = one(row(pm2_5=115, pm10=250, no2=10), 2012, "24h")
    assert sub[:2] == [150, 150] and aqi == 150 and prim == ["PM2.5", "PM10"]
    # Tie at 50: no primary pollutant.
    _, aqi, prim, cat = one(row(pm2_5=35, pm10=50), 2012, "24h")
    assert aqi == 50 and prim == [] and cat == 1
    # O3 1 h and 8 h tied: both named.
    _, aqi, prim, _ = one(row(o3=200, o3_8h=160), 2026)
    assert aqi == 100 and prim == ["O3", "O3_8h"]


def test_exceeding_pollutants_2012_only() -> None:
    sub = iaqi(row(pm2_5=80, pm10=200, no2=20), 2012, "24h")  # 107, 125, 25
    assert primary_names(int(exceeding_mask(sub, 2012)[0])) == ["PM2.5", "PM10"]
    assert exceeding_mask(sub, 2026)[0] == 0


# --------------------------------------------------------------------------------------------
# Worked examples (hand arithmetic)
# --------------------------------------------------------------------------------------------


def test_worked_example_hourly_2026() -> None:
    # PM2.5 80: segment 60→100 .. 115→150: 100 + 50/55·20 = 118.18 → 119
    # PM10 120: on the 2026 breakpoint → 100
    # SO2 1h 10: 50/150·10 = 3.33 → 4;  NO2 1h 40: 50/100·40 = 20
    # CO 1h 1.2: 50/5·1.2 = 12;  O3 1h 100: 50/160·100 = 31.25 → 32
    # AQI = 119 → 轻度污染, primary PM2.5
    sub, aqi, prim, cat = one(row(pm2_5=80, pm10=120, so2=10, no2=40, co=1.2, o3=100), 2026)
    assert sub[:6] == [119, 100, 4, 20, 12, 32] and aqi == 119 and prim == ["PM2.5"]
    assert cat == 3


def test_worked_example_hourly_2012() -> None:
    # PM2.5 80: 75→100 .. 115→150: 100 + 50/40·5 = 106.25 → 107
    # PM10 120: 50→50 .. 150→100: 50 + 50/100·70 = 85; the rest as in 2026.
    sub, aqi, prim, cat = one(row(pm2_5=80, pm10=120, so2=10, no2=40, co=1.2, o3=100), 2012)
    assert sub[:6] == [107, 85, 4, 20, 12, 32] and aqi == 107 and prim == ["PM2.5"]
    assert cat == 3


def test_worked_example_daily_2026() -> None:
    # SO2 24h 60: 50→50 .. 150→100: 50 + 50/100·10 = 55
    # NO2 24h 90: 80→100 .. 180→150: 100 + 50/100·10 = 105
    # CO 24h 2.46 → 2.5 (rounded to 0.1 first): 2→50 .. 4→100: 50 + 50/2·0.5 = 62.5 → 63
    # O3_8h 170: 160→100 .. 215→150: 100 + 50/55·10 = 109.09 → 110
    # AQI 110, primary O3_8h.
    sub, aqi, prim, cat = one(row(so2=60, no2=90, co=2.46, o3_8h=170), 2026, "24h")
    assert [sub[SO2], sub[NO2], sub[CO], sub[O3_8H]] == [55, 105, 63, 110]
    assert aqi == 110 and prim == ["O3_8h"] and cat == 3


def test_worked_example_severe() -> None:
    # PM2.5 320 (2026): 250→300 .. 350→400: 300 + 100/100·70 = 370 → 严重污染
    # PM10 430: 420→300 .. 500→400: 300 + 100/80·10 = 312.5 → 313
    sub, aqi, prim, cat = one(row(pm2_5=320, pm10=430), 2026, "24h")
    assert sub[:2] == [370, 313] and aqi == 370 and prim == ["PM2.5"] and cat == 6
    assert category_info(cat)[2] == "#7E0023"


# --------------------------------------------------------------------------------------------
# O3 8 h sliding mean
# --------------------------------------------------------------------------------------------


def test_o3_8h_needs_six_hours() -> None:
    o3 = O3EightHour()
    ids = np.array([0], dtype=np.int64)
    got = [o3.update(T0 + h * HOUR_NS, ids, np.array([10.0 * (h + 1)]))[0] for h in range(8)]
    # hours 1..5: fewer than 6 values → NaN; hour 6: mean(10..60) = 35; 7: 40; 8: 45.
    assert all(math.isnan(v) for v in got[:5]) and got[5:] == [35.0, 40.0, 45.0]
    # The 9th hour drops the first: mean(20..90) = 55.
    assert o3.update(T0 + 8 * HOUR_NS, ids, np.array([90.0]))[0] == 55.0
    # Two missing hours in the window (NaN and a skipped hour): 6 of 8 left, still valid.
    o3.update(T0 + 9 * HOUR_NS, ids, np.array([NAN]))
    v = o3.update(T0 + 11 * HOUR_NS, ids, np.array([100.0]))[0]  # hours 4..11: 50..90,100
    assert v == pytest.approx((50 + 60 + 70 + 80 + 90 + 100) / 6)
    # A third gap → NaN.
    assert math.isnan(o3.update(T0 + 12 * HOUR_NS, ids, np.array([NAN]))[0])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3),
                          st.one_of(st.floats(0, 400, allow_nan=False), st.just(NAN),
                                    st.just(-1.0))),
                max_size=60))
def test_o3_8h_matches_reference(steps: list[tuple[int, int, float]]) -> None:
    """Random walks: each step advances the clock 0..4 hours (0 = a revision of the same
    hour) and reports one of 4 stations; compared with a dict of hourly values."""
    o3 = O3EightHour(capacity=1)
    hourly: dict[int, dict[int, float]] = {}
    eight: dict[int, dict[int, float]] = {}
    last: dict[int, int] = {}
    hour = 100
    for adv, station, value in steps:
        hour += adv
        if last.get(station, -1) > hour:
            continue
        got = o3.update(hour * HOUR_NS, np.array([station], dtype=np.int64),
                        np.array([value]))[0]
        hourly.setdefault(station, {})[hour] = value
        want = naive.o3_8h(hourly[station], hour)
        eight.setdefault(station, {})[hour] = want
        last[station] = hour
        assert same(got, want) or got == pytest.approx(want, rel=1e-12)
    for station in range(4):
        got = o3.daily_max(hour * HOUR_NS, np.array([station], dtype=np.int64))[0]
        want = naive.o3_daily_max(eight.get(station, {}), hour)
        assert same(got, want) or got == pytest.approx(want, rel=1e-12)


def test_o3_daily_max_window_and_validity() -> None:
    o3 = O3EightHour()
    ids = np.array([0, 1], dtype=np.int64)
    day_end = T0 + 24 * HOUR_NS
    for h in range(1, 25):  # hours ending 01:00 .. 24:00
        vals = np.array([100.0 + h, 100.0 + h if h % 2 else NAN])
        o3.update(T0 + h * HOUR_NS, ids, vals)
    got = o3.daily_max(day_end, ids)
    # Station 0: the 8 h mean ending 24:00 is mean(117..124) = 120.5, the largest.
    assert got[0] == 120.5
    # Station 1: only 4 of 8 hours in every window → no valid 8 h mean → NaN.
    assert math.isnan(got[1])
    assert np.isnan(o3.daily_max(day_end, np.array([7, 5000], dtype=np.int64))).all()


def test_o3_rejects_late_hours_and_duplicates() -> None:
    o3 = O3EightHour()
    ids = np.array([3], dtype=np.int64)
    o3.update(T0 + 5 * HOUR_NS, ids, np.array([1.0]))
    o3.update(T0 + 5 * HOUR_NS, ids, np.array([2.0]))  # revision: fine
    with pytest.raises(ValueError, match="hours only move forward"):
        o3.update(T0 + 4 * HOUR_NS, ids, np.array([1.0]))
    with pytest.raises(ValueError, match="appears twice"):
        o3.update(T0 + 6 * HOUR_NS, np.array([1, 1], dtype=np.int64), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="whole hour"):
        o3.update(T0 + 1, ids, np.array([1.0]))
    # nothing changed by the failed calls
    assert o3.last_hour_end_ns(3) == T0 + 5 * HOUR_NS and o3.last_hour_end_ns(1) is None


# --------------------------------------------------------------------------------------------
# AirQualityTracker
# --------------------------------------------------------------------------------------------


def test_tracker_hourly_and_daily() -> None:
    tr = AirQualityTracker(capacity=2)
    ids = np.array([0, 9], dtype=np.int64)  # grows past capacity 2
    hours = []
    for h in range(1, 25):
        conc = np.array([[80, 120, 10, 40, 1.2, 150.0],
                         [20, 30, 5, 20, 0.4, NAN]])
        hours.append(tr.update_hour(T0 + h * HOUR_NS, ids, conc))
    r = hours[-1]
    assert r.period == "1h" and r.standard == 2026 and r.end_ns == T0 + 24 * HOUR_NS
    assert r.station_ids.tolist() == [0, 9] and len(r) == 2
    # Station 0: O3 8h 150 in 100→50 .. 160→100: 50 + 50/60·50 = 91.67 → 92;
    # PM2.5 80 → 119 stays the AQI.
    assert r.o3_8h[0] == 150 and r.iaqi[0, O3_8H] == 92 and r.aqi[0] == 119
    assert r.primary(0) == ["PM2.5"] and r.category[0] == 3
    # Station 9: no O3 at all; PM2.5 20 → 50/35·20 = 28.6 → 29, PM10 30 → 30: AQI 30.
    assert math.isnan(r.o3_8h[1]) and r.aqi[1] == 30 and r.primary_mask[1] == 0
    assert hours[4].o3_8h[0] != hours[4].o3_8h[0]  # 5 hours: not yet valid
    assert hours[5].o3_8h[0] == 150
    d = tr.daily(T0 + 24 * HOUR_NS, ids, np.array([[80, 120, 10, 40, 1.2, NAN],
                                                   [20, 30, 5, 20, 0.4, NAN]]))
    # Daily 2026: NO2 24h 40 → 50, CO 24h 1.2 → 30, SO2 24h 10 → 10; O3 8h max from the
    # tracker: 150 → 92; PM2.5 80 → 119.
    assert d.period == "24h" and d.o3_8h[0] == 150
    assert d.iaqi[0].tolist()[:5] == [119, 100, 10, 50, 30]
    assert math.isnan(d.iaqi[0, O3]) and d.iaqi[0, O3_8H] == 92 and d.aqi[0] == 119
    given = tr.daily(T0 + 24 * HOUR_NS, ids, np.full((2, 6), NAN), np.array([170.0, NAN]))
    assert given.aqi[0] == 110 and given.primary(0) == ["O3_8h"] and math.isnan(given.aqi[1])
    assert given.category.tolist() == [3, 0]


def test_tracker_2012_exceeding() -> None:
    tr = AirQualityTracker(standard=2012)
    r = tr.update_hour(T0, np.array([4], dtype=np.int64),
                       np.array([[80, 120, 10, 40, 1.2, 100.0]]))
    assert r.aqi[0] == 107 and r.exceeding_mask[0] == 1 and r.standard == 2012


def test_tracker_input_errors() -> None:
    tr = AirQualityTracker()
    ids = np.array([0], dtype=np.int64)
    with pytest.raises(ValueError, match="6 columns"):
        tr.update_hour(T0, ids, np.zeros((1, 7)))
    with pytest.raises(TypeError, match="astype"):
        tr.update_hour(T0, ids.astype(np.int32), np.zeros((1, 6)))
    with pytest.raises(ValueError, match=">= 0"):
        tr.update_hour(T0, np.array([-1], dtype=np.int64), np.zeros((1, 6)))
    with pytest.raises(ValueError, match="rows"):
        tr.update_hour(T0, ids, np.zeros((2, 6)))
    with pytest.raises(ValueError, match="standard must be 2012 or 2026"):
        AirQualityTracker(standard=2016)


# --------------------------------------------------------------------------------------------
# District means
# --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 30), st.integers(1, 5), st.integers(1, 7), st.data())
def test_group_mean_matches_reference(k: int, n_groups: int, c: int, data: st.DataObject
                                      ) -> None:
    vals = data.draw(st.lists(st.one_of(st.floats(0, 1000, allow_nan=False), st.just(NAN)),
                              min_size=k * c, max_size=k * c))
    groups = data.draw(st.lists(st.integers(0, n_groups - 1), min_size=k, max_size=k))
    conc = np.asarray(vals, dtype=np.float64).reshape(k, c)
    got = group_mean(conc, np.asarray(groups, dtype=np.int64), n_groups)
    want = naive.group_mean(conc.tolist(), groups, n_groups, c)
    assert got.shape == (n_groups, c)
    for g in range(n_groups):
        for j in range(c):
            assert same(got[g, j], want[g][j]) or got[g, j] == pytest.approx(want[g][j])


def test_district_aqi_averages_concentrations_first() -> None:
    # District 0 has stations with PM2.5 40 and 100 (2026 IAQI 59 and 137): the mean
    # concentration 70 gives 100 + 50/55·10 = 109.09 → 110, not the mean IAQI 98.
    conc = np.full((3, 7), NAN)
    conc[:, PM25] = [40, 100, 10]
    d = group_mean(conc, np.array([0, 0, 1], dtype=np.int64), 3)
    assert d[:, PM25].tolist()[:2] == [70, 10] and np.isnan(d[2]).all()
    aqi, _, _ = aqi_from_iaqi(iaqi(d, 2026, "24h"))
    assert aqi[0] == 110 and aqi[1] == 15 and math.isnan(aqi[2])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        group_mean(conc, np.array([0, 3, 1], dtype=np.int64), 3)


# --------------------------------------------------------------------------------------------
# Wrappers: validation and names
# --------------------------------------------------------------------------------------------


def test_wrapper_validation() -> None:
    with pytest.raises(TypeError, match="numpy array"):
        iaqi([[1.0] * 7], 2026, "1h")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="7 columns"):
        iaqi(np.zeros((2, 6)), 2026, "1h")
    with pytest.raises(TypeError, match="float64"):
        iaqi(np.zeros((2, 7), dtype=np.float32), 2026, "1h")
    with pytest.raises(ValueError, match="contiguous"):
        iaqi(np.zeros((7, 2)).T, 2026, "1h")
    with pytest.raises(ValueError, match="period"):
        iaqi(np.zeros((1, 7)), 2026, "8h")
    assert iaqi(np.zeros((0, 7)), 2012, "24h").shape == (0, 7)


def test_names() -> None:
    assert POLLUTANTS == ("pm2_5", "pm10", "so2", "no2", "co", "o3")
    assert DISPLAY_NAMES == ("PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "O3_8h")
    for name, idx in (("pm2.5", 0), ("PM2_5", 0), ("PM25", 0), ("Pm10", 1), ("SO2", 2),
                      ("no2", 3), ("Co", 4), ("O3", 5), ("o3_1h", 5), ("o3_8h", 6),
                      ("O3-8H", 6)):
        assert pollutant_index(name) == idx
    with pytest.raises(ValueError, match="unknown pollutant"):
        pollutant_index("pm1")
    assert primary_names(0b1000001) == ["PM2.5", "O3_8h"]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="citybrain")
    add_aqi_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["aqi", *argv])
    assert args.func is cmd_aqi and args.log_level  # citybrain.cli.main() reads log_level
    rc = cmd_aqi(args)
    out, err = capsys.readouterr()
    return rc, out, err


EXAMPLE = ["PM2.5=80", "PM10=120", "so2=10", "NO2=40", "CO=1.2", "O3=100"]


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(EXAMPLE, capsys)
    assert rc == 0 and err == ""
    assert "HJ 633-2026" in out and "轻度污染" in out and "Lightly polluted" in out
    assert "AQI       119" in out and "primary   PM2.5" in out
    rc, out, _ = run_cli(["--standard", "2012", *EXAMPLE], capsys)
    assert rc == 0 and "AQI       107" in out and "exceeding PM2.5" in out
    rc, out, _ = run_cli(["pm2.5=10"], capsys)
    assert rc == 0 and "优" in out and "primary   —" in out


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["--json", *EXAMPLE], capsys)
    obj = json.loads(out)
    assert rc == 0 and obj["aqi"] == 119 and obj["category"] == 3
    assert obj["category_zh"] == "轻度污染" and obj["colour"] == "#FF7E00"
    assert obj["primary"] == ["PM2.5"]
    assert obj["iaqi"] == {"PM2.5": 119, "PM10": 100, "SO2": 4, "NO2": 20, "CO": 12, "O3": 32}
    rc, out, _ = run_cli(["--json", "--standard", "2012", "--period", "24h", *EXAMPLE], capsys)
    obj = json.loads(out)
    # daily 2012: SO2 24h 10 → 10, NO2 24h 40 → 50, CO 24h 1.2 → 30; PM2.5 107 is the AQI.
    assert obj["iaqi"]["SO2"] == 10 and obj["iaqi"]["NO2"] == 50 and obj["iaqi"]["CO"] == 30
    assert obj["aqi"] == 107 and obj["exceeding"] == ["PM2.5"] and obj["period"] == "24h"


def test_cli_o3_8h(capsys: pytest.CaptureFixture[str]) -> None:
    # Hourly: the 8 h sliding mean takes part when given. O3 1h 150 → 50/160·150 = 46.9 → 47;
    # O3_8h 170 → 100 + 50/55·10 = 109.1 → 110: AQI 110, primary O3_8h.
    rc, out, _ = run_cli(["--json", "o3=150", "O3_8H=170"], capsys)
    obj = json.loads(out)
    assert rc == 0 and obj["iaqi"] == {"O3": 47, "O3_8h": 110} and obj["primary"] == ["O3_8h"]
    # 2012 with both above 800: rated by the 1 h value (O3 1h 900: 300 + 100/200·100 = 350).
    rc, out, _ = run_cli(["--json", "--standard", "2012", "o3=900", "o3_8h=900"], capsys)
    obj = json.loads(out)
    assert rc == 0 and obj["iaqi"] == {"O3": 350, "O3_8h": None} and obj["aqi"] == 350


@pytest.mark.parametrize(("argv", "msg"), [
    (["pm1=3"], "unknown pollutant"),
    (["PM2.5"], "POLLUTANT=VALUE"),
    (["=3"], "POLLUTANT=VALUE"),
    (["PM10=abc"], "not a number"),
    (["PM10=nan"], "not a finite number"),
    (["PM10=-1"], ">= 0"),
    (["PM10=1", "pm10=2"], "given twice"),
    (["--standard", "2012", "o3_8h=900"], "give O3="),
])
def test_cli_errors(argv: list[str], msg: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(argv, capsys)
    assert rc == 2 and out == "" and msg in err and err.startswith("citybrain aqi: error:")


def test_cli_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--standard", "2016", "pm10=1"], ["--period", "8h", "pm10=1"]):
        with pytest.raises(SystemExit) as e:
            run_cli(argv, capsys)
        assert e.value.code == 2
