"""Several InfluxDB connections (``hub.writers.SplitWriter``): the global durable ticket never
runs ahead of a connection that has not stored its part, and everything lands."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from citybrain.localstack import InfluxV1Server
from citybrain.stats import Counters
from hub.sinks import InfluxConfig, make_sink
from hub.writer import InfluxWriter
from hub.writers import SplitWriter
from tests.waiting import wait_for


class GatedSink:
    """A sink that records bodies and holds each write until its gate is opened: the
    ordering of acknowledgements is the test's to choose (a unit test of the ticket logic;
    the real database is in the test below)."""

    def __init__(self) -> None:
        self.config = InfluxConfig()
        self.gate = threading.Event()
        self.bodies: list[bytes] = []

    def ensure_target(self) -> None:
        pass

    def write(self, body: bytes) -> None:
        self.gate.wait(10)
        self.bodies.append(body)

    def close(self) -> None:
        pass


def test_durable_ticket_waits_for_the_slower_connection() -> None:
    raw, other = GatedSink(), GatedSink()
    seen: list[int] = []
    w = SplitWriter([raw], other, Counters(), batch_lines=1, flush_s=0.01,
                    on_durable=lambda t, ok: seen.append(t))
    w.start()
    t_agg = w.submit("agg", b"a x=1 1\n", 1)      # ticket 1, on the slow connection
    t_raw = w.submit("raw", b"r x=1 1\n", 1)      # ticket 2, on the fast one
    assert (t_agg, t_raw) == (1, 2)
    raw.gate.set()
    wait_for(lambda: raw.bodies != [], 5)
    time.sleep(0.1)
    assert w.durable_ticket == 0  # raw is stored, but ticket 1 (agg) is not
    other.gate.set()
    wait_for(lambda: w.durable_ticket == 2, 5)
    assert seen and seen[-1] == 2
    assert w.stop(5) == 0


def test_a_raw_chunk_on_either_raw_connection_holds_the_ticket_back() -> None:
    raws, other = [GatedSink(), GatedSink()], GatedSink()
    other.gate.set()
    w = SplitWriter(raws, other, Counters(), batch_lines=1, flush_s=0.01)
    w.start()
    tickets = [w.submit("raw", b"r x=%d 1\n" % i, 1) for i in range(4)]  # dealt in turn
    assert tickets == [1, 2, 3, 4]
    raws[1].gate.set()
    wait_for(lambda: len(raws[1].bodies) == 2, 5)
    time.sleep(0.1)
    assert w.durable_ticket == 0  # tickets 2 and 4 are stored, 1 and 3 are not
    raws[0].gate.set()
    wait_for(lambda: w.durable_ticket == 4, 5)
    assert sorted(raws[0].bodies) == [b"r x=0 1\n", b"r x=2 1\n"]
    assert w.stop(5) == 0


def test_every_connection_stores_everything(influxd: InfluxV1Server, unique_db: str) -> None:
    cfg = InfluxConfig(url=influxd.url, database=unique_db)
    sinks = [make_sink(cfg), make_sink(cfg), make_sink(cfg)]
    sinks[0].ensure_target()
    w = SplitWriter(sinks[:2], sinks[2], Counters(), batch_lines=500, flush_s=0.05)
    w.start()
    last = 0
    for i in range(40):
        kind = "raw" if i % 3 else "agg"
        body = b"".join(b"m_%s,s=%d v=%d %d\n" % (kind.encode(), i, j, j + 1) for j in range(250))
        last = w.submit(kind, body, 250)
    wait_for(lambda: w.durable_ticket == last, 30)
    assert w.stop(10) == 0
    out = influxd.query("SELECT count(v) FROM /^m_/", unique_db)
    counts = {s["name"]: s["values"][0][1] for s in out["results"][0]["series"]}
    assert counts == {"m_agg": 14 * 250, "m_raw": 26 * 250}


def test_a_batch_is_written_once_submissions_stop_not_after_flush_s() -> None:
    """With ``flush_s`` an hour and ``batch_lines`` far away, a lone chunk is still written
    as soon as nothing more is submitted for ``idle_flush_s``; while chunks keep coming they
    are joined into one batch."""
    from hub.warmup import CountingSink
    from hub.writer import InfluxWriter
    bodies: list[bytes] = []

    class Recording(CountingSink):
        def write(self, body: bytes) -> None:
            bodies.append(body)
            super().write(body)

    sink = Recording()
    w = InfluxWriter(sink, Counters(), batch_lines=1_000, flush_s=3600.0, idle_flush_s=1.0)
    w.start()
    w.submit("raw", b"r x=1 1\n", 1)
    wait_for(lambda: sink.lines == 1, 20, lambda: bodies)
    for i in range(5):  # back to back: one batch
        w.submit("raw", f"r x={i} {i + 2}\n".encode(), 1)
    wait_for(lambda: sink.lines == 6, 20, lambda: bodies)
    assert len(bodies) == 2
    assert w.stop(5) == 0


def test_a_write_still_in_flight_at_the_stop_deadline_is_counted_unwritten() -> None:
    """A batch the writer thread has taken but InfluxDB has not acknowledged when ``stop``
    gives up is not known to be stored: it counts as unwritten (the WAL keeps it), along
    with what was still queued."""
    sink = GatedSink()  # never opened: the first write hangs
    w = InfluxWriter(sink, Counters(), batch_lines=1, flush_s=0.01, idle_flush_s=0.01)
    w.start()
    w.submit("raw", b"r x=1 1\nr x=2 2\n", 2)
    wait_for(lambda: w.depth == 0, 5)  # taken by the writer thread, now held at the gate
    w.submit("raw", b"r x=3 3\n", 1)
    assert w.stop(0.1) == 3
    sink.gate.set()  # let the thread finish (it is a daemon; this keeps the test tidy)


def refusal_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "citybrain.writer" and r.levelno == logging.WARNING
            and "after stop" in r.getMessage()]


def test_lines_submitted_after_stop_are_counted_unwritten_not_lost(
        influxd: InfluxV1Server, unique_db: str, caplog: pytest.LogCaptureFixture) -> None:
    """A submit after ``stop`` (a processing thread the hub gave up waiting for) used to
    sit in the queue of a writer whose thread had exited: never written, never counted.
    Now it is refused: counted unwritten, warned about once, and its ticket never becomes
    durable (so the WAL keeps the record it came from)."""
    sink = make_sink(InfluxConfig(url=influxd.url, database=unique_db))
    sink.ensure_target()
    counters = Counters()
    w = InfluxWriter(sink, counters, batch_lines=100, flush_s=0.05, idle_flush_s=0.01)
    w.start()
    stored = w.submit("raw", b"m,s=1 v=1 1\n", 1)
    assert w.stop(10) == 0 and w.durable_ticket == stored
    with caplog.at_level(logging.WARNING, logger="citybrain.writer"):
        late = [w.submit("raw", b"m,s=2 v=%d %d\n" % (i, i + 2), 1) for i in range(3)]
    assert late == [stored + 1, stored + 2, stored + 3]  # new tickets ...
    assert w.durable_ticket == stored  # ... that never become durable
    assert w.unwritten_lines == counters.get("write_refused_lines") == 3
    assert w.depth == w.queued_lines == 0  # nothing left behind in the queue
    assert len(refusal_warnings(caplog)) == 1
    out = influxd.query('SELECT count(v) FROM "m"', unique_db)
    assert out["results"][0]["series"][0]["values"][0][1] == 1
    sink.close()


def test_submits_after_stop_are_refused_while_the_writer_thread_still_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    """With a write still in flight when ``stop`` gives up, the writer thread lives on:
    it used to take and write what was submitted after ``stop`` (and a submit waiting
    for room waited until then). Now ``stop`` wakes the waiting submit and both are
    refused and counted; the thread only finishes the write it holds."""
    sink = GatedSink()  # closed during stop: the first write hangs
    counters = Counters()
    w = InfluxWriter(sink, counters, batch_lines=1, flush_s=0.01, idle_flush_s=0.01,
                     max_queued_lines=1)
    w.start()
    w.submit("raw", b"r x=1 1\n", 1)
    wait_for(lambda: w.depth == 0, 5)  # taken by the writer thread, now held at the gate
    waiting: list[int] = []
    submitter = threading.Thread(target=lambda: waiting.append(
        w.submit("raw", b"r x=2 2\n", 1)), daemon=True)
    submitter.start()
    wait_for(lambda: counters.get("write_queue_full_waits") > 0, 5)  # no room: it waits
    with caplog.at_level(logging.WARNING, logger="citybrain.writer"):
        assert w.stop(0.1) >= 1  # the line in flight (and the woken submit, if counted yet)
        submitter.join(5)
        assert not submitter.is_alive()
        late = w.submit("raw", b"r x=3 3\n", 1)
    assert w.unwritten_lines == 3 and counters.get("write_refused_lines") == 2
    assert len(refusal_warnings(caplog)) == 1
    sink.gate.set()  # the held write completes (InfluxDB may yet apply it: counted anyway)
    wait_for(lambda: not w._thread.is_alive(), 15)
    assert sink.bodies == [b"r x=1 1\n"]  # nothing submitted after stop was written
    assert w.durable_ticket == 1 and sorted([*waiting, late]) == [2, 3]


def test_time_waiting_for_room_is_counted() -> None:
    """A submit that finds the queue full waits until InfluxDB took lines; the wait is
    counted in ``write_queue_full_us`` (the load test reports it: who set the pace)."""
    sink = GatedSink()
    counters = Counters()
    w = InfluxWriter(sink, counters, batch_lines=1, flush_s=0.01, idle_flush_s=0.01,
                     max_queued_lines=2)  # lines count until InfluxDB acknowledges them
    w.start()
    w.submit("raw", b"r x=1 1\n", 1)
    wait_for(lambda: w.depth == 0, 5)  # held at the gate
    w.submit("raw", b"r x=2 2\n", 1)  # queued: the queue is now full
    submitter = threading.Thread(target=lambda: w.submit("raw", b"r x=3 3\n", 1), daemon=True)
    submitter.start()
    wait_for(lambda: counters.get("write_queue_full_waits") > 0, 5)
    assert counters.get("write_queue_full_us") == 0  # counted when the wait ends
    sink.gate.set()
    submitter.join(10)
    assert not submitter.is_alive() and counters.get("write_queue_full_us") > 0
    w.stop(10)
    assert sink.bodies == [b"r x=1 1\n", b"r x=2 2\n", b"r x=3 3\n"]
