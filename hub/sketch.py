"""Mergeable percentile sketch: a fixed log-bucket histogram per group (DDSketch-style).

Bucketing
---------
``gamma = (1 + alpha) / (1 - alpha)``. A value ``x`` with ``min_value <= |x| <= max_value``
has the key ``k = ceil(log(|x|) * (1 / ln gamma))`` (float64 ``log``, then one multiply), so
its bucket covers ``(gamma**(k-1), gamma**k]`` in magnitude; positive and negative values
have mirrored buckets, and one *zero bucket* holds ``0``, ``-0`` and every ``|x| < min_value``.
Magnitudes above ``max_value`` (and ``±inf``) are clamped into the outermost bucket of their
sign. The bucket range ``[k_min, k_max] = [key(min_value), key(max_value)]`` is fixed at
construction, so every sketch with the same ``(alpha, min_value, max_value)`` has the same
layout and merging is an element-wise sum of counts.

State per group: ``counts`` (int64 ``[n_groups, n_buckets]``, bucket order = value order:
negative buckets from the most negative, the zero bucket, positive buckets ascending), and the
exact ``min``/``max`` of the values added (``+inf``/``-inf`` while empty). Memory is
``n_groups * n_buckets * 8`` bytes, ``n_buckets = 2 * (k_max - k_min + 1) + 1``: with the
defaults (alpha 1 %, range ``[1e-6, 1e9]``) 3,455 buckets = 27.6 KB per group.

NaN is not a reading: it is skipped (counted in the return value of ``add`` only).

Quantiles (rank rule)
---------------------
For ``q`` in ``[0, 1]`` and ``n`` values in a group, the sketch answers the value of rank
``r = max(1, ceil(q * n))`` (1-based, ``q * n`` in float64) -- the *inverted CDF*, exactly
``np.quantile(values, q, method="inverted_cdf")`` (Hyndman & Fan definition 1). It walks the
cumulative counts to the bucket holding rank ``r`` and returns that bucket's representative
value ``2 * gamma**k / (gamma + 1)`` (negated for negative buckets, ``0`` for the zero
bucket), clamped to the group's exact ``[min, max]``; ranks ``1`` and ``n`` answer the exact
min and max.

**Error bound.** If the true rank-``r`` value ``x`` satisfies ``min_value <= |x| <=
max_value``, the answer ``y`` satisfies ``|y - x| <= alpha * |x|`` (up to a few ulps of the
float64 ``log``); if ``x == 0`` the answer is ``0``; for ``0 < |x| < min_value`` the answer
is ``0`` or the group min/max (absolute error below ``min_value``); above ``max_value`` there
is no bound (the answer is at most the outermost representative or the exact max). The
clamp to ``[min, max]`` never makes an answer worse; ``q = 0`` and ``q = 1`` are exact.

Merging
-------
``merge_counts(a, b)`` (pure) and ``LogHistogram.merge`` add counts and combine min/max:
``merge(sketch(A), sketch(B))`` equals ``sketch(A ∪ B)`` *exactly* (same counts, same
min/max), in any order and grouping -- which is what lets district edges or hub processes
sketch independently. ``LogHistogram.regroup`` folds groups into coarser ones (series ->
district) the same way.

Bucketing without ``log``: the add kernels never take a logarithm. A positive float64's
bits, read as an int64, order like its value, and ``bits >> shift`` (the exponent and the top
few mantissa bits) numbers sub-intervals of magnitudes narrower than a bucket, so each holds
at most one bucket edge. A table per layout (``_layout_table``: built once per ``(alpha,
min_value, max_value)`` by bisecting ``_bucket`` itself, shared; 958 rows for alpha 2 % over
``[1e-3, 1e6]``, 3,189 for the defaults) gives each sub-interval's bucket and the bits of its
edge: a reading's bucket is a shift, one table row and a compare. The result is exactly
``_bucket``'s (the definition above, with ``log``), edge by edge (tested a few ulps either
side of every edge).

Throughput (one core of the 2-core dev VM, warm JIT, 160k readings, best of 9; the VM was
shared, so a rough guide): one group of clustered values (latencies) ~3 ns a reading; 201
groups ~7 ns; 1,064 groups of values over seven decades ~13 ns -- with the ``log`` per
reading these were 17, 14-16 and 25 ns. Batches of 256 or more into counts larger than 16
MiB take a counting-sort path (bucket every reading, sort the buckets by group, then
increment group by group): a plain scatter into 1,000 x 3,455 int64 counts (27.6 MB, larger
than the cache) costs ~35-65 ns a reading on random groups, the counting sort ~39. Both
paths tally runs of one group (and of one bucket) in registers (``_add_direct``).
``quantiles`` for 3 quantiles: ~10 us per group at 3,455 buckets (one cumulative pass per
group, the quantiles visited in ascending order); ``quantiles(qs, groups)`` and
``count(groups)`` read only the groups asked for, and ``nonempty()`` finds the groups with
values from the min/max alone.

Kernels (stumpy-style layers): ``_add_direct`` / ``_add_grouped``, ``_quantiles`` and
``_regroup`` are private ``@njit`` loops compiled with the policy in ``hub.kernel_config``;
the public methods validate input and say how to fix it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from hub.arrays import check_1d as _check_1d
from hub.kernel_config import CACHE, FASTMATH, NOGIL

__all__ = ["LogHistogram", "merge_counts"]


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _bucket(v, inv_lg, k_min, k_max, min_value, max_value):
    """Bucket index of a non-NaN value (see the module doc); zero bucket = k_max - k_min + 1.

    The definition of the layout: ``_bucket_table`` tabulates it, the add kernels read the
    table (``_bucket_fast``) and never call this per reading."""
    zero = k_max - k_min + 1
    a = abs(v)
    if a < min_value:
        return zero
    if a > max_value:  # also +inf: never take the log of it
        key = k_max
    else:
        key = np.int64(np.ceil(np.log(a) * inv_lg))
        key = min(max(key, k_min), k_max)
    if v > 0.0:
        return zero + 1 + (key - k_min)
    return zero - 1 - (key - k_min)


#: Mask of a float64's bits without the sign: the bits of ``abs(x)``.
_ABS_BITS = 0x7FFF_FFFF_FFFF_FFFF
#: Table threshold of a sub-interval that holds no bucket edge (no magnitude reaches it).
_NO_EDGE = 0x7FFF_FFFF_FFFF_FFFF


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _bucket_table(inv_lg, k_min, k_max, min_value, max_value, shift, table):
    """Tabulate ``_bucket`` over the magnitudes ``[min_value, max_value]``; returns False if
    some sub-interval holds more than one bucket edge (the caller then uses finer ones).

    A positive float64's bits, as an int64, order like its value; ``bits >> shift`` (its
    exponent and top ``52 - shift`` mantissa bits) numbers *sub-intervals* of magnitudes.
    Row ``j`` describes sub-interval ``(bits(min_value) >> shift) + j``, clipped to
    ``[min_value, max_value]``: ``table[j, 1]`` is the positive-side bucket of its smallest
    magnitude, ``table[j, 0]`` the bits of the smallest magnitude whose bucket is one higher
    (``_NO_EDGE`` if none). Found by bisection on bits with ``_bucket`` itself (which is
    non-decreasing in the magnitude, as ``log`` is), so the table reproduces it exactly."""
    ibuf = np.empty(1, dtype=np.int64)
    fbuf = ibuf.view(np.float64)
    fbuf[0] = min_value
    lo_bits = ibuf[0]
    fbuf[0] = max_value
    hi_bits = ibuf[0]
    idx_lo = lo_bits >> shift
    for j in range(table.shape[0]):
        first = max((idx_lo + j) << shift, lo_bits)
        last = min(((idx_lo + j + 1) << shift) - 1, hi_bits)
        ibuf[0] = first
        b_first = _bucket(fbuf[0], inv_lg, k_min, k_max, min_value, max_value)
        ibuf[0] = last
        b_last = _bucket(fbuf[0], inv_lg, k_min, k_max, min_value, max_value)
        table[j, 1] = b_first
        if b_last == b_first:
            table[j, 0] = _NO_EDGE
            continue
        if b_last != b_first + 1:
            return False
        lo = first  # bucket b_first
        hi = last  # bucket b_first + 1
        while hi - lo > 1:
            mid = lo + (hi - lo) // 2
            ibuf[0] = mid
            if _bucket(fbuf[0], inv_lg, k_min, k_max, min_value, max_value) == b_first:
                lo = mid
            else:
                hi = mid
        table[j, 0] = hi
    return True


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL, inline="always")
def _bucket_fast(v, bits, table, shift, idx_lo, zero, top, min_value, max_value):
    """``_bucket(v, ...)`` of a non-NaN value with its float64 bits ``bits``, from the table of
    ``_bucket_table``: two compares, a shift and one table row, no ``log``. ``top`` is the
    last positive bucket."""
    a = abs(v)
    if a < min_value:
        return zero
    if a > max_value:  # also +inf
        pb = top
    else:
        m = bits & _ABS_BITS
        j = (m >> shift) - idx_lo
        pb = table[j, 1]
        if m >= table[j, 0]:
            pb += 1
    if v > 0.0:
        return pb
    return 2 * zero - pb  # the mirrored negative bucket


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _add_direct(group, value, vbits, counts, vmin, vmax, table, shift, idx_lo, zero, top,
                min_value, max_value):
    """Count each non-NaN ``value[i]`` in its bucket of group ``group[i]`` (ids already
    validated), in batch order. ``vbits`` is ``value`` viewed as int64. Returns the number of
    values counted. For small batches, or one group.

    Runs of readings of one group (all of them, with one group) keep its min/max in
    registers, and runs of one (group, bucket) -- clustered values, e.g. latencies -- add
    their length at once: an increment of the count just stored waits for that store (~5
    cycles, store-to-load forwarding), which was most of the time per reading. The min/max
    are the same operations in the same order, so the results are identical."""
    n_added = 0
    g_run = -1  # group of the run in hand (-1: none yet)
    b_run = 0
    run = 0  # readings of (g_run, b_run) not yet added to counts
    lo = np.inf  # min/max of g_run so far (stored when the group changes)
    hi = -np.inf
    for i in range(value.shape[0]):
        v = value[i]
        if v != v:
            continue
        g = group[i]
        b = _bucket_fast(v, vbits[i], table, shift, idx_lo, zero, top, min_value, max_value)
        if g != g_run:
            if g_run >= 0:
                counts[g_run, b_run] += run
                vmin[g_run] = lo
                vmax[g_run] = hi
            g_run = g
            b_run = b
            run = 0
            lo = vmin[g]
            hi = vmax[g]
        elif b != b_run:
            counts[g_run, b_run] += run
            b_run = b
            run = 0
        run += 1
        lo = min(lo, v)
        hi = max(hi, v)
        n_added += 1
    if g_run >= 0:
        counts[g_run, b_run] += run
        vmin[g_run] = lo
        vmax[g_run] = hi
    return n_added


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _add_grouped(group, value, vbits, counts, vmin, vmax, table, shift, idx_lo, zero, top,
                 min_value, max_value, start, buf, order):
    """Same result as ``_add_direct``, in three passes: (1) bucket of every reading into
    ``buf`` and readings per group; (2) counting sort of the buckets by group into
    ``order``; (3) increments group by group. A reading's increment then hits a count row that
    is hot in cache instead of a random line of a state much larger than the cache: measured
    35-40 M readings/s against 5-6 M/s for ``_add_direct`` with 1,000 random groups
    (27.6 MB of counts). ``start`` is int64 ``[n_groups + 1]`` zeros; ``buf``/``order`` are
    int32 ``[n]`` scratch. Runs of one group in (1) and of one bucket in (3) are tallied in
    registers (see ``_add_direct``)."""
    n_groups = counts.shape[0]
    n_added = 0
    g_run = -1  # as in _add_direct: a run of one group keeps its tallies in registers
    run = 0
    lo = np.inf
    hi = -np.inf
    for i in range(value.shape[0]):
        v = value[i]
        if v != v:
            buf[i] = -1
            continue
        g = group[i]
        buf[i] = _bucket_fast(v, vbits[i], table, shift, idx_lo, zero, top, min_value,
                              max_value)
        if g != g_run:
            if g_run >= 0:
                start[g_run + 1] += run
                vmin[g_run] = lo
                vmax[g_run] = hi
            g_run = g
            run = 0
            lo = vmin[g]
            hi = vmax[g]
        run += 1
        lo = min(lo, v)
        hi = max(hi, v)
        n_added += 1
    if g_run >= 0:
        start[g_run + 1] += run
        vmin[g_run] = lo
        vmax[g_run] = hi
    for g in range(n_groups):
        start[g + 1] += start[g]
    for i in range(value.shape[0]):
        b = buf[i]
        if b >= 0:
            g = group[i]
            order[start[g]] = b
            start[g] += 1
    # start[g] is now the end of group g (and the beginning of g + 1)
    lo = 0
    for g in range(n_groups):
        hi = start[g]
        if hi > lo:
            b_run = order[lo]
            run = 0
            for k in range(lo, hi):
                b = order[k]
                if b != b_run:
                    counts[g, b_run] += run
                    b_run = b
                    run = 0
                run += 1
            counts[g, b_run] += run
        lo = hi
    return n_added


#: Batches at least this long take the grouped (counting-sort) path, when the counts are
#: also larger than ``_DIRECT_MAX_BYTES``.
_GROUPED_MIN = 256
#: Counts up to this size take the direct path at any batch length. The counting sort pays
#: when increments would land on random lines of counts far larger than the cache (1,000
#: random groups x 27.7 MB: direct 64 ns a value, grouped 39); up to here the direct pass is
#: as fast on random groups (8.8 MB: 21 against 17 ns) and much faster on the hub's data,
#: whose frames bring one district's groups at a time (in the hub, 2026-11-22: 1,064
#: percentile groups, 8.8 MB, 13.4 against 35.1 ns; 201 quality groups, 3.7 MB, 6.0 against
#: 13.6 ns).
_DIRECT_MAX_BYTES = 16 << 20


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _quantiles(counts, vmin, vmax, qs, q_order, reps, out):
    """``out[g, j]`` = the representative of the bucket holding rank ``max(1, ceil(qs[j] *
    n_g))`` of group ``g``, clamped to ``[vmin[g], vmax[g]]`` (exactly ``vmin``/``vmax`` for
    the ranks 1 and n); NaN for empty groups.
    ``q_order`` visits ``qs`` ascending, so one cumulative pass per group suffices."""
    n_groups, n_buckets = counts.shape
    m = qs.shape[0]
    for g in range(n_groups):
        total = np.int64(0)
        for b in range(n_buckets):
            total += counts[g, b]
        if total == 0:
            for j in range(m):
                out[g, j] = np.nan
            continue
        ftotal = np.float64(total)
        b = 0
        cum = counts[g, 0]
        for jj in range(m):
            j = q_order[jj]
            r = np.int64(np.ceil(qs[j] * ftotal))
            r = min(max(r, np.int64(1)), total)
            while cum < r:
                b += 1
                cum += counts[g, b]
            if r == total:
                out[g, j] = vmax[g]
            elif r == 1:
                out[g, j] = vmin[g]
            else:
                out[g, j] = min(max(reps[b], vmin[g]), vmax[g])


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _regroup(counts, vmin, vmax, mapping, o_counts, o_min, o_max):
    """Add group ``g`` into output group ``mapping[g]`` (skipped when negative)."""
    n_groups, n_buckets = counts.shape
    for g in range(n_groups):
        t = mapping[g]
        if t < 0:
            continue
        for b in range(n_buckets):
            o_counts[t, b] += counts[g, b]
        if vmin[g] < o_min[t]:
            o_min[t] = vmin[g]
        if vmax[g] > o_max[t]:
            o_max[t] = vmax[g]


# --------------------------------------------------------------------------------------------
# Bucket tables (one per layout, shared)
# --------------------------------------------------------------------------------------------

#: Layout ``(alpha, min_value, max_value)`` -> ``(table, shift, idx_lo)``; tables are
#: read-only and shared by every sketch of the layout (a few tens of KB each).
_TABLES: dict[tuple[float, float, float], tuple[np.ndarray, int, int]] = {}


def _float_bits(x: float) -> int:
    return int(np.array([x], dtype=np.float64).view(np.int64)[0])


def _layout_table(alpha: float, min_value: float, max_value: float, inv_lg: float,
                  k_min: int, k_max: int) -> tuple[np.ndarray, int, int]:
    """The ``_bucket_table`` of a layout, built on first use: ``(table, shift, idx_lo)``.

    Sub-intervals start at ``2**-m`` of an octave, the coarsest for which one spans a smaller
    ratio than a bucket (``log1p(2**-m) < log(gamma)``), so each holds at most one bucket
    edge; if rounding ever put two in one, the next finer split is tried. Rows: about
    ``log2(max_value / min_value) * 2**m`` (1,920 for alpha 1 % over ``[1e-4, 1e5]``)."""
    key = (alpha, min_value, max_value)
    got = _TABLES.get(key)
    if got is not None:
        return got
    log_gamma = math.log((1.0 + alpha) / (1.0 - alpha))
    m = 0
    while math.log1p(2.0**-m) >= log_gamma:
        m += 1
    lo_bits, hi_bits = _float_bits(min_value), _float_bits(max_value)
    while True:
        shift = 52 - m
        if shift < 0:
            raise RuntimeError(f"no bucket table for layout {key}: log is not monotonic")
        idx_lo = lo_bits >> shift
        table = np.empty(((hi_bits >> shift) - idx_lo + 1, 2), dtype=np.int64)
        if _bucket_table(inv_lg, k_min, k_max, min_value, max_value, shift, table):
            break
        m += 1
    table.flags.writeable = False
    got = _TABLES[key] = (table, shift, idx_lo)
    return got


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------




def _check_ids(name: str, ids: np.ndarray, n: int) -> None:
    if ids.shape[0] and (int(ids.min()) < 0 or int(ids.max()) >= n):
        raise ValueError(f"{name} must be in [0, {n}), got values in "
                         f"[{int(ids.min())}, {int(ids.max())}]; drop unresolved ids or "
                         f"build the sketch with more groups")


def _check_counts(name: str, c: object) -> np.ndarray:
    if not isinstance(c, np.ndarray) or c.ndim != 2 or c.dtype != np.int64:
        raise TypeError(f"{name} must be a 2-D int64 numpy array [n_groups, n_buckets], got "
                        f"{getattr(c, 'dtype', type(c).__name__)} "
                        f"with shape {getattr(c, 'shape', None)}")
    return c


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def merge_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pure merge of two sketches' bucket counts (``int64[n_groups, n_buckets]``, same layout,
    i.e. built with the same ``alpha``/``min_value``/``max_value``): a new array ``a + b``.

    Combine the groups' min/max with ``np.minimum`` / ``np.maximum``. Raises on a shape
    mismatch (different layouts cannot be merged) and on int64 overflow.
    """
    _check_counts("a", a)
    _check_counts("b", b)
    if a.shape != b.shape:
        raise ValueError(f"cannot merge counts of shapes {a.shape} and {b.shape}: sketches "
                         "must share n_groups and (alpha, min_value, max_value)")
    out = a + b
    if ((out < a) & (b > 0)).any():
        raise OverflowError("bucket count overflowed int64")
    return out


