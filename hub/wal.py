"""The hub's write-ahead log: frames are durable on local disk before the broker forgets them.

Data path and contracts:
  * paho's network thread calls ``offer(mid, qos, topic, payload)``, which only enqueues
    (bounded: a full queue blocks the network thread, i.e. TCP backpressure to the broker).
    After ``close_intake()`` offers are ignored and *not* acknowledged, so the broker keeps
    them in the hub's persistent session and re-delivers them to the next run.
  * the WAL thread appends queued messages to the ``DurableLog`` in groups, ``fsync``s once
    per group, and only then acknowledges each message to the broker (``ack(mid, qos)``;
    the client runs with paho's manual acknowledgement). A full log (``max_bytes``) stops
    the thread from taking more (counted in ``wal_full_waits``): the broker holds the rest.
  * the processing thread reads the log with ``reader()``, from the oldest record kept on;
    InfluxDB being down only makes it fall behind, the log grows and drains afterwards.

What may be forgotten (``settle``): a record is kept until (1) every line rendered from it
is stored — tracked with the writer's tickets (``mark_processed``) — and (2) every window
its readings fall in has been finally emitted *and* stored at every resolution
(``mark_final``, and the per-block maximum reading time from ``note_readings``). So after a
crash, replaying the kept records rebuilds every window that is not yet final in InfluxDB.
The ``Checkpoint`` (persisted with an atomic rename) tells the replay what is already
stored: raw lines of records below ``durable_offset`` and windows ending at or before
``final_through[label]`` are not written again, so a replay never overwrites a complete
aggregate with a partial one. Re-delivered frames are recognised by the hub's frame
de-duplication, so they add nothing twice.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from citybrain.durable_log import DurableLog, LogReader, pack_message
from citybrain.stats import Counters

log = logging.getLogger("citybrain.hub.wal")

CHECKPOINT = "checkpoint.json"
#: Records per retention block: the unit in which the WAL remembers reading times.
BLOCK_RECORDS = 256


@dataclass
class Checkpoint:
    """What InfluxDB is known to hold: raw lines of WAL records below ``durable_offset``,
    and every window of a resolution that ends at or before ``final_through[label]`` (ns)."""

    durable_offset: int = 0
    final_through: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            doc = orjson.loads(path.read_bytes())
            return cls(int(doc["durable_offset"]),
                       {str(k): int(v) for k, v in doc["final_through"].items()})
        except FileNotFoundError:
            return cls()
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.warning("unreadable WAL checkpoint %s: replaying everything kept", path)
            return cls()

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"durable_offset": self.durable_offset,
                                      "final_through": self.final_through}))
        os.replace(tmp, path)


class HubWal:
    def __init__(self, directory: Path, counters: Counters, ack: Callable[[int, int], object],
                 *, max_bytes: int = 2 * 1024**3, segment_bytes: int = 16 * 1024**2,
                 fsync: bool = True, ingress_size: int = 10_000,
                 window_ns: dict[str, int] | None = None) -> None:
        self.log = DurableLog(directory, segment_bytes=segment_bytes, max_bytes=max_bytes,
                              fsync=fsync)
        if self.log.recovered_torn_bytes:
            counters.inc("wal_torn_bytes_recovered", self.log.recovered_torn_bytes)
            log.warning("WAL %s: cut a torn tail of %d bytes (crash during a write)",
                        directory, self.log.recovered_torn_bytes)
        self.counters = counters
        self._ack = ack
        self.window_ns = dict(window_ns or {})
        self._ckpt_path = Path(directory) / CHECKPOINT
        self.checkpoint = Checkpoint.load(self._ckpt_path)
        if self.checkpoint.durable_offset > self.log.committed_offset:
            # Records the checkpoint counts as stored are gone (a torn or corrupt tail cut at
            # recovery): their offsets are handed out again, to new records that must be
            # stored, not skipped as already stored.
            log.warning("WAL %s: checkpoint covers records up to %d, the log ends at %d",
                        directory, self.checkpoint.durable_offset, self.log.committed_offset)
            self.checkpoint.durable_offset = self.log.committed_offset
        #: Records below this offset were logged by an earlier run: processing them is a replay.
        self.replay_until = self.log.committed_offset
        self._ingress: queue.Queue[tuple[int, int, str, bytes]] = queue.Queue(ingress_size)
        self._intake_open = True
        #: The WAL thread stopped on a write failure (the process should exit).
        self.failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-wal", daemon=True)
        # processing-side bookkeeping (processing thread only)
        self._marks: deque[tuple[int, str, int]] = deque()  # (ticket, label or "", value)
        self._blocks: deque[list[int]] = deque()  # [first offset, max reading ns]
        self._dirty = False
        self._last_save = 0.0
        # close() and settle() exclude each other: after close() returns, this process never
        # writes the checkpoint or trims the log again (a processing thread the hub's stop
        # gave up on may still call settle, while another node already owns the directory)
        self._settle_lock = threading.Lock()
        self._closed = False

    # -- network thread ---------------------------------------------------------------------
    def offer(self, mid: int, qos: int, topic: str, payload: bytes) -> None:
        if self._intake_open:
            self._ingress.put((mid, qos, topic, payload))

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close_intake(self, timeout_s: float) -> None:
        """Stop taking messages; log and acknowledge what was taken (bounded wait)."""
        self._intake_open = False
        self._stop.set()
        if self._thread.ident is not None:  # started (a failed start stops it too)
            self._thread.join(timeout_s)

    def close(self) -> None:
        """Close the log; from then on ``settle`` does nothing (see ``__init__``)."""
        with self._settle_lock:
            self._closed = True
            self.log.close()

    @property
    def logging_done(self) -> bool:
        return self._stop.is_set() and not self._thread.is_alive()

    # -- WAL thread -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except (OSError, ValueError) as exc:
            # The disk refuses writes: stop taking frames. Nothing un-logged was
            # acknowledged, so the broker keeps it; the process exits non-zero (``failed``).
            log.critical("WAL write failed (%s): intake stopped, unacknowledged frames stay "
                         "with the broker", exc)
            self.counters.inc("wal_failures")
            self._intake_open = False
            self.failed = True

    def _loop(self) -> None:
        while True:
            try:
                first = self._ingress.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            group = [first]
            while len(group) < 512:
                try:
                    group.append(self._ingress.get_nowait())
                except queue.Empty:
                    break
            self._log_group(group)

    def _log_group(self, group: list[tuple[int, int, str, bytes]]) -> None:
        nbytes = 0
        for _mid, _qos, topic, payload in group:
            record = pack_message(topic, payload)
            while not self.log.has_room(len(record)):
                # Full: stop taking more; the broker keeps the rest in our session.
                self.log.commit()
                self.counters.inc("wal_full_waits")
                time.sleep(0.1)
            self.log.append(record)
            nbytes += len(record)
        self.log.commit()
        self.counters.inc("wal_records", len(group))
        self.counters.inc("wal_bytes", nbytes)
        for mid, qos, _topic, _payload in group:
            if qos > 0:
                self._ack(mid, qos)

    # -- processing thread ------------------------------------------------------------------
    def reader(self) -> LogReader:
        """A reader from the oldest record kept: the replay, then live records."""
        return self.log.reader(self.log.first_offset)

    def note_readings(self, offset: int, max_ts_ns: int | None) -> None:
        """Remember the latest reading time aggregated from record ``offset``."""
        if not self._blocks or offset - self._blocks[-1][0] >= BLOCK_RECORDS:
            self._blocks.append([offset, -(2**62)])
        if max_ts_ns is not None and max_ts_ns > self._blocks[-1][1]:
            self._blocks[-1][1] = max_ts_ns

    def mark_processed(self, next_offset: int, ticket: int) -> None:
        """Every output of records below ``next_offset`` was submitted up to ``ticket``."""
        self._marks.append((ticket, "", next_offset))

    def mark_final(self, label: str, end_ns: int, ticket: int) -> None:
        """Windows of ``label`` ending at or before ``end_ns`` were finally emitted."""
        self._marks.append((ticket, label, end_ns))

    def settle(self, durable_ticket: int, force_save: bool = False) -> None:
        """Apply what the writer has stored; persist the checkpoint (≤ 1/s); trim the log.
        Nothing once ``close`` has begun."""
        with self._settle_lock:
            if not self._closed:
                self._settle(durable_ticket, force_save)

    def _settle(self, durable_ticket: int, force_save: bool) -> None:
        ck = self.checkpoint
        while self._marks and self._marks[0][0] <= durable_ticket:
            _, label, value = self._marks.popleft()
            if label:
                if value > ck.final_through.get(label, -(2**62)):
                    ck.final_through[label] = value
            elif value > ck.durable_offset:
                ck.durable_offset = value
            self._dirty = True
        now = time.monotonic()
        if self._dirty and (force_save or now - self._last_save >= 1.0):
            ck.save(self._ckpt_path)
            self._dirty = False
            self._last_save = now
            self._trim()

    def _trim(self) -> None:
        ck = self.checkpoint
        keep_from: int | None = None
        while self._blocks:
            first, max_ts = self._blocks[0]
            nxt = self._blocks[1][0] if len(self._blocks) > 1 else None
            if nxt is None or nxt > ck.durable_offset or not self._windows_final(max_ts):
                keep_from = first
                break
            self._blocks.popleft()
        if keep_from is None:
            return
        removed = self.log.trim(keep_from)
        if removed:
            self.counters.inc("wal_segments_trimmed", removed)

    def _windows_final(self, max_ts_ns: int) -> bool:
        """True if every window holding a reading at or before ``max_ts_ns`` is final and
        stored, at every resolution."""
        if max_ts_ns <= -(2**62):  # no readings aggregated from this block
            return True
        for label, w in self.window_ns.items():
            end = (max_ts_ns // w) * w + w
            if self.checkpoint.final_through.get(label, -(2**62)) < end:
                return False
        return True

    def stats(self, processed_offset: int) -> dict[str, int]:
        return {"wal_size_bytes": self.log.size_bytes,
                "wal_backlog_records": max(0, self.log.committed_offset - processed_offset),
                "wal_first_offset": self.log.first_offset,
                "wal_durable_offset": self.checkpoint.durable_offset,
                "ingress_depth": self._ingress.qsize()}
