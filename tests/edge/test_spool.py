"""The edge's store-and-forward spool on real Mosquitto brokers: lose nothing.

Two brokers per test: the device side (``fresh_mosquitto``) keeps running, the uplink (a
second ``MosquittoServer`` of the test's own) is stopped and started to cut the edge off
the hub. A persistent-session subscriber on the uplink collects what the edge delivers;
Mosquitto saves its session on a graceful stop, so nothing published after the restart is
missed by it.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from citybrain import topics
from citybrain.dedup import Deduplicator
from citybrain.durable_log import pack_message
from citybrain.frame import Frame, decode_frame
from citybrain.localstack import INSTALL_HINT, MosquittoServer, find_binary
from citybrain.mqtt import BrokerConfig, Subscription, connect_and_wait, make_client
from citybrain.stats import Counters
from edge.batcher import FrameBuilder
from edge.gateway import EdgeConfig, EdgeGateway
from edge.local_alarms import LocalAlarmConfig, LocalAlarms
from edge.spool import EdgeSpool, SpoolPublisher
from seeds.city import City
from tests.waiting import wait_for

DISTRICT = "500103"
AIR_SYSTEM = "500103-air-01"
#: Every measurement of an air station, so one message carries 8 readings.
AIR_NAMES = (("pm2_5", "ug/m3"), ("pm10", "ug/m3"), ("so2", "ug/m3"), ("no2", "ug/m3"),
             ("co", "mg/m3"), ("o3", "ug/m3"), ("temp", "Cel"), ("humidity", "%RH"))

#: (device, seq, ts_ns, name, value): one reading, as published and as framed.
Reading = tuple[str, int, int, str, float]


def committed(edge: EdgeGateway, messages: int) -> bool:
    """Every message acknowledged, i.e. its commit is on disk (acks follow the commit)."""
    return edge.counters.get("messages_acked") == messages and not edge._unacked


def broker_of(server: MosquittoServer) -> BrokerConfig:
    return BrokerConfig(server.host, server.port)


@pytest.fixture
def uplink(tmp_path: Path) -> Iterator[MosquittoServer]:
    """The broker the edge sends frames to; the test stops and starts it."""
    if find_binary("mosquitto") is None:
        pytest.fail(f"mosquitto is not installed: {INSTALL_HINT}", pytrace=False)
    server = MosquittoServer(tmp_path / "uplink")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def edges() -> Iterator[list[EdgeGateway]]:
    """Edges a test started; whatever is still running at teardown is stopped."""
    started: list[EdgeGateway] = []
    yield started
    for edge in started:
        if edge._thread.is_alive():
            # teardown of a failed test: the failure is reported already
            with contextlib.suppress(Exception):
                edge.stop(timeout_s=2)


class Receiver:
    """A persistent-session QoS 1 subscriber: it survives restarts of its broker."""

    def __init__(self, broker: BrokerConfig, filters: list[str]) -> None:
        self._lock = threading.Lock()
        self.messages: list[tuple[str, bytes]] = []
        self._frames: list[Frame] = []
        self._readings = 0
        self.client = make_client(f"rx-{uuid.uuid4().hex[:12]}", broker, clean_session=False)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        sub = Subscription([(f, 1) for f in filters])
        self.client.on_connect = sub.on_connect
        self.client.on_subscribe = sub.on_subscribe
        self.client.on_message = self._on_message
        connect_and_wait(self.client, broker)
        sub.wait()

    def _on_message(self, client: mqtt.Client, userdata: object,
                    msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        frame = decode_frame(payload) if "/frames/" in msg.topic else None
        with self._lock:
            self.messages.append((msg.topic, payload))
            if frame is not None:
                self._frames.append(frame)
                self._readings += len(frame)

    def on(self, prefix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t.startswith(prefix)]

    def frames(self) -> list[Frame]:
        """Every frame received, in arrival order."""
        with self._lock:
            return list(self._frames)

    def reading_count(self) -> int:
        with self._lock:
            return self._readings

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def frame_readings(frames: list[Frame]) -> list[Reading]:
    out: list[Reading] = []
    for f in frames:
        for i in range(len(f)):
            out.append((f.devices[int(f.device[i])], int(f.seq[i]), int(f.ts_ns[i]),
                        f.names[int(f.name[i])], float(f.value[i])))
    return out


class Devices:
    """Air stations of district 500103 publishing data messages at QoS 1."""

    def __init__(self, broker: BrokerConfig, n_devices: int = 5, seed: int = 1) -> None:
        self.client = make_client(f"dev-{uuid.uuid4().hex[:12]}", broker)
        connect_and_wait(self.client, broker)
        self.rng = random.Random(seed)
        self.devices = [f"{AIR_SYSTEM}-{i:05d}" for i in range(n_devices)]
        self.next_seq = dict.fromkeys(self.devices, 0)
        self.base_t = float(int(time.time()) - 3600)
        self.sent: list[Reading] = []
        self.messages = 0
        self.last: dict[str, tuple[str, bytes]] = {}  # device -> its last (topic, payload)

    def publish(self, n_messages: int) -> None:
        """``n_messages`` messages round-robin over the devices, 8 random readings each."""
        infos = []
        for _ in range(n_messages):
            dev = self.devices[self.messages % len(self.devices)]
            seq = self.next_seq[dev]
            self.next_seq[dev] += 1
            t = self.base_t + self.messages * 0.25
            records = []
            for name, unit in AIR_NAMES:
                value = round(self.rng.uniform(1.0, 50.0), 6)
                records.append({"n": name, "u": unit, "v": value})
                self.sent.append((dev, seq, round(t * 1e6) * 1000, name, value))
            topic = f"cb/v1/dev/{DISTRICT}/environment/{AIR_SYSTEM}/{dev}/data"
            payload = orjson.dumps({"dev": dev, "seq": seq, "t": t, "e": records})
            self.last[dev] = (topic, payload)
            infos.append(self.client.publish(topic, payload, qos=1))
            self.messages += 1
        for info in infos:
            info.wait_for_publish(10)

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    @property
    def readings(self) -> int:
        return len(self.sent)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def edge_config(device: MosquittoServer, up: MosquittoServer, spool_dir: Path,
                client_id: str, **kw: Any) -> EdgeConfig:
    kw.setdefault("frame_max_readings", 64)
    kw.setdefault("frame_max_delay_s", 0.05)
    return EdgeConfig(broker=broker_of(device), uplink=broker_of(up), districts={DISTRICT},
                      client_id=client_id, spool_dir=spool_dir, **kw)


def start_edge(cfg: EdgeConfig, edges: list[EdgeGateway]) -> EdgeGateway:
    edge = EdgeGateway(cfg)
    edges.append(edge)
    # Back on the uplink within a second of its restart (the default backs off up to 5 s).
    edge.uplink_client.reconnect_delay_set(min_delay=1, max_delay=1)
    edge.start()
    return edge


def spool_files_bytes(spool_dir: Path) -> int:
    total = 0
    for seg in (spool_dir / "log").glob("*.seg"):
        with contextlib.suppress(FileNotFoundError):  # dropped or trimmed meanwhile
            total += seg.stat().st_size
    return total


def wait_all_sent(edge: EdgeGateway, timeout: float = 20.0) -> None:
    """Everything spooled so far was acknowledged by the uplink broker."""
    wait_for(lambda: edge.snapshot()["spool_backlog_records"] == 0
             and not edge.spool.in_flight, timeout, edge.snapshot)


def assert_in_order(frames: list[Frame]) -> tuple[int, list[int]]:
    """One epoch, and frame counters strictly increasing; returns (epoch, counters)."""
    epochs = {f.frame_seq >> 32 for f in frames}
    assert len(epochs) == 1, f"frames of several epochs: {epochs}"
    counters = [f.frame_seq & 0xFFFFFFFF for f in frames]
    assert all(a < b for a, b in itertools.pairwise(counters)), counters
    assert {f.district for f in frames} == {DISTRICT}
    return epochs.pop(), counters


# -- a. an uplink outage ----------------------------------------------------------------------
@pytest.mark.integration
def test_uplink_outage_spools_on_disk_then_delivers_everything_in_order(
        fresh_mosquitto: MosquittoServer, uplink: MosquittoServer, tmp_path: Path,
        edges: list[EdgeGateway]) -> None:
    rx = Receiver(broker_of(uplink), [topics.FRAMES_FILTER])
    spool_dir = tmp_path / "spool"
    edge = start_edge(edge_config(fresh_mosquitto, uplink, spool_dir,
                                  f"edge-{uuid.uuid4().hex[:8]}"), edges)
    dev = Devices(broker_of(fresh_mosquitto))
    try:
        dev.publish(20)  # the uplink is up: delivered at once
        wait_for(lambda: rx.reading_count() == dev.readings, what=rx.reading_count)
        wait_all_sent(edge)

        uplink.stop()
        wait_for(lambda: not edge.uplink_client.is_connected())
        dev.publish(100)
        wait_for(lambda: committed(edge, dev.messages),
                 what=edge.snapshot)
        first_backlog = edge.snapshot()["spool_backlog_records"]
        dev.publish(100)
        wait_for(lambda: committed(edge, dev.messages),
                 what=edge.snapshot)
        snap = edge.snapshot()
        # Accepted and acknowledged while the uplink is down; the frames wait on disk.
        assert snap["readings_in"] == snap["readings_framed"] == dev.readings
        assert 0 < first_backlog < snap["spool_backlog_records"]
        assert spool_files_bytes(spool_dir) >= snap["spool_bytes"] > 0
        assert snap["messages_unacked"] == 0
        assert rx.reading_count() == 20 * len(AIR_NAMES)

        uplink.start()
        wait_for(lambda: rx.reading_count() >= dev.readings, timeout=30,
                 what=rx.reading_count)
        wait_all_sent(edge)
    finally:
        dev.close()
    final = edge.stop(timeout_s=10)
    rx.close()

    frames = rx.frames()
    _, counters = assert_in_order(frames)
    assert counters == list(range(len(frames)))  # nothing lost, nothing sent twice
    assert sorted(frame_readings(frames)) == sorted(dev.sent)
    assert final["spool_left_records"] == 0
    assert final["readings_framed"] == dev.readings
    assert final.get("spool_dropped_readings", 0) == 0


# -- b. an edge restart while the uplink is down -------------------------------------------
@pytest.mark.integration
def test_edge_restart_sends_old_spool_first_and_continues_counters_and_dedup(
        fresh_mosquitto: MosquittoServer, uplink: MosquittoServer, tmp_path: Path,
        edges: list[EdgeGateway]) -> None:
    rx = Receiver(broker_of(uplink), [topics.FRAMES_FILTER])
    spool_dir = tmp_path / "spool"
    cfg = edge_config(fresh_mosquitto, uplink, spool_dir, f"edge-{uuid.uuid4().hex[:8]}")
    first = start_edge(cfg, edges)
    dev = Devices(broker_of(fresh_mosquitto))
    try:
        dev.publish(20)
        wait_for(lambda: rx.reading_count() == dev.readings, what=rx.reading_count)
        wait_all_sent(first)
        uplink.stop()
        wait_for(lambda: not first.uplink_client.is_connected())
        dev.publish(60)
        wait_for(lambda: committed(first, dev.messages),
                 what=first.snapshot)
        old_readings = dev.readings
        snap1 = first.stop(timeout_s=2)
        assert snap1["spool_left_records"] > 0
        assert snap1["readings_framed"] == dev.readings
        state = orjson.loads((spool_dir / "state.json").read_bytes())
        epoch = state["epoch"]
        frames_before = state["frame_counters"][DISTRICT]

        uplink.start()
        second = EdgeGateway(cfg)
        edges.append(second)
        second.uplink_client.reconnect_delay_set(min_delay=1, max_delay=1)
        # Counters continue from state.json, before anything new happens.
        for name in ("messages_in", "readings_in", "readings_accepted", "readings_framed",
                     "frames_published"):
            assert second.counters.get(name) == snap1[name], name
        assert second.spool.epoch == epoch
        second.start()
        # A message the first edge handled (and acknowledged) arrives again.
        dup_topic, dup_payload = dev.last[dev.devices[0]]
        dev.publish_raw(dup_topic, dup_payload)
        wait_for(lambda: second.counters.get("duplicate_messages")
                 == snap1.get("duplicate_messages", 0) + 1, what=second.snapshot)
        dev.publish(20)
        wait_for(lambda: rx.reading_count() >= dev.readings, timeout=30,
                 what=rx.reading_count)
        wait_all_sent(second)
    finally:
        dev.close()
    snap2 = second.stop(timeout_s=10)
    rx.close()

    frames = rx.frames()
    got_epoch, counters = assert_in_order(frames)
    assert got_epoch == epoch
    assert counters == list(range(len(frames)))  # no counter reused, none skipped
    # The old spool went first: every frame of the first edge precedes the second's.
    assert sorted(frame_readings(frames[:frames_before])) == sorted(dev.sent[:old_readings])
    assert sorted(frame_readings(frames)) == sorted(dev.sent)
    assert snap2["readings_in"] == dev.readings + len(AIR_NAMES)  # + the duplicate
    assert snap2["duplicates"] == snap1.get("duplicates", 0) + len(AIR_NAMES)
    assert snap2["readings_framed"] == dev.readings
    assert snap2["spool_left_records"] == 0


# -- c. a full spool ----------------------------------------------------------------------
SMALL_SPOOL = 130 * 1024  # two 64 KiB segments (the smallest the spool makes)


def fill_spool_while_uplink_down(rx: Receiver, dev: Devices, edge: EdgeGateway,
                                 uplink: MosquittoServer, spool_dir: Path,
                                 before_outage: int) -> list[int]:
    """``before_outage`` messages delivered, then 1200 (≈ 4 spools' worth) while the uplink
    is down; returns the spool's size on disk after each hundred."""
    if before_outage:
        dev.publish(before_outage)
        wait_for(lambda: rx.reading_count() == dev.readings, what=rx.reading_count)
        wait_all_sent(edge)
    uplink.stop()
    wait_for(lambda: not edge.uplink_client.is_connected())
    sizes: list[int] = []
    for _ in range(12):
        dev.publish(100)
        sizes.append(spool_files_bytes(spool_dir))
    return sizes


def check_drop_oldest(fresh_mosquitto: MosquittoServer, uplink: MosquittoServer,
                      tmp_path: Path, edges: list[EdgeGateway], before_outage: int) -> None:
    rx = Receiver(broker_of(uplink), [topics.FRAMES_FILTER])
    spool_dir = tmp_path / "spool"
    # One message per frame: many small records, so the spool fills after a few hundred.
    edge = start_edge(edge_config(fresh_mosquitto, uplink, spool_dir,
                                  f"edge-{uuid.uuid4().hex[:8]}", spool_max_bytes=SMALL_SPOOL,
                                  frame_max_readings=len(AIR_NAMES), spool_fsync=False),
                      edges)
    dev = Devices(broker_of(fresh_mosquitto))
    try:
        sizes = fill_spool_while_uplink_down(rx, dev, edge, uplink, spool_dir, before_outage)
        wait_for(lambda: committed(edge, dev.messages),
                 what=edge.snapshot)
        sizes.append(spool_files_bytes(spool_dir))
        snap = edge.snapshot()
        assert snap["spool_dropped_readings"] > 0
        assert max(sizes) <= SMALL_SPOOL
        assert snap["spool_bytes"] <= SMALL_SPOOL
        uplink.start()
        wait_all_sent(edge, timeout=30)
        # The newest reading arrives last (drop oldest never drops the newest).
        wait_for(lambda: dev.sent[-1] in frame_readings(rx.frames()[-3:]),
                 what=rx.reading_count)
    finally:
        dev.close()
    final = edge.stop(timeout_s=10)
    rx.close()

    frames = rx.frames()
    assert_in_order(frames)
    received = frame_readings(frames)
    assert Counter(received) <= Counter(dev.sent)  # what arrived is what was published
    assert len(set(received)) == len(received)
    assert final["readings_framed"] == dev.readings
    # Nothing dropped silently, nothing counted as dropped that arrived.
    assert len(received) + final["spool_dropped_readings"] == final["readings_framed"]


@pytest.mark.integration
def test_full_spool_drops_oldest_and_counts_every_dropped_reading(
        fresh_mosquitto: MosquittoServer, uplink: MosquittoServer, tmp_path: Path,
        edges: list[EdgeGateway]) -> None:
    check_drop_oldest(fresh_mosquitto, uplink, tmp_path, edges, before_outage=0)


@pytest.mark.integration
def test_full_spool_does_not_count_delivered_records_as_dropped(
        fresh_mosquitto: MosquittoServer, uplink: MosquittoServer, tmp_path: Path,
        edges: list[EdgeGateway]) -> None:
    # Records delivered before the outage may still be on disk when their segment is
    # dropped: they must not be counted as dropped.
    check_drop_oldest(fresh_mosquitto, uplink, tmp_path, edges, before_outage=20)


@pytest.mark.integration
def test_full_spool_with_block_policy_stops_acknowledging_then_delivers_everything(
        fresh_mosquitto: MosquittoServer, uplink: MosquittoServer, tmp_path: Path,
        edges: list[EdgeGateway]) -> None:
    # The spool fills well within one de-duplication snapshot interval (10 s): the
    # publisher must still be able to make room once the uplink is back.
    rx = Receiver(broker_of(uplink), [topics.FRAMES_FILTER])
    spool_dir = tmp_path / "spool"
    edge = start_edge(edge_config(fresh_mosquitto, uplink, spool_dir,
                                  f"edge-{uuid.uuid4().hex[:8]}", spool_max_bytes=SMALL_SPOOL,
                                  frame_max_readings=len(AIR_NAMES), spool_fsync=False,
                                  spool_full="block", dedup_snapshot_s=10.0),
                      edges)
    dev = Devices(broker_of(fresh_mosquitto))
    try:
        sizes = fill_spool_while_uplink_down(rx, dev, edge, uplink, spool_dir, 0)
        wait_for(lambda: edge.counters.get("spool_full_waits") > 0, what=edge.snapshot)
        acked = edge.counters.get("messages_acked")
        assert acked < dev.messages  # the broker holds the rest
        time.sleep(0.3)
        assert edge.counters.get("messages_acked") == acked  # still nothing more
        assert max(sizes) <= SMALL_SPOOL
        assert spool_files_bytes(spool_dir) <= SMALL_SPOOL
        assert edge.counters.get("spool_dropped_readings") == 0
        uplink.start()
        wait_for(lambda: rx.reading_count() >= dev.readings, timeout=30,
                 what=lambda: (rx.reading_count(), dev.readings, edge.snapshot()))
        wait_all_sent(edge)
    finally:
        dev.close()
    final = edge.stop(timeout_s=10)
    rx.close()

    frames = rx.frames()
    _, counters = assert_in_order(frames)
    assert counters == list(range(len(frames)))
    assert sorted(frame_readings(frames)) == sorted(dev.sent)
    assert final.get("spool_dropped_readings", 0) == 0
    assert final["messages_acked"] == dev.messages


# -- d. local alarms --------------------------------------------------------------------------
def kitchen_device() -> tuple[str, str]:
    """(system id, device id) of a kitchen device of the district, from the seeded city."""
    city = City(1.0)
    system = next(s for s in city.systems_in(DISTRICT) if s.domain == "kitchen")
    device = next(city.devices_of(system))
    return system.system_id, device.device_id


@pytest.mark.integration
def test_gas_leak_is_raised_at_the_edge_while_the_uplink_is_down(
        fresh_mosquitto: MosquittoServer, uplink: MosquittoServer, tmp_path: Path,
        edges: list[EdgeGateway]) -> None:
    rx = Receiver(broker_of(uplink), [topics.alarms_topic(DISTRICT)])
    edge = start_edge(edge_config(fresh_mosquitto, uplink, tmp_path / "spool",
                                  f"edge-{uuid.uuid4().hex[:8]}"), edges)
    system, device = kitchen_device()
    dev = Devices(broker_of(fresh_mosquitto))
    try:
        uplink.stop()
        wait_for(lambda: not edge.uplink_client.is_connected())
        t = time.time()
        dev.publish_raw(f"cb/v1/dev/{DISTRICT}/kitchen/{system}/{device}/data", orjson.dumps(
            {"dev": device, "seq": 0, "t": t, "e": [{"n": "gas", "u": "%LEL", "v": 25.0},
                                                    {"n": "cold_temp", "u": "Cel", "v": 4.0}]}))
        wait_for(lambda: edge.snapshot().get("local_alarms") == {"gas_leak_raised": 1},
                 what=edge.snapshot)
        assert edge.snapshot()["local_alarms_active"] == 1
        assert rx.on(topics.alarms_topic(DISTRICT)) == []
        uplink.start()
        wait_for(lambda: len(rx.on(topics.alarms_topic(DISTRICT))) == 1, timeout=30)
    finally:
        dev.close()
    edge.stop(timeout_s=10)
    rx.close()
    alarm = orjson.loads(rx.on(topics.alarms_topic(DISTRICT))[0])
    assert alarm["alarm"] == "gas_leak"
    assert alarm["state"] == "raised"
    assert alarm["device"] == device
    assert alarm["value"] == 25.0
    assert alarm["t"] == t
    assert alarm["source"] == "edge"
    assert alarm["district"] == DISTRICT
    assert alarm["edge"] == edge.cfg.client_id


def test_gas_leak_raises_once_and_clears() -> None:
    alarms = LocalAlarms(LocalAlarmConfig(clear_min_duration_s=0.0))  # no hysteresis
    assert alarms.observe("k1", "gas", 0.0, 5.0) is None
    raised = alarms.observe("k1", "gas", 1.0, 25.0)
    assert raised == {"alarm": "gas_leak", "state": "raised", "device": "k1", "t": 1.0,
                      "value": 25.0, "source": "edge"}
    assert alarms.observe("k1", "gas", 2.0, 30.0) is None  # still raised: no new document
    assert alarms.observe("k2", "gas", 2.0, 11.0) is not None  # per device
    assert alarms.active == 2
    cleared = alarms.observe("k1", "gas", 3.0, 10.0)  # at the limit is fine
    assert cleared is not None and cleared["state"] == "cleared" and cleared["value"] == 10.0
    assert alarms.active == 1
    assert alarms.observe("k1", "gas", 4.0, 2.0) is None
    assert alarms.observe("k1", "humidity", 5.0, 99.0) is None  # not a life-safety reading


def test_cold_room_alarm_needs_thirty_minutes_out_of_range() -> None:
    alarms = LocalAlarms(LocalAlarmConfig(clear_min_duration_s=0.0))
    assert alarms.observe("c1", "cold_temp", 0.0, 12.0) is None  # out of range: timer starts
    assert alarms.observe("c1", "cold_temp", 1799.0, 13.0) is None
    raised = alarms.observe("c1", "cold_temp", 1800.0, 14.0)
    assert raised is not None and raised["alarm"] == "cold_room_temperature"
    assert raised["state"] == "raised" and raised["t"] == 1800.0
    assert alarms.observe("c1", "cold_temp", 1900.0, 15.0) is None
    cleared = alarms.observe("c1", "cold_temp", 2000.0, 4.0)
    assert cleared is not None and cleared["state"] == "cleared"
    # Back in range resets the timer: a short excursion raises nothing.
    assert alarms.observe("c1", "cold_temp", 3000.0, -5.0) is None
    assert alarms.observe("c1", "cold_temp", 4000.0, 5.0) is None
    assert alarms.observe("c1", "cold_temp", 5000.0, 11.0) is None
    assert alarms.observe("c1", "cold_temp", 6799.0, 11.0) is None
    assert alarms.observe("c1", "cold_temp", 6800.0, 11.0) is not None
    assert alarms.active == 1


def test_an_alarm_clears_after_five_minutes_back_within_the_limit() -> None:
    """A gas reading hovering around the limit raises once: a good reading or a few do not
    clear it; five minutes of them do, and a bad one in between restarts the wait."""
    alarms = LocalAlarms()

    def state(t: float, v: float) -> str | None:
        doc = alarms.observe("k1", "gas", t, v)
        return None if doc is None else doc["state"]

    assert state(0.0, 25.0) == "raised"
    for t, v in ((60.0, 5.0), (120.0, 12.0), (180.0, 5.0), (240.0, 5.0), (420.0, 5.0)):
        assert state(t, v) is None  # 12 at 120 s restarted the wait
    assert state(480.0, 4.0) == "cleared"  # 300 s since 180 s
    assert alarms.active == 0 and state(540.0, 4.0) is None
    assert state(600.0, 30.0) == "raised"  # a new leak


def test_a_cold_room_clears_after_five_minutes_back_in_range() -> None:
    """As for gas (and the hub): a warm reading during the wait restarts it."""
    alarms = LocalAlarms()

    def state(t: float, v: float) -> str | None:
        doc = alarms.observe("c1", "cold_temp", t, v)
        return None if doc is None else doc["state"]

    assert state(0.0, 12.0) is None and state(1800.0, 12.0) == "raised"
    for t, v in ((1860.0, 4.0), (1920.0, 12.0), (1980.0, 4.0), (2160.0, 4.0)):
        assert state(t, v) is None  # 12 °C at 1920 s restarted the wait
    assert state(2280.0, 4.0) == "cleared"  # 300 s since 1980 s


def test_frozen_cold_room_uses_the_freezer_range() -> None:
    alarms = LocalAlarms(LocalAlarmConfig(cold_min_duration_s=60.0, clear_min_duration_s=0.0))
    alarms.set_frozen("f1", True)
    for t in (0.0, 100.0):  # −18 °C is right for a freezer ...
        assert alarms.observe("f1", "cold_temp", t, -18.0) is None
    assert alarms.observe("c1", "cold_temp", 0.0, -18.0) is None  # ... not for a chiller
    assert alarms.observe("c1", "cold_temp", 60.0, -18.0) is not None
    assert alarms.observe("f1", "cold_temp", 200.0, 4.0) is None  # chiller-fine, freezer-warm
    raised = alarms.observe("f1", "cold_temp", 260.0, 4.0)
    assert raised is not None and raised["state"] == "raised"
    alarms.set_frozen("f1", False)  # a chiller after all: 4 °C is in range
    cleared = alarms.observe("f1", "cold_temp", 300.0, 4.0)
    assert cleared is not None and cleared["state"] == "cleared"
    assert alarms.frozen == set()


def test_birth_with_frozen_attribute_sets_the_freezer_range(tmp_path: Path) -> None:
    system, device = kitchen_device()
    edge = EdgeGateway(EdgeConfig(districts={DISTRICT}, client_id="edge-unit",
                                  spool_dir=tmp_path / "spool", spool_fsync=False))
    try:
        edge.handle(f"cb/v1/dev/{DISTRICT}/kitchen/{system}/{device}/birth", orjson.dumps(
            {"dev": device, "seq": 0, "t": time.time(), "fw": "1.0", "reset": "power_on",
             "link": "l1", "interval_s": 60, "attrs": {"frozen": True}}))
        assert edge.local_alarms.frozen == {device}
    finally:
        edge.spool.log.close()


# -- the spool without brokers ------------------------------------------------------------------
def spool_frame(district: str, frame_seq: int, device: str, seqs: range) -> tuple[bytes, int]:
    b = FrameBuilder(district, max_readings=10_000)
    for s in seqs:
        b.add(device, AIR_SYSTEM, s, 1_700_000_000.0 + s, "pm2_5", float(s))
    frame, _, n = b.seal(frame_seq)
    return frame, n


def test_dedup_window_is_rebuilt_from_the_snapshot_and_the_journal_after_it(
        tmp_path: Path) -> None:
    # Tiny segments: one record each, so the spool can be trimmed to its active segment.
    spool = EdgeSpool(tmp_path, Counters(), fsync=False, segment_bytes=64)
    dedup = Deduplicator()
    dev = f"{AIR_SYSTEM}-00000"

    def commit_messages(seqs: range) -> None:
        for s in seqs:
            dedup.check(dev, s)
        frame, n = spool_frame(DISTRICT, spool.next_frame_seq(DISTRICT), dev, seqs)
        spool.put(topics.frames_topic(DISTRICT), frame, n)
        spool.commit({"readings_in": seqs.stop}, [(dev, s) for s in seqs])

    commit_messages(range(10))
    spool.save_dedup(dedup)
    commit_messages(range(10, 15))  # after the snapshot: a crash before the next one
    spool.put(topics.dlq_topic(DISTRICT), b"{}")
    spool.commit({"readings_in": 15})
    # Everything was delivered and trimmed: the journal does not depend on the spool.
    spool.log.trim(spool.log.committed_offset)
    assert spool.log.first_offset > 0
    spool.log.close()
    spool.journal.close()

    again = EdgeSpool(tmp_path, Counters(), fsync=False, segment_bytes=64)
    restored = Deduplicator()
    assert again.load_dedup(restored) == 1  # the commit after the snapshot is replayed
    assert again.saved_counters == {"readings_in": 15}
    assert again.epoch == spool.epoch
    assert again.next_frame_seq(DISTRICT) == (spool.epoch << 32) | 2
    for s in range(15):
        assert restored.check(dev, s).value == "duplicate", s
    assert restored.check(dev, 15).value == "new"
    again.log.close()
    again.journal.close()


def test_a_crash_between_journal_and_spool_fsync_forgets_the_journal_record(
        tmp_path: Path) -> None:
    """The journal is made durable just before the spool. A crash between the two cuts the
    frames at recovery; their (device, seq) must then not count as seen, or the broker's
    re-delivery of those messages would be taken for duplicates and their readings lost
    (seen under load in the edge-killed fault test)."""
    spool = EdgeSpool(tmp_path, Counters(), fsync=False, segment_bytes=1024)
    dev = f"{AIR_SYSTEM}-00000"
    frame, n = spool_frame(DISTRICT, spool.next_frame_seq(DISTRICT), dev, range(5))
    spool.put(topics.frames_topic(DISTRICT), frame, n)
    spool.commit({"readings_in": 5}, [(dev, s) for s in range(5)])  # durable: seqs 0..4
    frame, n = spool_frame(DISTRICT, spool.next_frame_seq(DISTRICT), dev, range(5, 9))
    spool.put(topics.frames_topic(DISTRICT), frame, n)
    # commit() gets as far as the journal's fsync; the process dies before the spool's:
    class Died(Exception):
        pass

    def die() -> int:
        raise Died

    spool.log.commit = die  # type: ignore[method-assign]
    with pytest.raises(Died):
        spool.commit({"readings_in": 9}, [(dev, s) for s in range(5, 9)])
    spool.journal.close()
    # SIGKILL: the appended frame reached the OS, its commit marker never did (no close(),
    # which would commit).
    spool.log._active.flush()
    spool.log._active.close()

    again = EdgeSpool(tmp_path, Counters(), fsync=False, segment_bytes=1024)
    restored = Deduplicator()
    again.load_dedup(restored)
    assert again.log.committed_offset == 1  # the second frame was cut
    assert [restored.check(dev, s).value for s in range(9)] == ["duplicate"] * 5 + ["new"] * 4
    assert again.counters.get("dedup_journal_uncommitted") == 1
    again.log.close()
    again.journal.close()


def test_a_crash_after_the_spool_fsync_never_hands_a_frame_id_out_again(
        tmp_path: Path) -> None:
    """The frames of a commit are durable before the state that counts them is written. A
    crash between the two must not restart the frame counter below them: the hub drops a
    frame whose id it has seen, so the next frames' readings would be lost as duplicates
    (seen in the edge-killed fault test)."""
    spool = EdgeSpool(tmp_path, Counters(), fsync=False, segment_bytes=1024)
    dev = f"{AIR_SYSTEM}-00000"
    ids = []
    for k in range(2):  # the second commit dies after the spool's fsync
        seq = spool.next_frame_seq(DISTRICT)
        ids.append(seq)
        frame, n = spool_frame(DISTRICT, seq, dev, range(5 * k, 5 * k + 5))
        spool.put(topics.frames_topic(DISTRICT), frame, n)
        if k == 1:
            class Died(Exception):
                pass

            real = spool._save_state

            def save_then_die(counters: dict[str, Any], real: Any = real) -> None:
                if counters.get("readings_in") == 10:  # the state after the fsync
                    raise Died
                real(counters)

            spool._save_state = save_then_die  # type: ignore[method-assign]
            with pytest.raises(Died):
                spool.commit({"readings_in": 10}, [(dev, s) for s in range(5, 10)])
        else:
            spool.commit({"readings_in": 5}, [(dev, s) for s in range(5)])
    spool.journal.close()
    spool.log.close()

    again = EdgeSpool(tmp_path, Counters(), fsync=False, segment_bytes=1024)
    assert again.log.committed_offset == 2  # both frames survived
    assert again.next_frame_seq(DISTRICT) > max(ids)
    assert again.saved_counters == {"readings_in": 5}  # the stats of what was acknowledged
    again.log.close()
    again.journal.close()


def test_dedup_snapshot_never_covers_a_message_that_is_not_on_disk(tmp_path: Path) -> None:
    """A crash right after a periodic de-duplication snapshot: the broker re-delivers every
    message not yet acknowledged, and the restored window must not call those duplicates
    (their readings would be lost, counted as duplicates)."""
    edge = EdgeGateway(EdgeConfig(districts={DISTRICT}, client_id="edge-unit",
                                  spool_dir=tmp_path / "spool", spool_fsync=False,
                                  frame_max_delay_s=3600.0, dedup_snapshot_s=0.0))
    dev = f"{AIR_SYSTEM}-00000"
    topic = f"cb/v1/dev/{DISTRICT}/environment/{AIR_SYSTEM}/{dev}/data"
    payload = orjson.dumps({"dev": dev, "seq": 7, "t": time.time(), "e": [
        {"n": "pm2_5", "u": "ug/m3", "v": 12.5}]})
    edge._thread.start()  # the processing thread alone: no broker needed
    try:
        edge._queue.put((1, 1, topic, payload, False))
        wait_for(lambda: edge.counters.get("readings_accepted") == 1)
        dedup_file = tmp_path / "spool" / "dedup.bin"
        wait_for(lambda: dedup_file.exists() and dedup_file.stat().st_mtime_ns
                 > time.time_ns() - 10**9)
        time.sleep(0.2)  # several snapshots later
        # What a restarted edge would restore from disk right now:
        restored = Deduplicator()
        edge.spool.load_dedup(restored)
        if restored.check(dev, 7).value == "duplicate":
            assert edge.spool.log.committed_offset > 0, (
                "the snapshot holds seq 7, but no frame with its reading is on disk")
            assert edge.counters.get("messages_acked") == 1
    finally:
        edge._stopping.set()
        edge._thread.join(5)
        edge.spool.log.close()


def test_publisher_resends_what_replaced_a_torn_tail(tmp_path: Path) -> None:
    """A tail cut at recovery (a crash with ``spool_fsync=False``) hands its offsets out
    again; the ``sent`` cursor saved before must not make the publisher skip new records."""
    spool = EdgeSpool(tmp_path, Counters(), fsync=False)
    for _ in range(3):
        spool.put(topics.dlq_topic(DISTRICT), b"x" * 100)
    spool.commit({})
    spool.log.save_cursor("sent", 3)  # all three acknowledged by the uplink broker
    spool.log.close()
    seg = sorted((tmp_path / "log").glob("*.seg"))[-1]
    seg.write_bytes(seg.read_bytes()[:-60])  # the last record only partly on disk

    again = EdgeSpool(tmp_path, Counters(), fsync=False)
    assert again.log.recovered_torn_bytes > 0
    publisher = SpoolPublisher(again, make_client("edge-unit-up", BrokerConfig()), Counters())
    again.put(topics.dlq_topic(DISTRICT), b"new")
    again.commit({})
    assert publisher.backlog == 1
    assert [r.payload for r in again.log.reader(publisher.cursor)] == [
        pack_message(topics.dlq_topic(DISTRICT), b"new")]
    again.log.close()
