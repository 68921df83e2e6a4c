"""Data quality: completeness by reporting slots, online state, latency and validity."""

from __future__ import annotations

import numpy as np

from hub.quality import HOUR_NS, DataQuality
from seeds.city import City

S = 1_000_000_000
H0 = 1_763_712_000 // 3600 * 3600 * S  # an hour boundary


def setup() -> tuple[DataQuality, City]:
    city = City()
    q = DataQuality(city)
    # gid 0, 1: two devices of system 0 (air, 60 s → 60 slots an hour); gid 2: a bay (600 s).
    bay_system = next(i for i, s in enumerate(city.systems) if s.kind == "bay")
    q.sync_devices([0, 0, bay_system])
    return q, city


def test_completeness_counts_slots_not_readings() -> None:
    q, city = setup()
    ts = H0 + np.arange(60, dtype=np.int64) * 60 * S  # device 0: every slot of the hour
    dev = np.zeros(60, dtype=np.int64)
    # device 1: 3 readings in one slot (counts once); bay: 20 events over 760 s = 2 slots of 600 s.
    ts = np.concatenate([ts, H0 + np.array([1, 2, 3]) * S, H0 + np.arange(20) * 40 * S])
    dev = np.concatenate([dev, [1, 1, 1], np.full(20, 2)])
    assert q.observe(dev, ts, recv_ns=H0 + HOUR_NS) == []
    (rows,) = q.close_hours(H0 + HOUR_NS)
    assert rows.hour_start_ns == H0
    assert rows.system_observed[0] == 61
    assert rows.system_expected[0] == city.systems[0].device_count(1.0) * 60
    bay = next(i for i, s in enumerate(city.systems) if s.kind == "bay")
    assert rows.system_observed[bay] == 2 and rows.system_expected[bay] % 6 == 0
    d0 = rows.district_observed.sum()
    assert d0 == rows.system_observed.sum()
    assert q.close_hours(H0 + 2 * HOUR_NS) == []


def test_newer_hour_pushes_out_the_oldest() -> None:
    q, _ = setup()
    one = np.zeros(1, dtype=np.int64)
    q.observe(one, np.array([H0]), H0)
    q.observe(one, np.array([H0 + HOUR_NS]), H0)
    (rows,) = q.observe(one, np.array([H0 + 2 * HOUR_NS]), H0)
    assert rows.hour_start_ns == H0 and rows.system_observed[0] == 1


def test_minute_online_latency_validity() -> None:
    q, _ = setup()
    now = H0 + 10 * 60 * S
    q.observe(np.array([0, 1], dtype=np.int64), np.array([now - 5 * S, now - 3600 * S]),
              recv_ns=now)
    q.observe_rejected(q.system_ids[0], 3)
    q.observe_rejected("no-such-system", 5)
    m = q.minute(now)
    assert m.online[0] == 1 and m.devices_seen[0] == 2
    assert m.received[0] == 2 and m.rejected[0] == 3
    p50, _p95, p99 = m.latency_s[0]
    assert abs(p50 - 5) <= 0.05 and abs(p99 - 3600) <= 36
    q.set_dead([0], True)
    assert q.minute(now).online[0] == 0
    assert q.minute(now).received[0] == 0  # reset each minute
