"""Event-time tumbling windows over dense series ids, with mergeable partial aggregates.

Units and domains
-----------------
* ``series``: int64 ids, dense, ``0 <= id``; state grows (doubling, in Python, rarely) to
  hold the largest id seen.
* ``ts_ns``: int64 nanoseconds since the Unix epoch (UTC), device time. Negative values are
  fine. ``INT64_MIN`` is reserved (it is the "no timestamp" sentinel), and a window must end
  by ``INT64_MAX``: ``WindowAggregator.add`` returns such readings (and negative ids) as
  *invalid*, ``aggregate_batch`` rejects a batch holding one.
* ``value``: float64, any unit. NaN means "no reading" (sensor fault, gap filler).
* Windows are tumbling and shared by every series: window index ``w = ts_ns // window_ns``
  (floor division, so ``-1 ns`` is in window ``-1``), covering ``[w * window_ns,
  (w + 1) * window_ns)``.

Partial aggregate per (series, window)
--------------------------------------
``count`` (int64, non-NaN values), ``sum``, ``m2`` (sum of squared deviations from the mean:
shifted sums per reading, see the state layout below; Chan et al. when merging), ``min``,
``max``, ``first``/``first_ts`` and ``last``/``last_ts`` (value at the smallest / largest
timestamp; on a timestamp tie the earliest-added reading is ``first`` and the latest-added is
``last``). ``mean = sum / count``; the sample variance is ``m2 / (count - 1)``.

NaN policy (decided): a NaN value is *not a reading* for aggregation. It is never counted,
never updates first/last/min/max, and a (series, window) that received only NaN produces
no row. So every emitted row has ``count >= 1`` and finite statistics whenever its inputs
were finite. NaN readings are still classified late/early by timestamp, counted in
``AddResult.n_nan`` when they fall in an open window, and may advance the ring (their
timestamps are real). ``±inf`` values are numbers: they are counted and propagate with IEEE
semantics (``sum`` becomes ±inf, ``m2``/``mean`` may become NaN).

Ring of open windows (``WindowAggregator``)
-------------------------------------------
``n_slots`` windows are open at once, shared by all series: window ``w`` lives in slot
``w % n_slots``; ``slot_window[slot]`` holds its ``w`` (``EMPTY_WINDOW`` = ``INT64_MIN`` when
free -- not ``-1``, which is a real window for negative timestamps). The state is
slot-major: per slot an index from series id to a record of the slot's pool, where a series
gets a record when it first reports in the slot's window (so memory follows the records
windows hold, not the series count); a record is a 64-byte *hot* part (one cache line: all
that a reading in time order touches) and a 16-byte *cold* one (``first``); see "Record
layout" below. ``WindowAggregator.field(name)`` gives the ``[n_slots, capacity]`` array of
one field.
Windows accepting readings are ``[floor, newest]`` with ``newest - floor < n_slots``:

* ``add`` takes a batch's readings in order, as if each came on its own: a batch split
  anywhere gives the same results (the hub's batches depend on load; its aggregates must
  not). A reading whose window is newer than ``newest`` (and not *early*) advances the
  ring: ``floor`` becomes ``w - n_slots + 1`` and open windows below it are closed and
  returned in ``AddResult.closed`` -- holding the readings that came before it, also from
  the same batch. Readings after it for a window just closed are *late*.
* late: ``w < floor``. Not aggregated; indices in ``AddResult.late_idx``.
* invalid: timestamp ``INT64_MIN`` or in a window ending past ``INT64_MAX``, or series id
  ``< 0``. Not aggregated; indices in ``AddResult.invalid_idx``.
* early: ``w > max_window`` (when the caller passes ``max_window``): not aggregated, does not
  advance the ring; indices in ``AddResult.early_idx``. This is the guard against one device
  whose clock is years ahead flushing every open window.
* ``close_until(watermark_ns)`` closes every window whose end ``<= watermark_ns`` and raises
  ``floor`` past it; ``close_all()`` closes everything (``floor = newest + 1``).
* Accounting invariant of one ``add``: ``n_added + n_nan + len(late_idx) + len(early_idx)
  + len(invalid_idx) == len(batch)``.

Emitted rows (``WindowBatch``) are ordered by window start, then series id.

Throughput: see bench/README.md (``citybrain bench``, figures ``kernel_window_*``).

Kernels (stumpy-style layers): ``_fold_window`` (readings inside one open window, the
usual case, tried first: no pre-scan of the batch) and ``_accumulate`` (the rest, in runs of
one window, stopping where the ring must advance or the state grow), both over
``_fold_run`` / ``_emit_slots`` / ``_merge_sorted`` / ``_minmax2`` (``aggregate_batch``'s
checks) are private
``@njit`` loops compiled lazily with the policy
in ``hub.kernel_config``; the public functions validate input and say how to fix it. There is
no parallel driver: accumulation scatters into shared state (a parallel split would need
one state copy per thread and a merge); the hub scales by running one aggregator per process
and combining their output with ``merge_partials``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from hub.arrays import check_1d as _check_array
from hub.kernel_config import CACHE, FASTMATH, NOGIL

__all__ = [
    "EMPTY_WINDOW",
    "AddResult",
    "WindowAggregator",
    "WindowBatch",
    "aggregate_batch",
    "merge_partials",
]

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
#: ``slot_window`` value of a free slot.
EMPTY_WINDOW = I64_MIN

_OK = 0
_LATE = 1
_EARLY = 2

#: Batches up to this many readings reuse the aggregator's late/early index scratch.
_KEEP_INDEX_MAX = 1 << 20

#: ``aggregate_batch`` uses a dense ``[windows, series]`` state up to this many cells, then
#: falls back to sorting (O(n log n), no dense state).
_DENSE_MAX_CELLS = 1 << 24


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowBatch:
    """Closed (or partial) windows, one row per (series, window); equal-length 1-D arrays.

    Field dtypes: ``series``, ``window_start_ns``, ``count``, ``first_ts``, ``last_ts`` are
    int64; the rest float64. ``mean == sum / count``. Rows produced by this module have
    ``count >= 1``; ``merge_partials`` ignores rows with ``count <= 0``.
    """

    series: np.ndarray
    window_start_ns: np.ndarray
    count: np.ndarray
    sum: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    first: np.ndarray
    first_ts: np.ndarray
    last: np.ndarray
    last_ts: np.ndarray

    def __post_init__(self) -> None:
        s = self.series
        n = len(s)
        for name in _BATCH_FIELDS:
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.shape != (n,):
                raise ValueError(
                    f"WindowBatch.{name} must be a 1-D numpy array of length {n} "
                    f"(the length of .series)")

    def __len__(self) -> int:
        return int(self.series.shape[0])

    @staticmethod
    def empty() -> WindowBatch:
        """A batch with no rows (correct dtypes)."""
        i = np.empty(0, dtype=np.int64)
        f = np.empty(0, dtype=np.float64)
        return WindowBatch(i, i, i, f, f, f, f, f, f, i, f, i)

    @staticmethod
    def concat(batches: Sequence[WindowBatch]) -> WindowBatch:
        """Rows of all ``batches`` in order (no merging: see ``merge_partials``)."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return WindowBatch.empty()
        if len(batches) == 1:
            return batches[0]
        return WindowBatch(*(np.concatenate([getattr(b, name) for b in batches])
                             for name in _BATCH_FIELDS))

    @staticmethod
    def from_rows(o_i: np.ndarray, o_f: np.ndarray) -> WindowBatch:
        """A batch over the kernels' row-major outputs (views, no copy): ``o_i`` int64
        ``[5, n]`` series, window_start_ns, count, first_ts, last_ts; ``o_f`` float64 ``[7,
        n]`` sum, mean, m2, min, max, first, last."""
        return WindowBatch(series=o_i[0], window_start_ns=o_i[1], count=o_i[2], sum=o_f[0],
                           mean=o_f[1], m2=o_f[2], min=o_f[3], max=o_f[4], first=o_f[5],
                           first_ts=o_i[3], last=o_f[6], last_ts=o_i[4])

    def take(self, rows: np.ndarray) -> WindowBatch:
        """The rows ``rows`` selects (a bool mask or indices), in that order."""
        return WindowBatch(*(getattr(self, name)[rows] for name in _BATCH_FIELDS))

    def select(self, keep: Callable[[np.ndarray], np.ndarray]) -> WindowBatch:
        """The rows of the series ``keep(series ids) -> bool mask`` keeps, in order (this
        batch itself, not a copy, if that is every row)."""
        mask = np.asarray(keep(self.series), dtype=bool)
        return self if mask.all() else self.take(mask)

    def slices(self, size: int) -> Iterator[WindowBatch]:
        """Consecutive runs of at most ``size`` rows (views), in order; none if empty."""
        for lo in range(0, len(self), size):
            yield WindowBatch(*(getattr(self, name)[lo:lo + size] for name in _BATCH_FIELDS))

    def variance(self, ddof: int = 1) -> np.ndarray:
        """``m2 / (count - ddof)``; NaN where ``count <= ddof``."""
        denom = (self.count - ddof).astype(np.float64)
        out = np.full(len(self), np.nan)
        ok = denom > 0
        np.divide(self.m2, denom, out=out, where=ok)
        return out


