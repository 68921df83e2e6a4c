"""influxd's own write rate: pre-built line protocol, 5,000-line batches, 1 or more connections.

The lines have the shape the small bridge writes (``bench.peers.naive_bridge.to_line``): one
point per device message, three fields (readings), tagged with device, district and system,
device time in ns; one point per (air station, minute). Each pass writes into a fresh
database, so every point is new, and counts afterwards what landed. Client threads only send
bytes (the GIL is released while they wait on the socket), so the rate measured is influxd's.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from dataclasses import dataclass

from bench.peers.common import landed_readings
from bench.peers.load import INTERVAL_S, READINGS, T0, air_stations
from citybrain.localstack import InfluxV1Server

BATCH_LINES = 5_000


def build_batches(n_points: int, batch_lines: int = BATCH_LINES) -> list[bytes]:
    """``n_points`` lines of protocol in bodies of ``batch_lines`` lines (station-major
    within each minute, as a stream of air-station messages arrives)."""
    stations = air_stations()
    lines = []
    for i in range(n_points):
        k, q = i % len(stations), i // len(stations)
        dev = stations[k].device
        system = dev.rsplit("-", 1)[0]
        district = dev.split("-", 1)[0]
        v = 1.0 + (q % 97) * 0.5
        fields = ",".join(f"{name}={round(base + v, 1)}" for name, _unit, base in READINGS)
        lines.append(f"air,device={dev},district={district},system={system} {fields} "
                     f"{int((T0 + q * INTERVAL_S) * 1e9)}")
    return ["\n".join(lines[i:i + batch_lines]).encode()
            for i in range(0, n_points, batch_lines)]


@dataclass(frozen=True)
class RawWriteResult:
    connections: int
    points: int            # lines sent
    landed_readings: int   # field values counted afterwards
    seconds: float
    errors: int

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else 0.0

    @property
    def readings_per_s(self) -> float:
        return self.landed_readings / self.seconds if self.seconds > 0 else 0.0


def _line_count(body: bytes) -> int:
    """Lines in a body of line protocol (a trailing newline ends the last, no more)."""
    return body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)


def write_batches(influx: InfluxV1Server, db: str, batches: list[bytes], connections: int,
                  done: list[tuple[float, int]] | None = None) -> tuple[float, int]:
    """POST every batch over ``connections`` kept-alive connections; (seconds, errors).
    ``done``, if given, receives ``(seconds since the start, lines)`` per acknowledged
    batch."""
    path = "/write?" + urllib.parse.urlencode({"db": db, "precision": "ns"})
    # lines per batch counted before the clock starts: the client threads only send bytes
    todo = [(body, _line_count(body) if done is not None else 0)
            for body in reversed(batches)]
    lock = threading.Lock()
    errors = [0]

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", influx.port, timeout=60)
        try:
            while True:
                with lock:
                    if not todo:
                        return
                    body, lines = todo.pop()
                try:
                    conn.request("POST", path, body=body)
                    resp = conn.getresponse()
                    resp.read()
                    ok = resp.status == 204
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", influx.port, timeout=60)
                    ok = False
                if not ok:
                    with lock:
                        errors[0] += 1
                elif done is not None:
                    done.append((time.perf_counter() - t0, lines))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, errors[0]


def run_influx_raw(influx: InfluxV1Server, db_prefix: str, n_points: int,
                   connections: tuple[int, ...] = (1, 2)) -> list[RawWriteResult]:
    """One pass per connection count, each into its own fresh database."""
    batches = build_batches(n_points)
    out = []
    for c in connections:
        db = f"{db_prefix}_c{c}"
        influx.create_database(db)
        seconds, errors = write_batches(influx, db, batches, c)
        out.append(RawWriteResult(c, n_points, landed_readings(influx, db), seconds, errors))
    return out
