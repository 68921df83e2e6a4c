"""Fuzzing the decoders that face untrusted bytes: device messages at the edge, frames at the
hub, and the hub's line-protocol rendering of whatever a frame carries.

* device messages: ``edge.validate`` (``parse_topic``, ``parse_json``, ``readings_claimed``,
  ``check_envelope``, ``check_time``, ``check_records``) raises nothing but ``Rejected`` and
  ``EdgeGateway.handle`` raises nothing at all, for 100k+ seeded mutations (bytes, JSON
  structure, topics) of real device messages and of the bad-input corpus, plus a hypothesis
  run over structured documents. The edge's accounting holds throughout: every reading in is
  accepted, rejected with a known reason, or a duplicate.
* frames: ``citybrain.frame.decode_frame`` raises nothing but ``FrameError`` for 100k+
  random byte strings, bit flips, truncations, header-field and body mutations (with a
  correct CRC, so the checks past it are reached) and zstd-header mutations of valid frames.
* no injection: for frames that decode — adversarial ones built on purpose (device ids full
  of line-protocol specials) and mutants — the hub's rendering (``SeriesRegistry`` +
  ``render_single``/``render_multi``, as ``hub.service`` ingests) writes exactly one line per
  stored reading, and a strict parser reads back exactly the expected measurement, tag set,
  field and timestamp. The same check runs end to end on the readings the edge accepted
  from the mutated device messages.

Deterministic: numpy generators with fixed seeds, hypothesis derandomized. Case counts are
printed (``pytest -s``) and asserted.
"""

from __future__ import annotations

import gc
import math
import re
import struct
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citybrain.frame import HEADER, HEADER_LEN, Frame, FrameError, decode_frame, encode_frame
from citybrain.payload import encode_data, record
from edge.batcher import FrameBuilder
from edge.gateway import EdgeConfig, EdgeGateway
from edge.validate import (
    Rejected,
    TimeLimits,
    check_envelope,
    check_records,
    check_time,
    parse_json,
    parse_topic,
    readings_claimed,
)
from firmware_sim.devices import make_model
from firmware_sim.faults import FaultConfig
from hub.lineproto import LineProtocolError, escape_tag_value, render_multi, render_single
from hub.series import SeriesRegistry
from seeds.city import AI_EVENTS, City, catalogue_by_kind
from tests import naive
from tests.edge.bad_inputs import REASONS as ALL_REASONS
from tests.edge.bad_inputs import build_corpus

pytestmark = pytest.mark.slow  # about 50 s of CPU in all

CITY = City(1.0)
DISTRICT = "500103"
CASES = 100_000
CATALOGUE = catalogue_by_kind()
LIMITS = TimeLimits()
#: Device time of the generated messages, and the pipeline's clock: fixed, so that every run
#: mutates the same bytes.
NOW = 1_763_712_000.0
#: The edges' clock is the real one: shift their window to be LIMITS around NOW.
EDGE_LIMITS = TimeLimits(max_future_s=NOW - time.time() + LIMITS.max_future_s,
                         max_past_s=time.time() - NOW + LIMITS.max_past_s)
#: Every reason code the edge may count, but ``internal_error`` (a bug).
REASONS = ALL_REASONS - {"internal_error"}
FRAME_REASONS = {"truncated", "bad_magic", "bad_version", "bad_header", "bad_crc", "oversized",
                 "bad_compression", "bad_strings", "bad_index"}
AGG_FIELDS = ["count", "mean", "min", "max", "sum", "first", "last", "std"]
AGG_IS_INT = np.array([True] + [False] * 7)
CITY_SYSTEMS = {s.system_id for s in CITY.systems}
ALL_NAMES = sorted({n for c in CATALOGUE.values() for n in c})

# Strings that are special somewhere: JSON, line protocol, MQTT, terminals, Unicode.
SPECIAL_STRINGS = ["", " ", ",", "=", '"', "\\", "\n", "\r", "\t", "\x00", "\x1b[2J", "\x7f",
                   "\x85", "\u2028", "\ufeff", "中", "é", "🙂", "#", "+", "/", "_", "time",
                   "a" * 300, "pm2_5,district=500101", 'x" y=1', "x\\", "a\\,b", "\\u0000",
                   "500103-air-01-٠٠٠٠١", "500103-air-01-²²²²²", "500103-air-01-00001\n",
                   "smoking\n", "ug/m3 ", "NaN", "Infinity", "-0", "1e400"]
INTERESTING_INTS = [0, 1, -1, 2, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
                    2**53, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1, 1_763_712_000,
                    1_763_712_000_000]
INTERESTING_FLOATS = [0.0, -0.0, 0.5, 1.5, -1.0, 5e-324, 2.2250738585072014e-308,
                      1.7976931348623157e308, -1.7976931348623157e308, 1e9, 9.2e18, 1e19,
                      float("nan"), float("inf"), float("-inf"), 35.2, 1e-9, 999999999.9999999]
TOKENS = [b'"', b"\\", b"{", b"}", b"[", b"]", b":", b",", b"-", b"0", b".", b"e", b"1e400",
          b"NaN", b"Infinity", b"-Infinity", b"null", b"true", b"false", b"\x00", b"\xff",
          b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\n", b"\\u0000", b"\\ud800", b"\\\\",
          b"1e308", b"18446744073709551616", b"-9223372036854775809", b"[" * 300,
          b"[" * 1100, b'"dev"', b'"seq"', b'"t"', b'"e"', b'"n"', b'"v"', b'"vb"', b'"vs"',
          b'"u"', b'"pm2_5"', b'"occupied"', b'"ai_event"', b" ", b"\t", b"\r\n"]
TOPIC_SEGMENTS = ["500103", "500101", "environment", "parking", "kitchen", "500103-air-01",
                  "500103-bay-01", "500103-air-01-00001", "500103-air-01-00002",
                  "500101-air-01-00001", "data", "birth", "death", "status", "+", "#", "",
                  "a,b", "a b", "a=b", 'a"', "a\\", "中", "x" * 100]


