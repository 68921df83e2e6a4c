"""``Hub.emit``: one body per resolution and kind, the same lines as one per emission; the
anomaly points' cached entities name the right series and reason."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.frame import decode_frame
from edge.batcher import FrameBuilder
from hub import analytics as analytics_module
from hub.aggregation import Emission
from hub.anomaly import ScanRows
from hub.lineproto import render_multi
from hub.rollup import ClosedWindow, Rollup
from hub.service import AGG_FIELDS, AGG_IS_INT, Hub, HubConfig, _coalesced
from hub.sinks import InfluxConfig
from hub.warmup import CountingSink
from hub.window import WindowBatch
from seeds.city import City
from tests.hub.test_window import _same_batch

STATION, SYSTEM = "500103-air-01-00000", "500103-air-01"  # reports every 60 s
WATER_STATION, WATER_SYSTEM = "500103-water-01-00000", "500103-water-01"  # every 600 s


def _hub(**cfg: object) -> tuple[Hub, list[tuple[str, bytes, int]]]:
    """A hub that stores nothing, its series registered, recording what it submits; with
    ``cfg`` (``HubConfig`` fields) also a water station's two series after the air
    station's three."""
    hub = Hub(HubConfig(client_id="emit", influx=InfluxConfig(url="http://127.0.0.1:9"),
                        write_connections=1, **cfg),  # type: ignore[arg-type]
              City(1.0), sink=CountingSink())
    builder = FrameBuilder("500103")
    for seq, name in enumerate(("pm2_5", "pm10", "no2")):
        builder.add(STATION, SYSTEM, seq, 1_790_000_000.0, name, 1.0)
    if cfg:
        for seq, name in enumerate(("ph", "do")):
            builder.add(WATER_STATION, WATER_SYSTEM, seq, 1_790_000_000.0, name, 7.0)
    hub.registry.resolve(decode_frame(builder.seal()[0]))
    submitted: list[tuple[str, bytes, int]] = []
    real = hub.writer.submit

    def submit(kind: str, body: bytes, lines: int) -> int:
        submitted.append((kind, body, lines))
        return real(kind, body, lines)

    hub.writer.submit = submit  # type: ignore[method-assign]
    hub.writer.start()
    return hub, submitted


def _rows(series: list[int], start_s: list[int], seed: int) -> WindowBatch:
    rng = np.random.default_rng(seed)
    n = len(series)
    i = np.asarray(series, dtype=np.int64)
    ts = np.asarray(start_s, dtype=np.int64) * 10**9
    f = rng.random(n) * 100
    return WindowBatch(i, ts, np.full(n, 2, dtype=np.int64), f * 2, f, rng.random(n), f - 1,
                       f + 1, f, ts, f, ts + 1)


def _render(hub: Hub, label: str, b: WindowBatch) -> bytes:
    values = np.column_stack([b.count.astype(np.float64), b.mean, b.min, b.max, b.sum,
                              b.first, b.last, np.sqrt(b.variance())])
    return render_multi(hub.registry.agg_prefixes[label], b.series, AGG_FIELDS, values,
                        AGG_IS_INT, b.window_start_ns)[0]


def test_emissions_of_one_resolution_and_kind_go_as_one_body_with_the_same_lines() -> None:
    hub, submitted = _hub()
    a = _rows([0, 1], [1_790_000_000, 1_790_000_000], 1)
    b = _rows([0, 2], [1_790_000_060, 1_790_000_060], 2)
    c = _rows([1], [1_790_000_010], 3)
    d = _rows([2], [1_790_000_020], 4)
    hub.emit([Emission("10s", a, True), Emission("1m", b, True),
              Emission("10s", WindowBatch.empty(), True), Emission("10s", c, True),
              Emission("10s", d, False)])
    assert [(k, n) for k, _, n in submitted] == [("agg", 3), ("agg", 2), ("agg", 1)]
    assert submitted[0][1] == _render(hub, "10s", a) + _render(hub, "10s", c)
    assert submitted[1][1] == _render(hub, "1m", b)
    assert submitted[2][1] == _render(hub, "10s", d)
    assert hub.counters.snapshot()["windows_final"] == {"10s": 3, "1m": 2}
    assert hub.counters.snapshot()["windows_ontime"] == {"10s": 1}
    assert hub.writer.stop(10) == 0
    hub.wal.settle(hub.writer.durable_ticket, force_save=True)
    # the newest final window of each resolution, as one mark per emission gave
    assert hub.wal.checkpoint.final_through == {"10s": (1_790_000_010 + 10) * 10**9,
                                                "1m": (1_790_000_060 + 60) * 10**9}
    hub.wal.close()


