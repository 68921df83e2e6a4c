"""hub.window kernels against the slow references in tests/naive.py."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hub.window as hw
from hub.window import (
    EMPTY_WINDOW,
    WindowAggregator,
    WindowBatch,
    aggregate_batch,
    merge_into,
    merge_partials,
)
from tests.naive import (
    NaiveRing,
    assert_rows_match,
    batch_rows,
    numpy_window_aggregate,
    window_rows,
)

EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------


@st.composite
def values(draw: st.DrawFn, n: int) -> np.ndarray:
    """Random floats with, by choice, a large common offset, constant runs, and NaN at the
    start, the middle and/or the end."""
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3, 1e9]))
    offset = draw(st.sampled_from([0.0, 0.0, 1e6, -1e9]))
    base = draw(st.lists(st.floats(-1.0, 1.0, allow_nan=False, width=64), min_size=n,
                         max_size=n))
    v = np.asarray(base, dtype=np.float64) * scale + offset
    if n:
        if draw(st.booleans()):  # a constant run
            a = draw(st.integers(0, n - 1))
            b = draw(st.integers(a, n))
            v[a:b] = v[a]
        if draw(st.booleans()):  # all constant
            v[:] = v[0]
        for where in draw(st.sets(st.sampled_from(["start", "middle", "end", "all"]))):
            if where == "start":
                v[: draw(st.integers(1, n))] = np.nan
            elif where == "middle":
                v[n // 2] = np.nan
            elif where == "end":
                v[-draw(st.integers(1, n)):] = np.nan
            elif draw(st.integers(0, 9)) == 0:
                v[:] = np.nan
    return v


@st.composite
def readings(draw: st.DrawFn, max_n: int = 120, max_series: int = 9,
             window_ns: int | None = None, t_lo: int = -40, t_hi: int = 40
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    wn = window_ns if window_ns is not None else draw(st.sampled_from([1, 3, 10, 1000]))
    n = draw(st.integers(0, max_n))
    if draw(st.booleans()):  # ids cycling, the realistic order
        k = draw(st.integers(1, max_series))
        series = np.arange(n, dtype=np.int64) % k
    else:
        series = np.asarray(draw(st.lists(st.integers(0, max_series - 1), min_size=n,
                                          max_size=n)), dtype=np.int64)
    scale = wn if wn > 1 else 1
    t = draw(st.lists(st.integers(t_lo * scale, t_hi * scale), min_size=n, max_size=n))
    ts = np.asarray(t, dtype=np.int64)
    if draw(st.booleans()):
        ts = np.sort(ts)  # in order, with duplicates: first/last ties
    if n and draw(st.booleans()):  # many readings on one timestamp
        ts[: n // 2] = ts[0]
    return series, ts, draw(values(n)), wn


def _rows(series: np.ndarray, ts: np.ndarray, value: np.ndarray, wn: int) -> dict:
    return window_rows(series.tolist(), ts.tolist(), value.tolist(), wn)


def _assert_sorted(b: WindowBatch) -> None:
    order = np.lexsort((b.series, b.window_start_ns))
    assert np.array_equal(order, np.arange(len(b))), "rows not ordered by (window, series)"


# --------------------------------------------------------------------------------------------
# one-shot aggregation and merging
# --------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(readings(), st.booleans())
def test_aggregate_batch_matches_reference(r: tuple, force_sorted: bool) -> None:
    series, ts, value, wn = r
    old = hw._DENSE_MAX_CELLS
    try:
        if force_sorted:
            hw._DENSE_MAX_CELLS = 0
        got = aggregate_batch(series, ts, value, wn)
    finally:
        hw._DENSE_MAX_CELLS = old
    _assert_sorted(got)
    assert (got.count >= 1).all()
    assert_rows_match(batch_rows(got), _rows(series, ts, value, wn))


@settings(max_examples=150, deadline=None)
@given(readings(), st.data())
def test_merge_of_partials_equals_aggregate_of_union(r: tuple, data: st.DataObject) -> None:
    series, ts, value, wn = r
    cut = data.draw(st.integers(0, len(series)))
    a = aggregate_batch(series[:cut], ts[:cut], value[:cut], wn)
    b = aggregate_batch(series[cut:], ts[cut:], value[cut:], wn)
    merged = merge_partials(a, b)
    whole = aggregate_batch(series, ts, value, wn)
    _assert_sorted(merged)
    want = _rows(series, ts, value, wn)
    assert_rows_match(batch_rows(merged), want)
    assert_rows_match(batch_rows(whole), want)
    # merging with nothing is the identity; merging is order-sensitive only in ties
    assert_rows_match(batch_rows(merge_partials(whole, WindowBatch.empty())), want)


@settings(max_examples=200, deadline=None)
@given(readings(max_series=6), st.data())
def test_merge_into_is_merge_partials_bit_for_bit(r: tuple, data: st.DataObject) -> None:
    """Rows whose keys the base holds (the in-place path; duplicates among them, and
    identity rows of count 0, included) and rows with new keys (the fallback) alike."""
    series, ts, value, wn = r
    cut = data.draw(st.integers(0, len(series)))
    base = aggregate_batch(series[:cut], ts[:cut], value[:cut], wn)
    later = aggregate_batch(series[cut:], ts[cut:], value[cut:], wn)
    if data.draw(st.booleans(), label="rows in the base's keys only"):
        later = later.take(np.isin(later.series * 2**20 + later.window_start_ns,
                                   base.series * 2**20 + base.window_start_ns))
    parts = [later.take(np.arange(len(later)) % 2 == k) for k in (0, 1)]
    rows = WindowBatch.concat([parts[0], *(parts[1:] if data.draw(st.booleans()) else []),
                               parts[1]])  # a key twice, sometimes
    if len(rows) and data.draw(st.booleans(), label="an identity row"):
        rows = WindowBatch.concat([rows, dataclasses.replace(rows.take(np.array([0])),
                                                 count=np.zeros(1, np.int64))])
    want = merge_partials(base, rows)
    copy = WindowBatch(*(getattr(base, n).copy() for n in hw._BATCH_FIELDS))
    _same_batch(merge_into(copy, rows), want)


def test_numpy_reference_agrees_with_python_reference() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    series = rng.integers(0, 50, n)
    ts = rng.integers(-10**6, 10**6, n)
    value = rng.normal(5, 2, n)
    value[::17] = np.nan
    ref = numpy_window_aggregate(series, ts, value, 10_000)
    rows = {(int(s), int(w)): {c: ref[c][i].item() for c in ref}
            for i, (s, w) in enumerate(zip(ref["series"], ref["window_start_ns"], strict=True))}
    assert_rows_match(rows, _rows(series, ts, value, 10_000))


def test_merge_chan_formula_on_known_values() -> None:
    a = aggregate_batch(np.zeros(3, np.int64), np.array([0, 1, 2]), np.array([1.0, 2, 3]), 10)
    b = aggregate_batch(np.zeros(2, np.int64), np.array([3, 4]), np.array([10.0, 20]), 10)
    m = merge_partials(a, b)
    allv = np.array([1.0, 2, 3, 10, 20])
    assert m.count.tolist() == [5]
    assert m.sum[0] == allv.sum()
    assert math.isclose(m.m2[0], ((allv - allv.mean()) ** 2).sum(), rel_tol=1e-12)
    assert math.isclose(m.variance()[0], allv.var(ddof=1), rel_tol=1e-12)
    assert (m.first[0], m.first_ts[0], m.last[0], m.last_ts[0]) == (1.0, 0, 20.0, 4)


# --------------------------------------------------------------------------------------------
# the streaming ring against NaiveRing
# --------------------------------------------------------------------------------------------


def _check_add(got: hw.AddResult, want: dict, n: int) -> None:
    assert got.n_added == want["n_added"]
    assert got.n_nan == want["n_nan"]
    assert got.late_idx.tolist() == want["late_idx"]
    assert got.early_idx.tolist() == want["early_idx"]
    assert got.invalid_idx.tolist() == want["invalid_idx"]
    assert got.late_idx.dtype == got.early_idx.dtype == got.invalid_idx.dtype == np.int64
    assert got.n_added + got.n_nan + len(got.late_idx) + len(got.early_idx) + len(
        got.invalid_idx) == n
    _assert_sorted(got.closed)
    assert_rows_match(batch_rows(got.closed), want["closed"])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_ring_matches_naive_model(data: st.DataObject) -> None:
    wn = data.draw(st.sampled_from([1, 5, 10]), label="window_ns")
    n_slots = data.draw(st.integers(1, 4), label="n_slots")
    cap = data.draw(st.sampled_from([1, 4, 64]), label="capacity")
    agg = WindowAggregator(wn, n_slots, capacity=cap)
    ref = NaiveRing(wn, n_slots)
    # around 0 or far after it, as with real clocks
    epoch = data.draw(st.sampled_from([0, 10**6]), label="epoch")
    clock = (epoch + data.draw(st.integers(-30, 30))) * wn
    for _ in range(data.draw(st.integers(1, 7), label="steps")):
        action = data.draw(st.sampled_from(["add", "add", "add", "close_until"]))
        if action == "add":
            lo = clock // wn - 2 * n_slots
            series, ts, value, _ = data.draw(readings(max_n=60, window_ns=wn, t_lo=lo,
                                                      t_hi=lo + 5 * n_slots))
            max_window = data.draw(st.none() | st.integers(lo, lo + 5 * n_slots),
                                   label="max_window")
            got = agg.add(series, ts, value, max_window=max_window)
            _check_add(got, ref.add(series.tolist(), ts.tolist(), value.tolist(), max_window),
                       len(series))
            if len(ts):
                clock = max(clock, int(np.median(ts)))
        else:
            wm = data.draw(st.integers(clock - 3 * wn * n_slots, clock + 3 * wn * n_slots))
            got_b = agg.close_until(wm)
            _assert_sorted(got_b)
            assert_rows_match(batch_rows(got_b), ref.close_until(wm))
        assert agg.floor_window == ref.floor
        assert agg.newest_window == ref.newest
        # a window that only received NaN holds a slot but no state: a superset is fine
        assert set(ref.open) <= set(agg.open_windows().tolist())
    final = agg.close_all()
    _assert_sorted(final)
    assert_rows_match(batch_rows(final), ref.close_all())
    assert (agg.slot_window == EMPTY_WINDOW).all()
    assert (agg.field("count") == 0).all()


def _same_batch(a: WindowBatch, b: WindowBatch) -> None:
    """Bit for bit (NaN equal to NaN)."""
    for name in hw._BATCH_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_one_window_batches_match_the_run_path_bit_for_bit(data: st.DataObject) -> None:
    """Readings that ``add`` folds with ``_fold_window`` (from a batch's first reading on,
    while they stay in its window, when that window is open) give the same results and the
    same state, bit for bit, as through ``_accumulate``, and the contract of the naive ring
    (advance, late, early, NaN) holds. The twin aggregator folds those prefixes through
    ``_accumulate``; the rest of a batch over several windows (straggling readings of
    older ones) takes it in both."""
    wn = data.draw(st.sampled_from([1, 7, 10]), label="window_ns")
    n_slots = data.draw(st.integers(1, 4), label="n_slots")
    cap = data.draw(st.sampled_from([1, 4, 64]), label="capacity")
    fast, twin = WindowAggregator(wn, n_slots, cap), WindowAggregator(wn, n_slots, cap)
    ref = NaiveRing(wn, n_slots)
    calls = [0]
    real_one = hw._fold_window

    def one(*args: Any) -> Any:
        calls[0] += 1
        return real_one(*args)

    def one_via_runs(s: np.ndarray, t: np.ndarray, v: np.ndarray, i0: int, w: int, lo: int,
                     window_ns: int, slot: int, sw: np.ndarray, sr: np.ndarray, capacity: int,
                     ixf: np.ndarray, hf: np.ndarray, cf: np.ndarray
                     ) -> tuple[int, int, int, int]:
        # the prefix _fold_window folds: readings of window w with ids in range
        j = i0
        while j < len(s) and t[j] // window_ns == w and 0 <= s[j] < capacity:
            j += 1
        buf = np.empty(len(s), np.int64)
        tally = np.zeros(6, np.int64)
        end, stop, _ = hw._accumulate(s[:j], t[:j], v[:j], i0, window_ns, w, w, w, 1, 0,
                                      hw.I64_MAX, sw, sr, capacity, ixf, hf, cf, buf, buf,
                                      buf, tally)
        assert end == j and stop == hw._DONE and tally[2:5].tolist() == [0, 0, 0]
        return end, int(tally[0]), int(tally[1]), int(tally[5])

    w = data.draw(st.integers(-20, 20), label="first window")
    for _ in range(data.draw(st.integers(1, 8), label="steps")):
        w += data.draw(st.integers(-n_slots - 1, n_slots + 1), label="window step")
        n = data.draw(st.integers(0, 40))
        series = np.asarray(data.draw(st.lists(st.integers(0, 70), min_size=n, max_size=n)),
                            dtype=np.int64)
        back = data.draw(st.sampled_from([0, 0, 1, n_slots + 1]), label="windows back")
        ts = np.asarray(data.draw(st.lists(st.integers((w - back) * wn, (w + 1) * wn - 1),
                                           min_size=n, max_size=n)), dtype=np.int64)
        if n and data.draw(st.booleans()):  # mostly the newest window, a few stragglers
            ts = np.where(ts >= w * wn - wn // 2, ts % wn + w * wn, ts)
        value = data.draw(values(n))
        max_window = data.draw(st.none() | st.integers(w - 2, w + 2), label="max_window")
        before = calls[0]
        hw._fold_window = one  # type: ignore[assignment]  # a counting stand-in
        try:
            got = fast.add(series, ts, value, max_window=max_window)
        finally:
            hw._fold_window = real_one
        hw._fold_window = one_via_runs  # type: ignore[assignment]
        try:
            other = twin.add(series, ts, value, max_window=max_window)
        finally:
            hw._fold_window = real_one
        want = ref.add(series.tolist(), ts.tolist(), value.tolist(), max_window)
        _check_add(got, want, n)
        w_hi = int(ts.max()) // wn if n else 0
        took = n > 0 and int(ts.min()) // wn == w_hi and ref.floor is not None and (
            ref.floor <= w_hi and (max_window is None or w_hi <= max_window))
        assert calls[0] - before >= int(took)  # and again after a stop (new id, new window)
        assert n > 0 or calls[0] == before
        assert (got.n_added, got.n_nan) == (other.n_added, other.n_nan)
        for idx in (got.late_idx, got.early_idx):
            assert idx.dtype == np.int64 and idx.base is None and idx.flags.writeable
        assert got.late_idx.tolist() == other.late_idx.tolist()
        assert got.early_idx.tolist() == other.early_idx.tolist()
        _same_batch(got.closed, other.closed)
        for a, b in zip(fast._views, twin._views, strict=True):  # the raw state, bit for bit
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8))
        assert np.array_equal(fast.slot_window, twin.slot_window)
        assert np.array_equal(fast._slot_rows, twin._slot_rows)
        assert fast.n_series == twin.n_series and fast.capacity == twin.capacity
    _same_batch(fast.close_all(), twin.close_all())


@settings(max_examples=60, deadline=None)
@given(readings(max_n=200), st.integers(1, 50))
def test_streaming_in_batches_equals_one_shot(r: tuple, n_batches: int) -> None:
    """With enough slots nothing is late, and batching does not change the result."""
    series, ts, value, wn = r
    span = 1 if len(ts) == 0 else int(ts.max() // wn - ts.min() // wn + 1)
    agg = WindowAggregator(wn, span, capacity=2)
    order = np.argsort(ts, kind="stable")  # in time order, so the ring never drops one
    s, t, v = series[order], ts[order], value[order]
    out = []
    for part in np.array_split(np.arange(len(s)), n_batches):
        res = agg.add(s[part], t[part], v[part])
        assert len(res.late_idx) == 0 and len(res.early_idx) == 0
        out.append(res.closed)
    out.append(agg.close_all())
    got = WindowBatch.concat(out)
    assert_rows_match(batch_rows(got), _rows(s, t, v, wn))


# --------------------------------------------------------------------------------------------
# semantics, one at a time
# --------------------------------------------------------------------------------------------


def _arr(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float64)


def _ids(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def test_negative_timestamps_use_floor_division() -> None:
    b = aggregate_batch(_ids(0, 0, 0), _ids(-1, -10, 0), _arr(1, 2, 3), 10)
    assert b.window_start_ns.tolist() == [-10, 0]
    assert b.count.tolist() == [2, 1]


def test_first_and_last_ties() -> None:
    # equal timestamps: first is the earliest added, last the latest added
    b = aggregate_batch(_ids(0, 0, 0, 0), _ids(5, 5, 3, 5), _arr(1, 2, 3, 4), 10)
    assert (b.first[0], b.first_ts[0]) == (3.0, 3)
    assert (b.last[0], b.last_ts[0]) == (4.0, 5)


def test_nan_only_group_has_no_row_and_is_counted() -> None:
    agg = WindowAggregator(10, 2)
    res = agg.add(_ids(0, 1, 1), _ids(1, 2, 3), _arr(np.nan, 5, np.nan))
    assert (res.n_added, res.n_nan) == (1, 2)
    out = agg.close_all()
    assert out.series.tolist() == [1]
    assert out.count.tolist() == [1]


def test_infinity_is_a_number() -> None:
    b = aggregate_batch(_ids(0, 0), _ids(1, 2), _arr(np.inf, 1.0), 10)
    assert b.count[0] == 2 and b.sum[0] == np.inf and b.max[0] == np.inf and b.min[0] == 1.0


def test_ring_advance_closes_and_late_readings_are_reported() -> None:
    agg = WindowAggregator(10, 2)
    r1 = agg.add(_ids(0, 0), _ids(1, 11), _arr(1, 2))  # windows 0 and 1 open
    assert len(r1.closed) == 0 and r1.n_added == 2
    r2 = agg.add(_ids(0, 0, 0), _ids(25, 3, 12), _arr(3, 4, 5))  # window 2 evicts window 0
    assert r2.closed.window_start_ns.tolist() == [0] and r2.closed.count.tolist() == [1]
    assert r2.late_idx.tolist() == [1]  # ts 3 is in the window just closed
    assert r2.n_added == 2
    out = agg.close_until(30)  # windows 1 and 2 end at 20 and 30
    assert out.window_start_ns.tolist() == [10, 20]
    assert out.count.tolist() == [2, 1]
    assert agg.add(_ids(0), _ids(29), _arr(1)).late_idx.tolist() == [0]
    assert agg.add(_ids(0), _ids(30), _arr(1)).n_added == 1


def test_a_batch_wider_than_the_ring_closes_its_oldest_window_as_it_goes() -> None:
    """Readings are taken in order: the third one advances the ring past window 0, which
    closes holding the first one (it arrived while window 0 was open), exactly as if the
    readings had come one batch each."""
    whole, split = WindowAggregator(10, 2), WindowAggregator(10, 2)
    res = whole.add(_ids(0, 0, 0), _ids(0, 10, 20), _arr(1, 2, 3))
    assert res.late_idx.tolist() == [] and res.n_added == 3
    assert res.closed.window_start_ns.tolist() == [0] and res.closed.sum.tolist() == [1.0]
    assert whole.open_windows().tolist() == [1, 2]
    parts = [split.add(_ids(0), _ids(t), _arr(v)) for t, v in ((0, 1), (10, 2), (20, 3))]
    assert [len(p.closed) for p in parts] == [0, 0, 1]
    _same_batch(res.closed, parts[2].closed)
    _same_batch(whole.close_all(), split.close_all())


def test_early_readings_do_not_advance_the_ring() -> None:
    agg = WindowAggregator(10, 3)
    agg.add(_ids(0), _ids(5), _arr(1))
    res = agg.add(_ids(0, 1), _ids(10**15, 7), _arr(9, 2), max_window=5)
    assert res.early_idx.tolist() == [0]
    assert res.n_added == 1 and len(res.closed) == 0
    assert agg.newest_window == 0
    out = agg.close_all()
    assert out.count.tolist() == [1, 1] and out.series.tolist() == [0, 1]


def test_capacity_grows_by_doubling_and_keeps_state() -> None:
    agg = WindowAggregator(10, 2, capacity=2)
    agg.add(_ids(0, 1), _ids(1, 1), _arr(1, 2))
    agg.add(_ids(9, 0), _ids(2, 3), _arr(3, 4))
    assert agg.capacity == 16 and agg.n_series == 10
    out = agg.close_all()
    assert out.series.tolist() == [0, 1, 9]
    assert out.count.tolist() == [2, 1, 1]
    assert out.sum.tolist() == [5.0, 2.0, 3.0]


def test_never_used_records_are_empty_in_windows_starting_at_or_before_zero() -> None:
    # windows starting at 0 and before: zeroed (never-used) state must not read as records
    for first in (0, -5):  # windows starting at 0 and at -10
        agg = WindowAggregator(10, 3, capacity=8)
        agg.add(_ids(5, 2), _ids(first, first + 1), _arr(1, 2))
        agg.add(_ids(7), _ids(first + 3), _arr(3))
        rows = agg.close_all()
        assert rows.series.tolist() == [2, 5, 7] and rows.count.tolist() == [1, 1, 1]


def test_records_come_from_the_front_of_the_slot_pool_and_closing_frees_them() -> None:
    # memory follows the records windows hold, not the series count: a series takes the
    # slot pool's next record when it first reports in the window
    agg = WindowAggregator(10, 2, capacity=1 << 16)
    agg.add(_ids(900, 7, 900, 40_000), _ids(1, 2, 3, 4), _arr(1, 2, 3, 4))
    slot = 0  # window 0
    ix = agg._index[slot]
    assert ix[900] == 1 and ix[7] == 2 and ix[40_000] == 3
    assert np.count_nonzero(agg._index) == 3 and agg._slot_rows.tolist() == [3, 0]
    first = agg.close_until(10)
    assert first.series.tolist() == [7, 900, 40_000] and first.count.tolist() == [1, 2, 1]
    assert np.count_nonzero(agg._index) == 0 and agg._slot_rows.tolist() == [0, 0]
    agg.add(_ids(5), _ids(21), _arr(9))  # window 2: slot 0 again, its pool from record 0
    assert agg._index[slot][5] == 1 and agg._slot_rows.tolist() == [1, 0]
    again = agg.close_all()
    assert again.series.tolist() == [5] and again.sum.tolist() == [9.0]
    assert again.first.tolist() == [9.0] and again.first_ts.tolist() == [21]


def test_state_grows_and_keeps_records_with_real_clocks() -> None:
    t0 = 1_763_712_000_000_000_000
    agg = WindowAggregator(10_000_000_000, 5, capacity=4)
    agg.add(_ids(0, 3), _ids(t0, t0 + 1), _arr(1, 2))
    agg.add(_ids(3, 40, 0), _ids(t0 + 2, t0 + 3, t0 + 4), _arr(3, 4, 5))  # grows past 4
    assert agg.capacity == 64
    out = agg.close_all()
    assert out.series.tolist() == [0, 3, 40]
    assert out.count.tolist() == [2, 2, 1]
    assert out.sum.tolist() == [6.0, 5.0, 4.0]
    assert out.first.tolist() == [1.0, 2.0, 4.0] and out.last.tolist() == [5.0, 3.0, 4.0]


def test_close_until_before_any_reading_makes_old_windows_late() -> None:
    agg = WindowAggregator(10, 4)
    assert len(agg.close_until(100)) == 0
    res = agg.add(_ids(0, 0), _ids(95, 105), _arr(1, 2))
    assert res.late_idx.tolist() == [0] and res.n_added == 1


def test_readonly_inputs_are_accepted() -> None:
    ts = np.frombuffer(np.array([1, 2, 3], dtype="<i8").tobytes(), dtype="<i8")
    val = np.frombuffer(_arr(1, 2, 3).tobytes(), dtype="<f8")
    assert not ts.flags.writeable
    b = aggregate_batch(_ids(0, 0, 1), ts, val, 10)
    assert b.count.tolist() == [2, 1]


def test_window_batch_helpers() -> None:
    b = aggregate_batch(_ids(0, 1, 1), _ids(1, 2, 3), _arr(1, 2, 4), 10)
    assert len(b) == 2
    both = WindowBatch.concat([b, WindowBatch.empty(), b])
    assert len(both) == 4 and both.series.tolist() == [0, 1, 0, 1]
    assert len(WindowBatch.concat([])) == 0
    var = b.variance()
    assert math.isnan(var[0]) and var[1] == 2.0
    with pytest.raises(ValueError, match="length"):
        WindowBatch(*([np.zeros(2)] * 11 + [np.zeros(3)]))


@pytest.mark.parametrize("bad, err, hint", [
    ({"series": np.zeros(3, np.int32)}, TypeError, r"astype\(np.int64\)"),
    ({"ts_ns": [1, 2, 3]}, TypeError, r"np.asarray"),
    ({"value": np.zeros(6)[::2]}, ValueError, r"ascontiguousarray"),
    ({"value": np.zeros((3, 1))}, ValueError, r"ravel"),
    ({"value": np.zeros(4)}, ValueError, r"equal lengths"),
    ({"series": np.array([0, -1, 2])}, ValueError, r"series ids must be >= 0"),
    ({"ts_ns": np.array([0, -(2**63), 2])}, ValueError, r"reserved"),
])
def test_bad_input_says_how_to_fix(bad: dict, err: type[Exception], hint: str) -> None:
    """Arrays of the wrong kind are refused by both; a bad *reading* is refused by the
    one-shot ``aggregate_batch`` and returned as invalid by the streaming ``add``."""
    args = {"series": _ids(0, 1, 2), "ts_ns": _ids(0, 1, 2), "value": _arr(1, 2, 3)}
    args.update(bad)
    with pytest.raises(err, match=hint):
        aggregate_batch(args["series"], args["ts_ns"], args["value"], 10)
    agg = WindowAggregator(10, 2)
    if "must be >= 0" in hint or "reserved" in hint:
        res = agg.add(args["series"], args["ts_ns"], args["value"])
        assert res.invalid_idx.tolist() == [1] and res.n_added == 2
        return
    with pytest.raises(err, match=hint):
        agg.add(args["series"], args["ts_ns"], args["value"])


def test_invalid_readings_are_returned_not_aggregated() -> None:
    """INT64_MIN (reserved), a window that would end past INT64_MAX, a negative id: each
    is returned in ``invalid_idx`` wherever it falls in a batch, and changes nothing."""
    wn = 10
    top = (2**63 // wn) * wn  # the first timestamp of a window ending past INT64_MAX
    agg = WindowAggregator(wn, 3)
    res = agg.add(_ids(0, 0, 1, -3, 2), np.array([-(2**63), 5, top, 7, 2**63 - 1]),
                  _arr(1, 2, 3, 4, 5))
    assert res.invalid_idx.tolist() == [0, 2, 3, 4] and res.n_added == 1
    out = agg.close_all()
    assert out.series.tolist() == [0] and out.sum.tolist() == [2.0]
    assert agg.n_series == 1
    # INT64_MIN inside the lowest window's run, and the last valid timestamp, are told apart
    for low_wn in (10, 8):  # the window of INT64_MIN starts below it (10) or at it (8)
        low = WindowAggregator(low_wn, 2)
        res = low.add(_ids(0, 0, 0), np.array([-(2**63) + 1, -(2**63), -(2**63) + 2]),
                      _arr(1, 2, 3))
        assert res.invalid_idx.tolist() == [1] and res.n_added == 2
        out = low.close_all()
        assert out.count.tolist() == [2] and out.sum.tolist() == [4.0]
    hi = WindowAggregator(wn, 2)
    res = hi.add(_ids(0, 0), np.array([top - 1, top]), _arr(1, 2))
    assert res.invalid_idx.tolist() == [1] and res.n_added == 1


def test_constructor_and_merge_validation() -> None:
    with pytest.raises(ValueError, match="window_ns"):
        WindowAggregator(0, 2)
    with pytest.raises(ValueError, match="n_slots"):
        WindowAggregator(10, 0)
    with pytest.raises(ValueError, match="past INT64_MAX"):
        aggregate_batch(_ids(0), _ids(2**63 - 2), _arr(1), 10)
    b = aggregate_batch(_ids(0), _ids(1), _arr(1), 10)
    bad = dataclasses.replace(b, count=b.count.astype(np.float64))
    with pytest.raises(TypeError, match=r"b.count must be int64"):
        merge_partials(b, bad)
    with pytest.raises(ValueError, match="unknown field"):
        WindowAggregator(10, 2).field("median")


def test_jittered_timestamps_use_the_ring_fast_path_correctly() -> None:
    """Readings alternating between ring windows (cache misses every reading)."""
    rng = np.random.default_rng(3)
    n, wn = 20_000, 1_000_000_007  # odd window length: no power-of-two luck
    t0 = 1_700_000_000_000_000_000
    series = np.arange(n, dtype=np.int64) % 97
    ts = t0 + np.sort(rng.integers(0, 40 * wn, n)) + rng.integers(0, 3 * wn, n)
    value = rng.normal(0, 1, n)
    agg = WindowAggregator(wn, 8, capacity=128)
    out, late = [], []
    for part in np.array_split(np.arange(n), 37):
        res = agg.add(series[part], ts[part], value[part])
        out.append(res.closed)
        late.extend(part[res.late_idx].tolist())
    out.append(agg.close_all())
    keep = np.ones(n, bool)
    keep[late] = False
    assert_rows_match(batch_rows(WindowBatch.concat(out)),
                      _rows(series[keep], ts[keep], value[keep], wn))


def test_reused_slot_holds_only_the_new_window() -> None:
    """Closing does not clear records: a slot's next window must not see the old ones."""
    agg = WindowAggregator(10, 2, capacity=8)
    agg.add(_ids(0, 1, 2, 3), _ids(1, 2, 3, 4), _arr(1, 2, 3, 4))  # window 0 -> slot 0
    first = agg.close_until(10)
    assert first.series.tolist() == [0, 1, 2, 3]
    agg.add(_ids(1, 1), _ids(21, 25), _arr(5, 7))  # window 2 -> slot 0 again
    count = agg.field("count")
    assert count[0].tolist() == [0, 2, 0, 0, 0, 0, 0, 0] and (count[1] == 0).all()
    assert agg.field("sum")[0, 1] == 12.0 and agg.field("m2")[0, 1] == 2.0
    out = agg.close_all()
    assert out.series.tolist() == [1] and out.count.tolist() == [2]
    assert (out.sum[0], out.m2[0], out.first[0], out.last[0]) == (12.0, 2.0, 5.0, 7.0)


