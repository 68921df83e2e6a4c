"""hub.rollup: coarse windows merged in place, against the sorted-table merge they replaced."""

from __future__ import annotations

from dataclasses import replace
from unittest.mock import patch

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import hub.rollup as rollup_module
from hub.arrays import lazy_zeros
from hub.rollup import ClosedWindow, Rollup
from hub.window import WindowBatch, aggregate_batch, merge_partials
from tests.hub.test_window import _assert_sorted, _same_batch, readings


class SortedRollup:
    """The reference: pending rows as one table sorted by (window, series), merged with
    ``merge_partials`` on every add (the implementation ``Rollup`` replaced)."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self.pending = WindowBatch.empty()

    def add_partials(self, rows: WindowBatch) -> None:
        if len(rows):
            start = (rows.window_start_ns // self.window_ns) * self.window_ns
            self.pending = merge_partials(self.pending, replace(rows, window_start_ns=start))

    def close_until(self, watermark_ns: int) -> WindowBatch:
        p = self.pending
        done = p.window_start_ns + self.window_ns <= watermark_ns
        self.pending = p.take(~done)
        return p.take(done)


def _with_identity_rows(rows: WindowBatch, ids: list[int]) -> WindowBatch:
    """``rows`` followed by rows of count 0 (identities: they must add nothing) for
    ``ids``, with garbage statistics."""
    n = len(ids)
    if not n:
        return rows
    i = np.asarray(ids, dtype=np.int64)
    start = np.full(n, int(rows.window_start_ns[0]) if len(rows) else 0, dtype=np.int64)
    junk = np.full(n, 7.5)
    zero = np.zeros(n, dtype=np.int64)
    return WindowBatch.concat([rows, WindowBatch(i, start, zero, junk, junk, junk, junk, junk,
                                                 junk, zero, junk, zero)])


def _sliced(closed: list[ClosedWindow], size: int) -> WindowBatch:
    """The closed windows' rows read ``size`` at a time (checking the slices' lengths and
    that ``select`` and ``batch`` read the same rows), joined."""
    out = []
    for w in closed:
        whole = w.batch()
        parts = list(w.slices(size))
        assert [len(b) for b in parts[:-1]] == [size] * (len(parts) - 1)
        assert 0 < len(parts[-1]) <= size if parts else len(w) == 0
        got = WindowBatch.concat(parts)
        _same_batch(got, whole)
        assert len(w) == len(got)
        _same_batch(w.select(lambda ids: ids % 3 == 1), whole.take(whole.series % 3 == 1))
        out.append(got)
    return WindowBatch.concat(out)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_rollup_matches_the_sorted_merge_bit_for_bit(data: st.DataObject) -> None:
    fine = data.draw(st.sampled_from([1, 5, 10]), label="fine window")
    coarse = fine * data.draw(st.sampled_from([1, 3, 6]), label="fine windows per coarse")
    rollup = Rollup(coarse, capacity=data.draw(st.sampled_from([1, 4, 64])))
    # the index is read a few ids at a time, so closes and selects cross steps
    step = patch.object(rollup_module, "_STEP", data.draw(st.sampled_from([1, 3, 16, 1 << 20])))
    with step:
        _check_against_sorted(data, rollup, fine, coarse)


def _check_against_sorted(data: st.DataObject, rollup: Rollup, fine: int, coarse: int) -> None:
    ref = SortedRollup(coarse)
    clock = 0
    for _ in range(data.draw(st.integers(1, 8), label="steps")):
        action = data.draw(st.sampled_from(["add", "add", "add", "close", "pending"]))
        if action == "add":
            series, ts, value, _ = data.draw(readings(max_n=60, max_series=40, window_ns=fine,
                                                      t_lo=clock // fine - 8,
                                                      t_hi=clock // fine + 8))
            if len(series) == 0:
                continue
            rows = aggregate_batch(series, ts, value, fine)
            rows = _with_identity_rows(rows, data.draw(st.lists(st.integers(0, 70),
                                                                max_size=3)))
            rollup.add_partials(rows)
            ref.add_partials(rows)
        elif action == "close":
            clock += data.draw(st.integers(0, 3)) * coarse
            if data.draw(st.booleans(), label="gathered slice by slice"):
                got = _sliced(rollup.close_windows(clock), data.draw(st.integers(1, 7)))
            else:
                got = rollup.close_until(clock)
            _assert_sorted(got)
            _same_batch(got, ref.close_until(clock))
        else:
            keep = data.draw(st.sets(st.integers(0, 40)))

            def select(ids: np.ndarray, keep: set[int] = keep) -> np.ndarray:
                return np.isin(ids, list(keep))
            mask = select(ref.pending.series)
            _same_batch(rollup.pending(select), ref.pending.take(mask))
            _same_batch(rollup.pending(), ref.pending)
        assert len(rollup) == len(ref.pending)
    _same_batch(rollup.close_all(), ref.close_until(2**63 - 1))
    assert len(rollup) == 0 and len(rollup.pending()) == 0


def test_windows_are_merged_in_place_and_forgotten_when_closed() -> None:
    r = Rollup(60, capacity=4)
    r.add_partials(aggregate_batch(np.array([3, 1, 3], np.int64), np.array([1, 2, 11], np.int64),
                                   np.array([1.0, 5.0, 3.0]), 10))
    r.add_partials(aggregate_batch(np.array([1, 900], np.int64), np.array([25, 70], np.int64),
                                   np.array([7.0, 2.0]), 10))  # id 900 grows the state
    assert len(r) == 3  # (1, [0, 60)), (3, [0, 60)), (900, [60, 120))
    hour = r.close_until(60)
    assert hour.series.tolist() == [1, 3] and hour.count.tolist() == [2, 2]
    assert hour.sum.tolist() == [12.0, 4.0] and hour.m2.tolist() == [2.0, 2.0]
    assert hour.first.tolist() == [5.0, 1.0] and hour.last.tolist() == [7.0, 3.0]
    assert len(r) == 1 and r.close_until(60).series.tolist() == []
    assert r.close_all().series.tolist() == [900] and len(r) == 0


def test_lazy_zeros_are_zeros_and_writable() -> None:
    a = lazy_zeros((3, 5), np.int32)
    assert a.shape == (3, 5) and a.dtype == np.int32 and not a.any()
    a[2, 4] = 9
    assert a.sum() == 9
    assert lazy_zeros((0,), np.float64).shape == (0,)