def test_anomaly_points_name_each_rows_series_and_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Entities are looked up once per (series, reason) and reused: every row still gets
    its own series' tags and its own reason."""
    hub, _ = _hub()
    a = hub.analytics
    assert a is not None
    series = np.array([0, 1, 0, 2, 0, 1], dtype=np.int64)
    ts = np.arange(6, dtype=np.int64) * 10**9
    value = np.arange(6, dtype=np.float64)
    stuck = np.array([True, False, False, True, False])
    found = ScanRows(np.array([0, 1, 2, 4, 5], dtype=np.int64), stuck, np.arange(5.0),
                     ~stuck, ~stuck)  # each spike starts an episode
    monkeypatch.setattr(analytics_module, "scan_stuck_and_spikes", lambda *args: found)
    a._sync()  # the series' columns, as on_readings has them before scoring
    first, n1 = a._anomalies(series, ts, value)
    again, n2 = a._anomalies(series, ts, value)  # every entity cached now
    assert first == again and n1 == n2 == 5
    names = [hub.registry.labels(s).name for s in (0, 1, 0, 0, 1)]
    reasons = ["stuck", "spike", "spike", "stuck", "spike"]
    lines = first.decode().splitlines()
    for line, name, reason in zip(lines, names, reasons, strict=True):
        assert line.startswith("anomaly,")
        assert f"device={STATION}" in line and f",m={name}," in line
        assert f",reason={reason}," in line
    assert hub.writer.stop(10) == 0
    hub.wal.close()


def test_unchanged_final_rows_are_not_written_again_but_still_marked_final() -> None:
    """Final rows flagged ``unchanged`` (stored on time, not changed since) are counted and
    marked final in the WAL, not rendered again; the others are written as before."""
    hub, submitted = _hub()
    a = _rows([0, 1, 2], [0, 0, 10], seed=5)
    unchanged = np.array([True, True, False])
    hub.emit([Emission("10s", a, True, unchanged)])
    agg = [(body, lines) for kind, body, lines in submitted if kind == "agg"]
    keep = ~unchanged
    only = WindowBatch(*(getattr(a, f)[keep] for f in a.__dataclass_fields__))
    assert agg == [(_render(hub, "10s", only), 1)]
    assert hub.counters.snapshot()["windows_final_unchanged"] == {"10s": 2}
    assert hub.counters.snapshot()["windows_final"] == {"10s": 3}
    submitted.clear()
    hub.emit([Emission("10s", _rows([0], [20], seed=6), True, np.array([True]))])
    assert [s for s in submitted if s[0] == "agg" and s[2]] == []  # no lines, still final
    assert hub.writer.stop(30) == 0
    hub.wal.settle(hub.writer.durable_ticket, force_save=True)
    assert hub.wal.checkpoint.final_through["10s"] == 30 * 10**9


