"""Thin helpers around paho-mqtt 2.x shared by the sim, the edges and the hub.

Callbacks stay thin everywhere in citybrain: they enqueue or count, nothing else.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citybrain.fastpaho import SUPPORTED as FAST_PAHO_SUPPORTED
from citybrain.fastpaho import FastClient


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where and how to connect. ``username``/``password`` are optional."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never logged
    keepalive_s: int = 30
    tls_ca: str | None = None


def make_client(client_id: str, broker: BrokerConfig, *, clean_session: bool = True,
                max_inflight: int = 1000, max_queued: int = 0,
                manual_ack: bool = False, fast: bool = True) -> mqtt.Client:
    """A paho 2.x client (MQTT 3.1.1) with credentials and limits set, not yet connected.

    ``manual_ack``: incoming QoS 1 messages are acknowledged only when the owner calls
    ``client.ack(mid, qos)`` (or :func:`citybrain.fastpaho.ack_all`) — after it made them
    durable — not on receipt. ``fast``: a :class:`citybrain.fastpaho.FastClient` (the same
    bytes on the wire, less CPU per message) where this paho supports it.
    """
    cls = FastClient if fast and FAST_PAHO_SUPPORTED else mqtt.Client
    client = cls(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean_session, protocol=mqtt.MQTTv311,
                         manual_ack=manual_ack)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls_ca:
        client.tls_set(ca_certs=broker.tls_ca)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(max_queued)
    # Reconnect quickly after a broker restart, but never hammer it.
    client.reconnect_delay_set(min_delay=1, max_delay=5)
    return client


class Subscription:
    """Subscribe on every (re)connect and let the owner wait until the broker granted it.

    Messages published before a new session's SUBACK never reach it, so a tier must not
    report ready (nor let the next tier start) before ``wait()`` returned. Use
    ``on_connect``/``on_subscribe`` as the client's callbacks (they only subscribe and set
    an event); a refused filter (SUBACK failure code) is recorded and raised by ``wait()``.
    """

    def __init__(self, filters: list[tuple[str, int]]) -> None:
        self.filters = filters
        self._mid: int | None = None
        self._granted = threading.Event()
        self._refused: list[str] = []

    def on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: Any,
                   props: object = None) -> None:
        if not getattr(rc, "is_failure", False):
            self._granted.clear()
            _, self._mid = client.subscribe(self.filters)

    def on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                     reason_codes: list[Any], props: object = None) -> None:
        if mid != self._mid:
            return
        self._refused = [f"{f}: {rc}" for (f, _), rc in zip(self.filters, reason_codes,
                                                            strict=False)
                         if getattr(rc, "is_failure", False)]
        self._granted.set()

    def wait(self, timeout_s: float = 20.0) -> None:
        if not self._granted.wait(timeout_s):
            raise TimeoutError(f"no SUBACK for {[f for f, _ in self.filters]} in {timeout_s} s")
        if self._refused:
            raise ConnectionError(f"broker refused subscriptions: {self._refused}")


def connect_and_wait(client: mqtt.Client, broker: BrokerConfig, timeout_s: float = 20.0) -> None:
    """Connect, start the network thread, and wait until the broker accepted the session.

    Raises ``ConnectionError`` with the broker's reason if it refused, ``TimeoutError`` if no
    answer came within ``timeout_s``. paho keeps reconnecting on its own afterwards.
    """
    ready = threading.Event()
    failure: list[str] = []
    previous: Any = client.on_connect

    def on_connect(c: mqtt.Client, userdata: object, flags: object, rc: object,
                   props: object = None) -> None:
        if getattr(rc, "is_failure", False):
            failure.append(str(rc))
        ready.set()
        if previous is not None:
            previous(c, userdata, flags, rc, props)

    client.on_connect = on_connect
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.connect(broker.host, broker.port, keepalive=broker.keepalive_s)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"MQTT broker {broker.host}:{broker.port} unreachable: "
                                   f"{exc}") from None
            time.sleep(0.2)
    client.loop_start()
    if not ready.wait(max(0.1, deadline - time.monotonic())):
        client.loop_stop()
        raise TimeoutError(f"no CONNACK from {broker.host}:{broker.port} in {timeout_s} s")
    client.on_connect = previous
    if failure:
        client.loop_stop()
        raise ConnectionError(f"broker {broker.host}:{broker.port} refused: {failure[0]}")
