"""Windowed aggregation at several resolutions with a watermark and allowed lateness.

Pure and clock-free: the caller passes the event clock (ns of device time); nothing here
reads a wall clock or does I/O, so tests drive it with explicit times.

Firing rules for the finest resolution (default 10 s), with ``L`` = allowed lateness:

* **on time** — when the event clock passes a window's end, its current state is emitted
  (``final=False``) but the window stays open;
* **late, inside the lateness** — a reading for such a window is still aggregated (counted in
  ``reaggregated``); the window is emitted again when it closes;
* **final** — when ``event clock − L`` passes the window's end it is emitted (``final=True``)
  and closed. Same measurement, tags and timestamp as the on-time emission, so InfluxDB
  overwrites it: the stored value is always the most complete one;
* **too late** — a reading for a closed window is counted in ``late`` and not aggregated
  (it is still stored raw).

Coarser resolutions (1 min, 1 h) are built from the finest one's *final* partial states by
``hub.rollup.Rollup`` and emitted once, final, when ``event clock − L`` passes their end.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from hub.rollup import ClosedWindow, Rollup
from hub.window import WindowAggregator, WindowBatch, merge_into

#: An emission's rows: a batch, or a closed coarse window whose rows are gathered as they
#: are read (``ClosedWindow``: an hour's close at a million devices is 4.5M rows). Both have
#: ``len``, ``slices(size)`` and ``select(keep)``.
Rows = WindowBatch | ClosedWindow

#: finer rows merged into a coarser resolution per call (a closed window gathered this
#: many rows at a time: ~25 MB)
FOLD_SLICE_ROWS = 1 << 18


def resolution_label(window_ns: int) -> str:
    """``10s``, ``1m``, ``1h``, ``1d`` …: the suffix of the ``agg_*`` measurement."""
    s = window_ns / 1e9
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{int(s // size)}{unit}"
    return f"{s:g}s"


@dataclass(frozen=True, slots=True)
class Emission:
    label: str  # resolution, e.g. "10s"
    rows: Rows  # a coarse resolution's closed window is a ClosedWindow, the rest batches
    final: bool
    #: bool per row of a final emission (or None: all False): the row's window was emitted
    #: on time and no reading has changed it since, so it holds exactly what was stored then
    #: (writing it again would rewrite the same values)
    unchanged: np.ndarray | None = None

    def batch(self) -> WindowBatch:
        """Every row in one batch (a closed window gathered whole: small windows, tests)."""
        return self.rows.batch() if isinstance(self.rows, ClosedWindow) else self.rows


@dataclass(slots=True)
class AddOutcome:
    added: int = 0  # readings aggregated
    late: int = 0  # readings for windows already closed: not aggregated
    early: int = 0  # readings implausibly far ahead of the event clock: not aggregated
    invalid: int = 0  # readings no window can hold (reserved or out-of-range time, id < 0)
    nan: int = 0  # NaN values in open windows: not readings for aggregation
    reaggregated: int = 0  # added to a window already emitted on time
    emissions: list[Emission] = field(default_factory=list)


class MultiResolutionWindows:
    """Owned by one thread (the hub's processing thread)."""

    def __init__(self, resolutions_s: tuple[float, ...] = (10.0, 60.0, 3600.0),
                 lateness_s: float = 30.0, max_ahead_s: float = 300.0,
                 capacity: int = 1024) -> None:
        """``capacity``: series ids the finest ring holds before it grows (see
        ``hub.series.presized``)."""
        res = [round(r * 1e9) for r in resolutions_s]
        if not res or any(r <= 0 for r in res):
            raise ValueError("resolutions must be positive")
        for finer, coarser in itertools.pairwise(res):
            if coarser % finer:
                raise ValueError(f"each resolution must divide the next: {resolutions_s}")
        self.resolutions_ns = res
        self.labels = [resolution_label(r) for r in res]
        self.lateness_ns = int(lateness_s * 1e9)
        self.max_ahead_ns = int(max_ahead_s * 1e9)
        fine = res[0]
        self.fine = WindowAggregator(fine, n_slots=math.ceil(self.lateness_ns / fine) + 2,
                                     capacity=capacity)
        self.rollups = [Rollup(r, capacity) for r in res[1:]]
        self._fired_upto: int | None = None  # newest fine window emitted on time
        #: fine windows at or below ``_fired_upto`` that readings reached after they fired
        #: (until they close): their final rows differ from the on-time ones
        self._changed_after_firing: set[int] = set()

    @property
    def fine_ns(self) -> int:
        return self.resolutions_ns[0]

    def add(self, series: np.ndarray, ts_ns: np.ndarray, value: np.ndarray,
            event_clock_ns: int) -> AddOutcome:
        """Aggregate a batch; returns what happened and any windows it closed."""
        out = AddOutcome()
        if len(series) == 0:
            return out
        window = ts_ns // self.fine_ns
        if int(window.max()) - int(window.min()) < self.fine.n_slots:
            self._add_chunk(series, ts_ns, value, window, event_clock_ns, out)
            return out
        # The batch spans more windows than the ring holds (a replayed backlog, say): feed it
        # in time order, in chunks that fit the ring, as if it had arrived in order.
        order = np.argsort(window, kind="stable")
        w_sorted = window[order]
        lo = 0
        while lo < len(order):
            hi = int(np.searchsorted(w_sorted, w_sorted[lo] + self.fine.n_slots - 1, "right"))
            idx = order[lo:hi]
            self._add_chunk(series[idx], ts_ns[idx], value[idx], window[idx], event_clock_ns,
                            out)
            lo = hi
        return out

    def _add_chunk(self, series: np.ndarray, ts_ns: np.ndarray, value: np.ndarray,
                   window: np.ndarray, event_clock_ns: int, out: AddOutcome) -> None:
        max_window = (event_clock_ns + self.max_ahead_ns) // self.fine_ns
        res = self.fine.add(series, ts_ns, value, max_window=max_window)
        out.added += res.n_added
        out.nan += res.n_nan
        out.late += len(res.late_idx)
        out.early += len(res.early_idx)
        out.invalid += len(res.invalid_idx)
        if self._fired_upto is not None:
            fired = window <= self._fired_upto
            n_fired = int(np.count_nonzero(fired))
            if n_fired:
                skipped = (np.count_nonzero(fired[res.late_idx])
                           + np.count_nonzero(fired[res.early_idx])
                           + np.count_nonzero(fired[res.invalid_idx]))
                if n_fired > skipped:
                    out.reaggregated += n_fired - int(skipped)
                    fired[res.late_idx] = False
                    fired[res.early_idx] = False
                    fired[res.invalid_idx] = False
                    self._changed_after_firing.update(np.unique(window[fired]).tolist())
        if len(res.closed):
            out.emissions += self._finalize(res.closed)

    def advance(self, event_clock_ns: int) -> list[Emission]:
        """Close what the watermark passed and fire windows whose end the clock passed."""
        watermark = event_clock_ns - self.lateness_ns
        emissions = self._finalize(self.fine.close_until(watermark))
        newest = self.fine.newest_window
        if newest is None:
            return emissions
        due = min(newest, event_clock_ns // self.fine_ns - 1)  # windows whose end ≤ clock
        for w in self.fine.open_windows():
            w = int(w)
            if w <= due and (self._fired_upto is None or w > self._fired_upto):
                # fired on time, kept open for late readings: the final close re-emits
                # it with the same timestamp, which InfluxDB treats as an overwrite
                rows = self.fine.snapshot(w)
                if len(rows):
                    emissions.append(Emission(self.labels[0], rows, final=False))
        if self._fired_upto is None or due > self._fired_upto:
            self._fired_upto = due
        return emissions

    def pending(self, label: str,
                select: Callable[[np.ndarray], np.ndarray] | None = None) -> WindowBatch:
        """Partial state of the open windows of a coarser resolution (e.g. the hour so far):
        every fine window finalized up to now, whether or not the intermediate windows
        (the minute in progress) have closed — merged and re-keyed to ``label``'s windows.

        ``select(series ids) -> bool mask`` keeps only the series a caller reads, before
        the merge: the hub wants the air stations' hour, a few % of a city's series, and
        merging all of them once a minute sorts every series the hub holds (4.5M rows at a
        million devices)."""
        i = self.labels.index(label)
        if i == 0:
            raise ValueError("the finest resolution has no pending partials; use snapshots")
        size = self.resolutions_ns[i]
        # this resolution's own open windows (one row per key, sorted), then the finer
        # ones' rows merged into them in place (``merge_into``)
        merged = self.rollups[i - 1].pending(select)
        for rollup in self.rollups[:i - 1]:
            part = rollup.pending(select)
            if len(part):
                start = (part.window_start_ns // size) * size
                merged = merge_into(merged, replace(part, window_start_ns=start))
        return merged

    def close_all(self) -> list[Emission]:
        """Shutdown: every open window, every resolution, final."""
        return self._finalize(self.fine.close_all(), final=True)

    def _unchanged(self, rows: WindowBatch) -> np.ndarray | None:
        """``Emission.unchanged`` for closed fine windows ``rows`` (and forget them)."""
        if self._fired_upto is None:
            return None
        window = rows.window_start_ns // self.fine_ns
        unchanged = window <= self._fired_upto
        changed = self._changed_after_firing
        if changed:
            closed = set(np.unique(window).tolist())
            hit = closed & changed
            if hit:
                unchanged &= ~np.isin(window, np.fromiter(hit, np.int64, len(hit)))
            changed -= closed
        return unchanged

    def _finalize(self, rows: WindowBatch, final: bool = False) -> list[Emission]:
        """Emit closed fine windows and every coarse window they complete.

        A coarse window is complete once the fine ring's floor (all older fine windows are
        closed for good) has passed its end — not merely the watermark, because a batch fed
        in chunks may still hold readings for it.
        """
        emissions = [Emission(self.labels[0], rows, True, self._unchanged(rows))] if len(
            rows) else []
        floor = self.fine.floor_window
        finer: list[Rows] = [rows]
        for label, rollup in zip(self.labels[1:], self.rollups, strict=True):
            for part in finer:
                for b in part.slices(FOLD_SLICE_ROWS):
                    rollup.add_partials(b)
            if final:
                closed = rollup.close_all_windows()
            elif floor is None:
                break
            else:
                closed = rollup.close_windows(floor * self.fine_ns)
            emissions += [Emission(label, w, final=True) for w in closed if len(w)]
            finer = list(closed)
        return emissions
