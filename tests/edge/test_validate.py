"""Every rejection reason of the edge's validation, without a broker."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from citybrain.payload import MAX_PAYLOAD_BYTES
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

CITY = City()
NOW = 1_763_712_000.0
DEV = "500103-air-01-00001"
TOPIC = f"cb/v1/dev/500103/environment/500103-air-01/{DEV}/data"


def msg(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"dev": DEV, "seq": 1, "t": NOW,
                           "e": [{"n": "pm2_5", "u": "ug/m3", "v": 35.2},
                                 {"n": "o3", "u": "ug/m3", "v": 80}]}
    doc.update(over)
    return doc


def envelope(doc: Any, topic: str = TOPIC) -> Any:
    env = check_envelope(CITY, parse_topic(topic, None), doc)
    check_time(env.t, NOW, TimeLimits(), 1)
    return env


def reason_of(fn: Any) -> str:
    with pytest.raises(Rejected) as e:
        fn()
    return e.value.reason


def test_good_message() -> None:
    env = envelope(msg())
    good, bad = check_records(env)
    assert [(r.name, r.value) for r in good] == [("pm2_5", 35.2), ("o3", 80.0)]
    assert bad == []


@pytest.mark.parametrize(("doc", "reason"), [
    ([1, 2], "not_an_object"),
    ({k: v for k, v in msg().items() if k != "dev"}, "missing_field"),
    ({k: v for k, v in msg().items() if k != "t"}, "missing_field"),
    (msg(seq="1"), "wrong_type"),
    (msg(seq=True), "wrong_type"),
    (msg(seq=-1), "bad_seq"),
    (msg(seq=2**32), "bad_seq"),
    (msg(t="now"), "wrong_type"),
    (msg(t=NOW + 3600), "ts_future"),
    (msg(t=NOW - 90 * 86400), "ts_past"),
    (msg(e=[]), "empty_records"),
    (msg(e={"n": "x"}), "wrong_type"),
    (msg(e=[{"n": "o3", "v": 1}] * 65), "too_many_records"),
    (msg(dev="500103-air-01-00002"), "topic_mismatch"),
    (msg(dev="500103-air-01-99999"), "topic_mismatch"),
])
def test_envelope_reasons(doc: Any, reason: str) -> None:
    assert reason_of(lambda: envelope(doc)) == reason


def test_unknown_device_and_foreign_topic() -> None:
    ghost = "500103-air-01-99999"
    topic = f"cb/v1/dev/500103/environment/500103-air-01/{ghost}/data"
    assert reason_of(lambda: envelope(msg(dev=ghost), topic)) == "unknown_device"
    # A real device publishing under another system's topic.
    other = "500103-noise-01-00000"
    topic = f"cb/v1/dev/500103/environment/500103-air-01/{other}/data"
    assert reason_of(lambda: envelope(msg(dev=other), topic)) == "topic_mismatch"


def test_nan_time_is_bad_time() -> None:
    assert reason_of(lambda: envelope(msg(t=math.nan))) == "bad_time"


@pytest.mark.parametrize(("rec", "reason"), [
    ("pm2_5", "bad_record"),
    ({"u": "ug/m3", "v": 1}, "missing_field"),
    ({"n": "radon", "u": "Bq", "v": 1}, "unknown_measurement"),
    ({"n": "pm2_5", "u": "mg/m3", "v": 1}, "unit_mismatch"),
    ({"n": "pm2_5", "u": "ug/m3"}, "missing_field"),
    ({"n": "pm2_5", "u": "ug/m3", "v": "35"}, "wrong_type"),
    ({"n": "pm2_5", "u": "ug/m3", "v": True}, "wrong_type"),
    ({"n": "pm2_5", "u": "ug/m3", "v": -1}, "out_of_range"),
    ({"n": "pm2_5", "u": "ug/m3", "v": 1e9}, "out_of_range"),
])
def test_record_reasons(rec: Any, reason: str) -> None:
    good, bad = check_records(envelope(msg(e=[rec, {"n": "o3", "u": "ug/m3", "v": 80}])))
    assert [r.name for r in good] == ["o3"]
    assert [b.reason for b in bad] == [reason]


def test_duplicate_measurement_in_one_message() -> None:
    good, bad = check_records(envelope(msg(e=[{"n": "o3", "u": "ug/m3", "v": 1}] * 2)))
    assert len(good) == 1 and [b.reason for b in bad] == ["duplicate_measurement"]


def test_kitchen_enum_and_bay_bool() -> None:
    dev = "500103-kitchen-01-00000"
    topic = f"cb/v1/dev/500103/kitchen/500103-kitchen-01/{dev}/data"
    env = envelope({"dev": dev, "seq": 0, "t": NOW, "e": [
        {"n": "ai_event", "u": "enum", "vs": "smoking"},
        {"n": "ai_event", "u": "enum", "vs": "dancing"}]}, topic)
    good, bad = check_records(env)
    assert [r.value for r in good] == [3.0] and [b.reason for b in bad] == ["unknown_enum"]
    dev = "500103-bay-01-00000"
    topic = f"cb/v1/dev/500103/parking/500103-bay-01/{dev}/data"
    env = envelope({"dev": dev, "seq": 0, "t": NOW, "e": [
        {"n": "occupied", "u": "bool", "vb": True}, {"n": "battery", "u": "V", "v": 3.1}]}, topic)
    good, bad = check_records(env)
    assert [r.value for r in good] == [1.0, 3.1] and bad == []


def test_payload_level() -> None:
    assert reason_of(lambda: parse_json(b"{")) == "malformed_json"
    assert reason_of(lambda: parse_json(b" " * (MAX_PAYLOAD_BYTES + 1))) == "oversized"
    assert reason_of(lambda: parse_topic("cb/v1/dev/x", None)) == "bad_topic"
    assert reason_of(lambda: parse_topic(TOPIC, {"500101"})) == "wrong_district"
    # orjson refuses NaN and Infinity literals: they arrive as malformed JSON.
    assert reason_of(lambda: parse_json(b'{"v": NaN}')) == "malformed_json"
    assert parse_json(orjson.dumps(msg()))["dev"] == DEV


@pytest.mark.parametrize("dev", [
    DEV + ",district=500101", DEV + " x", DEV + "=1", DEV + '"', DEV + "\\", DEV + "\n",
    DEV + "\t", DEV + "\x7f", "500103-air-01-٠٠٠٠١", "500103-air-01-²²²²²",
    DEV.replace("a", "а"), DEV + "-" + "9" * 60,
])
def test_bad_id(dev: str) -> None:
    """Identifiers are ASCII letters, digits and ``_ . -``: nothing special to line protocol
    or MQTT, no Unicode digits (``'²'`` made the registry lookup raise ValueError, Arabic-Indic
    digits aliased device 00001)."""
    topic = f"cb/v1/dev/500103/environment/500103-air-01/{dev}/data"
    assert reason_of(lambda: parse_topic(topic, None)) == "bad_id"
    with pytest.raises(Rejected) as e:  # in the payload, on a clean topic: all readings
        envelope(msg(dev=dev))
    assert (e.value.reason, e.value.readings) == ("bad_id", 2)
    assert len(e.value.detail) < 120  # details are bounded, whatever the id's length


def test_bad_id_in_other_segments() -> None:
    assert reason_of(lambda: parse_topic(TOPIC.replace("500103-air-01/", "500103-air-01,x/"),
                                         None)) == "bad_id"
    assert reason_of(lambda: parse_topic(TOPIC.replace("/environment/", "/envi ronment/"),
                                         None)) == "bad_id"
    # An unserved district is wrong_district; an ill-formed one is bad_id first.
    assert reason_of(lambda: parse_topic(TOPIC.replace("/500103/", "/5001 03/"),
                                         {"500103"})) == "bad_id"


def test_bool_sensor_numeric_value_must_be_0_or_1() -> None:
    dev = "500103-bay-01-00000"
    topic = f"cb/v1/dev/500103/parking/500103-bay-01/{dev}/data"
    for v, ok in [(0, True), (1, True), (1.0, True), (0.5, False), (2, False), (-1, False)]:
        env = envelope({"dev": dev, "seq": 0, "t": NOW, "e": [
            {"n": "occupied", "u": "bool", "v": v}]}, topic)
        good, bad = check_records(env)
        assert (len(good), [b.reason for b in bad]) == ((1, []) if ok else (0, ["wrong_type"]))


def test_numbers_beyond_float_range_from_python() -> None:
    """JSON parsers cap integers at 64 bits; documents built in Python do not."""
    assert reason_of(lambda: envelope(msg(t=10**400))) == "bad_time"
    with pytest.raises(Rejected) as e:
        envelope(msg(seq=10**5000))  # str() of it would raise ValueError
    assert e.value.reason == "bad_seq" and len(e.value.detail) < 80
    good, bad = check_records(envelope(msg(e=[{"n": "pm2_5", "u": "ug/m3", "v": 10**400}])))
    assert good == [] and [b.reason for b in bad] == ["out_of_range"]


def test_deeply_nested_unit_is_a_unit_mismatch() -> None:
    """``str()`` of a 1020-deep JSON array raises RecursionError; it escaped the edge."""
    payload = (b'{"dev":"%s","seq":1,"t":%d,"e":[{"n":"pm2_5","v":1,"u":' % (DEV.encode(), NOW)
               + b"[" * 1020 + b"]" * 1020 + b"}]}")
    good, bad = check_records(envelope(parse_json(payload)))
    assert good == [] and [b.reason for b in bad] == ["unit_mismatch"]
