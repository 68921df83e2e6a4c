"""The small paho → InfluxDB bridge a user would write: subscribe, parse JSON, line protocol,
POST to InfluxDB 1.x ``/write``.

Two modes, as found in the wild:

* ``per-message`` — one HTTP write per MQTT message, from ``on_message`` (paho's network
  thread). The classic first version. At QoS 1 paho acknowledges after ``on_message``
  returns, i.e. after the write.
* ``batched`` — ``on_message`` only appends the line to a buffer; the main thread writes it
  when 5,000 lines are waiting or 1 s after the previous write. At QoS 1 the broker's
  acknowledgement is sent on receipt, so a crash loses the buffer (it is not a durable
  bridge; it only has to keep up here).

Both keep one HTTP/1.1 connection to influxd (like a ``requests.Session``), stamp points with
the device time (``t``, nanoseconds) and tag them with device, district and system from the
topic. A failed write is counted and dropped, as such bridges do.

``python -m bench.peers.naive_bridge --port P --influx-url URL --db DB --mode M --expect N``
prints ``{"event": "ready"}`` once subscribed and ``{"event": "done", ...}`` (counters,
``time.monotonic()`` of the first message and of the last write acknowledged, CPU seconds of
this process from ready to done) once ``N`` messages are written or nothing came for
``--idle-s`` after a message (the first is awaited up to ``common.FIRST_MESSAGE_S``).
``run_naive_bridge`` runs it against one load and counts in InfluxDB what landed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bench.peers.common import (
    FIRST_MESSAGE_S,
    READY_TIMEOUT_S,
    RUN_TIMEOUT_S,
    Consumer,
    PeerResult,
    landed_readings,
)
from bench.peers.load import publish_load
from bench.peers.raw_subscriber import data_filter, emit, subscribe
from citybrain.localstack import InfluxV1Server

MODES = ("per-message", "batched")
BATCH_LINES = 5_000
BATCH_INTERVAL_S = 1.0


def to_line(topic: str, payload: bytes | bytearray) -> str:
    """One device message as one line of protocol: measurement = device kind, a field per
    numeric reading, device time in ns. Topic: ``.../{district}/{domain}/{system}/{device}/data``.
    """
    msg = json.loads(payload)
    parts = topic.split("/")
    district, system = parts[-5], parts[-3]
    kind = system.split("-")[1]
    fields = ",".join(f"{r['n']}={float(r['v'])}" for r in msg["e"] if "v" in r)
    return (f"{kind},device={msg['dev']},district={district},system={system} "
            f"{fields} {int(msg['t'] * 1e9)}")


class InfluxWriter:
    """POST line protocol over one kept-alive connection; reconnects once on a broken one."""

    def __init__(self, url: str, db: str) -> None:
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 8086
        self.path = "/write?" + urllib.parse.urlencode({"db": db, "precision": "ns"})
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.errors = 0

    def write(self, body: str) -> bool:
        data = body.encode()
        for attempt in (1, 2):
            try:
                self.conn.request("POST", self.path, body=data,
                                  headers={"Content-Type": "text/plain"})
                resp = self.conn.getresponse()
                resp.read()
                if resp.status == 204:
                    return True
                break
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt == 2:
                    break
        self.errors += 1
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--qos", type=int, default=1)
    ap.add_argument("--prefix", default="")
    ap.add_argument("--influx-url", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--mode", choices=MODES, default="batched")
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--idle-s", type=float, default=3.0)
    args = ap.parse_args(argv)

    writer = InfluxWriter(args.influx_url, args.db)
    lock = threading.Condition()
    buf: list[str] = []
    st = {"received": 0, "written": 0, "failed": 0, "bad": 0, "t_first": 0.0, "t_msg": 0.0,
          "t_write": 0.0}

    def on_message_per_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        st["t_first"] = st["t_first"] or now
        st["received"] += 1
        st["t_msg"] = now
        try:
            line = to_line(m.topic, m.payload)
        except (ValueError, KeyError, IndexError, TypeError):
            st["bad"] += 1
            return
        if writer.write(line):
            st["written"] += 1
            st["t_write"] = time.monotonic()
        else:
            st["failed"] += 1

    def on_message_batched(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        try:
            line = to_line(m.topic, m.payload)
        except (ValueError, KeyError, IndexError, TypeError):
            line = ""
        now = time.monotonic()
        with lock:
            st["t_first"] = st["t_first"] or now
            st["received"] += 1
            st["t_msg"] = now
            if not line:
                st["bad"] += 1
                return
            buf.append(line)
            if len(buf) >= BATCH_LINES:
                lock.notify()

    on_message = on_message_per_message if args.mode == "per-message" else on_message_batched
    client = subscribe(args.host, args.port, args.qos, data_filter(args.prefix),
                       f"peers-naive-bridge-{args.mode}", on_message)
    cpu0 = time.process_time()
    emit("ready")
    started = last_flush = time.monotonic()
    while time.monotonic() - started < RUN_TIMEOUT_S:
        if args.mode == "per-message":
            time.sleep(0.02)
        else:
            with lock:
                lock.wait_for(lambda: len(buf) >= BATCH_LINES,
                              timeout=max(0.0, last_flush + BATCH_INTERVAL_S - time.monotonic()))
                batch = buf[:]
                buf.clear()
            if batch or time.monotonic() - last_flush >= BATCH_INTERVAL_S:
                last_flush = time.monotonic()
            if batch and writer.write("\n".join(batch)):
                st["written"] += len(batch)
                st["t_write"] = time.monotonic()
            elif batch:
                st["failed"] += len(batch)
        with lock:
            handled = st["written"] + st["failed"] + st["bad"]
            now = time.monotonic()
            # idle after a message; the first is awaited longer (the publishers' start)
            quiet = (now - st["t_msg"] > args.idle_s if st["t_msg"]
                     else now - started > FIRST_MESSAGE_S)
            if handled >= args.expect or (quiet and not buf):
                break
    cpu = time.process_time() - cpu0
    client.disconnect()
    client.loop_stop()
    emit("done", received=st["received"], written=st["written"], bad=st["bad"],
         failed=st["failed"], write_errors=writer.errors, t_first=st["t_first"],
         t_last=st["t_write"], cpu_s=cpu)
    return 0


def run_naive_bridge(host: str, port: int, influx: InfluxV1Server, db: str, n: int, qos: int,
                     mode: str = "batched", processes: int = 2, prefix: str = "",
                     log_dir: Path | None = None) -> PeerResult:
    """Create ``db``, start the bridge, publish the load, count what landed in InfluxDB."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    influx.create_database(db)
    with tempfile.TemporaryDirectory(prefix="peers-bridge-") as tmp:
        consumer = Consumer.python(
            "bench.peers.naive_bridge",
            ["--host", host, "--port", str(port), "--qos", str(qos), "--prefix", prefix,
             "--influx-url", influx.url, "--db", db, "--mode", mode, "--expect", str(n)],
            (log_dir or Path(tmp)) / f"naive_bridge_{mode}.log")
        try:
            consumer.wait_event("ready", READY_TIMEOUT_S)
            load = publish_load(host, port, n, qos, processes, prefix)
            done = consumer.wait_event("done", RUN_TIMEOUT_S)
        finally:
            consumer.stop()
    landed = landed_readings(influx, db)
    span = float(done["t_last"]) - load.t_start
    return PeerResult(
        f"naive_bridge_{mode}", published_readings=load.readings, landed_readings=landed,
        readings_per_s=landed / span if landed and span > 0 else 0.0,
        publish_msgs_per_s=load.msgs_per_s,
        cpu_us_per_reading=float(done["cpu_s"]) * 1e6 / landed if landed else None)


if __name__ == "__main__":
    raise SystemExit(main())
