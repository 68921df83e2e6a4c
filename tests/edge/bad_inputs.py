"""A corpus of bad device messages, as data: what a district edge must survive.

Every case starts from a real message of the seeded city (``City(1.0)``): the records a
device's firmware model (``firmware_sim``) emits, encoded by ``citybrain.payload`` — and
breaks one thing. ``build_corpus(now)`` returns the cases, each with the reason code the
edge must count it under (``edge.validate``) and how many readings that covers, for an edge
serving district ``DISTRICT``.

Counting follows the edge's accounting: a message rejected before its JSON is parsed (topic,
size, JSON) counts as one reading; one rejected as a whole after that counts the records it
claims (``readings_claimed``); a per-record rejection counts one reading, and the message's
other records are still accepted; births and deaths carry no readings. Replays are not
rejections: they are counted as duplicates (``reason`` None).

Cases are independent of their order: each message that gets past de-duplication has its
own sequence number, and the replay cases use devices of their own, with the message they
replay in ``prelude``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from citybrain.payload import MAX_PAYLOAD_BYTES, Record, encode_data, record
from citybrain.topics import device_filter
from firmware_sim.devices import make_model
from firmware_sim.faults import FaultConfig
from seeds.city import City, Device

#: The district the edge under test serves.
DISTRICT = "500103"
#: The one device most cases are about (an air station: eight numeric records).
DEVICE = "500103-air-01-00001"
SEED = 20261121
DAY_S = 86400.0
#: Every reason code the edge counts rejections under (``edge.validate``'s docstring and
#: docs/architecture.md list them; ``internal_error`` is the gateway's own, for bugs).
REASONS = frozenset({
    "oversized", "bad_topic", "bad_id", "wrong_district", "malformed_json", "not_an_object",
    "missing_field", "wrong_type", "bad_seq", "bad_time", "ts_future", "ts_past",
    "empty_records", "too_many_records", "topic_mismatch", "unknown_device", "stale_seq",
    "bad_record", "unknown_measurement", "unit_mismatch", "not_finite", "out_of_range",
    "unknown_enum", "duplicate_measurement", "internal_error"})


@dataclass(frozen=True, slots=True)
class BadInput:
    """One kind of bad device message and what the edge must make of it."""

    kind: str
    topic: str
    payload: bytes
    #: reason code it is rejected under (``None``: a replay, counted as a duplicate)
    reason: str | None
    #: readings rejected under ``reason``
    rejected: int
    #: readings of the same message still accepted (a per-record rejection)
    accepted: int = 0
    #: readings dropped as duplicates
    duplicates: int = 0
    #: valid messages sent first (each accepted in full), e.g. the original of a replay
    prelude: tuple[tuple[str, bytes], ...] = field(default=())

    @property
    def readings_in(self) -> int:
        return self.rejected + self.accepted + self.duplicates

    @property
    def dead_letters(self) -> int:
        return 0 if self.reason is None else 1

    @property
    def deliverable(self) -> bool:
        """Whether a broker can carry it to the edge's subscription at all.

        A topic of another district or prefix is not routed to this edge; a topic with a
        wildcard, NUL or control character cannot be published (Mosquitto drops a client that
        tries; paho refuses wildcards). Such cases exist only at the unit level."""
        t = self.topic
        if "+" in t or "#" in t or len(t.encode("utf-8", "surrogatepass")) > 65535:
            return False
        if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in t):
            return False
        return mqtt.topic_matches_sub(device_filter(DISTRICT), t)


def data_topic(device: str, district: str = DISTRICT, domain: str = "environment",
               system: str | None = None, channel: str = "data") -> str:
    """A device topic; ``system`` defaults to the device id without its ``-nnnnn``."""
    system = system if system is not None else device.rpartition("-")[0]
    return f"cb/v1/dev/{district}/{domain}/{system}/{device}/{channel}"


def firmware_records(city: City, device_id: str, now: float) -> list[Record]:
    """The records the device's firmware model emits first, without faults."""
    device = _device(city, device_id)
    model = make_model(device, SEED, FaultConfig.none(), now)
    doc = orjson.loads(model.emit().payload)
    records: list[Record] = doc["e"]
    return records


