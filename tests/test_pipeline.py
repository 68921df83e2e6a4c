"""Edge and hub in-process on a real Mosquitto and a real influxd: every reading accounted."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import orjson
import paho.mqtt.client as mqtt
import pytest

from citybrain.localstack import InfluxV1Server, MosquittoServer
from citybrain.mqtt import BrokerConfig, connect_and_wait, make_client
from citybrain.up import influx_count
from edge.gateway import EdgeConfig, EdgeGateway
from hub.service import Hub, HubConfig
from hub.sinks import InfluxConfig

pytestmark = pytest.mark.integration


def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.05)


def air(dev: str, seq: int, t: float, pm: float = 35.0) -> tuple[str, bytes]:
    topic = f"cb/v1/dev/500103/environment/500103-air-01/{dev}/data"
    return topic, orjson.dumps({"dev": dev, "seq": seq, "t": t, "e": [
        {"n": "pm2_5", "u": "ug/m3", "v": pm}, {"n": "o3", "u": "ug/m3", "v": 60.5},
        {"n": "temp", "u": "Cel", "v": 18.25}]})


def test_edge_and_hub_account_for_every_reading(mosquitto: MosquittoServer,
                                                influxd: InfluxV1Server, unique_db: str) -> None:
    broker = BrokerConfig(mosquitto.host, mosquitto.port)
    tag = uuid.uuid4().hex[:8]
    hub = Hub(HubConfig(broker=broker, client_id=f"hub-{tag}", window_s=10,
                        influx=InfluxConfig(url=influxd.url, database=unique_db)))
    edge = EdgeGateway(EdgeConfig(broker=broker, districts={"500103"}, client_id=f"edge-{tag}",
                                  frame_max_readings=50, frame_max_delay_s=0.1))
    hub.start()
    edge.start()
    pub = make_client(f"pub-{tag}", broker)
    connect_and_wait(pub, broker)
    now = time.time() - 120
    sent = 0
    infos = []
    for i in range(40):
        for d in range(5):
            topic, payload = air(f"500103-air-01-{d:05d}", i, now + i * 2)
            infos.append(pub.publish(topic, payload, qos=1))
            sent += 3
    # A duplicate send, an out-of-range value, malformed JSON and a foreign device.
    topic, payload = air("500103-air-01-00000", 0, now)
    infos.append(pub.publish(topic, payload, qos=1))
    topic, payload = air("500103-air-01-00001", 1000, now + 100, pm=5000.0)
    infos.append(pub.publish(topic, payload, qos=1))
    infos.append(pub.publish(topic, b"{not json", qos=1))
    infos.append(pub.publish(topic.replace("00001/data", "00002/data"), payload, qos=1))
    sent += 3 + 3 + 1 + 3
    for info in infos:
        info.wait_for_publish(10)
    pub.disconnect()
    wait_for(lambda: edge.counters.get("readings_in") >= sent)
    e = edge.stop()
    wait_for(lambda: hub.counters.get("hub_received") >= e["readings_framed"])
    h = hub.stop()

    assert e["readings_in"] == sent
    assert e["duplicates"] == 3
    assert e["rejected"] == {"malformed_json": 1, "out_of_range": 1, "topic_mismatch": 3}
    assert e["readings_framed"] == e["readings_accepted"] == 40 * 5 * 3 + 2
    assert h["hub_received"] == e["readings_framed"]
    assert h["stored_raw"] == h["hub_received"]
    assert influx_count(influxd.url, unique_db) == h["stored_raw"]
    assert sent == h["stored_raw"] + e["readings_rejected"] + e["duplicates"]
    # 5 devices × 3 measurements over 80 s of device time in 10 s windows, plus one window
    # for the lone valid reading of the rejected-pm message.
    assert h["aggregated_readings"] == h["hub_received"]
    assert h["stored_agg"] > 0
    # Every resolution holds every aggregated reading exactly once (on-time emissions were
    # overwritten by the final ones: same series and timestamp).
    for label in ("10s", "1m", "1h"):
        doc = influxd.query(f'SELECT sum("count") FROM agg_{label}', db=unique_db)
        assert doc["results"][0]["series"][0]["values"][0][1] == h["aggregated_readings"]


def test_births_and_wills_reach_the_hub(mosquitto: MosquittoServer, influxd: InfluxV1Server,
                                        unique_db: str) -> None:
    broker = BrokerConfig(mosquitto.host, mosquitto.port)
    tag = uuid.uuid4().hex[:8]
    hub = Hub(HubConfig(broker=broker, client_id=f"hub-{tag}",
                        influx=InfluxConfig(url=influxd.url, database=unique_db)))
    edge = EdgeGateway(EdgeConfig(broker=broker, districts={"500103"}, client_id=f"edge-{tag}"))
    hub.start()
    edge.start()
    dev = "500103-air-01-00003"
    base = f"cb/v1/dev/500103/environment/500103-air-01/{dev}"
    device = make_client(f"dev-{tag}", broker)
    device.will_set(f"{base}/death", orjson.dumps({"link": f"link-{tag}", "t": time.time()}),
                    qos=1)
    connect_and_wait(device, broker)
    device.publish(f"{base}/birth", orjson.dumps({
        "dev": dev, "seq": 0, "t": time.time(), "fw": "1.0", "reset": "power_on",
        "link": f"link-{tag}", "interval_s": 60}), qos=1).wait_for_publish(5)
    wait_for(lambda: hub.counters.get("births") == 1)
    assert f"link-{tag}" in hub.online_links
    # Drop the connection without DISCONNECT: the broker publishes the Will.
    sock = device.socket()
    assert sock is not None
    device.loop_stop()
    sock.close()
    wait_for(lambda: hub.counters.get("deaths") == 1, timeout=60)
    assert f"link-{tag}" not in hub.online_links
    edge.stop()
    hub.stop()
    assert isinstance(device, mqtt.Client)
