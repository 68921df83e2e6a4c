"""Shared fixtures: real servers on 127.0.0.1 from ``citybrain.localstack``.

Session-scoped (shared, never restart or kill them in a test):
    ``mosquitto`` -> MosquittoServer, ``influxd`` -> InfluxV1Server,
    ``victoria`` -> VictoriaMetricsServer, each already started on a free port.
Function-scoped (yours alone; restart/kill freely, stopped afterwards):
    ``fresh_mosquitto``, ``fresh_influxd``, ``fresh_victoria``.
Isolation helpers (uuid-based, fresh per test):
    ``unique_topic_prefix`` -> e.g. "test/3f2a9c1b7d0e" (no trailing slash),
    ``unique_db`` -> e.g. "test_3f2a9c1b7d0e" (name only; create it yourself).

A missing server binary FAILS the test with the install hint: never skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from citybrain.localstack import (
    INSTALL_HINT,
    InfluxV1Server,
    LocalServer,
    MosquittoServer,
    VictoriaMetricsServer,
    find_binary,
)

S = TypeVar("S", bound=LocalServer)


def _serve(server: S) -> Iterator[S]:
    """Start ``server`` (failing the test if its binary is missing), yield it, stop it."""
    if find_binary(server.name) is None:
        pytest.fail(f"{server.name} is not installed: {INSTALL_HINT}", pytrace=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """Session-wide Mosquitto broker (anonymous, persistence on)."""
    yield from _serve(MosquittoServer(tmp_path_factory.mktemp("mosquitto")))


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxV1Server]:
    """Session-wide influxd 1.x (HTTP API at ``influxd.url``)."""
    yield from _serve(InfluxV1Server(tmp_path_factory.mktemp("influxd")))


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetricsServer]:
    """Session-wide victoria-metrics (HTTP API at ``victoria.url``)."""
    yield from _serve(VictoriaMetricsServer(tmp_path_factory.mktemp("victoria")))


@pytest.fixture
def fresh_mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A broker of this test's own, for restart/kill scenarios."""
    yield from _serve(MosquittoServer(tmp_path / "mosquitto"))


@pytest.fixture
def fresh_influxd(tmp_path: Path) -> Iterator[InfluxV1Server]:
    """An influxd of this test's own, for restart/kill scenarios."""
    yield from _serve(InfluxV1Server(tmp_path / "influxd"))


@pytest.fixture
def fresh_victoria(tmp_path: Path) -> Iterator[VictoriaMetricsServer]:
    """A victoria-metrics of this test's own, for restart/kill scenarios."""
    yield from _serve(VictoriaMetricsServer(tmp_path / "victoria"))


@pytest.fixture
def unique_topic_prefix() -> str:
    """An MQTT topic root no other test uses, e.g. "test/3f2a9c1b7d0e"."""
    return f"test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def unique_db() -> str:
    """A database name no other test uses, e.g. "test_3f2a9c1b7d0e" (not created)."""
    return f"test_{uuid.uuid4().hex[:12]}"
