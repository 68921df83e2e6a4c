"""Validation of device messages against the topic scheme and the sensor catalogue.

Pure functions: bytes and strings in, a value or ``Rejected`` out. Nothing here does I/O, so
every reason code is unit-tested without a broker. Reason codes are short, stable strings used
as counter labels and in dead letters (``docs/architecture.md`` lists them).

A message is checked in two stages, so that de-duplication (which needs a trusted device id
and sequence number) sits between them:

1. ``check_envelope`` — size, topic, JSON, header fields (dev, seq, t, e), identifiers
   well-formed, the device is known and publishes on its own topic. Failure rejects every
   reading. Then de-duplication, then ``check_time`` (device time plausible; failure
   rejects every reading) — after the de-duplication, so that a redelivered copy of a
   message is a duplicate, not a second rejection.
2. ``check_records`` — each SenML-like record: known measurement for the device kind, unit,
   value type, finite, inside the catalogue range. Failure rejects that reading only.

The edge's per-message path does the same checks more cheaply for the common case:
``data_route`` resolves a data topic and its device once (the edge keeps it per topic),
``quick_envelope`` takes a well-formed header in time at a glance, and ``split_records``
takes a plainly valid numeric record at once; ``quick_message`` does both at once for a
message whose header and every record pass that way (what a healthy device sends). Anything
else goes through the checks above, so every outcome and reason is the same.

Reason codes (``readings``: how many readings a rejection covers):

* whole message — ``oversized`` (payload over ``MAX_PAYLOAD_BYTES``), ``bad_topic`` (not
  ``cb/v1/dev/{district}/{domain}/{system}/{device}/{channel}``: wrong prefix or number of
  levels, empty segment, ``+ # NUL``, unknown channel), ``bad_id`` (a topic segment or the
  payload's ``dev`` is not 1-64 ASCII letters, digits, ``_ . -``: control characters,
  line-protocol specials ``, = space " \\``, look-alike Unicode digits), ``wrong_district``
  (not served by this edge), ``malformed_json`` (not JSON: syntax, invalid UTF-8, BOM, NaN or
  Infinity literals, numbers beyond float range, nesting deeper than 1024),
  ``not_an_object``, ``missing_field``, ``wrong_type`` (header field of the wrong JSON type;
  a boolean is never a number), ``bad_seq`` (not in 0..2**32-1), ``empty_records``,
  ``too_many_records`` (over ``MAX_RECORDS``), ``topic_mismatch`` (payload device is not the
  topic's, or the device belongs to another district, domain or system), ``unknown_device``
  (not in the city registry), ``bad_time`` (not finite or beyond float range), ``ts_future``
  / ``ts_past`` (outside ``TimeLimits``); ``stale_seq`` (below the de-duplication window)
  is raised by the caller.
* one reading — ``bad_record`` (not an object), ``missing_field``, ``unknown_measurement``
  (not reported by the device's kind), ``unit_mismatch``, ``wrong_type`` (string or boolean
  for a number, fraction for an integer, not 0/1 for a boolean, no string for an enum),
  ``unknown_enum``, ``not_finite``, ``out_of_range`` (outside the catalogue range),
  ``duplicate_measurement`` (same measurement twice in one message).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from citybrain.payload import MAX_PAYLOAD_BYTES
from citybrain.topics import DeviceTopic
from seeds.city import AI_EVENTS, City, Device, Measurement, catalogue_by_kind

#: Most records one message may carry; a device has at most a handful of sensors.
MAX_RECORDS = 64
SEQ_LIMIT = 2**32
#: Identifiers (topic segments, the payload's ``dev``): ASCII only, so nothing that is special
#: to MQTT, line protocol or a terminal, and no Unicode digits that ``int()`` would accept.
ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _show(value: object, limit: int = 64) -> str:
    """A bounded ``repr`` for details (dead letters carry them; a topic segment can be 64 KiB
    long). Containers show only their type: ``repr`` of a deeply nested JSON array raises
    ``RecursionError``, and a huge integer's ``str`` raises ``ValueError``."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"<{value.bit_length()}-bit int>"
    if isinstance(value, str):
        text = repr(value[:limit + 1])
        return text if len(text) <= limit + 2 else text[:limit] + "…"
    return f"<{type(value).__name__}>"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class Rejected(Exception):
    """A message or record failed validation. ``reason`` is the counter label."""

    def __init__(self, reason: str, detail: str, readings: int = 1) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.readings = readings


