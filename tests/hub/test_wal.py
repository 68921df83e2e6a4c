"""The hub's write-ahead log on a real Mosquitto and a real influxd: lose nothing, count
nothing twice.

Frames are built with ``edge.batcher.FrameBuilder`` and published at QoS 1 like an edge
does; hubs run in-process. A "crash-like" stop is ``close_windows_at_exit=False``: open
windows are not emitted, the WAL keeps their readings, the next hub on the same directory
and client id completes them.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

import hub.wal
from citybrain import topics
from citybrain.durable_log import HEADER_LEN, DurableLog, pack_message, unpack_message
from citybrain.frame import decode_frame
from citybrain.localstack import InfluxV1Server, MosquittoServer
from citybrain.mqtt import BrokerConfig, connect_and_wait, make_client
from citybrain.stats import Counters
from citybrain.up import influx_count
from edge.batcher import FrameBuilder
from hub.service import Hub, HubConfig
from hub.sinks import InfluxConfig
from hub.wal import CHECKPOINT, HubWal
from tests.waiting import wait_for

DISTRICT = "500103"
SYSTEM = "500103-air-01"
DEVICES = tuple(f"{SYSTEM}-{i:05d}" for i in range(4))
NAMES = ("pm2_5", "o3", "temp")
PER_FRAME = len(DEVICES) * len(NAMES)
WINDOWS_NS = {"10s": 10 * 10**9, "1m": 60 * 10**9, "1h": 3600 * 10**9}


def hour_start(hours_ago: int) -> float:
    now = int(time.time())
    return float(now - now % 3600 - hours_ago * 3600)


def make_frame(epoch: int, counter: int, t: float, value: float = 0.0) -> bytes:
    """One frame of every device and name at device time ``t``; frame_seq epoch|counter."""
    b = FrameBuilder(DISTRICT, max_readings=10**6)
    for d, dev in enumerate(DEVICES):
        for k, name in enumerate(NAMES):
            b.add(dev, SYSTEM, counter, t + d * 0.25, name, 10.0 + value + k)
    frame, _, _ = b.seal((epoch << 32) | counter)
    return frame


def frame_series(epoch: int, n: int, base_t: float, step_s: float) -> list[bytes]:
    return [make_frame(epoch, i, base_t + i * step_s, float(i)) for i in range(n)]


class Publisher:
    def __init__(self, broker: BrokerConfig) -> None:
        self.client = make_client(f"pub-{uuid.uuid4().hex[:12]}", broker)
        connect_and_wait(self.client, broker)

    def send(self, frames: list[bytes]) -> None:
        infos = [self.client.publish(topics.frames_topic(DISTRICT), f, qos=1) for f in frames]
        for info in infos:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def hubs() -> Iterator[list[Hub]]:
    """Hubs a test started; whatever still runs at teardown is stopped."""
    started: list[Hub] = []
    yield started
    for h in started:
        if h._thread.is_alive():
            # teardown of a failed test: the failure is reported already
            with contextlib.suppress(Exception):
                h.stop(timeout_s=5)


def make_hub(broker: MosquittoServer, influxd: InfluxV1Server, db: str, client_id: str,
             wal_dir: Path, hubs: list[Hub], *, close_windows_at_exit: bool = True) -> Hub:
    h = Hub(HubConfig(broker=BrokerConfig(broker.host, broker.port), client_id=client_id,
                      influx=InfluxConfig(url=influxd.url, database=db), wal_dir=wal_dir,
                      close_windows_at_exit=close_windows_at_exit, write_flush_s=0.1))
    hubs.append(h)
    return h


def wal_records(wal_dir: Path) -> list[tuple[int, str, bytes]]:
    """(offset, topic, payload) of every record of a WAL no hub has open."""
    log = DurableLog(wal_dir)
    try:
        return [(r.offset, *unpack_message(r.payload)) for r in log.reader(log.first_offset)]
    finally:
        log.close()


def agg_rows(influxd: InfluxV1Server, db: str, label: str) -> list[tuple[str, str, int, int]]:
    """(device, measurement, window start, count) of every stored window of ``label``."""
    doc = influxd.query(f'SELECT "count" FROM agg_{label} GROUP BY "device", "m"', db=db,
                        epoch="s")
    rows = []
    for series in doc["results"][0].get("series", []):
        tags = series["tags"]
        for t, count in series["values"]:
            rows.append((tags["device"], tags["m"], int(t), int(count)))
    return sorted(rows)


def agg_count_sum(influxd: InfluxV1Server, db: str, label: str) -> int:
    doc = influxd.query(f'SELECT sum("count") FROM agg_{label}', db=db)
    series = doc["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


# -- a. the WAL holds every frame before it is acknowledged; duplicates are stored once -----
@pytest.mark.integration
def test_frames_are_logged_before_ack_and_a_resent_frame_is_stored_once(
        fresh_mosquitto: MosquittoServer, influxd: InfluxV1Server, unique_db: str,
        tmp_path: Path, hubs: list[Hub]) -> None:
    wal_dir = tmp_path / "wal"
    h = make_hub(fresh_mosquitto, influxd, unique_db, f"hub-{uuid.uuid4().hex[:8]}", wal_dir,
                 hubs)
    acks: list[tuple[int, int]] = []  # (mid, committed offset when acknowledged)
    lock = threading.Lock()
    ack = h.wal._ack

    def recording_ack(mid: int, qos: int) -> object:
        with lock:
            acks.append((mid, h.wal.log.committed_offset))
        return ack(mid, qos)

    h.wal._ack = recording_ack
    h.start()
    base = hour_start(2)
    frames = frame_series(1234, 10, base, 5.0)
    # The same frame again (an edge re-sending after a lost PUBACK), and another edge
    # epoch's frame with the same counter but other readings: not a duplicate.
    other_epoch = make_frame(4321, 3, base + 1.0, 99.0)
    pub = Publisher(BrokerConfig(fresh_mosquitto.host, fresh_mosquitto.port))
    try:
        pub.send([*frames, frames[3], other_epoch])
    finally:
        pub.close()
    wait_for(lambda: h.counters.get("frames_in") == 12, what=h.snapshot)
    snap = h.stop()

    assert snap["frames_duplicate"] == 1
    assert snap["frames_ok"] == 11
    assert snap["hub_received"] == snap["stored_raw"] == 11 * PER_FRAME
    assert influx_count(influxd.url, unique_db) == 11 * PER_FRAME
    # Every message was acknowledged, each only once the WAL held it durably.
    assert len(acks) == 12
    assert all(committed >= i + 1 for i, (_, committed) in enumerate(acks)), acks
    records = wal_records(wal_dir)
    assert [r[0] for r in records] == list(range(12))
    assert {r[1] for r in records} == {topics.frames_topic(DISTRICT)}
    assert [r[2] for r in records] == [*frames, frames[3], other_epoch]
    assert [decode_frame(r[2]).frame_seq & 0xFFFFFFFF for r in records] == [
        *range(10), 3, 3]


# -- b. restart equivalence -------------------------------------------------------------------
@pytest.fixture
def small_wal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small WAL segments and retention blocks, so that a few dozen frames get trimmed."""
    monkeypatch.setattr(hub.wal, "BLOCK_RECORDS", 4)
    monkeypatch.setattr("hub.service.HubWal", functools.partial(HubWal, segment_bytes=2048))


