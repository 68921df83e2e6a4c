"""Several hubs on one broker (``hub.cluster``), as real processes on a real Mosquitto and
influxd: three hubs store exactly the aggregates one hub stores, and killing one of three
mid-stream loses nothing.

Bounded: every wait has a deadline and fails the test with what it was waiting for.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from citybrain.frame import encode_frame
from citybrain.localstack import InfluxV1Server, MosquittoServer, missing_binaries
from citybrain.mqtt import BrokerConfig, connect_and_wait, make_client
from citybrain.topics import frames_topic
from citybrain.up import Child, CityRun, influx_count
from hub.cluster import combine_snapshots
from seeds.city import City, catalogue_by_kind
from tests.test_faults import assert_aggregates_not_doubled, finish, running_city
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(bool({"mosquitto", "influxd"} & set(missing_binaries())),
                                reason="needs mosquitto and influxd (make setup)")

PARTITIONS = 6
T0_NS = 1_763_712_000_000_000_000  # device time of the first round (2025-11-21T08:00Z)
ROUND_NS = 5_000_000_000
ROUNDS = 30  # 150 s of device time: 10 s, 1 min and 1 h windows, several of each


def city_frames(seed: int = 5) -> Iterator[tuple[str, bytes, int]]:
    """(topic, frame, readings): every device of the scale-1 city, one numeric measurement
    each per round, every district's frame of a round before the next round's. Seeded:
    the same bytes every time."""
    rng = np.random.default_rng(seed)
    city = City(1.0)
    per_district: dict[str, tuple[list[str], list[str], list[str], np.ndarray]] = {}
    for d in city.districts:
        devices, systems, names = [], [], []
        span: list[tuple[float, float]] = []
        for s in city.systems_in(d.code):
            m = next(m for m in catalogue_by_kind()[s.kind].values()
                     if m.dtype in ("float", "int"))
            for dev in city.devices_of(s):
                devices.append(dev.device_id)
                systems.append(s.system_id)
                names.append(m.name)
                span.append((m.min, m.min + (m.max - m.min) / 2))
        per_district[d.code] = (devices, systems, names, np.array(span).reshape(-1, 2))
    for r in range(ROUNDS):
        for code, (devices, systems, names, bounds) in per_district.items():
            n = len(devices)
            if n == 0:
                continue
            uniq = sorted(set(names))
            ts = T0_NS + r * ROUND_NS + rng.integers(0, ROUND_NS, n)
            value = np.round(rng.uniform(bounds[:, 0], bounds[:, 1]))  # whole: fits int ones too
            frame = encode_frame(code, (7 << 32) | r, 0, devices, systems, uniq, ts, value,
                                 np.full(n, r), np.arange(n),
                                 np.array([uniq.index(x) for x in names]))
            yield frames_topic(code), frame, n


def publish_all(broker: MosquittoServer) -> int:
    client = make_client(f"test-frames-{os.getpid()}", BrokerConfig(broker.host, broker.port))
    connect_and_wait(client, BrokerConfig(broker.host, broker.port))
    total = 0
    try:
        for topic, frame, n in city_frames():
            client.publish(topic, frame, qos=1).wait_for_publish(timeout=10)
            total += n
    finally:
        client.disconnect()
        client.loop_stop()
    return total


def hub_child(tmp: Path, name: str, broker: MosquittoServer, influx: InfluxV1Server,
              db: str, extra: list[str]) -> Child:
    env = dict(os.environ, CITYBRAIN_MQTT_HOST=broker.host,
               CITYBRAIN_MQTT_PORT=str(broker.port), PYTHONUNBUFFERED="1")
    for key in ("CITYBRAIN_MQTT_USERNAME", "CITYBRAIN_MQTT_PASSWORD",
                "CITYBRAIN_MQTT_PASSWORD_FILE"):
        env.pop(key, None)
    (tmp / "run").mkdir(exist_ok=True)
    (tmp / "log").mkdir(exist_ok=True)
    return Child(name, ["hub", "--influx-url", influx.url, "--influx-api", "v1",
                        "--influx-db", db, "--http-port", "-1", "--close-windows-at-exit",
                        *extra], tmp, env)


def rows(influx: InfluxV1Server, db: str, measurement: str) -> set[tuple[Any, ...]]:
    """Every point of ``measurement``: (tags, time, fields) as hashable tuples."""
    out = influx.query(f'SELECT * FROM "{measurement}" GROUP BY *', db, epoch="ns")
    result = set()
    for s in out["results"][0].get("series", []):
        tags = tuple(sorted(s.get("tags", {}).items()))
        for values in s["values"]:
            result.add((tags, *values))
    return result


def stop_all(children: list[Child]) -> None:
    for c in children:
        c.terminate()  # all at once, and once: a second SIGTERM can kill an exiting hub
    for c in children:
        assert c.terminate_and_wait(90) == 0, f"{c.name} failed; see {c.log_path}"


def test_three_hubs_store_exactly_what_one_hub_stores(
        tmp_path: Path, fresh_mosquitto: MosquittoServer, influxd: InfluxV1Server,
        unique_db: str) -> None:
    """One hub (database A) and a cluster of three (database B) subscribe to the same
    broker and see the same seeded frames in the same run; their stored aggregates at every
    resolution, and their raw readings, are identical point for point."""
    one_db, three_db = f"{unique_db}_one", f"{unique_db}_three"
    single = hub_child(tmp_path, "single", fresh_mosquitto, influxd, one_db,
                       ["--client-id", "single", "--wal-dir", str(tmp_path / "wal-single")])
    nodes = [hub_child(tmp_path, f"node-{i}", fresh_mosquitto, influxd, three_db,
                       ["--client-id", "cluster", "--partitions", str(PARTITIONS),
                        "--cluster-dir", str(tmp_path / "cluster"), "--node-id", f"node-{i}"])
             for i in range(3)]
    children = [single, *nodes]
    try:
        def ready() -> bool:
            for c in children:
                if not c.alive():
                    pytest.fail(f"{c.name} exited; see {c.log_path}")
            owned = [set(c.stats().get("partitions_owned", [])) for c in nodes]
            return (single.stats_path.exists() and set().union(*owned) == set(range(PARTITIONS))
                    and all(owned))  # every node serves a share: a real cluster
        wait_for(ready, 90, lambda: "one hub and a three-hub cluster serving every partition")
        total = publish_all(fresh_mosquitto)
        wait_for(lambda: int(single.stats().get("hub_received", 0)) >= total and int(
            combine_snapshots([c.stats() for c in nodes]).get("hub_received", 0)) >= total,
            90, lambda: "both to receive every published reading")
        stop_all(children)
    finally:
        for c in children:
            if c.alive():
                c.kill()
    cluster = combine_snapshots([c.stats() for c in nodes])
    assert cluster["handovers"] == 0 and cluster["late_readings"] == 0
    for m in ("agg_10s", "agg_1m", "agg_1h"):
        a, b = rows(influxd, one_db, m), rows(influxd, three_db, m)
        assert len(a) > 1000 if m == "agg_10s" else a
        assert a == b, f"{m}: {len(a - b)} points only with one hub, {len(b - a)} only with three"
    assert [influx_count(influxd.url, db) for db in (one_db, three_db)] == [total, total]


@pytest.fixture
def cluster_city(tmp_path: Path) -> Iterator[CityRun]:
    yield from running_city(tmp_path, hubs=3, partitions=PARTITIONS)


def test_killing_one_of_three_hubs_loses_nothing(cluster_city: CityRun) -> None:
    """sim → edges → three hubs; one hub is SIGKILLed mid-stream and never comes back. The
    survivors adopt its partitions (its WAL from the shared directory, its MQTT sessions by
    client id: the broker re-delivers what it never acknowledged), and the accounting at
    the end shows every published reading stored, rejected or a duplicate."""
    victim = cluster_city.hubs[1]
    wait_for(lambda: int(victim.stats().get("hub_received", 0)) >= 20_000, 60,
             lambda: "the victim to be mid-stream (20k readings received)")
    held = set(victim.stats().get("partitions_owned", []))
    assert held, "the victim served no partition"
    victim.kill()
    cluster_city.hub_restarted = True  # no one hub's counters cover the whole run now
    wait_for(lambda: cluster_city.partitions_served() == set(range(PARTITIONS)), 60,
             lambda: f"the survivors to adopt {held}: {cluster_city.partitions_served()}")
    report = finish(cluster_city)
    survivors = [h.stats() for h in cluster_city.hubs if h is not victim]
    assert sum(int(s.get("adoptions", 0)) for s in survivors) >= len(held)
    assert_aggregates_not_doubled(cluster_city, report)
