"""The bad-input corpus (``bad_inputs.py``) through the edge: every kind is counted under its
reason, dead-lettered, and the edge keeps accepting good messages afterwards.

Unit level: ``EdgeGateway.handle`` on an edge that is never started. Integration level: the
whole corpus published through a real Mosquitto to a started edge.
"""

from __future__ import annotations

import base64
import queue
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from citybrain import topics
from citybrain.frame import decode_frame
from citybrain.localstack import MosquittoServer
from citybrain.mqtt import BrokerConfig, Subscription, connect_and_wait, make_client
from citybrain.payload import encode_data
from edge import validate
from edge.gateway import DLQ_PAYLOAD_BYTES, EdgeConfig, EdgeGateway
from edge.validate import (
    Rejected,
    TimeLimits,
    check_envelope,
    check_records,
    check_time,
    parse_json,
    parse_topic,
)
from seeds.city import City
from tests.edge.bad_inputs import (
    DEVICE,
    DISTRICT,
    REASONS,
    BadInput,
    build_corpus,
    data_topic,
    firmware_records,
)

ROOT = Path(__file__).resolve().parents[2]
CITY = City(1.0)
CORPUS = build_corpus(city=CITY)


def new_edge(**over: Any) -> EdgeGateway:
    """An edge serving DISTRICT, never started: ``handle`` works without a broker."""
    return EdgeGateway(EdgeConfig(districts={DISTRICT}, client_id=f"edge-{uuid.uuid4().hex[:8]}",
                                  **over), city=CITY)


def counts(snap: dict[str, Any]) -> dict[str, Any]:
    """The accounting part of a snapshot."""
    keys = ("messages_in", "readings_in", "readings_accepted", "readings_rejected",
            "duplicates", "duplicate_messages", "dead_letters")
    return {k: snap.get(k, 0) for k in keys} | {
        "rejected": snap.get("rejected", {}), "rejected_messages": snap.get("rejected_messages",
                                                                            {})}


def valid_message(device: str = "500103-air-01-00000", seq: int = 1) -> tuple[str, bytes]:
    return data_topic(device), encode_data(device, seq, time.time(),
                                           firmware_records(CITY, device, time.time()))


# -- the corpus itself -------------------------------------------------------------------------


def test_corpus_has_at_least_50_distinct_kinds() -> None:
    kinds = [c.kind for c in CORPUS]
    assert len(kinds) == len(set(kinds)) >= 50
    assert len({(c.topic, c.payload) for c in CORPUS}) == len(CORPUS)  # tell letters apart
    assert {c.reason for c in CORPUS} - {None} <= REASONS
    assert any(c.reason is None for c in CORPUS)  # replays are in it, as duplicates


def test_reason_codes_are_documented() -> None:
    """Every code the edge raises is in docs/architecture.md's list and validate's docstring,
    and nothing is documented that is never raised."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = re.search(r"Reason codes: `([^`]*)`", doc)
    assert listed is not None
    assert set(listed.group(1).split()) == REASONS
    raised: set[str] = set()
    for path in ("edge/validate.py", "edge/gateway.py"):
        source = (ROOT / path).read_text(encoding="utf-8")
        raised |= set(re.findall(r'Rejected\(\s*"(\w+)"', source))
    assert raised == REASONS
    docstring = validate.__doc__ or ""
    assert {r for r in REASONS if f"``{r}``" not in docstring} == {"internal_error"}


def test_corpus_starts_from_a_valid_device_message() -> None:
    """Without its defect, a case is the seeded device's ordinary message: it passes."""
    topic, payload = valid_message(DEVICE)
    env = check_envelope(CITY, parse_topic(topic, {DISTRICT}), parse_json(payload))
    check_time(env.t, time.time(), TimeLimits(), 8)
    good, bad = check_records(env)
    assert len(good) == 8 and bad == []


# -- unit level: EdgeGateway.handle --------------------------------------------------------------


