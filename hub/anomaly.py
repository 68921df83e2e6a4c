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
  ``0``; flagged when ``dev > floor``, the series' own floor (``SpikeDetector.set_floor``;
  ``abs_floor`` until set), in its unit: a few resolution steps of the sensor (0: any
  change after a constant history). Real sensors report quantised values, so a history
  that is mostly one value is common; the hub sets 3 steps (``AnalyticsConfig``).

Then the reading joins the history (flagged or not), so a genuine level shift stops being
flagged after about ``window / 2`` readings. Unscored readings have ``score``, ``median``,
``mad`` = NaN. ``window`` is at most 127. Cost per reading O(window), branch-light: the
history is kept sorted (a vectorised count places the new value, the values between its
place and the evicted one's shift by one), with a byte per ring slot giving the rank of
the value that arrived in it (so the value to evict is found without a search, and the
ranks are updated 8 to a 64-bit word); the MAD a binary search over the two sorted runs of
deviations either side of the median. The history holds each value rounded to float32
(``history_value``: ~7 significant digits, finer than any sensor's resolution; the score's
deviation is the reading's own float64 value from that median). State: one 168-byte record
per series for W = 31 (``SpikeDetector``).

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

``pooled_log_scores`` (``DriftDetector(method="pooled_log")``, the hub's choice) scores the
same deviation on a ratio scale with one spread for the whole city: ``d = log(x) - median of
its group's log values`` (so a station reading twice its district's middle value has ``d =
log 2`` whatever the pollution level), ``score = d / (1.4826 * median |d|)`` with the median
over every scored station of every group. Why: a district has 4-12 air stations, and the MAD
of 4 values is often tiny -- per-group scales flagged healthy stations on a busy road as
"drifting" (6 of 8 stations flagged in 7 simulated hours of the city were healthy), while the
spread of stations around their district's middle, in ratio terms, is about the same
everywhere. ``DriftDetector`` pools the deviations of the last ``pool_windows`` (24) windows
with the current one's, for a steady spread. Positive finite values only (a ratio); fewer
than ``min_pooled`` deviations in the pool: nothing is scored. The spread is that of the
stations one hub holds: in a cluster, a partition's (16-24 stations of the city at scale 1
in each of 12), so a station's drift flags may differ from a single hub's (the windows and
every other result do not).

Throughput (one core of the 2-core dev VM, warm JIT; the VM was shared, so medians of
runs alternating with the previous version): ``StuckDetector.update`` 40-65 M readings/s;
``SpikeDetector.update`` (W = 31, every reading scored, median and MAD in full) ~11 M
readings/s (was ~7.5 M with a ring of values and a sorted copy, evicting by binary search
and shifting with a compare per step).

The hub runs both over a batch at once (``scan_stuck_and_spikes``): one compiled pass over
the readings of scored series, keeping only the readings to report (a stuck episode starting,
a spike) instead of five per-reading result arrays per detector and the masks to pick them
out. As only spikes are reported, the scan searches the MAD only for a reading that a lower
bound of it (two loads, see ``_scan_kernel``) cannot rule out: ~70 ns per reading for values
that never repeat over 45k series (was ~145 ns), the same reports and state (tested bit for
bit against the two detectors' own updates, and on the threshold).
"""

from __future__ import annotations

from collections import deque
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
    "history_value",
    "peer_scores",
    "pooled_log_scores",
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
#: Largest spike window: ranks are bytes, updated 8 at a time below 128 (``_spike_kernel``).
_MAX_WINDOW: Final = 127
#: SWAR constants: 0x01 and 0x80 in every byte of a uint64, and the shift between them.
_SWAR_LO: Final = np.uint64(0x0101010101010101)
_SWAR_HI: Final = np.uint64(0x8080808080808080)
_U7: Final = np.uint64(7)
_U1: Final = np.uint64(1)


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
    #: float64: median of the station's group (``pooled_log``: of its log values)
    group_median: np.ndarray
    #: float64: MAD of the station's group, unscaled (``pooled_log``: the pooled median |d|)
    group_mad: np.ndarray

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


#: Largest finite float32: ``history_value`` keeps finite readings finite.
_F32_MAX: Final = float(np.finfo(np.float32).max)


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def history_value(v):
    """The value a spike history keeps for a finite reading ``v``: ``v`` rounded to float32
    (round to nearest even), clamped to the largest finite float32 beyond it. Returned as
    float64. Callable from Python (reference implementations use it)."""
    if v > _F32_MAX:
        return _F32_MAX
    if v < -_F32_MAX:
        return -_F32_MAX
    return np.float64(np.float32(v))


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
    Values are read as float64 (the spike histories are float32): the arithmetic is
    ``np.median``'s over the float64 values of ``a``.
    """
    h = c // 2
    if c % 2 == 1:
        med = np.float64(a[off + h])
        lo0 = h
        hi0 = h + 1
    else:
        med = (np.float64(a[off + h - 1]) + np.float64(a[off + h])) / 2.0
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
        if med - np.float64(a[off + lo0 - i]) >= np.float64(a[off + hi0 + k - i]) - med:
            hi = i
        else:
            lo = i + 1
    i = lo
    j = k + 1 - i  # taken from R
    kth = -np.inf
    if i > 0:
        kth = med - np.float64(a[off + lo0 - i + 1])
    if j > 0:
        kth = max(kth, np.float64(a[off + hi0 + j - 1]) - med)
    if c % 2 == 1:
        return med, kth
    nxt = np.inf
    if i < nl:
        nxt = med - np.float64(a[off + lo0 - i])
    if j < nr:
        nxt = min(nxt, np.float64(a[off + hi0 + j]) - med)
    return med, (kth + nxt) / 2.0


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _spike_kernel(series, value, f, b, u, rw, vw, w, nrw, last_mask, min_periods, kc, floor,
                  o_flag, o_score, o_med, o_mad):
    """Per reading: score against the history, then add the reading to it.

    ``f``/``b``/``u``: flat float32, uint8 and uint64 views of the same records
    (``SpikeDetector``'s ``[capacity, 8 * rw]`` bytes: the sorted values in ``vw`` words,
    the ring of ranks, count and ring position; 2-D views per reading would cost two atomic
    reference-count updates each). ``nrw``: uint64 words of ranks; ``last_mask``:
    ``_SWAR_HI`` over the bytes of the last word that are ranks (the rest is padding). The
    reading is scored as float64; the history keeps ``history_value(v)``.

    History update: the evicted value is at ``jo = rank[pos]`` (or, while the history
    fills, the free place ``jo = c``); ``v`` goes to ``jn`` = the number of values below it
    once that one is out (a compare per value, vectorised: a branch-free binary search is a
    chain of dependent loads, slower at these sizes), the values between move one place
    toward ``jo``, and so do their ranks: those in ``[jn, jo - 1]`` one up, or in
    ``[jo + 1, jn]`` one down, 8 bytes at a time (SWAR: ranks are below 128, so per byte
    ``(r | 0x80) - t`` has bit 7 set iff ``r >= t``, without a borrow between bytes; none
    when ``jn == jo``, not even the rank ``jo`` itself, which may be 0 and must not
    borrow). A value equal to the evicted one takes its place, ranks unchanged. The loops
    index with unsigned integers: numba wraps negative signed indices around, a select per
    access that keeps LLVM from vectorising them (2-3x slower measured)."""
    for i in range(value.shape[0]):
        v = value[i]
        if not np.isfinite(v):
            o_flag[i] = False
            o_score[i] = np.nan
            o_med[i] = np.nan
            o_mad[i] = np.nan
            continue
        s = series[i]
        fb = 2 * s * rw  # the record: values at f[fb:fb + w]
        rb = 8 * (s * rw + vw)  # ranks at b[rb:rb + w] (u[s * rw + vw:][:nrw])
        cb = rb + 8 * nrw  # count at b[cb], ring position at b[cb + 1]
        c = np.int64(b[cb])
        p = np.int64(b[cb + 1])
        if c >= min_periods:
            med, mad = _median_mad_sorted(f, fb, c)
            dev = abs(v - med)
            if mad > 0.0:
                o_score[i] = dev / (MAD_SCALE * mad)
                o_flag[i] = dev > kc * mad
            else:
                o_score[i] = np.inf if dev > 0.0 else 0.0
                o_flag[i] = dev > floor[s]
            o_med[i] = med
            o_mad[i] = mad
        else:
            o_flag[i] = False
            o_score[i] = np.nan
            o_med[i] = np.nan
            o_mad[i] = np.nan
        # -- history update (the same in _spike_kernel and _scan_kernel: keep them in step)
        if c == w:  # full: evict the oldest value, the one ring slot p ranks
            jo = np.int64(b[rb + p])
            old = np.float64(f[fb + jo])
        else:  # filling: "evict" the free place after the values
            jo = c
            old = np.float64(np.inf)
        v = history_value(v)  # as the history keeps it
        v32 = np.float32(v)
        if old == v:  # v repeats the value it evicts (a steady sensor): it takes its place,
            f[fb + jo] = v32  # ranks unchanged (the bits may differ only for -0.0 / 0.0)
        else:
            old_below = old < v
            lt = 0  # values below v (unsigned indices: see the docstring)
            fu = np.uint64(fb)
            for j in range(np.uint64(c)):
                lt += f[fu + j] < v32
            jn = lt - old_below  # v's index once the evicted value is out
            if jn > jo:  # the values between move one place toward jo
                for j in range(np.uint64(fb + jo), np.uint64(fb + jn)):
                    f[j] = f[j + _U1]
            else:
                top = np.uint64(fb + jo)
                for j in range(np.uint64(jo - jn)):
                    f[top - j] = f[top - j - _U1]
            f[fb + jn] = v32
            # so do their ranks (SWAR, see the docstring), then slot p gets v's
            lo = np.uint64(jn if jn < jo else jo + 1) * _SWAR_LO
            hi1 = np.uint64(jo if jn < jo else jn + 1) * _SWAR_LO  # one past the last to step
            up = np.uint64(0) - np.uint64(jn < jo)  # all ones when stepping up
            wu = np.uint64(s * rw + vw)
            last = np.uint64(nrw - 1)
            for q in range(last + _U1):
                x = u[wu + q]
                xh = x | _SWAR_HI
                one = ((xh - lo) & ~(xh - hi1) & (_SWAR_HI if q < last else last_mask)) >> _U7
                u[wu + q] = x + (one & up) - (one & ~up)
            b[rb + p] = jn
            if c < w:
                b[cb] = c + 1
        p += 1
        b[cb + 1] = 0 if p == w else p


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _scan_kernel(series, ts_ns, value, slot, anchor, run_count, run_start, min_count,
                 min_ns, tolerance, f, b, u, rw, vw, w, nrw, last_mask, min_periods, kc,
                 floor, stuck_open, spike_open, o_row, o_stuck, o_run_ns, o_spike, o_spiked,
                 o_start):
    """``_stuck_kernel`` and ``_spike_kernel`` over the readings whose series has a state
    ``slot`` (``slot[series] >= 0``; the detectors' and ``stuck_open``'s row), in one pass,
    keeping only what ``scan_stuck_and_spikes`` reports: the rows newly stuck (stuck, and
    ``stuck_open`` False just before this reading) or spiking, with their stuck run length
    (ns), spike score, whether they spiked and whether that starts a spike episode.
    ``stuck_open`` is advanced reading by reading (True once stuck, False when a value
    breaks the run), so a series that becomes stuck within a batch is reported once, as it
    would be in one-reading batches; ``spike_open`` likewise (True after a finite reading
    that spiked, False after one that did not). Returns the number of rows, or ``-1 - i``
    if reading ``i``'s slot is past ``stuck_open`` (no state there), before changing
    anything.

    The two detectors' per-reading steps are copied here, not called: a helper taking the
    state arrays costs reference-count updates per reading, ~40 % more time per reading
    measured, inlined or not. Keep them in step with ``_stuck_kernel`` and
    ``_spike_kernel``; ``test_scan_equals_both_detectors`` checks they agree bit for bit.

    One shortcut: only a spike's score is reported, so the MAD is searched only for a
    reading that may be one. For an odd count ``c = 2h + 1`` (sorted history ``a``, median
    ``a[h]``) the MAD is ``min over i in [0, h] of max(med - a[i], a[i + h] - med)``: the
    ``h + 1`` smallest deviations are those of ``h + 1`` consecutive sorted values around
    the median. So any one ``i`` bounds it from below, ``lb = min(med - a[i], a[i + h] -
    med) <= mad``, each term the very subtraction the search makes (exact in floating
    point). If ``dev <= kc * lb`` (rounding is monotone: ``kc * lb <= kc * mad``) the reading
    is no spike: ``lb > 0`` means ``mad > 0`` and ``dev <= kc * mad``, ``lb == 0`` means
    ``dev == 0 <= floor[s]``. The probe ``i = h // 2`` (about the quartiles) makes ``lb``
    close to the MAD for a roughly symmetric history, so in practice only readings beyond
    about ``k`` robust units take the search (and every reading of an even count)."""
    k = 0
    n_slots = stuck_open.shape[0]
    for i in range(value.shape[0]):
        if slot[series[i]] >= n_slots:
            return -1 - i
    for i in range(value.shape[0]):
        s = slot[series[i]]
        if s < 0:
            continue
        v = value[i]
        # -- stuck (as _stuck_kernel): NaN neither extends nor breaks a run, nor touches
        # the episode
        stuck = False
        newly = False
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
            # the episode, per reading (results independent of batch boundaries)
            if stuck:
                newly = not stuck_open[s]
                stuck_open[s] = True
            elif c == 1:
                stuck_open[s] = False
        # -- spike (as _spike_kernel): non-finite values are not scored nor kept
        spike = False
        start = False
        score = np.nan
        if np.isfinite(v):
            fb = 2 * s * rw
            rb = 8 * (s * rw + vw)
            cb = rb + 8 * nrw
            c = np.int64(b[cb])
            p = np.int64(b[cb + 1])
            if c >= min_periods:
                maybe = True
                if c % 2 == 1:  # the MAD's lower bound (see above)
                    h = c // 2
                    med = np.float64(f[fb + h])
                    lq = h // 2  # the probe: about the lower quartile
                    maybe = abs(v - med) > kc * min(med - np.float64(f[fb + lq]),
                                                    np.float64(f[fb + lq + h]) - med)
                if maybe:
                    med, mad = _median_mad_sorted(f, fb, c)
                    dev = abs(v - med)
                    if mad > 0.0:
                        score = dev / (MAD_SCALE * mad)
                        spike = dev > kc * mad
                    else:
                        score = np.inf if dev > 0.0 else 0.0
                        spike = dev > floor[s]
            # -- the spike episode: a spiking reading after one that did not spike starts it
            start = spike and not spike_open[s]
            spike_open[s] = spike
            # -- history update (the same in _spike_kernel and _scan_kernel: keep them in step)
            if c == w:  # full: evict the oldest value, the one ring slot p ranks
                jo = np.int64(b[rb + p])
                old = np.float64(f[fb + jo])
            else:  # filling: "evict" the free place after the values
                jo = c
                old = np.float64(np.inf)
            v = history_value(v)  # as the history keeps it
            v32 = np.float32(v)
            if old == v:  # v repeats the value it evicts (a steady sensor): it takes its place,
                f[fb + jo] = v32  # ranks unchanged (the bits may differ only for -0.0 / 0.0)
            else:
                old_below = old < v
                lt = 0  # values below v (unsigned indices: see the docstring)
                fu = np.uint64(fb)
                for j in range(np.uint64(c)):
                    lt += f[fu + j] < v32
                jn = lt - old_below  # v's index once the evicted value is out
                if jn > jo:  # the values between move one place toward jo
                    for j in range(np.uint64(fb + jo), np.uint64(fb + jn)):
                        f[j] = f[j + _U1]
                else:
                    top = np.uint64(fb + jo)
                    for j in range(np.uint64(jo - jn)):
                        f[top - j] = f[top - j - _U1]
                f[fb + jn] = v32
                # so do their ranks (SWAR, see the docstring), then slot p gets v's
                lo = np.uint64(jn if jn < jo else jo + 1) * _SWAR_LO
                hi1 = np.uint64(jo if jn < jo else jn + 1) * _SWAR_LO  # one past the last to step
                up = np.uint64(0) - np.uint64(jn < jo)  # all ones when stepping up
                wu = np.uint64(s * rw + vw)
                last = np.uint64(nrw - 1)
                for q in range(last + _U1):
                    x = u[wu + q]
                    xh = x | _SWAR_HI
                    one = ((xh - lo) & ~(xh - hi1) & (_SWAR_HI if q < last else last_mask)) >> _U7
                    u[wu + q] = x + (one & up) - (one & ~up)
                b[rb + p] = jn
                if c < w:
                    b[cb] = c + 1
            p += 1
            b[cb + 1] = 0 if p == w else p
        if newly or spike:
            o_row[k] = i
            o_stuck[k] = newly
            o_run_ns[k] = run_ns
            o_spike[k] = score
            o_spiked[k] = spike
            o_start[k] = start
            k += 1
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

    Settings: ``window`` (history length W, 1..127), ``k`` (robust units), ``min_periods``
    (history needed to score, default W), ``abs_floor`` (deviation that counts when the MAD
    is 0, for every series whose own floor is not set with ``set_floor``).

    State: one record per series id, ``8 * (ceil(W / 2) + ceil(W / 8) + 1)`` bytes (168 for
    W = 31; 288 when the values were float64), so a reading touches one contiguous block:
    the history sorted ascending (W float32, ``history_value`` of each reading, padded to
    whole 8-byte words), the ring of *ranks* (a byte per ring slot: where in the sorted
    values the value that arrived in that slot is; padded to whole 8-byte words), then the
    count of values held and the next ring slot (a byte each). The ranks stand in for a
    ring of the values: the value to evict is at ``rank[pos]``, and ``history`` reads the
    values in arrival order through them.
    """

    def __init__(self, n_series: int = 1024, window: int = 31, k: float = 6.0,
                 min_periods: int | None = None, abs_floor: float = 0.0) -> None:
        if int(n_series) < 1:
            raise ValueError(f"n_series must be >= 1, got {n_series}")
        if not 1 <= int(window) <= _MAX_WINDOW:
            raise ValueError(f"window must be in [1, {_MAX_WINDOW}], got {window}")
        mp = int(window) if min_periods is None else int(min_periods)
        if not 1 <= mp <= int(window):
            raise ValueError(f"min_periods must be in [1, window={window}], got {mp}")
        if not float(k) > 0.0:
            raise ValueError(f"k must be > 0, got {k}")
        if not float(abs_floor) >= 0.0:
            raise ValueError(f"abs_floor must be >= 0 (not NaN), got {abs_floor}")
        self.window = w = int(window)
        self.k = float(k)
        self.min_periods = mp
        self.abs_floor = float(abs_floor)
        #: 8-byte words of float32 values per record
        self._value_words = (w + 1) // 2
        #: uint64 words of ranks per record; the last holds ``w - 8 * (words - 1)`` ranks
        self._rank_words = (w + 7) // 8
        #: record length in 8-byte words: values, ranks, then count and position
        self._rec_words = self._value_words + self._rank_words + 1
        in_last = w - 8 * (self._rank_words - 1)  # ranks in the last word: 1..8
        self._last_mask = np.uint64(int(_SWAR_HI) & ((1 << 8 * in_last) - 1))
        self._rec = np.zeros((int(n_series), 8 * self._rec_words), dtype=np.uint8)
        #: per series id: the deviation that counts when the MAD is 0 (``set_floor``)
        self._floor = np.full(int(n_series), self.abs_floor)

    @property
    def capacity(self) -> int:
        return int(self._rec.shape[0])

    @property
    def bytes_per_series(self) -> int:
        """State bytes per series id (its record)."""
        return int(self._rec.shape[1])

    def _ensure(self, needed: int) -> None:
        if needed > self.capacity:
            cap = _new_capacity(self.capacity, needed)
            self._rec = _grown(self._rec, cap, 0)
            self._floor = _grown(self._floor, cap, self.abs_floor)

    def set_floor(self, series: np.ndarray, floor: np.ndarray | float) -> None:
        """The deviation that counts as a spike when the MAD is 0, per series id (int64
        ids; ``floor`` in each series' unit, ``>= 0``, one per id or one for all). Set it to
        a few resolution steps of the sensor: a quantised reading whose history is mostly
        one value has MAD 0, and a floor of 0 flags every one-step change. Ids not set keep
        ``abs_floor``."""
        s = _check_1d("series", series, np.int64)
        fl = np.broadcast_to(np.asarray(floor, dtype=np.float64), s.shape)
        if not (fl >= 0.0).all():
            raise ValueError("floor must be >= 0 (not NaN)")
        self._ensure(_check_ids("series", s))
        self._floor[s] = fl

    @property
    def floor(self) -> np.ndarray:
        """Per series id, the deviation that counts when the MAD is 0 (read-only view)."""
        v = self._floor.view()
        v.flags.writeable = False
        return v

    def _kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int, int, int,
                                    np.uint64]:
        """``(f, b, u, rw, vw, w, nrw, last_mask)`` as the kernels take the state: flat
        float32, uint8 and uint64 views of the records and their geometry."""
        flat = self._rec.reshape(-1)
        return (flat.view(np.float32), flat, flat.view(np.uint64), self._rec_words,
                self._value_words, self.window, self._rank_words, self._last_mask)

    def _offsets(self) -> tuple[int, int]:
        """Byte offsets in a record of the ranks and of the count (the position follows)."""
        return 8 * self._value_words, 8 * (self._value_words + self._rank_words)

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
            _spike_kernel(s, v, *self._kernel_args(), self.min_periods, self.k * MAD_SCALE,
                          self._floor, flag, score, med, mad)
        return SpikeResult(flag, _reason(flag, REASON_SPIKE), score, med, mad)

    def history(self, series: int) -> np.ndarray:
        """The series' history, oldest first (a copy)."""
        if not 0 <= series < self.capacity:
            return np.empty(0, dtype=np.float64)
        w = self.window
        rank_at, count_at = self._offsets()
        rec = self._rec[series]
        c = int(rec[count_at])
        p = int(rec[count_at + 1])
        # ring slots oldest first: 0 .. c - 1 while filling, then p, p + 1, .., p - 1
        slots = np.arange(c) if c < w else (np.arange(w) + p) % w
        ranks = rec[rank_at:rank_at + w][slots].astype(np.intp)
        return rec[:rank_at].view(np.float32)[ranks].astype(np.float64)

    def reset(self, series: np.ndarray | None = None) -> None:
        """Forget the histories of ``series`` (int64 ids; None = all)."""
        _, count_at = self._offsets()
        if series is None:
            self._rec[:, count_at:count_at + 2] = 0
            return
        s = _check_1d("series", series, np.int64)
        self._ensure(_check_ids("series", s))
        self._rec[s, count_at:count_at + 2] = 0


@dataclass(frozen=True, slots=True)
class ScanRows:
    """What ``scan_stuck_and_spikes`` reports: one entry per reported reading, in batch
    order."""

    row: np.ndarray  #: int64: index of the reading in the batch
    stuck: np.ndarray  #: bool: its series newly stuck (else: a spike)
    score: np.ndarray  #: float64: run duration in s where ``stuck``, else the spike score
    spike: np.ndarray  #: bool: the reading spiked (also where ``stuck``)
    #: bool: it spiked and its series' previous scored finite reading did not: it starts a
    #: *spike episode* (a run of consecutive spiking readings: a defrost, a door left open)
    spike_start: np.ndarray

    def __post_init__(self) -> None:
        _check_lengths(self)

    def __len__(self) -> int:
        return int(self.row.shape[0])


def scan_stuck_and_spikes(stuck: StuckDetector, spikes: SpikeDetector, series: np.ndarray,
                          ts_ns: np.ndarray, value: np.ndarray, slot: np.ndarray,
                          stuck_open: np.ndarray, spike_open: np.ndarray | None = None
                          ) -> ScanRows:
    """Both detectors over the readings of a batch whose series is scored, reporting the
    readings that start a stuck episode or spike, in one compiled pass.

    ``series``/``ts_ns``/``value``: the batch (int64 ids, int64 ns, float64; equal-length
    contiguous 1-D). ``slot``: int64 or int32 per series id (every id must be below its
    length), the row of the series' state in both detectors and in ``stuck_open``, or ``< 0``
    for a series that is not scored (its readings are skipped): state only for the series
    scored (a city's counters and event codes are not), numbered as the caller likes.
    ``stuck_open``: bool per slot, True while its stuck episode has been reported; updated
    in place; its length is the number of slots (the detectors grow to it), and a slot past
    it is a ValueError. ``spike_open``: bool per slot (the same length), True while its series'
    last scored finite reading spiked; updated in place, so ``spike_start`` does not depend
    on batch boundaries either (None: a scratch array, episodes not carried over).

    Exactly equivalent to (with ``sel = slot[series] >= 0``, ``s = slot[series[sel]]``)::

        st = stuck.update(s, ts_ns[sel], value[sel]); sp = spikes.update(s, value[sel])
        newly = np.zeros(len(s), dtype=bool)
        for j, x in enumerate(s.tolist()):  # the episode, reading by reading
            if st.flag[j]:
                newly[j] = not stuck_open[x]
                stuck_open[x] = True
            elif st.run_count[j] == 1:  # a value broke the run (NaN: run_count 0, no change)
                stuck_open[x] = False
        rows = np.flatnonzero(newly | sp.flag)  # reported: newly stuck first, else spike

    with ``row`` mapped back to the batch, ``score = where(newly, st.score,
    sp.score)[rows]``, ``spike = sp.flag[rows]`` and ``spike_start`` a spike whose series'
    previous scored finite reading did not spike (``spike_open``), but without building the
    per-reading results (detector state grows to the length of ``stuck_open``, whichever
    slots the batch has). Every step is per reading, so the results do not depend on batch
    boundaries: the same readings scanned in one batch or split into several (state carried
    over) report the same readings, scores, spike starts and final ``stuck_open`` and
    ``spike_open`` -- the hub groups frames into batches as they come."""
    s = _check_1d("series", series, np.int64)
    t = _check_1d("ts_ns", ts_ns, np.int64)
    v = _check_1d("value", value, np.float64)
    # int32 too: the analytics' per-series slots (the kernel's offsets are int64 either way)
    sl = _check_1d("slot", slot, np.int32 if getattr(slot, "dtype", None) == np.int32
                   else np.int64)
    op = _check_1d("stuck_open", stuck_open, np.bool_)
    if spike_open is None:  # episodes not carried between calls
        sp_open = np.zeros(op.shape[0], dtype=np.bool_)
    else:
        sp_open = _check_1d("spike_open", spike_open, np.bool_)
        if sp_open.shape[0] != op.shape[0]:
            raise ValueError(f"spike_open has {sp_open.shape[0]} slots, stuck_open "
                             f"{op.shape[0]}: one each per slot")
    n = _check_same_length(series=s, ts_ns=t, value=v)
    needed = _check_ids("series", s)
    if needed > sl.shape[0]:
        raise ValueError(f"series ids reach {needed - 1} but slot has {sl.shape[0]} "
                         "entries: one per series id")
    stuck._ensure(op.shape[0])
    spikes._ensure(op.shape[0])
    row = np.empty(n, dtype=np.int64)
    is_stuck = np.empty(n, dtype=np.bool_)
    run_ns = np.empty(n, dtype=np.int64)
    spike_score = np.empty(n, dtype=np.float64)
    spiked = np.empty(n, dtype=np.bool_)
    start = np.empty(n, dtype=np.bool_)
    k = 0
    if n:
        min_ns = min(int(stuck.min_duration_s * _NS_PER_S), 2**63 - 1)
        k = int(_scan_kernel(
            s, t, v, sl, stuck._anchor, stuck._run_count, stuck._run_start, stuck.min_count,
            min_ns, stuck.tolerance, *spikes._kernel_args(), spikes.min_periods,
            spikes.k * MAD_SCALE, spikes._floor, op, sp_open, row, is_stuck, run_ns,
            spike_score, spiked, start))
    if k < 0:
        i = -1 - k
        raise ValueError(f"series {int(s[i])} (reading {i}) has slot {int(sl[s[i]])}, past "
                         f"stuck_open's {op.shape[0]} slots; nothing was scanned")
    row, is_stuck, run_ns, spike_score = row[:k], is_stuck[:k], run_ns[:k], spike_score[:k]
    # the stuck score as StuckResult computes it (numpy's division, outside the kernel)
    score = np.where(is_stuck, run_ns / _NS_PER_S, spike_score)
    return ScanRows(row.copy(), is_stuck.copy(), score, spiked[:k].copy(), start[:k].copy())


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


def _log_deviations(g: np.ndarray, v: np.ndarray, n_groups: int | None,
                    min_group_size: int) -> tuple[np.ndarray, np.ndarray, PeerScores]:
    """``d = log(x) - median of the group's log values`` per row (NaN where unscored), the
    scored mask, and ``peer_scores`` on the log values (its medians and counts)."""
    pos = np.isfinite(v) & (v > 0.0)
    logv = np.full(v.shape[0], np.nan)
    np.log(v, out=logv, where=pos)
    # the per-group medians and the checks of peer_scores, on the log values (NaN: missing)
    ps = peer_scores(g, logv, n_groups, 1.0, min_group_size)
    scored = ps.scored.copy()
    d = np.full(v.shape[0], np.nan)
    d[scored] = logv[scored] - ps.group_median[g[scored]]
    return d, scored, ps


def _pooled_scores(d: np.ndarray, scored: np.ndarray, ps: PeerScores, pool: np.ndarray,
                   k: float, min_pooled: int) -> PeerScores:
    """Score deviations ``d`` against ``median(pool)`` (``pooled_log_scores``)."""
    pooled = float(np.median(pool)) if pool.shape[0] >= min_pooled else np.nan
    if not pooled >= 0.0:  # too few deviations to pool: no evidence either way
        scored = np.zeros_like(scored)
        d = np.full(d.shape[0], np.nan)
    scale = MAD_SCALE * pooled
    with np.errstate(divide="ignore", invalid="ignore"):
        score = d / scale
    exceed = scored & (np.abs(d) > float(k) * scale) & (scale > 0.0)
    mad = np.full(ps.group_mad.shape[0], pooled)
    return PeerScores(score, exceed, scored, ps.group_median, mad, ps.group_n)


def pooled_log_scores(group: np.ndarray, value: np.ndarray, n_groups: int | None = None,
                      k: float = 4.0, min_group_size: int = 3, min_pooled: int = 8,
                      history: np.ndarray | None = None) -> PeerScores:
    """Pure: each station's deviation from its group's median as a log ratio, in units of
    one robust spread pooled over all groups (module doc (c)).

    ``group``: int64 group id per row (``>= 0``); ``value``: float64 per row (scored only if
    finite and > 0); ``history``: float64 ``|d|`` of earlier windows, pooled with this
    window's (``DriftDetector`` keeps them). Returns ``PeerScores`` with ``score = d /
    (1.4826 * pooled)``, ``d = log(x) - group_median`` (NaN when unscored), ``exceed`` when
    ``|d| > k * 1.4826 * pooled`` (never when ``pooled == 0``), ``pooled = median`` of the
    window's and ``history``'s ``|d|`` (nothing scored with fewer than ``min_pooled``),
    ``group_median`` the median of the group's log values, ``group_mad`` ``pooled`` for
    every group (log units, unscaled), ``group_n`` the positive finite values per group.
    """
    g = _check_1d("group", group, np.int64)
    v = _check_1d("value", value, np.float64)
    if int(min_pooled) < 1:
        raise ValueError(f"min_pooled must be >= 1, got {min_pooled}")
    d, scored, ps = _log_deviations(g, v, n_groups, min_group_size)
    pool = np.abs(d[scored])
    if history is not None:
        pool = np.concatenate([_check_1d("history", history, np.float64), pool])
    return _pooled_scores(d, scored, ps, pool, k, int(min_pooled))


class DriftDetector:
    """Stations drifting away from their peers, window after window (module doc (c)).

    Settings: ``k`` (robust units), ``min_windows`` (consecutive exceeding windows M),
    ``min_group_size`` (finite peers needed, the station included), ``abs_floor`` (for
    ``mad == 0``; ``method="peer"`` only), ``method``: ``"peer"`` (``peer_scores``: each
    group's own MAD) or ``"pooled_log"`` (``pooled_log_scores``: log ratios to the group's
    median, one spread pooled over all groups and the last ``pool_windows`` windows, needing
    ``min_pooled`` deviations). Pooling over windows steadies the spread (one window of a
    few dozen stations moves it by a third from hour to hour) and lets a hub holding few
    stations (a cluster partition's) score them after a few windows.
    """

    def __init__(self, n_stations: int = 1024, k: float = 6.0, min_windows: int = 3,
                 min_group_size: int = 3, abs_floor: float = 0.0, method: str = "peer",
                 min_pooled: int = 8, pool_windows: int = 24) -> None:
        if method not in ("peer", "pooled_log"):
            raise ValueError(f"method must be 'peer' or 'pooled_log', got {method!r}")
        if int(min_pooled) < 1 or int(pool_windows) < 1:
            raise ValueError(f"need min_pooled >= 1 and pool_windows >= 1, got {min_pooled}, "
                             f"{pool_windows}")
        self.method = method
        self.min_pooled = int(min_pooled)
        #: |d| of the last pool_windows windows (pooled_log)
        self._pool: deque[np.ndarray] = deque(maxlen=int(pool_windows))
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
        if self.method == "peer":
            ps = peer_scores(g, v, None, self.k, self.min_group_size, self.abs_floor)
        else:
            d, scored, ps = _log_deviations(g, v, None, self.min_group_size)
            dev = np.abs(d[scored])
            pool = np.concatenate([*self._pool, dev])
            ps = _pooled_scores(d, scored, ps, pool, self.k, self.min_pooled)
            self._pool.append(dev)
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
        """Zero the counters of ``station`` (int64 ids; None = all, and forget the pooled
        deviations)."""
        if station is None:
            self._consec[:] = 0
            self._pool.clear()
            return
        s = _check_1d("station", station, np.int64)
        s = s[s < self.capacity]
        self._consec[s] = 0
