"""hub.anomaly detectors against the references in tests/naive_analytics.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.anomaly import (
    MAD_SCALE,
    REASON_DRIFT,
    REASON_NAMES,
    REASON_NONE,
    REASON_SPIKE,
    REASON_STUCK,
    DriftDetector,
    ScanRows,
    SpikeDetector,
    StuckDetector,
    history_value,
    peer_scores,
    pooled_log_scores,
    scan_stuck_and_spikes,
)
from tests.naive_analytics import (
    NaiveDrift,
    NaiveSpike,
    NaiveStuck,
    float32_kept,
    median_mad,
    naive_peer,
    naive_pooled_log,
)

NS = 1_000_000_000


@st.composite
def batch(draw: st.DrawFn, max_n: int = 80, max_series: int = 6,
          t0: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(series, ts_ns, value): few distinct values (long identical runs, MAD == 0 windows),
    a spike now and then, inf, NaN at the start / middle / end; timestamps mostly rising."""
    n = draw(st.integers(0, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, max_series))
    if draw(st.booleans()):
        series = (np.arange(n) % k).astype(np.int64)
    else:
        series = rng.integers(0, k, n).astype(np.int64)
    steps = rng.integers(0, 4 * NS, n)
    if draw(st.booleans()):
        steps[rng.random(n) < 0.1] = -NS  # a clock stepping back now and then
    ts = (t0 + np.cumsum(steps)).astype(np.int64)
    kind = draw(st.sampled_from(["levels", "normal", "mixed"]))
    if kind == "levels":
        v = rng.choice([0.0, 1.0, 1.0, 2.5], n)
    elif kind == "normal":
        v = rng.normal(10.0, 2.0, n)
    else:
        v = np.where(rng.random(n) < 0.5, 5.0, np.round(rng.normal(5.0, 1.0, n), 1))
    if n:
        spikes = rng.random(n) < 0.05
        v[spikes] = v[spikes] + rng.choice([-1e3, 1e3, 50.0], int(spikes.sum()))
        if draw(st.booleans()):
            a = draw(st.integers(0, n - 1))
            v[a:draw(st.integers(a, n))] = v[a]  # a constant run
        if draw(st.booleans()):
            v[rng.integers(0, n)] = draw(st.sampled_from([np.inf, -np.inf]))
        for where in draw(st.sets(st.sampled_from(["start", "middle", "end"]))):
            if where == "start":
                v[: draw(st.integers(1, n))] = np.nan
            elif where == "middle":
                v[n // 2] = np.nan
            else:
                v[-draw(st.integers(1, n)):] = np.nan
    return series, ts, v.astype(np.float64)


def _same(a: float, b: float, rtol: float = 0.0) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b) or rtol == 0.0:
        return a == b
    return abs(a - b) <= rtol * max(abs(a), abs(b))


# --------------------------------------------------------------------------------------------
# stuck
# --------------------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(st.data(), st.integers(1, 6), st.sampled_from([0.0, 3.0, 10.0]),
       st.sampled_from([0.0, 0.0, 0.05, 1.0]))
def test_stuck_matches_reference(data: st.DataObject, min_count: int, min_s: float,
                                 tol: float) -> None:
    det = StuckDetector(1, min_count=min_count, min_duration_s=min_s, tolerance=tol)
    ref = NaiveStuck(min_count, int(min_s * NS), tol)
    t0 = 0
    for _ in range(data.draw(st.integers(1, 4), label="batches")):
        s, t, v = data.draw(batch(t0=t0))
        got = det.update(s, t, v)
        want = ref.update(s.tolist(), t.tolist(), v.tolist())
        assert got.flag.tolist() == [w[0] for w in want]
        assert got.run_count.tolist() == [w[1] for w in want]
        assert got.run_ns.tolist() == [w[2] for w in want]
        assert (got.reason == np.where(got.flag, REASON_STUCK, REASON_NONE)).all()
        for sc, w in zip(got.score.tolist(), want, strict=True):
            assert _same(sc, w[2] / NS if w[1] else math.nan, 1e-15)
        if len(t):
            t0 = int(t.max())


def test_stuck_needs_both_count_and_duration() -> None:
    det = StuckDetector(2, min_count=3, min_duration_s=10.0)
    s = np.zeros(5, np.int64)
    t = np.array([0, 4, 8, 12, 13], np.int64) * NS
    r = det.update(s, t, np.array([7.0, 7.0, 7.0, 7.0, np.nan]))
    assert r.flag.tolist() == [False, False, False, True, False]  # 3 readings at 8 s: too short
    assert r.run_count.tolist() == [1, 2, 3, 4, 0]
    assert r.score[3] == 12.0 and np.isnan(r.score[4])
    # the run continues across batches and NaN; a new value restarts it
    r = det.update(np.zeros(2, np.int64), np.array([20, 21], np.int64) * NS,
                   np.array([7.0, 7.5]))
    assert r.flag.tolist() == [True, False] and r.run_count.tolist() == [5, 1]
    # a series id beyond the capacity grows the state
    r = det.update(np.array([40], np.int64), np.array([0], np.int64), np.array([1.0]))
    assert det.capacity >= 41 and r.run_count.tolist() == [1]
    det.reset(np.array([0], np.int64))
    assert det.update(np.zeros(1, np.int64), np.array([30 * NS]), np.array([7.5])
                      ).run_count.tolist() == [1]