class LogHistogram:
    """One relative-error percentile sketch per group ``0 .. n_groups-1`` (see module doc).

    ``alpha``: relative accuracy in ``(0, 1)`` (default 1 %). ``min_value``/``max_value``:
    the magnitude range with the error guarantee (``0 < min_value < max_value``).
    Not thread-safe: one owner.
    """

    def __init__(self, alpha: float = 0.01, n_groups: int = 1, min_value: float = 1e-6,
                 max_value: float = 1e9) -> None:
        alpha = float(alpha)
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if int(n_groups) < 1:
            raise ValueError(f"n_groups must be >= 1, got {n_groups}")
        min_value = float(min_value)
        max_value = float(max_value)
        if not (0.0 < min_value < max_value < math.inf):
            raise ValueError(f"need 0 < min_value < max_value < inf, got {min_value}, "
                             f"{max_value}")
        self._alpha = alpha
        self._min_value = min_value
        self._max_value = max_value
        self._gamma = (1.0 + alpha) / (1.0 - alpha)
        self._inv_lg = 1.0 / math.log(self._gamma)
        self._k_min = math.ceil(math.log(min_value) * self._inv_lg)
        self._k_max = math.ceil(math.log(max_value) * self._inv_lg)
        n_keys = self._k_max - self._k_min + 1
        if 2 * n_keys + 1 > 1 << 20:
            raise ValueError(f"{2 * n_keys + 1} buckets per group: raise alpha or narrow "
                             "[min_value, max_value]")
        keys = np.arange(self._k_min, self._k_max + 1, dtype=np.float64)
        pos = 2.0 * np.exp(keys * math.log(self._gamma)) / (self._gamma + 1.0)
        self._reps = np.concatenate([-pos[::-1], [0.0], pos])
        self._table, self._shift, self._idx_lo = _layout_table(
            alpha, min_value, max_value, self._inv_lg, self._k_min, self._k_max)
        self._n_groups = int(n_groups)
        self._counts = np.zeros((self._n_groups, self.n_buckets), dtype=np.int64)
        self._min = np.full(self._n_groups, np.inf)
        self._max = np.full(self._n_groups, -np.inf)

    # -- introspection ---------------------------------------------------------------------
    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def gamma(self) -> float:
        """Bucket growth factor ``(1 + alpha) / (1 - alpha)``."""
        return self._gamma

    @property
    def min_value(self) -> float:
        return self._min_value

    @property
    def max_value(self) -> float:
        return self._max_value

    @property
    def n_groups(self) -> int:
        return self._n_groups

    @property
    def n_buckets(self) -> int:
        """Buckets per group: ``2 * (k_max - k_min + 1) + 1``."""
        return 2 * (self._k_max - self._k_min + 1) + 1

    @property
    def key_range(self) -> tuple[int, int]:
        """``(k_min, k_max)``: keys of ``min_value`` and ``max_value``."""
        return self._k_min, self._k_max

    @property
    def nbytes(self) -> int:
        return int(self._counts.nbytes + self._min.nbytes + self._max.nbytes)

    @property
    def counts(self) -> np.ndarray:
        """Read-only ``int64[n_groups, n_buckets]`` bucket counts (value order)."""
        v = self._counts.view()
        v.flags.writeable = False
        return v

    @property
    def representatives(self) -> np.ndarray:
        """Read-only ``float64[n_buckets]``: the value each bucket answers with."""
        v = self._reps.view()
        v.flags.writeable = False
        return v

    @property
    def min(self) -> np.ndarray:
        """Read-only exact minimum per group (``+inf`` when empty)."""
        v = self._min.view()
        v.flags.writeable = False
        return v

    @property
    def max(self) -> np.ndarray:
        """Read-only exact maximum per group (``-inf`` when empty)."""
        v = self._max.view()
        v.flags.writeable = False
        return v

    def count(self, groups: np.ndarray | None = None) -> np.ndarray:
        """``int64[n_groups]``: values counted per group; with ``groups`` (int64 ids) only
        theirs, ``int64[len(groups)]`` (the rows summed are only theirs)."""
        if groups is None:
            return self._counts.sum(axis=1)
        g = _check_1d("groups", groups, np.int64)
        _check_ids("groups", g, self._n_groups)
        return self._counts[g].sum(axis=1)

    def nonempty(self) -> np.ndarray:
        """int64 ids, ascending, of the groups holding at least one value: the groups with
        ``count() > 0``, found in O(n_groups) from the exact min/max instead of a pass over
        every count (each counted value updates both, so a group is non-empty iff ``min <=
        max``; ``from_arrays`` must be given consistent arrays, as ``to_arrays`` returns)."""
        return np.flatnonzero(self._min <= self._max)

    def same_layout(self, other: LogHistogram) -> bool:
        """True when ``other`` buckets values identically (mergeable)."""
        return (self._alpha == other._alpha and self._min_value == other._min_value
                and self._max_value == other._max_value)

    # -- updates ---------------------------------------------------------------------------
    def add(self, group: np.ndarray, value: np.ndarray) -> int:
        """Count ``value[i]`` in group ``group[i]`` (int64 ids in ``[0, n_groups)``, float64
        values, equal-length contiguous 1-D). NaN is skipped. Returns the number counted."""
        g = _check_1d("group", group, np.int64)
        v = _check_1d("value", value, np.float64)
        if g.shape[0] != v.shape[0]:
            raise ValueError(f"group and value must have equal lengths, got {g.shape[0]}, "
                             f"{v.shape[0]}")
        if g.shape[0] == 0:
            return 0
        _check_ids("group", g, self._n_groups)
        zero = self._k_max - self._k_min + 1
        args = (g, v, v.view(np.int64), self._counts, self._min, self._max, self._table,
                self._shift, self._idx_lo, zero, 2 * zero, self._min_value, self._max_value)
        n = g.shape[0]
        if n < _GROUPED_MIN or self._counts.nbytes <= _DIRECT_MAX_BYTES:
            return int(_add_direct(*args))  # short batch, or counts that stay in cache
        start = np.zeros(self._n_groups + 1, dtype=np.int64)
        buf = np.empty(n, dtype=np.int32)
        order = np.empty(n, dtype=np.int32)
        return int(_add_grouped(*args, start, buf, order))

    def merge(self, other: LogHistogram) -> None:
        """Add ``other``'s counts (same layout and ``n_groups``) into this sketch, in place."""
        if not isinstance(other, LogHistogram):
            raise TypeError(f"other must be a LogHistogram, got {type(other).__name__}")
        if not self.same_layout(other):
            raise ValueError("cannot merge sketches with different (alpha, min_value, "
                             f"max_value): {(self._alpha, self._min_value, self._max_value)} "
                             f"vs {(other._alpha, other._min_value, other._max_value)}")
        self._counts = merge_counts(self._counts, other._counts)
        np.minimum(self._min, other._min, out=self._min)
        np.maximum(self._max, other._max, out=self._max)

    def reset(self, groups: np.ndarray | None = None) -> None:
        """Empty ``groups`` (int64 ids; ``None`` = every group)."""
        if groups is None:
            self._counts[:] = 0
            self._min[:] = np.inf
            self._max[:] = -np.inf
            return
        g = _check_1d("groups", groups, np.int64)
        _check_ids("groups", g, self._n_groups)
        self._counts[g] = 0
        self._min[g] = np.inf
        self._max[g] = -np.inf

    # -- queries ---------------------------------------------------------------------------
    def quantiles(self, qs: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """``float64[n_groups, m]``: the inverted-CDF quantile ``qs[j]`` of each group (rank
        ``max(1, ceil(q * n))``, see the module doc for the error bound); NaN rows for empty
        groups. ``qs``: float64 ``[m]`` in ``[0, 1]``, any order. With ``groups`` (int64
        ids): ``float64[len(groups), m]``, the same rows as ``quantiles(qs)[groups]`` at the
        cost of those groups only."""
        q = _check_1d("qs", qs, np.float64)
        if q.shape[0] and not ((q >= 0.0) & (q <= 1.0)).all():
            raise ValueError(f"qs must be in [0, 1] (not percent), got {q.tolist()}")
        counts, vmin, vmax = self._counts, self._min, self._max
        if groups is not None:
            g = _check_1d("groups", groups, np.int64)
            _check_ids("groups", g, self._n_groups)
            counts, vmin, vmax = counts[g], vmin[g], vmax[g]  # copies: C-contiguous
        out = np.empty((counts.shape[0], q.shape[0]), dtype=np.float64)
        if q.shape[0]:
            order = np.argsort(q, kind="stable").astype(np.int64)
            _quantiles(counts, vmin, vmax, q, order, self._reps, out)
        return out

    def regroup(self, mapping: np.ndarray, n_out: int) -> LogHistogram:
        """A new sketch with ``n_out`` groups where group ``g`` is added into
        ``mapping[g]`` (int64 ``[n_groups]``; ``-1`` drops the group), e.g. series ->
        district. Exact: equals sketching each output group's values directly."""
        m = _check_1d("mapping", mapping, np.int64)
        if m.shape[0] != self._n_groups:
            raise ValueError(f"mapping must have one entry per group ({self._n_groups}), "
                             f"got {m.shape[0]}")
        if int(n_out) < 1:
            raise ValueError(f"n_out must be >= 1, got {n_out}")
        if m.shape[0] and (int(m.min()) < -1 or int(m.max()) >= int(n_out)):
            raise ValueError(f"mapping values must be in [-1, {int(n_out)})")
        out = LogHistogram(self._alpha, int(n_out), self._min_value, self._max_value)
        _regroup(self._counts, self._min, self._max, m, out._counts, out._min, out._max)
        return out

    # -- persistence -----------------------------------------------------------------------
    def to_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of ``(counts, min, max)``: with the constructor parameters, everything
        needed to rebuild the sketch (``from_arrays``) in another process."""
        return self._counts.copy(), self._min.copy(), self._max.copy()

    @classmethod
    def from_arrays(cls, counts: np.ndarray, vmin: np.ndarray, vmax: np.ndarray,
                    alpha: float = 0.01, min_value: float = 1e-6,
                    max_value: float = 1e9) -> LogHistogram:
        """Rebuild a sketch from ``to_arrays`` output and its constructor parameters."""
        c = _check_counts("counts", counts)
        h = cls(alpha, c.shape[0], min_value, max_value)
        if c.shape[1] != h.n_buckets:
            raise ValueError(f"counts has {c.shape[1]} buckets per group, the parameters give "
                             f"{h.n_buckets}: pass the parameters the sketch was built with")
        lo = _check_1d("vmin", vmin, np.float64)
        hi = _check_1d("vmax", vmax, np.float64)
        if lo.shape[0] != c.shape[0] or hi.shape[0] != c.shape[0]:
            raise ValueError("vmin and vmax need one entry per group")
        h._counts[:] = c
        h._min[:] = lo
        h._max[:] = hi
        return h
