"""The edge's batch path gives the same outcome as the per-message one: ``quick_message``
against ``quick_envelope`` + ``split_records``, ``EdgeGateway._take`` (a drained chunk, with
its short path for healthy messages) against ``EdgeGateway.handle`` (the full checks, one
message at a time), ``FrameBuilder`` against a reading-by-reading reference, and
``Intake.put_many`` against ``put``."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citybrain import topics
from citybrain.durable_log import unpack_message
from citybrain.frame import decode_frame, encode_frame
from citybrain.payload import encode_data
from edge.batcher import FrameBuilder
from edge.gateway import EdgeConfig, EdgeGateway
from edge.intake import Intake
from edge.validate import (
    Rejected,
    TimeLimits,
    data_route,
    numeric_by_kind,
    parse_json,
    quick_envelope,
    quick_message,
    split_records,
)
from seeds.city import City, catalogue_by_kind
from tests.edge.bad_inputs import DISTRICT, build_corpus, data_topic, firmware_records
from tests.edge.test_fast_path import RECORDS

CITY = City(1.0)
NOW = time.time()
LIMITS = TimeLimits()
KITCHEN = "500103-kitchen-01-00000"
AIR = "500103-air-01-00000"


# -- quick_message ------------------------------------------------------------------------------
def _slow(route: Any, doc: Any) -> Any:
    """What ``quick_envelope`` + ``split_records`` make of ``doc``: None (header not quick),
    or (seq, t, names, values, reasons of the rejected records)."""
    head = quick_envelope(route, doc, NOW, LIMITS)
    if head is None:
        return None
    seq, t, records = head
    names, values, bad = split_records(records, route.catalogue, route.numeric)
    return seq, t, names, values, [b.reason for b in bad]


def _agree(route: Any, doc: Any) -> Any:
    """Check ``quick_message`` on ``doc`` against the slow path; return its answer."""
    quick = quick_message(route, doc, NOW, LIMITS)
    if quick is not None:  # "sure": exactly what the slow path gives, with no rejection
        assert _slow(route, doc) == (*quick, [])
        assert all(type(v) is float for v in quick[3])
    return quick


@pytest.mark.parametrize("case", build_corpus(NOW, CITY), ids=lambda c: c.kind)
def test_quick_message_never_passes_what_the_checks_reject(case: Any) -> None:
    route = data_route(CITY, case.topic, {DISTRICT})
    if route is None:
        return
    try:
        doc = parse_json(case.payload)  # size and JSON: checked before quick_message
    except Rejected:
        return
    quick = _agree(route, doc)
    if case.reason not in (None, "stale_seq"):  # de-duplication's: the caller's to tell
        assert quick is None, case.kind
    for prelude_topic, prelude in case.prelude:  # valid messages: taken at once
        r = data_route(CITY, prelude_topic, {DISTRICT})
        assert r is not None
        assert _agree(r, orjson.loads(prelude)) is not None


AIR_ROUTE = data_route(CITY, data_topic(AIR), {DISTRICT})
AIR_NAMES = sorted(numeric_by_kind()["air"])


def _numeric_record() -> st.SearchStrategy[Any]:
    """Records around the air kind's numeric measurements: mostly valid, some not."""
    value = st.one_of(st.floats(-50, 3500), st.integers(-5, 4000), st.booleans(),
                      st.just(float("nan")), st.just(float("inf")), st.text(max_size=2),
                      st.integers(10**300, 10**400))
    name = st.one_of(st.sampled_from(AIR_NAMES), st.sampled_from(["nope", "occupied", ""]),
                     st.integers(0, 3))
    unit = st.one_of(st.none(), st.sampled_from(["ug/m3", "mg/m3", "Cel", "%RH", ""]),
                     st.integers(0, 3))

    def build(n: Any, u: Any, v: Any, keep_u: bool) -> dict[str, Any]:
        rec = {"n": n, "v": v}
        if keep_u and u is not None:
            rec["u"] = u
        return rec

    return st.one_of(st.builds(build, name, unit, value, st.booleans()),
                     st.sampled_from(RECORDS))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=st.one_of(st.integers(-3, 2**32 + 3), st.floats(0, 10), st.booleans(), st.none()),
       t=st.one_of(st.floats(NOW - 40 * 86400, NOW + 600), st.integers(int(NOW) - 10,
                                                                       int(NOW) + 10),
                   st.just(float("nan")), st.just(10**400), st.text(max_size=2), st.none()),
       dev=st.sampled_from([AIR, AIR.upper(), "", 5]),
       records=st.one_of(st.lists(_numeric_record(), max_size=10), st.none(),
                         st.just("e")))
