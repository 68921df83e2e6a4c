"""The district edge gateway service: MQTT in, validated frames out.

Threads and contracts:
  * paho's network thread (device side) runs ``_on_message``, which only enqueues
    ``(topic, payload, dup)``; the queue is bounded, so a slow edge pushes back on the broker
    (TCP) instead of growing without limit.
  * one processing thread (``_run``) owns validation, de-duplication and the frame builders;
    it seals a district's frame when it is full or ``frame_max_delay_s`` old and publishes it
    at QoS 1 on the uplink client.
  * ``stop()`` disconnects the device side, drains the queue, seals every pending frame and
    waits (bounded) until the broker acknowledged each one.

Every message ends in exactly one of: readings framed, rejected (dead letter with reason),
duplicate. Counters say how many of each, in readings.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from citybrain import topics
from citybrain.mqtt import BrokerConfig, Subscription, connect_and_wait, make_client
from citybrain.stats import Counters, StatsWriter
from edge.batcher import FrameBuilder
from edge.dedup import Deduplicator, Seen
from edge.validate import (
    Rejected,
    TimeLimits,
    check_envelope,
    check_records,
    check_time,
    parse_json,
    parse_topic,
    readings_claimed,
    resolve_device,
)
from seeds.city import City

log = logging.getLogger("citybrain.edge")

#: Dead letters carry at most this much of the offending payload.
DLQ_PAYLOAD_BYTES = 2048


@dataclass
class EdgeConfig:
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    uplink: BrokerConfig | None = None  # None: publish frames to the same broker
    districts: set[str] | None = None  # None: every district of the city
    scale: float = 1.0
    client_id: str = "citybrain-edge"
    frame_max_readings: int = 5000
    frame_max_delay_s: float = 0.5
    time_limits: TimeLimits = field(default_factory=TimeLimits)
    queue_size: int = 100_000
    stats_path: Path | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # Prometheus /metrics; None: off


def _clean_attrs(attrs: Any) -> dict[str, str | int | float | bool]:
    """Keep only small scalar device attributes (names ≤ 32 chars, strings ≤ 64)."""
    if not isinstance(attrs, dict):
        return {}
    out: dict[str, str | int | float | bool] = {}
    for k, v in list(attrs.items())[:16]:
        if isinstance(k, str) and len(k) <= 32 and (
                isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) <= 64)):
            out[k] = v
    return out


class EdgeGateway:
    """One process may serve many districts; each gets its own frames and dead letters."""

    def __init__(self, cfg: EdgeConfig, city: City | None = None) -> None:
        self.cfg = cfg
        self.city = city or City(cfg.scale)
        codes = {d.code for d in self.city.districts}
        unknown = (cfg.districts or set()) - codes
        if unknown:
            raise ValueError(f"unknown district codes: {sorted(unknown)}")
        self.districts = set(cfg.districts) if cfg.districts else codes
        self.counters = Counters()
        self.dedup = Deduplicator()
        self.builders = {
            d: FrameBuilder(d, max_readings=cfg.frame_max_readings,
                            max_delay_s=cfg.frame_max_delay_s) for d in sorted(self.districts)}
        self.links: dict[str, set[str]] = {}  # link id -> devices born on it
        self._queue: queue.Queue[tuple[str, bytes, bool]] = queue.Queue(cfg.queue_size)
        self._pending: list[tuple[mqtt.MQTTMessageInfo, int]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-worker", daemon=True)
        self._stats = StatsWriter(cfg.stats_path, self.snapshot)
        self._metrics_server: Any = None
        self.device_client = make_client(f"{cfg.client_id}-dev", cfg.broker,
                                         clean_session=False)
        self._subscription = Subscription(
            [(topics.device_filter(d), 1) for d in sorted(self.districts)])
        self.device_client.on_connect = self._subscription.on_connect
        self.device_client.on_subscribe = self._subscription.on_subscribe
        self.device_client.on_message = self._on_message
        self.uplink_client = make_client(f"{cfg.client_id}-up", cfg.uplink or cfg.broker)
        # The Will tells the hub and operators that this edge (and its districts) vanished.
        self._state_topic = topics.edge_state_topic(cfg.client_id)
        self.uplink_client.will_set(self._state_topic, self._state_doc("offline"), qos=1,
                                    retain=True)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        connect_and_wait(self.uplink_client, self.cfg.uplink or self.cfg.broker)
        self.uplink_client.publish(self._state_topic, self._state_doc("online"), qos=1,
                                   retain=True)
        self._thread.start()
        connect_and_wait(self.device_client, self.cfg.broker)
        self._subscription.wait()  # ready only once the broker routes device messages here
        self._stats.start()
        if self.cfg.metrics_port is not None:
            from prometheus_client import start_http_server

            from hub.http import metrics_registry
            registry = metrics_registry("citybrain_edge", self.snapshot,
                                        gauges=("queue_depth", "frames_unacked",
                                                "devices_tracked"))
            self._metrics_server, _ = start_http_server(
                self.cfg.metrics_port, addr=self.cfg.metrics_host, registry=registry)
        log.info("edge %s serving %d districts", self.cfg.client_id, len(self.districts))

    def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop taking device messages, flush everything, and return the final counters."""
        self.device_client.disconnect()
        self.device_client.loop_stop()
        self._stopping.set()
        self._thread.join(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        for info, _ in self._pending:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        self._sweep_acks()
        self.uplink_client.publish(self._state_topic, self._state_doc("offline"), qos=1,
                                   retain=True).wait_for_publish(2)
        self.uplink_client.disconnect()
        self.uplink_client.loop_stop()
        self._stats.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        return self.snapshot()

    def _state_doc(self, state: str) -> bytes:
        return orjson.dumps({"state": state, "edge": self.cfg.client_id,
                             "districts": sorted(self.districts)})

    def snapshot(self) -> dict[str, Any]:
        snap = self.counters.snapshot()
        snap["cpu_s"] = time.process_time()
        snap["queue_depth"] = self._queue.qsize()
        snap["frames_unacked"] = len(self._pending)
        snap["devices_tracked"] = len(self.dedup)
        snap["districts"] = sorted(self.districts)
        return snap

    # -- paho callbacks (network thread): enqueue only ------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._queue.put((msg.topic, bytes(msg.payload), bool(msg.dup)))

    # -- processing thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                topic, payload, dup = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._stopping.is_set():
                    break
            else:
                try:
                    self.handle(topic, payload, dup)
                except Exception:  # never let one message kill the edge; count it
                    log.exception("unexpected error handling a message on %s", topic)
                    self._reject(Rejected("internal_error", "see edge log"), topic, payload)
            self._flush_due(time.monotonic())
        self._flush_due(float("inf"), force=True)

    def handle(self, topic: str, payload: bytes, dup: bool = False) -> None:
        """Classify one device message. Runs on the processing thread (or in tests)."""
        self.counters.inc("messages_in")
        try:
            parsed = parse_topic(topic, self.districts)
            doc = parse_json(payload)
        except Rejected as exc:
            self.counters.inc("readings_in", 1)
            self._reject(exc, topic, payload)
            return
        if parsed.channel != "data":
            self._lifecycle(parsed, doc, topic, payload)
            return
        n = readings_claimed(doc)
        self.counters.inc("readings_in", n)
        try:
            env = check_envelope(self.city, parsed, doc)
        except Rejected as exc:
            self._reject(exc, topic, payload)
            return
        seen = self.dedup.check(env.device.device_id, env.seq)
        if seen is Seen.DUPLICATE:
            self.counters.inc("duplicates", n)
            self.counters.inc("duplicate_messages")
            if dup:
                self.counters.inc("redelivered_messages")
            return
        if seen is Seen.STALE:
            self._reject(Rejected("stale_seq", f"seq {env.seq} is below the replay window", n),
                         topic, payload)
            return
        try:
            check_time(env.t, time.time(), self.cfg.time_limits, n)
        except Rejected as exc:
            self._reject(exc, topic, payload)
            return
        good, bad = check_records(env)
        for rejection in bad:
            self._reject(rejection, topic, payload)
        builder = self.builders[parsed.district]
        system = env.device.system.system_id
        for r in good:
            builder.add(env.device.device_id, system, env.seq, env.t, r.name, r.value)
        self.counters.inc("readings_accepted", len(good))

    def _lifecycle(self, parsed: topics.DeviceTopic, doc: Any, topic: str,
                   payload: bytes) -> None:
        """Births and deaths: track links and forward the event to the hub."""
        if not isinstance(doc, dict):
            self._reject(Rejected("not_an_object", "lifecycle payload is not an object", 0),
                         topic, payload)
            return
        link = doc.get("link")
        if not isinstance(link, str):
            self._reject(Rejected("missing_field", "lifecycle payload without 'link'", 0),
                         topic, payload)
            return
        event: dict[str, Any] = {"type": parsed.channel, "district": parsed.district,
                                 "system": parsed.system, "link": link,
                                 "t": doc.get("t"), "edge_t": time.time()}
        if parsed.channel == "birth":
            try:
                resolve_device(self.city, parsed, doc.get("dev", ""), 0)
            except Rejected as exc:
                self._reject(exc, topic, payload)
                return
            self.links.setdefault(link, set()).add(parsed.device)
            attrs = doc.get("attrs")
            event |= {"device": parsed.device, "fw": doc.get("fw"), "reset": doc.get("reset"),
                      "attrs": _clean_attrs(attrs)}
            self.counters.inc("births")
        else:
            event["devices"] = sorted(self.links.pop(link, {parsed.device}))
            self.counters.inc("deaths")
        self.uplink_client.publish(topics.events_topic(parsed.district), orjson.dumps(event),
                                   qos=1)

    def _reject(self, exc: Rejected, topic: str, payload: bytes) -> None:
        """Count and dead-letter a rejection; never raises."""
        self.counters.inc_label("rejected", exc.reason, exc.readings)
        self.counters.inc("readings_rejected", exc.readings)
        self.counters.inc_label("rejected_messages", exc.reason)
        district = topic.split("/")[3] if topic.count("/") >= 3 else ""
        if district not in self.districts:
            district = sorted(self.districts)[0]
        letter: dict[str, Any] = {"reason": exc.reason, "detail": exc.detail,
                                  "readings": exc.readings, "topic": topic[:256],
                                  "edge": self.cfg.client_id, "edge_t": time.time()}
        body = payload[:DLQ_PAYLOAD_BYTES]
        try:
            letter["payload"] = body.decode("utf-8")
        except UnicodeDecodeError:
            letter["payload_b64"] = base64.b64encode(body).decode()
        letter["truncated"] = len(payload) > DLQ_PAYLOAD_BYTES
        self.uplink_client.publish(topics.dlq_topic(district), orjson.dumps(letter), qos=1)
        self.counters.inc("dead_letters")

    def _flush_due(self, now: float, force: bool = False) -> None:
        for b in self.builders.values():
            if len(b) and (force or b.due(now)):
                frame, _seq, n = b.seal()
                info = self.uplink_client.publish(topics.frames_topic(b.district), frame, qos=1)
                self._pending.append((info, n))
                self.counters.inc("frames_published")
                self.counters.inc("readings_framed", n)
                self.counters.inc("frame_bytes", len(frame))
        self._sweep_acks()

    def _sweep_acks(self) -> None:
        still: list[tuple[mqtt.MQTTMessageInfo, int]] = []
        for info, n in self._pending:
            if info.is_published():
                self.counters.inc("frames_acked")
                self.counters.inc("readings_acked", n)
            else:
                still.append((info, n))
        self._pending = still
