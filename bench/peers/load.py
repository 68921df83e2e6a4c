"""The load every peer is measured with: N air-station messages, published by several processes.

One Python publisher is the ceiling of such comparisons (~30k messages/s at QoS 0, ~10k at
QoS 1 on 2 cores, ``../shared/reference/peers.md``), so the load is spread over
``processes`` publishers (``multiprocessing``, spawn). Each owns a disjoint slice of the real
air stations of ``seeds.city.City(1.0)`` and publishes, on each station's real topic
(``cb/v1/dev/{district}/environment/{system}/{device}/data``), citybrain's JSON data
message (``citybrain.payload.encode_data``) with three readings (pm2_5, pm10, no2) and a
per-device sequence number. Device time advances ``STEP_S`` per message of a station, from
a start time ``start_time()`` chosen once per load, so every (device, time) is distinct and
no point overwrites another, and the stations' clocks run about at the pace the load is
published, as a live city's do (see ``STEP_S``). The last message of every station is
``LEAD_S`` before the load is built: citybrain's edge rejects device times more than 30 days
behind its clock (``ts_past``) or 300 s ahead (``ts_future``); the other peers do not look
at the time.

Payloads are encoded before the start signal, so the rate measured is the MQTT client's and
the broker's. QoS 1 publishes are capped at ``QOS1_WINDOW`` unacknowledged messages per
publisher: paho reuses message ids beyond 65,535 in flight and ``publish()`` then fails.

Timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on Linux),
so a consumer's timestamps can be compared with the publishers'.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citybrain.loadtest.procs import QOS1_WINDOW, wait_ready
from citybrain.payload import encode_data, record
from citybrain.topics import DeviceTopic
from seeds.city import City

#: Device time between two messages of one station in the load, seconds. The load's 232
#: stations stand for a city's many: each sends far more often than a real station (every
#: 60 s), and its clock advances at about the pace the load is published (147 messages per
#: station in a full load: 7.4 s of device time), as the clocks of a live city do, so an
#: event-time pipeline sees live traffic. Until 2026-11-22 the step was 60 s, a replay of
#: ~30 device-minutes per wall second: two publishers a message apart were a minute apart in
#: device time, so 92-95 % of readings reached citybrain's hub behind its 30 s allowed
#: lateness and were stored raw but never aggregated (bench/README.md).
STEP_S = 0.05
#: How long before the load is built the last message's device time is, seconds: in the
#: past (never ahead of the edge's clock), a few seconds from live.
LEAD_S = 2.0
#: Spacing of ``influx_raw``'s pre-built points (one point per air station and minute).
INTERVAL_S = 60.0
#: A fixed first device time (UTC seconds, 2025-11-21T08:00:00Z) for writers whose points
#: never pass an edge's time checks (``influx_raw``); the load itself uses ``start_time()``.
T0 = 1_763_712_000.0
#: The three readings of each message, name and unit from ``seeds/catalogue.csv``.
READINGS = (("pm2_5", "ug/m3", 35.0), ("pm10", "ug/m3", 60.0), ("no2", "ug/m3", 40.0))
READINGS_PER_MESSAGE = len(READINGS)
#: Most time one publisher may take (connect, encode and publish), seconds.
PUBLISH_DEADLINE_S = 600.0


@dataclass(frozen=True)
class Station:
    device: str
    topic: str  # the data topic (with the optional test prefix)


def air_stations(prefix: str = "") -> list[Station]:
    """Every air station of the seeded city (scale 1.0: 232), with its data topic."""
    out = []
    for d in City(1.0).devices():
        if d.kind != "air":
            continue
        topic = str(DeviceTopic(d.district_code, d.domain, d.system.system_id, d.device_id,
                                "data"))
        out.append(Station(d.device_id, f"{prefix}/{topic}" if prefix else topic))
    return out


def start_time(n: int, stations: int, now: float | None = None) -> float:
    """First device time (UTC seconds, a whole second) of a load of ``n`` messages
    round-robin over ``stations`` stations: its last message is ``LEAD_S`` (at most a second
    more) before ``now`` (default: ``time.time()``)."""
    per_station = -(-n // max(1, stations))
    now = time.time() if now is None else now
    return float(int(now - LEAD_S - (per_station - 1) * STEP_S))


def build_messages(stations: list[Station], n: int,
                   t0: float | None = None) -> list[tuple[str, bytes]]:
    """``n`` (topic, payload) pairs, round-robin over ``stations``, seq +1 per device;
    device time ``t0 + seq × STEP_S`` (``t0`` default: ``start_time(n, len(stations))``).
    """
    if t0 is None:
        t0 = start_time(n, len(stations))
    seq = [0] * len(stations)
    out = []
    for i in range(n):
        k = i % len(stations)
        s, q = stations[k], seq[k]
        seq[k] += 1
        v = 1.0 + (q % 97) * 0.5  # varied values, deterministic
        payload = encode_data(s.device, q, t0 + q * STEP_S,
                              [record(name, unit, round(base + v, 1))
                               for name, unit, base in READINGS])
        out.append((s.topic, payload))
    return out


@dataclass(frozen=True)
class LoadResult:
    messages: int          # acknowledged by the broker (QoS 1) or written to the socket (QoS 0)
    t_start: float         # monotonic, first publish of any publisher
    t_end: float           # monotonic, last acknowledgement of any publisher
    errors: int            # publish() calls that failed

    @property
    def readings(self) -> int:
        return self.messages * READINGS_PER_MESSAGE

    @property
    def msgs_per_s(self) -> float:
        span = self.t_end - self.t_start
        return self.messages / span if span > 0 else 0.0


def _publisher(index: int, host: str, port: int, qos: int, stations: list[Station], n: int,
               t0: float, ready: Any, go: MpEvent, results: Any) -> None:
    """One publisher process: connect, encode ``n`` messages, wait for ``go``, publish.

    No network thread: ``publish()`` writes to the socket itself and ``loop(0)`` reads the
    acknowledgements, which avoids a thread hand-off per message.
    """
    messages = build_messages(stations, n, t0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"peers-load-{index}",
                         clean_session=True)
    client.max_inflight_messages_set(QOS1_WINDOW)
    client.max_queued_messages_set(0)
    state = {"acked": 0, "last": 0.0}

    def on_publish(_c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        state["acked"] += 1
        state["last"] = time.monotonic()

    client.on_publish = on_publish
    client.connect(host, port, keepalive=60)
    deadline = time.monotonic() + 30
    while not client.is_connected() and time.monotonic() < deadline:
        client.loop(0.05)
    ready.put(index)
    go.wait(PUBLISH_DEADLINE_S)
    errors = sent = 0
    t_start = time.monotonic()
    deadline = t_start + PUBLISH_DEADLINE_S
    for i, (topic, payload) in enumerate(messages):
        while qos and sent - state["acked"] >= QOS1_WINDOW and time.monotonic() < deadline:
            client.loop(0.01)
        if client.publish(topic, payload, qos=qos).rc == mqtt.MQTT_ERR_SUCCESS:
            sent += 1
        else:
            errors += 1
        if i % 64 == 63:
            client.loop(0)  # read acknowledgements, flush what the socket did not take
    while state["acked"] < sent and time.monotonic() < deadline:
        client.loop(0.05)
    client.disconnect()
    results.put((index, state["acked"], t_start, state["last"] or t_start, errors))


def publish_load(host: str, port: int, n: int, qos: int, processes: int = 2,
                 prefix: str = "", on_ready: Any = None) -> LoadResult:
    """Publish ``n`` messages from ``processes`` publisher processes, as fast as they go.

    Blocks until every publisher has finished (bounded by ``PUBLISH_DEADLINE_S``).
    ``on_ready`` (optional, no arguments) is called once every publisher is connected and
    has its payloads encoded, just before the start signal.
    """
    if qos not in (0, 1):
        raise ValueError(f"qos must be 0 or 1, got {qos}")
    stations = air_stations(prefix)
    t0 = start_time(n, len(stations))  # one start for every publisher
    processes = max(1, min(processes, len(stations), n))
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    procs = [ctx.Process(target=_publisher, name=f"peers-load-{i}", daemon=True,
                         args=(i, host, port, qos, stations[i::processes], shares[i], t0,
                               ready, go, results))
             for i in range(processes)]
    for p in procs:
        p.start()
    try:
        wait_ready(ready, procs, timeout=120.0)
        if on_ready is not None:
            on_ready()
        go.set()
        rows = [results.get(timeout=PUBLISH_DEADLINE_S + 30) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
    return LoadResult(messages=sum(r[1] for r in rows), t_start=min(r[2] for r in rows),
                      t_end=max(r[3] for r in rows), errors=sum(r[4] for r in rows))
