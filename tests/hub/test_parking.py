"""hub.parking against tests/naive_analytics.py."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.parking import (
    BATTERY_CRITICAL,
    BATTERY_LOW,
    BATTERY_NORMAL,
    BATTERY_UNKNOWN,
    EVENT_ARRIVAL,
    EVENT_DEPARTURE,
    NO_TS,
    BayGroups,
    BayTracker,
    battery_status,
    group_lot_occupancy,
    lot_occupancy,
)
from tests.naive_analytics import NS, NaiveBays

T0 = 1_714_500_000 * NS  # 2024-04-30


def _close(a: float, b: float, rtol: float = 1e-12) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rtol * max(abs(a), abs(b))


@st.composite
def bay_batch(draw: st.DrawFn, t0: int, max_bays: int) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(0, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bay = rng.integers(0, max_bays, n).astype(np.int64)
    steps = rng.integers(0, 900 * NS, n)
    steps[rng.random(n) < draw(st.sampled_from([0.0, 0.15]))] = -1800 * NS  # late readings
    ts = (t0 + np.cumsum(steps)).astype(np.int64)
    occ = rng.choice([0.0, 1.0, 1.0, 0.0, np.nan, 0.5], n,
                     p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.05])
    if n and draw(st.booleans()):
        a = draw(st.integers(0, n - 1))
        occ[a:] = occ[a]  # heartbeats repeating one state
    volts = np.round(rng.uniform(2.8, 3.2, n), 2)
    volts[rng.random(n) < 0.1] = np.nan
    return bay, ts, occ.astype(np.float64), volts


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_bays_match_reference(data: st.DataObject) -> None:
    max_bays = data.draw(st.integers(1, 8), label="bays")
    given_start = data.draw(st.sampled_from([None, T0 - 3600 * NS]), label="period_start")
    trk = BayTracker(data.draw(st.integers(0, 3)), heartbeat_interval_s=1800.0,
                     stale_factor=2.0, period_start_ns=given_start)
    ref = NaiveBays(1800.0, 2.0, period_start=given_start)
    clock = T0
    for _ in range(data.draw(st.integers(1, 5), label="batches")):
        action = data.draw(st.sampled_from(["occ", "occ", "battery", "reset"]))
        bay, ts, occ, volts = data.draw(bay_batch(clock, max_bays))
        if action == "occ":
            got = trk.update(bay, ts, occ)
            events, acc = ref.update(bay.tolist(), ts.tolist(), occ.tolist())
            ev = got.events
            assert list(zip(ev.bay.tolist(), ev.ts_ns.tolist(), ev.kind.tolist(),
                            ev.dwell_ns.tolist(), strict=True)) == events
            assert (got.n_applied, got.n_nan, got.n_invalid, got.n_late) == (
                acc["n_applied"], acc["n_nan"], acc["n_invalid"], acc["n_late"])
            assert got.n_applied + got.n_nan + got.n_invalid + got.n_late == len(bay)
        elif action == "battery":
            trk.update_battery(bay, ts, volts)
            ref.update_battery(bay.tolist(), ts.tolist(), volts.tolist())
        else:
            trk.reset_counters(clock)
            ref.reset_counters(clock)
        if len(ts):
            clock = max(clock, int(ts.max()))
        assert trk.period_start_ns == ref.period_start
    now = clock + data.draw(st.sampled_from([0, 1800 * NS, 3600 * NS, 3601 * NS]))
    n_reg = trk.n_bays + data.draw(st.integers(0, 2))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    groups = rng.integers(-1, 3, n_reg).astype(np.int64)
    snap = trk.snapshot(now, groups, n_groups=3)
    want = ref.snapshot(now, groups.tolist())
    alone = trk.group_snapshot(now, groups, n_groups=3)  # what the hub reads
    for f in fields(BayGroups):
        np.testing.assert_array_equal(getattr(alone, f.name), getattr(snap, f.name), f.name)
    assert _close(snap.period_days, want["days"])
    for b, w in enumerate(want["bays"]):
        assert snap.state[b] == w["state"]
        assert snap.stale[b] == w["stale"], b
        assert snap.battery_status[b] == w["battery_status"]
        assert snap.sessions[b] == w["sessions"]
        assert _close(snap.dwell_mean_s[b], w["dwell_mean_s"])
        assert _close(snap.turnover_per_day[b], w["turnover_per_day"])
        assert _close(snap.occupied_for_s[b], w["occupied_for_s"])
    for g in range(3):
        w = want["groups"].get(g)
        if w is None:
            assert snap.group_n_bays[g] == 0 and np.isnan(snap.group_occupancy[g])
            continue
        assert snap.group_n_bays[g] == w["n_bays"]
        assert snap.group_n_reporting[g] == w["n_reporting"]
        assert snap.group_n_occupied[g] == w["n_occupied"]
        assert snap.group_n_stale[g] == w["n_stale"]
        assert snap.group_n_battery_low[g] == w["n_low"]
        assert snap.group_n_battery_critical[g] == w["n_critical"]
        assert snap.group_sessions[g] == w["sessions"]
        assert _close(snap.group_occupancy[g], w["occupancy"])
        assert _close(snap.group_turnover[g], w["turnover"])
        assert _close(snap.group_dwell_mean_s[g], w["dwell_mean_s"])


def test_sessions_dwell_and_turnover() -> None:
    trk = BayTracker(2, period_start_ns=T0)
    m = 60 * NS
    bay = np.array([0, 0, 0, 0, 0, 1, 0], np.int64)
    ts = np.array([0, 5, 10, 20, 50, 50, 60], np.int64) * m + T0
    occ = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    up = trk.update(bay, ts, occ)
    ev = up.events
    assert ev.kind.tolist() == [EVENT_ARRIVAL, EVENT_DEPARTURE, EVENT_ARRIVAL]
    assert ev.dwell_ns.tolist() == [-1, 40 * m, -1]
    # bay 1 was first seen occupied: a session in progress of unknown start, not counted
    up2 = trk.update(np.array([1], np.int64), np.array([T0 + 70 * m]), np.array([0.0]))
    assert up2.events.dwell_ns.tolist() == [-1]
    snap = trk.snapshot(T0 + 12 * 3600 * NS, np.array([0, 0], np.int64))
    assert snap.sessions.tolist() == [2, 0] and snap.period_days == 0.5
    assert snap.turnover_per_day.tolist() == [4.0, 0.0]
    assert snap.dwell_mean_s[0] == 2400.0 and np.isnan(snap.dwell_mean_s[1])
    assert snap.group_turnover.tolist() == [2.0]
    # a heartbeat-only bay is still stale after 3 h of silence (default 1 h x 3)
    assert snap.stale.tolist() == [True, True] and snap.group_n_reporting.tolist() == [0]
    assert np.isnan(snap.group_occupancy[0])
    fresh = trk.snapshot(T0 + 61 * m, np.array([0, 0], np.int64))
    assert fresh.group_occupancy.tolist() == [0.5]  # bay 0 occupied, bay 1 free
    assert fresh.occupied_for_s[0] == 60.0


def test_battery_and_validation() -> None:
    v = np.array([3.3, 3.0, 2.95, 2.9, 2.89, np.nan])
    assert battery_status(v).tolist() == [BATTERY_NORMAL, BATTERY_NORMAL, BATTERY_LOW,
                                          BATTERY_LOW, BATTERY_CRITICAL, BATTERY_UNKNOWN]
    trk = BayTracker(1)
    trk.update_battery(np.array([0, 0], np.int64), np.array([T0 + 10, T0]),
                       np.array([2.85, 3.1]))  # the older reading does not win
    snap = trk.snapshot(T0, np.array([0], np.int64))
    assert snap.battery_v.tolist() == [2.85] and snap.group_n_battery_critical.tolist() == [1]
    assert snap.last_seen_ns.tolist() == [T0 + 10] and not snap.stale[0]
    assert snap.state.tolist() == [-1]  # battery alone says nothing about occupancy
    trk.update(np.array([4], np.int64), np.array([T0]), np.array([1.0]))  # grows to 5 bays
    assert trk.n_bays == 5
    with pytest.raises(ValueError, match="one entry per bay"):
        trk.snapshot(T0, np.array([0], np.int64))
    with pytest.raises(ValueError, match=">= 0"):
        trk.update(np.array([-1], np.int64), np.array([T0]), np.array([1.0]))
    with pytest.raises(ValueError, match="INT64_MIN"):
        trk.update(np.array([0], np.int64), np.array([NO_TS]), np.array([1.0]))
    assert len(trk.update(np.empty(0, np.int64), np.empty(0, np.int64),
                          np.empty(0)).events) == 0


def test_lot_occupancy() -> None:
    free = np.array([10.0, 0.0, 120.0, -3.0, np.nan, 5.0])
    cap = np.array([100.0, 50.0, 100.0, 20.0, 10.0, 0.0])
    occ = lot_occupancy(free, cap)
    assert occ[:4].tolist() == [0.9, 1.0, 0.0, 1.0]  # free clipped to [0, capacity]
    assert np.isnan(occ[4:]).all()
    g = group_lot_occupancy(np.array([0, 0, 1, 1, 1, -1], np.int64), free, cap)
    assert g.n_lots.tolist() == [2, 2]
    assert g.capacity.tolist() == [150.0, 120.0] and g.free.tolist() == [10.0, 100.0]
    assert math.isclose(g.occupancy[0], 1 - 10 / 150) and math.isclose(g.occupancy[1],
                                                                         1 - 100 / 120)


def test_a_bay_with_a_lagging_clock_is_not_stale_while_it_is_heard() -> None:
    """Staleness is judged on when the hub heard a bay (``heard``), not only on the bay's own
    clock: a sensor 20 min behind that keeps reporting stays fresh; one that stops goes
    stale once the limit passes after it was last heard."""
    m = 60 * NS
    trk = BayTracker(2, heartbeat_interval_s=300.0, stale_factor=3.0)  # stale after 15 min
    lag = 20 * m
    for minute in range(0, 60, 5):
        now = T0 + minute * m
        trk.update(np.array([0, 1], np.int64), np.array([now - lag, now]),
                   np.array([1.0, 0.0]))
        trk.heard(np.array([0, 1], np.int64), now)
    last = T0 + 55 * m
    snap = trk.snapshot(last + m, np.array([0, 0], np.int64))
    assert snap.stale.tolist() == [False, False]
    assert snap.last_seen_ns.tolist() == [last, last]
    assert snap.group_occupancy.tolist() == [0.5]
    assert trk.snapshot(last + 16 * m, np.array([0, 0], np.int64)).stale.tolist() == [True,
                                                                                    True]
    # never earlier than a reading's own (leading) device time; ids grow the tracker
    trk.update(np.array([3], np.int64), np.array([last + 2 * m]), np.array([0.0]))
    trk.heard(np.array([3], np.int64), last)
    assert trk.snapshot(last, np.array([0, 0, 0, 0], np.int64)).last_seen_ns[3] == last + 2 * m
    with pytest.raises(ValueError, match=">= 0"):
        trk.heard(np.array([-1], np.int64), last)