def report(name: str, **counts: int) -> None:
    print(f"\nfuzz {name}: " + ", ".join(f"{k}={v:,}" for k, v in counts.items()))


def fail_with_case(what: str, topic: str, payload: bytes, exc: BaseException) -> None:
    pytest.fail(f"{what} raised {type(exc).__name__}: {exc!r}\n  topic={topic!r}\n"
                f"  payload={payload[:400]!r}{'…' if len(payload) > 400 else ''}",
                pytrace=True)


# =============================================================================================
# The hub's rendering of a frame, and a strict reading of what it wrote
# =============================================================================================


_CONTROL = re.compile("[\x00-\x1f\x7f]")
# InfluxDB's scanners: a backslash escapes whatever follows it; a token ends at a stop.
_MEASUREMENT = re.compile(r"(?:\\.|[^\\, ])*", re.S)
_TAG_PART = re.compile(r"(?:\\.|[^\\,= ])*", re.S)
_FIELD_SET = re.compile(r"(?:\\.|[^\\ ])*", re.S)
_FIELD = re.compile(r"((?:\\.|[^\\,= ])+)=([^,]*)(?:,|$)", re.S)
# ... and their unescaping afterwards: only these pairs stand for one character.
_UNESCAPE_MEASUREMENT = re.compile(r"\\([, ])")
_UNESCAPE_KEY = re.compile(r"\\([,= ])")


def _end(token: re.Pattern[str], text: str, pos: int) -> int:
    m = token.match(text, pos)
    assert m is not None  # the token patterns also match the empty string
    return m.end()


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, str], int]:
    """Strictly parse one line (no string fields): measurement, tags, raw fields, timestamp.
    Raises AssertionError on anything but a single well-formed point."""
    assert line and not _CONTROL.search(line), repr(line)
    i = _end(_MEASUREMENT, line, 0)
    assert i > 0, f"no measurement in {line!r}"
    measurement = _UNESCAPE_MEASUREMENT.sub(r"\1", line[:i])
    tags: dict[str, str] = {}
    while i < len(line) and line[i] == ",":
        j = _end(_TAG_PART, line, i + 1)
        assert j < len(line) and line[j] == "=" and j > i + 1, f"tag key in {line!r}"
        key = _UNESCAPE_KEY.sub(r"\1", line[i + 1:j])
        i = _end(_TAG_PART, line, j + 1)
        assert i > j + 1 and (i == len(line) or line[i] != "="), f"tag value in {line!r}"
        assert key not in tags, f"duplicate tag {key!r} in {line!r}"
        tags[key] = _UNESCAPE_KEY.sub(r"\1", line[j + 1:i])
    assert i < len(line) and line[i] == " ", f"no field set in {line!r}"
    j = _end(_FIELD_SET, line, i + 1)
    raw = line[i + 1:j]
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        m = _FIELD.match(raw, pos)
        assert m is not None and m.group(2), f"field set {raw!r} in {line!r}"
        fields[_UNESCAPE_KEY.sub(r"\1", m.group(1))] = m.group(2)
        pos = m.end()
    assert fields and not raw.endswith(","), f"field set {raw!r} in {line!r}"
    assert j < len(line) and line[j] == " ", f"no timestamp in {line!r}"
    ts = line[j + 1:]
    assert ts.lstrip("-").isdigit() and ts.count("-") <= 1, f"timestamp {ts!r} in {line!r}"
    return measurement, tags, fields, int(ts)


def _float_field(text: str) -> float:
    assert text and not text.endswith("i") and all(c in "0123456789.-+e" for c in text), text
    assert "." in text, text  # always written as a float
    v = float(text)
    assert math.isfinite(v), text
    return v


def _placeable(device: str, system: str, district: str) -> bool:
    """Whether the hub can give the device series (independently of ``hub.series``)."""
    try:
        sys = CITY.system(system)
    except KeyError:
        return False
    if sys.district_code != district:
        return False
    try:
        escape_tag_value(device)
    except LineProtocolError:
        return False
    return True


class Hub:
    """A ``SeriesRegistry`` as the hub holds one, and what it must contain: the hub keys
    series by device id alone (an edge never sends one id under two systems), so a device
    keeps the district and system of its first valid appearance."""

    def __init__(self) -> None:
        self.registry = SeriesRegistry(CITY)
        self.owner: dict[str, tuple[str, str]] = {}  # device -> (district, system)


