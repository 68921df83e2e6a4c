"""The bounded hand-off from paho's network thread to the edge's processing thread.

``queue.Queue`` costs a lock, a condition and (when the consumer waits) a thread wake-up
per message, on both threads; at a few thousand device messages a second that is a large
share of the edge's own CPU. ``Intake`` keeps the items in a ``deque`` (whose ``append`` and
``popleft`` are atomic), takes a lock only to sleep or to wake the other side, and hands the
consumer what has accumulated in one list (``drain``).

Contracts:
  * one producer thread calls ``put`` or ``put_many`` (never blocks while there is room;
    while full it waits for room, so a slow consumer pushes back on the broker through TCP,
    until ``close()``, after which an item that finds no room is refused: ``put`` returns
    False, ``put_many`` how many of its items, from the first, it took);
  * one consumer thread calls ``drain``: up to ``max_items`` items, oldest first; when
    there are none it waits at most ``timeout_s`` (plus ``linger_s``) and returns ``[]``.
    Right after a non-empty drain it first sleeps ``linger_s`` before waiting for a wake-up,
    so that during a stream the consumer takes messages in batches instead of being woken
    once per message.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

#: While full, the producer re-checks for room (and for ``close()``) at least this often, s.
FULL_POLL_S = 0.05


class Intake(Generic[T]):
    """A bounded single-producer, single-consumer queue handing items over in batches."""

    def __init__(self, maxsize: int, *, linger_s: float = 0.002) -> None:
        if maxsize < 1:
            raise ValueError("the intake needs room for at least one item")
        self.maxsize = maxsize
        self.linger_s = linger_s
        self._items: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._consumer_waiting = False
        self._producer_waiting = False
        self._busy = False  # the last drain returned items
        self.closed = False

    def qsize(self) -> int:
        return len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def close(self) -> None:
        """Refuse items that find no room from now on (a producer waiting for room gives up)."""
        self.closed = True
        with self._cond:
            self._cond.notify_all()

    def put(self, item: T) -> bool:
        """Append ``item``; waits while the intake is full. False: refused (closed and full)."""
        items = self._items
        if len(items) >= self.maxsize:
            with self._cond:
                self._producer_waiting = True
                try:
                    while len(items) >= self.maxsize:
                        if self.closed:
                            return False
                        self._cond.wait(FULL_POLL_S)
                finally:
                    self._producer_waiting = False
        items.append(item)
        # The consumer sets the flag (holding the lock) before its last look at the deque,
        # so either it sees this item or it is waiting and this wakes it.
        if self._consumer_waiting:
            with self._cond:
                self._cond.notify_all()
        return True

    def put_many(self, batch: list[T]) -> int:
        """Append ``batch``'s items in order, as ``put`` each would (waiting for room while
        full), with one look at the waiting consumer for the whole batch. Returns how many
        were taken: ``len(batch)``, or fewer when the intake was closed while full (the
        rest, from the first refused on, were not taken)."""
        items = self._items
        room = self.maxsize - len(items)
        if room >= len(batch):  # the common case: all of it fits
            items.extend(batch)
        else:
            taken = 0
            while taken < len(batch):
                if room <= 0:
                    with self._cond:
                        self._producer_waiting = True
                        try:
                            while len(items) >= self.maxsize:
                                if self.closed:
                                    return taken
                                self._cond.wait(FULL_POLL_S)
                        finally:
                            self._producer_waiting = False
                    room = self.maxsize - len(items)
                part = batch[taken:taken + room]
                items.extend(part)
                taken += len(part)
                room = 0
                if self._consumer_waiting:  # it may drain while we wait for more room
                    with self._cond:
                        self._cond.notify_all()
        if self._consumer_waiting:  # as in ``put``
            with self._cond:
                self._cond.notify_all()
        return len(batch)

    def drain(self, max_items: int, timeout_s: float) -> list[T]:
        """Up to ``max_items`` items, oldest first; ``[]`` if none came (see the module)."""
        items = self._items
        if not items:
            if self._busy:
                self._busy = False
                time.sleep(self.linger_s)
            if not items:
                with self._cond:
                    self._consumer_waiting = True
                    try:
                        if not items:
                            self._cond.wait(timeout_s)
                    finally:
                        self._consumer_waiting = False
                if not items:
                    return []
        n = min(len(items), max_items)
        popleft = items.popleft
        out = [popleft() for _ in range(n)]
        self._busy = True
        if self._producer_waiting:
            with self._cond:
                self._cond.notify_all()
        return out
