"""Signal models: daily and seasonal shapes, ranges, precision, and the random stream."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim import signals as sig
from seeds.city import catalogue_by_kind

#: 2025-11-17 00:00 in Chongqing (UTC+8), a Monday in late autumn.
NOV_MIDNIGHT = datetime(2025, 11, 16, 16, 0, tzinfo=UTC).timestamp()
JUL_MIDNIGHT = datetime(2025, 7, 18, 16, 0, tzinfo=UTC).timestamp()
JAN_MIDNIGHT = datetime(2025, 1, 14, 16, 0, tzinfo=UTC).timestamp()


def stream(seed: int) -> sig.Stream:
    return sig.Stream(np.random.default_rng(seed))


def at_hour(midnight: float, day: int, hour: float) -> float:
    return midnight + day * sig.DAY_S + hour * 3600.0


def mean_at(hour: float, fn: Callable[[float, sig.Stream], float], *, days: int = 10,
            sites: int = 20, midnight: float = NOV_MIDNIGHT) -> float:
    """Mean of ``fn(t, stream)`` at local ``hour`` over several days and sites."""
    vals = []
    for site in range(sites):
        rng = stream(site)
        vals += [fn(at_hour(midnight, d, hour), rng) for d in range(days)]
    return statistics.fmean(vals)


# -- time of day -------------------------------------------------------------------------------
def test_local_hour_is_utc_plus_8() -> None:
    assert sig.local_hour(NOV_MIDNIGHT) == pytest.approx(0.0)
    assert sig.local_hour(NOV_MIDNIGHT + 18 * 3600 + 1800) == pytest.approx(18.5)
    assert sig.minute_of_day(NOV_MIDNIGHT + 7 * 3600 + 59 * 60 + 59) == 7 * 60 + 59
    assert sig.local_midnight(NOV_MIDNIGHT + 12345.0) == pytest.approx(NOV_MIDNIGHT)


def test_season_peaks_in_july_and_bottoms_in_january() -> None:
    assert sig.seasonal(JUL_MIDNIGHT) > 0.99
    assert sig.seasonal(JAN_MIDNIGHT) < -0.99


@pytest.mark.parametrize(("table", "fn"), [
    (sig.TRAFFIC, sig.traffic), (sig.SERVICE, sig.service), (sig.DAYNESS, sig.dayness),
    (sig.PARKING_DEMAND, sig.parking_demand), (sig.AI_EVENT_RATE, sig.ai_event_relative_rate)])
def test_profile_tables_match_their_functions(table: tuple[float, ...],
                                              fn: Callable[[float], float]) -> None:
    assert len(table) == 1440
    for minute in range(0, 1440, 7):
        assert table[minute] == pytest.approx(fn((minute + 0.5) / 60.0))


def test_traffic_has_morning_and_evening_rush_and_quiet_nights() -> None:
    assert sig.traffic(8.0) > 0.9 and sig.traffic(18.0) > 0.9
    assert sig.traffic(3.0) < 0.2
    assert sig.traffic(13.0) < sig.traffic(8.0)


def test_rate_profiles_average_one_over_a_day() -> None:
    for fn in (sig.parking_demand, sig.residential_demand, sig.residential_departure,
               sig.ai_event_relative_rate):
        assert statistics.fmean(fn(m / 60.0) for m in range(1440)) == pytest.approx(1.0, rel=1e-3)


# -- shapes of the signals ----------------------------------------------------------------------
def test_noise_is_lower_at_3am_than_at_6pm() -> None:
    sites = [sig.NoiseSite.draw(stream(100 + i)) for i in range(20)]

    def laeq(t: float, rng: sig.Stream) -> float:
        return statistics.fmean(sig.noise(t, s, rng)[0] for s in sites)

    night, evening = mean_at(3.0, laeq, sites=3), mean_at(18.0, laeq, sites=3)
    assert evening - night > 5.0, (night, evening)


def test_lmax_is_never_below_laeq() -> None:
    site = sig.NoiseSite.draw(stream(1))
    rng = stream(2)
    for k in range(500):
        laeq, lmax = sig.noise(NOV_MIDNIGHT + 600.0 * k, site, rng)
        assert lmax >= laeq + 6.0 - 0.1


def test_traffic_pollutants_peak_at_rush_hour_and_o3_in_the_afternoon() -> None:
    regional = sig.Drift.draw(stream(7), sig.DAY_S, 10 * sig.DAY_S)
    site = sig.AirSite.draw(stream(8), regional)

    def channel(i: int) -> Callable[[float, sig.Stream], float]:
        return lambda t, rng: sig.air(t, site, rng)[i]

    no2, o3, temp = channel(3), channel(5), channel(6)
    assert mean_at(8.0, no2) > 1.4 * mean_at(3.0, no2)
    assert mean_at(18.0, no2) > 1.4 * mean_at(3.0, no2)
    assert mean_at(15.0, o3, midnight=JUL_MIDNIGHT) > 3.0 * mean_at(6.0, o3, midnight=JUL_MIDNIGHT)
    assert mean_at(15.0, temp) > mean_at(5.0, temp) + 4.0
    assert mean_at(15.0, temp, midnight=JUL_MIDNIGHT) > mean_at(15.0, temp, midnight=JAN_MIDNIGHT)


def test_pm25_is_higher_in_winter() -> None:
    regional = sig.Drift.draw(stream(9), sig.DAY_S, 10 * sig.DAY_S)
    sites = [sig.AirSite.draw(stream(10 + i), regional) for i in range(10)]

    def pm(t: float, rng: sig.Stream) -> float:
        return statistics.fmean(sig.air(t, s, rng)[0] for s in sites)

    winter = statistics.fmean(mean_at(h, pm, midnight=JAN_MIDNIGHT, sites=2) for h in (3, 9, 15))
    summer = statistics.fmean(mean_at(h, pm, midnight=JUL_MIDNIGHT, sites=2) for h in (3, 9, 15))
    assert winter > 1.5 * summer
    assert 15.0 < summer < 45.0 < winter < 110.0  # Chongqing: ~20–30 summer, ~50–80 winter


def test_kitchen_cycles_follow_service_hours() -> None:
    site = sig.KitchenSite.draw(stream(11))

    def ch(i: int) -> Callable[[float, sig.Stream], float]:
        return lambda t, rng: sig.kitchen(t, site, rng)[i]

    prep, gas, co, fume = ch(1), ch(3), ch(4), ch(5)
    for f in (prep, gas, co, fume):
        assert mean_at(12.25, f, sites=2) > mean_at(16.0, f, sites=2)
        assert mean_at(18.6, f, sites=2) > mean_at(3.0, f, sites=2)


def test_cold_room_holds_setpoint_except_defrost() -> None:
    for seed in range(20):
        site = sig.KitchenSite.draw(stream(seed))
        rng = stream(1000 + seed)
        temps = [sig.kitchen(NOV_MIDNIGHT + 60.0 * k, site, rng)[0] for k in range(1440)]
        median = statistics.median(temps)
        assert abs(median - site.cold_setpoint) < 1.0
        # A defrost cycle happened (6 or 8 h period) and pushed the room up by degrees.
        assert max(temps) > site.cold_setpoint + 2.0
        if site.frozen:
            assert median < -10.0
        else:
            assert 0.0 <= median <= 10.0


def test_uv_minutes_accumulate_through_the_day_and_reset_at_midnight() -> None:
    sessions = ((5.5, 45.0), (21.5, 20.0))
    assert sig.uv_minutes_today(at_hour(NOV_MIDNIGHT, 0, 5.0), sessions) == 0.0
    assert sig.uv_minutes_today(at_hour(NOV_MIDNIGHT, 0, 6.0), sessions) == pytest.approx(30.0)
    assert sig.uv_minutes_today(at_hour(NOV_MIDNIGHT, 0, 12.0), sessions) == pytest.approx(45.0)
    assert sig.uv_minutes_today(at_hour(NOV_MIDNIGHT, 0, 23.9), sessions) == pytest.approx(65.0)
    assert sig.uv_minutes_today(at_hour(NOV_MIDNIGHT, 1, 0.1), sessions) == 0.0
    prev = -1.0
    for k in range(24 * 12):
        v = sig.uv_minutes_today(NOV_MIDNIGHT + 300.0 * k, sessions)
        assert v >= prev
        prev = v


def test_most_kitchens_meet_the_30_minute_uv_requirement() -> None:
    daily = [sum(m for _, m in sig.KitchenSite.draw(stream(s)).uv_sessions) for s in range(400)]
    short = sum(1 for d in daily if d < 30.0) / len(daily)
    assert 0.05 < short < 0.2


def test_water_stations_are_mostly_class_ii_to_iii() -> None:
    classes = []
    for seed in range(300):
        site = sig.WaterSite.draw(stream(seed))
        v = sig.water(at_hour(NOV_MIDNIGHT, 0, 10.0), site, stream(seed + 5000))
        params = {"do": v[1], "codmn": v[2], "nh3n": v[3], "tp": v[4]}
        classes.append(max(sig.water_class(p, x) for p, x in params.items()))
    share_ii_iii = sum(1 for c in classes if c in (2, 3)) / len(classes)
    worse = sum(1 for c in classes if c >= 4) / len(classes)
    assert share_ii_iii > 0.5
    assert 0.05 < worse < 0.45


def test_water_quality_drifts_slowly() -> None:
    site = sig.WaterSite.draw(stream(3))
    rng = stream(4)
    codmn = [sig.water(NOV_MIDNIGHT + 600.0 * k, site, rng)[2] for k in range(6 * 24 * 14)]
    steps = [abs(b - a) for a, b in itertools.pairwise(codmn)]
    # Consecutive 10-minute samples differ by noise only; over two weeks the level moves.
    assert statistics.fmean(steps) < 0.15 * statistics.fmean(codmn)
    assert max(codmn) - min(codmn) > 3.0 * statistics.fmean(steps)


@pytest.mark.parametrize(("q", "param", "expected"), [
    (1.0, "codmn", 2.0), (2.0, "codmn", 4.0), (3.0, "nh3n", 1.0), (5.0, "tp", 0.4),
    (2.0, "do", 6.0), (2.5, "do", 5.5)])
def test_class_value_hits_the_gb3838_boundaries(q: float, param: str, expected: float) -> None:
    assert sig.class_value(q, param) == pytest.approx(expected)


def test_water_class_of_values() -> None:
    assert sig.water_class("codmn", 3.9) == 2
    assert sig.water_class("do", 7.6) == 1
    assert sig.water_class("do", 4.0) == 4
    assert sig.water_class("nh3n", 2.5) == 6


def test_drift_stays_within_unit_range() -> None:
    d = sig.Drift.draw(stream(5), 3600.0, 10 * sig.DAY_S)
    vals = [d(NOV_MIDNIGHT + 1234.5 * k) for k in range(5000)]
    assert all(-1.0 <= v <= 1.0 for v in vals)
    assert max(vals) - min(vals) > 0.5


# -- ranges and precision ------------------------------------------------------------------------
def _decimals(x: float) -> int:
    text = repr(x)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


@settings(max_examples=150, deadline=None)
@given(t=st.floats(min_value=946_684_800.0, max_value=4_102_444_800.0),  # years 2000–2100
       seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_signals_stay_in_catalogue_ranges_at_the_reported_precision(t: float, seed: int) -> None:
    rng = stream(seed)
    regional = sig.Drift.draw(rng, sig.DAY_S, 10 * sig.DAY_S)
    outputs = {
        "air": sig.air(t, sig.AirSite.draw(rng, regional), rng),
        "water": sig.water(t, sig.WaterSite.draw(rng), rng),
        "noise": sig.noise(t, sig.NoiseSite.draw(rng), rng),
        "kitchen": sig.kitchen(t, sig.KitchenSite.draw(rng), rng),
        "bay": [sig.battery_reading(3.6, t, rng)],
    }
    cat = catalogue_by_kind()
    for kind, values in outputs.items():
        for ch, v in zip(sig.channels(kind), values, strict=True):
            m = cat[kind][ch.name]
            assert m.min <= v <= m.max, (kind, ch.name, v)
            assert math.isfinite(v)
            assert _decimals(v) <= ch.decimals, (kind, ch.name, v)


def test_channels_follow_the_catalogue() -> None:
    cat = catalogue_by_kind()
    for kind, names in sig.CHANNELS.items():
        chans = sig.channels(kind)
        assert tuple(c.name for c in chans) == names
        for c in chans:
            assert c.unit == cat[kind][c.name].unit
            assert (c.lo, c.hi) == (cat[kind][c.name].min, cat[kind][c.name].max)


def test_channel_clean_clamps_and_rounds() -> None:
    pm = sig.channels("air")[0]
    assert pm.clean(-3.0) == 0.0
    assert pm.clean(5000.0) == 1000.0
    assert pm.clean(12.3456) == 12.3
    free = sig.channels("lot")[2]
    assert free.clean(12.7) == 12 and isinstance(free.clean(12.7), int)
    assert sig.clean_all("air", [12.3456] * 8)[4] == 12.346  # CO to 3 decimals


# -- the random stream ------------------------------------------------------------------------
def test_stream_is_a_deterministic_function_of_seed_and_requests() -> None:
    def draw(s: sig.Stream) -> list[float]:
        out: list[float] = []
        for k in range(200):
            out += s.uniforms(k % 7 + 1) + s.normals(k % 5 + 1)
            out += [s.uniform(), s.normal()]
        out += s.uniforms(100) + s.normals(70)  # larger than a block
        return out

    a, b, c = draw(stream(42)), draw(stream(42)), draw(stream(43))
    assert a == b
    assert a != c


def test_stream_uniforms_and_normals_look_right() -> None:
    s = stream(1)
    u = s.uniforms(20_000)
    z = s.normals(20_000)
    assert all(0.0 <= x < 1.0 for x in u)
    assert statistics.fmean(u) == pytest.approx(0.5, abs=0.01)
    assert statistics.fmean(z) == pytest.approx(0.0, abs=0.03)
    assert statistics.pstdev(z) == pytest.approx(1.0, abs=0.03)


def test_ai_event_names_are_catalogue_events_and_rodents_at_night() -> None:
    from seeds.city import AI_EVENTS
    day = [sig.ai_event_name(12.0, k / 1000.0) for k in range(1000)]
    night = [sig.ai_event_name(3.0, k / 1000.0) for k in range(1000)]
    assert set(day) == set(AI_EVENTS)
    assert night.count("rodent") > 800