def test_a_large_group_is_rendered_and_queued_in_slices(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A group of more than ``EMIT_SLICE_ROWS`` rows goes as consecutive bodies with, joined,
    exactly the lines of one body; the final mark waits for the last of them."""
    import hub.service as service
    monkeypatch.setattr(service, "EMIT_SLICE_ROWS", 2)
    hub, submitted = _hub()
    a = _rows([0, 1, 2, 0, 1], [0, 0, 0, 10, 10], seed=7)
    hub.emit([Emission("10s", a, True)])
    agg = [(body, lines) for kind, body, lines in submitted if kind == "agg"]
    assert [lines for _, lines in agg] == [2, 2, 1]
    assert b"".join(body for body, _ in agg) == _render(hub, "10s", a)
    assert hub.writer.stop(10) == 0
    hub.wal.settle(hub.writer.durable_ticket, force_save=True)
    assert hub.wal.checkpoint.final_through["10s"] == 20 * 10**9
    hub.wal.close()


def _closed_hour(series: list[int], seed: int) -> ClosedWindow:
    """The hour [0, 1 h) of a rollup fed ``_rows`` of ``series``, closed."""
    rollup = Rollup(3600 * 10**9, capacity=4)
    rollup.add_partials(_rows(series, [0] * len(series), seed))
    (hour,) = rollup.close_windows(3600 * 10**9)
    return hour


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 7), st.sets(st.integers(0, 9), min_size=1, max_size=6)),
                max_size=6), st.integers(1, 5))
def test_coalesced_slices_are_those_of_the_parts_concatenated(
        shapes: list[int | set[int]], size: int) -> None:
    """Batches (an int: that many rows) and closed windows (a set: its series) in any mix
    come out as the concatenation's slices, never holding it whole."""
    parts: list[WindowBatch | ClosedWindow] = [
        _rows(list(range(k)), [0] * k, seed=k) if isinstance(k, int)
        else _closed_hour(sorted(k), seed=len(k)) for k in shapes]
    whole = WindowBatch.concat([p if isinstance(p, WindowBatch) else p.batch() for p in parts])
    got = list(_coalesced(parts, size))
    want = list(whole.slices(size))
    assert [len(b) for b in got] == [len(b) for b in want]
    for g, w in zip(got, want, strict=True):
        _same_batch(g, w)


def test_a_closed_hour_is_stored_slice_by_slice_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A closed coarse window is rendered a slice at a time with exactly the lines of its
    rows in one body, and not again once the WAL says its hour is stored."""
    import hub.service as service
    monkeypatch.setattr(service, "EMIT_SLICE_ROWS", 2)
    hub, submitted = _hub()
    hour = _closed_hour([2, 0, 1], seed=3)
    hub.emit([Emission("1h", hour, True)])
    agg = [(body, lines) for kind, body, lines in submitted if kind == "agg"]
    assert [lines for _, lines in agg] == [2, 1]
    assert b"".join(body for body, _ in agg) == _render(hub, "1h", hour.batch())
    assert hub.writer.stop(10) == 0
    hub.wal.settle(hub.writer.durable_ticket, force_save=True)
    assert hub.wal.checkpoint.final_through["1h"] == 3600 * 10**9
    again = hub._not_yet_stored(Emission("1h", _closed_hour([1], seed=4), True))
    assert len(again.rows) == 0 and hub.counters.labelled["windows_already_stored"]["1h"] == 1
    hub.wal.close()


def test_fast_fine_windows_store_only_series_reporting_faster_than_a_window() -> None:
    # 2 min windows: the air station (60 s) reports faster than one, the water station
    # (600 s) does not: its finest rows are counted, not stored; its coarser rows are stored
    hub, submitted = _hub(window_s=120.0, rollups_s=(600.0, 3600.0),
                          store_fine_windows="fast")
    fine, coarse = hub.windows.labels[:2]
    reg = hub.registry
    systems = [hub.city.systems[i].system_id for i in reg.device_system]
    assert systems == [SYSTEM, WATER_SYSTEM]
    air, water = (np.flatnonzero(reg.series_gid == g).tolist() for g in (0, 1))
    a = _rows([air[0], water[0], air[1], water[1], air[2]], [1_790_000_040] * 5, 1)
    b = _rows([water[0], air[0], water[1]], [1_790_000_200] * 3, 2)
    c = _rows([air[0], water[0]], [1_790_000_000, 1_790_000_000], 3)
    hub.emit([Emission(fine, a, False), Emission(fine, b, True), Emission(coarse, c, True)])
    assert [(k, n) for k, _, n in submitted] == [("agg", 3), ("agg", 1), ("agg", 2)]
    assert submitted[0][1] == _render(hub, fine, a.take(np.array([0, 2, 4])))
    assert submitted[1][1] == _render(hub, fine, b.take(np.array([1])))
    assert submitted[2][1] == _render(hub, coarse, c)
    counts = hub.counters.snapshot()
    assert counts["windows_not_stored"] == {fine: 4}
    assert counts["windows_ontime"] == {fine: 5}
    assert counts["windows_final"] == {fine: 3, coarse: 2}
    assert hub.writer.stop(10) == 0


def test_every_seeded_series_is_slow_for_10s_windows_and_all_is_the_default() -> None:
    hub, submitted = _hub(store_fine_windows="fast")
    water = np.flatnonzero(hub.registry.series_gid == 1).tolist()
    rows = _rows([0, water[0]], [1_790_000_000, 1_790_000_000], 1)
    hub.emit([Emission("10s", rows, True), Emission("1m", rows, True)])
    assert [(k, n) for k, _, n in submitted] == [("agg", 2)]
    assert submitted[0][1] == _render(hub, "1m", rows)
    assert hub.writer.stop(10) == 0
    assert HubConfig().store_fine_windows == "all"
    with pytest.raises(ValueError, match="store_fine_windows"):
        _hub(store_fine_windows="some")
