"""The edge's Prometheus endpoint reports its counters and reasons."""

from __future__ import annotations

import uuid
from urllib.request import urlopen

import pytest

from citybrain.localstack import MosquittoServer, free_port
from citybrain.mqtt import BrokerConfig
from edge.gateway import EdgeConfig, EdgeGateway
from hub.http import wait_http

pytestmark = pytest.mark.integration


def test_edge_metrics(mosquitto: MosquittoServer) -> None:
    port = free_port()
    edge = EdgeGateway(EdgeConfig(broker=BrokerConfig(mosquitto.host, mosquitto.port),
                                  districts={"500103"}, client_id=f"edge-{uuid.uuid4().hex[:8]}",
                                  metrics_port=port))
    edge.start()
    try:
        edge.handle("cb/v1/dev/500103/environment/500103-air-01/x/data", b"{")
        url = f"http://127.0.0.1:{port}/metrics"
        assert wait_http(url)
        with urlopen(url) as r:
            text = r.read().decode()
    finally:
        edge.stop()
    assert "citybrain_edge_messages_in_total 1.0" in text
    assert 'citybrain_edge_rejected_total{label="malformed_json"} 1.0' in text
    assert "# TYPE citybrain_edge_queue_depth gauge" in text