def test_open_window_fields_match_closed_rows() -> None:
    """``field`` (what snapshots of open windows read) agrees with what closing emits."""
    rng = np.random.default_rng(5)
    n = 3000
    series = rng.integers(0, 40, n)
    ts = np.sort(rng.integers(0, 30, n))
    value = rng.normal(1e6, 3.0, n)
    agg = WindowAggregator(10, 3, capacity=64)
    agg.add(series, ts, value)
    snap = {name: agg.field(name).copy() for name in
            ("count", "sum", "m2", "min", "max", "first", "first_ts", "last", "last_ts")}
    out = agg.close_all()
    slot = out.window_start_ns // 10 % 3
    for name, col in snap.items():
        assert np.array_equal(col[slot, out.series], getattr(out, name)), name


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_batches=st.integers(1, 6),
       capacity=st.sampled_from([4, 64]))
def test_snapshot_is_what_closing_would_emit(seed: int, n_batches: int, capacity: int) -> None:
    """``snapshot(w)`` of every open window, taken between batches, equals the rows closing
    ``w`` at that moment emits (a twin fed the same batches closes it), and leaves the state
    as it was: the twins' final rows agree."""
    rng = np.random.default_rng(seed)
    agg, twin = WindowAggregator(10, 3, capacity=capacity), None
    fed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for b in range(n_batches):
        n = int(rng.integers(0, 60))
        series = rng.integers(0, 90, n)
        ts = rng.integers(10 * b, 10 * b + 25, n)
        value = rng.normal(1e3, 5.0, n)
        value[rng.random(n) < 0.05] = np.nan
        fed.append((series, ts, value))
        agg.add(series, ts, value)
        for w in agg.open_windows().tolist():
            twin = WindowAggregator(10, 3, capacity=capacity)
            for s_, t_, v_ in fed:
                twin.add(s_, t_, v_)
            closed = twin.close_until((int(w) + 1) * 10)
            want = closed.take(np.flatnonzero(closed.window_start_ns == int(w) * 10))
            _assert_same_batch(agg.snapshot(int(w)), want)
    assert len(agg.snapshot(10**6)) == 0  # a window no slot holds
    if twin is not None:
        twin = WindowAggregator(10, 3, capacity=capacity)
        for s_, t_, v_ in fed:
            twin.add(s_, t_, v_)
        _assert_same_batch(agg.close_all(), twin.close_all())


