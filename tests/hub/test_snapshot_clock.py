"""The hub's minute snapshots follow device time: one as the event clock enters each new
minute, at most one per ``min_gap_s`` of hub time, plus two early ones after start."""

from __future__ import annotations

from hub.analytics import MINUTE_NS
from hub.service import SnapshotClock

S = 1_000_000_000
T0 = 1_763_712_000 * S  # a minute boundary


def _taken(clock: SnapshotClock, ticks: list[tuple[float, int]]) -> list[tuple[float, int]]:
    return [(now, ev) for now, ev in ticks if clock.due(now, ev)]


def test_real_time_one_snapshot_as_each_minute_begins() -> None:
    clock = SnapshotClock(0.0, min_gap_s=2.0)
    # a tick every second, device time = hub time, from 20 s into a minute, for 3 minutes
    ticks = [(float(t), T0 + (20 + t) * S) for t in range(181)]
    taken = _taken(clock, ticks)
    early = [(15.0, T0 + 35 * S), (45.0, T0 + 65 * S)]
    minutes = [(40.0, T0 + MINUTE_NS), (100.0, T0 + 2 * MINUTE_NS),
               (160.0, T0 + 3 * MINUTE_NS)]
    assert taken == sorted(early + minutes)


def test_fast_device_time_gets_a_snapshot_every_gap() -> None:
    """A replay at 120x: 2 event minutes pass per second of hub time. A snapshot per minute
    of hub time gave one per 2 event hours; now one per 2 s (every 4 event minutes)."""
    clock = SnapshotClock(0.0, min_gap_s=2.0)
    ticks = [(100.0 + t * 0.5, T0 + int(t * 0.5 * 120 * S)) for t in range(121)]
    taken = _taken(clock, ticks)  # both early times are past: the clock started at 0
    assert taken[0] == (100.0, T0)  # one snapshot serves both
    later = [now for now, _ in taken[1:]]
    assert later == [102.0 + 2.0 * k for k in range(len(later))] and len(later) == 30


def test_a_stalled_event_clock_takes_no_snapshot() -> None:
    clock = SnapshotClock(0.0, min_gap_s=2.0)
    assert _taken(clock, [(60.0 + t, T0 + 5 * S) for t in range(300)]) == [
        (60.0, T0 + 5 * S)]  # only the early one (both early times had passed)


def test_without_early_snapshots_only_minutes_count() -> None:
    """The hub's heap trims (``early=False``): once per event minute, none in between."""
    clock = SnapshotClock(0.0, min_gap_s=2.0, early=False)
    ticks = [(float(t), T0 + (20 + t) * S) for t in range(181)]
    assert _taken(clock, ticks) == [(40.0, T0 + MINUTE_NS), (100.0, T0 + 2 * MINUTE_NS),
                                    (160.0, T0 + 3 * MINUTE_NS)]
