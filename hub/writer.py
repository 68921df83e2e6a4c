"""The hub's InfluxDB writer: batches rendered line protocol and stores it with retries.

Contract: ``submit(kind, body, lines)`` never blocks for long (the queue is bounded: it
blocks the processing thread when InfluxDB falls far behind, which pushes back to the broker
instead of growing memory). One writer thread concatenates chunks into batches of about
``batch_lines`` lines or ``flush_s`` seconds, whichever comes first, and writes each batch
until it is stored: retryable errors back off (honouring Retry-After) and try again; a
rejected batch (HTTP 400) is counted, logged with the server's message, and kept in
``failed_batches`` — never dropped silently.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from citybrain.stats import Counters
from hub.sinks import InfluxSink, WriteError

log = logging.getLogger("citybrain.writer")


@dataclass(frozen=True, slots=True)
class Chunk:
    kind: str  # "raw" | "agg"
    body: bytes
    lines: int


class InfluxWriter:
    def __init__(self, sink: InfluxSink, counters: Counters, *, batch_lines: int = 10_000,
                 flush_s: float = 0.5, queue_chunks: int = 2048) -> None:
        self.sink = sink
        self.counters = counters
        self.batch_lines = batch_lines
        self.flush_s = flush_s
        self._queue: queue.Queue[Chunk] = queue.Queue(queue_chunks)
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name="influx-writer", daemon=True)
        self.failed_batches: list[tuple[str, bytes]] = []
        self.unwritten_lines = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, kind: str, body: bytes, lines: int) -> None:
        if lines:
            self._queue.put(Chunk(kind, body, lines))

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout_s: float) -> int:
        """Write everything queued, giving up after ``timeout_s``; returns lines not stored."""
        self._deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._thread.join(timeout=timeout_s + 5)
        while True:  # whatever the thread could not take is counted, not forgotten
            try:
                self.unwritten_lines += self._queue.get_nowait().lines
            except queue.Empty:
                break
        return self.unwritten_lines

    def _run(self) -> None:
        pending: list[Chunk] = []
        opened = time.monotonic()
        while True:
            try:
                chunk = self._queue.get(timeout=0.05)
                if not pending:
                    opened = time.monotonic()
                pending.append(chunk)
                lines = sum(c.lines for c in pending)
                if lines < self.batch_lines and time.monotonic() - opened < self.flush_s:
                    continue
            except queue.Empty:
                if not pending:
                    if self._stop.is_set():
                        return
                    continue
                if time.monotonic() - opened < self.flush_s and not self._stop.is_set():
                    continue
            self._write(pending)
            pending = []

    def _write(self, chunks: list[Chunk]) -> None:
        body = b"".join(c.body for c in chunks)
        by_kind: dict[str, int] = {}
        for c in chunks:
            by_kind[c.kind] = by_kind.get(c.kind, 0) + c.lines
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
                    return
                if time.monotonic() > self._deadline:
                    self.unwritten_lines += sum(by_kind.values())
                    log.error("gave up writing %d lines at shutdown: %s",
                              sum(by_kind.values()), exc)
                    return
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
            return
