"""The hub's InfluxDB writer: batches rendered line protocol and stores it with retries.

Contract: ``submit(kind, body, lines)`` returns a ticket (a chunk number, increasing);
``durable_ticket`` is the highest ticket whose lines InfluxDB has acknowledged (chunks are
written in submission order, so every smaller ticket is stored too). The hub uses tickets to
know when a WAL record's outputs are stored and the record may be forgotten. The queue is
bounded in lines (``max_queued_lines``): when InfluxDB falls behind, ``submit`` blocks the
processing thread, which stops reading the WAL, which then grows on disk (bounded) instead
of memory growing. One writer thread concatenates chunks into batches of about
``batch_lines`` lines or ``flush_s`` seconds, whichever comes first -- or sooner, once
nothing has been submitted for ``idle_flush_s`` (waiting longer would make the batch later,
not bigger: the end of a burst is stored at once instead of up to ``flush_s`` later) -- and
writes each batch until it is stored: retryable errors back off (honouring Retry-After) and
try again; a rejected batch (HTTP 400) is counted, logged with the server's message, and
kept in ``failed_batches`` — never dropped silently. Once ``stop`` has begun nothing more is
queued: a late ``submit`` (a processing thread ``stop`` gave up waiting for) is refused --
its lines counted in ``unwritten_lines`` (and ``write_refused_lines``), logged once -- and
gets a ticket that never becomes durable, so the WAL keeps the record it came from.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from citybrain.stats import Counters
from hub.sinks import InfluxSink, WriteError

log = logging.getLogger("citybrain.writer")

#: Largest request body sent at once, bytes. InfluxDB 1.x refuses bodies over 25 MB by
#: default (``max-body-size``), VictoriaMetrics over 32 MB; a big window close (every series
#: of a large city) or a big raw batch is sent as several requests of at most this size.
MAX_BODY_BYTES = 8 * 1024**2


def split_lines(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> list[bytes]:
    """``body`` cut at line ends into pieces of at most ``max_bytes`` (a single longer line
    stays whole); their concatenation is ``body``."""
    if len(body) <= max_bytes:
        return [body]
    pieces = []
    start = 0
    while len(body) - start > max_bytes:
        cut = body.rfind(b"\n", start, start + max_bytes)
        if cut < 0:  # one line longer than max_bytes: send it whole
            cut = body.find(b"\n", start + max_bytes)
            if cut < 0:
                break
        pieces.append(body[start:cut + 1])
        start = cut + 1
    if start < len(body):
        pieces.append(body[start:])
    return pieces


def request_bodies(chunks: list[Chunk], max_bytes: int = MAX_BODY_BYTES) -> list[
        tuple[bytes, dict[str, int]]]:
    """The chunks as request bodies of at most ``max_bytes`` (a longer line stays whole),
    in order, each with its lines per kind: consecutive chunks share a body, a long chunk
    is cut at line ends."""
    out: list[tuple[bytes, dict[str, int]]] = []
    parts: list[bytes] = []
    size = 0
    kinds: dict[str, int] = {}

    def close() -> None:
        nonlocal parts, size, kinds
        if parts:
            out.append((b"".join(parts), kinds))
        parts, size, kinds = [], 0, {}

    for c in chunks:
        if size + len(c.body) > max_bytes:
            close()
        if len(c.body) <= max_bytes:
            parts.append(c.body)
            size += len(c.body)
            kinds[c.kind] = kinds.get(c.kind, 0) + c.lines
            continue
        pieces = split_lines(c.body, max_bytes)
        counted = 0
        for i, piece in enumerate(pieces):
            n = c.lines - counted if i == len(pieces) - 1 else piece.count(b"\n")
            counted += n
            out.append((piece, {c.kind: n}))
    close()
    return out


@dataclass(frozen=True, slots=True)
class Chunk:
    kind: str  # "raw" | "agg" | "analytics" | "dead_letters"
    body: bytes
    lines: int
    ticket: int


class InfluxWriter:
    def __init__(self, sink: InfluxSink, counters: Counters, *, batch_lines: int = 10_000,
                 flush_s: float = 0.5, max_queued_lines: int = 500_000,
                 on_durable: Callable[[int, bool], None] | None = None,
                 idle_flush_s: float = 0.1) -> None:
        """``on_durable(ticket, stored)`` is called on the writer thread each time
        ``durable_ticket`` advances: ``stored`` False if InfluxDB rejected the batch (its
        lines are counted and kept in ``failed_batches``)."""
        self.on_durable = on_durable
        self.sink = sink
        self.counters = counters
        self.batch_lines = batch_lines
        self.flush_s = flush_s
        self.idle_flush_s = idle_flush_s
        self.max_queued_lines = max(max_queued_lines, batch_lines)
        self._queue: queue.Queue[Chunk] = queue.Queue()
        self._room = threading.Condition()
        self._queued_lines = 0
        self.last_ticket = 0
        self.durable_ticket = 0
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._give_up = threading.Lock()  # stop() and a writer giving up count lines once
        self._abandoned = False  # stop() gave up on the thread and counted what it held
        # stop() began: submit refuses (counts) instead of queueing, so nothing reaches the
        # queue after stop drained it -- a chunk there would be neither written nor counted
        self._closed = False
        self._refusal_logged = False
        self._thread = threading.Thread(target=self._run, name="influx-writer", daemon=True)
        self.failed_batches: list[tuple[str, bytes]] = []
        self.unwritten_lines = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, kind: str, body: bytes, lines: int) -> int:
        """Queue rendered lines; blocks while ``max_queued_lines`` are waiting. Returns the
        chunk's ticket (or the last one, if there was nothing to write).

        After ``stop`` has begun (a submit blocked for room is woken by it) the lines are
        refused: never written, counted in ``unwritten_lines``; the ticket returned is a new
        one that never becomes durable."""
        if not lines:
            return self.last_ticket
        with self._room:
            waited_from = None
            while (not self._closed and self._queued_lines
                   and self._queued_lines + lines > self.max_queued_lines):
                self.counters.inc("write_queue_full_waits")
                waited_from = waited_from or time.monotonic()
                self._room.wait(1.0)
            if waited_from is not None:  # processing paused until InfluxDB took lines
                self.counters.inc("write_queue_full_us",
                                  int((time.monotonic() - waited_from) * 1e6))
            self.last_ticket += 1
            ticket = self.last_ticket
            if not self._closed:
                self._queued_lines += lines
                # under the lock: a chunk is queued before stop() closes, or not at all
                self._queue.put(Chunk(kind, body, lines, ticket))
                return ticket
        self._refuse(lines)
        return ticket

    def _refuse(self, lines: int) -> None:
        """Count lines submitted after ``stop`` began as unwritten; warn the first time."""
        with self._give_up:
            self.unwritten_lines += lines
            first, self._refusal_logged = not self._refusal_logged, True
        self.counters.inc("write_refused_lines", lines)
        if first:
            log.warning("writer stopped: %d lines submitted after stop are not written (counted "
                        "unwritten with any submitted later; the WAL keeps their records)", lines)

    def _release(self, lines: int) -> None:
        with self._room:
            self._queued_lines -= lines
            self._room.notify_all()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def queued_lines(self) -> int:
        return self._queued_lines

    def stop(self, timeout_s: float) -> int:
        """Write everything queued, giving up after ``timeout_s``; returns lines not stored
        so far (``unwritten_lines`` goes on counting lines submitted later: refused)."""
        with self._room:  # from here on submit refuses; wake any submit waiting for room
            self._closed = True
            self._room.notify_all()
        self._deadline = time.monotonic() + timeout_s
        self._stop.set()
        if self._thread.ident is not None:  # started (a failed start stops it too)
            self._thread.join(timeout=timeout_s + 5)
        while True:  # whatever the thread could not take is counted, not forgotten
            try:
                chunk = self._queue.get_nowait()
                self.unwritten_lines += chunk.lines
                self._release(chunk.lines)
            except queue.Empty:
                break
        with self._give_up:
            if self._thread.is_alive():
                # still writing at its deadline: what it holds was taken off the queue but
                # not acknowledged, so it is not known to be stored (InfluxDB may still
                # apply a request it received): counted unwritten too, once; the WAL keeps it
                self._abandoned = True
                self.unwritten_lines += self._queued_lines
        return self.unwritten_lines

    def _run(self) -> None:
        pending: list[Chunk] = []
        opened = last = time.monotonic()
        while True:
            try:
                chunk = self._queue.get(timeout=min(0.05, self.idle_flush_s))
                last = time.monotonic()
                if not pending:
                    opened = last
                pending.append(chunk)
                lines = sum(c.lines for c in pending)
                if lines < self.batch_lines and last - opened < self.flush_s:
                    continue
            except queue.Empty:
                if not pending:
                    if self._stop.is_set():
                        return
                    continue
                now = time.monotonic()
                if (now - opened < self.flush_s and now - last < self.idle_flush_s
                        and not self._stop.is_set()):
                    continue
            self._write(pending)
            self._release(sum(c.lines for c in pending))
            pending = []

    def _write(self, chunks: list[Chunk]) -> None:
        """Store the chunks (in several requests if over ``MAX_BODY_BYTES``), then advance
        ``durable_ticket`` past them."""
        stored = True
        for body, by_kind in request_bodies(chunks):
            outcome = self._write_body(body, by_kind)
            if outcome is None:  # gave up at shutdown: counted in unwritten_lines
                return
            stored &= outcome
        self.durable_ticket = chunks[-1].ticket
        if self.on_durable is not None:
            self.on_durable(self.durable_ticket, stored)

    def _write_body(self, body: bytes, by_kind: dict[str, int]) -> bool | None:
        """One request, retried until stored (True) or rejected (False: counted, kept in
        ``failed_batches``); None: given up at shutdown (counted in ``unwritten_lines``)."""
        delay = 0.1
        attempt = 0
        while True:
            attempt += 1
            t0 = time.perf_counter()
            try:
                self.sink.write(body)
            except WriteError as exc:
                self.counters.inc_label("write_errors", str(exc.status or "connection"))
                if not exc.retryable:
                    log.error("InfluxDB rejected a batch of %d lines: %s", sum(by_kind.values()),
                              exc)
                    for kind, n in by_kind.items():
                        self.counters.inc_label("write_rejected_lines", kind, n)
                    self.failed_batches.append((str(exc), body))
                    return False
                if time.monotonic() > self._deadline:
                    with self._give_up:
                        if not self._abandoned:  # else stop() counted it already
                            self.unwritten_lines += sum(by_kind.values())
                    log.error("gave up writing %d lines at shutdown: %s",
                              sum(by_kind.values()), exc)
                    return None
                wait = exc.retry_after if exc.retry_after is not None else delay
                log.warning("write attempt %d failed (%s); retrying in %.1f s", attempt, exc, wait)
                time.sleep(min(wait, 5.0))
                delay = min(delay * 2, 5.0)
                continue
            elapsed = time.perf_counter() - t0
            self.counters.inc("write_batches")
            self.counters.inc("write_bytes", len(body))
            self.counters.inc("write_us_total", int(elapsed * 1e6))
            for kind, n in by_kind.items():
                self.counters.inc(f"stored_{kind}", n)
            log.debug("wrote %d lines (%d bytes) in %.1f ms", sum(by_kind.values()), len(body),
                      elapsed * 1e3)
            return True