def check_hub_rendering(hub: Hub, frame: Frame) -> int:
    """Render ``frame`` the way the hub ingests it and read every line back strictly.
    Returns the number of lines (= stored readings)."""
    n = len(frame)
    if n == 0:
        return 0
    registry = hub.registry
    resolved = registry.resolve(frame)
    entries: list[tuple[str, str, str] | None] = []  # per device table entry
    for dev, sys in zip(frame.devices, frame.systems, strict=True):
        if dev not in hub.owner and _placeable(dev, sys, frame.district):
            hub.owner[dev] = (frame.district, sys)
        where = hub.owner.get(dev)
        entries.append(None if where is None else (dev, *where))
    rows: list[tuple[str, str, str, str] | None] = []
    for d, k in zip(frame.device.tolist(), frame.name.tolist(), strict=True):
        entry, name = entries[d], frame.names[k]
        ok = entry is not None and name in CATALOGUE[CITY.system(entry[2]).kind]
        rows.append((*entry, name) if entry is not None and ok else None)
    want_ok = np.array([r is not None for r in rows])
    got_ok = resolved.series >= 0
    assert np.array_equal(want_ok, got_ok), (frame.devices, frame.systems, frame.names)
    series = resolved.series[got_ok]
    ts = frame.ts_ns[got_ok]
    value = frame.value[got_ok]
    body, lines = render_single(registry.raw_prefixes, series, value, ts)
    finite = np.isfinite(value)
    assert lines == int(finite.sum()) == body.count(b"\n")
    text = body.decode("utf-8")
    assert text == "" or text.endswith("\n")
    kept = [r for r in rows if r is not None]
    expected = [(r, float(v), int(t)) for r, v, t, f in zip(
        kept, value.tolist(), ts.tolist(), finite.tolist(), strict=True) if f]
    parsed = text.split("\n")[:-1] if text else []
    assert len(parsed) == len(expected)
    points = [parse_line(line) for line in parsed]
    for point, ((device, district, system, name), v, t) in zip(points, expected, strict=True):
        measurement, tags, fields, ts_out = point
        assert measurement == f"raw_{CITY.system(system).kind}", point
        assert tags == {"device": device, "district": district, "system": system}, point
        assert list(fields) == [name], point
        got = _float_field(fields[name])
        assert abs(got - v) <= max(1e-9, 1e-9 * abs(v)), (point, v)
        assert ts_out == t, point
    if b"\\" in body:  # read by the escaping rules as documented (tests/naive.py): the same
        assert [(p.measurement, p.tags, p.ts) for p in naive.parse_lines(body)] == [
            (m, tags, ts_out) for m, tags, _, ts_out in points]
    owner_of: dict[int, tuple[str, str, str, str]] = {}
    for sid, row in zip(series.tolist(), kept, strict=True):
        assert owner_of.setdefault(sid, row) == row  # one series, one device and measurement
    if len(series):
        uniq = np.unique(series)[:16]  # the multi-field renderer, on a few series
        vals = np.random.default_rng(len(uniq)).normal(0, 1e6, (len(uniq), len(AGG_FIELDS)))
        agg, agg_lines = render_multi(registry.agg_prefixes["10s"], uniq, AGG_FIELDS, vals,
                                      AGG_IS_INT, np.full(len(uniq), 10**18, dtype=np.int64))
        assert agg_lines == len(uniq) == agg.count(b"\n")
        for agg_line, sid in zip(agg.decode("utf-8").split("\n")[:-1], uniq.tolist(),
                                 strict=True):
            measurement, tags, fields, _ = parse_line(agg_line)
            assert measurement == "agg_10s" and list(fields) == AGG_FIELDS, agg_line
            device, district, system, name = owner_of[sid]
            assert tags == {"device": device, "district": district, "m": name,
                            "kind": CITY.system(system).kind, "system": system}, agg_line
    return lines


# =============================================================================================
# Device messages
# =============================================================================================


Seeds = tuple[list[tuple[str, bytes]], list[tuple[str, bytes]], list[tuple[str, bytes]]]


def seed_messages(now: float) -> Seeds:
    """Real data messages of two devices per system of DISTRICT (firmware models) and an
    AI-camera event; their births and deaths; every case of the bad-input corpus."""
    data: list[tuple[str, bytes]] = []
    lifecycle: list[tuple[str, bytes]] = []
    for system in CITY.systems_in(DISTRICT):
        for device in list(CITY.devices_of(system))[:2]:
            model = make_model(device, 11, FaultConfig.none(), now)
            records = orjson.loads(model.emit().payload)["e"]
            data.append((model.topic("data"), encode_data(device.device_id, 3, now, records)))
            if device.kind == "kitchen":
                data.append((model.topic("data"), encode_data(
                    device.device_id, 4, now, [record("ai_event", "enum", "smoking")])))
            lifecycle.append((model.topic("birth"), model.birth(now, f"link-{device.index}",
                                                                "power_on")))
            lifecycle.append((model.topic("death"), orjson.dumps(
                {"link": f"link-{device.index}", "t": now})))
    corpus = [(c.topic, c.payload) for c in build_corpus(now, CITY) if len(c.payload) < 20_000]
    return data, lifecycle, corpus


