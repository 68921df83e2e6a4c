"""The generator's fast frames path against the straightforward numpy code it replaced.

Each reference below is the code as it was before the fast path (kept here verbatim in
spirit): frames must come out byte for byte the same, times and tallies bit for bit.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.frame import decode_frame, encode_frame
from citybrain.loadtest.devices import (
    DevicePlan,
    DistrictDevices,
    build_frame,
    frame_span,
    jittered,
)
from citybrain.loadtest.generator import Link, LoadConfig, Stream, _Tally, _Worker
from citybrain.loadtest.profiles import RateProfile
from citybrain.loadtest.report import hdr_record_many, new_latency_histogram
from seeds.city import measurement_names

# -- references -----------------------------------------------------------------------------


def reference_frame(district: DistrictDevices, k0: int, n: int, frame_seq: int,
                    ts_ns: np.ndarray, rng: np.random.Generator, created_ns: int) -> bytes:
    """``build_frame`` before the fast path: gathers, ``np.unique``, ``encode_frame``."""
    sl = district.slots
    k = np.arange(k0, k0 + n, dtype=np.int64)
    cycle, slot = np.divmod(k, len(sl))
    dev = sl.device[slot]
    seq = cycle * sl.per_device[dev] + sl.position[slot]
    value = jittered(sl.nominal[slot], sl.lo[slot], sl.hi[slot], sl.scale[slot],
                     rng.random(n))
    uniq, inv = np.unique(dev, return_inverse=True)
    ul = uniq.tolist()
    return encode_frame(district.code, frame_seq, created_ns,
                        [district.ids[i] for i in ul], [district.systems[i] for i in ul],
                        list(measurement_names()), ts_ns, value, seq, inv, sl.name[slot],
                        level=1)


def reference_intended(stream: Stream, j0: int, n: int) -> np.ndarray:
    j = np.arange(j0, j0 + n, dtype=np.int64)
    cyc, pos = np.divmod(j, stream.d)
    return stream.profile.time_of((cyc * stream.w + stream.ends[pos]) / stream.share)


def reference_due(stream: Stream, expected: float) -> int:
    x = expected * stream.share
    cycles = math.floor(x / stream.w)
    return cycles * stream.d + int(np.searchsorted(stream.ends, x - cycles * stream.w,
                                                   "right"))


class ReferenceTally:
    """``_Tally.published`` / ``take_lag`` before the fast path."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.readings = 0
        self.published_by_second = np.zeros(seconds, dtype=np.int64)
        self.sent_by_second = np.zeros(seconds, dtype=np.int64)
        self.lag = new_latency_histogram()

    def published(self, intended_s: np.ndarray, sent_s: np.ndarray,
                  weights: np.ndarray | None) -> None:
        self.readings += int(weights.sum()) if weights is not None else len(intended_s)
        last = self.seconds - 1
        for arr, out in ((intended_s, self.published_by_second),
                         (sent_s, self.sent_by_second)):
            sec = np.clip(arr, 0, last).astype(np.int64)
            out += np.bincount(sec, weights=weights, minlength=self.seconds).astype(np.int64)
        hdr_record_many(self.lag, np.maximum(sent_s - intended_s, 0.0) * 1e6, weights)


# -- fixtures -------------------------------------------------------------------------------

@cache
def _plan() -> DevicePlan:
    return DevicePlan.build(600)


@cache
def _district(index: int) -> DistrictDevices:
    plan = _plan()
    return plan.district(plan.districts()[index])


PROFILES = [RateProfile("constant", 50_000.0, 10.0),
            RateProfile("ramp", 50_000.0, 10.0, start_rate=10.0),
            RateProfile("step", 50_000.0, 10.0, steps=3),
            RateProfile("burst", 50_000.0, 10.0, base=0.0, burst_s=1.0, period_s=4.0),
            RateProfile("burst", 50_000.0, 9.0, base=0.3, burst_s=2.0, period_s=2.0)]


# -- frames ---------------------------------------------------------------------------------

@given(district=st.sampled_from([0, 3, 17]), data=st.data())
@settings(max_examples=150, deadline=None)
def test_frames_are_byte_identical_to_the_reference(district: int, data: Any) -> None:
    d = _district(district)
    s = len(d.slots)
    # Any start (several cycles in, wrapping past the last slot) and lengths from one
    # reading to more than two cycles.
    k0 = data.draw(st.one_of(st.integers(0, 3 * s), st.integers(s - 5, s + 5),
                             st.integers(0, 2**31)), label="k0")
    n = data.draw(st.one_of(st.integers(0, 2 * s + 7), st.sampled_from([s - 1, s, s + 1])),
                  label="n")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    ts = 1_763_712_000_000_000_000 + np.arange(n, dtype=np.int64) * 19_231
    fast = build_frame(d, k0, n, (9 << 32) | 4, ts, np.random.default_rng(seed), 77)
    ref = reference_frame(d, k0, n, (9 << 32) | 4, ts, np.random.default_rng(seed), 77)
    if fast.payload != ref:  # say which column differs
        a, b = decode_frame(fast.payload), decode_frame(ref)
        assert (a.devices, a.systems, a.names) == (b.devices, b.systems, b.names)
        for col in ("ts_ns", "value", "seq", "device", "name"):
            np.testing.assert_array_equal(getattr(a, col), getattr(b, col), err_msg=col)
    assert fast.payload == ref
    np.testing.assert_array_equal(fast.device, d.slots.device[np.arange(k0, k0 + n) % s])


