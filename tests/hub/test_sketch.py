"""hub.sketch against the references in tests/naive_analytics.py and np.quantile."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hub.sketch as hs
from hub.sketch import LogHistogram, merge_counts
from tests.naive_analytics import inverted_cdf, sketch_bucket, sketch_counts

QS = np.array([0.5, 0.95, 0.99])


@st.composite
def sketch_data(draw: st.DrawFn, max_n: int = 300, in_range: bool = False,
                max_groups: int = 5) -> tuple[np.ndarray, np.ndarray, int]:
    """(group, value, n_groups): magnitudes across many decades, both signs, zeros, constant
    runs and NaN at the start / middle / end; optionally out-of-range magnitudes and inf.
    Hypothesis draws the structure; the bulk values come from a drawn numpy seed (fast)."""
    n = draw(st.integers(0, max_n))
    n_groups = draw(st.integers(1, max_groups))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    group = rng.integers(0, n_groups, n).astype(np.int64)
    lo_exp, hi_exp = draw(st.sampled_from([(-5.9, 8.9), (0.0, 0.3), (-1.0, 3.0)]))
    v = rng.choice([-1.0, 1.0, 1.0, 0.0], n) * 10.0 ** rng.uniform(lo_exp, hi_exp, n)
    if draw(st.booleans()):
        v = np.round(v, 2)  # quantised readings: many ties
    if n:
        if draw(st.booleans()):  # a constant run
            a = draw(st.integers(0, n - 1))
            v[a:draw(st.integers(a, n))] = v[a]
        if not in_range and draw(st.booleans()):
            extremes = [1e-9, -3e-7, 5e12, -np.inf, np.inf, 1e300, 5e-324]
            for _ in range(draw(st.integers(1, 5))):
                v[draw(st.integers(0, n - 1))] = draw(st.sampled_from(extremes))
        for where in draw(st.sets(st.sampled_from(["start", "middle", "end"]))):
            if where == "start":
                v[: draw(st.integers(1, n))] = np.nan
            elif where == "middle":
                v[n // 2] = np.nan
            else:
                v[-draw(st.integers(1, n)):] = np.nan
    if in_range:  # rounding may have produced magnitudes below min_value: make them 0
        v[np.abs(v) < 1e-6] = 0.0
    return group, v.astype(np.float64), n_groups


# --------------------------------------------------------------------------------------------
# bucket counts: exact against the one-reading-at-a-time reference, both kernels
# --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(sketch_data(), st.sampled_from([0.01, 0.02, 0.005, 0.1]), st.booleans())
def test_counts_match_reference(data: tuple, alpha: float, grouped: bool) -> None:
    group, value, n_groups = data
    old = hs._GROUPED_MIN, hs._DIRECT_MAX_BYTES
    try:
        hs._GROUPED_MIN, hs._DIRECT_MAX_BYTES = (0, -1) if grouped else (1 << 62, 1 << 62)
        h = LogHistogram(alpha, n_groups)
        n_added = h.add(group, value)
    finally:
        hs._GROUPED_MIN, hs._DIRECT_MAX_BYTES = old
    counts, vmin, vmax = sketch_counts(group.tolist(), value.tolist(), n_groups, alpha,
                                       h.min_value, h.max_value)
    assert n_added == int((~np.isnan(value)).sum())
    np.testing.assert_array_equal(h.counts, counts)
    np.testing.assert_array_equal(h.min, vmin)
    np.testing.assert_array_equal(h.max, vmax)
    np.testing.assert_array_equal(h.count(), counts.sum(axis=1))


def test_bucket_layout_is_value_ordered() -> None:
    h = LogHistogram(0.01, 1)
    xs = [-1e9, -2.5, -1e-6, -1e-7, 0.0, 1e-7, 1e-6, 1.0, 1.0201, 3.0, 1e9, 1e12, np.inf]
    idx = [sketch_bucket(x, 0.01, h.min_value, h.max_value) for x in xs]
    assert idx == sorted(idx)
    assert idx[0] == 0 and idx[-1] == h.n_buckets - 1
    assert h.representatives[idx[4]] == 0.0
    assert (np.diff(h.representatives) > 0).all()
    # a bucket's representative is within alpha of both of its edges
    g = h.gamma
    k_min, _ = h.key_range
    rep = h.representatives[h.n_buckets // 2 + 1]  # first positive bucket, key k_min
    for edge in (g ** (k_min - 1), g**k_min):
        assert abs(rep - edge) <= 0.01 * edge * (1 + 1e-9)


# --------------------------------------------------------------------------------------------
# quantiles: the relative-error bound against np.quantile(method="inverted_cdf")
# --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(sketch_data(in_range=True), st.sampled_from([0.01, 0.02, 0.005, 0.05]),
       st.lists(st.floats(0.0, 1.0), max_size=3))
def test_quantiles_within_alpha_of_inverted_cdf(data: tuple, alpha: float,
                                                extra_q: list[float]) -> None:
    group, value, n_groups = data
    h = LogHistogram(alpha, n_groups)
    h.add(group, value)
    qs = np.concatenate([QS, [0.0, 1.0], extra_q]).astype(np.float64)
    got = h.quantiles(qs)
    assert got.shape == (n_groups, len(qs))
    for g in range(n_groups):
        vals = value[(group == g) & ~np.isnan(value)]
        if len(vals) == 0:
            assert np.isnan(got[g]).all()
            continue
        want = np.quantile(vals, qs, method="inverted_cdf")
        for j, q in enumerate(qs):
            assert want[j] == inverted_cdf(vals.tolist(), float(q))  # the rank rule
            bound = alpha * abs(want[j]) * (1 + 1e-9)
            assert abs(got[g, j] - want[j]) <= bound, (g, q, got[g, j], want[j])
        assert got[g, 3] == vals.min() and got[g, 4] == vals.max()  # clamped: exact ends


def test_quantiles_on_a_large_sample_of_every_sign() -> None:
    rng = np.random.default_rng(7)
    n = 200_000
    group = rng.integers(0, 4, n).astype(np.int64)
    value = rng.lognormal(2.0, 2.0, n) * rng.choice([-1.0, 1.0, 1.0, 1.0], n)
    value[::97] = 0.0
    value[::101] = np.nan
    h = LogHistogram(0.01, 4)
    h.add(group, value)  # grouped kernel
    got = h.quantiles(QS)
    for g in range(4):
        vals = value[(group == g) & ~np.isnan(value)]
        want = np.quantile(vals, QS, method="inverted_cdf")
        np.testing.assert_array_less(np.abs(got[g] - want), 0.01 * np.abs(want) * (1 + 1e-9)
                                     + 1e-300)


def test_values_outside_the_range() -> None:
    h = LogHistogram(0.01, 1, min_value=1e-3, max_value=1e3)
    h.add(np.zeros(4, np.int64), np.array([1e-5, -1e-5, 0.0, -0.0]))
    # all in the zero bucket; the answer is clamped to the exact [min, max]
    assert h.counts[0].sum() == 4 and h.counts[0, h.n_buckets // 2] == 4
    assert h.quantiles(np.array([0.5]))[0, 0] == 0.0
    h.add(np.zeros(3, np.int64), np.array([1e6, np.inf, 1e300]))
    assert h.counts[0, -1] == 3
    assert h.quantiles(np.array([1.0]))[0, 0] == np.inf  # the exact max


# --------------------------------------------------------------------------------------------
# merging: exact
# --------------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(sketch_data(), st.data())
def test_merge_equals_sketch_of_union(data: tuple, d: st.DataObject) -> None:
    group, value, n_groups = data
    cut = d.draw(st.integers(0, len(group)))
    a = LogHistogram(0.01, n_groups)
    b = LogHistogram(0.01, n_groups)
    whole = LogHistogram(0.01, n_groups)
    a.add(group[:cut], value[:cut])
    b.add(group[cut:], value[cut:])
    whole.add(group, value)
    np.testing.assert_array_equal(merge_counts(a.counts, b.counts), whole.counts)
    a.merge(b)
    np.testing.assert_array_equal(a.counts, whole.counts)
    np.testing.assert_array_equal(a.min, whole.min)
    np.testing.assert_array_equal(a.max, whole.max)
    np.testing.assert_array_equal(a.quantiles(QS), whole.quantiles(QS))
    # regrouping = sketching the coarser groups directly
    mapping = np.asarray(d.draw(st.lists(st.integers(-1, 1), min_size=n_groups,
                                         max_size=n_groups)), dtype=np.int64)
    coarse = whole.regroup(mapping, 2)
    direct = LogHistogram(0.01, 2)
    keep = mapping[group] >= 0
    direct.add(np.ascontiguousarray(mapping[group][keep]), np.ascontiguousarray(value[keep]))
    np.testing.assert_array_equal(coarse.counts, direct.counts)
    np.testing.assert_array_equal(coarse.min, direct.min)
    np.testing.assert_array_equal(coarse.max, direct.max)


def test_reset_and_persistence() -> None:
    h = LogHistogram(0.02, 3)
    h.add(np.array([0, 1, 2, 2], np.int64), np.array([1.0, 2.0, 3.0, -4.0]))
    c, lo, hi = h.to_arrays()
    back = LogHistogram.from_arrays(c, lo, hi, alpha=0.02)
    np.testing.assert_array_equal(back.quantiles(QS), h.quantiles(QS))
    h.reset(np.array([2], np.int64))
    assert h.count().tolist() == [1, 1, 0]
    assert np.isnan(h.quantiles(QS)[2]).all() and h.min[2] == np.inf
    h.reset()
    assert h.count().sum() == 0
    assert h.quantiles(np.empty(0)).shape == (3, 0)
    assert h.add(np.empty(0, np.int64), np.empty(0)) == 0


def test_validation_says_how_to_fix() -> None:
    h = LogHistogram(0.01, 2)
    with pytest.raises(TypeError, match="astype"):
        h.add(np.array([0], np.int32), np.array([1.0]))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        h.add(np.array([2], np.int64), np.array([1.0]))
    with pytest.raises(ValueError, match="contiguous"):
        h.add(np.zeros(4, np.int64)[::2], np.ones(2))
    with pytest.raises(ValueError, match="not percent"):
        h.quantiles(np.array([50.0]))
    with pytest.raises(ValueError, match="different"):
        h.merge(LogHistogram(0.02, 2))
    with pytest.raises(ValueError, match="shapes"):
        merge_counts(h.counts, LogHistogram(0.01, 3).counts)
    with pytest.raises(ValueError, match="alpha"):
        LogHistogram(1.5)
    assert math.isclose(h.gamma, 1.01 / 0.99)
    assert h.nbytes == h.n_buckets * 2 * 8 + 2 * 16


# --------------------------------------------------------------------------------------------
# the bucket table: exactly the log-based bucket, edge by edge
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha, lo, hi", [(0.01, 1e-6, 1e9), (0.02, 1e-3, 1e6),
                                           (0.01, 1e-4, 1e5), (0.01, 1e-3, 1e7),
                                           (0.005, 1e-6, 1e9), (0.1, 1e-6, 1e9),
                                           (0.5, 1e-3, 1e3), (0.9, 1.0, 2.0),
                                           (0.001, 0.1, 10.0)])
def test_bucket_table_equals_the_log_bucket(alpha: float, lo: float, hi: float) -> None:
    """``add`` buckets from a table (no log per reading): at every bucket edge, a few ulps
    either side, the range ends and random magnitudes, it must answer what ``_bucket``
    (the definition, with ``log``) and the reference answer."""
    h = LogHistogram(alpha, 1, lo, hi)
    k_min, k_max = h.key_range
    edges = h._table[:, 0][h._table[:, 0] != hs._NO_EDGE]
    assert len(edges) == k_max - k_min  # one edge between consecutive keys, all found
    near = np.concatenate([edges + d for d in range(-3, 4)]).view(np.float64)
    rng = np.random.default_rng(3)
    mags = np.exp(rng.uniform(math.log(lo) - 3, math.log(hi) + 3, 3000))
    xs = np.concatenate([near, mags, [lo, hi, np.nextafter(lo, 0.0), np.nextafter(hi, np.inf),
                                      0.0, 5e-324, np.inf, 1e300]])
    xs = np.concatenate([xs, -xs])
    zero = k_max - k_min + 1
    got = np.array([hs._bucket_fast(x, b, h._table, h._shift, h._idx_lo, zero, 2 * zero,
                                    lo, hi) for x, b in zip(xs, xs.view(np.int64),
                                                            strict=True)])
    want = np.array([hs._bucket(x, h._inv_lg, k_min, k_max, lo, hi) for x in xs])
    np.testing.assert_array_equal(got, want)
    ref = np.array([sketch_bucket(float(x), alpha, lo, hi) for x in xs])
    np.testing.assert_array_equal(got, ref)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.booleans(), st.booleans())
def test_runs_of_one_group_and_bucket(seed: int, n_groups: int, grouped: bool,
                                      signed_zeros: bool) -> None:
    """Both kernels tally runs of one group (and of one bucket) in registers: long runs,
    short ones and alternation give the reference counts and min/max."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 2000))
    group = np.repeat(rng.integers(0, n_groups, n), rng.integers(1, 30, n))[:n]
    levels = rng.choice([0.5, 3.0, 3.01, -7.0, 1e4, 0.0, np.nan], 6)
    value = np.repeat(rng.choice(levels, n), rng.integers(1, 20, n))[:n]
    if signed_zeros:
        value[rng.random(n) < 0.2] = -0.0
    group = group.astype(np.int64)
    old = hs._GROUPED_MIN, hs._DIRECT_MAX_BYTES
    try:
        hs._GROUPED_MIN, hs._DIRECT_MAX_BYTES = (0, -1) if grouped else (1 << 62, 1 << 62)
        h = LogHistogram(0.02, n_groups, 1e-3, 1e6)
        h.add(group[: n // 2], value[: n // 2])  # twice: runs go on across calls
        h.add(group[n // 2:], value[n // 2:])
    finally:
        hs._GROUPED_MIN, hs._DIRECT_MAX_BYTES = old
    counts, vmin, vmax = sketch_counts(group.tolist(), value.tolist(), n_groups, 0.02,
                                       1e-3, 1e6)
    np.testing.assert_array_equal(h.counts, counts)
    np.testing.assert_array_equal(h.min, vmin)
    np.testing.assert_array_equal(h.max, vmax)
    np.testing.assert_array_equal(np.signbit(h.min), np.signbit(vmin))


def test_subsets_of_groups() -> None:
    """``nonempty``, and ``count`` / ``quantiles`` of some groups: the rows of the full
    answers, reading only those groups."""
    h = LogHistogram(0.01, 6)
    h.add(np.array([1, 4, 4, 1, 4], np.int64), np.array([2.0, -1.0, np.inf, 5.0, 0.0]))
    h.add(np.array([3], np.int64), np.array([np.nan]))  # NaN: group 3 stays empty
    assert h.nonempty().tolist() == [1, 4] == np.flatnonzero(h.count() > 0).tolist()
    g = np.array([4, 0, 1], np.int64)
    np.testing.assert_array_equal(h.count(g), h.count()[g])
    np.testing.assert_array_equal(h.quantiles(QS, g), h.quantiles(QS)[g])
    assert h.quantiles(QS, np.empty(0, np.int64)).shape == (0, 3)
    with pytest.raises(ValueError, match="groups must be in"):
        h.count(np.array([6], np.int64))
    h.reset(h.nonempty())
    assert h.count().sum() == 0 and len(h.nonempty()) == 0