def test_quick_message_agrees_with_the_checks(seq: Any, t: Any, dev: Any,
                                              records: Any) -> None:
    assert AIR_ROUTE is not None
    doc: dict[str, Any] = {"dev": dev, "seq": seq, "t": t}
    if records is not None:
        doc["e"] = records
    _agree(AIR_ROUTE, doc)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(AIR_NAMES), st.floats(0, 1)), min_size=1,
                max_size=8, unique_by=lambda r: r[0]),
       st.integers(0, 2**32 - 1), st.floats(NOW - 86400, NOW + 60), st.booleans())
def test_quick_message_takes_every_healthy_message(readings: list[tuple[str, float]], seq: int,
                                                   t: float, units: bool) -> None:
    """Every measurement at any point of its catalogue range (``where`` 0: its minimum)."""
    assert AIR_ROUTE is not None
    spec = numeric_by_kind()["air"]
    values = [min(spec[n][2], spec[n][1] + where * (spec[n][2] - spec[n][1]))
              for n, where in readings]
    records = [{"n": n, "u": spec[n][0], "v": v} if units else {"n": n, "v": v}
               for (n, _), v in zip(readings, values, strict=True)]
    quick = _agree(AIR_ROUTE, {"dev": AIR, "seq": seq, "t": t, "e": records})
    assert quick == (seq, t, [n for n, _ in readings], values)


# -- EdgeGateway._take against handle -----------------------------------------------------------
def _edge() -> EdgeGateway:
    """An edge serving DISTRICT, never started (acknowledgements are queued, never sent)."""
    return EdgeGateway(EdgeConfig(districts={DISTRICT}, client_id=f"take-{uuid.uuid4().hex[:8]}",
                                  ack_window=10**6), city=CITY)


def _outcome(gw: EdgeGateway) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """Counters, spooled records other than frames, and the readings of every frame (each
    as (device, system, seq, ts_ns, name, value)) after a commit."""
    gw.commit()
    snap = gw.snapshot()
    keep = {k: v for k, v in snap.items()
            if k not in ("cpu_s", "messages_acked", "frame_bytes", "frames_published",
                         "messages_unacked", "spool_bytes")}
    letters: list[Any] = []
    readings: list[Any] = []
    for rec in gw.spool.log.reader(0):
        topic, payload = unpack_message(rec.payload)
        if topic.startswith(topics.frames_topic(DISTRICT)):
            f = decode_frame(payload)
            readings += [(f.devices[d], f.systems[d], s, ts, f.names[k], v) for d, s, ts, k, v in
                         zip(f.device.tolist(), f.seq.tolist(), f.ts_ns.tolist(),
                             f.name.tolist(), f.value.tolist(), strict=True)]
        else:
            doc = orjson.loads(payload)
            doc.pop("edge_t", None)
            doc.pop("edge", None)
            if doc.get("reason") in ("ts_future", "ts_past"):  # "N s ahead of the edge": now
                doc.pop("detail")
            letters.append((topic, doc))
    return keep, letters, readings


def _stream() -> list[tuple[str, bytes, bool]]:
    """The corpus (each case after its prelude), healthy messages of an air station and a
    kitchen (raising and clearing a local gas alarm), replays with and without the
    broker's dup flag, interleaved."""
    out: list[tuple[str, bytes, bool]] = []
    air, kitchen = data_topic(AIR), data_topic(KITCHEN, domain="kitchen")
    air_records = firmware_records(CITY, AIR, NOW)
    kitchen_records = firmware_records(CITY, KITCHEN, NOW)
    for i, case in enumerate(build_corpus(NOW, CITY)):
        out += [(t, p, False) for t, p in case.prelude]
        out.append((case.topic, case.payload, False))
        healthy = encode_data(AIR, i, NOW - 60 * (200 - i), air_records)
        out.append((air, healthy, False))
        gas = [dict(r, v=90.0 if i % 7 == 3 else 1.0) if r["n"] == "gas" else r
               for r in kitchen_records]
        out.append((kitchen, encode_data(KITCHEN, i, NOW - 60 * (200 - i), gas), False))
        if i % 5 == 0:
            out.append((air, healthy, i % 10 == 0))  # a replay: a duplicate
    return out


