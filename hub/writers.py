"""Several InfluxDB connections: raw readings on one or more, everything that may overwrite
on another.

One ``InfluxWriter`` sends one batch at a time and waits for InfluxDB's answer, so a hub
storing every reading raw is bound by one connection's round trips (measured: influxd took
171–192k lines/s over one connection, 212–271k over two). Raw lines never overwrite one
another (each is a distinct device and time; a replayed line is identical), so they can go
on connections of their own, in any order and in parallel (chunks are dealt round robin),
next to aggregates and analytics — which must stay in order on theirs, because a window's
final emission overwrites its on-time one at the same timestamp.

``SplitWriter`` keeps ``InfluxWriter``'s contract for the hub and its WAL: ``submit``
returns a *global* ticket, increasing across all connections, and ``durable_ticket`` is the
highest global ticket below which everything submitted — on any connection — has been
stored. ``on_durable(ticket, stored)`` reports that global ticket whenever it advances.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

from citybrain.stats import Counters
from hub.sinks import InfluxSink
from hub.writer import InfluxWriter

RAW = "raw"


class SplitWriter:
    def __init__(self, raw_sinks: Sequence[InfluxSink], other_sink: InfluxSink,
                 counters: Counters, *, batch_lines: int = 10_000, flush_s: float = 0.5,
                 max_queued_lines: int = 500_000,
                 on_durable: Callable[[int, bool], None] | None = None) -> None:
        """``raw_sinks``: one connection (sink) per raw writer; ``max_queued_lines`` is
        shared out evenly between all connections."""
        raws = list(raw_sinks)
        if not raws:
            raise ValueError("SplitWriter needs at least one raw connection")
        self.on_durable = on_durable
        self._lock = threading.Lock()
        self.last_ticket = 0
        self._durable = 0
        named: list[tuple[str, InfluxSink]] = [(f"{RAW}{i}", sink)
                                               for i, sink in enumerate(raws)]
        named.append(("other", other_sink))
        self._raw_names = [name for name, _ in named[:-1]]
        self._next_raw = 0
        # per connection: (global ticket, local ticket) submitted and not yet durable
        self._pending: dict[str, deque[tuple[int, int]]] = {name: deque() for name, _ in named}
        share = max(max_queued_lines // len(named), batch_lines)
        self.writers = {
            name: InfluxWriter(sink, counters, batch_lines=batch_lines, flush_s=flush_s,
                               max_queued_lines=share, on_durable=self._advanced)
            for name, sink in named}

    def start(self) -> None:
        for w in self.writers.values():
            w.start()

    def submit(self, kind: str, body: bytes, lines: int) -> int:
        """Queue rendered lines on their connection; returns the global ticket (or the last
        one if there was nothing to write). Blocks while that connection's queue is full.
        One submitting thread (the hub's processing thread): local and global tickets are
        then assigned in the same order. After ``stop`` began the lines are refused and
        counted (``InfluxWriter.submit``): their ticket never becomes durable."""
        if not lines:
            return self.last_ticket
        name = "other"
        if kind == RAW:
            name = self._raw_names[self._next_raw]
            self._next_raw = (self._next_raw + 1) % len(self._raw_names)
        # Not under the lock: a full queue blocks here until the writer thread, which takes
        # the lock in _advanced, makes room.
        local = self.writers[name].submit(kind, body, lines)
        with self._lock:
            self.last_ticket += 1
            self._pending[name].append((self.last_ticket, local))
            return self.last_ticket

    def _recompute(self) -> tuple[int, bool]:
        """(global durable ticket, whether it moved); caller holds the lock."""
        bound = self.last_ticket
        for name, pending in self._pending.items():
            done = self.writers[name].durable_ticket
            while pending and pending[0][1] <= done:
                pending.popleft()
            if pending:
                bound = min(bound, pending[0][0] - 1)
        moved = bound > self._durable
        self._durable = max(self._durable, bound)
        return self._durable, moved

    def _advanced(self, _local: int, stored: bool) -> None:
        """A connection's durable ticket moved (its writer thread)."""
        with self._lock:
            durable, moved = self._recompute()
        if moved and self.on_durable is not None:
            self.on_durable(durable, stored)

    @property
    def durable_ticket(self) -> int:
        with self._lock:
            durable, moved = self._recompute()
        if moved and self.on_durable is not None:
            self.on_durable(durable, True)
        return durable

    @property
    def depth(self) -> int:
        return sum(w.depth for w in self.writers.values())

    @property
    def queued_lines(self) -> int:
        return sum(w.queued_lines for w in self.writers.values())

    @property
    def unwritten_lines(self) -> int:
        return sum(w.unwritten_lines for w in self.writers.values())

    def stop(self, timeout_s: float) -> int:
        """Stop all (in parallel: each has ``timeout_s``); returns lines not stored so far
        (``unwritten_lines`` goes on counting lines submitted later: refused)."""
        threads = [threading.Thread(target=w.stop, args=(timeout_s,), daemon=True)
                   for w in self.writers.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout_s + 10)
        self._advanced(0, True)
        return self.unwritten_lines
