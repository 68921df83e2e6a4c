"""The district edge gateway service: MQTT in, validated frames out.

Threads and contracts:
  * paho's network thread (device side) only enqueues ``(mid, qos, topic, payload, dup)``
    into the intake (``edge.intake``): a whole read's messages at once (``_on_messages``,
    the ``FastClient`` batch handler), or one (``_on_message``, stock paho or a packet the
    batch path leaves to paho). The intake is bounded, so a slow edge pushes back on the
    broker (TCP) instead of growing without limit. Device messages are acknowledged
    manually (QoS 1, persistent session), never on receipt.
  * one processing thread (``_run``) owns validation, de-duplication, local alarms and the
    frame builders. Everything it produces (frames, dead letters, lifecycle events, local
    alarms) goes into the on-disk spool (``edge.spool``). A *commit* seals every pending
    frame, fsyncs the spool with the counters, and then acknowledges every device message
    handled so far: a message is acknowledged only once its outcome is on disk. Commits
    happen when a frame is due (full, or ``frame_max_delay_s`` old) or ``ack_window``
    messages await acknowledgement (the broker must allow that many in flight, e.g.
    Mosquitto ``max_inflight_messages``). It takes messages in batches (what accumulated,
    up to ``CHUNK``) and adds its per-message counts to ``counters`` once per batch and
    before every commit, so a snapshot taken meanwhile lags by at most one batch. A message
    that passes every check at a glance (``quick_message``: a healthy device's) takes a
    short path through ``_take``; any other goes through ``_classify``, which gives the
    same outcome for the former and the reasons for the rest.
  * the uplink thread (``edge.spool.SpoolPublisher``) publishes the spool in order at QoS 1;
    while the broker or uplink is down the spool grows on disk (bounded; full → drop oldest,
    counted, or block) and is replayed in order after reconnect or restart.
  * ``stop()`` takes no more device messages (those not taken stay un-acknowledged, so the
    broker re-delivers them to the next run), commits and acknowledges what was taken, then
    publishes the spool (bounded wait) and reports what is left in it.

Every message ends in exactly one of: readings framed, rejected (dead letter with reason),
duplicate. Counters say how many of each, in readings, and survive restarts (state.json).
"""

from __future__ import annotations

import base64
import logging
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from citybrain import topics
from citybrain.dedup import Deduplicator, Seen
from citybrain.fastpaho import FastClient, RawMessage, ack_all
from citybrain.mqtt import BrokerConfig, Subscription, connect_and_wait, make_client
from citybrain.payload import MAX_PAYLOAD_BYTES
from citybrain.stats import Counters, StatsWriter
from edge.batcher import FrameBuilder
from edge.intake import Intake
from edge.local_alarms import LocalAlarms
from edge.spool import EdgeSpool, SpoolPublisher
from edge.validate import (
    DataRoute,
    Rejected,
    TimeLimits,
    check_envelope,
    check_time,
    data_route,
    numeric_by_kind,
    parse_json,
    parse_topic,
    quick_envelope,
    quick_message,
    readings_claimed,
    resolve_device,
    split_records,
)
from seeds.city import City, catalogue_by_kind

log = logging.getLogger("citybrain.edge")

#: Seal and acknowledge early when no message came for this long with some unacknowledged:
#: a broker whose in-flight limit is below ``ack_window`` waits for acknowledgements.
STARVED_S = 0.1
#: Dead letters carry at most this much of the offending payload.
DLQ_PAYLOAD_BYTES = 2048
#: Most device messages the processing thread takes from the intake at once.
CHUNK = 512
#: Most data topics whose route (parsed topic, device, catalogue) is kept; beyond it, new
#: topics are checked in full on every message (correct, slower). ≈ 1 KiB per route.
MAX_ROUTES = 1 << 18


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
    #: Spool directory (state survives restarts); None: a temporary one, removed at stop.
    spool_dir: Path | None = None
    spool_max_bytes: int = 256 * 1024**2
    spool_full: str = "drop_oldest"  # or "block"
    spool_fsync: bool = True
    #: Most device messages awaiting acknowledgement before a commit is forced.
    ack_window: int = 5000
    uplink_in_flight: int = 64  # frames published and not yet acknowledged by the broker
    dedup_snapshot_s: float = 10.0
    stats_path: Path | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # Prometheus /metrics; None: off