def test_stream_has_kitchen_topics_served() -> None:
    """The kitchen device used below publishes on a data topic this edge keeps a route for."""
    assert data_route(CITY, data_topic(KITCHEN, domain="kitchen"), {DISTRICT}) is not None


@pytest.mark.parametrize("chunk", [1, 7, 512])
def test_take_gives_what_handle_gives(chunk: int) -> None:
    stream = _stream()
    one, batched = _edge(), _edge()
    try:
        for topic, payload, dup in stream:
            one.handle(topic, payload, dup)
        items = [(i % 65535 + 1, 1, t, p, d) for i, (t, p, d) in enumerate(stream)]
        for k in range(0, len(items), chunk):
            batched._take(items[k:k + chunk], batched.cfg.ack_window)
            batched._flush_counts()
        assert len(batched._hot) >= 2  # the short path was taken
        assert len(batched._unacked) == len(items)
        a, b = _outcome(one), _outcome(batched)
        assert a[0] == b[0]
        assert a[1] == b[1]
        assert a[2] == b[2]
        snap = b[0]
        assert snap["local_alarms"]  # raised and cleared on the short path too
        assert snap["duplicate_messages"] and snap["redelivered_messages"]
        assert snap["readings_in"] == (snap["readings_accepted"] + snap["readings_rejected"]
                                       + snap["duplicates"])
    finally:
        one.spool.log.close()
        batched.spool.log.close()


def test_take_commits_at_the_ack_window_and_at_a_full_frame() -> None:
    gw = EdgeGateway(EdgeConfig(districts={DISTRICT}, client_id=f"take-{uuid.uuid4().hex[:8]}",
                                ack_window=10, frame_max_readings=50), city=CITY)
    try:
        records = firmware_records(CITY, AIR, NOW)  # 8 readings a message
        items = [(i + 1, 1, data_topic(AIR), encode_data(AIR, i, NOW - 60 * (100 - i), records),
                  False) for i in range(25)]
        gw._take(items, 10)
        # a frame reaches 50 readings at the 7th message: commits after messages 7, 14, 21
        assert gw.counters.get("messages_acked") == 21
        assert len(gw._unacked) == 4
        gw._flush_counts()
        assert gw.counters.get("readings_accepted") == 25 * 8
    finally:
        gw.spool.log.close()


# -- FrameBuilder -------------------------------------------------------------------------------
class ReferenceBuilder:
    """The frame a district's readings make, built reading by reading (the builder before
    it kept per-message columns)."""

    def __init__(self, compress: bool = True) -> None:
        self.compress = compress
        self.devices: dict[str, int] = {}
        self.systems: list[str] = []
        self.names: dict[str, int] = {}
        self.rows: list[tuple[int, float, int, int, int]] = []

    def add(self, device: str, system: str, seq: int, t_s: float, name: str,
            value: float) -> None:
        d = self.devices.setdefault(device, len(self.devices))
        if d == len(self.systems):
            self.systems.append(system)
        k = self.names.setdefault(name, len(self.names))
        self.rows.append((round(t_s * 1e6) * 1000, value, seq, d, k))

    def frame(self, frame_seq: int, created_ns: int) -> bytes:
        cols = list(zip(*self.rows, strict=True)) or [(), (), (), (), ()]
        return encode_frame(DISTRICT, frame_seq, created_ns, list(self.devices), self.systems,
                            list(self.names), np.array(cols[0], dtype=np.int64),
                            np.array(cols[1], dtype=np.float64), np.array(cols[2], np.uint32),
                            np.array(cols[3], np.uint32), np.array(cols[4], np.uint16),
                            compress=self.compress)


MESSAGE = st.tuples(
    st.sampled_from(["d1", "d2", "d3", "d4"]), st.sampled_from(["s1", "s2"]),
    st.integers(0, 2**32 - 1), st.floats(1.6e9, 1.9e9),
    st.lists(st.tuples(st.sampled_from(["pm2_5", "pm10", "no2", "gas", "o3"]),
                       st.floats(allow_nan=False)), max_size=5))


@settings(max_examples=200, deadline=None)
@given(st.lists(MESSAGE, max_size=40), st.booleans())
def test_frame_builder_makes_the_reference_frame(messages: list[Any], compress: bool) -> None:
    builder = FrameBuilder(DISTRICT, compress=compress)
    ref = ReferenceBuilder(compress)
    for device, system, seq, t, readings in messages:
        builder.add_many(device, system, seq, t, [n for n, _ in readings],
                         [v for _, v in readings])
        for name, value in readings:
            ref.add(device, system, seq, t, name, value)
    assert len(builder) == builder.pending == len(ref.rows)
    frame, _seq, n = builder.seal(7)
    assert n == len(ref.rows) and len(builder) == 0
    # Byte for byte (zstd is deterministic), with the seal time the builder stamped.
    assert frame == ref.frame(7, decode_frame(frame).created_ns)


