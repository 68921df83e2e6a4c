"""hub.kitchen alarm engine against the dictionary model in tests/naive_analytics.py."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.kitchen import (
    A_AI_RODENT,
    A_AI_SMOKING,
    A_COLD_ROOM,
    A_FUME,
    A_GAS_LEAK,
    A_PREP_ROOM,
    A_UV_SHORT,
    ALARM_NAMES_EN,
    ALARM_NAMES_ZH,
    M_AI_EVENT,
    M_COLD_TEMP,
    M_FUME,
    M_GAS,
    M_HUMIDITY,
    M_PREP_TEMP,
    M_UV_MINUTES,
    MEASUREMENTS,
    N_ALARM_TYPES,
    ST_CLEARED,
    ST_ONGOING,
    ST_RAISED,
    KitchenAlarms,
    KitchenConfig,
    measurement_code,
)
from tests.naive_analytics import NS, NaiveKitchen, utc_ns

MIN = 60 * NS
T0 = utc_ns(2024, 5, 1, 20, 0)  # 20:00 in Chongqing: a local midnight comes soon


def _naive(cfg: KitchenConfig, n: int, start_ns: int | None = None) -> NaiveKitchen:
    return NaiveKitchen(
        n_restaurants=n,
        lo={0: cfg.cold_min_c, 1: -math.inf, 2: -math.inf, 3: -math.inf},
        hi={0: cfg.cold_max_c, 1: cfg.prep_max_c, 2: cfg.gas_max_lel_pct,
            3: cfg.fume_limit_mg_m3},
        min_dur={0: int(cfg.cold_min_duration_s * NS), 1: int(cfg.prep_min_duration_s * NS),
                 2: int(cfg.gas_min_duration_s * NS), 3: int(cfg.fume_min_duration_s * NS)},
        ongoing_ns=None if cfg.ongoing_interval_s is None else int(cfg.ongoing_interval_s * NS),
        uv_min=cfg.uv_min_minutes, uv_cumulative=cfg.uv_cumulative,
        ai_max=cfg.ai_max_per_day, tz_ns=cfg.tz_offset_s * NS,
        clear_ns=int(cfg.clear_min_duration_s * NS),
        day=None if start_ns is None else (start_ns + cfg.tz_offset_s * NS) // (86_400 * NS))


def _values(rng: np.random.Generator, code: np.ndarray) -> np.ndarray:
    n = code.shape[0]
    by_code = [
        np.round(rng.uniform(-3.0, 13.0, n), 1),  # cold room: 0..10 compliant
        np.round(rng.uniform(22.0, 28.0, n), 1),  # prep room: <= 25
        rng.uniform(30.0, 90.0, n),  # humidity: no rule
        rng.choice([0.0, 2.0, 10.0, 12.0, 30.0], n),  # gas: <= 10
        rng.uniform(0.0, 50.0, n),  # co: no rule
        np.round(rng.uniform(0.2, 2.5, n), 1),  # fume: <= 1.0 / 2.0
        rng.choice([0.0, 5.0, 10.0, 15.0, 30.0, -1.0], n),  # UV minutes
        rng.choice([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 7.0, 2.5], n),  # AI event codes
    ]
    v = np.choose(code, by_code)
    v[rng.random(n) < 0.05] = np.nan
    return v.astype(np.float64)


@st.composite
def kitchen_batch(draw: st.DrawFn, t0: int, n_rest: int) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(0, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rest = rng.integers(0, n_rest, n).astype(np.int64)
    step = draw(st.sampled_from([2 * MIN, 20 * MIN, 90 * MIN]))
    steps = rng.integers(0, step, n)
    steps[rng.random(n) < draw(st.sampled_from([0.0, 0.1]))] = -3 * step  # late readings
    ts = (t0 + np.cumsum(steps)).astype(np.int64)
    focus = draw(st.sampled_from(["all", "range", "daily"]))
    if focus == "range":
        code = rng.choice([M_COLD_TEMP, M_PREP_TEMP, M_GAS, M_FUME], n)
    elif focus == "daily":
        code = rng.choice([M_UV_MINUTES, M_AI_EVENT], n)
    else:
        code = rng.integers(0, len(MEASUREMENTS), n)
    dtype = draw(st.sampled_from([np.int8, np.int64]))
    return rest, ts, code.astype(dtype), _values(rng, code)


@st.composite
def configs(draw: st.DrawFn) -> KitchenConfig:
    return KitchenConfig(
        cold_min_duration_s=draw(st.sampled_from([0.0, 600.0, 1800.0])),
        prep_min_duration_s=draw(st.sampled_from([0.0, 900.0])),
        gas_min_duration_s=draw(st.sampled_from([0.0, 60.0])),
        fume_limit_mg_m3=draw(st.sampled_from([1.0, 2.0])),
        fume_min_duration_s=draw(st.sampled_from([0.0, 600.0])),
        clear_min_duration_s=draw(st.sampled_from([0.0, 300.0, 1800.0])),
        uv_cumulative=draw(st.booleans()),
        ai_max_per_day=tuple(draw(st.lists(st.integers(0, 3), min_size=6, max_size=6))),
        ongoing_interval_s=draw(st.sampled_from([None, 0.0, 1200.0])),
    )


@settings(max_examples=120, deadline=None)
@given(st.data(), configs())
def test_alarms_match_reference(data: st.DataObject, cfg: KitchenConfig) -> None:
    n_rest = data.draw(st.integers(1, 5), label="restaurants")
    start = data.draw(st.sampled_from([None, T0]), label="start_ns")
    eng = KitchenAlarms(data.draw(st.integers(0, 2)), cfg, start_ns=start)
    ref = _naive(cfg, eng.n_restaurants, start)
    if data.draw(st.booleans(), label="frozen room"):
        eng.set_range(np.array([0], np.int64), A_COLD_ROOM, -20.0, -1.0)
        ref.overrides[(0, A_COLD_ROOM)] = (-20.0, -1.0)
    clock = T0
    for _ in range(data.draw(st.integers(1, 6), label="steps")):
        if data.draw(st.integers(0, 4)) == 0:
            now = clock + data.draw(st.sampled_from([0, 3600 * NS, 86_400 * NS]))
            got_t = eng.day_end(now)
            want_t = ref.day_end(now)
            clock = now
        else:
            rest, ts, code, value = data.draw(kitchen_batch(clock, n_rest))
            up = eng.update(rest, ts, code, value)
            want_t, cnt = ref.update(list(zip(rest.tolist(), ts.tolist(), code.tolist(),
                                              value.tolist(), strict=True)))
            assert [up.n_applied, up.n_nan, up.n_invalid, up.n_late, up.n_ignored] == cnt
            assert sum(cnt) == len(rest)
            got_t = up.transitions
            if len(ts):
                clock = max(clock, int(ts.max()))
        assert got_t.rows() == want_t
        assert eng.current_day == ref.day
    open_rows = eng.open_alarms()
    assert sorted(zip(open_rows.restaurant.tolist(), open_rows.alarm_type.tolist(),
                      open_rows.raised_ts_ns.tolist(), open_rows.peak.tolist(),
                      strict=True)) == sorted((r, a, al.raised, al.peak)
                                              for (r, a), al in ref.open.items())


# --------------------------------------------------------------------------------------------
# lifecycle, one rule at a time
# --------------------------------------------------------------------------------------------


def _feed(eng: KitchenAlarms, rows: list[tuple[int, int, int, float]]) -> list[tuple]:
    r, t, c, v = (list(x) for x in zip(*rows, strict=True))
    up = eng.update(np.array(r, np.int64), np.array(t, np.int64), np.array(c, np.int8),
                    np.array(v, np.float64))
    return [(a, s, ts, val) for _, a, s, ts, val, _, _ in up.transitions.rows()]


def test_cold_room_lifecycle_is_deduplicated() -> None:
    eng = KitchenAlarms(1, KitchenConfig(ongoing_interval_s=600.0, clear_min_duration_s=0.0),
                        start_ns=T0)
    rows = [(0, T0 + k * 5 * MIN, M_COLD_TEMP, 12.0) for k in range(10)]  # 45 min too warm
    rows.append((0, T0 + 50 * MIN, M_COLD_TEMP, 4.0))
    got = _feed(eng, rows)
    # raised 30 min after the first violating reading, ongoing every 10 min, cleared once
    assert got == [(A_COLD_ROOM, ST_RAISED, T0 + 30 * MIN, 12.0),
                   (A_COLD_ROOM, ST_ONGOING, T0 + 40 * MIN, 12.0),
                   (A_COLD_ROOM, ST_CLEARED, T0 + 50 * MIN, 4.0)]
    # a short excursion does not raise
    assert _feed(eng, [(0, T0 + 60 * MIN, M_COLD_TEMP, 11.0),
                       (0, T0 + 70 * MIN, M_COLD_TEMP, 9.0)]) == []


def test_instant_rules_and_the_chongqing_fume_limit() -> None:
    assert KitchenConfig().fume_limit_mg_m3 == 1.0
    assert KitchenConfig.national().fume_limit_mg_m3 == 2.0
    # gas is immediate by default; fume only when configured so (default: 10 min sustained)
    assert KitchenConfig().gas_min_duration_s == 0.0
    assert KitchenConfig().fume_min_duration_s == 600.0
    rows = [(0, T0, M_FUME, 1.5), (0, T0 + MIN, M_GAS, 25.0), (0, T0 + 2 * MIN, M_GAS, 5.0),
            (0, T0 + 3 * MIN, M_PREP_TEMP, 26.0), (0, T0 + 4 * MIN, M_HUMIDITY, 99.0)]
    old = KitchenConfig(fume_min_duration_s=0.0, clear_min_duration_s=0.0)  # as before
    eng = KitchenAlarms(1, old)
    assert _feed(eng, rows) == [(A_FUME, ST_RAISED, T0, 1.5),
                                (A_GAS_LEAK, ST_RAISED, T0 + MIN, 25.0),
                                (A_GAS_LEAK, ST_CLEARED, T0 + 2 * MIN, 5.0)]
    national = dataclasses.replace(old, fume_limit_mg_m3=2.0)
    assert _feed(KitchenAlarms(1, national), rows)[0][0] == A_GAS_LEAK
    op = eng.open_alarms()
    assert op.alarm_type.tolist() == [A_FUME]  # prep room pending: 15 min not yet over
    # defaults: the gas leak raises at once but stays open (5 min compliant to clear)
    eng = KitchenAlarms(1)
    assert _feed(eng, rows) == [(A_GAS_LEAK, ST_RAISED, T0 + MIN, 25.0)]
    assert eng.open_alarms().alarm_type.tolist() == [A_GAS_LEAK]


# --------------------------------------------------------------------------------------------
# fume: sustained exceedance, clear hysteresis (the flapping of a city run: one alarm a
# minute, raised and cleared, for readings hovering around the 1.0 mg/m³ limit)
# --------------------------------------------------------------------------------------------


def _fume(t0: int, values: list[float], step: int = MIN) -> list[tuple[int, int, int, float]]:
    return [(0, t0 + k * step, M_FUME, v) for k, v in enumerate(values)]


def _states(got: list[tuple]) -> list[int]:
    return [s for _, s, _, _ in got]


def test_alternating_fume_raises_nothing() -> None:
    eng = KitchenAlarms(1, start_ns=T0)
    got = _feed(eng, _fume(T0, [1.5, 0.8] * 180))  # 6 h, one reading a minute
    assert got == [] and len(eng.open_alarms()) == 0
    # the same series with the old settings: an alarm raised and cleared every 2 minutes
    old = KitchenAlarms(1, KitchenConfig(fume_min_duration_s=0.0, clear_min_duration_s=0.0),
                        start_ns=T0)
    got = _feed(old, _fume(T0, [1.5, 0.8] * 180))
    assert _states(got) == [ST_RAISED, ST_CLEARED] * 180


def test_sustained_fume_raises_once() -> None:
    eng = KitchenAlarms(1, KitchenConfig(ongoing_interval_s=None), start_ns=T0)
    # 9 min above, one compliant reading, then 15 min above: raised 10 min into the second run
    values = [1.4] * 10 + [0.9] + [1.2] * 16
    got = _feed(eng, _fume(T0, values))
    assert got == [(A_FUME, ST_RAISED, T0 + 21 * MIN, 1.2)]
    op = eng.open_alarms()
    assert op.raised_ts_ns.tolist() == [T0 + 21 * MIN] and op.peak.tolist() == [1.2]


def test_one_compliant_reading_does_not_clear_an_open_alarm() -> None:
    eng = KitchenAlarms(1, KitchenConfig(ongoing_interval_s=None), start_ns=T0)
    got = _feed(eng, _fume(T0, [2.0] * 11))
    assert got == [(A_FUME, ST_RAISED, T0 + 10 * MIN, 2.0)]
    # dips below the limit for up to 4 minutes at a time: still the same alarm
    t1 = T0 + 11 * MIN
    assert _feed(eng, _fume(t1, [0.5, 1.3, 0.5, 0.6, 0.7, 0.4, 0.3, 1.1, 2.5])) == []
    op = eng.open_alarms()
    assert op.raised_ts_ns.tolist() == [T0 + 10 * MIN] and op.peak.tolist() == [2.5]


def test_compliant_for_clear_min_duration_clears_once() -> None:
    cfg = KitchenConfig(ongoing_interval_s=None, clear_min_duration_s=300.0)
    eng = KitchenAlarms(1, cfg, start_ns=T0)
    _feed(eng, _fume(T0, [3.0] * 11))
    t1 = T0 + 11 * MIN
    # compliant from t1: cleared by the reading 5 min later, stamped with it and its value
    got = _feed(eng, _fume(t1, [0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.3, 0.2]))
    assert got == [(A_FUME, ST_CLEARED, t1 + 5 * MIN, 0.4)]
    assert len(eng.open_alarms()) == 0
    # a gap does not break the clear-pending interval; a violating reading restarts it
    eng = KitchenAlarms(1, cfg, start_ns=T0)
    _feed(eng, _fume(T0, [3.0] * 11))
    assert _feed(eng, [(0, t1, M_FUME, 0.5), (0, t1 + 4 * MIN, M_FUME, 1.5),
                       (0, t1 + 5 * MIN, M_FUME, 0.5), (0, t1 + 9 * MIN, M_FUME, 0.5)]) == []
    assert _feed(eng, [(0, t1 + 10 * MIN, M_FUME, 0.6)]) == [
        (A_FUME, ST_CLEARED, t1 + 10 * MIN, 0.6)]
    # the cold room too (one hysteresis for the four threshold rules)
    eng = KitchenAlarms(1, cfg, start_ns=T0)
    rows = [(0, T0 + k * 5 * MIN, M_COLD_TEMP, 12.0) for k in range(7)]
    rows += [(0, T0 + (35 + k) * MIN, M_COLD_TEMP, 4.0) for k in range(6)]
    assert _feed(eng, rows) == [(A_COLD_ROOM, ST_RAISED, T0 + 30 * MIN, 12.0),
                                (A_COLD_ROOM, ST_CLEARED, T0 + 40 * MIN, 4.0)]


def test_uv_is_evaluated_at_local_day_end() -> None:
    eng = KitchenAlarms(2, start_ns=T0)
    day1_end = utc_ns(2024, 5, 2)
    got = _feed(eng, [(0, T0, M_UV_MINUTES, 20.0), (1, T0, M_UV_MINUTES, 25.0),
                      (1, T0 + MIN, M_UV_MINUTES, 10.0)])
    assert got == []
    assert eng.day_end(day1_end - 1).rows() == []  # not yet
    t = eng.day_end(day1_end)
    assert [(r, a, s, ts, v) for r, a, s, ts, v, _, _ in t.rows()] == [
        (0, A_UV_SHORT, ST_RAISED, day1_end, 20.0)]
    # next day: still short -> ongoing (same alarm); restaurant 1 silent all day: 0 minutes
    day2_end = utc_ns(2024, 5, 3)
    t2 = _feed(eng, [(0, day1_end + MIN, M_UV_MINUTES, 29.0),
                     (0, day2_end + MIN, M_UV_MINUTES, 31.0)])  # crossing midnight: day 2 ends
    assert t2 == [(A_UV_SHORT, ST_ONGOING, day2_end, 29.0),
                  (A_UV_SHORT, ST_RAISED, day2_end, 0.0)]
    # the day after: restaurant 0 did enough -> cleared; restaurant 1 still short
    end3 = utc_ns(2024, 5, 4)
    assert eng.day_end(end3).rows() == [(0, A_UV_SHORT, ST_CLEARED, end3, 31.0, 20.0, day1_end),
                                        (1, A_UV_SHORT, ST_ONGOING, end3, 0.0, 0.0, day2_end)]
    assert eng.current_day == eng.local_day(end3)


def test_ai_events_counted_per_day() -> None:
    eng = KitchenAlarms(1, KitchenConfig(ai_max_per_day=(3, 3, 0, 3, 0, 0),
                                         ongoing_interval_s=0.0), start_ns=T0)
    rows = [(0, T0 + k * MIN, M_AI_EVENT, 3.0) for k in range(2)]  # smoking: any
    rows += [(0, T0 + 5 * MIN, M_AI_EVENT, 1.0)] * 3  # no hat: 3 allowed
    rows += [(0, T0 + 6 * MIN, M_AI_EVENT, 9.0)]  # invalid code
    got = _feed(eng, rows)
    assert got == [(A_AI_SMOKING, ST_RAISED, T0, 1.0),
                   (A_AI_SMOKING, ST_ONGOING, T0 + MIN, 2.0)]
    assert eng.ai_counts()[0].tolist() == [3, 0, 2, 0, 0, 0]
    got = _feed(eng, [(0, T0 + 10 * MIN, M_AI_EVENT, 5.0)])
    assert got == [(A_AI_RODENT, ST_RAISED, T0 + 10 * MIN, 1.0)]
    end = utc_ns(2024, 5, 2)
    cleared = eng.day_end(end)
    assert [(a, s, v) for _, a, s, _, v, _, _ in cleared.rows()] == [
        (A_AI_SMOKING, ST_CLEARED, 2.0), (A_AI_RODENT, ST_CLEARED, 1.0)]
    assert eng.ai_counts().sum() == 0 and len(eng.open_alarms()) == 0


def test_names_codes_and_validation() -> None:
    assert len(ALARM_NAMES_EN) == len(ALARM_NAMES_ZH) == N_ALARM_TYPES
    assert ALARM_NAMES_ZH[A_PREP_ROOM] == "专间温度超标"
    assert measurement_code("uv_minutes") == M_UV_MINUTES
    with pytest.raises(ValueError, match="unknown kitchen measurement"):
        measurement_code("pm2_5")
    eng = KitchenAlarms(1)
    with pytest.raises(ValueError, match="measurement codes"):
        eng.update(np.zeros(1, np.int64), np.array([T0]), np.array([8], np.int8),
                   np.ones(1))
    with pytest.raises(TypeError, match="int8 or int64"):
        eng.update(np.zeros(1, np.int64), np.array([T0]), np.array([1], np.int32),
                   np.ones(1))
    with pytest.raises(ValueError, match="threshold rule"):
        eng.set_range(np.zeros(1, np.int64), A_UV_SHORT, 0.0, 1.0)
    with pytest.raises(ValueError, match="ai_max_per_day"):
        KitchenConfig(ai_max_per_day=(1, 2))
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="clear_min_duration_s must be >= 0"):
            KitchenConfig(clear_min_duration_s=bad)
    up = eng.update(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int8),
                    np.empty(0))
    assert len(up.transitions) == 0
    # ids grow
    eng.update(np.array([9], np.int64), np.array([T0]), np.array([M_GAS], np.int8),
               np.array([50.0]))
    assert eng.n_restaurants == 10 and eng.open_alarms().restaurant.tolist() == [9]
