"""Peer baselines (``bench.peers``) on a real Mosquitto and a real influxd, small loads.

Checks that every figure is measured (a positive number), that the batched bridge and
citybrain itself (edge + hub) lose nothing at QoS 1, and that the quick run gives citybrain's
figures and its ratios to the peers. No timing asserts: ``citybrain bench`` is where
performance is measured.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import orjson
import pytest

import bench.peers.nodered as nodered
from bench.peers import FULL_MESSAGES, bench_peers, citybrain_ratios, combine
from bench.peers.citybrain_peer import CitybrainResult
from bench.peers.common import Consumer, PeerResult
from bench.peers.influx_raw import build_batches, run_influx_raw
from bench.peers.load import (
    LEAD_S,
    READINGS_PER_MESSAGE,
    STEP_S,
    air_stations,
    build_messages,
    publish_load,
    start_time,
)
from bench.peers.naive_bridge import run_naive_bridge, to_line
from bench.peers.raw_subscriber import run_raw_subscriber
from citybrain.localstack import HOST, InfluxV1Server, MosquittoServer
from citybrain.topics import DeviceTopic
from edge.validate import TimeLimits, check_envelope, check_records, check_time
from seeds.city import City

N = 600  # messages (1,800 readings): seconds per run


def positive(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


# -- pure parts ----------------------------------------------------------------------------


def test_load_uses_real_devices_topics_and_per_device_sequence_numbers() -> None:
    stations = air_stations()
    msgs = build_messages(stations, 3 * len(stations) + 1)
    seqs: dict[str, list[int]] = {}
    for topic, payload in msgs:
        doc = orjson.loads(payload)
        t = DeviceTopic.parse(topic)
        assert (t.device, t.domain, t.channel) == (doc["dev"], "environment", "data")
        assert len(doc["e"]) == READINGS_PER_MESSAGE
        seqs.setdefault(doc["dev"], []).append(doc["seq"])
    assert len(seqs) == len(stations)
    assert all(s == list(range(len(s))) for s in seqs.values())


def test_bridge_line_is_device_time_and_topic_tags() -> None:
    topic, payload = build_messages(air_stations("test/x"), 1)[0]
    line = to_line(topic, payload)
    head, fields, ts = line.split(" ")
    doc = orjson.loads(payload)
    assert head == (f"air,device={doc['dev']},district={doc['dev'][:6]},"
                    f"system={doc['dev'].rsplit('-', 1)[0]}")
    assert fields.count("=") == READINGS_PER_MESSAGE
    assert int(ts) == int(doc["t"] * 1e9)


def test_load_passes_the_edges_validation_even_at_full_size() -> None:
    """citybrain's edge rejects device times over 30 days old or 300 s ahead: the load's
    times are relative to now, and every message and reading of a full load is accepted."""
    stations = air_stations()
    now = time.time()
    t0 = start_time(FULL_MESSAGES, len(stations), now)
    msgs = build_messages(stations, FULL_MESSAGES, t0)
    city, limits = City(1.0), TimeLimits()
    times = []
    for topic, payload in msgs[:: len(stations) // 4] + msgs[-len(stations):]:
        env = check_envelope(city, DeviceTopic.parse(topic), orjson.loads(payload))
        check_time(env.t, now, limits, READINGS_PER_MESSAGE)
        good, bad = check_records(env)
        assert (len(good), bad) == (READINGS_PER_MESSAGE, [])
        times.append(env.t)
    assert min(times) == t0 and now - LEAD_S - 1 <= max(times) <= now - LEAD_S


def test_two_publishers_stay_within_the_hubs_lateness_in_device_time() -> None:
    """Each publisher owns every other station; however far one runs ahead of the other,
    their device times differ by less than citybrain's default allowed lateness (30 s), so
    the hub aggregates every reading (a 60 s step once put 92-95 % of them behind it)."""
    per_station = -(-FULL_MESSAGES // len(air_stations()))
    assert per_station * STEP_S < 30.0


def test_citybrain_ratios_and_its_cpu_split_across_passes() -> None:
    cb1 = CitybrainResult("citybrain", 300, 300, 30.0, 9.0, 50.0, 20.0, 30.0)
    cb2 = CitybrainResult("citybrain", 300, 300, 60.0, 9.0, 40.0, 25.0, 15.0)
    cb = combine([cb1, cb2])
    assert isinstance(cb, CitybrainResult)  # the split of the cheapest pass, adding up
    assert (cb.readings_per_s, cb.cpu_us_per_reading) == (60.0, 40.0)
    assert (cb.hub_cpu_us_per_reading, cb.edge_cpu_us_per_reading) == (25.0, 15.0)
    figs = cb.as_figures("citybrain_peer")
    assert figs["citybrain_peer_hub_cpu_us_per_reading"] == 25.0
    assert figs["citybrain_peer_edge_cpu_us_per_reading"] == 15.0
    results = {"citybrain": cb, "naive_bridge": PeerResult("b", 300, 300, 20.0, 9.0, 80.0),
               "raw_subscriber": PeerResult("r", 300, 300, 120.0, 9.0, 10.0)}
    assert citybrain_ratios(results) == {
        "citybrain_vs_naive_bridge": 3.0, "citybrain_vs_nodered": None,
        "citybrain_vs_raw_subscriber": 0.5, "citybrain_cpu_vs_naive_bridge": 2.0}


def test_raw_batches_hold_every_point_once() -> None:
    batches = build_batches(12_345, batch_lines=5_000)
    assert [b.count(b"\n") + 1 for b in batches] == [5_000, 5_000, 2_345]


def test_passes_combine_best_rate_lowest_cpu_worst_loss() -> None:
    a = PeerResult("p", 300, 300, 10.0, 5.0, 2.0)
    b = PeerResult("p", 300, 297, 20.0, 4.0, None)
    c = combine([a, b])
    assert (c.readings_per_s, c.publish_msgs_per_s, c.cpu_us_per_reading) == (20.0, 5.0, 2.0)
    assert c.lost_readings == 3


def test_nodered_without_node_is_a_reason_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodered.shutil, "which", lambda _name: None)
    assert "Node.js is not installed" in (nodered.unavailable_reason(install=True) or "")


def test_quick_mode_never_installs_nodered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodered, "installed", lambda: False)
    def no_npm(*_a: object, **_k: object) -> None:
        raise AssertionError("quick mode ran npm")

    monkeypatch.setattr(nodered.subprocess, "run", no_npm)
    monkeypatch.setattr(nodered, "node_major", lambda _node: 20)
    if nodered.shutil.which("node") is None:
        pytest.skip("no Node.js: the earlier reason applies")
    assert "not installed" in (nodered.unavailable_reason(install=False) or "")


# -- against real servers -------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_raw_subscriber_counts_everything(mosquitto: MosquittoServer,
                                          unique_topic_prefix: str) -> None:
    r = run_raw_subscriber(HOST, mosquitto.port, N, qos=1, prefix=unique_topic_prefix)
    assert r.published_readings == N * READINGS_PER_MESSAGE
    assert r.lost_readings == 0
    assert positive(r.readings_per_s) and positive(r.publish_msgs_per_s)
    assert positive(r.cpu_us_per_reading)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["batched", "per-message"])
def test_naive_bridge_lands_the_load(mode: str, mosquitto: MosquittoServer,
                                     influxd: InfluxV1Server, unique_db: str,
                                     unique_topic_prefix: str) -> None:
    r = run_naive_bridge(HOST, mosquitto.port, influxd, unique_db, N, qos=1, mode=mode,
                         prefix=unique_topic_prefix)
    assert r.published_readings == N * READINGS_PER_MESSAGE
    assert positive(r.readings_per_s) and positive(r.publish_msgs_per_s)
    assert positive(r.cpu_us_per_reading)
    if mode == "batched":
        assert r.lost_readings == 0  # QoS 1, a broker queue far above N: nothing may be lost
    else:
        assert r.landed_readings > 0


@pytest.mark.integration
@pytest.mark.slow
def test_influx_raw_writes_every_point(influxd: InfluxV1Server, unique_db: str) -> None:
    results = run_influx_raw(influxd, unique_db, 12_000, connections=(1, 2))
    assert [r.connections for r in results] == [1, 2]
    for r in results:
        assert r.errors == 0
        assert r.landed_readings == 12_000 * READINGS_PER_MESSAGE
        assert positive(r.points_per_s) and positive(r.readings_per_s)


@pytest.mark.integration
@pytest.mark.slow
def test_nodered_flow_lands_the_load(mosquitto: MosquittoServer, influxd: InfluxV1Server,
                                     unique_db: str, unique_topic_prefix: str) -> None:
    """Runs only where Node-RED is installed (``npm ci`` in bench/peers/nodered)."""
    reason = nodered.unavailable_reason(install=False)
    if reason is not None:
        pytest.skip(reason)
    r = nodered.run_nodered(HOST, mosquitto.port, influxd, unique_db, N, qos=1,
                            prefix=unique_topic_prefix)
    assert r.lost_readings == 0
    assert positive(r.readings_per_s) and positive(r.cpu_us_per_reading)


CITYBRAIN_FIGURES = ("citybrain_peer_readings_per_s", "citybrain_peer_cpu_us_per_reading",
                     "citybrain_peer_hub_cpu_us_per_reading",
                     "citybrain_peer_edge_cpu_us_per_reading", "citybrain_vs_naive_bridge",
                     "citybrain_vs_raw_subscriber", "citybrain_cpu_vs_naive_bridge")


@pytest.mark.integration
@pytest.mark.slow
def test_quick_run_measures_citybrain_beside_the_peers() -> None:
    """The quick run (its own Mosquitto and influxd): citybrain's real edge and hub land
    every reading, and the ratios to the peers are computed in the same run."""
    figs = bench_peers(quick=True)
    assert "citybrain_peer_failed_reason" not in figs, figs.get("citybrain_peer_failed_reason")
    for key in CITYBRAIN_FIGURES:
        value = figs[key]
        assert isinstance(value, float) and positive(value), (key, value)
    assert figs["citybrain_peer_lost_readings"] == 0
    assert figs["citybrain_peer_rejected_readings"] == 0
    assert figs["citybrain_peer_landed_readings"] == figs["peers_readings"]
    # a live load: every reading aggregated, none behind the hub's lateness
    assert figs["citybrain_peer_late_readings"] == 0
    assert figs["citybrain_peer_aggregated_readings"] == figs["peers_readings"]
    assert figs["naive_bridge_lost_readings"] == 0
    assert "citybrain_vs_nodered" in figs
    assert (figs["citybrain_vs_nodered"] is None) == (figs["nodered_readings_per_s"] is None)


@pytest.mark.integration
def test_raw_subscriber_waits_past_its_idle_bound_for_the_first_message(
        mosquitto: MosquittoServer, unique_topic_prefix: str, tmp_path: Path) -> None:
    """The publishers may take longer than ``--idle-s`` to start: the idle bound counts
    from the last message, not from "ready"."""
    n = 20
    consumer = Consumer.python(
        "bench.peers.raw_subscriber",
        ["--host", HOST, "--port", str(mosquitto.port), "--qos", "1",
         "--prefix", unique_topic_prefix, "--expect", str(n), "--idle-s", "0.1"],
        tmp_path / "raw.log")
    try:
        consumer.wait_event("ready", 60)
        time.sleep(0.4)  # more than --idle-s before the first message
        load = publish_load(HOST, mosquitto.port, n, 1, 1, unique_topic_prefix)
        done = consumer.wait_event("done", 60)
    finally:
        consumer.stop()
    assert load.messages == n and done["received"] == n
