"""The edge's cheap per-message path gives the same outcome as the full checks: the intake
hand-off, routes and ``quick_envelope``, ``split_records``, ``FrameBuilder.add_many``."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest

from citybrain.frame import decode_frame
from edge.batcher import FrameBuilder
from edge.intake import Intake
from edge.validate import (
    Rejected,
    TimeLimits,
    check_envelope,
    check_record,
    check_time,
    data_route,
    numeric_by_kind,
    parse_json,
    parse_topic,
    quick_envelope,
    split_records,
)
from seeds.city import City, catalogue_by_kind
from tests.edge.bad_inputs import DISTRICT, build_corpus
from tests.waiting import wait_for

CITY = City(1.0)
NOW = time.time()
LIMITS = TimeLimits()


# -- intake --------------------------------------------------------------------------------------
def test_intake_hands_over_in_order_and_in_batches() -> None:
    intake: Intake[int] = Intake(10, linger_s=0.0)
    assert intake.drain(5, timeout_s=0.01) == []
    for i in range(7):
        assert intake.put(i)
    assert intake.qsize() == 7
    assert intake.drain(5, timeout_s=0.01) == [0, 1, 2, 3, 4]
    assert intake.drain(5, timeout_s=0.01) == [5, 6]
    assert intake.empty()


def test_intake_wakes_a_waiting_consumer() -> None:
    intake: Intake[int] = Intake(10)
    got: list[list[int]] = []
    consumer = threading.Thread(target=lambda: got.append(intake.drain(5, timeout_s=600.0)),
                                daemon=True)
    consumer.start()
    wait_for(lambda: intake._consumer_waiting, 10, lambda: "the consumer to wait")
    intake.put(1)  # must wake it: otherwise it sleeps for ten minutes
    wait_for(lambda: got == [[1]], 10, lambda: f"the consumer to be woken, got {got}")


def test_a_full_intake_blocks_the_producer_until_room_or_close() -> None:
    intake: Intake[int] = Intake(2)
    intake.put(0)
    intake.put(1)
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(intake.put(2)))
    t.start()
    time.sleep(0.1)
    assert not done  # waits for room
    assert intake.drain(1, timeout_s=0.01) == [0]
    t.join(2)
    assert done == [True] and intake.drain(5, timeout_s=0.01) == [1, 2]
    intake.put(3)
    intake.put(4)
    t = threading.Thread(target=lambda: done.append(intake.put(5)))
    t.start()
    time.sleep(0.1)
    intake.close()
    t.join(2)
    assert done == [True, False] and intake.drain(5, timeout_s=0.01) == [3, 4]


# -- routes, headers, records ---------------------------------------------------------------------
def full_outcome(topic: str, payload: bytes) -> Any:
    """What the full checks say: a reason, or (seq, t, records)."""
    try:
        parsed = parse_topic(topic, {DISTRICT})
        env = check_envelope(CITY, parsed, parse_json(payload))
        check_time(env.t, NOW, LIMITS, 1)
    except Rejected as exc:
        return exc.reason
    return env.seq, env.t, env.records


@pytest.mark.parametrize("case", build_corpus(NOW, CITY), ids=lambda c: c.kind)
def test_quick_envelope_never_passes_what_the_full_checks_reject(case: Any) -> None:
    expected = full_outcome(case.topic, case.payload)
    route = data_route(CITY, case.topic, {DISTRICT})
    if route is None:
        return
    try:
        doc = parse_json(case.payload)
    except Rejected:
        return
    quick = quick_envelope(route, doc, NOW, LIMITS)
    if quick is not None:  # records compared by length: a deeply nested one has no ==
        assert not isinstance(expected, str), expected
        assert (quick[0], quick[1], len(quick[2])) == (expected[0], expected[1],
                                                       len(expected[2]))
    for prelude_topic, prelude in case.prelude:  # valid messages: quick takes them
        r = data_route(CITY, prelude_topic, {DISTRICT})
        assert r is not None
        assert quick_envelope(r, parse_json(prelude), NOW, LIMITS) == full_outcome(
            prelude_topic, prelude)


def test_routes_only_for_served_data_topics_of_known_devices() -> None:
    dev = "500103-air-01-00001"
    good = f"cb/v1/dev/500103/environment/500103-air-01/{dev}/data"
    assert data_route(CITY, good, {"500103"}) is not None
    assert data_route(CITY, good, {"500101"}) is None  # not served
    assert data_route(CITY, good.replace("/data", "/birth"), None) is None
    assert data_route(CITY, good.replace("00001", "99999"), None) is None  # unknown device
    assert data_route(CITY, good.replace("environment", "parking"), None) is None


RECORDS: list[Any] = [
    {"n": "pm2_5", "u": "ug/m3", "v": 35.2}, {"n": "pm2_5", "v": 3}, {"n": "pm10", "v": 10**400},
    {"n": "no2", "u": "mg/m3", "v": 1.0}, {"n": "o3", "u": "ug/m3", "v": True},
    {"n": "so2", "u": "ug/m3", "v": -0.5}, {"n": "co", "v": float("nan")},
    {"n": "temp", "v": float("inf")}, {"n": "humidity", "v": "5"}, {"n": "nope", "v": 1},
    {"n": 5, "v": 1}, {"n": ["x"], "v": 1}, [1], "pm2_5", {"n": "humidity", "u": [[]], "v": 1},
    {"n": "entries", "u": "count", "v": 5.0}, {"n": "entries", "u": "count", "v": 5.5},
    {"n": "free", "u": "count", "v": 3}, {"n": "occupied", "u": "bool", "vb": True},
    {"n": "occupied", "u": "bool", "v": 0.5}, {"n": "ai_event", "u": "enum", "vs": "smoking"},
    {"n": "ai_event", "u": "enum", "vs": "dancing"}, {"n": "gas", "u": "%LEL", "v": 100},
    {"n": "gas", "u": "%LEL", "v": 100.0000001},
]


@pytest.mark.parametrize("kind", sorted(catalogue_by_kind()))
def test_split_records_agrees_with_check_record(kind: str) -> None:
    catalogue = catalogue_by_kind()[kind]
    names, values, bad = split_records(RECORDS + RECORDS[:3], catalogue,
                                       numeric_by_kind()[kind])
    want_good: list[tuple[str, float]] = []
    want_bad: list[str] = []
    for rec in RECORDS + RECORDS[:3]:
        try:
            r = check_record(rec, catalogue)
        except Rejected as exc:
            want_bad.append(exc.reason)
            continue
        if r.name in [n for n, _ in want_good]:
            want_bad.append("duplicate_measurement")
        else:
            want_good.append((r.name, r.value))
    assert list(zip(names, values, strict=True)) == want_good
    assert [b.reason for b in bad] == want_bad
    assert all(type(v) is float for v in values)


# -- frames ---------------------------------------------------------------------------------------
def test_add_many_builds_the_same_frame_as_add() -> None:
    a, b = FrameBuilder("500103"), FrameBuilder("500103")
    msgs = [("d1", "s1", 1, 1_763_712_000.1234567, ["pm2_5", "pm10"], [1.0, 2.0]),
            ("d2", "s2", 7, 1_763_712_001.5, ["no2"], [3.5]),
            ("d1", "s1", 2, 1_763_712_060.0, ["pm10", "o3", "pm2_5"], [4.0, 5.0, 6.0]),
            ("d3", "s3", 9, 1_763_712_061.0, [], [])]
    for device, system, seq, t, names, values in msgs:
        for name, value in zip(names, values, strict=True):
            a.add(device, system, seq, t, name, value)
        b.add_many(device, system, seq, t, names, values)
    assert len(a) == len(b) == 6
    fa, fb = decode_frame(a.seal(5)[0]), decode_frame(b.seal(5)[0])
    assert (fa.devices, fa.systems, fa.names) == (fb.devices, fb.systems, fb.names)
    for col in ("ts_ns", "value", "seq", "device", "name"):
        assert getattr(fa, col).tolist() == getattr(fb, col).tolist(), col
    with pytest.raises(ValueError):
        b.add_many("d1", "s1", 1, 1.0, ["pm2_5"], [])


def test_a_message_on_a_known_topic_is_classified_the_same_both_ways() -> None:
    """The edge's route cache must not change an outcome: the same bad message, first on a
    topic never seen (full checks), then once the topic's route is kept (quick path)."""
    from edge.gateway import EdgeConfig, EdgeGateway
    dev = "500103-air-01-00001"
    topic = f"cb/v1/dev/500103/environment/500103-air-01/{dev}/data"
    bad = [{"dev": dev, "seq": 1, "t": "x", "e": [{"n": "pm2_5", "v": 1}]},
           {"dev": dev, "seq": 2, "t": NOW + 3600, "e": [{"n": "pm2_5", "v": 1}]},
           {"dev": dev, "seq": 3, "t": 10**400, "e": [{"n": "pm2_5", "v": 1}]},
           {"dev": dev.upper(), "seq": 4, "t": NOW, "e": [{"n": "pm2_5", "v": 1}]},
           {"dev": dev, "seq": -1, "t": NOW, "e": [{"n": "pm2_5", "v": 1}]},
           {"dev": dev, "seq": 5, "t": NOW, "e": [{"n": "pm2_5", "v": 1}] * 65}]
    outcomes = []
    for warm in (False, True):
        edge = EdgeGateway(EdgeConfig(districts={DISTRICT}, client_id="fast-path"), city=CITY)
        try:
            if warm:
                edge.handle(topic, orjson.dumps({"dev": dev, "seq": 0, "t": NOW,
                                                 "e": [{"n": "pm2_5", "v": 1}]}))
                assert topic in edge._routes
            for doc in bad:
                payload = orjson.dumps(doc) if doc["t"] != 10**400 else orjson.dumps(
                    {**doc, "t": 0}).replace(b'"t":0', b'"t":' + str(10**400).encode())
                edge.handle(topic, payload)
            snap = edge.snapshot()
            outcomes.append((snap["rejected"], snap["rejected_messages"]))
        finally:
            edge.spool.log.close()
    assert outcomes[0] == outcomes[1]