@pytest.mark.parametrize("case", CORPUS, ids=[c.kind for c in CORPUS])
def test_each_kind_is_counted_under_its_reason(case: BadInput) -> None:
    gw = new_edge()
    for topic, payload in case.prelude:
        gw.handle(topic, payload)
    before = counts(gw.snapshot())
    assert before["readings_rejected"] == before["duplicates"] == 0  # prelude all accepted
    gw.handle(case.topic, case.payload)
    after = counts(gw.snapshot())
    delta = {k: after[k] - before[k] for k in after if isinstance(after[k], int)}
    if case.reason is None:
        assert after["rejected"] == {} and delta["dead_letters"] == 0
        assert delta["duplicates"] == case.duplicates and delta["duplicate_messages"] == 1
    else:
        assert after["rejected_messages"] == {case.reason: 1}
        assert after["rejected"] == {case.reason: case.rejected}  # births: 0 readings
        assert delta["readings_rejected"] == case.rejected
        assert delta["dead_letters"] == 1
        assert delta["duplicates"] == 0
    assert delta["readings_accepted"] == case.accepted
    # Lose nothing: every reading the message brought in is accepted, rejected or a duplicate.
    assert delta["readings_in"] == case.readings_in
    assert delta["messages_in"] == 1


def test_the_whole_corpus_in_one_edge_then_a_valid_message_is_accepted() -> None:
    gw = new_edge()
    expected: Counter[str] = Counter()
    expected_messages: Counter[str] = Counter()
    preludes = 0
    for case in CORPUS:
        for topic, payload in case.prelude:
            gw.handle(topic, payload)
            preludes += len(orjson.loads(payload)["e"])
        gw.handle(case.topic, case.payload)
        if case.reason is not None:
            expected[case.reason] += case.rejected
            expected_messages[case.reason] += 1
    snap = gw.snapshot()
    assert snap["rejected"] == dict(expected)
    assert snap["rejected_messages"] == dict(expected_messages)
    assert snap["dead_letters"] == sum(c.dead_letters for c in CORPUS)
    assert snap["duplicates"] == sum(c.duplicates for c in CORPUS)
    assert snap["readings_accepted"] == sum(c.accepted for c in CORPUS) + preludes
    assert snap["readings_in"] == (snap["readings_accepted"] + snap["readings_rejected"]
                                   + snap["duplicates"])
    # The process keeps running: a valid message is accepted in full afterwards.
    topic, payload = valid_message()
    gw.handle(topic, payload)
    after = gw.snapshot()
    assert after["readings_accepted"] == snap["readings_accepted"] + 8
    assert after["rejected"] == snap["rejected"]


def test_handle_does_not_raise_on_the_corpus() -> None:
    """``handle`` only counts: no exception escapes, not even ``Rejected``."""
    gw = new_edge()
    for case in CORPUS:
        try:
            gw.handle(case.topic, case.payload)
        except Exception as exc:  # pragma: no cover - the assertion reports it
            pytest.fail(f"{case.kind}: handle raised {exc!r}")


def test_birth_with_a_deeply_nested_field() -> None:
    gw = new_edge()
    payload = (b'{"dev":"%s","seq":0,"t":1,"link":"l","fw":' % DEVICE.encode()
               + b"[" * 300 + b"]" * 300 + b"}")
    gw.handle(data_topic(DEVICE, channel="birth"), payload)  # must not raise
    assert gw.counters.get("births") == 1  # passed on, without the nested field


def test_validation_raises_only_rejected_on_the_corpus() -> None:
    """The pure stages on their own, as the gateway chains them."""
    for case in CORPUS:
        try:
            parsed = parse_topic(case.topic, {DISTRICT})
            env = check_envelope(CITY, parsed, parse_json(case.payload))
            check_time(env.t, time.time(), TimeLimits(), 1)
            check_records(env)
        except Rejected:
            pass


# -- integration level: a real broker and a started edge ----------------------------------------