# --------------------------------------------------------------------------------------------
# spike
# --------------------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(st.data(), st.sampled_from([1, 2, 3, 5, 8, 9, 16, 31, 33, 127]),
       st.sampled_from([3.0, 6.0]), st.sampled_from([0.0, 0.5]))
def test_spike_matches_reference(data: st.DataObject, window: int, k: float,
                                 floor: float) -> None:
    mp = data.draw(st.integers(1, window), label="min_periods")
    det = SpikeDetector(2, window=window, k=k, min_periods=mp, abs_floor=floor)
    ref = NaiveSpike(window, k, mp, floor)
    own = data.draw(st.sampled_from([None, 0.0, 0.25, 1.0]), label="series 1's own floor")
    if own is not None:
        det.set_floor(np.array([1]), own)
        ref.floors[1] = own
    for _ in range(data.draw(st.integers(1, 4), label="batches")):
        s, _, v = data.draw(batch(max_n=120))
        got = det.update(s, v)
        want = ref.update(s.tolist(), v.tolist())
        assert got.flag.tolist() == [w[0] for w in want]
        assert (got.reason == np.where(got.flag, REASON_SPIKE, REASON_NONE)).all()
        for i, w in enumerate(want):
            assert _same(got.median[i], w[2]), (i, got.median[i], w)  # exact: np.median
            assert _same(got.mad[i], w[3]), (i, got.mad[i], w)
            assert _same(got.score[i], w[1], 1e-13), (i, got.score[i], w)
    for sid, h in ref.hist.items():
        np.testing.assert_array_equal(det.history(sid), np.array(h, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# stuck and spike in one pass (what the analytics use): exactly the two detectors
# --------------------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(st.data(), st.integers(1, 6), st.sampled_from([0.0, 3.0]), st.sampled_from([0.0, 0.05]),
       st.sampled_from([1, 2, 3, 8, 9, 31]), st.sampled_from([0.0, 0.5]))
def test_scan_equals_both_detectors(data: st.DataObject, min_count: int, min_s: float,
                                    tol: float, window: int, floor: float) -> None:
    n_series = 6
    scored = np.asarray(data.draw(st.lists(st.booleans(), min_size=n_series,
                                           max_size=n_series), label="scored"))
    # the scan keeps state only for the scored series, in slots numbered in any order
    scored_ids = np.flatnonzero(scored)
    slot = np.full(n_series, -1, dtype=np.int64)
    slot[scored_ids] = data.draw(st.permutations(range(len(scored_ids))), label="slots")
    mp = data.draw(st.integers(1, window), label="min_periods")
    pairs = [(StuckDetector(1, min_count=min_count, min_duration_s=min_s, tolerance=tol),
              SpikeDetector(1, window=window, k=3.0, min_periods=mp, abs_floor=floor))
             for _ in range(2)]
    # pair 0 (the detectors' own updates) by series id, pair 1 (the scan) by slot
    opened = [np.zeros(n_series, dtype=bool), np.zeros(len(scored_ids), dtype=bool)]
    own = np.array(data.draw(st.lists(st.sampled_from([0.0, 0.2, 1.0]), min_size=n_series,
                                      max_size=n_series), label="own floors"))
    pairs[0][1].set_floor(scored_ids, own[scored_ids])
    pairs[1][1].set_floor(slot[scored_ids], own[scored_ids])

    def by_numpy(k: int, s: np.ndarray, t: np.ndarray, v: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The scan's documented equivalent on pair ``k``: both detectors' updates, then
        the episodes reading by reading; (rows, newly, score)."""
        stuck, spikes = pairs[k]
        sel = scored[s]
        rs, rt, rv = s[sel], t[sel], v[sel]
        if k == 1:
            rs = slot[rs]
        st_ = stuck.update(rs, rt, rv)
        sp = spikes.update(rs, rv)
        newly = np.zeros(len(rs), dtype=bool)
        for j, x in enumerate(rs.tolist()):
            if st_.flag[j]:
                newly[j] = not opened[k][x]
                opened[k][x] = True
            elif st_.run_count[j] == 1:  # a value broke the run; NaN (count 0) changes nothing
                opened[k][x] = False
        rows = np.flatnonzero(newly | sp.flag)
        return (np.flatnonzero(sel)[rows], newly[rows],
                np.where(newly[rows], st_.score[rows], sp.score[rows]))

    t0 = 0
    for _ in range(data.draw(st.integers(1, 5), label="batches")):
        s, t, v = data.draw(batch(t0=t0, max_series=n_series))
        rows, newly, score = by_numpy(0, s, t, v)
        # the scan -- or now and then the detectors' own updates, or a reset, on the same
        # state: the scan's cached medians must not outlive a change of history
        how = data.draw(st.sampled_from(["scan", "scan", "scan", "update", "reset"]))
        if how == "update":
            by_numpy(1, s, t, v)
        else:
            got = scan_stuck_and_spikes(*pairs[1], s, t, v, slot, opened[1])
            np.testing.assert_array_equal(got.row, rows)
            np.testing.assert_array_equal(got.stuck, newly)
            np.testing.assert_array_equal(got.score, score)  # bit for bit (NaN == NaN)
        np.testing.assert_array_equal(opened[1][slot[scored_ids]], opened[0][scored_ids])
        if how == "reset":
            which = np.array([data.draw(st.integers(0, n_series - 1))], np.int64)
            pairs[0][1].reset(which)
            if scored[which[0]]:  # an unscored series has no state in the scan's pair
                pairs[1][1].reset(slot[which])
        if len(t):
            t0 = int(t.max())
    (stuck_a, spikes_a), (stuck_b, spikes_b) = pairs
    for sid in scored_ids.tolist():
        np.testing.assert_array_equal(spikes_a.history(sid), spikes_b.history(int(slot[sid])))
    for x, y in zip(stuck_a.run_state(), stuck_b.run_state(), strict=True):
        # state either side grows as ids or slots arrive; a row never reached is zeros
        xs = np.zeros(n_series, x.dtype)
        xs[:min(len(x), n_series)] = x[:n_series]
        ys = np.zeros(n_series, y.dtype)
        ys[:min(len(y), n_series)] = y[:n_series]
        np.testing.assert_array_equal(xs[scored_ids], ys[slot[scored_ids]])


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(1, 4), st.sampled_from([0.0, 2.0]), st.sampled_from([0.0, 0.5]),
       st.sampled_from([1, 3, 5]))
def test_scan_does_not_depend_on_batch_boundaries(data: st.DataObject, min_count: int,
                                                  min_s: float, tol: float,
                                                  window: int) -> None:
    """The same readings scanned whole and split at random points into several batches
    (detectors and ``stuck_open`` carried over) report the same readings, flags and scores
    and end with the same ``stuck_open``: the hub coalesces frames into batches of any
    size."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    n_series = data.draw(st.integers(1, 5), label="series")
    n = data.draw(st.integers(0, 120), label="n")
    series = rng.integers(0, n_series, n).astype(np.int64)
    ts = np.cumsum(rng.integers(0, 3 * NS, n)).astype(np.int64)
    value = rng.choice([0.0, 1.0, 1.0, 1.0, 1.4, 7.0], n)  # many repeats: stuck runs
    value[rng.random(n) < 0.1] = np.nan
    slot = np.arange(n_series, dtype=np.int64)
    if n_series > 1:
        slot[0] = -1  # an unscored series

    def detectors() -> tuple[StuckDetector, SpikeDetector, np.ndarray]:
        return (StuckDetector(1, min_count=min_count, min_duration_s=min_s, tolerance=tol),
                SpikeDetector(1, window=window, k=3.0, min_periods=1),
                np.zeros(n_series, dtype=bool))

    stuck, spikes, opened = detectors()
    whole = scan_stuck_and_spikes(stuck, spikes, series, ts, value, slot, opened)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6), label="cuts"))
    stuck, spikes, opened_b = detectors()
    rows, flags, scores = [], [], []
    slot32 = slot.astype(np.int32)  # int32 slots (as the analytics' column) scan alike
    for a, b in zip([0, *cuts], [*cuts, n], strict=True):
        got = scan_stuck_and_spikes(stuck, spikes, series[a:b], ts[a:b], value[a:b], slot32,
                                    opened_b)
        rows.append(got.row + a)
        flags.append(got.stuck)
        scores.append(got.score)
    np.testing.assert_array_equal(np.concatenate(rows), whole.row)
    np.testing.assert_array_equal(np.concatenate(flags), whole.stuck)
    np.testing.assert_array_equal(np.concatenate(scores), whole.score)  # NaN == NaN
    np.testing.assert_array_equal(opened_b, opened)


