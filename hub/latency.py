"""End-to-end latency of readings through the hub, as mergeable histograms.

Two stages, each a cumulative ``hub.sketch.LogHistogram`` of seconds (1 % relative error,
0.1 ms … 10⁵ s; a device clock ahead of the hub's gives negative latencies, kept in the
mirrored buckets):

``aggregated``  device time → the reading is in the hub's window state (what the live view
                and the next emitted window include)
``stored``      device time → InfluxDB acknowledged the batch holding its raw line

Device time is the reading's timestamp: a load generator that stamps readings with their
*intended* send time makes these latencies free of coordinated omission (a stalled sender's
delay is counted, not hidden).

Threads: the processing thread calls ``aggregated`` and ``pending_store``; the writer
thread calls ``stored`` when a ticket is durable; any thread may call ``snapshot``. A lock
guards the histograms; the per-reading work is one vectorised subtraction and one numba
``add`` per frame.

``snapshot()`` is the wire form (the hub's stats and ``/api/stats``): sparse bucket indices
into ``LogHistogram(alpha, 1, min_value, max_value).representatives`` and their counts.
Histograms from several hubs merge by adding counts per index.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hub.sketch import LogHistogram

ALPHA = 0.01
MIN_S = 1e-4
MAX_S = 1e5
STAGES = ("aggregated", "stored")


class PipelineLatency:
    def __init__(self) -> None:
        from hub.sketch import LogHistogram  # numba: only where histograms are kept
        self._hist: dict[str, LogHistogram] = {
            s: LogHistogram(ALPHA, 1, MIN_S, MAX_S) for s in STAGES}
        self._lock = threading.Lock()
        self._group0 = np.zeros(0, dtype=np.int64)  # guarded by _lock
        # (writer ticket, device timestamps ns) of raw lines not yet acknowledged; bounded by
        # the writer's queue (max_queued_lines): 8 bytes per waiting reading.
        self._pending: deque[tuple[int, np.ndarray]] = deque()
        self._pending_lock = threading.Lock()

    def _add(self, stage: str, ts_ns: np.ndarray, now_ns: int) -> None:
        n = len(ts_ns)
        if n == 0:
            return
        lat = (now_ns - ts_ns).astype(np.float64)
        lat *= 1e-9  # in place: the same products as ``* 1e-9``, one array fewer
        with self._lock:
            if len(self._group0) < n:  # the group ids: all 0, kept (read only) across calls
                self._group0 = np.zeros(max(n, 2 * len(self._group0)), dtype=np.int64)
            self._hist[stage].add(self._group0[:n], lat)

    def aggregated(self, ts_ns: np.ndarray, now_ns: int) -> None:
        """Readings with device times ``ts_ns`` entered the window state at ``now_ns``."""
        self._add("aggregated", ts_ns, now_ns)

    def pending_store(self, ticket: int, ts_ns: np.ndarray) -> None:
        """Raw lines of these readings were submitted to the writer as ``ticket``."""
        if len(ts_ns):
            with self._pending_lock:
                self._pending.append((ticket, ts_ns))

    def stored(self, durable_ticket: int, now_ns: int, record: bool = True) -> None:
        """Every ticket up to ``durable_ticket`` was handled by InfluxDB at ``now_ns``
        (writer thread): acknowledged, or rejected (``record`` False: forgotten here, the
        writer counts and keeps the lines)."""
        done: list[np.ndarray] = []
        with self._pending_lock:
            while self._pending and self._pending[0][0] <= durable_ticket:
                done.append(self._pending.popleft()[1])
        if done and record:
            self._add("stored", np.concatenate(done), now_ns)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"alpha": ALPHA, "min_value": MIN_S, "max_value": MAX_S,
                               "unit": "s"}
        with self._lock:
            for stage, h in self._hist.items():
                counts = h.counts[0]
                keys = np.flatnonzero(counts)
                out[stage] = {"keys": keys.tolist(), "counts": counts[keys].tolist()}
        return out


def _layout(snap: Mapping[str, Any]) -> tuple[float, float, float]:
    return float(snap["alpha"]), float(snap["min_value"]), float(snap["max_value"])


def merge_snapshots(snaps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several hubs' ``snapshot()``s as one (counts added per bucket; empty ones skipped).
    All must share ``(alpha, min_value, max_value)``; ValueError otherwise or if none."""
    snaps = [s for s in snaps if s]
    if not snaps:
        raise ValueError("no latency histograms to merge")
    layout = _layout(snaps[0])
    for s in snaps[1:]:
        if _layout(s) != layout:
            raise ValueError(f"cannot merge latency histograms with layouts {layout} and "
                             f"{_layout(s)}")
    out: dict[str, Any] = {k: snaps[0][k] for k in ("alpha", "min_value", "max_value", "unit")}
    for stage in STAGES:
        acc: dict[int, int] = {}
        for s in snaps:
            part = s.get(stage) or {"keys": [], "counts": []}
            for k, c in zip(part["keys"], part["counts"], strict=True):
                acc[int(k)] = acc.get(int(k), 0) + int(c)
        keys = sorted(acc)
        out[stage] = {"keys": keys, "counts": [acc[k] for k in keys]}
    return out