def test_consecutive_frames_reuse_buffers_and_stay_identical() -> None:
    """The builder keeps bodies and sections between frames: a stream of frames of mixed
    lengths (full, partial, wrapping) equals the reference frame by frame."""
    d = _district(3)
    s = len(d.slots)
    fast_rng, ref_rng = np.random.default_rng(5), np.random.default_rng(5)
    k0 = 0
    for r, n in enumerate([5_000, 5_000, 7, s - 3, 5, s, 5_000, 1, 5_000, 2 * s + 1] * 3):
        ts = np.arange(k0, k0 + n, dtype=np.int64) * 1_000
        fast = d.frames.build(k0, n, r, ts, fast_rng, r)
        assert fast == reference_frame(d, k0, n, r, ts, ref_rng, r), (r, k0, n)
        k0 += n


@given(n_ranks=st.integers(1, 40), data=st.data())
@settings(max_examples=200, deadline=None)
def test_frame_span_matches_np_unique(n_ranks: int, data: Any) -> None:
    per = data.draw(st.lists(st.integers(1, 4), min_size=n_ranks, max_size=n_ranks))
    rank = np.repeat(np.arange(n_ranks), per)
    s = len(rank)
    k0 = data.draw(st.integers(0, 5 * s))
    n = data.draw(st.integers(0, 2 * s + 2))
    present = rank[np.arange(k0, k0 + n) % s]
    uniq, inv = np.unique(present, return_inverse=True)
    span = frame_span(rank, n_ranks, k0, n)
    table = np.concatenate([np.arange(0), *(np.arange(a, b) for a, b in span.ranges)])
    np.testing.assert_array_equal(table, uniq)
    index = np.where(present < span.split, present - span.lo_shift, present - span.hi_shift)
    np.testing.assert_array_equal(index, inv)