class MessageMutator:
    """Seeded mutations of device messages: bytes, JSON structure and topics."""

    def __init__(self, seeds: Seeds, seed: int) -> None:
        data, lifecycle, corpus = seeds
        self.seeds = [*data, *lifecycle, *corpus]
        self.groups = (range(len(data)), range(len(data), len(data) + len(lifecycle)),
                       range(len(data) + len(lifecycle), len(self.seeds)))
        self.rng = np.random.default_rng(seed)
        # JSON-level mutations start from these (orjson writes only 254 levels deep)
        self.docs = [p if _is_json(p) else None for _, p in self.seeds]

    def _pick(self, xs: list[Any]) -> Any:
        return xs[int(self.rng.integers(len(xs)))]

    def case(self) -> tuple[str, bytes]:
        # 40 % from valid data messages, 10 % births and deaths, 50 % the bad-input corpus
        u = self.rng.random()
        group = self.groups[0 if u < 0.4 else 1 if u < 0.5 else 2]
        i = group[int(self.rng.integers(len(group)))]
        topic, payload = self.seeds[i]
        if u < 0.1:  # valid but for its values: readings to accept, frame and render
            return topic, self.mutate_values(payload)
        r = self.rng.random()
        doc = self.docs[i]
        if r < 0.5 and doc is not None:
            payload = self.mutate_json(doc)
        if r >= 0.4 or doc is None:
            payload = self.mutate_bytes(payload)
        if self.rng.random() < 0.12:
            topic = self.mutate_topic(topic)
        return topic, payload

    # -- values ----------------------------------------------------------------------------
    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if r < 0.12:
            return self._pick([None, True, False])
        if r < 0.3:
            if self.rng.random() < 0.5:
                return self._pick(INTERESTING_INTS) * self._pick([1, -1])
            return int(self.rng.integers(-(2**40), 2**40))
        if r < 0.5:
            f = self._pick(INTERESTING_FLOATS) if self.rng.random() < 0.6 else float(
                self.rng.normal(0, 10.0 ** self.rng.integers(0, 20)))
            return f
        if r < 0.75:
            return self._pick(SPECIAL_STRINGS + list(CATALOGUE["air"]) + list(AI_EVENTS)
                              + ["ug/m3", "bool", "enum", "count", "500103-air-01-00001"])
        if depth >= 3:
            return {}
        if r < 0.88:
            return [self.value(depth + 1) for _ in range(int(self.rng.integers(0, 4)))]
        keys = ["n", "u", "v", "vb", "vs", "dev", "seq", "t", "e", "link", "attrs", "x"]
        return {self._pick(keys): self.value(depth + 1)
                for _ in range(int(self.rng.integers(0, 4)))}

    def mutate_values(self, payload: bytes) -> bytes:
        """A new seq and some values anywhere in (or a little beyond) their valid range."""
        doc = orjson.loads(payload)
        doc["seq"] = int(self.rng.integers(2**32))
        catalogue = CATALOGUE[CITY.system(doc["dev"].rpartition("-")[0]).kind]
        for rec in doc["e"]:
            m = catalogue[rec["n"]]
            if "v" in rec and m.dtype == "float" and self.rng.random() < 0.5:
                span = m.max - m.min
                rec["v"] = float(self.rng.uniform(m.min - 0.05 * span, m.max + 0.05 * span))
        return orjson.dumps(doc)

    def mutate_json(self, payload: bytes) -> bytes:
        doc = orjson.loads(payload)
        for _ in range(int(self.rng.integers(1, 4))):
            doc = self._mutate_node(doc)
        try:
            return orjson.dumps(doc)
        except orjson.JSONEncodeError:  # e.g. nesting beyond orjson's 254
            return b"[]"

    def _mutate_node(self, node: Any) -> Any:
        """Walk down to a random container and change one thing in it."""
        if isinstance(node, dict | list) and node and self.rng.random() < 0.6:
            key = self._pick(list(node)) if isinstance(node, dict) else int(
                self.rng.integers(len(node)))
            node[key] = self._mutate_node(node[key])
            return node
        r = self.rng.random()
        if isinstance(node, dict):
            if node and r < 0.3:
                del node[self._pick(list(node))]
            elif r < 0.6:
                node[self._pick(["n", "u", "v", "vb", "vs", "dev", "seq", "t", "e", "zz"])] = (
                    self.value())
            elif node and r < 0.8:  # keep the key, change its type
                node[self._pick(list(node))] = self.value()
            else:
                return self.value()
            return node
        if isinstance(node, list):
            if node and r < 0.3:
                del node[int(self.rng.integers(len(node)))]
            elif node and r < 0.5:
                node.extend(node[: int(self.rng.integers(1, 70))])  # duplicates, too many
            elif r < 0.8:
                node.insert(int(self.rng.integers(len(node) + 1)), self.value())
            else:
                return self.value()
            return node
        return self.value()

    def mutate_bytes(self, data: bytes) -> bytes:
        buf = bytearray(data)
        for _ in range(int(self.rng.integers(1, 5))):
            op = int(self.rng.integers(8))
            pos = int(self.rng.integers(len(buf) + 1))
            if op == 0 and buf:  # flip bits
                p = min(pos, len(buf) - 1)
                buf[p] ^= 1 << int(self.rng.integers(8))
            elif op == 1 and buf:  # random byte
                buf[min(pos, len(buf) - 1)] = int(self.rng.integers(256))
            elif op in (2, 3):  # insert a token
                buf[pos:pos] = self._pick(TOKENS)
            elif op == 4 and buf:  # delete a range
                buf[pos:pos + int(self.rng.integers(1, 16))] = b""
            elif op == 5:  # duplicate a range
                end = pos + int(self.rng.integers(1, 64))
                buf[end:end] = buf[pos:end]
            elif op == 6:  # truncate
                del buf[pos:]
            else:  # splice with another message
                other = self.seeds[int(self.rng.integers(len(self.seeds)))][1]
                cut = int(self.rng.integers(len(other) + 1))
                buf = buf[:pos] + bytearray(other[cut:])
        return bytes(buf)

    def mutate_topic(self, topic: str) -> str:
        parts = topic.split("/")
        r = self.rng.random()
        if r < 0.4:
            parts[int(self.rng.integers(len(parts)))] = self._pick(TOPIC_SEGMENTS
                                                                    + SPECIAL_STRINGS)
        elif r < 0.55:
            del parts[int(self.rng.integers(len(parts)))]
        elif r < 0.7:
            parts.insert(int(self.rng.integers(len(parts) + 1)), self._pick(TOPIC_SEGMENTS))
        elif r < 0.85:
            parts[-1] = self._pick(["data", "birth", "death", "DATA", "", "data "])
        else:
            p = int(self.rng.integers(len(parts)))
            parts[p] += self._pick(SPECIAL_STRINGS)
        return "/".join(parts)


def _is_json(payload: bytes) -> bool:
    try:
        orjson.dumps(orjson.loads(payload))
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return False
    return True


class Pipeline:
    """The edge's validation stages chained as ``EdgeGateway.handle`` chains them (without
    de-duplication), checking what each stage promises; accepted readings are framed and
    rendered by the hub to check that nothing a device sends becomes an extra point or tag."""

    def __init__(self) -> None:
        self.builder = FrameBuilder(DISTRICT, max_readings=2000)
        self.hub = Hub()
        self.accepted = self.rejected = self.lines = self.frames = 0
        self.reasons: set[str] = set()

    def run(self, topic: str, payload: bytes, now: float) -> None:
        try:
            parsed = parse_topic(topic, {DISTRICT})
            doc = parse_json(payload)
        except Rejected as exc:
            self._rejected(exc, 1)
            return
        n = readings_claimed(doc)
        assert n >= 1
        if parsed.channel != "data":
            return
        try:
            env = check_envelope(CITY, parsed, doc)
            check_time(env.t, now, LIMITS, n)
        except Rejected as exc:
            self._rejected(exc, n)
            return
        good, bad = check_records(env)
        assert len(good) + len(bad) == len(env.records) == n
        catalogue = CATALOGUE[env.device.kind]
        assert len({r.name for r in good}) == len(good)
        for r in good:
            m = catalogue[r.name]
            assert math.isfinite(r.value) and m.min <= r.value <= m.max, r
            self.builder.add(env.device.device_id, env.device.system.system_id, env.seq,
                             env.t, r.name, r.value)
        for rejection in bad:
            self._rejected(rejection, 1)
        self.accepted += len(good)
        if len(self.builder) >= 2000:
            self.flush()

    def _rejected(self, exc: Rejected, n: int) -> None:
        assert exc.reason in REASONS, exc.reason
        assert exc.readings == n, (exc.reason, exc.readings, n)
        assert len(exc.detail) < 400, exc.detail  # dead letters stay small
        self.rejected += exc.readings
        self.reasons.add(exc.reason)

    def flush(self) -> None:
        if len(self.builder):
            n = len(self.builder)
            frame = decode_frame(self.builder.seal()[0])
            assert len(frame) == n
            lines = check_hub_rendering(self.hub, frame)
            assert lines == n  # every accepted reading is stored, as exactly one point
            self.lines += lines
            self.frames += 1


