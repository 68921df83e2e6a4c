"""The raw limit: a paho-mqtt 2.x subscriber that only counts messages.

``python -m bench.peers.raw_subscriber --port P --qos Q --expect N`` subscribes to every
device data topic, prints ``{"event": "ready"}`` once subscribed, counts, and prints
``{"event": "done", "received", "t_first", "t_last", "cpu_s"}`` (monotonic seconds; CPU of
this process from ready to done) when ``N`` arrived or nothing came for ``--idle-s`` after
a message (the first is awaited up to ``common.FIRST_MESSAGE_S``).

``run_raw_subscriber`` runs it against one load (``bench.peers.load``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.peers.common import (
    FIRST_MESSAGE_S,
    READY_TIMEOUT_S,
    RUN_TIMEOUT_S,
    Consumer,
    PeerResult,
)
from bench.peers.load import READINGS_PER_MESSAGE, publish_load

DATA_FILTER = "cb/v1/dev/+/+/+/+/data"


def data_filter(prefix: str = "") -> str:
    return f"{prefix}/{DATA_FILTER}" if prefix else DATA_FILTER


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def subscribe(host: str, port: int, qos: int, topic: str, client_id: str,
              on_message: Any) -> mqtt.Client:
    """Connect (clean session), subscribe, start the network thread; returns once SUBACKed."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    subscribed = threading.Event()
    client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic, qos=qos)
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = on_message
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not subscribed.wait(30):
        raise RuntimeError(f"no SUBACK for {topic!r} from {host}:{port}")
    return client


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--qos", type=int, default=1)
    ap.add_argument("--prefix", default="")
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--idle-s", type=float, default=3.0)
    args = ap.parse_args(argv)

    lock = threading.Lock()
    state = {"n": 0, "t_first": 0.0, "t_last": 0.0}

    def on_message(_c: Any, _u: Any, _m: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        with lock:
            if not state["n"]:
                state["t_first"] = now
            state["n"] += 1
            state["t_last"] = now

    client = subscribe(args.host, args.port, args.qos, data_filter(args.prefix),
                       "peers-raw-subscriber", on_message)
    cpu0 = time.process_time()
    emit("ready")
    started = time.monotonic()
    while time.monotonic() - started < RUN_TIMEOUT_S:
        time.sleep(0.02)
        with lock:
            n, t_last = state["n"], state["t_last"]
        now = time.monotonic()
        if (n >= args.expect or (n and now - t_last > args.idle_s)
                or (not n and now - started > FIRST_MESSAGE_S)):
            break
    cpu = time.process_time() - cpu0
    client.disconnect()
    client.loop_stop()
    emit("done", received=state["n"], t_first=state["t_first"], t_last=state["t_last"],
         cpu_s=cpu)
    return 0


def run_raw_subscriber(host: str, port: int, n: int, qos: int, processes: int = 2,
                       prefix: str = "", log_dir: Path | None = None) -> PeerResult:
    """Start the counting subscriber, publish the load, wait until it counted everything."""
    with tempfile.TemporaryDirectory(prefix="peers-raw-") as tmp:
        consumer = Consumer.python(
            "bench.peers.raw_subscriber",
            ["--host", host, "--port", str(port), "--qos", str(qos), "--prefix", prefix,
             "--expect", str(n)],
            (log_dir or Path(tmp)) / "raw_subscriber.log")
        try:
            consumer.wait_event("ready", READY_TIMEOUT_S)
            load = publish_load(host, port, n, qos, processes, prefix)
            done = consumer.wait_event("done", RUN_TIMEOUT_S)
        finally:
            consumer.stop()
    received = int(done["received"])
    span = float(done["t_last"]) - load.t_start
    readings = received * READINGS_PER_MESSAGE
    return PeerResult(
        "raw_subscriber", published_readings=load.readings, landed_readings=readings,
        readings_per_s=readings / span if received and span > 0 else 0.0,
        publish_msgs_per_s=load.msgs_per_s,
        cpu_us_per_reading=float(done["cpu_s"]) * 1e6 / readings if readings else None)


if __name__ == "__main__":
    raise SystemExit(main())
