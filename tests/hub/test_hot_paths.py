"""The hub's per-batch shortcuts give what the plain computations give.

Raw sampling by strided slices, the frame clock of frames already in time order, and the
analytics' per-batch steps (readings sorted apart by tracker and by minute, percentile
sketches reused from minute to minute) against direct computations of the same thing.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hub.service as service
from citybrain.frame import decode_frame, encode_frame
from hub.analytics import MINUTE_NS, PCT_Q, CityAnalytics
from hub.series import GLOBAL_NAMES, SeriesRegistry
from hub.service import Hub, HubConfig, _frame_clock
from hub.sinks import InfluxConfig
from hub.sketch import LogHistogram
from hub.warmup import CountingSink
from seeds.city import KINDS, City, catalogue_by_kind

S = 1_000_000_000
T0 = 1_763_712_000 * S  # a minute boundary


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 300), st.booleans())
def test_frame_clock_is_the_90th_percentile(seed: int, n: int, ordered: bool) -> None:
    rng = np.random.default_rng(seed)
    ts = rng.integers(-10**12, 10**12, n).astype(np.int64)
    if ordered:
        ts.sort()
    k = (9 * (n - 1)) // 10
    assert _frame_clock(ts) == int(np.sort(ts)[k])
    assert _frame_clock(ts[:0]) is None


def test_raw_sampling_keeps_every_nth_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """1 reading in raw_every is stored, counted across batches of any size."""
    hub = Hub(HubConfig(client_id="raw", raw_every=7, warm_up=False,
                        influx=InfluxConfig(url="http://127.0.0.1:9")), City(1.0),
              sink=CountingSink())
    kept: list[np.ndarray] = []

    def render(_table: object, s: np.ndarray, v: np.ndarray, t: np.ndarray
               ) -> tuple[bytes, int]:
        assert s.flags.c_contiguous and v.flags.c_contiguous and t.flags.c_contiguous
        kept.append(t.copy())
        return b"x\n" * len(t), len(t)

    monkeypatch.setattr(service, "render_merged", render)
    monkeypatch.setattr(hub.writer, "submit", lambda *_: 1)
    total = 0
    for n in (0, 1, 5, 13, 100, 7, 3, 64, 1):
        ts = np.arange(total, total + n, dtype=np.int64)
        hub._store_raw(np.zeros(n, np.int64), ts, ts.astype(np.float64))
        total += n
    want = np.arange(0, total, 7)
    np.testing.assert_array_equal(np.concatenate(kept), want)
    assert hub.counters.get("raw_sampled_out") == total - len(want)
    hub.wal.close()


def _city_batches(seed: int, minutes: int) -> tuple[
        SeriesRegistry, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]:
    """A registry of one district's devices of every kind and batches of their readings
    over ``minutes`` minutes, in time order: noisy levels, repeated values, kitchen
    thresholds crossed, NaN now and then. Each batch spans 1-3 minutes (up to 2 long)."""
    rng = np.random.default_rng(seed)
    city = City(1.0)
    district = city.districts[0].code
    devices = []
    for system in city.systems_in(district):
        devices += list(city.devices_of(system))[:4]
    registry = SeriesRegistry(city)
    cat = catalogue_by_kind()
    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    t = T0
    while t < T0 + minutes * MINUTE_NS:
        span = int(rng.integers(1, 2 * MINUTE_NS))
        names, dev_idx, name_idx, ts, values = [], [], [], [], []
        for _ in range(int(rng.integers(20, 200))):
            d = int(rng.integers(len(devices)))
            when = t + int(rng.integers(0, span))
            for m in cat[devices[d].system.kind].values():
                if m.name not in names:
                    names.append(m.name)
                lo, hi = float(m.min), float(m.max)
                mode = rng.random()
                v = (lo + 1.0 if mode < 0.4 else hi * 2.0 if mode < 0.5
                     else np.nan if mode < 0.52 else float(np.round(rng.uniform(lo, hi), 1)))
                dev_idx.append(d)
                name_idx.append(names.index(m.name))
                ts.append(when)
                values.append(v)
        order = np.argsort(ts, kind="stable")
        frame = decode_frame(encode_frame(
            district, len(batches), 0, [d.device_id for d in devices],
            [d.system.system_id for d in devices], names, np.array(ts)[order],
            np.array(values)[order], np.zeros(len(ts)), np.array(dev_idx)[order],
            np.array(name_idx)[order]))
        r = registry.resolve(frame)
        batches.append((r.series, r.device, frame.ts_ns.copy(), frame.value.copy()))
        t += span
    return registry, batches


def test_percentiles_of_each_minute_are_a_sketch_of_its_readings() -> None:
    """Readings in time order, batches across one or two minute ends, minutes closed as
    event time passes (their sketches reused for later minutes; at most 3 are open): each
    minute's pct_1m points are the quantiles of a sketch of exactly that minute's
    readings."""
    registry, batches = _city_batches(5, 12)
    an = CityAnalytics(registry.city, registry)
    lines = []
    for series, device, ts, value in batches:
        out = an.on_tick(int(ts.min()), 0)  # close what ended before this batch
        lines += [ln for body, _ in out.bodies for ln in body.split(b"\n")
                  if ln.startswith(b"pct_1m")]
        an.on_readings(series, device, ts, value, int(ts.max()))
    lines += [ln for body, _ in an.on_tick(2**62, 0).bodies for ln in body.split(b"\n")
              if ln.startswith(b"pct_1m")]
    assert an._pct_spare  # closed sketches were kept for reuse
    series = np.concatenate([b[0] for b in batches])
    ts = np.concatenate([b[2] for b in batches])
    value = np.concatenate([b[3] for b in batches])
    group = an.s_pct_group[series].astype(np.int64)  # int32 column; sketch ids int64
    want = []
    for m in np.unique(ts // MINUTE_NS).tolist():
        sel = ts // MINUTE_NS == m
        h = LogHistogram(0.02, an._pct_groups, 1e-3, 1e6)
        h.add(group[sel], value[sel])
        groups = np.flatnonzero(h.count() > 0)
        q = h.quantiles(PCT_Q)[groups]
        p = an._points["pct_1m"]
        nn = len(GLOBAL_NAMES)
        ents = [p.entity([an.districts[g // nn], GLOBAL_NAMES[g % nn]]) for g in groups]
        body, _ = p.render(ents, np.column_stack([q, h.count()[groups].astype(float)]),
                           m * MINUTE_NS)
        want += [ln for ln in body.split(b"\n") if ln]
    assert lines == want and len(want) > 50


def test_analytics_output_does_not_depend_on_the_batching() -> None:
    """Kitchen alarms, lot and bay state, data quality from the readings in one batch, or
    in batches of a few frames: the same points, alarms and state. (Not so for stuck
    anomalies: ``newly`` stuck is judged against the state before the batch, so a series
    turning stuck within a batch is reported at each of its stuck readings there.)"""
    registry, batches = _city_batches(9, 6)
    whole = CityAnalytics(registry.city, registry)
    parts = CityAnalytics(registry.city, registry)
    series, device, ts, value = (np.concatenate([b[i] for b in batches]) for i in range(4))
    recv = int(ts.max())
    one = whole.on_readings(series, device, ts, value, recv)
    many = [parts.on_readings(s, d, t, v, recv) for s, d, t, v in batches]

    def points(bodies: list[tuple[bytes, int]], measurement: bytes) -> list[bytes]:
        return [ln for body, _ in bodies for ln in body.split(b"\n")
                if ln.startswith(measurement)]

    got = [ln for out in many for ln in points(out.bodies, b"kitchen_alarm")]
    assert got == points(one.bodies, b"kitchen_alarm") and got
    assert [a for out in many for a in out.alarms] == one.alarms
    np.testing.assert_array_equal(whole.lot_free, parts.lot_free)
    np.testing.assert_array_equal(whole.lot_ts, parts.lot_ts)
    np.testing.assert_array_equal(whole.quality.bits, parts.quality.bits)
    np.testing.assert_array_equal(whole.quality.received, parts.quality.received)
    groups = np.zeros(max(whole.bays.n_bays, parts.bays.n_bays), np.int64)
    snap_one, snap_many = (t.bays.snapshot(recv, groups, 1) for t in (whole, parts))
    for f in fields(snap_one):
        np.testing.assert_array_equal(getattr(snap_one, f.name), getattr(snap_many, f.name))
    assert snap_one.group_n_reporting[0] > 0


def test_kitchen_alarm_raised_ts_is_stored_to_the_nanosecond() -> None:
    """``raised_ts`` is an integer field of ns: rendered from int64 (``EntityPoints``'
    ``int64_fields``), not through float64 (whose 53 bits turned ...123456789 into
    ...123456768)."""
    registry, batches = _city_batches(9, 6)
    an = CityAnalytics(registry.city, registry)
    lines = [ln for s, d, t, v in batches
             for body, _ in an.on_readings(s, d, t, v, int(t.max())).bodies
             for ln in body.split(b"\n") if ln.startswith(b"kitchen_alarm,")]
    raised = [ln for ln in lines if b",state=raised," in ln]
    assert raised and len(raised) < len(lines)  # ongoing / cleared ones too
    inexact = 0
    for ln in lines:
        head, ts = ln.rsplit(b" ", 1)
        kvs = head.rsplit(b" ", 1)[1].split(b",")
        field = [f for f in kvs if f.startswith(b"raised_ts=")]
        assert len(field) == 1 and field[0].endswith(b"i")
        assert kvs[-1] == field[0]  # after value and peak, as always
        rts = int(field[0][len(b"raised_ts="):-1])
        assert rts <= int(ts)
        if b",state=raised," in ln:
            assert rts == int(ts)  # raised by the reading the line is stamped with
            inexact += int(float(rts)) != rts
    assert inexact  # times float64 cannot hold were among them


def test_percentiles_of_a_batch_spread_over_hours() -> None:
    """A batch over more minutes than the counting sort takes (a device clock far off):
    the distinct minutes are found with np.unique; the first three open, later ones wait."""
    registry, batches = _city_batches(7, 1)
    series, device, ts, value = batches[0]
    ts = ts.copy()
    ts[::3] += 100 * MINUTE_NS  # a third of the readings 100 minutes on
    ts[1::7] += 500 * MINUTE_NS  # a few 500 minutes on: a fourth minute, not sketched
    an = CityAnalytics(registry.city, registry)
    an.on_readings(series, device, ts, value, int(ts.max()))
    minutes = np.unique(ts // MINUTE_NS).tolist()
    assert len(minutes) > 3 and sorted(an._pct) == minutes[:3]
    group = an.s_pct_group[series].astype(np.int64)  # int32 column; sketch ids int64
    for m in minutes[:3]:
        sel = ts // MINUTE_NS == m
        h = LogHistogram(0.02, an._pct_groups, 1e-3, 1e6)
        h.add(group[sel], value[sel])
        np.testing.assert_array_equal(an._pct[m].counts, h.counts)


def test_scored_series_get_a_spike_floor_of_three_sensor_steps() -> None:
    """The spike floor of each scored series is ``spike_floor_steps`` resolution steps of
    its sensor (catalogue ``resolution``): a kitchen's gas reading (0.1 %LEL steps) needs
    more than 0.3 %LEL to spike after a mostly constant history."""
    registry, batches = _city_batches(5, 2)
    an = CityAnalytics(registry.city, registry)
    for series, device, ts, value in batches:
        an.on_readings(series, device, ts, value, int(ts.max()))
    res = {(m.kind, m.name): m.resolution for ms in catalogue_by_kind().values()
           for m in ms.values()}
    scored = np.flatnonzero(an.s_scored)
    assert len(scored)
    for sid in scored.tolist():
        kind, name = KINDS[int(an.s_kind[sid])], GLOBAL_NAMES[int(an.s_name[sid])]
        assert an.spikes.floor[an.s_slot[sid]] == pytest.approx(3 * res[(kind, name)])


def test_flat_batteries_full_lots_and_closed_kitchens_are_not_stuck_sensors() -> None:
    """A bay battery holds one 10 mV step for days, a full lot reads 0 free spaces for
    hours, a closed kitchen's gas, CO and fume sensors sit at their baseline all night:
    their flat lines raise no stuck anomaly (``NOT_STUCK``), while a PM2.5 monitor's or an
    air station's CO flat line does. Their spikes are still scored."""
    from hub.analytics import GLOBAL_CODE, KIND_CODE
    registry, batches = _city_batches(5, 2)
    an = CityAnalytics(registry.city, registry)
    for series, device, ts, value in batches:
        an.on_readings(series, device, ts, value, int(ts.max()))

    def first(kind: str, name: str) -> int:
        return int(np.flatnonzero((an.s_kind == KIND_CODE[kind])
                                  & (an.s_name == GLOBAL_CODE[name]))[0])

    ids = [first("bay", "battery"), first("lot", "free"), first("kitchen", "gas"),
           first("kitchen", "co"), first("kitchen", "fume"), first("air", "pm2_5"),
           first("air", "co")]
    assert all(an.s_scored[s] for s in ids)
    n = 30  # 30 readings 5 min apart: past the detector's 12 readings and one hour
    series = np.repeat(np.array(ids, dtype=np.int64), n)
    ts = np.tile(T0 + 10 * 3600 * S + np.arange(n, dtype=np.int64) * 300 * S, len(ids))
    value = np.repeat(np.array([3.58, 0.0, 0.2, 1.5, 0.05, 35.0, 0.8]), n)
    body, lines = an._anomalies(series, ts, value)
    reported = [ln for ln in body.split(b"\n") if ln]
    assert lines == 2 and all(b"reason=stuck" in ln for ln in reported)

    def tag(ln: bytes, key: bytes) -> str:
        return ln.split(b"," + key + b"=")[1].split(b",")[0].decode()

    want = {(registry.labels(s).device, registry.labels(s).name) for s in ids[5:]}
    assert {(tag(ln, b"device"), tag(ln, b"m")) for ln in reported} == want