@pytest.mark.integration
@pytest.mark.usefixtures("small_wal")
def test_a_restart_stores_exactly_what_an_uninterrupted_hub_stores(
        fresh_mosquitto: MosquittoServer, influxd: InfluxV1Server, unique_db: str,
        tmp_path: Path, hubs: list[Hub]) -> None:
    # Two hours of device time, one frame every 2 min: the first half crosses an hour
    # boundary, so the first hub finalises (and may forget) its early windows.
    base = hour_start(3) + 1800.0
    frames = frame_series(77, 60, base, 120.0)
    half = 30
    broker = BrokerConfig(fresh_mosquitto.host, fresh_mosquitto.port)
    pub = Publisher(broker)
    try:
        wal_dir = tmp_path / "wal"
        hub_id = f"hub-{uuid.uuid4().hex[:8]}"
        first = make_hub(fresh_mosquitto, influxd, unique_db, hub_id, wal_dir, hubs,
                         close_windows_at_exit=False)
        first.start()
        pub.send(frames[:half])
        wait_for(lambda: first.counters.get("frames_in") == half, what=first.snapshot)
        a = first.stop()
        assert a["unprocessed_wal_records"] == 0
        assert a.get("wal_segments_trimmed", 0) > 0  # final windows' records forgotten
        ck = orjson.loads((wal_dir / CHECKPOINT).read_bytes())
        assert ck["durable_offset"] == half
        kept_from = wal_records(wal_dir)[0][0]
        assert 0 < kept_from < half

        pub.send(frames[half:])  # the broker keeps them for the hub's session
        second = make_hub(fresh_mosquitto, influxd, unique_db, hub_id, wal_dir, hubs)
        second.start()
        wait_for(lambda: second.counters.get("frames_ok") == half - kept_from + half,
                 what=second.snapshot)
        b = second.stop()
        assert b["frames_ok"] == half - kept_from + half  # the replay, then the rest
        assert b.get("windows_already_stored", {}) != {}

        single_db = f"{unique_db}_single"
        single = make_hub(fresh_mosquitto, influxd, single_db, f"hub-{uuid.uuid4().hex[:8]}",
                          tmp_path / "wal-single", hubs)
        single.start()
        pub.send(frames)
        wait_for(lambda: single.counters.get("frames_in") == len(frames),
                 what=single.snapshot)
        c = single.stop()
    finally:
        pub.close()

    total = len(frames) * PER_FRAME
    assert c["aggregated_readings"] == total
    assert influx_count(influxd.url, unique_db) == influx_count(influxd.url, single_db) == total
    for label in WINDOWS_NS:
        assert agg_count_sum(influxd, unique_db, label) == total, label
        assert agg_rows(influxd, unique_db, label) == agg_rows(influxd, single_db, label), label


