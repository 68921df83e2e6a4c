"""Data quality: completeness by reporting slots, online state, latency and validity."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_a_clock_hours_ahead_does_not_push_out_the_current_hour() -> None:
    """Device 1's clock runs 2 h ahead. Its readings used to open hour H0 + 2 h, which
    pushed H0 out of the ring (emitted early, 1 slot of device 0's 60), and device 0's
    later readings of H0 were then never counted. Capped at the event clock's lead, they
    open nothing; device 0's hour stays whole."""
    q, _ = setup()
    limit = H0 + 30 * 60 * S + 300 * S  # event clock at H0 + 30 min, 5 min of lead allowed
    ahead = np.array([1], dtype=np.int64)
    assert q.observe(np.zeros(1, dtype=np.int64), np.array([H0]), H0, limit) == []
    assert q.observe(ahead, np.array([H0 + 2 * HOUR_NS]), H0, limit) == []
    ts = H0 + np.arange(1, 60, dtype=np.int64) * 60 * S
    assert q.observe(np.zeros(59, dtype=np.int64), ts, H0, limit) == []
    (rows,) = q.close_hours(H0 + HOUR_NS)
    assert rows.hour_start_ns == H0 and rows.system_observed[0] == 60
    # without the cap (the old behaviour), the same readings lose device 0's hour
    q, _ = setup()
    q.observe(np.zeros(1, dtype=np.int64), np.array([H0]), H0)
    (early,) = q.observe(ahead, np.array([H0 + 2 * HOUR_NS]), H0)
    assert early.hour_start_ns == H0 and early.system_observed[0] == 1


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


def _reference_observe(q: DataQuality, device: np.ndarray, ts: np.ndarray, recv_ns: int
                       ) -> np.ndarray:
    """``DataQuality.observe`` one reading at a time, as first written (numpy per batch):
    slot bits, last seen, readings per system; returns the latencies it sketches."""
    q._open_hour(int(ts.max()) // HOUR_NS)
    for d, t in zip(device.tolist(), ts.tolist(), strict=True):
        q.last_seen[d] = max(int(q.last_seen[d]), t)
        h = t // HOUR_NS
        r = h % 2
        if q.ring_hour[r] != h:
            continue
        s = min((t - h * HOUR_NS) // int(q.slot_ns[q.dev_system[d]]), 63)
        q.bits[d, r] |= np.uint64(1 << s)
    system = q.dev_system[device]
    q.received += np.bincount(system, minlength=q.n_systems)
    return (recv_ns - ts) / 1e9


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.booleans())
def test_observe_matches_reading_by_reading(seed: int, n: int, runs: bool) -> None:
    """The kernel keeps a device's tallies and last slot in registers while its readings
    follow each other: the same bits, last seen times, counts and latencies as one reading
    at a time, across slots, hours (some not in the ring) and the hour's last slot."""
    rng = np.random.default_rng(seed)
    city = City()
    got, want = DataQuality(city), DataQuality(city)
    systems = rng.integers(0, len(city.systems), 6).tolist()
    for q in (got, want):
        q.sync_devices(systems)
    for _ in range(3):
        device = (np.repeat(rng.integers(0, 6, n), rng.integers(1, 9, n))[:n] if runs
                  else rng.integers(0, 6, n)).astype(np.int64)
        ts = H0 + rng.integers(-2 * HOUR_NS, 3 * HOUR_NS, len(device))
        if runs:  # runs of close readings: the same slot, or the next
            ts = np.sort(ts)[rng.permutation(len(ts)) % 4 == 0].repeat(4)[:len(device)]
            ts = ts + rng.integers(0, 90 * S, len(ts))
            device = device[:len(ts)]
        recv = int(ts.max()) + 5 * S
        got.observe(device, ts, recv)
        lat = _reference_observe(want, device, ts, recv)
        want.latency.add(want.dev_system[device], lat)
        np.testing.assert_array_equal(got.bits, want.bits)
        np.testing.assert_array_equal(got.last_seen, want.last_seen)
        np.testing.assert_array_equal(got.received, want.received)
        np.testing.assert_array_equal(got.latency.counts, want.latency.counts)
        np.testing.assert_array_equal(got.ring_hour, want.ring_hour)
