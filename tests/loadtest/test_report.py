"""Report pieces: HDR conversions against numpy, snapshot arithmetic, loss math, files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.loadtest.report import (
    diff_latency_hists,
    hdr_from_log_histogram,
    hdr_record_many,
    loss_and_duplication,
    lowest_equivalent,
    merge_latency_hists,
    new_latency_histogram,
    percentiles,
    plot,
    stage_histogram,
    timeline_from_samples,
    write_report,
)
from hub.sketch import LogHistogram

ALPHA, MIN_VALUE, MAX_VALUE = 0.01, 1e-4, 1e5  # the hub's layout (seconds)
LAYOUT: dict[str, Any] = {"alpha": ALPHA, "min_value": MIN_VALUE, "max_value": MAX_VALUE,
                          "unit": "s"}


def _sketch(values_s: np.ndarray) -> dict[str, list[int]]:
    """A hub-style sparse stage from latencies in seconds."""
    h = LogHistogram(ALPHA, 1, MIN_VALUE, MAX_VALUE)
    h.add(np.zeros(len(values_s), dtype=np.int64), values_s.astype(np.float64))
    keys = np.flatnonzero(h.counts[0])
    return {"keys": keys.tolist(), "counts": h.counts[0, keys].tolist()}


def test_lowest_equivalent_matches_hdr() -> None:
    h = new_latency_histogram()
    rng = np.random.default_rng(3)
    v = np.concatenate([np.arange(0, 5000), rng.integers(0, h.highest_trackable_value, 5000),
                        2 ** np.arange(0, 32), 2 ** np.arange(1, 32) - 1])
    expected = [h.get_lowest_equivalent_value(int(x)) for x in v]
    assert lowest_equivalent(h, v).tolist() == expected


@given(st.lists(st.floats(0.0, 4e9), min_size=1, max_size=300),
       st.integers(1, 5))
@settings(max_examples=100, deadline=None)
def test_record_many_equals_one_by_one(values: list[float], weight: int) -> None:
    bulk, single = new_latency_histogram(), new_latency_histogram()
    hdr_record_many(bulk, np.array(values), np.full(len(values), weight))
    for v in values:
        single.record_value(min(int(v), single.highest_trackable_value), weight)
    assert bulk.get_total_count() == single.get_total_count()
    assert list(bulk.counts) == list(single.counts)
    assert (bulk.get_min_value(), bulk.get_max_value()) == (single.get_min_value(),
                                                            single.get_max_value())
    # Recording more into a histogram that already holds values adds to it.
    hdr_record_many(bulk, np.array(values[::2]))
    for v in values[::2]:
        single.record_value(min(int(v), single.highest_trackable_value))
    assert list(bulk.counts) == list(single.counts)
    assert bulk.encode() == single.encode()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hdr_from_log_histogram_matches_numpy_quantiles(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lat = rng.lognormal(mean=-2.0, sigma=1.5, size=50_000)  # seconds, ~1 ms .. ~100 s
    lat = lat[lat >= 1e-3]  # the stated bound holds within [min_value, max_value]
    part = _sketch(lat)
    h = hdr_from_log_histogram(part["keys"], part["counts"], ALPHA, MIN_VALUE, MAX_VALUE)
    assert h.get_total_count() == len(lat)
    p = percentiles(h)
    srt = np.sort(lat)
    # LogHistogram: within alpha of the true value; HDR adds 0.1 % (its 3 digits) and
    # answers a rank at most one away from numpy's definition.
    tol = ALPHA + 2e-3
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("p99_9", 0.999)):
        r = math.ceil(q * len(srt)) - 1
        lo, hi = srt[max(r - 1, 0)], srt[min(r + 1, len(srt) - 1)]
        got = p[name]
        assert isinstance(got, float)
        assert lo * (1 - tol) <= got <= hi * (1 + tol), (name, got, lo, hi)
    assert p["max"] == pytest.approx(srt[-1], rel=tol)


def test_small_and_negative_latencies_become_zero() -> None:
    reps = LogHistogram(0.01, 1, 1e-4, 1e5).representatives
    zero = int(np.flatnonzero(reps == 0.0)[0])
    h = hdr_from_log_histogram([zero, 0], [3, 2], 0.01, 1e-4, 1e5)
    assert h.get_total_count() == 5 and h.get_max_value() == 0
    with pytest.raises(ValueError, match="bucket keys"):
        hdr_from_log_histogram([len(reps)], [1], 0.01, 1e-4, 1e5)


def test_merge_and_diff_snapshots() -> None:
    rng = np.random.default_rng(5)
    a_vals, b_vals = rng.exponential(0.2, 1000), rng.exponential(2.0, 500)
    a = {**LAYOUT, "aggregated": _sketch(a_vals), "stored": _sketch(a_vals + 0.5)}
    b = {**LAYOUT, "aggregated": _sketch(b_vals), "stored": {"keys": [], "counts": []}}
    merged = merge_latency_hists([a, b])
    assert merged["aggregated"] == _sketch(np.concatenate([a_vals, b_vals]))
    assert merged["stored"] == a["stored"]
    # Cumulative a then a+b: the interval holds b alone.
    assert diff_latency_hists(a, merged)["aggregated"] == b["aggregated"]
    assert diff_latency_hists(a, merged)["stored"] == {"keys": [], "counts": []}
    assert diff_latency_hists(None, a)["stored"] == a["stored"]
    # A restarted hub counts from zero: the interval is what it has now.
    assert diff_latency_hists(merged, b)["aggregated"] == b["aggregated"]
    with pytest.raises(ValueError, match="layouts"):
        merge_latency_hists([a, {**b, "alpha": 0.02}])
    assert stage_histogram(merged, "stored").get_total_count() == 1000


def test_percentiles_of_an_empty_histogram() -> None:
    assert percentiles(new_latency_histogram()) == {
        "count": 0, "p50": None, "p95": None, "p99": None, "p99_9": None, "max": None}


def test_loss_and_duplication() -> None:
    published = {"a": 10, "b": 5, "c": 7, "d": 0}
    stored = {"a": 10, "b": 3, "c": 9, "e": 2}
    s = loss_and_duplication(published, stored)
    assert s.as_dict() == {"published": 22, "stored": 24, "lost": 2, "duplicated": 4,
                           "devices_with_loss": 1, "devices_with_duplicates": 2}
    assert loss_and_duplication({}, {}).lost == 0


@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 100)),
       st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 100)))
def test_loss_balance(published: dict[str, int], stored: dict[str, int]) -> None:
    s = loss_and_duplication(published, stored)
    assert s.published - s.lost + s.duplicated == s.stored
    assert s.lost >= 0 and s.duplicated >= 0


def _timeline() -> list[dict[str, float | None]]:
    rng = np.random.default_rng(9)
    samples = []
    cum_agg = cum_stored = 0
    hist_vals: list[float] = []
    for t in range(0, 31):
        cum_agg += 1000 + 50 * t
        cum_stored += 900 + 50 * t
        hist_vals.extend(rng.exponential(0.05 + 0.01 * t, 300).tolist())
        vals = np.array(hist_vals)
        samples.append((float(t), {"aggregated_readings": cum_agg, "stored_raw": cum_stored,
                                   "latency_hist": {**LAYOUT, "aggregated": _sketch(vals),
                                                    "stored": _sketch(vals * 1.5 + 0.2)}}))
    sent = np.full(35, 1100)
    return timeline_from_samples(sent, samples)


def test_timeline_rates_and_interval_latencies() -> None:
    rows = _timeline()
    assert len(rows) == 30
    assert rows[0]["t_s"] == 1.0 and rows[0]["published_per_s"] == 1100.0
    assert rows[0]["aggregated_per_s"] == 1050.0 and rows[0]["stored_per_s"] == 950.0
    # Latency per interval, not cumulative: it follows the rising mean.
    p50 = [r["aggregated_p50_s"] for r in rows]
    assert all(isinstance(x, float) for x in p50)
    assert p50[-1] > 2 * p50[0]  # type: ignore[operator]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "load.png"
    plot(path, _timeline())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot(tmp_path / "empty.png", [{"t_s": 0.0, "published_per_s": 1.0}])


def test_write_report(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_report(path, {"counts": np.arange(3), "x": np.float64(1.5), "bad": math.inf})
    doc = orjson.loads(path.read_bytes())
    assert doc["counts"] == [0, 1, 2] and doc["x"] == 1.5 and doc["bad"] is None
    assert doc["machine"]["cpus"] >= 1
    assert not list(tmp_path.glob("*.tmp"))
