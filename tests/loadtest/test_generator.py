"""Pacing arithmetic, and one real run into Mosquitto counted by a subscriber."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citybrain.frame import decode_frame
from citybrain.loadtest.generator import LoadConfig, Progress, Stream, run_load
from citybrain.loadtest.profiles import RateProfile
from citybrain.localstack import MosquittoServer, free_port
from citybrain.mqtt import BrokerConfig, Subscription, connect_and_wait
from tests.waiting import wait_for


@pytest.mark.parametrize("weights", [[1] * 7, [3, 1, 2, 8, 1]])
@pytest.mark.parametrize("profile", [RateProfile("constant", 1000.0, 10.0),
                                     RateProfile("ramp", 1000.0, 10.0),
                                     RateProfile("burst", 1000.0, 10.0, base=0.0, burst_s=1.0,
                                                 period_s=4.0)])
def test_stream_items_are_due_at_their_intended_time(weights: list[int],
                                                     profile: RateProfile) -> None:
    s = Stream(np.array(weights), 0.25, profile)
    final = s.due(profile.total)
    t = s.intended(0, final)
    assert np.all(np.diff(t) >= 0) and t[-1] <= profile.duration_s
    # At an item's intended time it (and everything before it) is due, and not a moment
    # before it; the due count never runs ahead of the schedule's readings.
    for j in range(0, final, max(1, final // 50)):
        assert s.due(profile.expected_by(float(t[j])) * (1 + 1e-12)) >= j + 1
        assert s.due(profile.expected_by(float(t[j]) - 1e-6)) <= j
    cycle_readings = sum(weights)
    assert abs(final / len(weights) * cycle_readings - profile.total * 0.25) <= cycle_readings


class _Counter:
    """Subscriber that only keeps payloads (its callback stays thin); decoded later."""

    def __init__(self, server: MosquittoServer, prefix: str) -> None:
        self.payloads: list[bytes] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"count-{prefix[5:]}")
        sub = Subscription([(f"{prefix}/#", 1)])
        self.client.on_connect = sub.on_connect
        self.client.on_subscribe = sub.on_subscribe
        self.client.on_message = self._on_message
        connect_and_wait(self.client, BrokerConfig(port=server.port))
        sub.wait()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.payloads.append(bytes(msg.payload))

    def count(self) -> int:
        with self.lock:
            return len(self.payloads)

    def readings_by_device(self, mode: str) -> Counter[str]:
        out: Counter[str] = Counter()
        with self.lock:
            payloads = list(self.payloads)
        for p in payloads:
            if mode == "frames":
                f = decode_frame(p)
                out.update(np.array(f.devices)[f.device].tolist())
            else:
                doc = orjson.loads(p)
                out[doc["dev"]] += len(doc["e"])
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("mode", "rate"), [("frames", 20_000.0), ("messages", 2_000.0)])
def test_run_load_publishes_what_a_subscriber_receives(mosquitto: MosquittoServer,
                                                       unique_topic_prefix: str, mode: str,
                                                       rate: float) -> None:
    counter = _Counter(mosquitto, unique_topic_prefix)
    progress: list[Progress] = []
    cfg = LoadConfig(mode=mode, profile=RateProfile("step", rate, 2.5, steps=2),
                     devices=1_500, processes=2, connections=2, frame_readings=2_000,
                     broker=BrokerConfig(port=mosquitto.port),
                     topic_prefix=unique_topic_prefix, grace_s=20.0)
    try:
        result = run_load(cfg, on_progress=progress.append)
        wait_for(lambda: counter.count() >= result.messages, timeout=30,
                 what=lambda: (counter.count(), result.messages))
        received = counter.readings_by_device(mode)
    finally:
        counter.close()
    assert result.errors == 0 and not result.interrupted and result.processes == 2
    # Every reading the schedule asked for was published and acknowledged, exactly once.
    assert result.readings == result.expected == result.acked_readings > 0
    assert abs(result.expected - cfg.profile.total) <= 38 * 8  # ≤ one item per district
    assert counter.count() == result.messages
    assert sum(received.values()) == result.readings
    assert dict(received) == result.device_counts()
    assert int(result.published_by_second.sum()) == int(result.sent_by_second.sum()) \
        == result.readings
    assert result.lag_us.get_total_count() == result.readings
    assert progress and progress[-1].readings <= result.readings
    summary = result.summary()
    assert summary["published_readings"] == result.readings and summary["devices"] == 1_500


def test_a_failing_worker_fails_the_run_instead_of_hanging() -> None:
    cfg = LoadConfig(profile=RateProfile("constant", 100.0, 1.0), devices=300, processes=2,
                     broker=BrokerConfig(port=free_port()))  # nothing listens there
    with pytest.raises(RuntimeError, match="ConnectionRefusedError"):
        run_load(cfg)


@pytest.mark.integration
def test_stop_event_ends_the_run_early_with_final_reports(mosquitto: MosquittoServer,
                                                          unique_topic_prefix: str) -> None:
    stop = threading.Event()
    cfg = LoadConfig(profile=RateProfile("constant", 5_000.0, 600.0), devices=300,
                     processes=1, broker=BrokerConfig(port=mosquitto.port),
                     topic_prefix=unique_topic_prefix)
    result = run_load(cfg, on_progress=lambda p: stop.set(), stop_event=stop)
    assert result.interrupted and result.readings < result.expected
    assert sum(result.device_counts().values()) == result.readings