#: field names of ``WindowBatch``, in order
_BATCH_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(WindowBatch))


def _no_rows() -> WindowBatch:
    b = WindowBatch.empty()
    for name in _BATCH_FIELDS:
        getattr(b, name).flags.writeable = False
    return b


#: ``AddResult.closed`` when nothing closed: shared (its arrays are empty and read-only), as
#: building and validating a fresh empty batch is a sizeable part of a small ``add``.
_NO_ROWS = _no_rows()


@dataclass(frozen=True, slots=True)
class AddResult:
    """What ``WindowAggregator.add`` did with a batch of ``n`` readings.

    ``n_added + n_nan + len(late_idx) + len(early_idx) + len(invalid_idx) == n``.
    """

    n_added: int  #: non-NaN readings aggregated into open windows
    n_nan: int  #: NaN readings that fell in open windows (skipped, see module doc)
    late_idx: np.ndarray  #: int64 indices (into the batch) of readings older than the ring
    early_idx: np.ndarray  #: int64 indices of readings with window > max_window
    #: int64 indices of readings that cannot be aggregated: negative series id, timestamp
    #: INT64_MIN (reserved) or in a window that would end past INT64_MAX
    invalid_idx: np.ndarray
    closed: WindowBatch  #: windows closed to make room for newer ones (may be empty)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


# Record layout of the aggregation state: per slot, an *index* from series id to a record of
# the slot's *pool*, and the pool's records in two float64 arrays, with int64 views of the
# same memory for the integer fields, both aligned to 64-byte cache lines.
#   index [n_slots, capacity] int32: 0 = the series has no record in the slot's window,
#        p > 0 = its record is pool record p - 1;
#   hot  [n_slots, capacity, N_HOT]: count, last_ts, s1, q, min, -max, shift, last -- 64
#        bytes, one cache line per record;
#   cold [n_slots, capacity, N_COLD]: first, first_ts -- 16 bytes.
# * Why a pool: a slot's records are taken from the front of its pool in the order their
#   series first report in the window (``slot_rows[slot]`` of them), so the pool's resident
#   memory is the most records any window of the slot has held, not the number of series.
#   At a city's rates most series report every few minutes and a 10 s window holds ~3 % of
#   them: at a million devices (4.5M series) the dense layout it replaced (a record per
#   series and slot, live iff its ``last_ts`` was inside the slot's window) was 1.7 GB
#   resident, the pool and index ~0.15 GB (bench/README.md, "Where a hub's memory goes").
#   Pools are allocated at ``capacity`` records (a window never holds more records than
#   series) and zeroed lazily by the OS: pages no record reached are never resident.
# * The per-reading update is bound by instructions, not memory (it runs as fast with the
#   state in L2 as in L3): (s1, q) and (min, -max) are 16-byte pairs, each updated with one
#   vector load, add/min and store (``_add2``/``_min2``); max is kept negated so that both
#   halves are a min. -7 % per reading against scalar code.
# * Sums are kept shifted by the record's first value K (``shift``; 0 if that value is not
#   finite): ``s1 = sum(v - K)``, ``q = sum((v - K)^2)``, so a reading costs a subtraction
#   and a fused multiply-add (Welford needs a division per reading), and ``sum = s1 +
#   count*K``, ``m2 = q - s1^2/count`` are formed at emission. With K a value of the same
#   series and window the terms are of the size of the spread, not of the values: no
#   cancellation on a large offset (the "shifted data" algorithm; Chan, Golub & LeVeque
#   1983); tests/hub/test_window.py checks it against exact references, outlier K included.
#   (Only values beyond ~1e307 behave differently: ``v - K`` may overflow where a plain sum
#   would not.)
# * A reading in time order touches only the index entry and the hot record: ``first_ts <=
#   last_ts`` always holds, so a reading with ``t >= last_ts`` cannot be a new first. The
#   cold record is written when a record opens and read only for readings older than the
#   series' last one.
# * Closing a slot's window (``_emit_slots`` with ``release``) zeroes the index entries it
#   emits and sets ``slot_rows`` back to 0: the pool's records are then free to be
#   overwritten, nothing else is cleared. Fields of a free record are garbage.
H_COUNT = 0  # int64: non-NaN readings
H_LAST_TS = 1  # int64
H_S1 = 2  # s1 and q: one 16-byte pair
H_Q = 3
H_MIN = 4  # min and -max: one 16-byte pair, updated by one vector min
H_NEG_MAX = 5
H_SHIFT = 6
H_LAST = 7
N_HOT = 8
C_FIRST = 0
C_FIRST_TS = 1  # int64
N_COLD = 2
_TS = np.uint64(H_LAST_TS)
_S1 = np.uint64(H_S1)
_Q = np.uint64(H_Q)
_MIN = np.uint64(H_MIN)
_NMAX = np.uint64(H_NEG_MAX)
_K = np.uint64(H_SHIFT)
_LAST = np.uint64(H_LAST)
_NH = np.uint64(N_HOT)
_C1 = np.uint64(C_FIRST_TS)
_NC = np.uint64(N_COLD)

_V2 = ir.VectorType(ir.DoubleType(), 2)


def _pair(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    v = builder.insert_element(ir.Constant(_V2, ir.Undefined), a, ir.Constant(ir.IntType(32), 0))
    return builder.insert_element(v, b, ir.Constant(ir.IntType(32), 1))


def _pair_ptr(context: Any, builder: ir.IRBuilder, aryty: Any, ary: ir.Value,
              idx: ir.Value) -> ir.Value:
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [idx]), _V2.as_pointer())


