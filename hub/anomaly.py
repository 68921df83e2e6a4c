"""Sensor-fault and outlier detectors: stuck (flat-lined) sensors, spikes, peer drift.

Every detector is a state object holding numpy arrays, advanced by one ``@njit`` kernel per
batch; the hub calls ``update`` with a whole batch (dense int64 entity ids). Results are dense
per input row (``flag``, ``reason``, ``score`` and detector details), so the hub can mask
readings (``result.flag``) or publish events (``np.flatnonzero(result.flag)``).

Units and conventions
---------------------
* ids: int64, dense, ``>= 0``; state grows (doubling) to hold the largest id seen.
* ``ts_ns``: int64 ns since the Unix epoch (UTC).
* values: float64; NaN = missing reading. Per detector:

  - stuck: NaN is skipped (neither extends nor breaks a run); ``±inf`` is a value (a sensor
    pinned at ``+inf`` is stuck);
  - spike and drift: every non-finite value (NaN, ``±inf``) is missing -- not scored, not
    added to the history (an infinity would poison a median/MAD window).

* reason codes (``uint8``): ``REASON_NONE`` 0, ``REASON_STUCK`` 1, ``REASON_SPIKE`` 2,
  ``REASON_DRIFT`` 3; names in ``REASON_NAMES``. ``reason`` is the detector's code where
  ``flag`` is set and ``REASON_NONE`` elsewhere.
* Readings of one series are processed in batch order, batch after batch (arrival order);
  timestamps are not re-sorted.

(a) Stuck sensor -- ``StuckDetector``
-------------------------------------
A *run* is a maximal sequence of a series' non-NaN readings equal to the run's first value
(``v == anchor`` or ``|v - anchor| <= tolerance``; ``tolerance`` 0 = identical values).
Per reading: ``run_count`` (readings in the run so far, this one included) and ``run_ns =
ts - ts(first reading of the run)``. Flagged when ``run_count >= min_count`` **and**
``run_ns >= min_duration_s * 1e9``; ``score`` = ``run_ns / 1e9`` (seconds). Every reading
of a qualifying run is flagged (the flag is a state, not an edge).

(b) Spike -- ``SpikeDetector``
------------------------------
Per series, a ring of the last ``window`` finite values (the *history*, excluding the reading
being scored). A reading is scored once the history holds ``>= min_periods`` values:
``median`` and ``mad = median(|h - median|)`` of the history (``np.median`` conventions:
mean of the two middle values for an even count), ``dev = |x - median|``:

* ``mad > 0``: ``score = dev / (1.4826 * mad)``; flagged when ``dev > (k * 1.4826) * mad``
  (the same test as ``score > k`` without a division).
* ``mad == 0`` (at least half the history identical): ``score = inf`` if ``dev > 0`` else
  ``0``; flagged when ``dev > abs_floor``. ``abs_floor`` is in the series' unit: set it to a
  few resolution steps of the sensor (default 0: any change after a constant history).

Then the reading joins the history (flagged or not), so a genuine level shift stops being
flagged after about ``window / 2`` readings. Unscored readings have ``score``, ``median``,
``mad`` = NaN. Cost per reading O(window): the history is kept sorted alongside the ring
(insert/evict by shifting), the MAD a binary search over the two sorted runs of deviations
either side of the median.

(c) Peer drift -- ``peer_scores`` / ``DriftDetector``
-----------------------------------------------------
One call = one window (e.g. hourly means): a value per station and each station's group
(district). Per group, over the finite values of stations in it: ``group_median``,
``group_mad`` (median absolute deviation across stations), ``group_n``. A station is scored
when its value is finite and its group has ``>= min_group_size`` finite values: signed
``score = (x - median) / (1.4826 * mad)`` (``±inf``/0 when ``mad == 0``), *exceeding* when
``|x - median| > (k * 1.4826) * mad`` (``mad > 0``) or ``|x - median| > abs_floor``
(``mad == 0``). ``DriftDetector`` keeps a counter per station: +1 for an exceeding window, reset
to 0 for a scored non-exceeding one, unchanged when the station is not scored (missing,
non-finite, or too small a group: no evidence either way); flagged when scored, exceeding and
the counter is ``>= min_windows``.

Throughput (one core of the 2-core dev VM, warm JIT, best of 7, 1M readings over 10k
series with cycling ids; the VM was shared, so ranges): ``StuckDetector.update`` 40-65 M
readings/s; ``SpikeDetector.update`` (W = 31, every history full, so every reading is
scored) 7-9 M readings/s -- ~20 ns for median + MAD, the rest is keeping the sorted copy.

The hub runs both over a batch at once (``scan_stuck_and_spikes``): one compiled pass over
the readings of scored series, keeping only the readings to report (a stuck episode starting,
a spike) instead of five per-reading result arrays per detector and the masks to pick them
out. A reading that repeats the value it evicts from a full history skips the sorted-copy
update (it would leave it as it is), and a history left as it is keeps its median and MAD
(not searched again): a sensor repeating its value costs ~1/3. Same state, same reports
(tested bit for bit against the two detectors' own updates).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

import numpy as np
from numba import njit

from hub.arrays import check_1d as _check_1d
from hub.arrays import doubled_capacity as _new_capacity
from hub.arrays import grown as _grown
from hub.kernel_config import CACHE, FASTMATH, NOGIL

__all__ = [
    "MAD_SCALE",
    "REASON_DRIFT",
    "REASON_NAMES",
    "REASON_NONE",
    "REASON_SPIKE",
    "REASON_STUCK",
    "DriftDetector",
    "DriftResult",
    "PeerScores",
    "ScanRows",
    "SpikeDetector",
    "SpikeResult",
    "StuckDetector",
    "StuckResult",
    "peer_scores",
    "scan_stuck_and_spikes",
]

REASON_NONE: Final = 0
REASON_STUCK: Final = 1
REASON_SPIKE: Final = 2
REASON_DRIFT: Final = 3
#: Reason code -> name.
REASON_NAMES: Final[dict[int, str]] = {REASON_NONE: "none", REASON_STUCK: "stuck",
                                       REASON_SPIKE: "spike", REASON_DRIFT: "drift"}
#: MAD -> standard deviation for normal data.
MAD_SCALE: Final = 1.4826

_NS_PER_S = 1_000_000_000


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def _check_lengths(obj: object) -> None:
    n = -1
    for f in fields(obj):  # type: ignore[arg-type]
        a = getattr(obj, f.name)
        if not isinstance(a, np.ndarray) or a.ndim != 1 or (n >= 0 and a.shape[0] != n):
            raise ValueError(f"{type(obj).__name__}.{f.name} must be a 1-D array of the "
                             "common length")
        n = a.shape[0]


@dataclass(frozen=True, slots=True)
class StuckResult:
    """Per input row of ``StuckDetector.update``."""

    flag: np.ndarray  #: bool: the series is stuck at this reading
    reason: np.ndarray  #: uint8: REASON_STUCK where flagged, else REASON_NONE
    score: np.ndarray  #: float64: run duration in s (NaN for NaN readings)
    run_count: np.ndarray  #: int64: readings in the run so far (0 for NaN readings)
    run_ns: np.ndarray  #: int64: ts - ts of the run's first reading (0 for NaN readings)

    def __post_init__(self) -> None:
        _check_lengths(self)

    def __len__(self) -> int:
        return int(self.flag.shape[0])


@dataclass(frozen=True, slots=True)
class SpikeResult:
    """Per input row of ``SpikeDetector.update``."""

    flag: np.ndarray  #: bool
    reason: np.ndarray  #: uint8: REASON_SPIKE where flagged, else REASON_NONE
    score: np.ndarray  #: float64 |x - median| / (1.4826 mad); inf if mad == 0 < dev; NaN unscored
    median: np.ndarray  #: float64: history median (NaN when unscored)
    mad: np.ndarray  #: float64: history MAD, unscaled (NaN when unscored)

    def __post_init__(self) -> None:
        _check_lengths(self)

    def __len__(self) -> int:
        return int(self.flag.shape[0])


@dataclass(frozen=True, slots=True)
class PeerScores:
    """``peer_scores`` output: per input row (``score``, ``exceed``, ``scored``) and per
    group (``group_*``, indexed by group id)."""

    score: np.ndarray  #: float64 signed (x - median) / (1.4826 mad); NaN when unscored
    exceed: np.ndarray  #: bool: scored and beyond k robust units (or abs_floor if mad == 0)
    scored: np.ndarray  #: bool: finite value in a group with >= min_group_size values
    group_median: np.ndarray  #: float64 [n_groups] (NaN for groups without finite values)
    group_mad: np.ndarray  #: float64 [n_groups], unscaled
    group_n: np.ndarray  #: int64 [n_groups]: finite values per group


@dataclass(frozen=True, slots=True)
class DriftResult:
    """Per input row of ``DriftDetector.update`` (same order as the input)."""

    station: np.ndarray  #: int64 (the input ids)
    flag: np.ndarray  #: bool: exceeding for >= min_windows consecutive scored windows
    reason: np.ndarray  #: uint8: REASON_DRIFT where flagged, else REASON_NONE
    score: np.ndarray  #: float64 signed robust deviation from the group median
    consecutive: np.ndarray  #: int64: the station's counter after this window
    group_median: np.ndarray  #: float64: median of the station's group
    group_mad: np.ndarray  #: float64: MAD of the station's group (unscaled)

    def __post_init__(self) -> None:
        _check_lengths(self)

    def __len__(self) -> int:
        return int(self.flag.shape[0])


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _stuck_kernel(series, ts_ns, value, anchor, run_count, run_start, min_count, min_ns,
                  tolerance, o_flag, o_count, o_ns):
    for i in range(value.shape[0]):
        v = value[i]
        if v != v:
            o_flag[i] = False
            o_count[i] = 0
            o_ns[i] = 0
            continue
        s = series[i]
        t = ts_ns[i]
        c = run_count[s]
        a = anchor[s]
        if c > 0 and (v == a or abs(v - a) <= tolerance):
            c += 1
        else:
            c = 1
            anchor[s] = v
            run_start[s] = t
        run_count[s] = c
        d = t - run_start[s]
        o_count[i] = c
        o_ns[i] = d
        o_flag[i] = c >= min_count and d >= min_ns


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _median_mad_sorted(a, off, c):
    """Median and MAD (unscaled) of ``a[off:off + c]`` (1-D, sorted ascending, ``c >= 1``)
    with ``np.median``'s conventions (mean of the two middle values for even counts).

    The deviations split into two ascending sequences: ``L[i] = med - a[lo0 - i]`` (walking
    left from the middle) and ``R[j] = a[hi0 + j] - med`` (walking right). The MAD is the
    ``k``-th smallest of their union (``k = h`` for odd ``c``; ``h - 1`` and the next one for
    even ``c``), found by binary search on how many of the ``k + 1`` smallest come from
    ``L``: O(log c), no data-dependent branch per element. Each deviation is the same float
    subtraction numpy does (``|a - med|``), so median and MAD equal ``np.median``'s exactly.
    """
    h = c // 2
    if c % 2 == 1:
        med = a[off + h]
        lo0 = h
        hi0 = h + 1
    else:
        med = (a[off + h - 1] + a[off + h]) / 2.0
        lo0 = h - 1
        hi0 = h
    nl = lo0 + 1
    nr = c - hi0
    k = h if c % 2 == 1 else h - 1  # 0-based rank of the (first) middle deviation
    lo = max(0, k + 1 - nr)
    hi = min(k + 1, nl)
    # smallest i in [lo, hi] with i == hi or L[i] >= R[k - i]
    while lo < hi:
        i = (lo + hi) // 2
        if med - a[off + lo0 - i] >= a[off + hi0 + k - i] - med:
            hi = i
        else:
            lo = i + 1
    i = lo
    j = k + 1 - i  # taken from R
    kth = -np.inf
    if i > 0:
        kth = med - a[off + lo0 - i + 1]
    if j > 0:
        kth = max(kth, a[off + hi0 + j - 1] - med)
    if c % 2 == 1:
        return med, kth
    nxt = np.inf
    if i < nl:
        nxt = med - a[off + lo0 - i]
    if j < nr:
        nxt = min(nxt, a[off + hi0 + j] - med)
    return med, (kth + nxt) / 2.0


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _spike_kernel(series, value, ring, srt, cnt, pos, w, min_periods, kc, abs_floor,
                  o_flag, o_score, o_med, o_mad):
    """``ring``/``srt``: flat float64 views of the ``[capacity, w]`` histories (2-D views per
    reading would cost two atomic reference-count updates each)."""
    for i in range(value.shape[0]):
        v = value[i]
        if not np.isfinite(v):
            o_flag[i] = False
            o_score[i] = np.nan
            o_med[i] = np.nan
            o_mad[i] = np.nan
            continue
        s = series[i]
        c = cnt[s]
        base = s * w
        if c >= min_periods:
            med, mad = _median_mad_sorted(srt, base, c)
            dev = abs(v - med)
            if mad > 0.0:
                o_score[i] = dev / (MAD_SCALE * mad)
                o_flag[i] = dev > kc * mad
            else:
                o_score[i] = np.inf if dev > 0.0 else 0.0
                o_flag[i] = dev > abs_floor
            o_med[i] = med
            o_mad[i] = mad
        else:
            o_flag[i] = False
            o_score[i] = np.nan
            o_med[i] = np.nan
            o_mad[i] = np.nan
        # history update: evict the oldest when full, insert v; srt[base:base + c] stays sorted
        p = pos[s]
        if c == w:
            old = ring[base + p]
            lo = 0
            hi = c - 1
            while lo < hi:  # leftmost index holding `old` (it is there: copied bits)
                mid = (lo + hi) // 2
                if srt[base + mid] < old:
                    lo = mid + 1
                else:
                    hi = mid
            j = lo
            if v > old:
                while j + 1 < c and srt[base + j + 1] < v:
                    srt[base + j] = srt[base + j + 1]
                    j += 1
            else:
                while j > 0 and srt[base + j - 1] > v:
                    srt[base + j] = srt[base + j - 1]
                    j -= 1
            srt[base + j] = v
        else:
            j = c
            while j > 0 and srt[base + j - 1] > v:
                srt[base + j] = srt[base + j - 1]
                j -= 1
            srt[base + j] = v
            cnt[s] = c + 1
        ring[base + p] = v
        p += 1
        pos[s] = 0 if p == w else p


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _scan_kernel(series, ts_ns, value, scored, anchor, run_count, run_start, min_count,
                 min_ns, tolerance, ring, srt, cnt, pos, w, min_periods, kc, abs_floor,
                 med_cache, mad_cache, cache_ok, stuck_open, o_row, o_stuck, o_run_ns,
                 o_spike, mark):
    """``_stuck_kernel`` and ``_spike_kernel`` over the readings whose series is
    ``scored``, in one pass, keeping only what ``scan_stuck_and_spikes`` reports: the rows
    newly stuck (stuck, and ``stuck_open`` was False before the batch) or spiking, with
    their stuck run length (ns) and spike score. Then ``stuck_open`` is updated as the
    numpy assignments ``open[s[flag]] = True; open[s[~flag & (run_count == 1)]] = False``
    would (``mark``: int8 scratch per reading). Returns the number of rows.

    The two detectors' per-reading steps are copied here, not called: a helper taking the
    state arrays costs reference-count updates per reading, ~40 % more time per reading
    measured, inlined or not. Keep them in step with ``_stuck_kernel`` and
    ``_spike_kernel``; ``test_scan_equals_both_detectors`` checks they agree bit for bit.
    Two shortcuts, for a sensor repeating its value: a value equal to the one it evicts
    from a full history (non-zero, so the same bits) leaves the sorted copy as the update
    would, and skips it; and the median and MAD of a history are kept (``med_cache``,
    ``mad_cache``, valid where ``cache_ok``) until the sorted copy changes, so a history
    left as it was is not searched again."""
    k = 0
    for i in range(value.shape[0]):
        mark[i] = 0
        s = series[i]
        if not scored[s]:
            continue
        v = value[i]
        # -- stuck (as _stuck_kernel): NaN neither extends nor breaks a run
        stuck = False
        run_ns = 0
        if v == v:
            t = ts_ns[i]
            c = run_count[s]
            a = anchor[s]
            if c > 0 and (v == a or abs(v - a) <= tolerance):
                c += 1
            else:
                c = 1
                anchor[s] = v
                run_start[s] = t
            run_count[s] = c
            run_ns = t - run_start[s]
            stuck = c >= min_count and run_ns >= min_ns
            if stuck:
                mark[i] = 1
            elif c == 1:
                mark[i] = 2
        # -- spike (as _spike_kernel): non-finite values are not scored nor kept
        spike = False
        score = np.nan
        if np.isfinite(v):
            c = cnt[s]
            base = s * w
            if c >= min_periods:
                if cache_ok[s]:  # the history is as when they were computed
                    med = med_cache[s]
                    mad = mad_cache[s]
                else:
                    med, mad = _median_mad_sorted(srt, base, c)
                    med_cache[s] = med
                    mad_cache[s] = mad
                    cache_ok[s] = True
                dev = abs(v - med)
                if mad > 0.0:
                    score = dev / (MAD_SCALE * mad)
                    spike = dev > kc * mad
                else:
                    score = np.inf if dev > 0.0 else 0.0
                    spike = dev > abs_floor
            p = pos[s]
            if c == w and v == ring[base + p] and v != 0.0:
                pass  # v replaces an equal value (same bits: finite, non-zero): the sorted
                # copy stays as it is -- what the update below would leave, without its
                # search (a sensor repeating its value is the common case)
            elif c == w:
                cache_ok[s] = False
                old = ring[base + p]
                lo = 0
                hi = c - 1
                while lo < hi:  # leftmost index holding `old` (it is there: copied bits)
                    mid = (lo + hi) // 2
                    if srt[base + mid] < old:
                        lo = mid + 1
                    else:
                        hi = mid
                j = lo
                if v > old:
                    while j + 1 < c and srt[base + j + 1] < v:
                        srt[base + j] = srt[base + j + 1]
                        j += 1
                else:
                    while j > 0 and srt[base + j - 1] > v:
                        srt[base + j] = srt[base + j - 1]
                        j -= 1
                srt[base + j] = v
            else:
                cache_ok[s] = False
                j = c
                while j > 0 and srt[base + j - 1] > v:
                    srt[base + j] = srt[base + j - 1]
                    j -= 1
                srt[base + j] = v
                cnt[s] = c + 1
            ring[base + p] = v
            p += 1
            pos[s] = 0 if p == w else p
        newly = stuck and not stuck_open[s]
        if newly or spike:
            o_row[k] = i
            o_stuck[k] = newly
            o_run_ns[k] = run_ns
            o_spike[k] = score
            k += 1
    for i in range(value.shape[0]):
        if mark[i] == 1:
            stuck_open[series[i]] = True
    for i in range(value.shape[0]):
        if mark[i] == 2:
            stuck_open[series[i]] = False
    return k


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _peer_kernel(group, value, sorted_vals, starts, n_fin, min_group_size, kc, abs_floor,
                 g_med, g_mad, o_score, o_exceed, o_scored):
    """``sorted_vals[starts[g]:starts[g] + n_fin[g]]`` are group g's finite values, sorted."""
    n_groups = starts.shape[0]
    for g in range(n_groups):
        c = n_fin[g]
        if c == 0:
            g_med[g] = np.nan
            g_mad[g] = np.nan
        else:
            med, mad = _median_mad_sorted(sorted_vals, starts[g], c)
            g_med[g] = med
            g_mad[g] = mad
    for i in range(value.shape[0]):
        v = value[i]
        g = group[i]
        if not np.isfinite(v) or n_fin[g] < min_group_size:
            o_score[i] = np.nan
            o_exceed[i] = False
            o_scored[i] = False
            continue
        med = g_med[g]
        mad = g_mad[g]
        d = v - med
        dev = abs(d)
        if mad > 0.0:
            o_score[i] = d / (MAD_SCALE * mad)
            o_exceed[i] = dev > kc * mad
        else:
            o_score[i] = 0.0 if d == 0.0 else (np.inf if d > 0.0 else -np.inf)
            o_exceed[i] = dev > abs_floor
        o_scored[i] = True


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------