def _device(city: City, device_id: str) -> Device:
    device = city.lookup_device(device_id)
    if device is None:
        raise ValueError(f"{device_id} is not a device of the seeded city")
    return device


def _dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


def sub(data: bytes, old: bytes, new: bytes, count: int = -1) -> bytes:
    """``data.replace`` that insists on replacing something (a case must break its message)."""
    if old not in data:
        raise ValueError(f"{old!r} is not in {data[:80]!r}")
    return data.replace(old, new, count)


def build_corpus(now: float | None = None, city: City | None = None) -> list[BadInput]:
    """Every kind of bad message, built around the edge clock ``now`` (default: time now)."""
    now = time.time() if now is None else now
    city = city or City(1.0)
    topic = data_topic(DEVICE)
    base = firmware_records(city, DEVICE, now)
    n = len(base)  # readings a whole-message rejection covers
    assert n == 8, base
    seqs = iter(range(100, 10_000))
    cases: list[BadInput] = []

    def doc(**over: Any) -> dict[str, Any]:
        """A valid data message of DEVICE with a fresh seq, fields replaced by ``over``."""
        d: dict[str, Any] = {"dev": DEVICE, "seq": next(seqs), "t": now,
                             "e": [dict(r) for r in base]}
        d.update(over)
        return d

    def without(name: str) -> dict[str, Any]:
        d = doc()
        del d[name]
        return d

    def valid() -> bytes:
        return _dumps(doc())

    def add(kind: str, payload: bytes, reason: str | None, rejected: int, *,
            topic_: str = topic, accepted: int = 0, duplicates: int = 0,
            prelude: tuple[tuple[str, bytes], ...] = ()) -> None:
        cases.append(BadInput(kind, topic_, payload, reason, rejected, accepted, duplicates,
                              prelude))

    def record_case(kind: str, bad: Any, reason: str, *, device: str = DEVICE,
                    domain: str = "environment", records: list[Record] | None = None) -> None:
        """One bad record appended to the device's valid ones: only it is rejected."""
        good = records if records is not None else [dict(r) for r in base]
        payload = encode_data(device, next(seqs), now, [*good, bad])
        add(kind, payload, reason, 1, topic_=data_topic(device, domain=domain),
            accepted=len(good))

    # -- the payload is not JSON (rejected before parsing: one reading) --------------------
    ok = valid()
    add("json_truncated", ok[: len(ok) // 2], "malformed_json", 1)
    add("json_garbage", b"{not json", "malformed_json", 1)
    add("json_empty_payload", b"", "malformed_json", 1)
    add("json_whitespace_only", b" \t\r\n ", "malformed_json", 1)
    add("json_trailing_garbage", valid() + b"}", "malformed_json", 1)
    add("json_two_documents", valid() + b"\n" + valid(), "malformed_json", 1)
    add("json_single_quotes", sub(valid(), b'"', b"'"), "malformed_json", 1)
    add("json_trailing_comma", valid()[:-1] + b",}", "malformed_json", 1)
    add("json_invalid_utf8", sub(valid(), DEVICE.encode(), DEVICE.encode() + b"\xff\xfe"),
        "malformed_json", 1)
    add("json_overlong_utf8", sub(valid(), b'"dev"', b'"de\xc1\xb6"'), "malformed_json", 1)
    add("json_utf8_bom", b"\xef\xbb\xbf" + valid(), "malformed_json", 1)
    add("json_utf16", valid().decode().encode("utf-16"), "malformed_json", 1)
    add("json_lone_surrogate_escape", sub(valid(), DEVICE.encode(), b"\\ud800"),
        "malformed_json", 1)
    add("json_nan_time", sub(valid(), f'"t":{_dumps(now).decode()}'.encode(), b'"t":NaN'),
        "malformed_json", 1)
    add("json_infinity_value", sub(valid(), b'"v":', b'"v":Infinity,"x":', 1),
        "malformed_json", 1)
    add("json_minus_infinity_value", sub(valid(), b'"v":', b'"v":-Infinity,"x":', 1),
        "malformed_json", 1)
    add("json_number_beyond_double", sub(valid(), b'"v":', b'"v":1e400,"x":', 1),
        "malformed_json", 1)
    add("json_nesting_beyond_limit", _dumps(doc())[:-1] + b',"x":' + b"[" * 1100 + b"]" * 1100
        + b"}", "malformed_json", 1)
    add("json_nul_byte", b"\x00" + valid(), "malformed_json", 1)

    # -- too big ----------------------------------------------------------------------------
    pad = doc()
    pad["pad"] = "x" * MAX_PAYLOAD_BYTES
    add("oversized_just_over", _dumps(pad), "oversized", 1)
    huge = doc()
    huge["pad"] = "y" * (1024 * 1024)
    add("oversized_one_mebibyte", _dumps(huge), "oversized", 1)
    many = doc(e=[dict(r) for r in base] * 2000)
    add("oversized_many_records", _dumps(many), "oversized", 1)

    # -- JSON, but not an object ------------------------------------------------------------
    add("not_object_array", _dumps([doc()]), "not_an_object", 1)
    add("not_object_number", b"42", "not_an_object", 1)
    add("not_object_string", b'"500103-air-01-00001"', "not_an_object", 1)
    add("not_object_null", b"null", "not_an_object", 1)
    add("not_object_true", b"true", "not_an_object", 1)

    # -- header fields ----------------------------------------------------------------------
    add("missing_dev", _dumps(without("dev")), "missing_field", n)
    add("missing_seq", _dumps(without("seq")), "missing_field", n)
    add("missing_time", _dumps(without("t")), "missing_field", n)
    add("missing_records", _dumps(without("e")), "missing_field", 1)
    add("field_names_wrong_case", _dumps({k.upper(): v for k, v in doc().items()}),
        "missing_field", 1)
    add("dev_not_string", _dumps(doc(dev=500103)), "wrong_type", n)
    add("dev_null", _dumps(doc(dev=None)), "wrong_type", n)
    add("seq_string", _dumps(doc(seq="17")), "wrong_type", n)
    add("seq_float", _dumps(doc(seq=17.0)), "wrong_type", n)
    add("seq_bool", _dumps(doc(seq=True)), "wrong_type", n)
    add("seq_negative", _dumps(doc(seq=-1)), "bad_seq", n)
    add("seq_2_pow_32", _dumps(doc(seq=2**32)), "bad_seq", n)
    add("seq_u64_max", _dumps(doc(seq=2**64 - 1)), "bad_seq", n)
    add("time_string", _dumps(doc(t="2026-11-21T12:00:00Z")), "wrong_type", n)
    add("time_bool", _dumps(doc(t=True)), "wrong_type", n)
    add("time_null", _dumps(doc(t=None)), "wrong_type", n)
    add("records_object", _dumps(doc(e=base[0])), "wrong_type", 1)
    add("records_string", _dumps(doc(e="pm2_5=35")), "wrong_type", 1)
    add("records_empty", _dumps(doc(e=[])), "empty_records", 1)
    add("records_too_many", _dumps(doc(e=[dict(base[0])] * 65)), "too_many_records", 65)

    # -- identifiers: topic structure, characters, the device and its topic ---------------------
    add("topic_too_few_levels", valid(), "bad_topic", 1,
        topic_=f"cb/v1/dev/{DISTRICT}/environment/500103-air-01/data")
    add("topic_extra_level", valid(), "bad_topic", 1, topic_=topic.replace("/data", "/x/data"))
    add("topic_trailing_slash", valid(), "bad_topic", 1, topic_=topic + "/")
    add("topic_unknown_channel", valid(), "bad_topic", 1, topic_=data_topic(DEVICE,
                                                                            channel="status"))
    add("topic_channel_upper_case", valid(), "bad_topic", 1,
        topic_=data_topic(DEVICE, channel="DATA"))
    add("topic_empty_segment", valid(), "bad_topic", 1,
        topic_=data_topic(DEVICE, domain=""))
    add("topic_wrong_version", valid(), "bad_topic", 1, topic_=topic.replace("cb/v1", "cb/v2"))
    add("topic_wildcard_segment", valid(), "bad_topic", 1,
        topic_=data_topic(DEVICE, system="+"))
    add("topic_nul_in_device", valid(), "bad_topic", 1,
        topic_=data_topic(DEVICE + "\x00x", system="500103-air-01"))
    add("topic_wrong_district", valid(), "wrong_district", 1,
        topic_=data_topic(DEVICE, district="500101"))
    for kind, bad_dev in [
            ("id_comma_in_device", DEVICE + ",district=500101"),
            ("id_space_in_device", DEVICE + " pm2_5=1"),
            ("id_equals_in_device", DEVICE + "=1"),
            ("id_quote_in_device", DEVICE + '"'),
            ("id_backslash_in_device", DEVICE + "\\"),
            ("id_newline_in_device", DEVICE + "\nraw_air,device=x pm2_5=1"),
            ("id_tab_in_device", DEVICE + "\t"),
            ("id_del_in_device", DEVICE + "\x7f"),
            ("id_c1_control_in_device", DEVICE + "\x85"),
            ("id_arabic_indic_digits", "500103-air-01-٠٠٠٠١"),
            ("id_superscript_digits", "500103-air-01-²²²²²"),
            ("id_fullwidth_digits", "500103-air-01-０００００"),
            ("id_too_long", DEVICE + "-" + "9" * 100),
            ("id_homoglyph_cyrillic", DEVICE.replace("a", "а")),
    ]:
        add(kind, _dumps(doc(dev=bad_dev)), "bad_id", 1,
            topic_=data_topic(bad_dev, system="500103-air-01"))
    add("id_comma_in_system", valid(), "bad_id", 1,
        topic_=data_topic(DEVICE, system="500103-air-01,kind=lot"))
    add("id_space_in_district", valid(), "bad_id", 1,
        topic_=data_topic(DEVICE, district=DISTRICT + " x"))
    add("payload_dev_newline", _dumps(doc(dev=DEVICE + "\n")), "bad_id", n)
    add("payload_dev_comma", _dumps(doc(dev=DEVICE + ",x=1")), "bad_id", n)
    add("payload_dev_empty", _dumps(doc(dev="")), "bad_id", n)
    add("dev_unknown_on_real_topic", _dumps(doc(dev="500103-air-01-99999")), "topic_mismatch",
        n)
    other = "500103-air-01-00002"  # a real device publishing on DEVICE's topic
    add("device_on_another_devices_topic", _dumps(doc(dev=other)), "topic_mismatch", n,
        topic_=topic)
    add("topic_wrong_system", _dumps(doc()), "topic_mismatch", n,
        topic_=data_topic(DEVICE, system="500103-noise-01"))
    add("topic_wrong_domain", _dumps(doc()), "topic_mismatch", n,
        topic_=data_topic(DEVICE, domain="parking"))
    foreign = "500101-air-01-00001"  # a device of another district, on this district's topic
    add("device_of_another_district", _dumps(doc(dev=foreign)), "topic_mismatch", n,
        topic_=data_topic(foreign, district=DISTRICT))
    for kind, ghost in [("unknown_device_index", "500103-air-01-99999"),
                        ("device_beyond_scale", "500103-air-01-00012"),
                        ("unknown_system", "500103-air-09-00001"),
                        ("device_id_not_numbered", "500103-air-01-0000a")]:
        add(kind, _dumps(doc(dev=ghost)), "unknown_device", n, topic_=data_topic(ghost))

    # -- device time ------------------------------------------------------------------------
    add("time_future_hour", _dumps(doc(t=now + 3600)), "ts_future", n)
    add("time_far_future_2100", _dumps(doc(t=4_102_444_800.0)), "ts_future", n)
    add("time_milliseconds", _dumps(doc(t=round(now * 1000))), "ts_future", n)
    add("time_max_double", _dumps(doc(t=1.7976931348623157e308)), "ts_future", n)
    add("time_u64_max", _dumps(doc(t=2**64 - 1)), "ts_future", n)
    add("time_past_90_days", _dumps(doc(t=now - 90 * DAY_S)), "ts_past", n)
    add("time_epoch_zero", _dumps(doc(t=0)), "ts_past", n)
    add("time_negative", _dumps(doc(t=-1.5)), "ts_past", n)
    add("time_min_double", _dumps(doc(t=-1.7976931348623157e308)), "ts_past", n)

    # -- records: each bad record is rejected alone ---------------------------------------------
    record_case("record_string", "pm2_5", "bad_record")
    record_case("record_null", None, "bad_record")
    record_case("record_array", ["pm2_5", "ug/m3", 35.2], "bad_record")
    record_case("record_without_name", {"u": "ug/m3", "v": 35.2}, "missing_field")
    record_case("record_name_not_string", {"n": 7, "u": "ug/m3", "v": 35.2}, "missing_field")
    record_case("record_name_nested", {"n": {"n": "pm2_5"}, "v": 35.2}, "missing_field")
    record_case("measurement_unknown", {"n": "radon", "u": "Bq/m3", "v": 12.0},
                "unknown_measurement")
    record_case("measurement_of_another_kind", {"n": "laeq", "u": "dB", "v": 55.0},
                "unknown_measurement")
    record_case("measurement_upper_case", {"n": "PM2_5", "u": "ug/m3", "v": 35.2},
                "unknown_measurement")
    record_case("measurement_line_protocol_injection",
                {"n": "pm2_5=1 0\nraw_air,device=x pm2_5", "u": "ug/m3", "v": 1.0},
                "unknown_measurement")
    record_case("measurement_comma_tag", {"n": "pm2_5,district=500101", "u": "ug/m3",
                                          "v": 1.0}, "unknown_measurement")
    record_case("measurement_nul", {"n": "pm2_5\x00", "u": "ug/m3", "v": 1.0},
                "unknown_measurement")
    record_case("measurement_trailing_space", {"n": "pm2_5 ", "u": "ug/m3", "v": 1.0},
                "unknown_measurement")
    # The record's measurement is valid; make it a duplicate-free one by dropping it from base.
    rest = [dict(r) for r in base if r["n"] != "pm2_5"]
    record_case("unit_wrong", {"n": "pm2_5", "u": "mg/m3", "v": 0.035}, "unit_mismatch",
                records=rest)
    record_case("unit_not_string", {"n": "pm2_5", "u": 3, "v": 35.2}, "unit_mismatch",
                records=rest)
    record_case("unit_with_control_characters", {"n": "pm2_5", "u": "ug/m3\r\n", "v": 35.2},
                "unit_mismatch", records=rest)
    nested_unit = encode_data(DEVICE, next(seqs), now, [*rest, {"n": "pm2_5", "v": 35.2}])
    nested_unit = sub(nested_unit, b'"v":35.2}]', b'"v":35.2,"u":' + b"[" * 1020
                                      + b"]" * 1020 + b"}]")
    add("unit_deeply_nested", nested_unit, "unit_mismatch", 1, accepted=len(rest))
    record_case("value_missing", {"n": "pm2_5", "u": "ug/m3"}, "missing_field", records=rest)
    record_case("value_null", {"n": "pm2_5", "u": "ug/m3", "v": None}, "missing_field",
                records=rest)
    record_case("value_string", {"n": "pm2_5", "u": "ug/m3", "v": "35.2"}, "wrong_type",
                records=rest)
    record_case("value_bool", {"n": "pm2_5", "u": "ug/m3", "v": True}, "wrong_type",
                records=rest)
    record_case("value_object", {"n": "pm2_5", "u": "ug/m3", "v": {"v": 35.2}}, "wrong_type",
                records=rest)
    record_case("value_array", {"n": "pm2_5", "u": "ug/m3", "v": [35.2]}, "wrong_type",
                records=rest)
    record_case("value_as_vs_string", {"n": "pm2_5", "u": "ug/m3", "vs": "35.2"},
                "missing_field", records=rest)
    record_case("value_negative", {"n": "pm2_5", "u": "ug/m3", "v": -1.0}, "out_of_range",
                records=rest)
    record_case("value_too_high", {"n": "pm2_5", "u": "ug/m3", "v": 1e9}, "out_of_range",
                records=rest)
    record_case("value_max_double", {"n": "pm2_5", "u": "ug/m3", "v": 1.7976931348623157e308},
                "out_of_range", records=rest)
    record_case("value_u64_max", {"n": "pm2_5", "u": "ug/m3", "v": 2**64 - 1}, "out_of_range",
                records=rest)
    # 2**64 is beyond orjson's integers: it parses as a float, still out of range.
    add("value_beyond_u64", sub(encode_data(DEVICE, next(seqs), now, rest),
        b"]}", b',{"n":"pm2_5","u":"ug/m3","v":18446744073709551616}]}'), "out_of_range", 1,
        accepted=len(rest))
    record_case("measurement_twice", dict(base[0]), "duplicate_measurement")

    bay = "500103-bay-01-00001"
    bay_records = firmware_records(city, bay, now)
    bay_rest = [r for r in bay_records if r["n"] != "occupied"]
    record_case("bool_as_string", {"n": "occupied", "u": "bool", "vb": "true"}, "wrong_type",
                device=bay, domain="parking", records=bay_rest)
    record_case("bool_as_fraction", {"n": "occupied", "u": "bool", "v": 0.5}, "wrong_type",
                device=bay, domain="parking", records=bay_rest)
    record_case("bool_as_two", {"n": "occupied", "u": "bool", "v": 2}, "wrong_type",
                device=bay, domain="parking", records=bay_rest)
    lot = "500103-lot-01-00001"
    lot_rest = [r for r in firmware_records(city, lot, now) if r["n"] != "entries"]
    record_case("integer_as_fraction", {"n": "entries", "u": "count", "v": 2.5}, "wrong_type",
                device=lot, domain="parking", records=lot_rest)
    kitchen = "500103-kitchen-01-00001"
    kitchen_records = firmware_records(city, kitchen, now)
    record_case("enum_unknown_value", record("ai_event", "enum", "dancing"), "unknown_enum",
                device=kitchen, domain="kitchen", records=kitchen_records)
    record_case("enum_line_protocol_injection",
                record("ai_event", "enum", 'smoking",x="1\nraw_kitchen ai_event=3'),
                "unknown_enum", device=kitchen, domain="kitchen", records=kitchen_records)
    record_case("enum_as_number", {"n": "ai_event", "u": "enum", "v": 3}, "wrong_type",
                device=kitchen, domain="kitchen", records=kitchen_records)

    # -- replays (duplicates, not rejections) and stale sequence numbers ------------------------
    replayed = "500103-air-01-00005"
    original = encode_data(replayed, 41, now, firmware_records(city, replayed, now))
    add("replay_exact_copy", original, None, 0, topic_=data_topic(replayed), duplicates=n,
        prelude=((data_topic(replayed), original),))
    changed = "500103-air-01-00006"
    first = encode_data(changed, 7, now, firmware_records(city, changed, now))
    add("replay_same_seq_other_values", encode_data(changed, 7, now + 1.0, [
        record("pm2_5", "ug/m3", 999.0)]), None, 0, topic_=data_topic(changed), duplicates=1,
        prelude=((data_topic(changed), first),))
    stale = "500103-air-01-00007"
    ahead = encode_data(stale, 5000, now, firmware_records(city, stale, now))
    add("seq_below_replay_window", encode_data(stale, 10, now, firmware_records(
        city, stale, now)), "stale_seq", n, topic_=data_topic(stale),
        prelude=((data_topic(stale), ahead),))

    # -- births and deaths (no readings) ------------------------------------------------------
    birth_model = make_model(_device(city, DEVICE), SEED, FaultConfig.none(), now)
    birth = birth_model.birth(now, "link-bad-inputs", "power_on")
    add("birth_not_object", b"[1, 2]", "not_an_object", 0,
        topic_=data_topic(DEVICE, channel="birth"))
    add("birth_without_link", _dumps({k: v for k, v in orjson.loads(birth).items()
                                      if k != "link"}), "missing_field", 0,
        topic_=data_topic(DEVICE, channel="birth"))
    add("birth_of_another_device", birth, "topic_mismatch", 0,
        topic_=data_topic("500103-air-01-00002", channel="birth"))
    ghost = "500103-air-01-99998"
    add("birth_unknown_device", sub(birth, DEVICE.encode(), ghost.encode()),
        "unknown_device", 0, topic_=data_topic(ghost, channel="birth"))
    add("data_message_on_birth_channel", valid(), "missing_field", 0,
        topic_=data_topic(DEVICE, channel="birth"))
    add("death_link_not_string", b'{"link": 5}', "missing_field", 0,
        topic_=data_topic(DEVICE, channel="death"))
    return cases
