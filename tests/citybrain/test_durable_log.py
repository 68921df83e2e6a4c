"""The on-disk log behind the edge spool and the hub WAL: order, durability, recovery."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.durable_log import (
    HEADER_LEN,
    DurableLog,
    LogFull,
    pack_message,
    unpack_message,
)


def payloads(log: DurableLog, start: int = 0) -> list[bytes]:
    return [r.payload for r in log.reader(start)]


def test_append_is_invisible_until_commit(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    assert log.append(b"a", 1) == 0
    assert log.append(b"b", 2) == 1
    assert payloads(log) == []
    assert log.commit() == 2
    recs = list(log.reader(0))
    assert [(r.offset, r.meta, r.payload) for r in recs] == [(0, 1, b"a"), (1, 2, b"b")]


def test_reopen_continues_offsets_and_keeps_records(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=100, max_bytes=10_000)
    for i in range(20):
        log.append(f"r{i}".encode())
    log.commit()
    log.close()
    again = DurableLog(tmp_path, segment_bytes=100, max_bytes=10_000)
    assert again.next_offset == 20
    assert payloads(again) == [f"r{i}".encode() for i in range(20)]
    assert again.append(b"next") == 20


def test_uncommitted_tail_is_lost_but_torn_record_is_cut(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    log.append(b"kept")
    log.commit()
    log.append(b"x" * 100)
    log.commit()
    log.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[:-30])  # a crash in the middle of writing the second commit
    again = DurableLog(tmp_path)
    assert again.recovered_torn_bytes == HEADER_LEN + 100 + HEADER_LEN - 30
    assert payloads(again) == [b"kept"]
    assert again.append(b"after") == 1
    again.commit()
    assert payloads(again) == [b"kept", b"after"]


def test_appended_but_uncommitted_records_do_not_come_back(tmp_path: Path) -> None:
    """A process killed after its buffered writer passed records to the OS, before commit:
    they were never acknowledged upstream, so they must not be recovered."""
    log = DurableLog(tmp_path)
    log.append(b"acked")
    log.commit()
    log.append(b"ghost")
    log._active.flush()  # what a full buffer does on its own; then SIGKILL
    again = DurableLog(tmp_path)
    assert payloads(again) == [b"acked"]
    assert again.append(b"next") == 1


def test_corrupt_byte_is_detected_by_crc(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    log.append(b"first")
    log.commit()
    log.append(b"second")
    log.commit()
    log.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(seg.read_bytes())
    data[-HEADER_LEN - 1] ^= 0xFF  # the last payload byte of "second"
    seg.write_bytes(bytes(data))
    assert payloads(DurableLog(tmp_path)) == [b"first"]


def test_reader_crosses_segments_and_trim_keeps_order(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=64, max_bytes=100_000)
    for i in range(50):
        log.append(i.to_bytes(4, "little"))
    log.commit()
    assert len(list(tmp_path.glob("*.seg"))) > 5
    assert [int.from_bytes(p, "little") for p in payloads(log, 17)] == list(range(17, 50))
    removed = log.trim(30)
    assert removed > 0
    assert log.first_offset <= 30
    assert [int.from_bytes(p, "little") for p in payloads(log, 30)] == list(range(30, 50))


def test_full_log_raises_and_drop_oldest_counts_what_went(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=100, max_bytes=300)
    n = 0
    with pytest.raises(LogFull):
        while True:
            log.append(b"y" * 20, meta=7)
            log.commit()
            n += 1
    first, records, meta_sum = log.drop_oldest()
    assert first == 0 and records > 0 and meta_sum == 7 * records
    reader = log.reader(0)
    got = list(reader)
    assert reader.skipped == records
    assert len(got) == n - records


def test_cursor_survives_reopen(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    assert log.load_cursor("sent", -1) == -1
    log.save_cursor("sent", 42)
    assert DurableLog(tmp_path).load_cursor("sent") == 42


def test_tailing_reader_sees_everything_once_while_writer_appends(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, segment_bytes=256, max_bytes=10**7, fsync=False)
    got: list[int] = []
    total = 2000

    def consume() -> None:
        reader = log.reader(0)
        for _ in range(10_000):
            got.extend(int.from_bytes(r.payload, "little") for r in reader.read(64, 0.05))
            if len(got) >= total:
                return

    t = threading.Thread(target=consume)
    t.start()
    for i in range(total):
        log.append(i.to_bytes(4, "little"))
        if i % 7 == 0:
            log.commit()
    log.commit()
    t.join(60)
    if t.is_alive():
        pytest.fail("the reader did not catch up")
    assert got == list(range(total))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40), st.integers(40, 400))
def test_any_sequence_round_trips(tmp_path_factory: pytest.TempPathFactory,
                                  records: list[bytes], segment: int) -> None:
    d = tmp_path_factory.mktemp("log")
    log = DurableLog(d, segment_bytes=segment, max_bytes=10**6, fsync=False)
    for r in records:
        log.append(r)
    log.commit()
    log.close()
    assert payloads(DurableLog(d, segment_bytes=segment, max_bytes=10**6)) == records


def test_message_packing_round_trips() -> None:
    assert unpack_message(pack_message("cb/v1/frames/500101", b"\x00\x01")) == (
        "cb/v1/frames/500101", b"\x00\x01")
