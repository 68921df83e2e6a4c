"""Accumulate validated readings of one district and seal them into frames.

A message's readings share its device, sequence number and time, so those are kept once
per *message* (plain lists: an ``array`` append parses its argument, several times the cost
of ``list.append``) and only the value and measurement-name code once per *reading*
(``array`` columns: C storage, no Python object per reading); a message's name codes come from a
per-frame table keyed by its tuple of names (a device sends the same names message after
message). Sealing expands the per-message columns to one entry per reading
(``numpy.repeat``) and hands the columns to ``citybrain.frame.encode_frame`` in one go.
Appending a message is a handful of array appends whatever its size; the frame is the same
as one built reading by reading.
"""

from __future__ import annotations

import time
from array import array

import numpy as np

from citybrain.frame import encode_frame

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_U32_MAX = 2**32 - 1


class FrameBuilder:
    """Columns of pending readings for one district. Owned by one thread.

    Tables: devices are numbered in order of first appearance in the frame (with the
    system given the first time), measurement names likewise; readings stay in the order
    they were added."""

    def __init__(self, district: str, *, max_readings: int = 5000, max_delay_s: float = 0.5,
                 compress: bool = True) -> None:
        self.district = district
        self.max_readings = max_readings
        self.max_delay_s = max_delay_s
        self.compress = compress
        self.next_seq = 0
        self._reset()

    def _reset(self) -> None:
        self._devices: dict[str, int] = {}
        self._systems: list[str] = []
        #: Readings pending (``len(builder)``; an attribute for the edge's hot path).
        self.pending = 0
        # One entry per message (ranges checked on add: int64, uint32):
        self._ts: list[int] = []  # device time, ns since the epoch
        self._seq: list[int] = []
        self._device: list[int] = []  # index into the device table
        self._count: list[int] = []  # its readings (≥ 1)
        # One entry per reading:
        self._value = array("d")
        self._name = array("H")  # index into the name table
        self._names: dict[str, int] = {}  # the name table: name -> index
        self._name_runs: dict[tuple[str, ...], array[int]] = {}  # names -> their indexes
        self._opened = 0.0

    def __len__(self) -> int:
        """Readings pending."""
        return self.pending

    def add(self, device: str, system: str, seq: int, t_s: float, name: str,
            value: float) -> None:
        """Append one reading; ``t_s`` is device time in seconds since the epoch."""
        self.add_many(device, system, seq, t_s, [name], [value])

    def add_many(self, device: str, system: str, seq: int, t_s: float, names: list[str],
                 values: list[float]) -> None:
        """Append one message's readings (one device, seq and time ``t_s``, s since the
        epoch): the same frame as ``add`` for each ``(names[i], values[i])``.

        Raises ValueError if the lengths differ, OverflowError if ``seq`` is outside
        0..2**32-1 or the time outside int64 ns, TypeError if a value is not a number;
        then nothing was appended."""
        n = len(names)
        if len(values) != n:
            raise ValueError(f"{n} names but {len(values)} values")
        if not n:
            return
        # Round to whole microseconds, then scale: keeps ns timestamps stable across resends.
        ts = round(t_s * 1e6) * 1000
        if not (_I64_MIN <= ts <= _I64_MAX and 0 <= seq <= _U32_MAX):
            raise OverflowError(f"seq {seq} or time {t_s} s out of the frame's range")
        try:
            self._value.extend(values)  # the one fallible append: a value not a number
        except TypeError:
            del self._value[len(self._name):]
            raise
        self._ts.append(ts)
        self._seq.append(seq)
        key = tuple(names)
        codes = self._name_runs.get(key)
        if codes is None:  # names new to this frame get the next indexes, in order
            table = self._names
            codes = self._name_runs[key] = array(
                "H", [table.setdefault(name, len(table)) for name in names])
        d = self._devices.get(device)
        if d is None:
            d = self._devices[device] = len(self._devices)
            self._systems.append(system)
        if not self.pending:
            self._opened = time.monotonic()
        self.pending += n
        self._device.append(d)
        self._count.append(n)
        self._name.extend(codes)

    def due(self, now_monotonic: float) -> bool:
        """True when the pending readings should be sealed (full, or old enough)."""
        n = self.pending
        return n >= self.max_readings or (n > 0 and now_monotonic - self._opened
                                          >= self.max_delay_s)

    def seal(self, frame_seq: int | None = None) -> tuple[bytes, int, int]:
        """Encode pending readings into a frame; returns ``(frame, frame_seq, n_readings)``.

        ``frame_seq``: the id to give the frame (the edge's spool hands out epoch | counter);
        by default this builder's own counter."""
        n = self.pending
        if frame_seq is None:
            frame_seq = self.next_seq
        counts = np.array(self._count, dtype=np.intp)
        frame = encode_frame(
            self.district, frame_seq, time.time_ns(), list(self._devices), self._systems,
            list(self._names),
            np.repeat(np.array(self._ts, dtype=np.int64), counts),
            np.frombuffer(self._value, dtype=np.float64),
            np.repeat(np.array(self._seq, dtype=np.uint32), counts),
            np.repeat(np.array(self._device, dtype=np.uint32), counts),
            np.frombuffer(self._name, dtype=np.uint16), compress=self.compress)
        self.next_seq += 1
        self._reset()
        return frame, frame_seq, n