def test_scan_reports_a_stuck_episode_once() -> None:
    """A series stuck within one batch is reported at the reading that makes it stuck,
    not at every stuck reading; once more after a value breaks the run and it sticks
    again; a NaN neither breaks the run nor reopens the episode."""
    stuck = StuckDetector(1, min_count=3, min_duration_s=0.0)
    spikes = SpikeDetector(1, window=5, k=6.0, abs_floor=100.0)  # no spikes
    v = np.array([5.0, 5.0, 5.0, 5.0, np.nan, 5.0, 6.0, 6.0, 6.0, 6.0, 5.0])
    n = v.shape[0]
    zeros = np.zeros(n, np.int64)
    opened = np.zeros(1, bool)
    got = scan_stuck_and_spikes(stuck, spikes, zeros, np.arange(n, dtype=np.int64) * NS, v,
                                np.zeros(1, np.int64), opened)
    assert got.row.tolist() == [2, 8] and got.stuck.all()
    assert got.score.tolist() == [2.0, 2.0]  # seconds since the run's first reading
    assert not opened[0]  # the last reading broke the run
    # the same readings one at a time: the same report
    stuck = StuckDetector(1, min_count=3, min_duration_s=0.0)
    spikes = SpikeDetector(1, window=5, k=6.0, abs_floor=100.0)
    opened = np.zeros(1, bool)
    one = [i for i in range(n)
           if len(scan_stuck_and_spikes(stuck, spikes, zeros[:1], np.array([i * NS]),
                                        v[i:i + 1], np.zeros(1, np.int64), opened))]
    assert one == [2, 8] and not opened[0]