def _check_same_length(**arrays: np.ndarray) -> int:
    lengths = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{', '.join(lengths)} must have equal lengths, got {lengths}")
    return next(iter(lengths.values()))


def _check_ids(name: str, ids: np.ndarray) -> int:
    """Validate ``ids >= 0``; return ``max + 1`` (0 when empty)."""
    if ids.shape[0] == 0:
        return 0
    lo = int(ids.min())
    if lo < 0:
        raise ValueError(f"{name} ids must be >= 0, got {lo}; drop unresolved rows (id < 0) "
                         "first")
    return int(ids.max()) + 1


def _reason(flag: np.ndarray, code: int) -> np.ndarray:
    return np.where(flag, np.uint8(code), np.uint8(REASON_NONE)).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class StuckDetector:
    """Flat-lined sensors: runs of identical values, stateful across batches (module doc (a)).

    Settings: ``min_count`` readings and ``min_duration_s`` seconds (both must be reached),
    ``tolerance`` (same unit as the values; 0 = identical). Defaults are a starting point:
    tune per measurement (a rain gauge reads 0.0 for days legitimately).
    """

    def __init__(self, n_series: int = 1024, min_count: int = 12,
                 min_duration_s: float = 3600.0, tolerance: float = 0.0) -> None:
        if int(n_series) < 1:
            raise ValueError(f"n_series must be >= 1, got {n_series}")
        if int(min_count) < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if not float(min_duration_s) >= 0.0:
            raise ValueError(f"min_duration_s must be >= 0, got {min_duration_s}")
        if not float(tolerance) >= 0.0:
            raise ValueError(f"tolerance must be >= 0 (not NaN), got {tolerance}")
        self.min_count = int(min_count)
        self.min_duration_s = float(min_duration_s)
        self.tolerance = float(tolerance)
        n = int(n_series)
        self._anchor = np.zeros(n, dtype=np.float64)
        self._run_count = np.zeros(n, dtype=np.int64)
        self._run_start = np.zeros(n, dtype=np.int64)

    @property
    def capacity(self) -> int:
        return int(self._run_count.shape[0])

    def _ensure(self, needed: int) -> None:
        if needed > self.capacity:
            cap = _new_capacity(self.capacity, needed)
            self._anchor = _grown(self._anchor, cap, 0.0)
            self._run_count = _grown(self._run_count, cap, 0)
            self._run_start = _grown(self._run_start, cap, 0)

    def update(self, series: np.ndarray, ts_ns: np.ndarray, value: np.ndarray) -> StuckResult:
        """Advance the runs with a batch (int64 ids, int64 ns, float64 values; equal-length
        contiguous 1-D) and return the per-reading result."""
        s = _check_1d("series", series, np.int64)
        t = _check_1d("ts_ns", ts_ns, np.int64)
        v = _check_1d("value", value, np.float64)
        n = _check_same_length(series=s, ts_ns=t, value=v)
        self._ensure(_check_ids("series", s))
        flag = np.empty(n, dtype=np.bool_)
        count = np.empty(n, dtype=np.int64)
        run_ns = np.empty(n, dtype=np.int64)
        min_ns = min(int(self.min_duration_s * _NS_PER_S), 2**63 - 1)
        if n:
            _stuck_kernel(s, t, v, self._anchor, self._run_count, self._run_start,
                          self.min_count, min_ns, self.tolerance, flag, count, run_ns)
        score = np.where(count > 0, run_ns / _NS_PER_S, np.nan)
        return StuckResult(flag, _reason(flag, REASON_STUCK), score, count, run_ns)

    def reset(self, series: np.ndarray | None = None) -> None:
        """Forget the runs of ``series`` (int64 ids; None = all), e.g. after a sensor swap."""
        if series is None:
            self._run_count[:] = 0
            return
        s = _check_1d("series", series, np.int64)
        self._ensure(_check_ids("series", s))
        self._run_count[s] = 0

    def run_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of ``(anchor value, run_count, run_start_ns)`` per series (count 0 = no
        run yet)."""
        return self._anchor.copy(), self._run_count.copy(), self._run_start.copy()


class SpikeDetector:
    """Spikes by a rolling median/MAD score per series (module doc (b)).

    Settings: ``window`` (history length W), ``k`` (robust units), ``min_periods`` (history
    needed to score, default W), ``abs_floor`` (deviation that counts when the MAD is 0).
    State: ``2 * W * 8 + 17`` bytes per series (ring, sorted copy, cached median and MAD).
    """

    def __init__(self, n_series: int = 1024, window: int = 31, k: float = 6.0,
                 min_periods: int | None = None, abs_floor: float = 0.0) -> None:
        if int(n_series) < 1:
            raise ValueError(f"n_series must be >= 1, got {n_series}")
        if int(window) < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        mp = int(window) if min_periods is None else int(min_periods)
        if not 1 <= mp <= int(window):
            raise ValueError(f"min_periods must be in [1, window={window}], got {mp}")
        if not float(k) > 0.0:
            raise ValueError(f"k must be > 0, got {k}")
        if not float(abs_floor) >= 0.0:
            raise ValueError(f"abs_floor must be >= 0 (not NaN), got {abs_floor}")
        self.window = int(window)
        self.k = float(k)
        self.min_periods = mp
        self.abs_floor = float(abs_floor)
        n = int(n_series)
        self._ring = np.zeros((n, self.window), dtype=np.float64)
        self._sorted = np.zeros((n, self.window), dtype=np.float64)
        self._count = np.zeros(n, dtype=np.int64)
        self._pos = np.zeros(n, dtype=np.int64)
        # median and MAD of each history as last computed by ``scan_stuck_and_spikes``,
        # valid while ``_cache_ok``: whatever else changes a history clears its flag
        self._med_cache = np.zeros(n, dtype=np.float64)
        self._mad_cache = np.zeros(n, dtype=np.float64)
        self._cache_ok = np.zeros(n, dtype=np.bool_)

    @property
    def capacity(self) -> int:
        return int(self._count.shape[0])

    def _ensure(self, needed: int) -> None:
        if needed > self.capacity:
            cap = _new_capacity(self.capacity, needed)
            self._ring = _grown(self._ring, cap, 0.0)
            self._sorted = _grown(self._sorted, cap, 0.0)
            self._count = _grown(self._count, cap, 0)
            self._pos = _grown(self._pos, cap, 0)
            self._med_cache = _grown(self._med_cache, cap, 0.0)
            self._mad_cache = _grown(self._mad_cache, cap, 0.0)
            self._cache_ok = _grown(self._cache_ok, cap, False)

    def update(self, series: np.ndarray, value: np.ndarray) -> SpikeResult:
        """Score a batch (int64 ids, float64 values, in arrival order per series), then add
        its finite values to the histories."""
        s = _check_1d("series", series, np.int64)
        v = _check_1d("value", value, np.float64)
        n = _check_same_length(series=s, value=v)
        self._ensure(_check_ids("series", s))
        flag = np.empty(n, dtype=np.bool_)
        score = np.empty(n, dtype=np.float64)
        med = np.empty(n, dtype=np.float64)
        mad = np.empty(n, dtype=np.float64)
        if n:
            self._cache_ok[s] = False  # the kernel below changes histories, not the cache
            _spike_kernel(s, v, self._ring.reshape(-1), self._sorted.reshape(-1), self._count,
                          self._pos, self.window, self.min_periods, self.k * MAD_SCALE,
                          self.abs_floor, flag, score, med, mad)
        return SpikeResult(flag, _reason(flag, REASON_SPIKE), score, med, mad)

    def history(self, series: int) -> np.ndarray:
        """The series' history, oldest first (a copy)."""
        if not 0 <= series < self.capacity:
            return np.empty(0, dtype=np.float64)
        c = int(self._count[series])
        p = int(self._pos[series])
        ring = self._ring[series]
        if c < self.window:
            return ring[:c].copy()
        return np.concatenate([ring[p:], ring[:p]])

    def reset(self, series: np.ndarray | None = None) -> None:
        """Forget the histories of ``series`` (int64 ids; None = all)."""
        if series is None:
            self._count[:] = 0
            self._pos[:] = 0
            self._cache_ok[:] = False
            return
        s = _check_1d("series", series, np.int64)
        self._ensure(_check_ids("series", s))
        self._count[s] = 0
        self._pos[s] = 0
        self._cache_ok[s] = False


