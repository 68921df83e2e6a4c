"""Integration tests for citybrain.localstack against the real binaries on 127.0.0.1."""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citybrain.localstack import (
    HOST,
    InfluxV1Server,
    LocalServer,
    MosquittoServer,
    VictoriaMetricsServer,
    free_port,
    missing_binaries,
)

pytestmark = pytest.mark.integration

WAIT = 10.0  # s: upper bound for any single network round trip in these tests


# ---------------------------------------------------------------------------
# helpers


@contextmanager
def mqtt_client(server: MosquittoServer) -> Iterator[mqtt.Client]:
    """A connected paho client with its network loop running; disconnected on exit."""
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:10]}")
    client.on_connect = lambda *_: connected.set()
    client.connect(server.host, server.port, keepalive=10)
    client.loop_start()
    try:
        assert connected.wait(WAIT), "no CONNACK from broker"
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def subscribe(client: mqtt.Client, topic: str) -> queue.Queue[mqtt.MQTTMessage]:
    """Subscribe at QoS 1, wait for SUBACK, return the queue messages land in."""
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, msg: inbox.put(msg)
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe(topic, qos=1)
    assert subscribed.wait(WAIT), f"no SUBACK for {topic}"
    return inbox


def publish(client: mqtt.Client, topic: str, payload: bytes, *, retain: bool = False) -> None:
    """Publish at QoS 1 and wait for the broker's PUBACK."""
    info = client.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(timeout=WAIT)
    assert info.is_published(), f"no PUBACK for {topic}"


def refuses_connections(port: int) -> bool:
    """True if nothing accepts TCP on 127.0.0.1:port."""
    try:
        socket.create_connection((HOST, port), timeout=1.0).close()
    except OSError:
        return True
    return False


def influx_values(server: InfluxV1Server, db: str, q: str) -> list[list[Any]]:
    """Rows of the first series of ``q`` (ns epoch timestamps), [] if none."""
    result = server.query(q, db=db, epoch="ns")
    series = result["results"][0].get("series", [])
    return list(series[0]["values"]) if series else []


def victoria_series(server: VictoriaMetricsServer, match: str) -> list[dict[str, Any]]:
    """Export ``match`` after a forced flush, polling until it appears or WAIT passes."""
    deadline = time.monotonic() + WAIT
    while True:
        server.flush()
        found = server.export(match)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# ports and binaries


def test_binaries_installed() -> None:
    assert missing_binaries() == []


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind((HOST, port))


@pytest.mark.parametrize("cls", [MosquittoServer, InfluxV1Server, VictoriaMetricsServer])
def test_auto_port_taken_before_start_is_repicked(tmp_path: Path, cls: type[LocalServer]) -> None:
    server = cls(tmp_path / "srv")
    with socket.socket() as squatter:
        squatter.bind((HOST, server.port))
        squatter.listen()
        taken = server.port
        with server:
            assert server.port != taken
            assert server.running


# ---------------------------------------------------------------------------
# mosquitto


def test_mosquitto_delivers(mosquitto: MosquittoServer, unique_topic_prefix: str) -> None:
    topic = f"{unique_topic_prefix}/ping"
    with mqtt_client(mosquitto) as sub, mqtt_client(mosquitto) as pub:
        inbox = subscribe(sub, topic)
        publish(pub, topic, b"hello")
        msg = inbox.get(timeout=WAIT)
    assert (msg.topic, msg.payload) == (topic, b"hello")
    assert mosquitto.host == "127.0.0.1"


def test_mosquitto_retained_survives_restart(
    fresh_mosquitto: MosquittoServer, unique_topic_prefix: str
) -> None:
    topic = f"{unique_topic_prefix}/state"
    with mqtt_client(fresh_mosquitto) as pub:
        publish(pub, topic, b"online", retain=True)
    port = fresh_mosquitto.port
    fresh_mosquitto.restart()
    assert fresh_mosquitto.port == port
    assert (fresh_mosquitto.data_dir / "mosquitto.db").is_file()
    with mqtt_client(fresh_mosquitto) as sub:
        msg = subscribe(sub, topic).get(timeout=WAIT)
    assert (msg.payload, msg.retain) == (b"online", True)