@dataclass(frozen=True, slots=True)
class Envelope:
    """A data message whose header passed validation."""

    topic: DeviceTopic
    device: Device
    seq: int
    t: float  # device time, s since the epoch (UTC)
    records: list[Any]


@dataclass(frozen=True, slots=True)
class Reading:
    name: str
    value: float


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """How far device time may be from the edge's clock, in seconds."""

    max_future_s: float = 300.0
    max_past_s: float = 30 * 86400.0


def readings_claimed(doc: Any) -> int:
    """How many readings a (possibly malformed) message claims to carry, for accounting.

    A message whose records cannot be counted counts as one reading, so that a rejected
    message is never accounted as zero.
    """
    if isinstance(doc, dict):
        e = doc.get("e")
        if isinstance(e, list) and e:
            return len(e)
    return 1


def parse_topic(topic: str, districts: set[str] | None) -> DeviceTopic:
    try:
        parsed = DeviceTopic.parse(topic)
    except ValueError as exc:
        raise Rejected("bad_topic", _clip(str(exc))) from None
    for name in ("district", "domain", "system", "device"):
        segment = getattr(parsed, name)
        if not ID_PATTERN.fullmatch(segment):
            raise Rejected("bad_id", f"topic {name} {_show(segment)} is not 1-64 of "
                                     "[A-Za-z0-9_.-]")
    if districts is not None and parsed.district not in districts:
        raise Rejected("wrong_district", f"district {parsed.district} is not served here")
    return parsed


def parse_json(payload: bytes) -> Any:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected("oversized", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Rejected("malformed_json", str(exc)) from None


def _field(doc: Mapping[str, Any], name: str, types: tuple[type, ...], n: int) -> Any:
    if name not in doc:
        raise Rejected("missing_field", f"no {name!r}", n)
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, types):
        raise Rejected("wrong_type", f"{name!r} is {type(value).__name__}", n)
    return value


def resolve_device(city: City, topic: DeviceTopic, dev: str, n: int) -> Device:
    """The device named in the payload, which must be the one that owns the topic."""
    if dev != topic.device:
        raise Rejected("topic_mismatch",
                       f"payload device {_show(dev)} on topic of {_show(topic.device)}", n)
    device = city.lookup_device(dev)
    if device is None:
        raise Rejected("unknown_device", f"{_show(dev)} is not in the city registry", n)
    s = device.system
    if (s.system_id, s.district_code, s.domain) != (topic.system, topic.district, topic.domain):
        raise Rejected("topic_mismatch", f"{_show(dev)} belongs to {s.district_code}/{s.domain}/"
                       f"{s.system_id}, not to the topic's", n)
    return device


@dataclass(frozen=True, slots=True)
class DataRoute:
    """A data topic of a known device that this edge serves: what every message on it
    shares (``data_route`` builds it once; the edge keeps it per topic)."""

    topic: DeviceTopic
    device: Device
    catalogue: Mapping[str, Measurement]
    numeric: Mapping[str, Numeric]


def data_route(city: City, topic: str, districts: set[str] | None) -> DataRoute | None:
    """The route of a data topic that passes ``parse_topic`` and whose device passes
    ``resolve_device``; None for any other topic (the full checks give its reason)."""
    try:
        parsed = parse_topic(topic, districts)
    except Rejected:
        return None
    if parsed.channel != "data":
        return None
    try:
        device = resolve_device(city, parsed, parsed.device, 0)
    except Rejected:
        return None
    return DataRoute(parsed, device, catalogue_by_kind()[device.kind],
                     numeric_by_kind()[device.kind])


def quick_envelope(route: DataRoute, doc: Any, now: float,
                   limits: TimeLimits) -> tuple[int, float, list[Any]] | None:
    """``(seq, t, records)`` of a data message on ``route`` in the common, well-formed case:
    only when ``check_envelope`` would pass with these values and ``check_time(t, now)``
    too. None means "not sure", never "rejected": then use the full checks for the reason.
    """
    if type(doc) is not dict:
        return None
    seq = doc.get("seq")
    t = doc.get("t")
    records = doc.get("e")
    # dev equal to the topic's device: a str that passed ID_PATTERN and resolve_device.
    if (doc.get("dev") != route.topic.device or type(seq) is not int
            or not 0 <= seq < SEQ_LIMIT or type(records) is not list
            or not 0 < len(records) <= MAX_RECORDS):
        return None
    if type(t) is not float:
        if type(t) is not int:
            return None
        try:
            t = float(t)
        except OverflowError:
            return None
    # A NaN or infinite t fails these comparisons too.
    if not now - limits.max_past_s <= t <= now + limits.max_future_s:
        return None
    return seq, t, records


