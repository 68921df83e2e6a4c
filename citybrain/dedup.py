"""Exact-duplicate detection by (device, sequence number), like an anti-replay window.

Per device we keep the highest sequence number seen and a bitmask of the ``WINDOW`` numbers
below it. A message is new if its seq is above the highest, or inside the window and not yet
seen. One further below the window is too old to tell: it is reported as ``stale`` so the
caller rejects it with a reason instead of guessing.

Memory: one int and one Python int bitmask per device (≈100 bytes), so 1M devices ≈ 100 MB.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum

WINDOW = 1024


class Seen(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    STALE = "stale"


class Deduplicator:
    """Not thread-safe: owned by the edge's single processing thread."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._all = (1 << window) - 1  # every bit of the window (built once, not per check)
        self._state: dict[str, tuple[int, int]] = {}  # device -> (highest seq, mask)

    def __len__(self) -> int:
        return len(self._state)

    def items(self) -> Iterator[tuple[str, tuple[int, int]]]:
        """(device, (highest seq, mask)) pairs, for persisting the window."""
        return iter(list(self._state.items()))

    def restore(self, device: str, high: int, mask: int) -> None:
        """Put back a persisted (highest seq, mask) for ``device``."""
        self._state[device] = (high, mask & self._all)

    def check(self, device: str, seq: int) -> Seen:
        """Classify ``(device, seq)`` and remember it if new."""
        state = self._state.get(device)
        if state is None:
            self._state[device] = (seq, 1)
            return Seen.NEW
        high, mask = state
        if seq > high:
            shift = seq - high
            mask = ((mask << shift) | 1) & self._all if shift < self.window else 1
            self._state[device] = (seq, mask)
            return Seen.NEW
        back = high - seq
        if back >= self.window:
            return Seen.STALE
        bit = 1 << back
        if mask & bit:
            return Seen.DUPLICATE
        self._state[device] = (high, mask | bit)
        return Seen.NEW