def test_bays_count_as_heard_at_the_event_clock() -> None:
    """``on_readings(..., clock_ns=)`` marks the batch's bays heard at the hub's clock: a bay
    whose own clock lags the city by an hour is not stale while its readings arrive."""
    registry, batches = _city_batches(7, 3)
    an = CityAnalytics(registry.city, registry)
    series, device, ts, value = batches[0]
    an.on_readings(series, device, ts, value, int(ts.max()))  # syncs the registry columns
    bay = np.flatnonzero(an.d_kind[device] == KINDS.index("bay"))
    assert len(bay), "the batch has bay readings"
    lag = 3600 * 10**9  # the limit: 3 heartbeats of bay_heartbeat_s (10 min)
    assert 3 * an.cfg.bay_heartbeat_s * 10**9 < lag
    clock = int(ts.max()) + 2 * lag
    groups = np.full(len(an.bay_gid), -1, dtype=np.int64)  # bays are numbered apart
    number = an.d_bay[device[bay]]
    assert (number >= 0).all() and (an.bay_gid[number] == device[bay]).all()
    an.on_readings(series[bay], device[bay], ts[bay] + lag, value[bay], 0)  # no clock
    assert an.bays.snapshot(clock, groups).stale[number].all()
    an.on_readings(series[bay], device[bay], ts[bay] + lag, value[bay], 0, clock_ns=clock)
    assert not an.bays.snapshot(clock, groups).stale[number].any()
