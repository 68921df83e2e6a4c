"""What every load publisher process shares: the QoS 1 window and the start-up handshake."""

from __future__ import annotations

import queue
import time
from typing import Any

#: Unacknowledged QoS 1 messages one MQTT connection may have: paho reuses message ids
#: beyond 65,535 in flight, and ``publish()`` then fails.
QOS1_WINDOW = 2_000


def wait_ready(ready: Any, procs: list[Any], timeout: float) -> None:
    """Wait for one message per process on ``ready`` (a multiprocessing queue); a process
    that exited first fails at once, and so does the deadline (RuntimeError)."""
    deadline = time.monotonic() + timeout
    pending = len(procs)
    while pending:
        try:
            ready.get(timeout=0.2)
            pending -= 1
            continue
        except queue.Empty:
            pass
        dead = [p.name for p in procs if p.exitcode is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"load publishers not ready (exited: {dead}); with the spawn "
                               "start method the main script needs `if __name__ == '__main__'`")
