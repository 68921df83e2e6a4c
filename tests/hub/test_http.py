"""The hub's HTTP endpoints on a running hub: state API, SSE, Prometheus, static files."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest

from citybrain.localstack import InfluxV1Server, MosquittoServer, free_port
from citybrain.mqtt import BrokerConfig
from hub.http import wait_http
from hub.service import Hub, HubConfig
from hub.sinks import InfluxConfig

pytestmark = pytest.mark.integration


@pytest.fixture
def hub_url(mosquitto: MosquittoServer, influxd: InfluxV1Server, unique_db: str
            ) -> Iterator[str]:
    port = free_port()
    hub = Hub(HubConfig(broker=BrokerConfig(mosquitto.host, mosquitto.port),
                        client_id=f"hub-{uuid.uuid4().hex[:8]}", http_port=port,
                        influx=InfluxConfig(url=influxd.url, database=unique_db)))
    hub.start()
    url = f"http://127.0.0.1:{port}"
    assert wait_http(f"{url}/healthz")
    try:
        yield url
    finally:
        hub.stop()


def test_state_api(hub_url: str) -> None:
    with urlopen(f"{hub_url}/api/state") as r:
        assert r.headers["Content-Type"] == "application/json"
        state = json.loads(r.read())
    assert set(state) >= {"t", "city", "districts", "systems", "alarms", "pipeline"}
    assert len(state["districts"]) == 38 and len(state["systems"]) == 201
    assert state["city"]["devices"] == 3695
    assert {"readings_per_s", "latency_p99_s", "frame_queue", "write_queue",
            "series"} <= set(state["pipeline"])


def test_events_stream_state_every_second(hub_url: str) -> None:
    with urlopen(f"{hub_url}/events", timeout=10) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        seen: list[float] = []
        while len(seen) < 3:
            line = r.readline()
            if line.startswith(b"data: "):
                seen.append(json.loads(line[6:])["t"])
    assert seen[0] < seen[2]  # the state is refreshed, not replayed


def test_metrics_are_prometheus_text(hub_url: str) -> None:
    with urlopen(f"{hub_url}/metrics") as r:
        text = r.read().decode()
    assert "# TYPE citybrain_hub_frame_queue_depth gauge" in text
    assert "# TYPE citybrain_hub_cpu_s_total counter" in text


def test_static_files_stay_inside_the_dashboard(hub_url: str) -> None:
    for path in ("/static/../service.py", "/static/%2e%2e/service.py", "/nope"):
        with pytest.raises(HTTPError) as e:
            urlopen(f"{hub_url}{path}")
        assert e.value.code == 404