def _scan_vs_update(window: int, mp: int, k: float, floor: float, series: np.ndarray,
                    value: np.ndarray) -> int:
    """Spike rows and scores of ``scan_stuck_and_spikes`` against ``SpikeDetector.update``
    (full median and MAD per reading), bit for bit; returns the number of spikes."""
    n = int(series.max()) + 1
    ts = np.arange(series.shape[0], dtype=np.int64) * NS
    scan_det = SpikeDetector(1, window=window, k=k, min_periods=mp, abs_floor=floor)
    upd_det = SpikeDetector(1, window=window, k=k, min_periods=mp, abs_floor=floor)
    stuck = StuckDetector(1, min_count=10**9)  # never stuck: every row is a spike
    got = scan_stuck_and_spikes(stuck, scan_det, series, ts, value, np.arange(n),
                                np.zeros(n, bool))
    want = upd_det.update(series, value)
    rows = np.flatnonzero(want.flag)
    np.testing.assert_array_equal(got.row, rows)
    np.testing.assert_array_equal(got.score, want.score[rows])
    for sid in range(n):
        h = upd_det.history(sid)
        np.testing.assert_array_equal(scan_det.history(sid).view(np.int64), h.view(np.int64))
    return len(rows)


@pytest.mark.parametrize("window", [5, 31, 32])
def test_scan_skips_the_mad_only_where_no_spike_can_be(window: int) -> None:
    """The scan searches the MAD only where a lower bound cannot rule a spike out: long
    histories of normal, skewed, discrete (MAD == 0) and signed-zero data, and readings
    placed on the threshold ``|x - median| == k * 1.4826 * mad`` and one ulp either side,
    agree with the detector's full computation."""
    rng = np.random.default_rng(window)
    k = 3.0
    kc = k * MAD_SCALE
    n_series = 12
    n = 6000
    series = rng.integers(0, n_series, n).astype(np.int64)
    kinds = [rng.normal(10.0, 2.0, n), rng.lognormal(0.0, 1.5, n), rng.exponential(1.0, n),
             rng.choice([0.0, -0.0, 1.0, 1.0, 1.0, 2.5], n), np.round(rng.normal(0, 1, n), 1),
             rng.standard_cauchy(n)]
    value = np.empty(n)
    for sid in range(n_series):
        m = series == sid
        value[m] = kinds[sid % len(kinds)][m]
    value[rng.random(n) < 0.01] = np.inf
    value[rng.random(n) < 0.01] = np.nan
    assert _scan_vs_update(window, window, k, 0.0, series, value) > 0
    assert _scan_vs_update(window, max(1, window // 3), k, 0.5, series, value) > 0
    # on the threshold: readings at med +- k * 1.4826 * mad of the history they meet, and
    # one ulp either side (a fresh draw once the spread has grown: placed on the threshold
    # reading after reading, it grows geometrically, up to where the float32 histories
    # clamp)
    ref = NaiveSpike(window, k, window)
    vals: list[float] = []
    n_flagged = 0
    for i in range(2000):
        h = ref.hist.get(0)
        med, mad = median_mad(list(h)) if h is not None and len(h) >= window else (0.0, 1e9)
        if mad < 1e3 and i % 4:
            x = med + (kc * mad if i % 2 else -kc * mad)
            x = float([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)][i % 3])
        else:
            x = float(rng.normal(0.0, 1.0))
        n_flagged += ref.update([0], [x])[0][0]
        vals.append(x)
    assert 0 < n_flagged < len(vals) // 2
    _scan_vs_update(window, window, k, 0.0, np.zeros(len(vals), np.int64), np.array(vals))


def test_spike_state_is_one_record_per_series() -> None:
    """168 bytes per series for W = 31 (288 with float64 values; 529 with a ring, a sorted
    copy, count, position and a cached median/MAD); the history keeps each value's float32
    bits, signed zeros included."""
    det = SpikeDetector(3, window=31)
    assert det.bytes_per_series == 168 and det._rec.nbytes == 3 * 168
    assert SpikeDetector(1, window=127).bytes_per_series == 8 * (64 + 16 + 1)
    assert SpikeDetector(1, window=1).bytes_per_series == 8 * (1 + 1 + 1)
    with pytest.raises(ValueError, match="window"):
        SpikeDetector(1, window=128)
    v = np.array([0.0, -0.0, 1.0, -0.0, 0.0, -1.0, -0.0] * 9)
    det.update(np.zeros(v.shape[0], np.int64), v)
    np.testing.assert_array_equal(det.history(0).view(np.int64), v[-31:].view(np.int64))
    assert det.history(1).shape == (0,) and det.history(99).shape == (0,)
    det.reset(np.array([0], np.int64))
    assert det.history(0).shape == (0,)
    det.update(np.array([2, 2], np.int64), np.array([3.0, 2.0]))
    assert det.history(2).tolist() == [3.0, 2.0]


def test_scan_validates() -> None:
    stuck, spikes = StuckDetector(1), SpikeDetector(1)
    one = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="one per series id"):
        scan_stuck_and_spikes(stuck, spikes, np.array([3], np.int64), one, np.ones(1),
                              np.arange(2), np.zeros(4, bool))
    with pytest.raises(TypeError, match="slot must be int64"):
        scan_stuck_and_spikes(stuck, spikes, one, one, np.ones(1), np.ones(1),
                              np.zeros(1, bool))
    assert len(scan_stuck_and_spikes(stuck, spikes, one[:0], one[:0], np.ones(0),
                                     np.arange(1), np.zeros(1, bool))) == 0
    # a slot past stuck_open has no state: refused before any state changes
    series = np.array([0, 1, 0], np.int64)
    opened = np.zeros(1, bool)
    with pytest.raises(ValueError, match=r"series 1 \(reading 1\) has slot 5"):
        scan_stuck_and_spikes(stuck, spikes, series, np.arange(3), np.ones(3),
                              np.array([0, 5]), opened)
    assert spikes.history(0).shape == (0,) and not opened.any()