def new_edge() -> EdgeGateway:
    """An edge that is never started. Messages carry device time around the fixed ``NOW``
    (for runs that repeat exactly), so its clock window is widened to take them."""
    return EdgeGateway(EdgeConfig(districts={DISTRICT}, client_id=f"fuzz-{uuid.uuid4().hex[:8]}",
                                  time_limits=EDGE_LIMITS), city=CITY)


def check_edge_accounting(gw: EdgeGateway) -> dict[str, Any]:
    snap = gw.snapshot()
    assert snap.get("readings_in", 0) == (snap.get("readings_accepted", 0)
                                          + snap.get("readings_rejected", 0)
                                          + snap.get("duplicates", 0)), snap
    rejected = snap.get("rejected", {})
    assert set(rejected) <= REASONS, rejected  # never internal_error, never an unknown code
    assert sum(rejected.values()) == snap.get("readings_rejected", 0)
    assert sum(snap.get("rejected_messages", {}).values()) == snap.get("dead_letters", 0)
    return snap


def test_fuzz_device_messages() -> None:
    """100k+ mutated device messages through the validation stages and EdgeGateway.handle."""
    now = NOW
    mutator = MessageMutator(seed_messages(now), seed=20261121)
    pipeline = Pipeline()
    gw = new_edge()
    handled = edges = 0
    reasons: set[str] = set()
    for i in range(CASES):
        topic, payload = mutator.case()
        try:
            pipeline.run(topic, payload, now)
        except Rejected:
            pytest.fail(f"a Rejected escaped the pipeline: {topic!r} {payload[:300]!r}")
        except AssertionError:
            raise
        except Exception as exc:
            fail_with_case("edge validation", topic, payload, exc)
        try:
            gw.handle(topic, payload)
        except Exception as exc:
            fail_with_case("EdgeGateway.handle", topic, payload, exc)
        handled += 1
        if (i + 1) % 5000 == 0:  # a fresh edge now and then keeps its spool small
            reasons |= set(check_edge_accounting(gw).get("rejected", {}))
            edges += 1
            gw = new_edge()
            gc.collect()
    reasons |= set(check_edge_accounting(gw).get("rejected", {}))
    pipeline.flush()
    report("device messages", cases=CASES, handled=handled, edges=edges,
           readings_accepted=pipeline.accepted, readings_rejected=pipeline.rejected,
           frames=pipeline.frames, lines_checked=pipeline.lines, reasons=len(reasons))
    assert handled >= 100_000
    assert pipeline.accepted > 20_000 and pipeline.rejected > 20_000  # both paths exercised
    assert pipeline.lines == pipeline.accepted
    assert len(pipeline.reasons) >= 20, pipeline.reasons


# -- structured documents (hypothesis) ----------------------------------------------------------

_DEVICES = {k: f"500103-{k}-01-00001" for k in ("air", "water", "noise", "bay", "lot",
                                                 "kitchen")}
_DOMAIN = {"air": "environment", "water": "environment", "noise": "environment",
           "bay": "parking", "lot": "parking", "kitchen": "kitchen"}
_text = st.sampled_from(SPECIAL_STRINGS) | st.text(st.characters(exclude_categories=["Cs"]),
                                                  max_size=6)
_json_scalar = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | _text)
_json = st.recursive(_json_scalar, lambda c: st.lists(c, max_size=4)
                     | st.dictionaries(_text | st.sampled_from(["n", "u", "v", "vb", "vs"]), c,
                                       max_size=3), max_leaves=5)


@st.composite
def records(draw: st.DrawFn, kind: str) -> Any:
    names = [*CATALOGUE[kind], "radon", "pm2_5"]
    rec: dict[str, Any] = {}
    if draw(st.booleans()):
        rec["n"] = draw(st.sampled_from(names) | _json)
    name = rec.get("n")
    m = CATALOGUE[kind].get(name) if isinstance(name, str) else None
    if draw(st.booleans()):
        rec["u"] = m.unit if m is not None and draw(st.booleans()) else draw(_json)
    value = st.floats(allow_nan=True, allow_infinity=True)
    if m is not None:
        value = st.floats(m.min - 1, m.max + 1) | value
    key = draw(st.sampled_from(["v", "vb", "vs"]))
    rec[key] = draw(value | st.booleans() | st.sampled_from(list(AI_EVENTS)) | _json)
    return rec if draw(st.integers(0, 9)) else draw(_json)


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, str, Any]:
    kind = draw(st.sampled_from(list(_DEVICES)))
    dev = _DEVICES[kind]
    topic = f"cb/v1/dev/{DISTRICT}/{_DOMAIN[kind]}/{dev.rpartition('-')[0]}/{dev}/data"
    doc: dict[str, Any] = {
        "dev": draw(st.just(dev) | _json),
        "seq": draw(st.integers(0, 2**32 - 1) | st.integers(-(2**70), 2**70) | _json),
        "t": draw(st.floats(NOW - 3600, NOW + 60) | st.floats() | _json),
        "e": draw(st.lists(records(kind), max_size=4) | _json),
    }
    for k in draw(st.sets(st.sampled_from(list(doc)), max_size=2)):
        del doc[k]
    shape: Any = doc if draw(st.integers(0, 19)) else draw(_json)
    return kind, topic, shape


_EDGE: list[EdgeGateway] = []


