"""Coarser windows from finer ones (the on-time snapshots of open windows are
``WindowAggregator.snapshot``).

Windows at several resolutions (10 s, 1 min, 1 h by default) are not aggregated from
readings three times: the 10 s ring aggregates readings, and each coarser resolution merges
the *partial states* (count, sum, M2, min, max, first, last) of the finer windows it covers,
with the arithmetic of ``hub.window.merge_partials`` — the same merge an edge or a second hub
would use. So ``agg_1h`` equals aggregating the hour's readings directly (tested), at a
fraction of the cost.

State, in place: each open coarse window keeps an index from series id to a record of its
pool (like the 10 s ring, ``hub.window``), and a finer row is merged into its series' record
where it lies. Why not a sorted table merged with ``merge_partials`` on every add (the
layout this replaced): at a million devices the hour's table holds 4.5M rows, and merging a
minute's 0.9M rows into it built the concatenation, its sort order and the merged copy, ~1 GB
of temporaries once a minute, which set the hub's peak memory (bench/README.md). Index and
pool are anonymous mappings sized for every series id: pages no record reached are never
resident, and a closed window's memory goes back to the OS at once.

Closing hands the pool over as it is (``ClosedWindow``): its rows are gathered a slice at a
time as they are stored (``slices``), and a consumer that reads a few series gathers only
those (``select``). Gathered in one go, an hour's close at a million devices was a 4.5M-row
batch, ~430 MB next to the pool it came from, and the hub's peak memory (bench/README.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numba import njit

from hub.arrays import lazy_zeros
from hub.kernel_config import CACHE, FASTMATH, NOGIL
from hub.window import WindowBatch, chan_merge

# Record of a (series, coarse window): float64 fields, int64 ones through a view.
R_COUNT = 0  # int64
R_SUM = 1
R_M2 = 2
R_MIN = 3
R_MAX = 4
R_FIRST = 5
R_FIRST_TS = 6  # int64
R_LAST = 7
R_LAST_TS = 8  # int64
N_REC = 9


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _fold_rows(ix, rec, used, series, count, total, m2, vmin, vmax, first, first_ts, last,
               last_ts):  # pragma: no cover - compiled
    """Merge the rows into the records of their series (``ix``: int32, 0 = none, p =
    record p - 1; ``rec``: ``[capacity, N_REC]`` float64; ``used`` records taken). Rows with
    ``count <= 0`` are identities. Returns the records taken afterwards. The arithmetic, in
    row order, is ``hub.window._merge_sorted``'s (Chan et al.; ties: ``first`` keeps the
    earlier row, ``last`` takes the later), so results are bit for bit those of merging
    with ``merge_partials``. The caller sizes ``ix`` past every id and ``rec`` for every
    series, so a new record always fits."""
    ri = rec.view(np.int64)
    for i in range(series.shape[0]):
        cb = count[i]
        if cb <= 0:
            continue
        s = series[i]
        p = ix[s]
        if p == 0:
            k = used
            used += 1
            ix[s] = np.int32(used)
            ri[k, R_COUNT] = cb
            rec[k, R_SUM] = total[i]
            rec[k, R_M2] = m2[i]
            rec[k, R_MIN] = vmin[i]
            rec[k, R_MAX] = vmax[i]
            rec[k, R_FIRST] = first[i]
            ri[k, R_FIRST_TS] = first_ts[i]
            rec[k, R_LAST] = last[i]
            ri[k, R_LAST_TS] = last_ts[i]
            continue
        k = p - 1
        ri[k, R_COUNT], rec[k, R_SUM], rec[k, R_M2] = chan_merge(
            ri[k, R_COUNT], rec[k, R_SUM], rec[k, R_M2], cb, total[i], m2[i])
        if vmin[i] < rec[k, R_MIN]:
            rec[k, R_MIN] = vmin[i]
        if vmax[i] > rec[k, R_MAX]:
            rec[k, R_MAX] = vmax[i]
        if first_ts[i] < ri[k, R_FIRST_TS]:
            ri[k, R_FIRST_TS] = first_ts[i]
            rec[k, R_FIRST] = first[i]
        if last_ts[i] >= ri[k, R_LAST_TS]:
            ri[k, R_LAST_TS] = last_ts[i]
            rec[k, R_LAST] = last[i]
    return used


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _gather(ix, rec, ids, start, o_i, o_f):  # pragma: no cover - compiled
    """Rows of series ``ids`` (each with a record) in that order, in the row-major layout
    of ``WindowBatch.from_rows``."""
    ri = rec.view(np.int64)
    for j in range(ids.shape[0]):
        s = ids[j]
        k = ix[s] - 1
        c = ri[k, R_COUNT]
        o_i[0, j] = s
        o_i[1, j] = start
        o_i[2, j] = c
        o_i[3, j] = ri[k, R_FIRST_TS]
        o_i[4, j] = ri[k, R_LAST_TS]
        o_f[0, j] = rec[k, R_SUM]
        o_f[1, j] = rec[k, R_SUM] / c
        o_f[2, j] = rec[k, R_M2]
        o_f[3, j] = rec[k, R_MIN]
        o_f[4, j] = rec[k, R_MAX]
        o_f[5, j] = rec[k, R_FIRST]
        o_f[6, j] = rec[k, R_LAST]


#: series ids scanned per step of a closed or pending window (index entries, 4 B each)
_STEP = 1 << 20


class _OpenWindow:
    """One coarse window's index and record pool."""

    __slots__ = ("index", "rec", "used")

    def __init__(self, capacity: int) -> None:
        self.index = lazy_zeros((capacity,), np.int32)
        self.rec = lazy_zeros((capacity, N_REC), np.float64)
        self.used = 0

    def grow(self, capacity: int) -> None:
        """Room for series ids below ``capacity`` (copies what is held)."""
        index = lazy_zeros((capacity,), np.int32)
        rec = lazy_zeros((capacity, N_REC), np.float64)
        index[:len(self.index)] = self.index
        rec[:self.used] = self.rec[:self.used]
        self.index, self.rec = index, rec

    def ids(self, step: int) -> Iterator[np.ndarray]:
        """Series ids with a record, ascending (int64), for ``step`` ids of the index at a
        time (empty steps skipped): never a temporary as long as the whole index."""
        for lo in range(0, len(self.index), step):
            held = np.flatnonzero(self.index[lo:lo + step])
            if len(held):
                yield held + np.int64(lo)

    def gather(self, start_ns: int, ids: np.ndarray) -> WindowBatch:
        """Rows of series ``ids`` (each with a record), in that order."""
        o_i = np.empty((5, len(ids)), dtype=np.int64)
        o_f = np.empty((7, len(ids)), dtype=np.float64)
        _gather(self.index, self.rec, ids, np.int64(start_ns), o_i, o_f)
        return WindowBatch.from_rows(o_i, o_f)

    def rows(self, start_ns: int, select: Callable[[np.ndarray], np.ndarray] | None
             ) -> WindowBatch:
        """The window's rows (series ascending), only ``select``'s series if given."""
        parts = []
        for ids in self.ids(_STEP):
            if select is not None:
                ids = ids[np.asarray(select(ids), dtype=bool)]
            parts.append(self.gather(start_ns, ids))
        return WindowBatch.concat(parts)