# -- c. retention ---------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.usefixtures("small_wal")
def test_wal_is_trimmed_once_windows_are_final_and_stored(
        fresh_mosquitto: MosquittoServer, influxd: InfluxV1Server, unique_db: str,
        tmp_path: Path, hubs: list[Hub]) -> None:
    wal_dir = tmp_path / "wal"
    h = make_hub(fresh_mosquitto, influxd, unique_db, f"hub-{uuid.uuid4().hex[:8]}", wal_dir,
                 hubs)
    h.start()
    base = hour_start(2)
    frames = frame_series(5, 40, base, 30.0)
    pub = Publisher(BrokerConfig(fresh_mosquitto.host, fresh_mosquitto.port))
    try:
        pub.send(frames)
    finally:
        pub.close()
    wait_for(lambda: h.counters.get("frames_in") == len(frames), what=h.snapshot)
    snap = h.stop()

    assert snap["wal_segments_trimmed"] > 0
    ck = orjson.loads((wal_dir / CHECKPOINT).read_bytes())
    assert ck["durable_offset"] == len(frames)
    last_ts_ns = round((base + 39 * 30.0 + 0.75) * 1e6) * 1000
    for label, w in WINDOWS_NS.items():  # every window, closed at exit, is final and stored
        assert ck["final_through"][label] == (last_ts_ns // w) * w + w, label
    # Only the last retention block (records 36..39) must be kept: every segment wholly
    # below it is gone.
    segments = sorted(int(p.stem) for p in wal_dir.glob("*.seg"))
    assert segments[0] <= 36
    assert len(segments) == 1 or segments[1] > 36
    assert [r[0] for r in wal_records(wal_dir)] == list(range(segments[0], len(frames)))


def test_settle_trims_only_what_is_stored_and_final(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub.wal, "BLOCK_RECORDS", 4)
    acked: list[int] = []
    w = 10 * 10**9
    wal = HubWal(tmp_path, Counters(), lambda mid, qos: acked.append(mid), segment_bytes=256,
                 fsync=False, window_ns={"10s": w})
    wal.start()
    payload = b"x" * 100
    for mid in range(1, 13):
        wal.offer(mid, 1, topics.frames_topic(DISTRICT), payload)
    wait_for(lambda: wal.log.committed_offset == 12 and len(acked) == 12)
    wal.close_intake(5)
    assert acked == list(range(1, 13))
    assert len(list(tmp_path.glob("*.seg"))) > 3

    # Records 0..11 hold readings of the windows [0, 10 s), [10, 20 s) and [20, 30 s).
    for off in range(12):
        wal.note_readings(off, (off // 4) * w + 1)
    wal.mark_processed(12, ticket=1)
    wal.mark_final("10s", 2 * w, ticket=2)  # the first two windows are final ...
    wal.settle(durable_ticket=1, force_save=True)  # ... but not yet stored
    assert wal.checkpoint.durable_offset == 12
    assert wal.checkpoint.final_through == {}
    assert wal.log.first_offset == 0

    wal.settle(durable_ticket=2, force_save=True)
    ck = orjson.loads((tmp_path / CHECKPOINT).read_bytes())
    assert ck == {"durable_offset": 12, "final_through": {"10s": 2 * w}}
    # The blocks of the two final windows are forgotten, the third window's is kept.
    assert 0 < wal.log.first_offset <= 8
    assert [r.offset for r in wal.reader()][-4:] == [8, 9, 10, 11]
    wal.mark_final("10s", 3 * w, ticket=3)
    wal.close()
    # closed: a late settle (a processing thread stop gave up on) neither saves nor trims
    first = wal.log.first_offset
    wal.settle(durable_ticket=3, force_save=True)
    assert orjson.loads((tmp_path / CHECKPOINT).read_bytes()) == ck
    assert wal.log.first_offset == first


# -- d. a torn tail -----------------------------------------------------------------------
@pytest.mark.integration
def test_torn_wal_tail_is_cut_and_counted_and_the_hub_carries_on(
        fresh_mosquitto: MosquittoServer, influxd: InfluxV1Server, unique_db: str,
        tmp_path: Path, hubs: list[Hub]) -> None:
    wal_dir = tmp_path / "wal"
    hub_id = f"hub-{uuid.uuid4().hex[:8]}"
    base = hour_start(2)
    frames = frame_series(9, 13, base, 5.0)
    broker = BrokerConfig(fresh_mosquitto.host, fresh_mosquitto.port)
    pub = Publisher(broker)
    try:
        first = make_hub(fresh_mosquitto, influxd, unique_db, hub_id, wal_dir, hubs,
                         close_windows_at_exit=False)
        first.start()
        pub.send(frames[:10])
        wait_for(lambda: first.counters.get("frames_in") == 10, what=first.snapshot)
        first.stop()
        # A crash in the middle of writing the last record: half of it is on disk.
        seg = sorted(wal_dir.glob("*.seg"))[-1]
        last_len = HEADER_LEN + len(pack_message(topics.frames_topic(DISTRICT), frames[9]))
        size = seg.stat().st_size
        with seg.open("r+b") as f:
            f.truncate(size - last_len // 2)
        torn = last_len - last_len // 2

        second = make_hub(fresh_mosquitto, influxd, unique_db, hub_id, wal_dir, hubs)
        # The whole commit group of the torn record goes (no commit marker after it).
        assert second.counters.get("wal_torn_bytes_recovered") >= torn
        kept = second.wal.log.committed_offset
        assert 0 <= kept <= 9
        second.start()
        pub.send(frames[10:])
        wait_for(lambda: second.counters.get("frames_ok") == kept + 3, what=second.snapshot)
        b = second.stop()
    finally:
        pub.close()

    assert b["wal_torn_bytes_recovered"] >= torn
    assert b["wal_records"] == 3
    records = wal_records(wal_dir)
    assert [r[0] for r in records] == list(range(kept + 3))
    assert [r[2] for r in records] == [*frames[:kept], *frames[10:]]
    # Nothing the broker delivered after the restart is lost: the first hub stored frames
    # 0..9, the second 10..12 (raw and aggregated).
    total = len(frames) * PER_FRAME
    assert influx_count(influxd.url, unique_db) == total
    assert b["hub_received"] == (kept + 3) * PER_FRAME


# -- e. a processing thread still busy when stop() stops waiting for it -----------------------
@pytest.mark.integration
@pytest.mark.parametrize("release", ["before_the_snapshot", "after_stop_returns"])
def test_what_a_processing_thread_busy_past_stop_submits_is_counted_not_lost(
        fresh_mosquitto: MosquittoServer, influxd: InfluxV1Server, unique_db: str,
        tmp_path: Path, hubs: list[Hub], monkeypatch: pytest.MonkeyPatch,
        release: str) -> None:
    """The processing thread is held (a stand-in for a long backlog or a slow window close)
    past ``stop``'s wait for it, so the writer stops first. What the thread submits then is
    never written and never vanishes: it is counted in ``unwritten_lines_at_exit`` -- in
    the snapshot ``stop`` returns if the thread got to it by then, else in later snapshots,
    ``processing_unfinished_at_exit`` saying so -- and the WAL keeps every record."""
    wal_dir = tmp_path / "wal"
    h = make_hub(fresh_mosquitto, influxd, unique_db, f"hub-{uuid.uuid4().hex[:8]}", wal_dir,
                 hubs)
    entered, gate = threading.Event(), threading.Event()
    store_raw, submit, close_wal = h._store_raw, h.writer.submit, h.wal.close
    late: list[int] = []  # lines submitted once the writer had stopped

    def held_store_raw(series: np.ndarray, ts: np.ndarray, value: np.ndarray) -> None:
        entered.set()  # the first batch's raw lines wait for the gate
        gate.wait(30)
        store_raw(series, ts, value)

    def recording_submit(kind: str, body: bytes, lines: int) -> int:
        if gate.is_set():
            late.append(lines)
        return submit(kind, body, lines)

    def closing_wal() -> None:  # stop() is past the writer, before its snapshot
        gate.set()
        h._thread.join(20)
        close_wal()

    monkeypatch.setattr(h, "_store_raw", held_store_raw)
    monkeypatch.setattr(h.writer, "submit", recording_submit)
    if release == "before_the_snapshot":
        monkeypatch.setattr(h.wal, "close", closing_wal)
    frames = frame_series(11, 10, hour_start(2), 5.0)
    h.start()
    pub = Publisher(BrokerConfig(fresh_mosquitto.host, fresh_mosquitto.port))
    try:
        pub.send(frames)
        wait_for(lambda: entered.is_set() and h.counters.get("wal_records") == len(frames),
                 what=h.snapshot)
        snap = h.stop(timeout_s=0.5)
        if release == "after_stop_returns":
            assert snap["processing_unfinished_at_exit"] == 1
            assert snap["unwritten_lines_at_exit"] == 0 and not late
            gate.set()
            wait_for(lambda: not h._thread.is_alive(), 20)
            snap = h.snapshot()
        else:
            assert "processing_unfinished_at_exit" not in snap
    finally:
        gate.set()
        pub.close()

    assert not h._thread.is_alive() and sum(late) > 0
    assert snap["unwritten_lines_at_exit"] == snap["write_refused_lines"] == sum(late)
    assert influx_count(influxd.url, unique_db) == 0  # none of it was written
    assert agg_count_sum(influxd, unique_db, "10s") == 0
    # Every frame is accounted for: taken (and counted) or left unprocessed in the WAL ...
    assert snap["frames_in"] + snap["unprocessed_wal_records"] == len(frames)
    assert snap["hub_received"] == snap["frames_in"] * PER_FRAME
    # ... which keeps every record for the next run.
    assert [r[0] for r in wal_records(wal_dir)] == list(range(len(frames)))
    ck = wal_dir / CHECKPOINT
    assert not ck.exists() or orjson.loads(ck.read_bytes())["durable_offset"] == 0
