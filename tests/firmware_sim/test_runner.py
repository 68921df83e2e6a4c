"""The runner: configuration, and end-to-end runs against a real Mosquitto on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citybrain.topics import DeviceTopic
from firmware_sim import FaultConfig, SimConfig, SimStats, run_sim
from firmware_sim.devices import make_model
from seeds.city import City
from tests.firmware_sim.conftest import SimBroker

START = datetime(2025, 11, 17, 9, 0, tzinfo=UTC).timestamp() - 8 * 3600  # 09:00 local


# -- configuration (no broker) ----------------------------------------------------------------
def test_sim_start_defaults() -> None:
    now = 1_800_000_000.0
    assert SimConfig().sim_start(now) == now
    assert SimConfig(speed=10.0).sim_start(now) == now  # no duration: start now
    assert SimConfig(speed=60.0, duration_s=100.0).sim_start(now) == now - 6000.0
    assert SimConfig(speed=1.0, duration_s=100.0).sim_start(now) == now
    assert SimConfig(start=123.5).sim_start(now) == 123.5
    aware = datetime(2025, 1, 1, tzinfo=UTC)
    assert SimConfig(start=aware).sim_start(now) == aware.timestamp()
    with pytest.raises(ValueError, match="timezone"):
        SimConfig(start=datetime(2025, 1, 1)).sim_start(now)


@pytest.mark.parametrize("bad", [
    {"speed": 0.0}, {"speed": float("inf")}, {"seed": -1}, {"qos": 2},
    {"devices_per_link": 0}, {"max_inflight": 65_535}, {"max_inflight": 0},
    {"mqtt_version": "3.1"}, {"client_id_prefix": "a/b"}, {"max_messages": -1},
    {"faults": FaultConfig(dropout_rate=2.0)}])
def test_validate_rejects_bad_settings(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**bad).validate()


def test_unreachable_broker_raises_connection_error_quickly() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = SimConfig(mqtt_port=port, scale=0.05, districts={"500103"}, duration_s=1.0)
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            run_sim(cfg)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(30)  # liveness: it must give up rather than retry forever
    assert not worker.is_alive(), "run_sim kept retrying an unreachable broker"
    assert len(errors) == 1 and isinstance(errors[0], ConnectionError)
    assert "cannot connect" in str(errors[0])


def test_unknown_district_is_an_error() -> None:
    with pytest.raises(ValueError, match="no devices"):
        run_sim(SimConfig(districts={"999999"}))


def test_stats_to_dict_is_json_ready() -> None:
    s = SimStats(messages_published=10, readings_published=40, wall_s=2.0,
                 readings_published_by_district={"500103": 30, "500101": 10})
    d = orjson.loads(orjson.dumps(s.to_dict()))
    assert d["messages_per_s"] == 5.0 and d["readings_per_s"] == 20.0
    assert list(d["readings_published_by_district"]) == ["500101", "500103"]
    for key in ("messages_published", "readings_published", "duplicate_messages",
                "duplicate_readings", "births", "reconnects", "unacked", "faults",
                "sim_start", "sim_end"):
        assert key in d


# -- against a real broker -------------------------------------------------------------------
@dataclass
class Received:
    """Everything a subscriber got, by channel. Appended to from paho's network thread."""

    data: list[tuple[str, bytes]] = field(default_factory=list)
    births: list[tuple[str, bytes]] = field(default_factory=list)
    deaths: list[tuple[str, bytes]] = field(default_factory=list)

    def readings(self) -> int:
        return sum(len(orjson.loads(p)["e"]) for _, p in self.data)


@pytest.fixture
def subscriber(sim_broker: SimBroker) -> Iterator[Received]:
    """A QoS 1 subscriber to every device topic, subscribed before the test body runs."""
    got = Received()
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        channel = msg.topic.rsplit("/", 1)[-1]
        {"data": got.data, "birth": got.births, "death": got.deaths}[channel].append(
            (msg.topic, bytes(msg.payload)))

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sim-test-subscriber")
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.max_inflight_messages_set(1000)
    client.connect(sim_broker.host, sim_broker.port)
    client.subscribe("cb/v1/dev/#", qos=1)
    client.loop_start()
    try:
        assert subscribed.wait(5.0), "no SUBACK"
        yield got
    finally:
        client.disconnect()
        client.loop_stop()


