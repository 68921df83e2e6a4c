"""``citybrain up``'s accounting report: when ``lost`` may count readings not stored in time.

No processes: ``accounting_warnings`` is built from the final stats and the drain results,
``wait_settled`` from a count read again and again."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from citybrain.up import accounting_complete, accounting_warnings, build_report, wait_settled

#: A hub and two edges that stopped cleanly, as their final stats files say.
CLEAN_HUB: dict[str, Any] = {"hub_received": 1000, "stored_raw": 1000,
                             "unprocessed_wal_records": 0, "unwritten_lines_at_exit": 0}
CLEAN_EDGES: list[dict[str, Any]] = [{"readings_in": 600, "spool_left_records": 0},
                                     {"readings_in": 400, "spool_left_records": 0}]
CLEAN_EXITS = {"sim": 0, "edge-0": 0, "edge-1": 0, "hub": 0}


def test_all_clear_has_no_warnings() -> None:
    assert accounting_warnings(CLEAN_HUB, CLEAN_EDGES, timed_out=[], exits=CLEAN_EXITS) == []
    # keys missing from the stats (an older hub, an edge that never spooled) are clear too
    assert accounting_warnings({}, [{}], exits={"hub": 0}) == []


def test_a_drain_wait_that_timed_out() -> None:
    warnings = accounting_warnings(CLEAN_HUB, CLEAN_EDGES, exits=CLEAN_EXITS, timed_out=[
        "the hub to receive every framed reading", "the hub to finish its backlog"])
    assert len(warnings) == 2
    assert warnings[0].startswith("timed out waiting for the hub to receive every framed")
    assert "the hub to finish its backlog" in warnings[1]


@pytest.mark.parametrize("name,code", [("hub", -9), ("edge-1", 70), ("sim", 1)])
def test_a_tier_that_did_not_exit_0(name: str, code: int) -> None:
    warnings = accounting_warnings(CLEAN_HUB, CLEAN_EDGES, exits={**CLEAN_EXITS, name: code})
    assert len(warnings) == 1
    assert f"{name} {code}" in warnings[0]
    assert "did not finish its graceful stop" in warnings[0]


@pytest.mark.parametrize("key,n,words", [
    ("unprocessed_wal_records", 9141, "9,141 WAL records unprocessed"),
    ("unwritten_lines_at_exit", 12, "12 lines unwritten"),
    ("write_refused_lines", 5825, "5,825 lines refused by its stopped writer"),
    ("processing_unfinished_at_exit", 1, "1 processing thread(s) still running"),
])
def test_the_hub_exited_with_readings_not_stored(key: str, n: int, words: str) -> None:
    warnings = accounting_warnings({**CLEAN_HUB, key: n}, CLEAN_EDGES, exits=CLEAN_EXITS)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"the hub exited with {words}")


def test_an_edge_spool_not_empty_at_exit() -> None:
    edges = [CLEAN_EDGES[0], {**CLEAN_EDGES[1], "spool_left_records": 37}]
    warnings = accounting_warnings(CLEAN_HUB, edges, exits=CLEAN_EXITS)
    assert len(warnings) == 1
    assert "37 records left in their spools" in warnings[0]


def test_influxdb_count_still_changing() -> None:
    warnings = accounting_warnings(CLEAN_HUB, CLEAN_EDGES, exits=CLEAN_EXITS, settled=False)
    assert warnings == ["InfluxDB's count of raw readings was still changing when read"]


def test_the_audit_run_says_why_lost_may_not_be_gone() -> None:
    """The run that fell behind: the hub received 4.28M of 6.44M readings, timed out twice
    and exited with WAL records unprocessed and lines refused."""
    hub = {"hub_received": 4_282_488, "stored_raw": 4_282_488,
           "unprocessed_wal_records": 9141, "write_refused_lines": 5825,
           "unwritten_lines_at_exit": 5825}
    warnings = accounting_warnings(
        hub, [{"readings_accepted": 6_437_835, "spool_left_records": 0}],
        timed_out=["the hub to receive every framed reading", "the hub to finish its backlog"],
        exits={"sim": 0, "edge-0": 0, "hub": 0})
    assert len(warnings) == 5
    assert any("9,141 WAL records" in w for w in warnings)


def test_lost_keeps_its_formula() -> None:
    sim = {"readings_published": 110, "messages_published": 20, "duplicate_readings": 3}
    edges = [{"readings_in": 110, "readings_accepted": 100, "readings_framed": 100,
              "rejected": {"range": 4}, "duplicates": 5, "spool_dropped_readings": 1}]
    hub = {"hub_received": 99, "stored_raw": 99, "readings_invalid": {"schema": 2}}
    report = build_report(sim, edges, hub, 95, {})
    # published − (counted + rejected + duplicates − redelivered + shed)
    assert report["redelivered"] == 2
    assert report["lost"] == 110 - (95 + 6 + 5 - 2 + 1)


def test_wait_settled_returns_at_once_when_the_count_is_complete() -> None:
    reads = iter([10])
    assert wait_settled(lambda: next(reads), 10, timeout_s=5) == (10, True)


def test_wait_settled_waits_for_late_writes_then_settles() -> None:
    values = itertools.chain([5, 7], itertools.repeat(8))
    assert wait_settled(lambda: next(values), 10, timeout_s=5, settle_s=0.05,
                         poll_s=0.02) == (8, True)


def test_wait_settled_still_changing_at_the_deadline() -> None:
    values = itertools.count(1)  # changes at every read: never settles, whatever the pace
    count, settled = wait_settled(lambda: next(values), 10_000, timeout_s=0.2, settle_s=1.0,
                                   poll_s=0.01)
    assert not settled and 1 <= count < 10_000


def test_nothing_lost_is_complete_whatever_the_warnings() -> None:
    """A drain wait timed out while the hub caught up later (seen at --speed 60): every
    reading was stored, so the accounting is complete; the warning stays, as information."""
    warnings = accounting_warnings({}, [], timed_out=["the hub to receive every framed "
                                                      "reading"])
    assert warnings and accounting_complete(0, warnings)
    assert not accounting_complete(5, warnings) and accounting_complete(5, [])