def _add2_typer(typingctx: Any, arr: Any, idx: Any, x: Any, y: Any) -> Any:
    """``arr[idx] += x; arr[idx + 1] += y`` as one 16-byte load, add and store (float64
    ``arr``, unsigned ``idx``, no bounds check)."""
    sig = types.void(arr, idx, x, y)

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        ary, i, a, b = args
        p = _pair_ptr(context, builder, sig.args[0], ary, i)
        builder.store(builder.fadd(builder.load(p, align=8), _pair(builder, a, b)), p, align=8)
        return context.get_dummy_value()
    return sig, codegen


def _min2_typer(typingctx: Any, arr: Any, idx: Any, x: Any, y: Any) -> Any:
    """``arr[idx] = min(arr[idx], x); arr[idx + 1] = min(arr[idx + 1], y)`` as one 16-byte
    load, ``minpd`` and store. Operands must not be NaN (``llvm.minnum`` with ``nnan``)."""
    sig = types.void(arr, idx, x, y)

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        ary, i, a, b = args
        p = _pair_ptr(context, builder, sig.args[0], ary, i)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V2, [_V2, _V2]),
                                            "llvm.minnum.v2f64")
        res = builder.call(fn, [_pair(builder, a, b), builder.load(p, align=8)],
                           fastmath=("nnan", "nsz"))
        builder.store(res, p, align=8)
        return context.get_dummy_value()
    return sig, codegen


def _borrow_typer(typingctx: Any, arr: Any, start: Any, stop: Any, dtype: Any) -> Any:
    """``arr[start:stop].view(dtype)`` for a 1-D C-contiguous ``arr`` and a ``dtype`` of the
    same item size, without bounds clamping and *borrowed*: no meminfo, so no reference
    counting (numba's slices and views each cost an atomic incref/decref pair, which in a
    loop over short runs of readings costs more than folding them). Only for use while
    ``arr`` is alive, i.e. inside the kernel that received it."""
    out = types.Array(dtype.dtype, 1, "C")
    sig = out(arr, start, stop, dtype)

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        src = context.make_array(sig.args[0])(context, builder, args[0])
        res = context.make_array(sig.return_type)(context, builder)
        start = context.cast(builder, args[1], sig.args[1], types.intp)
        stop = context.cast(builder, args[2], sig.args[2], types.intp)
        ptr_t = context.get_data_type(sig.return_type.dtype).as_pointer()
        data = builder.bitcast(builder.gep(src.data, [start]), ptr_t)
        itemsize = context.get_constant(
            types.intp, context.get_abi_sizeof(context.get_data_type(sig.return_type.dtype)))
        context.populate_array(res, data=data, shape=[builder.sub(stop, start)],
                               strides=[itemsize], itemsize=itemsize, meminfo=None)
        return res._getvalue()
    return sig, codegen


# numba intrinsics: called from kernels only, as _add2(arr, idx, x, y) / _min2(...)
_add2: Any = intrinsic(_add2_typer)
_min2: Any = intrinsic(_min2_typer)
_borrow: Any = intrinsic(_borrow_typer)


#: ``WindowAggregator.field`` name -> (int64?, plane of ``_gather_fields``' output)
_FIELD_PLANE = {"count": (True, 0), "first_ts": (True, 1), "last_ts": (True, 2),
                "sum": (False, 0), "m2": (False, 1), "min": (False, 2), "max": (False, 3),
                "first": (False, 4), "last": (False, 5)}
_FIELDS = sorted(_FIELD_PLANE)


def _zeros_aligned(shape: tuple[int, ...], align: int = 64) -> np.ndarray:
    """float64 zeros whose first element sits on an ``align``-byte boundary."""
    n = int(np.prod(shape))
    extra = align // 8
    buf = np.zeros(n + extra, dtype=np.float64)
    off = (-buf.ctypes.data % align) // 8
    return buf[off:off + n].reshape(shape)