def quick_message(route: DataRoute, doc: Any, now: float, limits: TimeLimits
                  ) -> tuple[int, float, list[str], list[float]] | None:
    """``(seq, t, names, values)`` of a data message on ``route`` that passes every check
    with no rejection at all: exactly when ``quick_envelope`` gives ``(seq, t, records)``
    and ``split_records`` takes every record of them at once (a numeric measurement of
    the route's kind, its unit, a number in range, whole if it must be, no name twice),
    with the names and values it would give. None means "not sure", never "rejected":
    then use ``quick_envelope`` / the full checks for the outcome and reasons.

    ``now``: the edge's clock, s since the epoch. The same tests as those two functions
    (``quick_envelope``, then ``_plain_reading`` per record): the per-device message path's
    common case."""
    head = quick_envelope(route, doc, now, limits)
    if head is None:
        return None
    seq, t, records = head
    numeric = route.numeric
    names: list[str] = []
    values: list[float] = []
    for rec in records:
        plain = _plain_reading(rec, numeric)
        if plain is None or plain[0] in names:
            return None
        names.append(plain[0])
        values.append(plain[1])
    return seq, t, names, values


def check_time(t: float, now: float, limits: TimeLimits, n: int) -> None:
    if not math.isfinite(t):
        raise Rejected("bad_time", f"device time {t!r} is not finite", n)
    if t > now + limits.max_future_s:
        raise Rejected("ts_future", f"device time is {t - now:.0f} s ahead of the edge", n)
    if t < now - limits.max_past_s:
        raise Rejected("ts_past", f"device time is {now - t:.0f} s behind the edge", n)


def check_envelope(city: City, topic: DeviceTopic, doc: Any) -> Envelope:
    """Validate a data message's header (not its time: see ``check_time``). Raises
    ``Rejected`` covering all its readings."""
    n = readings_claimed(doc)
    if not isinstance(doc, dict):
        raise Rejected("not_an_object", f"payload is a JSON {type(doc).__name__}", n)
    dev = _field(doc, "dev", (str,), n)
    if not ID_PATTERN.fullmatch(dev):
        raise Rejected("bad_id", f"payload device {_show(dev)} is not 1-64 of [A-Za-z0-9_.-]", n)
    seq = _field(doc, "seq", (int,), n)
    if not 0 <= seq < SEQ_LIMIT:
        raise Rejected("bad_seq", f"seq {_show(seq)} outside 0..2**32-1", n)
    try:
        t = float(_field(doc, "t", (int, float), n))
    except OverflowError:  # an int beyond float range (JSON parsers cap them; Python does not)
        raise Rejected("bad_time", "device time is beyond the float range", n) from None
    records = _field(doc, "e", (list,), n)
    if not records:
        raise Rejected("empty_records", "'e' has no records", n)
    if len(records) > MAX_RECORDS:
        raise Rejected("too_many_records", f"{len(records)} records > {MAX_RECORDS}", n)
    device = resolve_device(city, topic, dev, n)
    if not math.isfinite(t):
        raise Rejected("bad_time", f"device time {t!r} is not finite", n)
    return Envelope(topic, device, seq, t, records)


#: A numeric (``float`` or ``int``) measurement's checks: unit, min, max, whole numbers only.
Numeric = tuple[str, float, float, bool]


@cache
def numeric_by_kind() -> dict[str, dict[str, Numeric]]:
    """``{kind: {name: Numeric}}`` for the catalogue's float and int measurements: what
    ``split_records`` checks records against before (if ever) calling ``check_record``."""
    return {kind: {name: (m.unit, m.min, m.max, m.dtype == "int")
                   for name, m in by_name.items() if m.dtype in ("float", "int")}
            for kind, by_name in catalogue_by_kind().items()}