@dataclass(frozen=True, slots=True)
class ScanRows:
    """What ``scan_stuck_and_spikes`` reports: one entry per reported reading, in batch
    order."""

    row: np.ndarray  #: int64: index of the reading in the batch
    stuck: np.ndarray  #: bool: its series newly stuck (else: a spike)
    score: np.ndarray  #: float64: run duration in s where ``stuck``, else the spike score

    def __post_init__(self) -> None:
        _check_lengths(self)

    def __len__(self) -> int:
        return int(self.row.shape[0])


def scan_stuck_and_spikes(stuck: StuckDetector, spikes: SpikeDetector, series: np.ndarray,
                          ts_ns: np.ndarray, value: np.ndarray, scored: np.ndarray,
                          stuck_open: np.ndarray) -> ScanRows:
    """Both detectors over the readings of a batch whose series is ``scored``, reporting
    the readings that start a stuck episode or spike, in one compiled pass.

    ``series``/``ts_ns``/``value``: the batch (int64 ids, int64 ns, float64; equal-length
    contiguous 1-D). ``scored``: bool per series id (every id must be below its length);
    readings of other series are skipped. ``stuck_open``: bool per series id, True while its
    stuck episode has been reported; updated in place.

    Exactly equivalent to (with ``sel = scored[series]``, ``s = series[sel]``)::

        st = stuck.update(s, ts_ns[sel], value[sel]); sp = spikes.update(s, value[sel])
        newly = st.flag & ~stuck_open[s]
        stuck_open[s[st.flag]] = True
        stuck_open[s[~st.flag & (st.run_count == 1)]] = False
        rows = np.flatnonzero(newly | sp.flag)  # reported: newly stuck first, else spike

    with ``row`` mapped back to the batch and ``score = where(newly, st.score,
    sp.score)[rows]``, but without building the per-reading results (detector state grows
    to the largest id of the whole batch rather than of the scored readings only)."""
    s = _check_1d("series", series, np.int64)
    t = _check_1d("ts_ns", ts_ns, np.int64)
    v = _check_1d("value", value, np.float64)
    sc = _check_1d("scored", scored, np.bool_)
    op = _check_1d("stuck_open", stuck_open, np.bool_)
    n = _check_same_length(series=s, ts_ns=t, value=v)
    needed = _check_ids("series", s)
    if needed > min(sc.shape[0], op.shape[0]):
        raise ValueError(f"series ids reach {needed - 1} but scored has {sc.shape[0]} and "
                         f"stuck_open {op.shape[0]} entries: one per series id")
    stuck._ensure(needed)
    spikes._ensure(needed)
    row = np.empty(n, dtype=np.int64)
    is_stuck = np.empty(n, dtype=np.bool_)
    run_ns = np.empty(n, dtype=np.int64)
    spike_score = np.empty(n, dtype=np.float64)
    k = 0
    if n:
        min_ns = min(int(stuck.min_duration_s * _NS_PER_S), 2**63 - 1)
        k = int(_scan_kernel(
            s, t, v, sc, stuck._anchor, stuck._run_count, stuck._run_start, stuck.min_count,
            min_ns, stuck.tolerance, spikes._ring.reshape(-1), spikes._sorted.reshape(-1),
            spikes._count, spikes._pos, spikes.window, spikes.min_periods,
            spikes.k * MAD_SCALE, spikes.abs_floor, spikes._med_cache, spikes._mad_cache,
            spikes._cache_ok, op, row, is_stuck, run_ns, spike_score,
            np.empty(n, dtype=np.int8)))
    row, is_stuck, run_ns, spike_score = row[:k], is_stuck[:k], run_ns[:k], spike_score[:k]
    # the stuck score as StuckResult computes it (numpy's division, outside the kernel)
    score = np.where(is_stuck, run_ns / _NS_PER_S, spike_score)
    return ScanRows(row.copy(), is_stuck.copy(), score)