@settings(max_examples=500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages())
def test_fuzz_structured_documents(msg: tuple[str, str, Any]) -> None:
    """Documents a JSON parser could never produce too (NaN, 2**70): the stages raise only
    Rejected; through JSON, handle() raises nothing and keeps its accounting."""
    kind, topic, doc = msg
    parsed = parse_topic(topic, {DISTRICT})
    n = readings_claimed(doc)
    try:
        env = check_envelope(CITY, parsed, doc)
        check_time(env.t, NOW, LIMITS, n)
    except Rejected as exc:
        assert exc.reason in REASONS and exc.readings == n
    else:
        good, bad = check_records(env)
        assert len(good) + len(bad) == n
        assert all(b.reason in REASONS and len(b.detail) < 400 for b in bad)
        for r in good:
            m = CATALOGUE[kind][r.name]
            assert math.isfinite(r.value) and m.min <= r.value <= m.max
    try:
        payload = orjson.dumps(doc)
    except orjson.JSONEncodeError:  # integers beyond 64 bits: not JSON a device can send
        return
    if not _EDGE:
        _EDGE.append(new_edge())
    _EDGE[0].handle(topic, payload)
    check_edge_accounting(_EDGE[0])


# =============================================================================================
# Frames
# =============================================================================================


def base_frames() -> list[bytes]:
    """Valid frames as an edge builds them (FrameBuilder), from real devices: various sizes,
    compressed or not, and an empty one."""
    out: list[bytes] = []
    rng = np.random.default_rng(7)
    devices = list(CITY.devices({DISTRICT}))
    for size in (1, 3, 40, 150):
        for compress in (True, False):
            b = FrameBuilder(DISTRICT, compress=compress)
            for i in range(size):
                dev = devices[int(rng.integers(len(devices)))]
                name = list(CATALOGUE[dev.kind])[int(rng.integers(len(CATALOGUE[dev.kind])))]
                b.add(dev.device_id, dev.system.system_id, i, 1.76e9 + i, name,
                      float(rng.normal(10, 5)))
            out.append(b.seal()[0])
    empty = np.array([], dtype=np.int64)
    for compress in (True, False):
        out.append(encode_frame(DISTRICT, 0, 0, [], [], [], empty, empty.astype(np.float64),
                                empty, empty, empty, compress=compress))
    return out


_FIELD_OFFSETS = {  # header field -> (offset, struct format)
    "version": (4, "<B"), "flags": (5, "<B"), "header_len": (6, "<H"), "n": (8, "<I"),
    "d": (12, "<I"), "m": (16, "<I"), "body_len": (36, "<I"), "raw_len": (40, "<I"),
    "crc": (44, "<I")}
_U32_EDGES = [0, 1, 2, 3, 7, 8, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 2,
              2**32 - 1, 256 * 1024 * 1024, 256 * 1024 * 1024 + 1]


def _with_crc(header: bytearray, body: bytes) -> bytes:
    struct.pack_into("<I", header, 44, zlib.crc32(body))
    return bytes(header) + body


_ZSTD = zstandard.ZstdCompressor(level=1)  # creating one costs more than a small frame


def _raw_body(frame: bytes) -> tuple[bytes, bool]:
    flags = frame[5]
    body = frame[HEADER_LEN:]
    if flags & 1:
        return zstandard.ZstdDecompressor().decompress(body), True
    return body, False


def _rewrap(frame: bytes, raw: bytes, compress: bool) -> bytes:
    body = _ZSTD.compress(raw) if compress else raw
    header = bytearray(frame[:HEADER_LEN])
    header[5] = 1 if compress else 0
    struct.pack_into("<II", header, 36, len(body), len(raw))
    return _with_crc(header, body)


