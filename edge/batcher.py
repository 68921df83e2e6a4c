"""Accumulate validated readings of one district and seal them into frames.

Appends go to ``array`` columns (C storage, no Python object kept per reading); sealing
hands the columns to ``citybrain.frame.encode_frame`` in one go.
"""

from __future__ import annotations

import time
from array import array

import numpy as np

from citybrain.frame import encode_frame


class FrameBuilder:
    """Columns of pending readings for one district. Owned by one thread."""

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
        self._names: dict[str, int] = {}
        self._ts = array("q")
        self._value = array("d")
        self._seq = array("I")
        self._device = array("I")
        self._name = array("H")
        self._opened = 0.0

    def __len__(self) -> int:
        return len(self._ts)

    def add(self, device: str, system: str, seq: int, t_s: float, name: str,
            value: float) -> None:
        """Append one reading; ``t_s`` is device time in seconds since the epoch."""
        d = self._devices.get(device)
        if d is None:
            d = self._devices[device] = len(self._devices)
            self._systems.append(system)
        k = self._names.get(name)
        if k is None:
            k = self._names[name] = len(self._names)
        if not self._ts:
            self._opened = time.monotonic()
        # Round to whole microseconds, then scale: keeps ns timestamps stable across resends.
        self._ts.append(round(t_s * 1e6) * 1000)
        self._value.append(value)
        self._seq.append(seq)
        self._device.append(d)
        self._name.append(k)

    def add_many(self, device: str, system: str, seq: int, t_s: float, names: list[str],
                 values: list[float]) -> None:
        """Append one message's readings (one device, seq and time): the same columns as
        ``add`` for each ``(names[i], values[i])``, with the per-message work done once."""
        if len(values) != len(names):
            raise ValueError(f"{len(names)} names but {len(values)} values")
        if not names:
            return
        d = self._devices.get(device)
        if d is None:
            d = self._devices[device] = len(self._devices)
            self._systems.append(system)
        codes = self._names
        try:
            ks = [codes[name] for name in names]
        except KeyError:  # a name new to this frame
            ks = [codes.setdefault(name, len(codes)) for name in names]
        if not self._ts:
            self._opened = time.monotonic()
        n = len(ks)
        self._ts.extend((round(t_s * 1e6) * 1000,) * n)  # as ``add``
        self._value.extend(values)
        self._seq.extend((seq,) * n)
        self._device.extend((d,) * n)
        self._name.extend(ks)

    def due(self, now_monotonic: float) -> bool:
        """True when the pending readings should be sealed (full, or old enough)."""
        n = len(self._ts)
        return n >= self.max_readings or (n > 0 and now_monotonic - self._opened
                                          >= self.max_delay_s)

    def seal(self, frame_seq: int | None = None) -> tuple[bytes, int, int]:
        """Encode pending readings into a frame; returns ``(frame, frame_seq, n_readings)``.

        ``frame_seq``: the id to give the frame (the edge's spool hands out epoch | counter);
        by default this builder's own counter."""
        n = len(self._ts)
        if frame_seq is None:
            frame_seq = self.next_seq
        frame = encode_frame(
            self.district, frame_seq, time.time_ns(), list(self._devices), self._systems,
            list(self._names),
            np.frombuffer(self._ts, dtype=np.int64), np.frombuffer(self._value, dtype=np.float64),
            np.frombuffer(self._seq, dtype=np.uint32), np.frombuffer(self._device, dtype=np.uint32),
            np.frombuffer(self._name, dtype=np.uint16), compress=self.compress)
        self.next_seq += 1
        self._reset()
        return frame, frame_seq, n