class ClosedWindow:
    """A closed coarse window, its rows gathered on demand from its record pool (series
    ascending, as ``Rollup.close_until`` returns them). Holds the pool until dropped."""

    __slots__ = ("_w", "start_ns")

    def __init__(self, start_ns: int, w: _OpenWindow) -> None:
        self.start_ns = int(start_ns)
        self._w = w

    def __len__(self) -> int:
        return self._w.used

    def slices(self, size: int) -> Iterator[WindowBatch]:
        """The rows, ``size`` at a time (the last slice may be shorter); none if empty.
        Each slice is gathered when asked for: memory is one slice, not the window."""
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        held: list[np.ndarray] = []
        n = 0
        for ids in self._w.ids(max(size, _STEP)):
            held.append(ids)
            n += len(ids)
            while n >= size:
                ids = np.concatenate(held) if len(held) > 1 else held[0]
                yield self._w.gather(self.start_ns, ids[:size])
                held = [ids[size:]]
                n -= size
        if n:
            yield self._w.gather(self.start_ns, np.concatenate(held))

    def select(self, keep: Callable[[np.ndarray], np.ndarray]) -> WindowBatch:
        """The rows of the series ``keep(series ids) -> bool mask`` keeps, ascending."""
        return self._w.rows(self.start_ns, keep)

    def batch(self) -> WindowBatch:
        """Every row in one batch (small windows, tests)."""
        return self._w.rows(self.start_ns, None)


