"""The edge's store-and-forward spool: everything bound for the hub goes through disk.

Frames, dead letters, lifecycle events and local alarms are appended to a ``DurableLog``
by the processing thread (``put``), made durable by ``commit`` (which also persists the
edge's counters and frame counters), and only then are the device messages they came from
acknowledged to the broker. A publisher thread (``SpoolPublisher``) tails the log and
publishes at QoS 1 with a bounded number in flight; the ``sent`` cursor advances over what
the broker acknowledged. While the uplink is down the log simply grows; after a restart the
publisher resumes at the cursor, in order.

Bounded: ``max_bytes``. When full, ``full_policy`` decides: ``drop_oldest`` (default) deletes
the oldest segment and counts every reading and record in it (``spool_dropped_readings``,
``spool_dropped_records``); ``block`` stops taking device messages until the publisher made
room (``spool_full_waits``), so the broker holds them instead.

Frame identity: ``frame_seq`` = epoch (high 32 bits: random, chosen when the spool is created)
| counter (low 32 bits: per district, persisted). The hub de-duplicates re-sent frames by it;
a wiped spool gets a new epoch, so its frames are never mistaken for old ones.

On disk (``directory``): ``log/`` (segments, ``sent.cursor``), ``state.json`` (epoch, frame
counters, counters), ``dedup.bin`` (the de-duplication window as of a journal offset) and
``dedup-journal/`` (the (device, seq) of every message committed since, written by each
commit, stamped with the spool offset that commit reaches): replayed into the window at
start, so a message acknowledged before a crash is still a duplicate after it — and one whose
frames the crash cut is not. The journal is separate so the spool can be trimmed or shed
independently of it.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import struct
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from citybrain.dedup import Deduplicator
from citybrain.durable_log import DurableLog, LogFull, pack_message, unpack_message
from citybrain.stats import Counters

log = logging.getLogger("citybrain.edge.spool")

FULL_POLICIES = ("drop_oldest", "block")
_DEDUP_HEAD = struct.Struct("<QH")  # highest seq, device-id length


class EdgeSpool:
    """Owned by the edge's processing thread, except ``log`` readers and ``in_flight``."""

    def __init__(self, directory: Path, counters: Counters, *,
                 max_bytes: int = 256 * 1024**2, segment_bytes: int | None = None,
                 fsync: bool = True, full_policy: str = "drop_oldest") -> None:
        if full_policy not in FULL_POLICIES:
            raise ValueError(f"spool full policy must be one of {FULL_POLICIES}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        if max_bytes < 64 * 1024:
            raise ValueError("the spool needs at least 64 KiB")
        # Several segments, so that dropping the oldest one always makes room.
        seg = segment_bytes or max(8 * 1024, min(16 * 1024**2, max_bytes // 8))
        self.log = DurableLog(self.dir / "log", segment_bytes=seg, max_bytes=max_bytes,
                              fsync=fsync)
        self.journal = DurableLog(self.dir / "dedup-journal", segment_bytes=1024**2,
                                  max_bytes=1024**3, fsync=fsync)
        self.counters = counters
        self.full_policy = full_policy
        self._state_path = self.dir / "state.json"
        self._dedup_path = self.dir / "dedup.bin"
        state = self._load_state()
        self.epoch: int = int(state.get("epoch") or secrets.randbits(32) or 1)
        self.frame_counters: dict[str, int] = {
            str(k): int(v) for k, v in state.get("frame_counters", {}).items()}
        self.saved_counters: dict[str, Any] = state.get("counters", {})
        #: Records below this offset were acknowledged by the broker (set by the publisher).
        self.acked_through = 0
        self.stop_waiting = threading.Event()  # set by the owner to end a "block" wait
        # offset -> readings of records the publisher handed to paho (publisher thread)
        self.in_flight: dict[int, int] = {}
        self.in_flight_lock = threading.Lock()

    # -- persistence ------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        try:
            doc = orjson.loads(self._state_path.read_bytes())
            return doc if isinstance(doc, dict) else {}
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError:
            log.warning("unreadable %s: new epoch, counters start again", self._state_path)
            return {}

    def _save_state(self, counters: dict[str, Any]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"epoch": self.epoch, "frame_counters": self.frame_counters,
                                      "counters": counters}))
        os.replace(tmp, self._state_path)

    def next_frame_seq(self, district: str) -> int:
        """The frame_seq for district's next frame (epoch | counter); advances the counter."""
        n = self.frame_counters.get(district, 0)
        if n >= 2**32:  # a counter wrap: a fresh epoch keeps frame ids unique
            self.epoch = secrets.randbits(32) or 1
            self.frame_counters = {}
            n = 0
        self.frame_counters[district] = n + 1
        return (self.epoch << 32) | n

    # -- writing (processing thread) --------------------------------------------------------
    def put(self, topic: str, payload: bytes, readings: int = 0) -> None:
        """Append one outbound message; durable at the next ``commit``."""
        record = pack_message(topic, payload)
        while True:
            try:
                self.log.append(record, readings)
                return
            except LogFull:
                if self.full_policy == "block" and not self.stop_waiting.is_set():
                    self.log.commit()
                    self.counters.inc("spool_full_waits")
                    time.sleep(0.05)
                    continue
                self._drop_oldest()

    def _drop_oldest(self) -> None:
        self.log.commit()
        try:
            first, records, readings = self.log.drop_oldest(count_from=self.acked_through)
        except LogFull:  # only the active segment: it is the record itself that cannot fit
            raise ValueError("a record larger than the spool's segment room") from None
        end = self.log.first_offset
        with self.in_flight_lock:  # handed to paho already: it will still deliver those
            kept = sum(n for off, n in self.in_flight.items() if first <= off < end)
            kept_records = sum(1 for off in self.in_flight if first <= off < end)
        self.counters.inc("spool_dropped_readings", readings - kept)
        self.counters.inc("spool_dropped_records", records - kept_records)
        log.warning("spool full: dropped %d records (%d readings) from offset %d",
                    records - kept_records, readings - kept, first)

    def commit(self, counters: dict[str, Any],
               seen: list[tuple[str, int]] | None = None) -> None:
        """Make everything put so far durable, with the counters that describe it and the
        (device, seq) of the messages it came from (the de-duplication journal)."""
        if seen:
            # Stamped with the spool offset the commit reaches: if the process dies after
            # the journal's fsync and before the spool's, recovery cuts these frames, and
            # the stamp tells load_dedup to forget their (device, seq) too -- otherwise the
            # broker's re-delivery of those messages would be taken for duplicates and their
            # readings lost.
            self.journal.append(orjson.dumps({"upto": self.log.next_offset, "seen": seen}))
            self.journal.commit()
        # The frame counters go to disk before the frames: a crash after the spool's fsync
        # and before the state's would restart the counters below frames that survived,
        # and the hub would drop the next frames as duplicates of those (seen once in the
        # edge-killed fault test: 38 frames, one per district). The other way round, a
        # crash only skips the ids of frames recovery cuts.
        self._save_state(self.saved_counters)
        self.log.commit()
        self._save_state(counters)
        self.saved_counters = counters

    def save_dedup(self, dedup: Deduplicator) -> None:
        """Write the de-duplication window; it must cover exactly what was committed (the
        owner commits first), then forget the journal before it."""
        offset = self.journal.committed_offset
        tmp = self._dedup_path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(struct.pack("<QI", offset, len(dedup)))
            for device, (high, mask) in dedup.items():
                d = device.encode()
                f.write(_DEDUP_HEAD.pack(high, len(d)))
                f.write(d)
                f.write(mask.to_bytes(dedup.window // 8, "little"))
        os.replace(tmp, self._dedup_path)
        self.journal.trim(offset)

    def load_dedup(self, dedup: Deduplicator) -> int:
        """Restore the window, then replay the journal after it. Returns how many commits'
        worth of (device, seq) were replayed."""
        offset = 0
        try:
            data = self._dedup_path.read_bytes()
            offset, n = struct.unpack_from("<QI", data)
            pos = 12
            width = dedup.window // 8
            for _ in range(n):
                high, dlen = _DEDUP_HEAD.unpack_from(data, pos)
                pos += _DEDUP_HEAD.size
                device = data[pos:pos + dlen].decode()
                pos += dlen
                dedup.restore(device, high, int.from_bytes(data[pos:pos + width], "little"))
                pos += width
        except FileNotFoundError:
            pass
        except (struct.error, UnicodeDecodeError):
            log.warning("unreadable %s: rebuilding de-duplication from the journal only",
                        self._dedup_path)
            offset = 0
        replayed = 0
        committed = self.log.committed_offset
        for rec in self.journal.reader(max(offset, self.journal.first_offset)):
            try:
                doc = orjson.loads(rec.payload)
                if isinstance(doc, dict):
                    if int(doc["upto"]) > committed:  # its frames did not survive the crash
                        self.counters.inc("dedup_journal_uncommitted")
                        continue
                    pairs = doc["seen"]
                else:  # written before the stamp existed
                    pairs = doc
                for device, seq in pairs:
                    dedup.check(str(device), int(seq))
            except (orjson.JSONDecodeError, TypeError, ValueError, KeyError):
                log.warning("unreadable de-duplication journal record %d", rec.offset)
                continue
            replayed += 1
        return replayed


class SpoolPublisher:
    """Tails the spool and publishes at QoS 1; advances the ``sent`` cursor on PUBACK.

    paho re-sends in-flight messages itself after a reconnect, so the publisher only keeps
    the window bounded and the cursor right. Use ``on_publish`` as the client's callback.
    """

    def __init__(self, spool: EdgeSpool, client: mqtt.Client, counters: Counters, *,
                 max_in_flight: int = 64) -> None:
        self.spool = spool
        self.client = client
        self.counters = counters
        self.max_in_flight = max_in_flight
        # Never beyond the log's end: a tail cut at recovery hands its offsets out again.
        self.cursor = min(spool.log.load_cursor("sent", spool.log.first_offset),
                          spool.log.committed_offset)
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._by_mid: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-uplink", daemon=True)
        self._saved = self.cursor

    def on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: object = None,
                   props: object = None) -> None:
        self._acks.put(mid)

    def start(self) -> None:
        self._thread.start()

    @property
    def backlog(self) -> int:
        """Records spooled and not yet acknowledged by the broker."""
        return max(0, self.spool.log.committed_offset - self.cursor)

    def drain(self, timeout_s: float) -> int:
        """Publish what is spooled (bounded wait), stop; returns records left in the spool."""
        deadline = time.monotonic() + timeout_s
        while self.backlog and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.02)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        else:
            self._save_cursor()
        return self.backlog

    def _run(self) -> None:
        reader = self.spool.log.reader(self.cursor)
        last_advance = 0.0
        while not self._stop.is_set():
            self._take_acks()
            now = time.monotonic()
            if now - last_advance >= 0.2:
                self._advance(reader.next_offset)
                last_advance = now
            room = self.max_in_flight - len(self.spool.in_flight)
            if room <= 0 or not self.client.is_connected():
                time.sleep(0.01)
                continue
            records = reader.read(room, timeout_s=0.05)
            if reader.skipped:
                self.counters.inc("spool_skipped_records", reader.skipped)
                reader.skipped = 0
            for rec in records:
                topic, payload = unpack_message(rec.payload)
                info = self.client.publish(topic, payload, qos=1)
                with self.spool.in_flight_lock:
                    self.spool.in_flight[rec.offset] = rec.meta
                self._by_mid[info.mid] = rec.offset
                self.counters.inc("uplink_published")
        self._take_acks()
        self._advance(reader.next_offset)
        reader.close()

    def _take_acks(self) -> None:
        acked = 0
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            offset = self._by_mid.pop(mid, None)
            if offset is None:
                continue
            with self.spool.in_flight_lock:
                readings = self.spool.in_flight.pop(offset, 0)
            acked += 1
            self.counters.inc("uplink_acked_readings", readings)
        if acked:
            self.counters.inc("uplink_acked", acked)

    def _advance(self, reader_next: int) -> None:
        """Cursor = the oldest record still in flight, or where the reader is."""
        with self.spool.in_flight_lock:
            self.cursor = min(self.spool.in_flight, default=reader_next)
        if self.cursor != self._saved:
            self._save_cursor()

    def _save_cursor(self) -> None:
        with self.spool.in_flight_lock:
            cursor = min(self.spool.in_flight, default=self.cursor)
        self.spool.log.save_cursor("sent", cursor)
        self._saved = self.cursor = self.spool.acked_through = cursor
        self.spool.log.trim(cursor)