def _letter_payload(letter: dict[str, Any]) -> bytes:
    if "payload_b64" in letter:
        return base64.b64decode(letter["payload_b64"])
    body: str = letter["payload"]
    return body.encode("utf-8")


@pytest.mark.integration
def test_corpus_through_mosquitto(mosquitto: MosquittoServer) -> None:
    broker = BrokerConfig(mosquitto.host, mosquitto.port)
    tag = uuid.uuid4().hex[:8]
    letters: queue.Queue[dict[str, Any]] = queue.Queue()
    frames: queue.Queue[bytes] = queue.Queue()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith(f"{topics.PREFIX}/dlq/"):
            letters.put(orjson.loads(msg.payload))
        elif msg.topic == topics.frames_topic(DISTRICT):
            frames.put(bytes(msg.payload))

    watcher = make_client(f"watch-{tag}", broker)
    sub = Subscription([(f"{topics.PREFIX}/dlq/#", 1), (topics.frames_topic(DISTRICT), 1)])
    watcher.on_connect = sub.on_connect
    watcher.on_subscribe = sub.on_subscribe
    watcher.on_message = on_message
    connect_and_wait(watcher, broker)
    sub.wait()
    gw = EdgeGateway(EdgeConfig(broker=broker, districts={DISTRICT}, client_id=f"edge-{tag}",
                                frame_max_delay_s=0.1), city=CITY)
    gw.start()
    publisher = make_client(f"pub-{tag}", broker)
    connect_and_wait(publisher, broker)
    corpus = build_corpus(city=CITY)  # fresh times: the cases must be "now" for the edge
    cases = [c for c in corpus if c.deliverable]
    try:
        for case in cases:
            for topic, payload in case.prelude:
                publisher.publish(topic, payload, qos=1).wait_for_publish(10)
            publisher.publish(case.topic, case.payload, qos=1).wait_for_publish(10)
        rejected = [c for c in cases if c.reason is not None]
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(got) < len(rejected):
            try:
                got.append(letters.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"{len(got)} of {len(rejected)} dead letters within 30 s; "
                            f"edge counters {counts(gw.snapshot())}")
        # One dead letter per rejected kind, with its reason and readings.
        by_message = {(c.topic[:256], c.payload[:DLQ_PAYLOAD_BYTES]): c for c in rejected}
        seen: dict[str, dict[str, Any]] = {}
        for letter in got:
            match = by_message.get((letter["topic"], _letter_payload(letter)))
            assert match is not None, f"dead letter for no corpus case: {letter}"
            assert match.kind not in seen, f"two dead letters for {match.kind}"
            seen[match.kind] = letter
            assert (letter["reason"], letter["readings"]) == (match.reason, match.rejected), (
                match.kind)
            assert letter["truncated"] == (len(match.payload) > DLQ_PAYLOAD_BYTES)
        assert set(seen) == {c.kind for c in rejected}

        # The edge is still running: a valid message afterwards reaches a frame.
        device, seq = "500103-air-01-00000", 77
        topic, payload = valid_message(device, seq)
        publisher.publish(topic, payload, qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 30
        while True:
            try:
                frame = decode_frame(frames.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"no frame with {device} seq {seq} within 30 s; edge counters "
                            f"{counts(gw.snapshot())}")
            mine = [i for i, d in enumerate(frame.device.tolist())
                    if frame.devices[d] == device and int(frame.seq[i]) == seq]
            if mine:
                assert len(mine) == 8
                break
        assert letters.empty()  # no dead letter for the valid message
    finally:
        publisher.disconnect()
        snap = gw.stop()
        watcher.disconnect()
        watcher.loop_stop()
    want: Counter[str] = Counter()
    for c in cases:
        if c.reason is not None:
            want[c.reason] += c.rejected
    assert snap["rejected"] == dict(want)
    assert snap["duplicates"] == sum(c.duplicates for c in cases)
    assert snap["readings_in"] == (snap["readings_accepted"] + snap["readings_rejected"]
                                   + snap["duplicates"])
