"""hub.water (GB 3838-2002) and hub.noise (GB 3096-2008) against tests/naive_analytics.py."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.noise import (
    LIMITS,
    PERIOD_DAY,
    PERIOD_NIGHT,
    noise_daily,
    noise_exceedance,
    zone_code,
)
from hub.water import (
    BIT_DO,
    BIT_NH3N,
    BIT_PH,
    CLASS_LABELS,
    PARAMETERS,
    classify_water,
    deciding_names,
)
from tests.naive_analytics import NS, naive_noise, naive_noise_daily, naive_water, utc_ns

# --------------------------------------------------------------------------------------------
# water
# --------------------------------------------------------------------------------------------

_EDGES = {
    "ph": [6.0, 9.0, 5.999, 9.001, 7.2, 0.0, 14.0],
    "do": [7.5, 6.0, 5.0, 3.0, 2.0, 7.4999, 1.99, 0.0, 12.0],
    "codmn": [2.0, 4.0, 6.0, 10.0, 15.0, 15.01, 0.0, 2.0001],
    "nh3n": [0.15, 0.5, 1.0, 1.5, 2.0, 2.01, 0.1500001],
    "tp": [0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.41, 0.0],
}


@st.composite
def water_rows(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(0, 25))
    cols = {}
    for p in PARAMETERS:
        pick = st.one_of(st.sampled_from(_EDGES[p]), st.floats(0.0, 20.0),
                         st.sampled_from([math.nan, -1.0]))
        cols[p] = np.asarray(draw(st.lists(pick, min_size=n, max_size=n)), dtype=np.float64)
    return cols


@settings(max_examples=100, deadline=None)
@given(water_rows(), st.one_of(st.booleans(), st.just("per-station")), st.data())
def test_water_matches_reference(cols: dict[str, np.ndarray], lake: bool | str,
                                 data: st.DataObject) -> None:
    n = len(cols["ph"])
    if lake == "per-station":
        lk = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)),
                        dtype=np.bool_)
    else:
        lk = np.full(n, bool(lake))
    got = classify_water(cols["ph"], cols["do"], cols["codmn"], cols["nh3n"], cols["tp"],
                         lake=lk if lake == "per-station" else bool(lake))
    assert len(got) == n and got.param_class.shape == (n, 5)
    for i in range(n):
        ph, do, codmn, nh3n, tp = (float(cols[p][i]) for p in PARAMETERS)
        want, names, per = naive_water(ph, do, codmn, nh3n, tp, bool(lk[i]))
        assert got.klass[i] == want, (i, {p: cols[p][i] for p in PARAMETERS})
        assert deciding_names(int(got.deciding[i])) == names
        assert got.param_class[i].tolist() == per


def _one(ph: float, do: float, codmn: float, nh3n: float, tp: float,
         lake: bool = False) -> tuple[int, int]:
    a = [np.array([x]) for x in (ph, do, codmn, nh3n, tp)]
    r = classify_water(a[0], a[1], a[2], a[3], a[4], lake=lake)
    return int(r.klass[0]), int(r.deciding[0])


def test_water_examples() -> None:
    # class II by DO (6.5 mg/L) and NH3-N (0.3), the rest better
    assert _one(7.5, 6.5, 1.5, 0.3, 0.015) == (2, BIT_DO | BIT_NH3N)
    # pH out of 6-9 -> 劣V decided by pH alone
    klass, bits = _one(5.9, 8.0, 1.0, 0.1, 0.01)
    assert (klass, bits) == (6, BIT_PH) and CLASS_LABELS[klass] == "劣V"
    # a river TP of 0.04 is class II, a lake's is class III
    assert _one(7.0, 8.0, 1.0, 0.1, 0.04) == (2, 16)
    assert _one(7.0, 8.0, 1.0, 0.1, 0.04, lake=True) == (3, 16)
    # nothing measured
    nan = math.nan
    assert _one(nan, nan, nan, nan, nan) == (0, 0)
    # bounds are inclusive
    assert _one(9.0, 7.5, 2.0, 0.15, 0.02)[0] == 1


def test_water_validation() -> None:
    a = np.ones(2)
    with pytest.raises(ValueError, match="equal lengths"):
        classify_water(a, a, a, a, np.ones(3))
    with pytest.raises(TypeError, match="astype"):
        classify_water(a.astype(np.float32), a, a, a, a)
    with pytest.raises(ValueError, match="one entry per station"):
        classify_water(a, a, a, a, a, lake=np.ones(3, np.bool_))
    assert len(classify_water(*(np.empty(0),) * 5)) == 0


# --------------------------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------------------------

_BOUNDARIES = [utc_ns(2024, 5, 1, 6, 0), utc_ns(2024, 5, 1, 22, 0),
               utc_ns(1970, 1, 1, 6, 0), utc_ns(1969, 12, 31, 22, 0), 0]


@st.composite
def noise_rows(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_mon = draw(st.integers(1, 6))
    zone = np.asarray(draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 5, -1, 6]),
                                    min_size=n_mon, max_size=n_mon)), dtype=np.int8)
    n = draw(st.integers(0, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    monitor = rng.integers(0, n_mon, n).astype(np.int64)
    base = draw(st.sampled_from(_BOUNDARIES))
    span = draw(st.sampled_from([10 * NS, 3 * 86_400 * NS]))
    ts = base + rng.integers(-span, span, n)
    ts = (ts // NS * NS if draw(st.booleans()) else ts).astype(np.int64)
    if n and draw(st.booleans()):
        ts[: n // 2] = base + rng.choice([-1, 0, 1], n // 2)  # right at a period boundary
    laeq = np.round(rng.uniform(35.0, 80.0, n), 1)
    if n:
        laeq[rng.random(n) < 0.1] = np.nan
        laeq[0] = draw(st.sampled_from([50.0, 55.0, 60.0, laeq[0]]))  # exactly a limit
    return monitor, ts, laeq.astype(np.float64), zone


@settings(max_examples=120, deadline=None)
@given(noise_rows())
def test_noise_matches_reference(rows: tuple) -> None:
    monitor, ts, laeq, zone = rows
    got = noise_exceedance(monitor, ts, laeq, zone)
    want = naive_noise(monitor.tolist(), ts.tolist(), laeq.tolist(), zone.tolist())
    for i, (period, lim, exc, day) in enumerate(want):
        assert got.period[i] == (PERIOD_DAY if period == "day" else PERIOD_NIGHT), i
        assert got.noise_day[i] == day
        assert (got.limit[i] == lim) or (math.isnan(lim) and math.isnan(got.limit[i]))
        assert (got.exceedance[i] == exc) or (math.isnan(exc) and math.isnan(got.exceedance[i]))
    daily = noise_daily(monitor, got)
    want_daily = naive_noise_daily(monitor.tolist(), want)
    keys = list(zip(daily.monitor.tolist(), daily.noise_day.tolist(), strict=True))
    assert keys == sorted(want_daily, key=lambda k: (k[1], k[0]))
    for j, key in enumerate(keys):
        w = want_daily[key]
        for c in ("n_day", "n_day_exceed", "n_night", "n_night_exceed"):
            assert getattr(daily, c)[j] == w[c], (key, c)
        for c in ("max_day", "max_night"):
            g = getattr(daily, c)[j]
            assert g == w[c] or (math.isnan(g) and math.isnan(w[c])), (key, c)


def test_noise_periods_in_chongqing_time() -> None:
    ts = np.array([utc_ns(2024, 5, 1, 5, 59), utc_ns(2024, 5, 1, 6, 0),
                   utc_ns(2024, 5, 1, 21, 59), utc_ns(2024, 5, 1, 22, 0),
                   utc_ns(2024, 5, 2, 3, 0)], dtype=np.int64)
    zone = np.array([zone_code("4a")], np.int8)
    r = noise_exceedance(np.zeros(5, np.int64), ts, np.full(5, 60.0), zone)
    assert r.period.tolist() == [1, 0, 0, 1, 1]
    assert r.limit.tolist() == [55.0, 70.0, 70.0, 55.0, 55.0]
    assert r.exceedance.tolist() == [5.0, -10.0, -10.0, 5.0, 5.0]
    # 05:59 belongs to the night of April 30; 03:00 on May 2 to the night of May 1
    may1 = (date(2024, 5, 1) - date(1970, 1, 1)).days
    assert r.noise_day.tolist() == [may1 - 1, may1, may1, may1, may1]
    d = noise_daily(np.zeros(5, np.int64), r)
    assert d.noise_day.tolist() == [may1 - 1, may1]
    assert (d.n_day.tolist(), d.n_night.tolist(), d.n_night_exceed.tolist()) == (
        [0, 2], [1, 2], [1, 2])
    assert np.isnan(d.max_day[0]) and d.max_night[1] == 5.0


def test_noise_settings_and_validation() -> None:
    ts = np.array([utc_ns(2024, 5, 1, 6, 30)], np.int64)
    zone = np.array([1], np.int8)
    lim = LIMITS.copy()
    lim[0, 1] = 50.0
    assert noise_exceedance(np.zeros(1, np.int64), ts, np.array([52.0]), zone,
                            limits=lim).exceedance.tolist() == [2.0]
    # with the day starting at 07:00, 06:30 is night
    r = noise_exceedance(np.zeros(1, np.int64), ts, np.array([52.0]), zone,
                         day_start_s=7 * 3600)
    assert r.period.tolist() == [PERIOD_NIGHT] and r.limit.tolist() == [45.0]
    with pytest.raises(ValueError, match="monitor_zone"):
        noise_exceedance(np.array([3], np.int64), ts, np.array([52.0]), zone)
    with pytest.raises(ValueError, match="zone"):
        zone_code("5")
    with pytest.raises(TypeError, match="int8"):
        noise_exceedance(np.zeros(1, np.int64), ts, np.array([52.0]), zone.astype(np.int64))
    assert len(noise_exceedance(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0),
                                zone)) == 0