def test_histories_keep_finite_readings_finite_at_float32_precision() -> None:
    big = float(np.finfo(np.float32).max)
    assert history_value(1e39) == big and history_value(-1e300) == -big
    assert history_value(0.1) == float(np.float32(0.1)) and history_value(-0.0) == 0.0
    assert history_value(big) == big
    det = SpikeDetector(1, window=3, min_periods=3)
    r = det.update(np.zeros(4, np.int64), np.array([1e300, 1e300, -1e300, 1e300]))
    assert det.history(0).tolist() == [big, big, -big, big][-3:]
    assert r.median[3] == big and r.mad[3] == 0.0  # finite statistics, as the reference's
    assert float32_kept(1e300) == big


def test_spike_semantics() -> None:
    det = SpikeDetector(1, window=5, k=6.0, abs_floor=0.5)
    s = np.zeros(9, np.int64)
    v = np.array([1.0, 2.0, 1.0, 2.0, 1.0, 100.0, 1.4, np.inf, 1.0])
    r = det.update(s, v)
    assert np.isnan(r.score[:5]).all() and not r.flag[:5].any()  # warming up (min_periods=W)
    # history [1, 2, 1, 2, 1]: median 1, MAD 0 -> inf score, flagged (99 > abs_floor)
    assert r.median[5] == 1.0 and r.mad[5] == 0.0 and r.score[5] == np.inf and r.flag[5]
    # history [2, 1, 2, 1, 100]: median 2, MAD 1 -> |1.4 - 2| / 1.4826
    assert r.median[6] == 2.0 and r.mad[6] == 1.0
    assert math.isclose(r.score[6], 0.6 / MAD_SCALE) and not r.flag[6]
    assert np.isnan(r.score[7]) and not r.flag[7]  # inf is missing for robust statistics
    # inf not added; values kept at float32 precision
    assert det.history(0).tolist() == [2.0, 1.0, 100.0, float(np.float32(1.4)), 1.0]
    assert r.reason[5] == REASON_SPIKE and REASON_NAMES[REASON_SPIKE] == "spike"


# --------------------------------------------------------------------------------------------
# peer drift
# --------------------------------------------------------------------------------------------