def _assert_same_batch(got: WindowBatch, want: WindowBatch) -> None:
    """Bit for bit, column by column (the same kernel wrote both)."""
    for f in dataclasses.fields(WindowBatch):
        g, w = getattr(got, f.name), getattr(want, f.name)
        assert g.dtype == w.dtype and np.array_equal(g, w, equal_nan=g.dtype.kind == "f"), f.name


@pytest.mark.parametrize("offset, scale", [(0.0, 1.0), (1e9, 1e-3), (-1e12, 1.0),
                                           (1e6, 1e3)])
def test_shifted_sums_keep_m2_accurate(offset: float, scale: float) -> None:
    """Sums are shifted by a record's first value: accurate on a large offset, and when that
    first value is an outlier, over many readings."""
    rng = np.random.default_rng(11)
    n = 20_000
    value = offset + scale * rng.normal(0.0, 1.0, n)
    value[0] = offset + 1e4 * scale  # the shift: far from the mean
    series = np.zeros(n, dtype=np.int64)
    ts = np.arange(n, dtype=np.int64)
    got = aggregate_batch(series, ts, value, n)
    assert_rows_match(batch_rows(got), _rows(series, ts, value, n))


def test_windows_starting_below_int64_min() -> None:
    """The lowest window (its start is below INT64_MIN) still aggregates correctly."""
    t0 = -(2**63) + 1
    agg = WindowAggregator(10, 2, capacity=2)
    res = agg.add(_ids(0, 0, 1), _ids(t0, t0 + 3, t0 + 1), _arr(1, 2, 3))
    assert res.n_added == 3
    out = agg.close_all()
    assert out.series.tolist() == [0, 1] and out.count.tolist() == [2, 1]
    assert out.sum.tolist() == [3.0, 3.0] and out.last_ts.tolist() == [t0 + 3, t0 + 1]