class FrameMutator:
    def __init__(self, frames: list[bytes], seed: int) -> None:
        self.frames = frames
        self.raw = [_raw_body(f) for f in frames]
        self.strings: list[list[str]] = []
        for f in frames:
            ref = decode_frame(f)
            self.strings.append([ref.district, *[x for pair in zip(ref.devices, ref.systems,
                                                                    strict=True)
                                                 for x in pair], *ref.names])
        self.rng = np.random.default_rng(seed)
        self.ops: list[Callable[[int], bytes]] = [
            self.random_bytes, self.bit_flips, self.truncate, self.extend, self.header_field,
            self.header_field, self.body_bytes, self.body_bytes, self.body_u32,
            self.string_table, self.zstd_header]

    def case(self) -> bytes:
        i = int(self.rng.integers(len(self.frames)))
        return self.ops[int(self.rng.integers(len(self.ops)))](i)

    def random_bytes(self, i: int) -> bytes:
        data = self.rng.integers(0, 256, int(self.rng.integers(0, 160)), dtype=np.uint8)
        out = bytearray(data.tobytes())
        if self.rng.random() < 0.5:
            out[:6] = b"CBFR\x01" + bytes([int(self.rng.integers(2))])
        return bytes(out)

    def bit_flips(self, i: int) -> bytes:
        buf = bytearray(self.frames[i])
        for _ in range(int(self.rng.integers(1, 9))):
            p = int(self.rng.integers(len(buf)))
            buf[p] ^= 1 << int(self.rng.integers(8))
        if self.rng.random() < 0.5:  # past the CRC too
            return _with_crc(buf[:HEADER_LEN], bytes(buf[HEADER_LEN:]))
        return bytes(buf)

    def truncate(self, i: int) -> bytes:
        f = self.frames[i]
        cut = int(self.rng.integers(len(f)))
        if self.rng.random() < 0.5 and cut > HEADER_LEN:  # consistent lengths and CRC
            header = bytearray(f[:HEADER_LEN])
            struct.pack_into("<I", header, 36, cut - HEADER_LEN)
            return _with_crc(header, f[HEADER_LEN:cut])
        return f[:cut]

    def extend(self, i: int) -> bytes:
        extra = self.rng.integers(0, 256, int(self.rng.integers(1, 64)), dtype=np.uint8)
        return self.frames[i] + extra.tobytes()

    def header_field(self, i: int) -> bytes:
        f = self.frames[i]
        header = bytearray(f[:HEADER_LEN])
        for _ in range(int(self.rng.integers(1, 3))):
            name = list(_FIELD_OFFSETS)[int(self.rng.integers(len(_FIELD_OFFSETS)))]
            off, fmt = _FIELD_OFFSETS[name]
            size = struct.calcsize(fmt)
            old = struct.unpack_from(fmt, header, off)[0]
            r = self.rng.random()
            if r < 0.4:
                new = _U32_EDGES[int(self.rng.integers(len(_U32_EDGES)))]
            elif r < 0.8:
                new = old + int(self.rng.integers(-3, 4))
            else:
                new = int(self.rng.integers(0, 2 ** (8 * size)))
            struct.pack_into(fmt, header, off, new % 2 ** (8 * size))
        if self.rng.random() < 0.8:
            return _with_crc(header, f[HEADER_LEN:])
        return bytes(header) + f[HEADER_LEN:]

    def body_bytes(self, i: int) -> bytes:
        raw, compressed = self.raw[i]
        buf = bytearray(raw)
        if not buf:
            return self.random_bytes(i)
        for _ in range(int(self.rng.integers(1, 6))):
            p = int(self.rng.integers(len(buf)))
            if self.rng.random() < 0.5:
                buf[p] ^= 1 << int(self.rng.integers(8))
            else:
                buf[p] = int(self.rng.integers(256))
        return _rewrap(self.frames[i], bytes(buf), compressed if self.rng.random() < 0.8
                       else not compressed)

    def body_u32(self, i: int) -> bytes:
        """An aligned u32 (an index, a count, an offset) set to an edge value."""
        raw, compressed = self.raw[i]
        buf = bytearray(raw)
        if len(buf) < 4:
            return self.random_bytes(i)
        p = 4 * int(self.rng.integers(len(buf) // 4))
        struct.pack_into("<I", buf, p, _U32_EDGES[int(self.rng.integers(len(_U32_EDGES)))])
        return _rewrap(self.frames[i], bytes(buf), compressed)

    def string_table(self, i: int) -> bytes:
        """Rewrite the string table: other strings (specials, invalid UTF-8, lengths)."""
        f = self.frames[i]
        n = HEADER.unpack_from(f, 0)[4]
        raw, compressed = self.raw[i]
        o_str = (8 * n + 8 * n + 4 * n + 4 * n + 2 * n + 7) & ~7
        blobs = [s.encode() for s in self.strings[i]]
        for _ in range(int(self.rng.integers(1, 3))):
            blobs[int(self.rng.integers(len(blobs)))] = self._pick_blob()
        if self.rng.random() < 0.3:  # a wrong count
            blobs = blobs[: int(self.rng.integers(len(blobs) + 1))]
        offsets = np.zeros(len(blobs) + 1, dtype="<u4")
        np.cumsum([len(b) for b in blobs], out=offsets[1:])
        if self.rng.random() < 0.2 and len(offsets) > 1:  # non-monotonic or past the end
            offsets[int(self.rng.integers(len(offsets)))] = _U32_EDGES[
                int(self.rng.integers(len(_U32_EDGES)))]
        table = struct.pack("<I", len(blobs)) + offsets.tobytes() + b"".join(blobs)
        return _rewrap(f, raw[:o_str] + table, compressed)

    def _pick_blob(self) -> bytes:
        r = self.rng.random()
        if r < 0.6:
            return SPECIAL_STRINGS[int(self.rng.integers(len(SPECIAL_STRINGS)))].encode()
        if r < 0.8:
            return b"\xff\xfe" if self.rng.random() < 0.5 else b"\xed\xa0\x80"
        return self.rng.integers(0, 256, int(self.rng.integers(0, 12)), dtype=np.uint8).tobytes()

    def zstd_header(self, i: int) -> bytes:
        """A zstd frame whose own header (content size, window) is rewritten; outer CRC ok."""
        f = self.frames[i]
        raw, _ = self.raw[i]
        body = bytearray(_ZSTD.compress(raw))
        r = self.rng.random()
        if r < 0.5:  # claim another content size, up to 2**64 - 1
            claim = _U32_EDGES[int(self.rng.integers(len(_U32_EDGES)))] if self.rng.random(
            ) < 0.5 else int(self.rng.integers(0, 2**63)) * 2
            fhd = body[4]
            single = (fhd >> 5) & 1
            fcs = {0: single, 1: 2, 2: 4, 3: 8}[fhd >> 6]
            end = 5 + (0 if single else 1) + [0, 1, 2, 4][fhd & 3] + fcs
            body = (body[:4] + bytes([(3 << 6) | (fhd & 0x3F)]) + body[5:end - fcs]
                    + struct.pack("<Q", claim % 2**64) + body[end:])
        else:
            for _ in range(int(self.rng.integers(1, 4))):
                p = int(self.rng.integers(min(len(body), 18)))
                body[p] = int(self.rng.integers(256))
        header = bytearray(f[:HEADER_LEN])
        header[5] |= 1
        struct.pack_into("<II", header, 36, len(body), len(raw))
        return _with_crc(header, bytes(body))


def test_fuzz_frame_decoder() -> None:
    """100k+ corrupt frames: decode_frame raises only FrameError; what decodes is consistent
    and renders without injection."""
    mutator = FrameMutator(base_frames(), seed=424242)
    cases = decoded = rendered = lines = 0
    reasons: set[str] = set()
    hub = Hub()
    for _ in range(CASES):
        data = mutator.case()
        cases += 1
        try:
            frame = decode_frame(data)
        except FrameError as exc:
            assert exc.reason in FRAME_REASONS, exc.reason
            reasons.add(exc.reason)
            continue
        except Exception as exc:
            pytest.fail(f"decode_frame raised {type(exc).__name__}: {exc!r} on "
                        f"{len(data)} bytes: {data[:120]!r}")
        decoded += 1
        n = len(frame)
        assert all(len(getattr(frame, c)) == n for c in ("value", "seq", "device", "name"))
        assert len(frame.devices) == len(frame.systems)
        assert n == 0 or (int(frame.device.max()) < len(frame.devices)
                          and int(frame.name.max()) < len(frame.names))
        if decoded % 20 == 1:  # the rendering check costs 100x a decode: one in 20
            lines += check_hub_rendering(hub, frame)
            rendered += 1
    report("frame decoder", cases=cases, decoded=decoded, rendered=rendered,
           lines_checked=lines, reasons=len(reasons))
    assert cases >= 100_000
    assert decoded > 1000
    assert reasons == FRAME_REASONS, FRAME_REASONS - reasons  # every check was reached


# -- adversarial frames that decode: the hub must not be injected ---------------------------

# Line-protocol specials the hub must escape, and characters it must refuse (control
# characters, a backslash before a delimiter or at the end).
HOSTILE_CHARS = [*', ="#_', "é", "中", "\u2028", "\x85", "🙂", "a", "b", "0", "-", "\\a",
                 "\\\\b", "\\"]
REFUSED_CHARS = [*"\n\r\t\x00\x7f\x1b", "\\,", "\\ ", "\\="]


def hostile_id(rng: np.random.Generator) -> str:
    if rng.random() < 0.1:
        return SPECIAL_STRINGS[int(rng.integers(len(SPECIAL_STRINGS)))]
    parts = [HOSTILE_CHARS[int(rng.integers(len(HOSTILE_CHARS)))]
             for _ in range(int(rng.integers(1, 12)))]
    if rng.random() < 0.15:
        parts.insert(int(rng.integers(len(parts) + 1)),
                     REFUSED_CHARS[int(rng.integers(len(REFUSED_CHARS)))])
    return "500103-air-01-" + "".join(parts) if rng.random() < 0.5 else "".join(parts)


def test_fuzz_no_line_protocol_injection() -> None:
    """Frames an edge would never send but that decode: hostile device ids, real and fake
    systems and districts, unknown names, NaN/±inf/huge values, extreme timestamps."""
    rng = np.random.default_rng(99)
    systems = [s.system_id for s in CITY.systems_in(DISTRICT)] + ["500101-air-01", "nope",
                                                                   "500103-air-01,x=1"]
    hub = Hub()
    # Keep each id's district and system fixed, as edges do, so that most readings are stored.
    owner: dict[str, tuple[str, str]] = {}
    frames = readings = lines = 0
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, 1.7976931348623157e308,
                         -1.7976931348623157e308, 1e9 - 1e-7, 9.2e18, 1e300, -1e-300])
    t_edges = np.array([0, -1, 2**63 - 1, -(2**63), 10**18, -(10**18)], dtype=np.int64)
    for i in range(1500):
        if i % 500 == 0:
            hub = Hub()
            owner = {}
        district = DISTRICT if rng.random() < 0.9 else "500101"
        devices: list[str] = []
        sys_ids: list[str] = []
        while not devices or (rng.random() < 0.7 and len(devices) < 6):
            dev = hostile_id(rng)
            where = owner.setdefault(dev, (district, systems[int(rng.integers(len(systems)))]))
            if where[0] == district:
                devices.append(dev)
                sys_ids.append(where[1])
        d = len(devices)
        pool = sorted(CATALOGUE[CITY.system(sys_ids[0]).kind]) if rng.random() < 0.8 and (
            sys_ids[0] in CITY_SYSTEMS) else [*ALL_NAMES, "radon", "pm2_5 x", "m\n"]
        names = list(dict.fromkeys(rng.choice(pool, int(rng.integers(1, 5))).tolist()))
        n = int(rng.integers(1, 60))
        value = rng.normal(0, 10.0 ** rng.integers(0, 20), n)
        pick = rng.random(n) < 0.2
        value[pick] = specials[rng.integers(len(specials), size=int(pick.sum()))]
        ts = rng.integers(-(2**62), 2**62, n)
        pick = rng.random(n) < 0.1
        ts[pick] = t_edges[rng.integers(len(t_edges), size=int(pick.sum()))]
        data = encode_frame(district, i, 0, devices, sys_ids, [str(x) for x in names], ts,
                            value, rng.integers(0, 2**32, n, dtype=np.uint64),
                            rng.integers(0, d, n), rng.integers(0, len(names), n),
                            compress=bool(rng.random() < 0.5))
        lines += check_hub_rendering(hub, decode_frame(data))
        frames += 1
        readings += n
    report("no injection", frames=frames, readings=readings, lines_checked=lines)
    assert lines > 10_000


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=16),
                min_size=1, max_size=4, unique=True), st.data())