def test_frame_builder_bytes_equal_the_reference_uncompressed(monkeypatch: Any) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: 1_763_712_000_123_456_789)
    builder, ref = FrameBuilder(DISTRICT, compress=False), ReferenceBuilder(False)
    msgs = [("d1", "s1", 1, 1_763_712_000.1234567, ["pm2_5", "pm10"], [1.0, 2.0]),
            ("d2", "s2", 7, 1_763_712_001.5, ["no2"], [3.5]),
            ("d1", "s9", 2, 1_763_712_060.0, ["pm10", "o3", "pm2_5"], [4.0, 5.0, 6.0]),
            ("d3", "s3", 9, 1_763_712_061.0, [], []),
            ("d2", "s2", 8, 1_763_712_062.0, ["pm2_5", "pm10"], [7.0, 8.0])]
    for device, system, seq, t, names, values in msgs:
        builder.add_many(device, system, seq, t, names, values)
        for name, value in zip(names, values, strict=True):
            ref.add(device, system, seq, t, name, value)
    assert builder.seal(3)[0] == ref.frame(3, 1_763_712_000_123_456_789)


def test_a_failed_add_leaves_the_builder_as_it_was() -> None:
    builder = FrameBuilder(DISTRICT, compress=False)
    builder.add_many("d1", "s1", 1, 1.7e9, ["pm2_5"], [1.0])
    before = builder.seal(1)[0]
    builder.add_many("d1", "s1", 1, 1.7e9, ["pm2_5"], [1.0])
    with pytest.raises(OverflowError):
        builder.add_many("d2", "s2", 2**32, 1.7e9, ["pm10"], [2.0])
    with pytest.raises(OverflowError):
        builder.add_many("d2", "s2", 2, 1e20, ["pm10"], [2.0])
    with pytest.raises(TypeError):
        builder.add_many("d2", "s2", 2, 1.7e9, ["pm10", "no2"], [2.0, "x"])  # type: ignore
    with pytest.raises(ValueError):
        builder.add_many("d2", "s2", 2, 1.7e9, ["pm10"], [])
    assert len(builder) == 1
    after = builder.seal(1)[0]
    assert decode_frame(after).devices == decode_frame(before).devices == ["d1"]
    assert decode_frame(after).names == ["pm2_5"]
    assert after[:28] == before[:28] and after[36:] == before[36:]  # all but created_ns


# -- Intake.put_many ------------------------------------------------------------------------------
def test_put_many_hands_over_in_order() -> None:
    intake: Intake[int] = Intake(100, linger_s=0.0)
    assert intake.put_many(list(range(5))) == 5
    intake.put(5)
    assert intake.put_many([6, 7]) == 2
    assert intake.drain(3, timeout_s=0.01) == [0, 1, 2]
    assert intake.drain(10, timeout_s=0.01) == [3, 4, 5, 6, 7]
    assert intake.put_many([]) == 0


def test_put_many_waits_for_room_and_wakes_the_consumer() -> None:
    intake: Intake[int] = Intake(4, linger_s=0.0)
    got: list[int] = []
    done: list[int] = []

    def consume() -> None:
        while len(got) < 20:
            got.extend(intake.drain(3, timeout_s=600.0))

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    producer = threading.Thread(target=lambda: done.append(intake.put_many(list(range(20)))),
                                daemon=True)
    producer.start()
    producer.join(20)
    consumer.join(20)
    assert done == [20] and got == list(range(20))


def test_put_many_on_a_closed_full_intake_takes_what_fits() -> None:
    intake: Intake[int] = Intake(3)
    intake.put(0)
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(intake.put_many([1, 2, 3, 4])))
    t.start()
    time.sleep(0.1)
    assert not done  # two fit, then it waits for room
    intake.close()
    t.join(5)
    assert done == [2] and intake.drain(10, timeout_s=0.01) == [0, 1, 2]


# -- the kitchen domain as the stream above assumes --------------------------------------------
def test_kitchen_device_reports_gas() -> None:
    assert "gas" in catalogue_by_kind()["kitchen"]
    assert any(r["n"] == "gas" for r in firmware_records(CITY, KITCHEN, NOW))