def test_mosquitto_kill_then_restart(fresh_mosquitto: MosquittoServer) -> None:
    fresh_mosquitto.kill()
    assert not fresh_mosquitto.running
    assert refuses_connections(fresh_mosquitto.port)
    fresh_mosquitto.restart()
    assert fresh_mosquitto.running
    with mqtt_client(fresh_mosquitto):
        pass


def test_mosquitto_bad_config_raises_with_log_tail(tmp_path: Path) -> None:
    broker = MosquittoServer(tmp_path / "m", extra_config="no_such_option 1\n")
    with pytest.raises(RuntimeError, match="no_such_option"):
        broker.start(timeout=WAIT)
    assert not broker.running


def test_mosquitto_config_has_required_settings(tmp_path: Path) -> None:
    broker = MosquittoServer(tmp_path / "m", port=1883, extra_config="password_file /x\n")
    text = broker.config_text()
    for line in (
        f"listener 1883 {HOST}",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {tmp_path / 'm'}/",
        "max_queued_messages 100000",
        "max_inflight_messages 10000",
    ):
        assert line in text.splitlines()
    assert "max_packet_size" not in text
    assert text.rstrip().endswith("password_file /x")


# ---------------------------------------------------------------------------
# influxd


def test_influxd_write_and_query(influxd: InfluxV1Server, unique_db: str) -> None:
    assert influxd.url == f"http://127.0.0.1:{influxd.port}"
    influxd.create_database(unique_db)
    influxd.write(unique_db, "air,district=d01 pm25=12.5 1700000000000000000")
    rows = influx_values(influxd, unique_db, "SELECT pm25 FROM air")
    assert rows == [[1700000000000000000, 12.5]]


def test_influxd_restart_keeps_data(fresh_influxd: InfluxV1Server, unique_db: str) -> None:
    fresh_influxd.create_database(unique_db)
    fresh_influxd.write(unique_db, "air,district=d02 pm25=7i 1700000000000000000")
    port = fresh_influxd.port
    fresh_influxd.restart()
    assert fresh_influxd.port == port
    rows = influx_values(fresh_influxd, unique_db, "SELECT pm25 FROM air")
    assert rows == [[1700000000000000000, 7]]


def test_two_influxd_at_once(tmp_path: Path, unique_db: str) -> None:
    with InfluxV1Server(tmp_path / "a") as a, InfluxV1Server(tmp_path / "b") as b:
        assert len({a.port, a.rpc_port, b.port, b.rpc_port}) == 4
        a.create_database(unique_db)
        a.write(unique_db, "m v=1 1")
        assert influx_values(a, unique_db, "SELECT v FROM m") == [[1, 1.0]]
        assert unique_db not in str(b.query("SHOW DATABASES"))
    assert not a.running and not b.running


def test_influxd_port_in_use_raises_with_log_tail(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        server = InfluxV1Server(tmp_path / "i", port=squatter.getsockname()[1])
        with pytest.raises(RuntimeError, match="address already in use"):
            server.start(timeout=WAIT)
    assert not server.running


# ---------------------------------------------------------------------------
# victoria-metrics


def test_victoria_line_protocol_export(victoria: VictoriaMetricsServer, unique_db: str) -> None:
    now_ns = time.time_ns()
    victoria.write(f"air,district=d03 pm25=3.5 {now_ns}", db=unique_db)
    found = victoria_series(victoria, f'air_pm25{{db="{unique_db}"}}')
    assert len(found) == 1
    assert found[0]["metric"]["district"] == "d03"
    assert found[0]["values"] == [3.5]
    assert found[0]["timestamps"] == [now_ns // 1_000_000]


def test_victoria_restart_keeps_data(fresh_victoria: VictoriaMetricsServer, unique_db: str) -> None:
    fresh_victoria.write(f"air pm25=1 {time.time_ns()}", db=unique_db)
    assert victoria_series(fresh_victoria, f'air_pm25{{db="{unique_db}"}}')
    port = fresh_victoria.port
    fresh_victoria.restart()
    assert fresh_victoria.port == port
    assert len(fresh_victoria.export(f'air_pm25{{db="{unique_db}"}}')) == 1


def test_stop_and_kill_are_idempotent(tmp_path: Path) -> None:
    server = VictoriaMetricsServer(tmp_path / "v")
    server.stop()
    server.kill()
    server.start()
    server.start()  # no-op while running
    pid = server.pid
    assert pid is not None
    server.stop()
    server.stop()
    assert server.pid is None
    assert refuses_connections(server.port)