@st.composite
def window_rows(draw: st.DrawFn, n_stations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    present = rng.random(n_stations) < draw(st.sampled_from([0.5, 0.9, 1.0]))
    station = np.flatnonzero(present).astype(np.int64)
    rng.shuffle(station)
    n = station.shape[0]
    group = (station % draw(st.integers(1, 4))).astype(np.int64)
    if draw(st.booleans()):
        value = rng.choice([10.0, 10.0, 10.0, 11.0], n)  # many MAD == 0 groups
    else:
        value = np.round(rng.normal(10.0, 1.0, n), 2)
    drifting = station % 7 == 3
    value[drifting] += draw(st.sampled_from([0.0, 8.0, -30.0]))
    value[rng.random(n) < 0.1] = np.nan
    if n and draw(st.booleans()):
        value[0] = np.inf
    return station, group, value.astype(np.float64)


@settings(max_examples=80, deadline=None)
@given(st.data(), st.sampled_from([2.0, 6.0]), st.integers(1, 3), st.integers(1, 4),
       st.sampled_from([0.0, 0.5]))
def test_drift_matches_reference(data: st.DataObject, k: float, m: int, min_size: int,
                                 floor: float) -> None:
    n_stations = data.draw(st.integers(0, 30), label="stations")
    det = DriftDetector(1, k=k, min_windows=m, min_group_size=min_size, abs_floor=floor)
    ref = NaiveDrift(k, m, min_size, floor)
    for _ in range(data.draw(st.integers(1, 5), label="windows")):
        station, group, value = data.draw(window_rows(n_stations))
        got = det.update(station, group, value)
        want = ref.update(station.tolist(), group.tolist(), value.tolist())
        assert got.station.tolist() == station.tolist()
        assert got.flag.tolist() == [w[0] for w in want]
        assert got.consecutive.tolist() == [w[1] for w in want]
        assert (got.reason == np.where(got.flag, REASON_DRIFT, REASON_NONE)).all()
        for i, w in enumerate(want):
            assert _same(got.score[i], w[2], 1e-13), (i, got.score[i], w)
        _, stats = naive_peer(group.tolist(), value.tolist(), k, min_size, floor)
        ps = peer_scores(group, value, None, k, min_size, floor)
        for g, (med, mad, cnt) in stats.items():
            assert (ps.group_median[g], ps.group_mad[g], ps.group_n[g]) == (med, mad, cnt)


@settings(max_examples=120, deadline=None)
@given(st.data(), st.sampled_from([2.0, 4.0]), st.integers(1, 4), st.integers(1, 12))
def test_pooled_log_scores_match_reference(data: st.DataObject, k: float, min_size: int,
                                           min_pooled: int) -> None:
    n_stations = data.draw(st.integers(0, 40), label="stations")
    _station, group, value = data.draw(window_rows(n_stations))
    if data.draw(st.booleans(), label="zeros and negatives"):
        value = np.where(np.arange(len(value)) % 5 == 1, -value, value)
        value[:: 6] = 0.0
    history = None
    if data.draw(st.booleans(), label="history"):
        history = np.abs(np.random.default_rng(len(value)).normal(0.0, 0.2, 30))
    got = pooled_log_scores(group, value, None, k, min_size, min_pooled, history)
    want = naive_pooled_log(group.tolist(), value.tolist(), k, min_size, min_pooled,
                            [] if history is None else history.tolist())
    assert got.scored.tolist() == [w[0] for w in want]
    assert got.exceed.tolist() == [w[1] for w in want]
    for i, w in enumerate(want):
        assert _same(got.score[i], w[2], 1e-12), (i, got.score[i], w)


def test_pooled_log_drift_sees_ratios_not_a_small_district_spread() -> None:
    """Four stations of a district close together, a fifth on a busy road reading 1.4x
    their middle: per-district MADs call it drifting; on the city-wide ratio scale it is
    ordinary, while a station reading 2.5x its district's middle is not."""
    rng = np.random.default_rng(5)
    n_groups, per = 10, 5
    group = np.repeat(np.arange(n_groups, dtype=np.int64), per)
    station = np.arange(group.shape[0], dtype=np.int64)
    peer = DriftDetector(len(station), k=4.0, min_windows=3, method="peer")
    pooled = DriftDetector(len(station), k=4.0, min_windows=3, method="pooled_log")
    road, drifter = 4, 12  # station 4 (district 0) on a road; 12 (district 2) drifting
    for _ in range(4):
        level = rng.uniform(20.0, 80.0, n_groups)[group]
        value = level * np.exp(rng.normal(0.0, 0.15, group.shape[0]))
        value[:4] = level[:4] * np.array([1.0, 1.01, 0.99, 1.005])  # a tight district
        value[road] = level[road] * 1.4
        value[drifter] = level[drifter] * 2.5
        rp, rl = peer.update(station, group, value), pooled.update(station, group, value)
    assert rp.flag[road]  # the per-district scale's false alarm
    assert not rl.flag[road] and rl.flag[drifter]
    assert np.flatnonzero(rl.flag).tolist() == [drifter]
    assert np.isfinite(rl.group_mad).all() and (rl.group_mad == rl.group_mad[0]).all()


def test_pooled_log_needs_enough_stations_and_valid_settings() -> None:
    g = np.zeros(5, np.int64)
    v = np.array([10.0, 11.0, 9.0, 30.0, 10.5])
    assert not pooled_log_scores(g, v, None, 2.0, 3, min_pooled=6).scored.any()
    assert pooled_log_scores(g, v, None, 3.0, 3, min_pooled=5).exceed.tolist() == [
        False, False, False, True, False]
    with pytest.raises(ValueError, match="min_pooled"):
        pooled_log_scores(g, v, None, 2.0, 3, min_pooled=0)
    with pytest.raises(ValueError, match="method"):
        DriftDetector(method="zscore")
    with pytest.raises(ValueError, match="min_pooled"):
        DriftDetector(method="pooled_log", min_pooled=0)


def test_pooled_drift_pools_deviations_over_windows() -> None:
    """A hub holding few stations (5, fewer than min_pooled) scores them once the pool has
    enough deviations from earlier windows; the pool keeps pool_windows windows."""
    det = DriftDetector(5, k=4.0, min_windows=1, method="pooled_log", min_pooled=8,
                        pool_windows=3)
    st_ = np.arange(5, dtype=np.int64)
    g = np.zeros(5, np.int64)
    v = np.array([10.0, 11.0, 9.0, 30.0, 10.5])
    first = det.update(st_, g, v)
    assert not first.flag.any() and np.isnan(first.score).all()  # 5 deviations < 8
    second = det.update(st_, g, v)  # 10 pooled: the same spread as the window's own
    want = pooled_log_scores(g, v, None, 4.0, 3, min_pooled=1)
    assert second.flag.tolist() == [False, False, False, True, False]
    assert np.allclose(second.score, want.score)
    for _ in range(5):
        det.update(st_, g, v * np.array([1.0, 1.5, 0.6, 1.0, 1.0]))  # a wider spread
    assert len(det._pool) == 3
    det.reset()
    assert len(det._pool) == 0 and not det.consecutive.any()


def test_drift_needs_consecutive_windows() -> None:
    det = DriftDetector(4, k=3.0, min_windows=2, min_group_size=3)
    st_ = np.arange(4, dtype=np.int64)
    g = np.zeros(4, np.int64)
    far = np.array([10.0, 10.5, 9.5, 30.0])
    r1 = det.update(st_, g, far)
    assert r1.consecutive.tolist() == [0, 0, 0, 1] and not r1.flag.any()
    assert r1.score[3] > 3 and r1.group_median[3] == 10.25
    # station 3 missing: its counter is kept (no evidence either way)
    r2 = det.update(st_[:3], g[:3], far[:3])
    assert r2.consecutive.tolist() == [0, 0, 0] and det.consecutive[3] == 1
    r3 = det.update(st_, g, far)
    assert r3.flag.tolist() == [False, False, False, True] and r3.consecutive[3] == 2
    assert r3.reason[3] == REASON_DRIFT
    # back in line: reset
    r4 = det.update(st_, g, np.array([10.0, 10.5, 9.5, 10.2]))
    assert r4.consecutive.tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="unique"):
        det.update(np.array([1, 1], np.int64), np.zeros(2, np.int64), np.ones(2))