def test_no_injection_hypothesis(devices: list[str], data: st.DataObject) -> None:
    systems = [data.draw(st.sampled_from([s.system_id for s in CITY.systems_in(DISTRICT)]))
               for _ in devices]
    names = data.draw(st.lists(st.sampled_from([*sorted(CATALOGUE["air"]), "laeq", "x"]),
                               min_size=1, max_size=4, unique=True))
    n = data.draw(st.integers(1, 20))
    value = np.array(data.draw(st.lists(st.floats(), min_size=n, max_size=n)))
    ts = np.array(data.draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n,
                                     max_size=n)), dtype=np.int64)
    dev = np.array(data.draw(st.lists(st.integers(0, len(devices) - 1), min_size=n,
                                      max_size=n)))
    nam = np.array(data.draw(st.lists(st.integers(0, len(names) - 1), min_size=n,
                                      max_size=n)))
    frame = decode_frame(encode_frame(DISTRICT, 0, 0, devices, systems, names, ts, value,
                                      np.zeros(n), dev, nam))
    check_hub_rendering(Hub(), frame)


def test_parse_line_is_strict() -> None:
    """The checker itself: an injected line, an extra tag or a second point is caught."""
    good = "raw_air,device=a\\,b,district=500103,system=s pm2_5=1.0 5"
    assert parse_line(good) == ("raw_air", {"device": "a,b", "district": "500103",
                                            "system": "s"}, {"pm2_5": "1.0"}, 5)
    for bad in ["raw_air,device=a,b,district=500103,system=s pm2_5=1.0 5",
                "raw_air,device=a b,district=500103,system=s pm2_5=1.0 5",
                "raw_air,device=a\nraw_air,district=500103,system=s pm2_5=1.0 5",
                "raw_air,device=a=b,district=500103,system=s pm2_5=1.0 5",
                "raw_air,device=a,device=b pm2_5=1.0 5"]:
        with pytest.raises(AssertionError):
            parse_line(bad)
