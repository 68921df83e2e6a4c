"""The hub's analytics, fed real frames and stored in a real influxd: AQI hourly and daily,
kitchen alarm lifecycle, and the windows they are built from."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from citybrain import topics
from citybrain.localstack import InfluxV1Server, MosquittoServer
from citybrain.mqtt import BrokerConfig, Subscription, connect_and_wait, make_client
from edge.batcher import FrameBuilder
from hub.service import Hub, HubConfig
from hub.sinks import InfluxConfig, ensure_target_with_retry
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

DAY = 86400
TZ = 8 * 3600
STATION = "500103-air-01-00000"
KITCHEN = "500103-kitchen-01-00000"
# HJ 633-2026 hourly: PM2.5 80 → IAQI 119 (60→100, 115→150), the largest: AQI 119, 轻度污染.
AIR = {"pm2_5": 80.0, "pm10": 120.0, "so2": 10.0, "no2": 40.0, "co": 1.2, "o3": 100.0}


def values(influxd: InfluxV1Server, db: str, q: str) -> list[list]:
    res = influxd.query(q, db=db)["results"][0]
    return [row for s in res.get("series", []) for row in s["values"]]


def test_aqi_hourly_daily_and_kitchen_alarms(influxd: InfluxV1Server, unique_db: str) -> None:
    hub = Hub(HubConfig(client_id=f"hub-{uuid.uuid4().hex[:8]}",
                        influx=InfluxConfig(url=influxd.url, database=unique_db)))
    ensure_target_with_retry(hub.sink)
    hub.writer.start()
    now = int(time.time())
    day0 = (now + TZ) // DAY * DAY - TZ - 3 * DAY  # a local midnight three days ago
    builder = FrameBuilder("500103", max_readings=10_000)
    seq = 0
    for hour in range(26):
        for step in range(6):  # every 10 minutes
            t = day0 + hour * 3600 + step * 600 + 5
            for name, v in AIR.items():
                builder.add(STATION, "500103-air-01", seq, t, name, v)
            gas = 50.0 if (hour, step) == (3, 0) else 0.5  # one leak, then back to normal
            builder.add(KITCHEN, "500103-kitchen-01", seq, t, "gas", gas)
            seq += 1
        frame, _, _ = builder.seal()
        hub.handle_frame(frame)
        hub.tick(time.monotonic())
    hub.emit(hub.windows.close_all())
    assert hub.counters.get("analytics_errors") == 0
    assert hub.writer.stop(30) == 0

    hourly = values(influxd, unique_db,
                    f"SELECT aqi, category, final FROM aqi_1h WHERE station='{STATION}'")
    finals = [r for r in hourly if r[3] == 1]
    assert len(finals) == 26 and all(r[1] == 119 and r[2] == 3 for r in finals)
    district = values(influxd, unique_db, "SELECT aqi FROM aqi_district_1h")
    assert district and all(r[1] == 119 for r in district)
    daily = values(influxd, unique_db, "SELECT aqi, category FROM aqi_1d")
    assert len(daily) == 1 and daily[0][1] == 119
    alarms = values(influxd, unique_db,
                    "SELECT value FROM kitchen_alarm WHERE alarm='gas_leak' "
                    f"AND restaurant='{KITCHEN}' GROUP BY state")
    # raised at 50 %LEL, cleared at 0.5; the restaurant named by its device id (the station
    # registered first: restaurants are numbered among kitchens, not by device)
    assert sorted(r[1] for r in alarms) == [0.5, 50.0]
    # this hub never connects to a broker: paho keeps both alarms (QoS 1) for a connection
    # that never comes, and the hub says so instead of counting them published
    assert hub.counters.get("alarms_queued_offline") == 2
    assert hub.counters.get("alarms_published") == 0
    count = values(influxd, unique_db, 'SELECT sum("count") FROM agg_1h')
    assert count[0][1] == 26 * 6 * 7


def test_kitchen_alarms_reach_the_alarm_topic(mosquitto: MosquittoServer,
                                              influxd: InfluxV1Server, unique_db: str) -> None:
    """A hub connected to its broker publishes each alarm transition on the district's
    alarm topic, and counts it published only then."""
    broker = BrokerConfig(mosquitto.host, mosquitto.port)
    got: list[dict] = []
    rx = make_client(f"rx-{uuid.uuid4().hex[:8]}", broker)
    sub = Subscription([(topics.alarms_topic("500103"), 1)])
    rx.on_connect, rx.on_subscribe = sub.on_connect, sub.on_subscribe
    rx.on_message = lambda c, u, msg: got.append(orjson.loads(msg.payload))
    connect_and_wait(rx, broker)
    sub.wait()
    hub = Hub(HubConfig(client_id=f"hub-{uuid.uuid4().hex[:8]}", broker=broker,
                        influx=InfluxConfig(url=influxd.url, database=unique_db)))
    ensure_target_with_retry(hub.sink)
    hub.writer.start()
    # the hub's MQTT side only: frames are handed to it directly, as in the test above
    connect_and_wait(hub.client, broker)
    try:
        t0 = int(time.time()) - 3600
        builder = FrameBuilder("500103", max_readings=1_000)
        for seq in range(6):  # every 10 minutes: a leak at the second reading, then normal
            builder.add(KITCHEN, "500103-kitchen-01", seq, t0 + seq * 600, "gas",
                        50.0 if seq == 1 else 0.5)
            frame, _, _ = builder.seal()
            hub.handle_frame(frame)
            hub.tick(time.monotonic())
        hub.emit(hub.windows.close_all())
        wait_for(lambda: len(got) == 2, timeout=10, what=lambda: got)
    finally:
        hub.client.disconnect()
        hub.client.loop_stop()
        rx.disconnect()
        rx.loop_stop()
    assert hub.writer.stop(30) == 0
    assert [(a["alarm"], a["state"]) for a in got] == [("gas_leak", "raised"),
                                                       ("gas_leak", "cleared")]
    assert hub.counters.get("alarms_published") == 2
    assert hub.counters.get("alarms_queued_offline") == 0