def test_empty_batches_and_validation() -> None:
    e_i = np.empty(0, np.int64)
    e_f = np.empty(0, np.float64)
    assert len(StuckDetector().update(e_i, e_i, e_f)) == 0
    assert len(SpikeDetector().update(e_i, e_f)) == 0
    assert len(DriftDetector().update(e_i, e_i, e_f)) == 0
    assert peer_scores(e_i, e_f).group_n.shape == (0,)
    with pytest.raises(ValueError, match=">= 0"):
        StuckDetector().update(np.array([-1], np.int64), np.zeros(1, np.int64), np.ones(1))
    with pytest.raises(TypeError, match="astype"):
        SpikeDetector().update(np.zeros(1, np.int32), np.ones(1))
    with pytest.raises(ValueError, match="equal lengths"):
        SpikeDetector().update(np.zeros(2, np.int64), np.ones(1))
    with pytest.raises(ValueError, match="min_periods"):
        SpikeDetector(window=5, min_periods=6)


def test_a_series_floor_keeps_one_quantisation_step_from_being_a_spike() -> None:
    """A quantised sensor (0.1 steps) whose history is mostly one value has MAD 0: with
    the default floor 0 every one-step change is a spike; with its own floor of 3 steps
    only a larger jump is."""
    det = SpikeDetector(2, window=9, k=6.0)
    det.set_floor(np.array([1]), 0.3)
    assert det.floor.tolist() == [0.0, 0.3]
    history = [0.5] * 6 + [0.6, 0.5, 0.4]  # MAD 0: six of nine identical
    for sid in (0, 1):
        det.update(np.full(9, sid), np.array(history))
    got = det.update(np.array([0, 1, 0, 1]), np.array([0.6, 0.6, 0.9, 0.9]))
    assert got.flag.tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="floor"):
        det.set_floor(np.array([0]), -1.0)