def test_pandas_baselines_compute_what_the_kernel_computes() -> None:
    """The bench's pandas baselines (``citybrain bench``) aggregate the same rows (pandas
    also lists groups of only NaN, with count 0: the kernel has no row for them)."""
    pytest.importorskip("pandas")
    from bench.reference import pandas_window_aggregate, pandas_window_aggregate_two_keys
    from bench.run import city_like_readings
    series, ts, value = city_like_readings(50_000, 700)
    value[::13] = np.nan
    value[:700 * 10] = np.nan  # the first window: only NaN
    wn = 10_000_000_000
    got = aggregate_batch(series, ts, value, wn)
    fast: Any = pandas_window_aggregate(series, ts, value, wn)
    two: Any = pandas_window_aggregate_two_keys(series, ts, value, wn)
    fast = fast[fast["count"] > 0]
    two = two[two["count"] > 0]
    assert len(got) == len(fast) == len(two) > 0
    pos = {(int(s), int(w) * wn): i for i, (s, w) in
           enumerate(zip(fast["series"], fast["window"], strict=True))}
    rows = [pos[(int(s), int(w))] for s, w in zip(got.series, got.window_start_ns, strict=True)]
    keys = list(zip(got.series.tolist(), (got.window_start_ns // wn).tolist(), strict=True))
    for col in ("count", "sum", "min", "max", "mean", "last"):
        np.testing.assert_allclose(fast[col].to_numpy()[rows], getattr(got, col), rtol=1e-12)
        np.testing.assert_allclose(two[col].loc[keys].to_numpy(), getattr(got, col),
                                   rtol=1e-12)


def test_add_reuses_index_scratch_without_aliasing_results() -> None:
    """Late/early indices come from scratch the aggregator keeps between batches: each
    result is its own copy, correct across batches of different sizes."""
    agg = WindowAggregator(10, 2)
    agg.add(np.array([0]), np.array([100]), np.array([1.0]))  # ring: windows 9, 10
    big = agg.add(np.arange(6), np.array([5, 105, 1, 999, 2, 101]), np.ones(6), max_window=50)
    assert big.late_idx.tolist() == [0, 2, 4] and big.early_idx.tolist() == [3]
    small = agg.add(np.array([1, 2]), np.array([3, 4000]), np.ones(2), max_window=50)
    assert small.late_idx.tolist() == [0] and small.early_idx.tolist() == [1]
    assert big.late_idx.tolist() == [0, 2, 4] and big.early_idx.tolist() == [3]
    for idx in (big.late_idx, big.early_idx, small.late_idx, small.early_idx):
        assert idx.base is None and idx.flags.writeable
    assert len(small.closed) == 0 and small.closed.series.dtype == np.int64
