"""What every peer run shares: the result record, consumer processes, counting what landed.

A *consumer* is a separate process (a peer: the counting subscriber, the small bridge,
Node-RED) so that its CPU time is its own. The Python consumers speak a two-line protocol on
stdout: ``{"event": "ready", ...}`` once subscribed (SUBACK received), then
``{"event": "done", ...}`` with their counters and ``time.monotonic()`` stamps when they
have seen every expected message (or none for ``idle_s``), and exit.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from citybrain.localstack import InfluxQueryError, InfluxV1Server

REPO = Path(__file__).resolve().parents[2]
#: Bounds on one consumer: start-up (imports, connect, subscribe) and the whole run, seconds.
READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 900.0
#: Most time a consumer waits for the load's *first* message, seconds. Its ``--idle-s``
#: counts from the last message only: the publishers take seconds to start (spawn, imports,
#: encoding the payloads) — over 3 s on a busy 2-core machine, where a consumer whose idle
#: clock ran from "ready" gave up before the first message and reported nothing.
FIRST_MESSAGE_S = 120.0


@dataclass(frozen=True)
class PeerResult:
    """One peer on one load. Rates are over [first publish, last reading landed]."""

    name: str
    published_readings: int
    landed_readings: int
    readings_per_s: float
    publish_msgs_per_s: float
    cpu_us_per_reading: float | None = None

    @property
    def lost_readings(self) -> int:
        return self.published_readings - self.landed_readings

    def as_figures(self, key: str) -> dict[str, float | None]:
        """Flat bench figures under ``key`` (e.g. ``naive_bridge``)."""
        return {f"{key}_readings_per_s": self.readings_per_s,
                f"{key}_lost_readings": float(self.lost_readings),
                f"{key}_landed_readings": float(self.landed_readings),
                f"{key}_cpu_us_per_reading": self.cpu_us_per_reading,
                f"{key}_publish_msgs_per_s": self.publish_msgs_per_s}


class Consumer:
    """A consumer process speaking the ready/done protocol; stderr goes to ``log_path``."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, cwd=REPO, env=env, text=True)
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    def python(cls, module: str, args: list[str], log_path: Path) -> Consumer:
        return cls([sys.executable, "-m", module, *args], log_path)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        """The next message ``event``; raises RuntimeError (with the log) on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.proc.args!r}: no {event!r} after {timeout:.0f} s; "
                                   f"log {self.log_path}:\n{self.log_tail()}") from None
            if msg is None:
                raise RuntimeError(f"{self.proc.args!r} exited ({self.proc.wait()}) before "
                                   f"{event!r}; log {self.log_path}:\n{self.log_tail()}")
            if msg.get("event") == event:
                return msg

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Wait briefly for a clean exit, then terminate, then kill; always reaps."""
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), seconds, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def landed_readings(influx: InfluxV1Server, db: str, measurement: str = "air") -> int:
    """Field values stored in ``measurement`` of ``db`` (InfluxQL ``count(*)``, summed)."""
    try:
        doc = influx.query(f'SELECT count(*) FROM "{measurement}"', db=db)
    except InfluxQueryError as exc:
        if "database not found" in str(exc):
            return 0
        raise
    total = 0
    for result in doc.get("results", []):
        for series in result.get("series", []):
            for row in series.get("values", []):
                total += sum(int(v) for v in row[1:] if v is not None)
    return total


def wait_landed(influx: InfluxV1Server, db: str, expected: int, idle_s: float,
                timeout: float = RUN_TIMEOUT_S, poll_s: float = 0.25) -> tuple[int, float]:
    """Poll the count until ``expected`` readings landed or it stops growing for ``idle_s``.

    Returns (readings, monotonic time the last increase was seen).
    """
    deadline = time.monotonic() + timeout
    last_n, last_t = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = landed_readings(influx, db)
        now = time.monotonic()
        if n != last_n:
            last_n, last_t = n, now
        if n >= expected or now - last_t > idle_s:
            break
        time.sleep(poll_s)
    return max(last_n, 0), last_t