def peer_scores(group: np.ndarray, value: np.ndarray, n_groups: int | None = None,
                k: float = 6.0, min_group_size: int = 3, abs_floor: float = 0.0
                ) -> PeerScores:
    """Pure: each station's robust deviation from its group's median (module doc (c)).

    ``group``: int64 group id per row (``>= 0``); ``value``: float64 per row (non-finite =
    missing). ``n_groups`` defaults to ``max(group) + 1``.
    """
    g = _check_1d("group", group, np.int64)
    v = _check_1d("value", value, np.float64)
    n = _check_same_length(group=g, value=v)
    needed = _check_ids("group", g)
    ng = needed if n_groups is None else int(n_groups)
    if ng < needed:
        raise ValueError(f"n_groups={ng} but group ids reach {needed - 1}")
    if int(min_group_size) < 1:
        raise ValueError(f"min_group_size must be >= 1, got {min_group_size}")
    if not float(k) > 0.0 or not float(abs_floor) >= 0.0:
        raise ValueError(f"need k > 0 and abs_floor >= 0, got {k}, {abs_floor}")
    fin = np.isfinite(v)
    clean = np.where(fin, v, np.nan)
    order = np.lexsort((clean, g))  # by group, then value; NaN last within a group
    sorted_vals = np.ascontiguousarray(clean[order])
    counts = np.bincount(g, minlength=ng).astype(np.int64)
    starts = np.zeros(ng, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    n_fin = np.bincount(g[fin], minlength=ng).astype(np.int64)
    g_med = np.empty(ng, dtype=np.float64)
    g_mad = np.empty(ng, dtype=np.float64)
    score = np.empty(n, dtype=np.float64)
    exceed = np.empty(n, dtype=np.bool_)
    scored = np.empty(n, dtype=np.bool_)
    _peer_kernel(g, v, sorted_vals, starts, n_fin, int(min_group_size),
                 float(k) * MAD_SCALE, float(abs_floor), g_med, g_mad, score, exceed, scored)
    return PeerScores(score, exceed, scored, g_med, g_mad, n_fin)


class DriftDetector:
    """Stations drifting away from their peers, window after window (module doc (c)).

    Settings: ``k`` (robust units), ``min_windows`` (consecutive exceeding windows M),
    ``min_group_size`` (finite peers needed, the station included), ``abs_floor`` (for
    ``mad == 0``).
    """

    def __init__(self, n_stations: int = 1024, k: float = 6.0, min_windows: int = 3,
                 min_group_size: int = 3, abs_floor: float = 0.0) -> None:
        if int(n_stations) < 1:
            raise ValueError(f"n_stations must be >= 1, got {n_stations}")
        if int(min_windows) < 1:
            raise ValueError(f"min_windows must be >= 1, got {min_windows}")
        if int(min_group_size) < 1:
            raise ValueError(f"min_group_size must be >= 1, got {min_group_size}")
        if not float(k) > 0.0 or not float(abs_floor) >= 0.0:
            raise ValueError(f"need k > 0 and abs_floor >= 0, got {k}, {abs_floor}")
        self.k = float(k)
        self.min_windows = int(min_windows)
        self.min_group_size = int(min_group_size)
        self.abs_floor = float(abs_floor)
        self._consec = np.zeros(int(n_stations), dtype=np.int64)

    @property
    def capacity(self) -> int:
        return int(self._consec.shape[0])

    @property
    def consecutive(self) -> np.ndarray:
        """Read-only counter per station."""
        v = self._consec.view()
        v.flags.writeable = False
        return v

    def update(self, station: np.ndarray, group: np.ndarray, value: np.ndarray
               ) -> DriftResult:
        """One window: a row per station (int64 ids, unique), its group (int64) and its
        value (float64, e.g. the hourly mean). Stations absent from the call keep their
        counters."""
        st_ = _check_1d("station", station, np.int64)
        g = _check_1d("group", group, np.int64)
        v = _check_1d("value", value, np.float64)
        _check_same_length(station=st_, group=g, value=v)
        needed = _check_ids("station", st_)
        if np.unique(st_).shape[0] != st_.shape[0]:
            raise ValueError("station ids must be unique within one window: aggregate "
                             "per station first (one value per station and window)")
        if needed > self.capacity:
            self._consec = _grown(self._consec, _new_capacity(self.capacity, needed), 0)
        ps = peer_scores(g, v, None, self.k, self.min_group_size, self.abs_floor)
        c = self._consec[st_]
        c = np.where(ps.scored, np.where(ps.exceed, c + 1, 0), c)
        self._consec[st_] = c
        flag = ps.scored & ps.exceed & (c >= self.min_windows)
        if g.shape[0]:
            med = ps.group_median[g]
            mad = ps.group_mad[g]
        else:
            med = np.empty(0, dtype=np.float64)
            mad = np.empty(0, dtype=np.float64)
        return DriftResult(st_.copy(), flag, _reason(flag, REASON_DRIFT), ps.score,
                           c.astype(np.int64), med, mad)

    def reset(self, station: np.ndarray | None = None) -> None:
        """Zero the counters of ``station`` (int64 ids; None = all)."""
        if station is None:
            self._consec[:] = 0
            return
        s = _check_1d("station", station, np.int64)
        s = s[s < self.capacity]
        self._consec[s] = 0
