"""Merging every device's timeline in simulated time: pure, no clock, no I/O.

:class:`Scheduler` keeps a heap of (next message time, device index) and a heap of pending
duplicate re-sends, and hands out messages in simulated-time order up to a bound the caller
chooses. Because each device's k-th message is produced by the device's own model, and the
heap always yields the earliest message first, the sequence of messages is the same however
the caller advances the bound (in one step or a million): wall-clock timing cannot leak into
what is sent.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

from firmware_sim.devices import DeviceModel

DATA = 0
DUPLICATE = 1


class Outgoing(NamedTuple):
    """A data message ready to publish."""

    model: int        # index of the device model in the scheduler's list
    kind: int         # DATA, or DUPLICATE (a re-send of bytes already sent)
    t: float          # simulated time it leaves the device
    seq: int
    payload: bytes
    n_readings: int


@dataclass
class FaultCounts:
    """Faults injected so far, by kind (per-message faults; see ``FaultConfig``)."""

    spikes: int = 0            # messages with one reading spiked out of range
    stuck_episodes: int = 0    # stuck-sensor episodes started
    stuck_readings: int = 0    # readings that repeated a frozen value
    dropouts: int = 0          # messages never sent (their seq is skipped)
    dropout_readings: int = 0  # readings in those messages
    duplicates: int = 0        # re-sends scheduled (sent ones are in SimStats)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Scheduler:
    """Yields the devices' data messages in simulated-time order (ties: by device index)."""

    def __init__(self, models: Sequence[DeviceModel]) -> None:
        self.models = models
        self._heap = [(m.next_t, i) for i, m in enumerate(models)]
        heapq.heapify(self._heap)
        # (time, tie-break counter, model, seq, payload, n_readings)
        self._dups: list[tuple[float, int, int, int, bytes, int]] = []
        self._dup_counter = 0
        self.faults = FaultCounts()
        #: every device's death time, sorted (``deaths_by``)
        self._deaths = sorted(m.faults.dies_at for m in models if m.faults.dies_at < math.inf)

    def next_time(self) -> float:
        """Simulated time of the next message (``inf`` if there is none)."""
        t = self._heap[0][0] if self._heap else math.inf
        if self._dups and self._dups[0][0] <= t:
            return self._dups[0][0]
        return t

    def pending_duplicates(self) -> int:
        return len(self._dups)

    def deaths_by(self, t: float) -> int:
        """Devices that have failed for good at or before simulated time ``t``."""
        return bisect.bisect_right(self._deaths, t)

    def pop(self, until: float) -> Outgoing | None:
        """The next message due at or before simulated time ``until``, or None.

        Dropped messages are consumed here (counted in :attr:`faults`), never returned.
        """
        heap, dups, models, counts = self._heap, self._dups, self.models, self.faults
        while True:
            t_dev = heap[0][0] if heap else math.inf
            if dups and dups[0][0] <= t_dev:
                if dups[0][0] > until:
                    return None
                t, _, i, seq, payload, n = heapq.heappop(dups)
                return Outgoing(i, DUPLICATE, t, seq, payload, n)
            if t_dev > until or t_dev == math.inf:  # inf: every device has died
                return None
            _, i = heap[0]
            m = models[i]
            e = m.emit()
            heapq.heapreplace(heap, (m.next_t, i))
            f = e.faults
            if f.spiked:
                counts.spikes += 1
            if f.stuck_started:
                counts.stuck_episodes += 1
            counts.stuck_readings += f.stuck_readings
            if f.dropped:
                counts.dropouts += 1
                counts.dropout_readings += e.n_readings
                continue
            # (a retry of a dropped message would be no duplicate; a dead device retries
            # nothing: its draw is taken all the same, so nothing else shifts)
            if f.duplicate_after_s > 0.0 and e.t + f.duplicate_after_s < m.faults.dies_at:
                counts.duplicates += 1
                self._dup_counter += 1
                heapq.heappush(dups, (e.t + f.duplicate_after_s, self._dup_counter, i, e.seq,
                                      e.payload, e.n_readings))
            return Outgoing(i, DATA, e.t, e.seq, e.payload, e.n_readings)