def wait_for(predicate: Any, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def check_topics_and_payloads(got: Received, city: City) -> dict[str, list[int]]:
    """Every data message parses and its topic names its device; returns seqs per device."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for topic, payload in got.data:
        msg = orjson.loads(payload)
        parsed = DeviceTopic.parse(topic)
        assert parsed.channel == "data"
        assert msg["dev"] == parsed.device
        dev = city.lookup_device(parsed.device)
        assert dev is not None
        assert (parsed.district, parsed.domain, parsed.system) == (
            dev.district_code, dev.domain, dev.system.system_id)
        assert isinstance(msg["seq"], int) and isinstance(msg["t"], float) and msg["e"]
        seqs[msg["dev"]].append(msg["seq"])
    return seqs


@pytest.mark.integration
@pytest.mark.parametrize(("mqtt_version", "devices_per_link", "fast_paho"), [
    ("3.1.1", None, True), ("5", 3, True), ("3.1.1", 1, False)])
def test_clean_run_delivers_everything(sim_broker: SimBroker, subscriber: Received,
                                       mqtt_version: str, devices_per_link: int | None,
                                       fast_paho: bool) -> None:
    districts = None if devices_per_link is None else {"500103", "500105", "500241"}
    cfg = SimConfig(mqtt_port=sim_broker.port, client_id_prefix=f"t{mqtt_version[0]}",
                    scale=0.3, speed=60.0, duration_s=2.0, max_messages=3000,
                    districts=districts, devices_per_link=devices_per_link,
                    faults=FaultConfig.none(), mqtt_version=mqtt_version, fast_paho=fast_paho)
    progress: list[SimStats] = []
    stats = run_sim(cfg, on_progress=progress.append)

    assert stats.unacked == 0 and stats.messages_unsent == 0 and stats.rejected == 0
    assert 0 < stats.messages_published <= 3000
    assert stats.duplicate_messages == 0 and stats.reconnects == 0
    assert wait_for(lambda: len(subscriber.data) >= stats.messages_published
                    and len(subscriber.deaths) >= stats.links), (
        len(subscriber.data), stats.messages_published)

    city = City(cfg.scale)
    seqs = check_topics_and_payloads(subscriber, city)
    assert len(subscriber.data) == stats.messages_published
    assert subscriber.readings() == stats.readings_published
    for dev, got in seqs.items():
        assert got == list(range(len(got))), dev  # contiguous from 0, in order
    by_district: Counter[str] = Counter()
    for topic, payload in subscriber.data:
        by_district[DeviceTopic.parse(topic).district] += len(orjson.loads(payload)["e"])
    assert dict(by_district) == stats.readings_published_by_district

    # One birth per device (before its data), one clean death per link.
    births = [orjson.loads(p) for _, p in subscriber.births]
    assert len(births) == stats.births == stats.devices
    assert {b["seq"] for b in births} == {0} and {b["reset"] for b in births} == {"power_on"}
    assert len({b["link"] for b in births}) == stats.links
    deaths = [orjson.loads(p) for _, p in subscriber.deaths]
    assert len(deaths) == stats.deaths == stats.links
    if devices_per_link == 1:
        assert stats.links == stats.devices
    # Device time stays within the simulated span (no skew without faults).
    times = [orjson.loads(p)["t"] for _, p in subscriber.data]
    assert stats.sim_start <= min(times) and max(times) <= stats.sim_end + 1.0
    assert stats.sim_end - stats.sim_start <= 60.0 * 3.0
    assert progress and progress[-1].messages_published <= stats.messages_published


@pytest.mark.integration
def test_faulty_run_reconnects_and_accounts_for_every_message(sim_broker: SimBroker,
                                                              subscriber: Received) -> None:
    # bay sensors die at ~30 a day (a third of them in the run's ~20 simulated minutes)
    faults = FaultConfig(dropout_rate=0.01, duplicate_rate=0.01, spike_rate=0.01,
                         reconnect_rate_per_hour=10.0, reconnect_downtime_s=(5.0, 20.0),
                         sensor_death_rate_per_day=30.0)
    stop = threading.Event()
    timer = threading.Timer(2.0, stop.set)  # stop from another thread, no duration
    cfg = SimConfig(mqtt_port=sim_broker.port, client_id_prefix="tf", scale=0.5, speed=600.0,
                    start=START, districts={"500103", "500106", "500112"}, faults=faults,
                    mqtt_version="5", max_inflight=20)
    timer.start()
    try:
        stats = run_sim(cfg, stop=stop)  # returns because stop was set (no duration given)
    finally:
        timer.cancel()
    assert stop.is_set()

    assert stats.unacked == 0 and stats.messages_unsent == 0
    assert stats.faults["link_drops"] > 0 and stats.reconnects == stats.faults["link_drops"]
    assert stats.duplicate_messages > 0 and stats.faults["dropouts"] > 0
    unique = stats.messages_published - stats.duplicate_messages

    def unique_received() -> int:
        return len({(orjson.loads(p)["dev"], orjson.loads(p)["seq"]) for _, p in
                    list(subscriber.data)})

    assert wait_for(lambda: unique_received() >= unique)
    # At least once: every message arrived; a link drop may redeliver a few (MQTT DUP).
    assert unique_received() == unique
    assert len(subscriber.data) >= stats.messages_published
    seqs = check_topics_and_payloads(subscriber, City(cfg.scale))
    gaps = sum(max(s) + 1 - len(set(s)) for s in seqs.values())
    assert gaps <= stats.faults["dropouts"]
    # Births re-sent after each reconnect; the broker fired the Will of dropped links (of
    # each one, unless a quick reconnect took the session over before it saw the drop).
    # A birth in flight when its link drops may arrive twice (at least once, like data):
    # power-on births are counted once per device.
    resets = Counter(orjson.loads(p)["reset"] for _, p in subscriber.births)
    powered_on = {topic for topic, p in subscriber.births
                  if orjson.loads(p)["reset"] == "power_on"}
    assert len(powered_on) == stats.devices and resets["link_lost"] > 0
    assert wait_for(lambda: len(subscriber.deaths) > stats.deaths)
    wills = [orjson.loads(p) for _, p in subscriber.deaths]
    assert {w["link"] for w in wills} <= {orjson.loads(p)["link"] for _, p in subscriber.births}
    # A dead sensor sent nothing after its death: no data, no birth after a reconnect.
    assert stats.faults["sensor_deaths"] > 0
    models = {d.device_id: make_model(d, cfg.seed, faults, START)
              for d in City(cfg.scale).devices()}
    for _, p in [*subscriber.data, *subscriber.births]:
        msg = orjson.loads(p)
        m = models[msg["dev"]]
        assert msg["t"] - m.faults.skew_s < m.faults.dies_at + 0.01, msg


@pytest.mark.integration
def test_what_is_sent_does_not_depend_on_speed(sim_broker: SimBroker,
                                               subscriber: Received) -> None:
    """Same seed and start at different speeds: each device's messages are byte-identical."""
    runs = []
    for k, speed in enumerate((120.0, 1200.0)):
        before = len(subscriber.data)
        cfg = SimConfig(mqtt_port=sim_broker.port, client_id_prefix=f"td{k}", scale=1.0,
                        speed=speed, start=START, duration_s=1.5, max_messages=1500,
                        districts={"500103", "500112"}, faults=FaultConfig(), seed=42)
        stats = run_sim(cfg)
        assert wait_for(lambda s=stats, b=before: len(subscriber.data) - b
                        >= s.messages_published)
        per_device: dict[str, dict[int, bytes]] = defaultdict(dict)
        for _, payload in subscriber.data[before:]:
            msg = orjson.loads(payload)
            per_device[msg["dev"]][msg["seq"]] = payload
        runs.append(per_device)
    slow, fast = runs
    compared = 0
    for dev, msgs in slow.items():
        for seq, payload in msgs.items():
            if seq in fast.get(dev, {}):
                assert fast[dev][seq] == payload
                compared += 1
    assert compared > 300


@pytest.mark.integration
def test_backpressure_delays_but_loses_nothing(sim_broker: SimBroker,
                                               subscriber: Received) -> None:
    """A tiny in-flight window and backlog: the simulator falls behind, nothing is lost."""
    cfg = SimConfig(mqtt_port=sim_broker.port, client_id_prefix="tb", districts={"500103"},
                    speed=5000.0, start=START, duration_s=1.0, max_inflight=1, max_pending=10,
                    faults=FaultConfig.none())
    stats = run_sim(cfg)
    assert stats.unacked == 0 and stats.messages_unsent == 0
    assert stats.max_lag_s > 0.0
    assert wait_for(lambda: len(subscriber.data) >= stats.messages_published)
    assert len(subscriber.data) == stats.messages_published
    for dev, seqs in check_topics_and_payloads(subscriber, City(cfg.scale)).items():
        assert seqs == list(range(len(seqs))), dev