def _alloc_state(n_slots: int, capacity: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeroed index, hot and cold pools for ``capacity`` series ids per slot. Zeroed by the
    OS on first touch: pages no record or index entry reached are never resident."""
    index = np.zeros((n_slots, capacity), dtype=np.int32)
    return (index, _zeros_aligned((n_slots, capacity, N_HOT)),
            _zeros_aligned((n_slots, capacity, N_COLD)))


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _minmax2(series, ts_ns):
    """Min/max of series and ts in one pass (branch-free selects: LLVM vectorizes it)."""
    smin = np.int64(I64_MAX)
    smax = np.int64(I64_MIN)
    tmin = np.int64(I64_MAX)
    tmax = np.int64(I64_MIN)
    for i in range(series.shape[0]):
        s = series[i]
        t = ts_ns[i]
        smin = s if s < smin else smin
        smax = s if s > smax else smax
        tmin = t if t < tmin else tmin
        tmax = t if t > tmax else tmax
    return smin, smax, tmin, tmax


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _fold_run(series, ts_ns, value, i0, n, lo, span, capacity, rows, ix, hot, hi, cold, ci):
    """Fold readings ``i0, i0+1, ... < n`` into the records of ``series[i]`` in one slot
    while their timestamps stay in ``[lo, lo + span]`` (one window) and their series ids in
    ``[0, capacity)``; returns (end, records opened, NaN values skipped, largest id met).
    ``end`` is the first reading not folded (``n`` if none): another window's, or an id out
    of range (negative, or past the state: the caller tells which). ``ix`` is the slot's
    index (int32, ``capacity`` entries: 0 = no record, p = pool record p - 1), ``rows`` the
    records the slot's pool holds; ``hot``/``cold`` are the slot's flat float64 pools,
    ``hi``/``ci`` int64 views of the same memory (``_borrow``, see ``_accumulate``). A
    series without a record takes the pool's next one. Indices are unsigned: no
    negative-index wraparound code, and one compare tests an id against both ends of its
    range."""
    nan_run = 0
    top = np.uint64(0)
    cap = np.uint64(capacity)
    used = np.uint64(rows)
    i = i0
    while i < n:  # not range(i0, n): over unsigned bounds that keeps two counters
        t = ts_ns[i]
        r = np.uint64(series[i])
        if np.uint64(t - lo) > span or r >= cap:
            return np.int64(i), np.int64(used - np.uint64(rows)), nan_run, np.int64(top)
        v = value[i]
        i += np.uint64(1)
        if v != v:
            nan_run += 1
            top = max(top, r)
            continue
        p = np.uint64(ix[r])
        if p == 0:
            # the largest id is tracked here, off the common path: an id not folded into
            # this window before (in this call or an earlier one, which already reported
            # it) always opens its record
            top = max(top, r)
            k = used * _NH
            kc = used * _NC
            used += np.uint64(1)
            ix[r] = np.int32(used)
            hi[k] = 1
            hi[k + _TS] = t
            if np.isfinite(v):
                hot[k + _S1] = 0.0
                hot[k + _Q] = 0.0
                hot[k + _K] = v
            else:  # a non-finite shift would turn s1 into NaN; shift 0 keeps IEEE sums
                hot[k + _S1] = v
                hot[k + _Q] = v * v
                hot[k + _K] = 0.0
            hot[k + _MIN] = v
            hot[k + _NMAX] = -v
            hot[k + _LAST] = v
            cold[kc] = v
            ci[kc + _C1] = t
        else:
            k = (p - np.uint64(1)) * _NH
            d = v - hot[k + _K]
            _add2(hot, k + _S1, d, d * d)
            _min2(hot, k + _MIN, v, -v)
            hi[k] += 1
            if t >= hi[k + _TS]:  # in time order: the new last
                hi[k + _TS] = t
                hot[k + _LAST] = v
            else:  # out of order: maybe a new first (first_ts <= last_ts)
                kc = (p - np.uint64(1)) * _NC
                if t < ci[kc + _C1]:
                    ci[kc + _C1] = t
                    cold[kc] = v
    return np.int64(n), np.int64(used - np.uint64(rows)), nan_run, np.int64(top)


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _fold_window(series, ts_ns, value, i0, w, lo, window_ns, slot, slot_window, slot_rows,
                 capacity, ixf, hf, cf):
    """Fold readings from ``i0`` on into window ``w`` (an open window of the ring, held by
    ``slot``; ``lo`` its start, which fits int64 and is above INT64_MIN) until the first
    reading of another window or with a series id out of ``[0, capacity)``: what
    ``_accumulate`` does with those readings, with the same results. Returns (end, n_added,
    n_nan, largest id met); n_added == -1 signals a broken ring invariant (``slot`` holds
    another window).

    Why a kernel of its own: compiled with little around it, its loop keeps every pointer and
    counter in a register (inlined into ``_accumulate``, ``_fold_run`` reloads three array
    pointers and ``span`` from the stack per reading). And ``add`` tries it first on every
    batch without a pre-scan: in the hub and the bench most batches lie inside one open
    window, so the batch's readings are read once, by this loop, instead of once by a scan
    for ranges and once by the fold (bench/README.md)."""
    held = slot_window[slot]
    if held != w:
        if held != EMPTY_WINDOW:
            return i0, -1, 0, 0
        slot_window[slot] = w
    x0 = slot * capacity
    h0 = x0 * N_HOT
    h1 = h0 + capacity * N_HOT
    c0 = x0 * N_COLD
    c1 = c0 + capacity * N_COLD
    end, new_rows, n_nan, top = _fold_run(
        series, ts_ns, value, np.uint64(i0), np.uint64(series.shape[0]), lo,
        np.uint64(window_ns - 1), capacity, slot_rows[slot],
        _borrow(ixf, x0, x0 + capacity, np.int32),
        _borrow(hf, h0, h1, np.float64), _borrow(hf, h0, h1, np.int64),
        _borrow(cf, c0, c1, np.float64), _borrow(cf, c0, c1, np.int64))
    slot_rows[slot] += new_rows
    return end, end - i0 - n_nan, n_nan, top


#: ``_accumulate`` stops: every reading from ``i0`` on is classified (``_DONE``); reading
#: ``end`` opens a window newer than the ring's newest (``_ADVANCE``: the ring must move
#: first); reading ``end``'s series id is past the state (``_GROW``).
_DONE = 0
_ADVANCE = 1
_GROW = 2


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _accumulate(series, ts_ns, value, i0, window_ns, floor_w, newest_w, max_w, ring_lo,
                ring_hi, t_max_ok, slot_window, slot_rows, capacity, ixf, hf, cf, late_out,
                early_out, invalid_out, tally):
    """Classify and fold readings from ``i0`` on, in order, until the end of the batch or a
    reading the ring is not ready for. ``ixf`` is the flat int32 index, ``hf`` and ``cf``
    the flat float64 hot and cold pools; the int64 fields are reached through views made
    here, which share the arrays' base pointers: passed in as separate arrays they cost
    ``_fold_run``'s loop two more registers, hence stack reloads for every reading (-18 % per
    reading, measured). ``slot_rows[slot]`` counts the live records of each slot (the pool
    records in use, and what ``_emit_slots`` will write).

    A reading is, in this order: *invalid* if its timestamp is INT64_MIN (reserved: the "no
    timestamp" sentinel) or above ``t_max_ok`` (its window would end past INT64_MAX);
    *early* if its window is above ``max_w``; a stop (``_ADVANCE``) if its window is above
    ``newest_w``; *late* if below ``floor_w``; *invalid* if its series id is negative; a stop
    (``_GROW``) if its id is ``>= capacity``; otherwise folded (NaN values counted, not
    folded). Indices of late, early and invalid readings go to ``late_out``, ``early_out``,
    ``invalid_out`` at the counts kept in ``tally`` (int64: added, NaN, late, early, invalid,
    largest id met), which accumulates over calls. Returns (end, stop code, end's window).

    The batch is walked as runs of consecutive readings in one window (in time-ordered
    input, runs are long): the window, its status and its slot are computed once per run,
    and ``_fold_run``'s loop only updates records (a run check is one unsigned compare).
    Window of a run's first reading: inside the ring span ``[ring_lo, ring_hi]``
    (``ring_lo > ring_hi`` disables it) from a float reciprocal corrected by one exact
    integer step (no integer division); otherwise floor division. The window holding
    INT64_MIN is walked one timestamp at a time (so INT64_MIN is always met at a run's
    start), as is the window below the lowest whole one (its start does not fit int64).
    """
    n = series.shape[0]
    n_slots = slot_window.shape[0]
    w_min_ok = _lowest_whole_window(window_ns)
    w_of_min = I64_MIN // window_ns
    span = np.uint64(window_ns - 1)
    inv_wn = 1.0 / np.float64(window_ns)
    floor_slot = floor_w % n_slots
    i = i0
    while i < n:
        t = ts_ns[i]
        if t == I64_MIN or t > t_max_ok:
            invalid_out[tally[4]] = i
            tally[4] += 1
            i += 1
            continue
        if ring_lo <= t <= ring_hi:
            rel = t - ring_lo
            j = np.int64(np.float64(rel) * inv_wn)
            if j * window_ns > rel:
                j -= 1
            elif (j + 1) * window_ns <= rel:
                j += 1
            w = floor_w + j
            lo = ring_lo + j * window_ns
            slot = floor_slot + j
            if slot >= n_slots:
                slot -= n_slots
        else:
            w = t // window_ns
            lo = w * window_ns
            slot = w % n_slots
        run_lo = lo
        run_span = span
        if w == w_of_min or w < w_min_ok:  # one timestamp at a time: see the docstring
            run_lo = t
            run_span = np.uint64(0)
        early = w > max_w
        if not early and w > newest_w:
            return i, _ADVANCE, w
        if early or w < floor_w:
            while True:
                if early:
                    early_out[tally[3]] = i
                    tally[3] += 1
                else:
                    late_out[tally[2]] = i
                    tally[2] += 1
                i += 1
                if i >= n or np.uint64(ts_ns[i] - run_lo) > run_span:
                    break
            continue
        held = slot_window[slot]
        if held != w:
            if held != EMPTY_WINDOW:
                tally[0] = -1
                return i, _DONE, w
            slot_window[slot] = w
        x0 = slot * capacity
        h0 = x0 * N_HOT
        h1 = h0 + capacity * N_HOT
        c0 = x0 * N_COLD
        c1 = c0 + capacity * N_COLD
        start = i
        end, new_rows, nan_run, top = _fold_run(
            series, ts_ns, value, np.uint64(i), np.uint64(n), run_lo, run_span, capacity,
            slot_rows[slot], _borrow(ixf, x0, x0 + capacity, np.int32),
            _borrow(hf, h0, h1, np.float64), _borrow(hf, h0, h1, np.int64),
            _borrow(cf, c0, c1, np.float64), _borrow(cf, c0, c1, np.int64))
        i = end
        slot_rows[slot] += new_rows
        tally[0] += i - start - nan_run
        tally[1] += nan_run
        if i > start:
            tally[5] = max(tally[5], top)
        if i < n and np.uint64(ts_ns[i] - run_lo) <= run_span:  # stopped at the series id
            if series[i] < 0:
                invalid_out[tally[4]] = i
                tally[4] += 1
                i += 1
            else:
                return i, _GROW, w
    return n, _DONE, 0


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _record_stats(c, s1, q, shift):
    """(sum, m2) of a record from its shifted sums."""
    total = s1 + c * shift
    if c == 1:
        return total, 0.0
    m2 = q - s1 * (s1 / c)
    if m2 < 0.0:  # rounding: a tiny negative for (nearly) constant values
        m2 = 0.0
    return total, m2


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _lowest_whole_window(window_ns):
    """Smallest window index whose start ``w * window_ns`` fits int64."""
    return (I64_MIN + window_ns - 1) // window_ns


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _emit_slots(slots, slot_window, slot_rows, window_ns, n_series, capacity, ixf, hf, cf,
                o_i, o_f, release):
    """Write every live record of ``slots`` (in that order; within a slot by series id)
    into ``o_i`` (int64 rows: series, window_start_ns, count, first_ts, last_ts) and ``o_f``
    (float64 rows: sum, mean, m2, min, max, first, last), sized by the sum of ``slot_rows``
    over ``slots``. With ``release``, also free the slots: their index entries back to 0
    and ``slot_rows`` to 0 (the pool records are then free; nothing else is cleared).

    The outputs are allocated by the caller (numpy): numba's allocator hands back fresh pages
    every time, and page faults then cost ten times the copy itself.
    """
    hi = hf.view(np.int64)
    ci = cf.view(np.int64)
    j = np.uint64(0)
    for q in range(slots.shape[0]):
        sl = slots[q]
        base = np.uint64(sl) * np.uint64(capacity)
        rec0 = base - np.uint64(1)  # pool record of index entry p: base + p - 1
        start = slot_window[sl] * window_ns
        for s in range(np.uint64(n_series)):
            p = np.uint64(ixf[base + s])
            if p != 0:
                r = rec0 + p
                k = r * _NH
                kc = r * _NC
                c = hi[k]
                total, m2 = _record_stats(c, hf[k + _S1], hf[k + _Q], hf[k + _K])
                o_i[0, j] = np.int64(s)
                o_i[1, j] = start
                o_i[2, j] = c
                o_i[3, j] = ci[kc + _C1]
                o_i[4, j] = hi[k + _TS]
                o_f[0, j] = total
                o_f[1, j] = total / c
                o_f[2, j] = m2
                o_f[3, j] = hf[k + _MIN]
                o_f[4, j] = -hf[k + _NMAX]
                o_f[5, j] = cf[kc]
                o_f[6, j] = hf[k + _LAST]
                j += np.uint64(1)
        if release:  # one sequential pass (a memset), not a store per emitted row
            ixf[base:base + np.uint64(n_series)] = 0
            slot_window[sl] = EMPTY_WINDOW
            slot_rows[sl] = 0
    return j


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _gather_fields(ixf, hf, cf, out_i, out_f):
    """Every state field as a ``[n_slots, capacity]`` plane (``WindowAggregator.field``):
    ``out_i`` planes count, first_ts, last_ts; ``out_f`` planes sum, m2, min, max, first,
    last. Series without a record in a slot read count 0 and zeros elsewhere."""
    hi = hf.view(np.int64)
    ci = cf.view(np.int64)
    n_slots = out_i.shape[1]
    capacity = out_i.shape[2]
    for sl in range(n_slots):
        base = np.uint64(sl) * np.uint64(capacity)
        for s in range(capacity):
            p = np.uint64(ixf[base + np.uint64(s)])
            if p == 0:
                for f in range(out_i.shape[0]):
                    out_i[f, sl, s] = 0
                for f in range(out_f.shape[0]):
                    out_f[f, sl, s] = 0.0
                continue
            r = base + p - np.uint64(1)
            k = r * _NH
            kc = r * _NC
            c = hi[k]
            out_i[0, sl, s] = c
            out_i[1, sl, s] = ci[kc + _C1]
            out_i[2, sl, s] = hi[k + _TS]
            out_f[0, sl, s], out_f[1, sl, s] = _record_stats(c, hf[k + _S1], hf[k + _Q],
                                                             hf[k + _K])
            out_f[2, sl, s] = hf[k + _MIN]
            out_f[3, sl, s] = -hf[k + _NMAX]
            out_f[4, sl, s] = cf[kc]
            out_f[5, sl, s] = hf[k + _LAST]


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL, inline="always")
def chan_merge(ca, sa, m2a, cb, sb, m2b):  # pragma: no cover - compiled
    """(count, sum, M2) of partial a merged with partial b (counts >= 1), Chan et al.:
    ``M2 = M2a + M2b + (mb - ma)^2 * a*b/(a+b)``. Every merge of partial states (here, in
    ``hub.rollup``) goes through this one expression, so they agree bit for bit."""
    fa = np.float64(ca)
    fb = np.float64(cb)
    delta = sb / fb - sa / fa
    return ca + cb, sa + sb, m2a + (m2b + delta * delta * (fa * fb / (fa + fb)))


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL, inline="always")
def _merge_row(j, i, o_count, o_sum, o_m2, o_min, o_max, o_first, o_first_ts, o_last,
               o_last_ts, count, total, m2, vmin, vmax, first, first_ts, last,
               last_ts):  # pragma: no cover - compiled
    """Row ``i`` of the input columns (count >= 1) merged into row ``j`` of the output
    columns (count >= 1). Ties: ``first`` keeps the output's on equal ``first_ts``;
    ``last`` takes the input's."""
    o_count[j], o_sum[j], o_m2[j] = chan_merge(o_count[j], o_sum[j], o_m2[j], count[i],
                                               total[i], m2[i])
    if vmin[i] < o_min[j]:
        o_min[j] = vmin[i]
    if vmax[i] > o_max[j]:
        o_max[j] = vmax[i]
    if first_ts[i] < o_first_ts[j]:
        o_first_ts[j] = first_ts[i]
        o_first[j] = first[i]
    if last_ts[i] >= o_last_ts[j]:
        o_last_ts[j] = last_ts[i]
        o_last[j] = last[i]


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _merge_sorted(order, series, start, count, total, m2, vmin, vmax,
                  first, first_ts, last, last_ts):
    """Fold rows, visited in ``order`` (grouped by key, stable), into one row per key.

    Chan et al.: with counts a, b and means ma, mb,
    ``M2 = M2a + M2b + (mb - ma)^2 * a*b/(a+b)``. Rows with count <= 0 are identities.
    Ties: ``first`` keeps the earlier row on equal ``first_ts``; ``last`` takes the later.
    """
    n = order.shape[0]
    o_series = np.empty(n, dtype=np.int64)
    o_start = np.empty(n, dtype=np.int64)
    o_count = np.empty(n, dtype=np.int64)
    o_sum = np.empty(n, dtype=np.float64)
    o_mean = np.empty(n, dtype=np.float64)
    o_m2 = np.empty(n, dtype=np.float64)
    o_min = np.empty(n, dtype=np.float64)
    o_max = np.empty(n, dtype=np.float64)
    o_first = np.empty(n, dtype=np.float64)
    o_first_ts = np.empty(n, dtype=np.int64)
    o_last = np.empty(n, dtype=np.float64)
    o_last_ts = np.empty(n, dtype=np.int64)
    j = -1
    for k in range(n):
        r = order[k]
        cb = count[r]
        if cb <= 0:
            continue
        if j >= 0 and o_series[j] == series[r] and o_start[j] == start[r]:
            _merge_row(j, r, o_count, o_sum, o_m2, o_min, o_max, o_first, o_first_ts, o_last,
                       o_last_ts, count, total, m2, vmin, vmax, first, first_ts, last,
                       last_ts)
        else:
            j += 1
            o_series[j] = series[r]
            o_start[j] = start[r]
            o_count[j] = cb
            o_sum[j] = total[r]
            o_m2[j] = m2[r]
            o_min[j] = vmin[r]
            o_max[j] = vmax[r]
            o_first[j] = first[r]
            o_first_ts[j] = first_ts[r]
            o_last[j] = last[r]
            o_last_ts[j] = last_ts[r]
    m = j + 1
    for k in range(m):
        o_mean[k] = o_sum[k] / o_count[k]
    return (o_series[:m], o_start[:m], o_count[:m], o_sum[:m], o_mean[:m], o_m2[:m],
            o_min[:m], o_max[:m], o_first[:m], o_first_ts[:m], o_last[:m], o_last_ts[:m])


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_readings(series: object, ts_ns: object,
                    value: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = _check_array("series", series, np.int64)
    t = _check_array("ts_ns", ts_ns, np.int64)
    v = _check_array("value", value, np.float64)
    if not (s.shape[0] == t.shape[0] == v.shape[0]):
        raise ValueError(f"series, ts_ns and value must have equal lengths, got "
                         f"{s.shape[0]}, {t.shape[0]}, {v.shape[0]}")
    return s, t, v


def _check_ranges(smin: int, tmin: int, tmax: int, window_ns: int) -> None:
    if smin < 0:
        raise ValueError(f"series ids must be >= 0, got {smin}; drop unresolved readings "
                         "(series < 0) before aggregating")
    if tmin == I64_MIN:
        raise ValueError("ts_ns contains INT64_MIN, which is reserved as 'no timestamp'")
    if (tmax // window_ns) * window_ns + window_ns - 1 > I64_MAX:
        raise ValueError(f"ts_ns {tmax} is in a window that ends past INT64_MAX "
                         f"for window_ns={window_ns}")


def _clamp(x: int) -> int:
    return max(I64_MIN, min(I64_MAX, x))


def _batch_from_tuple(t: tuple[np.ndarray, ...]) -> WindowBatch:
    return WindowBatch(*t)


def _joined(closed: list[WindowBatch]) -> WindowBatch:
    """The windows one ``add`` closed, in the order closed (which is window order)."""
    if not closed:
        return _NO_ROWS
    return closed[0] if len(closed) == 1 else WindowBatch.concat(closed)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class WindowAggregator:
    """A ring of ``n_slots`` open tumbling windows of ``window_ns`` nanoseconds, shared by
    series ``0 .. capacity-1`` (capacity doubles as larger ids arrive).

    See the module docstring for the late/early/NaN contract. Not thread-safe: one owner.
    """

    def __init__(self, window_ns: int, n_slots: int, capacity: int = 1024) -> None:
        if int(window_ns) < 1:
            raise ValueError(f"window_ns must be >= 1 ns, got {window_ns}")
        if int(n_slots) < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._window_ns = int(window_ns)
        #: lowest window whose start fits int64 (``_lowest_whole_window``)
        self._lowest_whole = (I64_MIN + self._window_ns - 1) // self._window_ns
        self._n_slots = int(n_slots)
        self._capacity = int(capacity)
        self._n_series = 0
        self._slot_window = np.full(self._n_slots, EMPTY_WINDOW, dtype=np.int64)
        # live records per slot (pool records in use), kept by _accumulate, reset by
        # _emit_slots
        self._slot_rows = np.zeros(self._n_slots, dtype=np.int64)
        self._index, self._hot, self._cold = _alloc_state(self._n_slots, self._capacity)
        self._views = self._flat_views()
        self._newest: int | None = None  # newest window index ever opened
        self._index_buf = np.empty(0, dtype=np.int64)  # late/early scratch, see add
        self._floor: int | None = None  # lowest window index accepting readings
        # largest valid timestamp: its window ends at or before INT64_MAX
        self._t_max_ok = ((I64_MAX + 1) // self._window_ns) * self._window_ns - 1
        # lowest window _fold_window takes: above the one holding INT64_MIN (and whole)
        self._w_first_fast = max(I64_MIN // self._window_ns, self._lowest_whole) + 1

    # -- introspection ---------------------------------------------------------------------
    @property
    def window_ns(self) -> int:
        return self._window_ns

    @property
    def n_slots(self) -> int:
        return self._n_slots

    @property
    def capacity(self) -> int:
        """Series ids ``0 .. capacity-1`` fit without growing."""
        return self._capacity

    @property
    def n_series(self) -> int:
        """1 + the largest series id seen (emission scans ``0 .. n_series-1``)."""
        return self._n_series

    @property
    def slot_window(self) -> np.ndarray:
        """Read-only view: window index held by each slot, ``EMPTY_WINDOW`` if free."""
        v = self._slot_window.view()
        v.flags.writeable = False
        return v

    @property
    def floor_window(self) -> int | None:
        """Lowest window index that still accepts readings (None before any reading or
        watermark): readings of older windows are late."""
        return self._floor

    @property
    def newest_window(self) -> int | None:
        """Newest window index opened so far (None before the first accepted reading)."""
        return self._newest

    def field(self, name: str) -> np.ndarray:
        """Read-only ``[n_slots, capacity]`` array (a copy) of one field of every (slot,
        series): ``count``, ``sum``, ``m2``, ``min``, ``max``, ``first``, ``first_ts``,
        ``last`` or ``last_ts``. Where a series has no record in a slot's window, ``count``
        is 0 and the other fields read 0. For inspection and tests: it costs nine ``[n_slots,
        capacity]`` planes (``snapshot`` gives a window's rows)."""
        try:
            is_int, plane = _FIELD_PLANE[name]
        except KeyError:
            raise ValueError(f"unknown field {name!r}; one of {_FIELDS}") from None
        shape = (self._n_slots, self._capacity)
        out_i = np.empty((3, *shape), dtype=np.int64)
        out_f = np.empty((6, *shape), dtype=np.float64)
        _gather_fields(*self._views, out_i, out_f)
        v = (out_i if is_int else out_f)[plane]
        v.flags.writeable = False
        return v

    def open_windows(self) -> np.ndarray:
        """Sorted indices of windows currently holding state."""
        sw = self._slot_window
        return np.sort(sw[sw != EMPTY_WINDOW])

    # -- ingest ----------------------------------------------------------------------------
    def add(self, series: np.ndarray, ts_ns: np.ndarray, value: np.ndarray,
            max_window: int | None = None) -> AddResult:
        """Aggregate a batch of readings (equal-length 1-D contiguous arrays: int64 series
        ids, int64 ns timestamps, float64 values), in order, one reading at a time as far as
        the results go (see the module docstring): a batch split anywhere gives the same
        results as the whole.

        ``max_window``: readings whose window index exceeds it are *early* (returned, not
        aggregated, never advance the ring); compute it from a robust watermark, e.g.
        ``(event_clock_ns + max_ahead_ns) // window_ns``.
        """
        s, t, v = _check_readings(series, ts_ns, value)
        n = s.shape[0]
        max_w = I64_MAX if max_window is None else _clamp(int(max_window))
        closed: list[WindowBatch] = []
        i, n_added, n_nan = self._fold_open_window(s, t, v, 0, max_w, closed) if n else (0, 0, 0)
        if i == n:  # the usual batch: one open window (~10 us less than the loop below)
            e = np.empty(0, dtype=np.int64)
            return AddResult(n_added, n_nan, e, e.copy(), e.copy(), _joined(closed))
        # added, NaN, late, early, invalid, largest id folded
        tally = np.array([n_added, n_nan, 0, 0, 0, self._n_series - 1], dtype=np.int64)
        late, early, invalid = self._index_buffers(n)
        while i < n:
            floor_w, ring_lo, ring_hi = self._ring_span()
            i, stop, w = _accumulate(
                s, t, v, i, self._window_ns, floor_w,
                I64_MIN if self._newest is None else self._newest, max_w, ring_lo, ring_hi,
                self._t_max_ok, self._slot_window, self._slot_rows, self._capacity,
                *self._views, late, early, invalid, tally)
            if tally[0] < 0:  # pragma: no cover - internal invariant
                raise RuntimeError("window ring invariant broken: a slot holds a stale window")
            self._n_series = max(self._n_series, int(tally[5]) + 1)
            if stop == _ADVANCE:
                closed.append(self._advance(int(w)))
            elif stop == _GROW:
                self._grow(int(np.maximum.reduce(s[i:])) + 1)
            if stop != _DONE and i < n:  # readings from i on may be one open window's
                i, a, b = self._fold_open_window(s, t, v, i, max_w, closed)
                tally[0] += a
                tally[1] += b
        return AddResult(int(tally[0]), int(tally[1]), late[:tally[2]].copy(),
                         early[:tally[3]].copy(), invalid[:tally[4]].copy(), _joined(closed))

    def _fold_open_window(self, s: np.ndarray, t: np.ndarray, v: np.ndarray, i: int,
                          max_w: int, closed: list[WindowBatch]) -> tuple[int, int, int]:
        """The usual case, without ``_accumulate``'s per-run classification: fold readings
        from ``i`` on while they stay in reading ``i``'s window, if that window is (or, by
        advancing the ring, becomes) open and is not early. Returns (first reading not
        folded -- ``i`` if none was --, readings added, NaN readings). The window must be
        whole and above the one holding INT64_MIN (whose readings ``_accumulate`` checks
        one timestamp at a time)."""
        ti = int(t[i])
        wn = self._window_ns
        w = ti // wn
        if not (self._w_first_fast <= w <= max_w and ti <= self._t_max_ok):
            return i, 0, 0
        if self._newest is None or w > self._newest:
            closed.append(self._advance(w))
        if self._floor is None or w < self._floor:
            return i, 0, 0  # late: _accumulate counts it
        end, n_added, n_nan, top = _fold_window(
            s, t, v, i, w, w * wn, wn, w % self._n_slots, self._slot_window,
            self._slot_rows, self._capacity, *self._views)
        if n_added < 0:  # pragma: no cover - internal invariant
            raise RuntimeError("window ring invariant broken: a slot holds a stale window")
        if end > i:  # emission scans ids 0 .. n_series-1 (before any window closes)
            self._n_series = max(self._n_series, top + 1)
        return end, n_added, n_nan

    def _advance(self, w: int) -> WindowBatch:
        """Make ``w`` the newest window: the floor follows (``w - n_slots + 1``) and open
        windows below it close (returned)."""
        self._newest = w
        ring_floor = w - self._n_slots + 1
        self._floor = ring_floor if self._floor is None else max(self._floor, ring_floor)
        return self._close_below(self._floor)

    def _ring_span(self) -> tuple[int, int, int]:
        """(floor window, first and last ns of the ring's windows) for ``_accumulate``; the
        span is disabled (first > last) unless it fits int64."""
        if self._floor is None:
            return I64_MAX, 1, 0
        wn = self._window_ns
        lo = self._floor * wn
        hi = (self._floor + self._n_slots) * wn - 1
        if lo > I64_MIN and hi <= I64_MAX:
            return _clamp(self._floor), lo, hi
        return _clamp(self._floor), 1, 0

    def _index_buffers(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scratch outputs for the late, early and invalid indices of an ``n``-reading batch
        (``n`` each: any reading may be late), kept between calls up to ``_KEEP_INDEX_MAX``
        readings: fresh arrays per batch cost ~10 us each in mmap/munmap at hub batch
        sizes, ~5 % of the batch's aggregation."""
        if n > _KEEP_INDEX_MAX:
            buf = np.empty(3 * n, dtype=np.int64)
        else:
            buf = self._index_buf
            if buf.shape[0] < 3 * n:
                buf = self._index_buf = np.empty(3 * n, dtype=np.int64)
        return buf[:n], buf[n:2 * n], buf[2 * n:3 * n]

    # -- closing ---------------------------------------------------------------------------
    def close_until(self, watermark_ns: int) -> WindowBatch:
        """Emit and reset every open window whose end (``start + window_ns``) is
        ``<= watermark_ns``; readings for those windows are late from now on."""
        wm_w = int(watermark_ns) // self._window_ns
        self._floor = wm_w if self._floor is None else max(self._floor, wm_w)
        return self._close_below(wm_w)

    def close_all(self) -> WindowBatch:
        """Emit every open window (shutdown); every window opened so far becomes late."""
        if self._newest is None:
            return WindowBatch.empty()
        limit = self._newest + 1
        self._floor = limit if self._floor is None else max(self._floor, limit)
        return self._close_below(limit)

    def _close_below(self, limit_w: int) -> WindowBatch:
        sw = self._slot_window
        held = sw != EMPTY_WINDOW
        if limit_w <= I64_MIN:
            return WindowBatch.empty()
        mask = held & (sw < _clamp(limit_w))
        if not mask.any():
            return WindowBatch.empty()
        slots = np.flatnonzero(mask)
        return self._emit(slots[np.argsort(sw[slots], kind="stable")].astype(np.int64),
                          release=True)

    def _emit(self, slots: np.ndarray, release: bool) -> WindowBatch:
        """The live records of ``slots`` (int64, in that order) as rows; ``release`` frees
        the slots (closing), otherwise the state is untouched (a snapshot)."""
        n_out = int(self._slot_rows[slots].sum())
        o_i = np.empty((5, n_out), dtype=np.int64)
        o_f = np.empty((7, n_out), dtype=np.float64)
        n_emitted = _emit_slots(slots, self._slot_window, self._slot_rows, self._window_ns,
                                self._n_series, self._capacity, *self._views, o_i, o_f,
                                release)
        if n_emitted != n_out:  # pragma: no cover - internal invariant
            raise RuntimeError("window ring invariant broken: slot row counts out of sync")
        return WindowBatch.from_rows(o_i, o_f)

    def snapshot(self, window: int) -> WindowBatch:
        """The rows of open window ``window`` (index) so far, without closing it: what
        closing it now would emit (series ascending), or no rows if no slot holds it.

        Reads only that slot's records, once (``_emit_slots`` without releasing): O(series
        ids) time and O(rows) memory. The hub fires every window on time this way; the
        field arrays it used before cost three ``[n_slots, capacity]`` temporaries per field
        read, ~4 GB and 45 % of the processing thread at a million devices (py-spy)."""
        if int(window) == EMPTY_WINDOW:  # the free slots' marker, not a window
            return WindowBatch.empty()
        slots = np.flatnonzero(self._slot_window == int(window)).astype(np.int64)
        if len(slots) == 0:
            return WindowBatch.empty()
        return self._emit(slots[:1], release=False)

    def _grow(self, needed: int) -> None:
        cap = self._capacity
        while cap < needed:
            cap *= 2
        index, hot, cold = _alloc_state(self._n_slots, cap)
        # index entries past n_series and pool records past slot_rows were never written:
        # they stay untouched pages
        n = self._n_series
        index[:, :n] = self._index[:, :n]
        rows = int(self._slot_rows.max())
        hot[:, :rows] = self._hot[:, :rows]
        cold[:, :rows] = self._cold[:, :rows]
        self._index, self._hot, self._cold = index, hot, cold
        self._capacity = cap
        self._views = self._flat_views()

    def _flat_views(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The index (int32) and the hot and cold pools (float64) as flat arrays (kernels
        view the pools' int64 fields)."""
        return self._index.reshape(-1), self._hot.reshape(-1), self._cold.reshape(-1)


def _check_batch(name: str, b: object) -> WindowBatch:
    if not isinstance(b, WindowBatch):
        raise TypeError(f"{name} must be a WindowBatch, got {type(b).__name__}")
    for f in fields(WindowBatch):
        a = getattr(b, f.name)
        want = np.int64 if f.name in ("series", "window_start_ns", "count", "first_ts",
                                      "last_ts") else np.float64
        _check_array(f"{name}.{f.name}", a, want)
    return b


def merge_partials(a: WindowBatch, b: WindowBatch) -> WindowBatch:
    """Combine partial aggregates: one row per (series, window_start_ns) present in ``a`` or
    ``b``, ordered by window start then series.

    ``a`` counts as added before ``b`` (first/last timestamp ties) and rows within each
    batch keep their order. ``merge_partials(agg(A), agg(B))`` equals ``agg(A + B)`` exactly
    for count/min/max/first/last and up to rounding for sum/mean/m2. Rows with
    ``count <= 0`` contribute nothing.
    """
    _check_batch("a", a)
    _check_batch("b", b)
    return _combine(WindowBatch.concat([a, b]))


def merge_into(base: WindowBatch, rows: WindowBatch) -> WindowBatch:
    """``merge_partials(base, rows)`` for a ``base`` with one row per key ordered by window
    start then series (what ``merge_partials`` and the rollups return): when every key of
    ``rows`` is in ``base``, merged into ``base``'s own arrays (which change: pass a batch
    nobody else reads) and ``base`` returned, with no concatenation, sort or copy of it.
    The hub merges the minute in progress into the hour's 0.4M air-station rows once a
    minute; a sort-merge made ~110 MB of temporaries for it. Same arithmetic and order
    (``base``'s row, then ``rows`` in order); otherwise ``merge_partials``."""
    _check_batch("base", base)
    _check_batch("rows", rows)
    pos = _positions(base, rows) if len(base) and len(rows) else None
    if pos is None:
        return merge_partials(base, rows)
    _merge_at(pos, base.count, base.sum, base.mean, base.m2, base.min, base.max, base.first,
              base.first_ts, base.last, base.last_ts, rows.count, rows.sum, rows.m2,
              rows.min, rows.max, rows.first, rows.first_ts, rows.last, rows.last_ts)
    return base


def _positions(base: WindowBatch, rows: WindowBatch) -> np.ndarray | None:
    """Row of ``base`` (sorted by window start, then series, one row per key) holding each
    key of ``rows``; None if any is missing."""
    pos = np.empty(len(rows), dtype=np.int64)
    starts = np.unique(rows.window_start_ns)
    for start in starts.tolist():
        lo, hi = np.searchsorted(base.window_start_ns, [start, start + 1])
        sel = slice(None) if len(starts) == 1 else rows.window_start_ns == start
        want = rows.series[sel]
        at = lo + np.searchsorted(base.series[lo:hi], want)
        if not (at < hi).all() or not (base.series[np.minimum(at, len(base) - 1)] == want).all():
            return None
        pos[sel] = at
    return pos


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _merge_at(pos, o_count, o_sum, o_mean, o_m2, o_min, o_max, o_first, o_first_ts, o_last,
              o_last_ts, count, total, m2, vmin, vmax, first, first_ts, last,
              last_ts):  # pragma: no cover - compiled
    """Row ``i`` merged into output row ``pos[i]``, in row order: ``_merge_sorted``'s
    arithmetic (output rows have count >= 1; rows with count <= 0 are identities)."""
    for i in range(pos.shape[0]):
        cb = count[i]
        if cb <= 0:
            continue
        j = pos[i]
        _merge_row(j, i, o_count, o_sum, o_m2, o_min, o_max, o_first, o_first_ts, o_last,
                   o_last_ts, count, total, m2, vmin, vmax, first, first_ts, last, last_ts)
        o_mean[j] = o_sum[j] / o_count[j]


def _combine(c: WindowBatch) -> WindowBatch:
    if len(c) == 0:
        return WindowBatch.empty()
    order = np.lexsort((c.series, c.window_start_ns)).astype(np.int64)  # stable
    return _batch_from_tuple(_merge_sorted(
        order, c.series, c.window_start_ns, c.count, c.sum, c.m2, c.min, c.max, c.first,
        c.first_ts, c.last, c.last_ts))


def aggregate_batch(series: np.ndarray, ts_ns: np.ndarray, value: np.ndarray,
                    window_ns: int) -> WindowBatch:
    """Aggregate a whole batch at once: every (series, window) it touches, no lateness.

    Same kernels as ``WindowAggregator`` when ``windows spanned * (max id + 1)`` fits a dense
    state (``_DENSE_MAX_CELLS``); otherwise a sort-based path (``merge_partials`` of one-row
    partials). Output ordered by window start, then series; NaN values skipped.
    """
    s, t, v = _check_readings(series, ts_ns, value)
    wn = int(window_ns)
    if wn < 1:
        raise ValueError(f"window_ns must be >= 1 ns, got {window_ns}")
    if s.shape[0] == 0:
        return WindowBatch.empty()
    smin, smax, tmin, tmax = _minmax2(s, t)
    _check_ranges(int(smin), int(tmin), int(tmax), wn)
    span = int(tmax) // wn - int(tmin) // wn + 1
    if span * (int(smax) + 1) <= _DENSE_MAX_CELLS:
        agg = WindowAggregator(wn, span, capacity=int(smax) + 1)
        res = agg.add(s, t, v)
        assert len(res.late_idx) == 0 and len(res.early_idx) == 0 and len(res.closed) == 0
        return agg.close_all()
    keep = v == v
    s, t, v = s[keep], t[keep], v[keep]
    ones = np.ones(s.shape[0], dtype=np.int64)
    return _combine(WindowBatch(
        series=s, window_start_ns=(t // wn) * wn, count=ones, sum=v, mean=v,
        m2=np.zeros(s.shape[0]), min=v, max=v, first=v, first_ts=t, last=v, last_ts=t))