def _episodes_by_python(series: list[int], value: list[float], slot: list[int],
                        spiking: set[int], is_open: list[bool]) -> list[bool]:
    """Reading by reading: a spiking reading starts an episode unless its series' previous
    scored finite reading spiked too; one bool per spiking reading, in order."""
    out = []
    for i, (s, v) in enumerate(zip(series, value, strict=True)):
        x = slot[s]
        if x < 0 or not math.isfinite(v):
            continue
        if i in spiking:
            out.append(not is_open[x])
            is_open[x] = True
        else:
            is_open[x] = False
    return out


@settings(max_examples=150, deadline=None)
@given(st.data(), st.sampled_from([1, 3, 5]))
def test_spike_starts_match_reading_by_reading(data: st.DataObject, window: int) -> None:
    """``spike_start`` against the plain definition over the scan's own spike flags, with
    the readings cut into batches anywhere (``spike_open`` carried over)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    n_series = data.draw(st.integers(1, 4), label="series")
    n = data.draw(st.integers(0, 120), label="n")
    series = rng.integers(0, n_series, n).astype(np.int64)
    ts = np.cumsum(rng.integers(0, 3 * NS, n)).astype(np.int64)
    value = rng.choice([0.0, 1.0, 1.0, 1.0, 1.4, 7.0, 30.0], n)  # runs of spikes and not
    value[rng.random(n) < 0.1] = np.nan
    value[rng.random(n) < 0.05] = np.inf
    slot = np.arange(n_series, dtype=np.int64)
    if n_series > 1:
        slot[0] = -1  # an unscored series
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=5), label="cuts"))
    stuck = StuckDetector(1, min_count=3, min_duration_s=0.0)
    spikes = SpikeDetector(1, window=window, k=3.0, min_periods=1)
    opened, spike_open = np.zeros(n_series, bool), np.zeros(n_series, bool)
    rows, spiked, starts = [], [], []
    for a, b in zip([0, *cuts], [*cuts, n], strict=True):
        got = scan_stuck_and_spikes(stuck, spikes, series[a:b], ts[a:b], value[a:b], slot,
                                    opened, spike_open)
        rows += (got.row + a).tolist()
        spiked += got.spike.tolist()
        starts += got.spike_start.tolist()
    spiking = {r for r, sp in zip(rows, spiked, strict=True) if sp}
    want = _episodes_by_python(series.tolist(), value.tolist(), slot.tolist(), spiking,
                               [False] * n_series)
    assert [st_ for st_, sp in zip(starts, spiked, strict=True) if sp] == want
    assert not any(st_ for st_, sp in zip(starts, spiked, strict=True) if not sp)


def _cold_room(values: np.ndarray, min_count: int = 10**9) -> ScanRows:
    n = len(values)
    return scan_stuck_and_spikes(StuckDetector(1, min_count=min_count),
                                 SpikeDetector(1, window=31, k=6.0), np.zeros(n, np.int64),
                                 np.arange(n, dtype=np.int64) * 300 * NS, values,
                                 np.zeros(1, np.int64), np.zeros(1, bool), np.zeros(1, bool))


def test_a_defrost_is_one_spike_episode() -> None:
    """A cold room at -18 °C whose defrost lifts it for 8 readings: every one of them
    spikes, one episode starts; after a quiet reading, the next excursion is another."""
    rng = np.random.default_rng(3)
    base = np.round(-18.0 + 0.2 * rng.standard_normal(40), 1)
    defrost = np.array([-16.0, -13.5, -11.0, -9.5, -9.0, -10.5, -12.5, -15.0])
    found = _cold_room(np.concatenate([base, defrost, [-18.0], defrost[:3]]))
    assert set(range(40, 48)) <= set(found.row[found.spike].tolist())
    assert found.row[found.spike_start].tolist() == [40, 49]


def test_a_stuck_start_inside_a_spike_episode_does_not_split_it() -> None:
    """A sensor jumping from 20 to 80 and staying there: it spikes from the jump until the
    history has moved, and turns stuck on the way. The stuck reading is reported as stuck;
    the episode is one, started at the jump (a reading reported stuck used to close it)."""
    values = np.concatenate([np.full(40, 20.0) + np.arange(40) % 3 * 0.1, np.full(30, 80.0)])
    found = _cold_room(values, min_count=12)
    stuck_rows = found.row[found.stuck].tolist()
    assert len(stuck_rows) == 1 and found.spike[found.stuck].all()  # stuck while spiking
    assert found.row[found.spike_start].tolist() == [40]


def test_spike_open_must_match_stuck_open() -> None:
    one = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="spike_open"):
        scan_stuck_and_spikes(StuckDetector(1), SpikeDetector(1), one, one, np.ones(1), one,
                              np.zeros(1, bool), np.zeros(2, bool))