class Rollup:
    """Tumbling windows of ``window_ns`` built from finer closed windows. One owner thread.

    Contract: ``add_partials`` takes *final* rows of a finer resolution whose window length
    divides ``window_ns``; ``close_until(watermark)`` returns every coarse window whose end
    is ≤ ``watermark`` and forgets it. Rows come out ordered by window start, then series.
    ``capacity``: series ids held before the state grows (``hub.series.presized``; address
    space, resident only where written).
    """

    def __init__(self, window_ns: int, capacity: int = 1024) -> None:
        if window_ns < 1:
            raise ValueError(f"window_ns must be ≥ 1, got {window_ns}")
        if capacity < 1:
            raise ValueError(f"capacity must be ≥ 1, got {capacity}")
        self.window_ns = int(window_ns)
        self._capacity = int(capacity)
        self._open: dict[int, _OpenWindow] = {}  # window start (ns) -> state

    def __len__(self) -> int:
        """Open (series, coarse window) rows."""
        return sum(w.used for w in self._open.values())

    def add_partials(self, rows: WindowBatch) -> None:
        """Merge finer rows into their coarse windows (rows with ``count <= 0`` add
        nothing)."""
        if len(rows) == 0:
            return
        if int(rows.series.min()) < 0:
            raise ValueError("series ids must be >= 0")
        top = int(rows.series.max()) + 1
        while self._capacity < top:
            self._capacity *= 2
        start = (rows.window_start_ns // self.window_ns) * self.window_ns
        first = int(start[0])
        if (start == first).all():  # the usual case: one coarse window
            self._fold(first, rows)
            return
        for s in np.unique(start).tolist():
            self._fold(int(s), rows.take(start == s))

    def _fold(self, start_ns: int, rows: WindowBatch) -> None:
        w = self._open.get(start_ns)
        if w is None:
            w = self._open[start_ns] = _OpenWindow(self._capacity)
        elif len(w.index) < self._capacity:
            w.grow(self._capacity)
        w.used = int(_fold_rows(w.index, w.rec, w.used, rows.series, rows.count, rows.sum,
                                rows.m2, rows.min, rows.max, rows.first, rows.first_ts,
                                rows.last, rows.last_ts))

    def close_until(self, watermark_ns: int) -> WindowBatch:
        return WindowBatch.concat([w.batch() for w in self.close_windows(watermark_ns)])

    def close_windows(self, watermark_ns: int) -> list[ClosedWindow]:
        """``close_until``'s windows, oldest first, each gathered as it is read."""
        done = sorted(s for s in self._open if s + self.window_ns <= watermark_ns)
        return [ClosedWindow(s, self._open.pop(s)) for s in done]

    def pending(self, select: Callable[[np.ndarray], np.ndarray] | None = None
                ) -> WindowBatch:
        """The open coarse windows' partial state so far (a snapshot; nothing is closed).
        ``select(series ids) -> bool mask`` keeps only those series' rows."""
        return WindowBatch.concat([self._open[s].rows(s, select) for s in sorted(self._open)])

    def close_all(self) -> WindowBatch:
        """Every open window's rows (shutdown); the rollup is empty afterwards."""
        return WindowBatch.concat([w.batch() for w in self.close_all_windows()])

    def close_all_windows(self) -> list[ClosedWindow]:
        """``close_all``'s windows, oldest first, each gathered as it is read."""
        return [ClosedWindow(s, self._open.pop(s)) for s in sorted(self._open)]
