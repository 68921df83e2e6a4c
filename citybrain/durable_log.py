"""A segmented, append-only, crash-safe record log on local disk.

It is the edge's store-and-forward spool and the hub's write-ahead log. One writer thread
appends and commits; any number of readers tail it from their own offset.

Contract:
  * ``append(payload, meta)`` buffers a record and returns its offset (a dense, increasing
    record number that survives restarts). Nothing is visible or durable before ``commit()``.
  * ``commit()`` flushes, ``fsync``s (unless ``fsync=False``) and then makes every appended
    record visible to readers. Callers acknowledge upstream only after it returned: that is
    what makes the log "write-ahead".
  * ``trim(offset)`` deletes whole segments whose records all lie below ``offset``;
    ``drop_oldest()`` deletes the oldest segment regardless (the spool's overflow policy)
    and returns what it held so the caller can count it.
  * Opening a directory recovers it: segments are scanned, a torn or corrupt tail (a crash
    in the middle of a write) is cut off and its size reported in ``recovered_torn_bytes``.

On disk: ``{first_offset:020d}.seg`` files. Each record is a 24-byte header
(``length u32, crc32 u32, offset u64, meta u32, flags u32``, little-endian) followed by
``length`` payload bytes; the CRC covers offset, meta and payload. ``meta`` is the caller's
(e.g. how many readings a frame carries, so that dropping a segment can be counted). Every
``commit()`` ends with a *commit marker* (flags 1, no payload, offset = the next record's)
before the fsync; recovery keeps only records followed by a marker, so records a crashed
process had appended (and its buffered writer had already passed to the OS) but never
committed — and so never acknowledged upstream — do not come back to life.

Small named cursors (``save_cursor``/``load_cursor``) remember how far a consumer got; they
are replaced atomically (write + rename), so a crash leaves the old or the new value.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

RECORD_HEADER = struct.Struct("<IIQII")
HEADER_LEN = RECORD_HEADER.size  # 24
#: Refuse to read records bigger than this: a corrupt length must not allocate gigabytes.
MAX_RECORD_BYTES = 256 * 1024 * 1024
SUFFIX = ".seg"

assert HEADER_LEN == 24


class LogFull(Exception):
    """``append`` would exceed ``max_bytes``; the caller decides: drop oldest or wait."""


FLAG_COMMIT = 1
_MARKER_META = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    meta: int
    payload: bytes
    marker: bool = False  # a commit marker, not data: readers skip it


def _crc(offset: int, meta: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<QI", offset, meta)))


def _segment_name(first_offset: int) -> str:
    return f"{first_offset:020d}{SUFFIX}"


def _read_record(f: BinaryIO) -> Record | None:
    """The next whole, intact record at the file position, or None (end, torn or corrupt)."""
    head = f.read(HEADER_LEN)
    if len(head) < HEADER_LEN:
        return None
    length, crc, offset, meta, _flags = RECORD_HEADER.unpack(head)
    if length > MAX_RECORD_BYTES:
        return None
    payload = f.read(length)
    if len(payload) < length or _crc(offset, meta, payload) != crc:
        return None
    if length == 0 and meta == _MARKER_META:  # a commit marker (flags is informational)
        return Record(offset, 0, b"", marker=True)
    return Record(offset, meta, payload)


def _marker(next_offset: int) -> bytes:
    return RECORD_HEADER.pack(0, _crc(next_offset, _MARKER_META, b""), next_offset,
                              _MARKER_META, FLAG_COMMIT)


def _scan(path: Path) -> tuple[int, int, int, int]:
    """Walk a segment: (records, meta sum, bytes up to the last commit marker, last offset
    or -1), counting only records a marker confirms."""
    n = meta_sum = good = 0
    last = -1
    pending_n = pending_meta = 0
    pending_last = -1
    with path.open("rb") as f:
        while (r := _read_record(f)) is not None:
            if r.marker:
                n, meta_sum, last = n + pending_n, meta_sum + pending_meta, max(last,
                                                                                 pending_last)
                pending_n = pending_meta = 0
                good = f.tell()
                continue
            pending_n += 1
            pending_meta += r.meta
            pending_last = r.offset
    return n, meta_sum, good, last


class DurableLog:
    """One writer; readers via ``reader()``. Thread-safe between the writer and readers."""

    def __init__(self, directory: Path, *, segment_bytes: int = 16 * 1024 * 1024,
                 max_bytes: int = 1024 * 1024 * 1024, fsync: bool = True) -> None:
        if segment_bytes <= HEADER_LEN or max_bytes < segment_bytes:
            raise ValueError("need header < segment_bytes <= max_bytes")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.recovered_torn_bytes = 0
        self._cond = threading.Condition()
        self._segments: list[tuple[int, Path]] = []  # (first offset, path), oldest first
        self._sizes: dict[Path, int] = {}
        self._recover()
        self._active: BinaryIO = self._segments[-1][1].open("ab")
        self._active_size = self._sizes[self._segments[-1][1]]
        self._next = self._committed = self._recovered_next

    # -- recovery ---------------------------------------------------------------------------
    def _recover(self) -> None:
        paths = sorted(self.dir.glob(f"*{SUFFIX}"))
        next_offset = 0
        for path in paths:
            first = int(path.stem)
            n, _, good, last = _scan(path)
            size = path.stat().st_size
            if good < size:  # uncommitted or torn: only the newest segment has one legitimately
                self.recovered_torn_bytes += size - good
                with path.open("r+b") as f:
                    f.truncate(good)
            if n == 0 and path is not paths[-1]:
                path.unlink()
                continue
            self._segments.append((first, path))
            self._sizes[path] = good
            next_offset = last + 1 if n else max(next_offset, first)
        if not self._segments:
            path = self.dir / _segment_name(next_offset)
            path.touch()
            self._segments.append((next_offset, path))
            self._sizes[path] = 0
        self._recovered_next = next_offset

    # -- writer side --------------------------------------------------------------------------
    @property
    def next_offset(self) -> int:
        """The offset the next ``append`` returns."""
        return self._next

    @property
    def committed_offset(self) -> int:
        """Records below this offset are durable and visible to readers."""
        return self._committed

    @property
    def first_offset(self) -> int:
        """The oldest offset still on disk."""
        with self._cond:
            return self._segments[0][0]

    @property
    def size_bytes(self) -> int:
        with self._cond:
            sealed = sum(self._sizes.values()) - self._sizes[self._segments[-1][1]]
            return sealed + self._active_size

    def has_room(self, payload_len: int) -> bool:
        return self.size_bytes + HEADER_LEN + payload_len <= self.max_bytes

    def append(self, payload: bytes, meta: int = 0) -> int:
        """Buffer one record; raises ``LogFull`` if it would exceed ``max_bytes``."""
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError(f"record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
        if not self.has_room(len(payload)):
            raise LogFull(f"log {self.dir} holds {self.size_bytes} of {self.max_bytes} bytes")
        if self._active_size >= self.segment_bytes:
            self._rotate()
        offset = self._next
        self._active.write(RECORD_HEADER.pack(len(payload), _crc(offset, meta, payload),
                                              offset, meta, 0))
        self._active.write(payload)
        self._active_size += HEADER_LEN + len(payload)
        self._next += 1
        return offset

    def commit(self) -> int:
        """Make every appended record durable and visible; returns the committed offset."""
        if self._committed == self._next:
            return self._committed
        self._active.write(_marker(self._next))
        self._active_size += HEADER_LEN
        self._active.flush()
        if self.fsync:
            os.fsync(self._active.fileno())
        with self._cond:
            self._sizes[self._segments[-1][1]] = self._active_size
            self._committed = self._next
            self._cond.notify_all()
        return self._committed

    def _rotate(self) -> None:
        self.commit()
        self._active.close()
        path = self.dir / _segment_name(self._next)
        self._active = path.open("ab")
        if self.fsync:  # the new file's directory entry must survive a power cut too
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        with self._cond:
            self._segments.append((self._next, path))
            self._sizes[path] = 0
        self._active_size = 0

    def trim(self, below_offset: int) -> int:
        """Delete segments whose records are all below ``below_offset``; returns how many."""
        removed = 0
        with self._cond:
            while len(self._segments) > 1 and self._segments[1][0] <= below_offset:
                _, path = self._segments.pop(0)
                self._sizes.pop(path, None)
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def drop_oldest(self, count_from: int = 0) -> tuple[int, int, int]:
        """Delete the oldest non-active segment: (first offset, records, meta sum) it held,
        counting only records at or after ``count_from`` (e.g. those not yet delivered).

        Raises ``LogFull`` if only the active segment is left (nothing can be dropped).
        """
        with self._cond:
            if len(self._segments) < 2:
                raise LogFull("only the active segment is left")
            first, path = self._segments.pop(0)
            self._sizes.pop(path, None)
        n = meta_sum = 0
        with path.open("rb") as f:
            while (r := _read_record(f)) is not None:
                if not r.marker and r.offset >= count_from:
                    n += 1
                    meta_sum += r.meta
        path.unlink(missing_ok=True)
        return first, n, meta_sum

    def close(self) -> None:
        self.commit()
        self._active.close()

    # -- cursors ----------------------------------------------------------------------------
    def save_cursor(self, name: str, offset: int) -> None:
        tmp = self.dir / f"{name}.cursor.tmp"
        tmp.write_text(str(int(offset)))
        os.replace(tmp, self.dir / f"{name}.cursor")

    def load_cursor(self, name: str, default: int = 0) -> int:
        try:
            return int((self.dir / f"{name}.cursor").read_text().strip())
        except (FileNotFoundError, ValueError):
            return default

    # -- reader side --------------------------------------------------------------------------
    def reader(self, start_offset: int) -> LogReader:
        return LogReader(self, start_offset)

    def _segment_for(self, offset: int) -> tuple[int, Path] | None:
        """The segment holding ``offset`` (or the oldest one, if it was trimmed away)."""
        with self._cond:
            best = self._segments[0]
            for seg in self._segments:
                if seg[0] <= offset:
                    best = seg
                else:
                    break
            return best

    def _wait_committed(self, offset: int, timeout_s: float) -> bool:
        with self._cond:
            if self._committed > offset:
                return True
            self._cond.wait(timeout_s)
            return self._committed > offset


class LogReader:
    """Tails a ``DurableLog`` from an offset, crossing segments; one thread per reader.

    ``skipped`` counts records the reader never saw because they were dropped or trimmed
    before it got to them (the spool's drop-oldest policy).
    """

    def __init__(self, log: DurableLog, start_offset: int) -> None:
        self.log = log
        self.next_offset = start_offset
        self.skipped = 0
        self._seg_first = -1
        self._file: BinaryIO | None = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def seek(self, offset: int) -> None:
        """Read from ``offset`` on (e.g. re-send everything unacknowledged)."""
        self.close()
        self.next_offset = offset

    def _open_at(self, offset: int) -> None:
        self.close()
        seg = self.log._segment_for(offset)
        if seg is None:
            return
        first, path = seg
        if first > offset:  # what we wanted was dropped: carry on from the oldest left
            self.skipped += first - offset
            self.next_offset = offset = first
        try:
            self._file = path.open("rb")
        except FileNotFoundError:  # trimmed between lookup and open; look again next time
            return
        self._seg_first = first
        pos = 0
        while True:  # skip to the wanted record (scans headers only)
            head = self._file.read(HEADER_LEN)
            if len(head) < HEADER_LEN:
                break
            length, _, rec_offset, _, _ = RECORD_HEADER.unpack(head)
            if rec_offset >= offset:
                break
            pos += HEADER_LEN + length
            self._file.seek(pos)
        self._file.seek(pos)

    def read(self, max_records: int = 256, timeout_s: float = 0.0) -> list[Record]:
        """Up to ``max_records`` committed records from ``next_offset`` on; waits up to
        ``timeout_s`` for the first one. Returns [] if there is nothing yet."""
        if not self.log._wait_committed(self.next_offset, timeout_s):
            return []
        out: list[Record] = []
        committed = self.log.committed_offset
        if self._file is not None and self._seg_first < self.log.first_offset:
            self._open_at(self.next_offset)  # our segment was dropped under us
        while len(out) < max_records and self.next_offset < committed:
            if self._file is None:
                self._open_at(self.next_offset)
                if self._file is None:
                    break
            pos = self._file.tell()
            rec = _read_record(self._file)
            if rec is not None and rec.marker:
                continue
            if rec is not None and rec.offset == self.next_offset:
                out.append(rec)
                self.next_offset += 1
                continue
            # The end of this segment: the wanted record is in a newer one (or was dropped).
            seg = self.log._segment_for(self.next_offset)
            if seg is None or seg[0] == self._seg_first:
                self._file.seek(pos)
                break
            self._open_at(self.next_offset)
        return out

    def __iter__(self) -> Iterator[Record]:
        """Every committed record from ``next_offset`` to the current end (no waiting)."""
        while batch := self.read(1024):
            yield from batch


def pack_message(topic: str, payload: bytes) -> bytes:
    """An MQTT message as one log record: u16 topic length, topic (UTF-8), payload."""
    t = topic.encode()
    return struct.pack("<H", len(t)) + t + payload


def unpack_message(record: bytes) -> tuple[str, bytes]:
    (n,) = struct.unpack_from("<H", record)
    return record[2:2 + n].decode(), record[2 + n:]