def test_seq_past_u32_is_refused() -> None:
    d = _district(0)
    s = len(d.slots)
    k0 = (2**32 // int(d.slots.per_device.min()) + 1) * s
    with pytest.raises(OverflowError):
        d.frames.build(k0, s, 0, np.zeros(s, dtype=np.int64), np.random.default_rng(), 0)


# -- pacing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.kind)
@pytest.mark.parametrize("weights", [[1] * 2281, [3, 1, 2, 8, 1]], ids=["unit", "mixed"])
def test_intended_times_are_bit_identical(profile: RateProfile, weights: list[int]) -> None:
    stream = Stream(np.array(weights), 0.037, profile)
    final = stream.due(profile.total)
    rng = np.random.default_rng(2)
    starts = [0, 1, final - 3, final, final + 2, *rng.integers(0, final, 30).tolist()]
    for j0 in starts:
        for n in (1, 7, 5_000):
            ref = reference_intended(stream, j0, n)
            out_s, out_ns = np.empty(n), np.empty(n, dtype=np.int64)
            stream.times_into(j0, 1_763_712_000_000_000_000, out_s, out_ns)
            np.testing.assert_array_equal(out_s.view(np.int64), ref.view(np.int64))
            finite = np.isfinite(ref)
            ns = 1_763_712_000_000_000_000 + np.rint(ref[finite] * 1e9).astype(np.int64)
            np.testing.assert_array_equal(out_ns[finite], ns)
            np.testing.assert_array_equal(stream.intended(j0, n).view(np.int64),
                                          ref.view(np.int64))


@given(profile=st.sampled_from(PROFILES), share=st.floats(1e-4, 1.0),
       slots=st.integers(1, 3000), t=st.floats(-1.0, 12.0))
@settings(max_examples=500, deadline=None)
def test_due_and_its_lower_bound(profile: RateProfile, share: float, slots: int,
                                 t: float) -> None:
    stream = Stream(np.ones(slots, dtype=np.int64), share, profile)
    expected = profile.expected_by(t)
    # Also right at (and an ulp either side of) whole cycles, where x / W rounds.
    edge = math.floor(expected * share / slots) * slots / share
    for e in (expected, edge, math.nextafter(edge, math.inf), math.nextafter(edge, -math.inf)):
        due = stream.due(e)
        assert due == reference_due(stream, e)
        for items in (due - 1, due, due + 1, due + 2, due + 5_000):
            if e < stream.expected_below(items):  # the worker's shortcut: then fewer due
                assert due < items


def test_expected_by_one_value_is_the_array_result() -> None:
    rng = np.random.default_rng(3)
    for profile in PROFILES:
        t0, t1 = profile.segment_arrays()[:2]
        ts = np.concatenate([rng.uniform(-2.0, 12.0, 2_000), t0, t1,
                             np.nextafter(t0, -math.inf), np.nextafter(t1, math.inf)])
        one = np.array([profile.expected_by(float(t)) for t in ts])
        np.testing.assert_array_equal(one.view(np.int64),
                                      profile.expected_by(ts).view(np.int64))


# -- tallies --------------------------------------------------------------------------------

def _hist_counts(h: Any) -> dict[int, int]:
    return {int(v.value_iterated_to): int(v.count_at_value_iterated_to)
            for v in h.get_recorded_iterator()}


@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_tally_matches_the_reference(data: Any) -> None:
    seconds = data.draw(st.integers(1, 40))
    fast, ref = _Tally(seconds=seconds), ReferenceTally(seconds)
    for _ in range(data.draw(st.integers(1, 4))):
        n = data.draw(st.integers(1, 300))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        intended = np.sort(rng.uniform(-1.0, seconds + 2.0, n))
        if data.draw(st.booleans()):  # a frame: one send time
            sent = float(rng.uniform(-1.0, seconds + 3.0))
            fast.published_at(1, intended, sent)
            ref.published(intended, np.full(n, sent), None)
        else:  # messages, each its own send time and readings; some lags huge
            sent_a = intended + rng.exponential(rng.choice([1e-4, 1.0, 5e3]), n)
            weights = rng.integers(1, 8, n)
            fast.published(n, intended, sent_a, weights)
            ref.published(intended, sent_a, weights)
    assert fast.readings == ref.readings
    np.testing.assert_array_equal(fast.published_by_second, ref.published_by_second)
    np.testing.assert_array_equal(fast.sent_by_second, ref.sent_by_second)
    assert _hist_counts(HdrHistogram.decode(fast.take_lag())) == _hist_counts(ref.lag)


def test_take_lag_reports_the_reference_histogram() -> None:
    rng = np.random.default_rng(4)
    fast, ref = _Tally(seconds=30), ReferenceTally(30)
    for _ in range(20):
        intended = np.sort(rng.uniform(0.0, 29.0, 5_000))
        sent = float(intended[-1] + rng.exponential(0.3))
        fast.published_at(1, intended, sent)
        ref.published(intended, np.full(5_000, sent), None)
    sent_a = rng.uniform(0.0, 4_000.0, 1_000)
    weights = rng.integers(1, 4, 1_000)
    fast.published(1_000, np.zeros(1_000), sent_a, weights)
    ref.published(np.zeros(1_000), sent_a, weights)
    got = HdrHistogram.decode(fast.take_lag())
    assert got.get_total_count() == ref.lag.get_total_count() == ref.readings
    assert _hist_counts(got) == _hist_counts(ref.lag)
    assert HdrHistogram.decode(fast.take_lag()).get_total_count() == 0


# -- the worker's frames pass ---------------------------------------------------------------

def test_worker_frames_account_exactly_with_refused_publishes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A frames-mode worker (its link stubbed: every third publish refused) against what
    its accepted frames carry: per-device counts, readings, per-second series, seqs."""
    cfg = LoadConfig(mode="frames", profile=RateProfile("step", 40_000.0, 3.0, steps=2),
                     devices=600, processes=1, frame_readings=1_500, frame_max_age_s=0.2)
    plan = cfg.plan()
    weights = cfg.weights(plan)
    accepted: list[bytes] = []
    calls = [0]

    def publish(self: Link, topic: str, payload: bytes, qos: int, readings: int) -> bool:
        calls[0] += 1
        if calls[0] % 3 == 0:
            return False
        accepted.append(payload)
        return True

    monkeypatch.setattr(Link, "publish", publish)
    worker = _Worker(0, cfg, plan, list(weights), weights, None)
    worker.start_ns = 1_763_712_000_000_000_000
    t = 0.0
    while t < cfg.profile.duration_s + 0.1:
        worker._frames_pass(t)
        t += 0.013
    assert worker.sent == worker.final and worker.tally.errors == calls[0] // 3 > 0
    counts = dict(zip([tb.code for tb in worker.tables], worker._device_counts(), strict=True))
    seen: dict[str, dict[str, list[int]]] = {}
    by_second = np.zeros_like(worker.tally.published_by_second)
    for p in accepted:
        f = decode_frame(p)
        devs = np.array(f.devices)[f.device]
        per = seen.setdefault(f.district, {})
        for dev, q in zip(devs.tolist(), f.seq.tolist(), strict=True):
            per.setdefault(dev, []).append(q)
        sec = np.clip((f.ts_ns - worker.start_ns) / 1e9, 0, len(by_second) - 1).astype(int)
        by_second += np.bincount(sec, minlength=len(by_second))
    total = 0
    for tb in worker.tables:
        got = counts[tb.code]
        want = np.array([len(seen.get(tb.code, {}).get(i, [])) for i in tb.ids])
        np.testing.assert_array_equal(got, want, err_msg=tb.code)
        total += int(got.sum())
        for q in seen.get(tb.code, {}).values():  # seqs rise; refused frames leave gaps
            assert q == sorted(set(q))
    assert worker.tally.readings == total == int(worker.tally.published_by_second.sum())
    # Timestamps are the intended times: the per-second series agree to the rounding of
    # ns timestamps at a second's edge.
    assert np.abs(by_second - worker.tally.published_by_second).sum() <= 2 * len(by_second)
