"""Multi-resolution windows: rollups equal direct aggregation; watermark and lateness rules."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.aggregation import MultiResolutionWindows, resolution_label
from hub.window import WindowBatch, aggregate_batch

S = 1_000_000_000
T0 = 1_763_712_000 * S


def finals(emissions: list, label: str) -> WindowBatch:
    return WindowBatch.concat([e.batch() for e in emissions if e.label == label and e.final])


def keyed(b: WindowBatch) -> dict[tuple[int, int], tuple[int, float, float, float]]:
    return {(int(s), int(w)): (int(c), float(x), float(lo), float(hi)) for s, w, c, x, lo, hi
            in zip(b.series, b.window_start_ns, b.count, b.sum, b.min, b.max, strict=True)}


def assert_same(a: WindowBatch, b: WindowBatch) -> None:
    ka, kb = keyed(a), keyed(b)
    assert ka.keys() == kb.keys()
    for k, (c, x, lo, hi) in ka.items():
        c2, x2, lo2, hi2 = kb[k]
        assert (c, lo, hi) == (c2, lo2, hi2)
        assert np.isclose(x, x2, rtol=1e-12, atol=1e-9)


def test_labels() -> None:
    assert [resolution_label(int(s * S)) for s in (10, 60, 3600, 86400, 0.5)] == \
        ["10s", "1m", "1h", "1d", "0.5s"]


@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(50, 3000))
@settings(max_examples=25, deadline=None)
def test_rollups_equal_direct_aggregation(seed: int, n_series: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    # In-order arrival (small jitter within the lateness), spread over ~2.5 hours.
    ts = np.sort(T0 + rng.integers(0, 9000 * S, n))
    series = rng.integers(0, n_series, n).astype(np.int64)
    value = np.round(rng.normal(50, 20, n), 2)
    mrw = MultiResolutionWindows((10, 60, 3600), lateness_s=30)
    emissions = []
    for lo in range(0, n, 97):
        hi = min(n, lo + 97)
        clock = int(ts[hi - 1])
        out = mrw.add(series[lo:hi], ts[lo:hi], value[lo:hi], clock)
        assert out.late == 0 and out.early == 0
        emissions += out.emissions + mrw.advance(clock)
    emissions += mrw.close_all()
    for label, seconds in (("10s", 10), ("1m", 60), ("1h", 3600)):
        assert_same(finals(emissions, label), aggregate_batch(series, ts, value, seconds * S))


def test_on_time_firing_then_reaggregation_then_late() -> None:
    mrw = MultiResolutionWindows((10, 60), lateness_s=30)
    one = np.array([0], dtype=np.int64)
    out = mrw.add(one, np.array([T0 + 1 * S]), np.array([1.0]), T0 + 1 * S)
    assert out.added == 1 and not out.emissions
    # The clock passes the end of window [T0, T0+10s): it fires on time, not final.
    em = mrw.advance(T0 + 11 * S)
    assert [(e.label, e.final, int(e.batch().count[0])) for e in em] == [("10s", False, 1)]
    # A late reading inside the lateness is still aggregated and counted as such.
    out = mrw.add(one, np.array([T0 + 5 * S]), np.array([3.0]), T0 + 12 * S)
    assert (out.added, out.reaggregated, out.late) == (1, 1, 0)
    # The watermark (clock − 30 s) passes the window end: final emission with both readings.
    em = mrw.advance(T0 + 41 * S)
    final = [e for e in em if e.final and e.label == "10s"]
    assert len(final) == 1 and int(final[0].batch().count[0]) == 2
    assert float(final[0].batch().sum[0]) == 4.0
    # Too late now: not aggregated, counted.
    out = mrw.add(one, np.array([T0 + 6 * S]), np.array([5.0]), T0 + 42 * S)
    assert (out.added, out.late) == (0, 1)
    em = mrw.close_all()
    minute = finals(em, "1m")
    assert int(minute.count.sum()) == 2 and float(minute.sum.sum()) == 4.0


def test_final_rows_say_whether_they_changed_since_their_on_time_emission() -> None:
    """A 10 s window emitted on time that no reading reached since is ``unchanged`` in its
    final emission (its stored values are already right); one a late reading reached, or
    one closed before the clock passed its end (never emitted on time), is not."""
    mrw = MultiResolutionWindows((10, 60), lateness_s=30)
    ids = np.array([0, 1], dtype=np.int64)
    mrw.add(ids, np.array([T0 + 1 * S, T0 + 2 * S]), np.array([1.0, 2.0]), T0 + 2 * S)
    mrw.add(ids, np.array([T0 + 11 * S, T0 + 12 * S]), np.array([1.0, 2.0]), T0 + 12 * S)
    assert [e.final for e in mrw.advance(T0 + 21 * S)] == [False, False]  # both on time
    out = mrw.add(ids[:1], np.array([T0 + 13 * S]), np.array([5.0]), T0 + 22 * S)
    assert out.reaggregated == 1  # window [T0+10s, T0+20s) changed after it fired
    em = [e for e in mrw.advance(T0 + 51 * S) if e.final and e.label == "10s"]
    assert len(em) == 1 and em[0].unchanged is not None
    by_window = dict(zip(em[0].batch().window_start_ns.tolist(), em[0].unchanged.tolist(),
                         strict=True))
    assert by_window == {T0: True, T0 + 10 * S: False}
    # never on time: a reading 60 s ahead advances the ring past a window that has not fired
    far = MultiResolutionWindows((10, 60), lateness_s=30)
    far.add(ids[:1], np.array([T0 + 1 * S]), np.array([1.0]), T0 + 1 * S)
    out = far.add(ids[:1], np.array([T0 + 61 * S]), np.array([1.0]), T0 + 61 * S)
    closed = [e for e in out.emissions if e.label == "10s"]
    assert len(closed) == 1 and (closed[0].unchanged is None or not closed[0].unchanged.any())


def test_far_future_reading_is_early_and_does_not_flush() -> None:
    mrw = MultiResolutionWindows((10,), lateness_s=30, max_ahead_s=300)
    s = np.zeros(2, dtype=np.int64)
    out = mrw.add(s, np.array([T0, T0 + 86400 * S]), np.array([1.0, 2.0]), T0)
    assert (out.added, out.early, out.late) == (1, 1, 0)
    assert not out.emissions


def test_pending_hour_includes_the_minute_in_progress() -> None:
    mrw = MultiResolutionWindows((10, 60, 3600), lateness_s=30)
    one = np.zeros(3, dtype=np.int64)
    mrw.add(one, np.array([T0 + 1 * S, T0 + 15 * S, T0 + 25 * S]), np.array([1.0, 2.0, 4.0]),
            T0 + 25 * S)
    mrw.advance(T0 + 70 * S)  # 10 s windows final (watermark T0+40 s); minute 0 still open
    hour = mrw.pending("1h")
    assert int(hour.count.sum()) == 3 and float(hour.sum.sum()) == 7.0
    assert set(hour.window_start_ns.tolist()) == {T0 // (3600 * S) * 3600 * S}


def test_pending_hour_of_selected_series_only() -> None:
    """``select`` keeps only the series a caller reads; theirs are exactly as without it."""
    mrw = MultiResolutionWindows((10, 60, 3600), lateness_s=30)
    series = np.array([0, 1, 2, 3, 1, 2], dtype=np.int64)
    ts = T0 + np.array([1, 2, 3, 15, 25, 65]) * S
    mrw.add(series, ts, np.arange(6.0), T0 + 65 * S)
    mrw.advance(T0 + 110 * S)
    everything = mrw.pending("1h")
    odd = mrw.pending("1h", select=lambda s: s % 2 == 1)
    assert odd.series.tolist() == [1, 3]
    keep = np.isin(everything.series, [1, 3])
    for name in ("series", "window_start_ns", "count", "sum", "min", "max", "first", "last"):
        assert np.array_equal(getattr(odd, name), getattr(everything, name)[keep]), name
    assert len(mrw.pending("1h", select=lambda s: np.zeros(len(s), bool))) == 0