def _value(rec: Mapping[str, Any], m: Measurement) -> float:
    # A boolean sensor may also send 0/1 as 'v' (checked below).
    if m.dtype == "bool" and "vb" in rec:
        if not isinstance(rec["vb"], bool):
            raise Rejected("wrong_type", f"{m.name}: 'vb' must be true or false")
        return 1.0 if rec["vb"] else 0.0
    if m.dtype == "enum":
        vs = rec.get("vs")
        if not isinstance(vs, str):
            raise Rejected("wrong_type", f"{m.name}: enumerated value needs a string 'vs'")
        code = AI_EVENTS.get(vs)
        if code is None:
            raise Rejected("unknown_enum", f"{m.name}: {_show(vs, 40)} is not a known value")
        return float(code)
    v = rec.get("v")
    if v is None:
        raise Rejected("missing_field", f"{m.name}: no numeric 'v'")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise Rejected("wrong_type", f"{m.name}: 'v' is {type(v).__name__}")
    try:
        value = float(v)
    except OverflowError:  # an int beyond float range
        raise Rejected("out_of_range", f"{m.name}={_show(v)} outside [{m.min:g}, {m.max:g}]"
                       ) from None
    if not math.isfinite(value):
        raise Rejected("not_finite", f"{m.name}: {v!r}")
    if m.dtype == "int" and value != int(value):
        raise Rejected("wrong_type", f"{m.name}: {v!r} is not a whole number")
    if m.dtype == "bool" and value not in (0.0, 1.0):
        raise Rejected("wrong_type", f"{m.name}: {v!r} is not 0 or 1")
    return value


def check_record(rec: Any, catalogue: Mapping[str, Measurement]) -> Reading:
    """Validate one record against the device kind's catalogue; raises ``Rejected``."""
    if not isinstance(rec, dict):
        raise Rejected("bad_record", f"record is a JSON {type(rec).__name__}")
    name = rec.get("n")
    if not isinstance(name, str):
        raise Rejected("missing_field", "record without a string 'n'")
    m = catalogue.get(name)
    if m is None:
        raise Rejected("unknown_measurement", f"{_show(name, 40)} is not reported by this kind")
    unit = rec.get("u", m.unit)
    if unit != m.unit:
        raise Rejected("unit_mismatch", f"{name}: unit {_show(unit, 20)}, expected {m.unit!r}")
    value = _value(rec, m)
    if not m.min <= value <= m.max:
        raise Rejected("out_of_range", f"{name}={value:g} outside [{m.min:g}, {m.max:g}]")
    return Reading(name, value)


def _plain_reading(rec: Any, numeric: Mapping[str, Numeric]) -> tuple[str, float] | None:
    """``(name, value)`` of a record that plainly passes ``check_record``: a numeric
    measurement of ``numeric`` (the device kind's), its unit or none, a number (not a bool)
    within [min, max], whole if it must be. None: not plainly, ``check_record`` decides."""
    if type(rec) is not dict:
        return None
    name = rec.get("n")
    if type(name) is not str:
        return None
    spec = numeric.get(name)
    if spec is None:
        return None
    unit, lo, hi, whole = spec
    v: Any = rec.get("v")
    tv = type(v)  # a bool is neither
    if ((tv is float or tv is int) and lo <= v <= hi and rec.get("u", unit) == unit
            and (tv is int or not whole or v.is_integer())):
        return name, float(v)  # within [min, max]: finite, no overflow
    return None


def split_records(records: list[Any], catalogue: Mapping[str, Measurement],
                  numeric: Mapping[str, Numeric]) -> tuple[list[str], list[float],
                                                           list[Rejected]]:
    """Split a message's records into valid readings (their names and values, in order) and
    per-record rejections. ``catalogue``: the device kind's (``catalogue_by_kind``);
    ``numeric``: the same kind's ``numeric_by_kind``.

    A record of a numeric measurement that plainly passes (unit, a number in range, whole
    if it must be) is taken at once; any other record goes through ``check_record``, which
    gives the same verdict for those and the reason for the rest."""
    names: list[str] = []
    values: list[float] = []
    bad: list[Rejected] = []
    for rec in records:
        try:
            plain = _plain_reading(rec, numeric)
            if plain is None:
                reading = check_record(rec, catalogue)
                name, value = reading.name, reading.value
            else:
                name, value = plain
            if name in names:
                raise Rejected("duplicate_measurement", f"{name} twice in one message")
        except Rejected as exc:
            bad.append(exc)
            continue
        names.append(name)
        values.append(value)
    return names, values, bad


def check_records(env: Envelope) -> tuple[list[Reading], list[Rejected]]:
    """Split a message's records into valid readings and per-record rejections."""
    kind = env.device.kind
    names, values, bad = split_records(env.records, catalogue_by_kind()[kind],
                                       numeric_by_kind()[kind])
    return [Reading(n, v) for n, v in zip(names, values, strict=True)], bad