def _scalar(v: Any) -> str | int | float | bool | None:
    """A lifecycle field passed on only if it is a small scalar (strings ≤ 64 chars)."""
    if isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) <= 64):
        return v
    return None


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


#: What the short path needs of a kept route, looked up once per topic: the route, device
#: id, system id, the district's frame builder, and whether the device is a kitchen's.
_HotRoute = tuple[DataRoute, str, str, FrameBuilder, bool]


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
        self._tmp_spool: tempfile.TemporaryDirectory[str] | None = None
        spool_dir = cfg.spool_dir
        if spool_dir is None:
            self._tmp_spool = tempfile.TemporaryDirectory(prefix="citybrain-spool-")
            spool_dir = Path(self._tmp_spool.name)
        self.spool = EdgeSpool(spool_dir, self.counters, max_bytes=cfg.spool_max_bytes,
                               fsync=cfg.spool_fsync, full_policy=cfg.spool_full)
        self.counters.restore(self.spool.saved_counters)
        replayed = self.spool.load_dedup(self.dedup)
        if replayed or self.spool.saved_counters:
            log.info("edge %s resumes its spool: %d records to send, %d frames replayed "
                     "into de-duplication", cfg.client_id,
                     self.spool.log.committed_offset - self.spool.log.load_cursor(
                         "sent", self.spool.log.first_offset), replayed)
        self.local_alarms = LocalAlarms()
        self.builders = {
            d: FrameBuilder(d, max_readings=cfg.frame_max_readings,
                            max_delay_s=cfg.frame_max_delay_s) for d in sorted(self.districts)}
        self.links: dict[str, set[str]] = {}  # link id -> devices born on it
        self._queue: Intake[tuple[int, int, str, bytes, bool]] = Intake(cfg.queue_size)
        self._unacked: list[tuple[int, int]] = []  # (mid, qos) handled, not yet committed
        self._seen: list[tuple[str, int]] = []  # (device, seq) new since the last commit
        self._routes: dict[str, DataRoute] = {}  # data topic -> its route (see _route)
        self._hot: dict[str, _HotRoute] = {}  # the same topics -> what ``_take`` needs
        # Per-message counts not yet added to ``counters`` (see _flush_counts).
        self._tally: Counter[str] = Counter()
        self._tally_labelled: Counter[tuple[str, str]] = Counter()
        self._open: list[FrameBuilder] = []  # builders with readings, oldest first
        self._full = False  # a builder reached frame_max_readings
        self._dlq_fallback = sorted(self.districts)[0]
        self._intake_open = True
        #: The processing thread stopped on a spool failure (the process should exit).
        self.failed = False
        self._last_dedup_save = time.monotonic()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-worker", daemon=True)
        self._stats = StatsWriter(cfg.stats_path, self.snapshot)
        self._metrics_server: Any = None
        self.device_client = make_client(f"{cfg.client_id}-dev", cfg.broker,
                                         clean_session=False, manual_ack=True)
        self._subscription = Subscription(
            [(topics.device_filter(d), 1) for d in sorted(self.districts)])
        self.device_client.on_connect = self._subscription.on_connect
        self.device_client.on_subscribe = self._subscription.on_subscribe
        self.device_client.on_message = self._on_message
        if isinstance(self.device_client, FastClient):
            self.device_client.set_batch_handler(self._on_messages)
        self.uplink_client = make_client(f"{cfg.client_id}-up", cfg.uplink or cfg.broker)
        self.publisher = SpoolPublisher(self.spool, self.uplink_client, self.counters,
                                        max_in_flight=cfg.uplink_in_flight)
        self.uplink_client.on_publish = self.publisher.on_publish
        # The Will tells the hub and operators that this edge (and its districts) vanished.
        self._state_topic = topics.edge_state_topic(cfg.client_id)
        self.uplink_client.will_set(self._state_topic, self._state_doc("offline"), qos=1,
                                    retain=True)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        connect_and_wait(self.uplink_client, self.cfg.uplink or self.cfg.broker)
        self.uplink_client.publish(self._state_topic, self._state_doc("online"), qos=1,
                                   retain=True)
        self.publisher.start()
        self._thread.start()
        connect_and_wait(self.device_client, self.cfg.broker)
        self._subscription.wait()  # ready only once the broker routes device messages here
        self._stats.start()
        if self.cfg.metrics_port is not None:
            from prometheus_client import start_http_server

            from hub.http import metrics_registry
            registry = metrics_registry("citybrain_edge", self.snapshot,
                                        gauges=("queue_depth", "frames_unacked",
                                                "devices_tracked", "spool_bytes",
                                                "spool_backlog_records", "messages_unacked",
                                                "local_alarms_active"))
            self._metrics_server, _ = start_http_server(
                self.cfg.metrics_port, addr=self.cfg.metrics_host, registry=registry)
        log.info("edge %s serving %d districts", self.cfg.client_id, len(self.districts))

    def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Graceful stop (each stage bounded by ``timeout_s``): take no more device messages,
        commit and acknowledge what was taken, publish the spool. Returns the final
        counters; ``spool_left_records`` says what stays on disk for the next run."""
        self._intake_open = False
        self._queue.close()  # a message waiting for room is not taken (nor acknowledged)
        self.spool.stop_waiting.set()
        self._stopping.set()
        self._thread.join(timeout=timeout_s)
        self.device_client.disconnect()
        self.device_client.loop_stop()
        left = self.publisher.drain(timeout_s)
        self.counters.inc("spool_left_records", left)
        if left:
            log.warning("edge %s stops with %d records spooled on disk for the next run",
                        self.cfg.client_id, left)
        info = self.uplink_client.publish(self._state_topic, self._state_doc("offline"), qos=1,
                                          retain=True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:  # uplink down: not sent (its Will says it)
            info.wait_for_publish(2)
        self.uplink_client.disconnect()
        self.uplink_client.loop_stop()
        self._stats.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        snap = self.snapshot()
        self.spool.log.close()
        if self._tmp_spool is not None:
            self._tmp_spool.cleanup()
        return snap

    def _state_doc(self, state: str) -> bytes:
        return orjson.dumps({"state": state, "edge": self.cfg.client_id,
                             "districts": sorted(self.districts)})

    def snapshot(self) -> dict[str, Any]:
        snap = self.counters.snapshot()
        snap["cpu_s"] = time.process_time()
        snap["queue_depth"] = self._queue.qsize()
        snap["frames_unacked"] = len(self.spool.in_flight)
        snap["messages_unacked"] = len(self._unacked)
        snap["spool_bytes"] = self.spool.log.size_bytes
        snap["spool_backlog_records"] = self.publisher.backlog
        snap["local_alarms_active"] = self.local_alarms.active
        snap["devices_tracked"] = len(self.dedup)
        snap["districts"] = sorted(self.districts)
        return snap

    # -- paho callbacks (network thread): enqueue only ------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self._intake_open:  # after stop(): not taken, not acknowledged → re-delivered
            self._queue.put((msg.mid, msg.qos, msg.topic, bytes(msg.payload), bool(msg.dup)))

    def _on_messages(self, batch: list[RawMessage]) -> None:
        """``FastClient`` batch handler: a read's messages, in order, as ``_on_message``
        would enqueue them one by one."""
        if self._intake_open:  # as in _on_message
            self._queue.put_many(batch)

    # -- processing thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except (OSError, ValueError) as exc:
            # The spool cannot take writes (disk full, failing disk): stop taking messages.
            # Nothing handled since the last commit was acknowledged, so the broker keeps
            # it for the next run; the process exits non-zero (see ``failed``).
            log.critical("edge %s: spool write failed (%s); intake stopped, unacknowledged "
                         "messages stay with the broker", self.cfg.client_id, exc)
            self.counters.inc("spool_failures")
            self._intake_open = False
            self._queue.close()
            self.failed = True
        finally:
            self._flush_counts()

    def _loop(self) -> None:
        last_message = time.monotonic()
        intake = self._queue
        ack_window = self.cfg.ack_window
        while True:
            chunk = intake.drain(CHUNK, timeout_s=0.05)
            if chunk:
                last_message = time.monotonic()
                self._take(chunk, ack_window)
                self._flush_counts()
            elif self._stopping.is_set():
                break
            now = time.monotonic()
            if self._open and self._open[0].due(now):  # the oldest frame is old enough
                self.commit()
            elif self._unacked and intake.empty() and (
                    now - last_message >= STARVED_S or not self._open):
                # Nothing waits in a frame, or nothing has come for a while: the broker may
                # be holding the rest until we acknowledge (its in-flight limit), so commit.
                self.counters.inc("commits_early")
                self.commit()
            if now - self._last_dedup_save >= self.cfg.dedup_snapshot_s:
                # The snapshot may hold only messages whose outcome is on disk: a message
                # still pending in a frame is not acknowledged, so after a crash the broker
                # re-delivers it, and it must not be taken for a duplicate then.
                self.commit()
                self.spool.save_dedup(self.dedup)
                self._last_dedup_save = now
        self.commit()
        self.spool.save_dedup(self.dedup)

    def _flush_counts(self) -> None:
        """Add the per-message counts gathered since the last flush to ``counters``."""
        if self._tally:
            for name, n in self._tally.items():
                self.counters.inc(name, n)
            self._tally.clear()
        if self._tally_labelled:
            for (name, label), n in self._tally_labelled.items():
                self.counters.inc_label(name, label, n)
            self._tally_labelled.clear()

    def commit(self) -> None:
        """Seal every pending frame, make the spool and counters durable, then acknowledge
        every device message handled so far (processing thread)."""
        self._flush_counts()
        for b in self.builders.values():
            if len(b):
                frame, _seq, n = b.seal(self.spool.next_frame_seq(b.district))
                self.spool.put(topics.frames_topic(b.district), frame, n)
                self.counters.inc("frames_published")
                self.counters.inc("readings_framed", n)
                self.counters.inc("frame_bytes", len(frame))
        self._open = []
        self._full = False
        if not (self._unacked or self._seen) and (
                self.spool.log.next_offset == self.spool.log.committed_offset):
            return
        self.counters.inc("messages_acked", len(self._unacked))  # persisted with the commit
        self.spool.commit(self.counters.snapshot(), self._seen)
        self._seen = []
        ack_all(self.device_client, self._unacked)  # one write for the whole commit
        self._unacked = []

    def _take(self, chunk: list[RawMessage], ack_window: int) -> None:
        """Handle a drained chunk of device messages in order (processing thread): each
        ends framed, rejected or duplicate, is then awaiting acknowledgement (QoS 1), and a
        commit follows any message after which a frame is full or ``ack_window`` messages
        await acknowledgement.

        A message on a kept route whose JSON passes ``quick_message`` goes the short way
        here: the same counts, de-duplication, frame and local alarms as ``_classify``
        gives it, with the per-message counts summed in locals (added to ``_tally``
        before any commit and at the end). Any other message goes to ``_classify``."""
        hot = self._hot
        dedup_check = self.dedup.check
        limits = self.cfg.time_limits
        loads = orjson.loads
        now = time.time
        new = Seen.NEW
        messages = readings = accepted = 0
        try:
            for mid, qos, topic, payload, dup in chunk:
                try:
                    head = None
                    route = hot.get(topic)
                    if route is not None and len(payload) <= MAX_PAYLOAD_BYTES:
                        try:
                            doc = loads(payload)
                        except orjson.JSONDecodeError:
                            pass  # _classify rejects it
                        else:
                            head = quick_message(route[0], doc, now(), limits)
                    if head is None or route is None:
                        self._classify(topic, payload, dup)
                    else:
                        seq, t, names, values = head
                        n = len(names)
                        messages += 1
                        readings += n
                        _, device_id, system_id, builder, kitchen = route
                        seen = dedup_check(device_id, seq)
                        if seen is new:
                            self._seen.append((device_id, seq))
                            if not builder.pending:
                                self._open.append(builder)
                            builder.add_many(device_id, system_id, seq, t, names, values)
                            if builder.pending >= builder.max_readings:
                                self._full = True
                            accepted += n
                            if kitchen:
                                self._observe(builder.district, device_id, t, names, values)
                        elif seen is Seen.DUPLICATE:
                            tally = self._tally
                            tally["duplicates"] += n
                            tally["duplicate_messages"] += 1
                            if dup:
                                tally["redelivered_messages"] += 1
                        else:
                            self._reject(Rejected("stale_seq", f"seq {seq} is below the replay "
                                                  "window", n), topic, payload)
                except Exception:  # never let one message kill the edge; count it
                    log.exception("unexpected error handling a message on %s", topic)
                    self._reject(Rejected("internal_error", "see edge log"), topic, payload)
                if qos:
                    self._unacked.append((mid, qos))
                if self._full or len(self._unacked) >= ack_window:
                    self._add_tally(messages, readings, accepted)
                    messages = readings = accepted = 0
                    self.commit()
        finally:  # also when a spool failure ends the chunk early: counted as before
            self._add_tally(messages, readings, accepted)

    def _add_tally(self, messages: int, readings: int, accepted: int) -> None:
        """Add ``_take``'s local sums to ``_tally`` (as ``_classify`` counts each message)."""
        if messages:
            tally = self._tally
            tally["messages_in"] += messages
            tally["readings_in"] += readings
            if accepted:
                tally["readings_accepted"] += accepted

    def handle(self, topic: str, payload: bytes, dup: bool = False) -> None:
        """Classify one device message (processing thread, or tests): ``counters`` include
        it on return. Frames are sealed by ``commit``."""
        try:
            self._classify(topic, payload, dup)
        finally:
            self._flush_counts()

    def _route(self, topic: str) -> DataRoute | None:
        """The kept route of a data topic of a known, served device; None for others."""
        route = self._routes.get(topic)
        if route is None:
            route = data_route(self.city, topic, self.districts)
            if route is not None and len(self._routes) < MAX_ROUTES:
                self._routes[topic] = route
                device = route.device
                self._hot[topic] = (route, device.device_id, device.system.system_id,
                                    self.builders[route.topic.district],
                                    route.topic.domain == "kitchen")
        return route

    def _classify(self, topic: str, payload: bytes, dup: bool) -> None:
        """Every message ends framed, rejected (with reason) or duplicate; counts in
        ``_tally``. A known data topic skips re-parsing, and a well-formed message the
        full header checks (``quick_envelope``); the outcome is the same either way."""
        tally = self._tally
        tally["messages_in"] += 1
        route = self._routes.get(topic) or self._route(topic)
        try:
            parsed = route.topic if route is not None else parse_topic(topic, self.districts)
            doc = parse_json(payload)
        except Rejected as exc:
            tally["readings_in"] += 1
            self._reject(exc, topic, payload)
            return
        if parsed.channel != "data":
            self._lifecycle(parsed, doc, topic, payload)
            return
        head = (None if route is None
                else quick_envelope(route, doc, time.time(), self.cfg.time_limits))
        if head is not None and route is not None:
            seq, t, records = head
            device = route.device
            n = len(records)  # as readings_claimed
            tally["readings_in"] += n
        else:
            n = readings_claimed(doc)
            tally["readings_in"] += n
            try:
                env = check_envelope(self.city, parsed, doc)
            except Rejected as exc:
                self._reject(exc, topic, payload)
                return
            device, seq, t, records = env.device, env.seq, env.t, env.records
        device_id = device.device_id
        seen = self.dedup.check(device_id, seq)
        if seen is Seen.DUPLICATE:
            tally["duplicates"] += n
            tally["duplicate_messages"] += 1
            if dup:
                tally["redelivered_messages"] += 1
            return
        if seen is Seen.NEW:
            self._seen.append((device_id, seq))
        if seen is Seen.STALE:
            self._reject(Rejected("stale_seq", f"seq {seq} is below the replay window", n),
                         topic, payload)
            return
        if head is None:  # quick_envelope checked the time already
            try:
                check_time(t, time.time(), self.cfg.time_limits, n)
            except Rejected as exc:
                self._reject(exc, topic, payload)
                return
        if route is not None:
            names, values, bad = split_records(records, route.catalogue, route.numeric)
        else:
            names, values, bad = split_records(records, catalogue_by_kind()[device.kind],
                                               numeric_by_kind()[device.kind])
        for rejection in bad:
            self._reject(rejection, topic, payload)
        if not names:
            return
        builder = self.builders[parsed.district]
        if not len(builder):
            self._open.append(builder)
        builder.add_many(device_id, device.system.system_id, seq, t, names, values)
        if len(builder) >= builder.max_readings:
            self._full = True
        tally["readings_accepted"] += len(names)
        if parsed.domain == "kitchen":
            self._observe(parsed.district, device_id, t, names, values)

    def _observe(self, district: str, device_id: str, t: float, names: list[str],
                 values: list[float]) -> None:
        """Feed a kitchen device's accepted readings to the local alarms."""
        for name, value in zip(names, values, strict=True):
            alarm = self.local_alarms.observe(device_id, name, t, value)
            if alarm is not None:
                self._local_alarm(district, alarm)

    def _local_alarm(self, district: str, alarm: dict[str, Any]) -> None:
        """Raised here, at once, whatever the uplink does; delivered through the spool."""
        self._tally_labelled["local_alarms", f"{alarm['alarm']}_{alarm['state']}"] += 1
        log.warning("local alarm %s %s: device %s value %s", alarm["alarm"], alarm["state"],
                    alarm["device"], alarm["value"])
        alarm |= {"district": district, "edge": self.cfg.client_id, "edge_t": time.time()}
        self.spool.put(topics.alarms_topic(district), orjson.dumps(alarm))

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
                                 "t": _scalar(doc.get("t")), "edge_t": time.time()}
        if parsed.channel == "birth":
            try:
                resolve_device(self.city, parsed, doc.get("dev", ""), 0)
            except Rejected as exc:
                self._reject(exc, topic, payload)
                return
            self.links.setdefault(link, set()).add(parsed.device)
            attrs = _clean_attrs(doc.get("attrs"))
            if "frozen" in attrs:
                self.local_alarms.set_frozen(parsed.device, bool(attrs["frozen"]))
            event |= {"device": parsed.device, "fw": _scalar(doc.get("fw")),
                      "reset": _scalar(doc.get("reset")),
                      "attrs": attrs}
            self._tally["births"] += 1
        else:
            event["devices"] = sorted(self.links.pop(link, {parsed.device}))
            self._tally["deaths"] += 1
        self.spool.put(topics.events_topic(parsed.district), orjson.dumps(event))

    def _reject(self, exc: Rejected, topic: str, payload: bytes) -> None:
        """Count and dead-letter a rejection; never raises."""
        self._tally_labelled["rejected", exc.reason] += exc.readings
        self._tally["readings_rejected"] += exc.readings
        self._tally_labelled["rejected_messages", exc.reason] += 1
        district = topic.split("/")[3] if topic.count("/") >= 3 else ""
        if district not in self.districts:
            district = self._dlq_fallback
        letter: dict[str, Any] = {"reason": exc.reason, "detail": exc.detail,
                                  "readings": exc.readings, "topic": topic[:256],
                                  "edge": self.cfg.client_id, "edge_t": time.time()}
        body = payload[:DLQ_PAYLOAD_BYTES]
        try:
            letter["payload"] = body.decode("utf-8")
        except UnicodeDecodeError:
            letter["payload_b64"] = base64.b64encode(body).decode()
        letter["truncated"] = len(payload) > DLQ_PAYLOAD_BYTES
        self.spool.put(topics.dlq_topic(district), orjson.dumps(letter))
        self._tally["dead_letters"] += 1
