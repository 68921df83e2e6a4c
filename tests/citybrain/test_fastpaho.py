"""``citybrain.fastpaho.FastClient``: the same messages as stock paho, against a real Mosquitto."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from citybrain.fastpaho import SUPPORTED, FastClient, _remaining_length, ack_all
from citybrain.localstack import MosquittoServer
from citybrain.mqtt import BrokerConfig, connect_and_wait, make_client
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(not SUPPORTED, reason="FastClient needs paho 2.x")

# Sizes around the remaining-length byte boundaries and the 64 KiB read chunk.
PAYLOAD_SIZES = [0, 1, 100, 121, 122, 16_380, 16_390, 65_530, 65_540, 70_000, 300_000]


def _encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@given(st.integers(0, 268_435_455), st.binary(max_size=3), st.integers(0, 4))
def test_remaining_length_matches_the_encoding(n: int, before: bytes, cut: int) -> None:
    encoded = _encode_length(n)
    buf = before + encoded
    assert _remaining_length(buf, len(before)) == (n, len(encoded))
    if cut and cut <= len(encoded):  # not whole in the buffer: left to paho
        assert _remaining_length(buf[:-cut], len(before)) == (-1, 0)


def test_remaining_length_longer_than_four_bytes_is_left_to_paho() -> None:
    assert _remaining_length(b"\x80\x80\x80\x80\x01", 0) == (-1, 0)


@dataclass
class Inbox:
    messages: list[tuple[str, bytes, int, bool, bool]] = field(default_factory=list)
    mids: list[tuple[int, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((m.topic, bytes(m.payload), m.qos, m.retain, m.dup))
            self.mids.append((m.mid, m.qos))


def _subscriber(broker: BrokerConfig, cid: str, fast: bool, manual: bool, topic: str,
                clean: bool = True) -> tuple[mqtt.Client, Inbox]:
    client = make_client(cid, broker, clean_session=clean, manual_ack=manual, fast=fast)
    assert isinstance(client, FastClient) == fast
    inbox = Inbox()
    client.on_message = inbox.on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    connect_and_wait(client, broker)
    client.subscribe(topic, 1)
    assert subscribed.wait(10)
    return client, inbox


def _publish_all(broker: BrokerConfig, items: list[tuple[str, bytes, int]]) -> None:
    pub = make_client(f"pub-{uuid.uuid4().hex[:8]}", broker, fast=False)
    connect_and_wait(pub, broker)
    try:
        infos = [pub.publish(t, p, qos=q) for t, p, q in items]
        for info in infos:
            info.wait_for_publish(20)
    finally:
        pub.disconnect()
        pub.loop_stop()


def _stop(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def broker(mosquitto: MosquittoServer) -> Iterator[BrokerConfig]:
    yield BrokerConfig(port=mosquitto.port)


@pytest.mark.integration
@pytest.mark.parametrize("manual", [False, True])
def test_fast_and_stock_subscribers_receive_the_same_messages(broker: BrokerConfig,
                                                               manual: bool) -> None:
    base = f"fp/{uuid.uuid4().hex[:8]}"
    items = [(f"{base}/{i % 3}/ü", bytes([i % 251]) * size, (0, 1)[i % 2])
             for i, size in enumerate(PAYLOAD_SIZES * 3)]
    items += [(f"{base}/small", f"m{i}".encode(), 1) for i in range(2_000)]
    clients = [_subscriber(broker, f"s{fast}-{uuid.uuid4().hex[:6]}", fast, manual, f"{base}/#")
               for fast in (False, True)]
    try:
        _publish_all(broker, items)
        for _client, inbox in clients:
            def received(box: Inbox = inbox) -> int:
                return len(box.messages)
            wait_for(lambda: received() >= len(items), 20, received)
        stock, fast = (inbox.messages for _c, inbox in clients)
        assert fast == stock
        assert [(t, p, q) for t, p, q, _r, _d in fast] == items
    finally:
        for client, _inbox in clients:
            _stop(client)


@pytest.mark.integration
@pytest.mark.parametrize("fast", [False, True])
def test_ack_all_acknowledges_and_unacked_messages_come_back(broker: BrokerConfig,
                                                             fast: bool) -> None:
    topic = f"fp/{uuid.uuid4().hex[:8]}/ack"
    cid = f"ack-{uuid.uuid4().hex[:8]}"
    client, inbox = _subscriber(broker, cid, fast, True, topic, clean=False)
    items = [(topic, f"{i}".encode(), 1) for i in range(500)]
    try:
        _publish_all(broker, items)
        wait_for(lambda: len(inbox.messages) >= 500, 20, lambda: len(inbox.messages))
        ack_all(client, inbox.mids[:300])  # the first 300 only
        # A PINGREQ round trip after the PUBACKs: the broker has read them.
        client._send_pingreq()
        wait_for(lambda: client._ping_t == 0, 10)
    finally:
        _stop(client)
    again, inbox2 = _subscriber(broker, cid, fast, True, topic, clean=False)
    try:
        wait_for(lambda: len(inbox2.messages) >= 200, 20, lambda: len(inbox2.messages))
        assert [p for _t, p, *_ in inbox2.messages] == [f"{i}".encode()
                                                        for i in range(300, 500)]
        assert all(dup for *_x, dup in inbox2.messages)
        ack_all(again, inbox2.mids)
    finally:
        _stop(again)


@dataclass
class BatchInbox:
    """What a batch handler got, and on_message's leftovers (anything paho delivered)."""

    messages: list[tuple[int, int, str, bytes, bool]] = field(default_factory=list)
    batches: int = 0
    singles: list[tuple[str, bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_batch(self, batch: list[tuple[int, int, str, bytes, bool]]) -> None:
        with self.lock:
            self.messages += batch
            self.batches += 1

    def on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.singles.append((m.topic, bytes(m.payload), m.qos))
            self.messages.append((m.mid, m.qos, m.topic, bytes(m.payload), bool(m.dup)))


def _batch_subscriber(broker: BrokerConfig, cid: str, manual: bool, topic: str,
                      clean: bool = True) -> tuple[FastClient, BatchInbox]:
    client = make_client(cid, broker, clean_session=clean, manual_ack=manual, fast=True)
    assert isinstance(client, FastClient)
    inbox = BatchInbox()
    client.on_message = inbox.on_message
    client.set_batch_handler(inbox.on_batch)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    connect_and_wait(client, broker)
    client.subscribe(topic, 1)
    assert subscribed.wait(10)
    return client, inbox


@pytest.mark.integration
@pytest.mark.parametrize("manual", [False, True])
def test_a_batch_handler_gets_the_messages_on_message_would(broker: BrokerConfig,
                                                             manual: bool) -> None:
    """Sizes around the read chunk (packets cut by the end of a read), QoS 0 and 1, a UTF-8
    topic, thousands of small messages: every one, in order, once."""
    base = f"fp/{uuid.uuid4().hex[:8]}"
    items = [(f"{base}/{i % 3}/ü", bytes([i % 251]) * size, (0, 1)[i % 2])
             for i, size in enumerate(PAYLOAD_SIZES * 3)]
    items += [(f"{base}/small", f"m{i}".encode() * (1 + i % 40), 1) for i in range(5_000)]
    client, inbox = _batch_subscriber(broker, f"b-{uuid.uuid4().hex[:6]}", manual, f"{base}/#")
    try:
        _publish_all(broker, items)
        wait_for(lambda: len(inbox.messages) >= len(items), 20, lambda: len(inbox.messages))
        assert [(t, p, q) for _m, q, t, p, _d in inbox.messages] == items
        assert inbox.batches < len(items) - len(inbox.singles)  # batches of several
        assert all(mid == 0 for mid, q, *_ in inbox.messages if q == 0)
        assert all(mid > 0 for mid, q, *_ in inbox.messages if q == 1)
        if manual:
            ack_all(client, [(m, q) for m, q, *_ in inbox.messages])
    finally:
        _stop(client)


@pytest.mark.integration
def test_batched_messages_stay_unacknowledged_until_ack_all(broker: BrokerConfig) -> None:
    topic = f"fp/{uuid.uuid4().hex[:8]}/ack"
    cid = f"back-{uuid.uuid4().hex[:8]}"
    client, inbox = _batch_subscriber(broker, cid, True, topic, clean=False)
    items = [(topic, f"{i}".encode(), 1) for i in range(500)]
    try:
        _publish_all(broker, items)
        wait_for(lambda: len(inbox.messages) >= 500, 20, lambda: len(inbox.messages))
        ack_all(client, [(m, q) for m, q, *_ in inbox.messages[:300]])
        client._send_pingreq()  # its answer comes after the broker read the PUBACKs
        wait_for(lambda: client._ping_t == 0, 10)
    finally:
        _stop(client)
    again, inbox2 = _batch_subscriber(broker, cid, True, topic, clean=False)
    try:
        wait_for(lambda: len(inbox2.messages) >= 200, 20, lambda: len(inbox2.messages))
        assert [p for _m, _q, _t, p, _d in inbox2.messages] == [f"{i}".encode()
                                                                for i in range(300, 500)]
        assert all(dup for *_x, dup in inbox2.messages)
        ack_all(again, [(m, q) for m, q, *_ in inbox2.messages])
    finally:
        _stop(again)


@pytest.mark.integration
def test_a_topic_filter_callback_turns_batches_off(broker: BrokerConfig) -> None:
    base = f"fp/{uuid.uuid4().hex[:8]}"
    client, inbox = _batch_subscriber(broker, f"bf-{uuid.uuid4().hex[:6]}", False, f"{base}/#")
    filtered: list[bytes] = []
    client.message_callback_add(f"{base}/f", lambda _c, _u, m: filtered.append(bytes(m.payload)))
    try:
        _publish_all(broker, [(f"{base}/f", b"x", 1), (f"{base}/g", b"y", 1)])
        wait_for(lambda: len(filtered) == 1 and len(inbox.singles) == 1, 20)
        assert inbox.batches == 0 and inbox.singles == [(f"{base}/g", b"y", 1)]
        client.message_callback_remove(f"{base}/f")
        _publish_all(broker, [(f"{base}/f", b"z", 1)])
        wait_for(lambda: inbox.batches == 1, 20)
        assert filtered == [b"x"]
    finally:
        _stop(client)
