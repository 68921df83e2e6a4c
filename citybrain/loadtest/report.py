"""Load-test results: latency histograms, loss and duplication, the JSON report and a plot.

Pure apart from ``write_report`` and ``plot`` (which write one file each).

Latencies are HdrHistograms in **microseconds** (``new_latency_histogram``: 1 µs to 1 h,
3 significant digits); ``percentiles`` answers in **seconds**. The hub reports its latencies
as cumulative sparse bucket counts of ``hub.sketch.LogHistogram`` in seconds, in its stats
snapshot::

    snap["latency_hist"] = {"alpha": 0.01, "min_value": 1e-4, "max_value": 1e5, "unit": "s",
                            "aggregated": {"keys": [...], "counts": [...]},
                            "stored": {"keys": [...], "counts": [...]}}

``keys`` index ``LogHistogram(alpha, 1, min_value, max_value).representatives``; stage
``aggregated`` is device time -> reading added to the hub's window state, ``stored`` device
time -> raw line acknowledged by InfluxDB. ``merge_latency_hists`` adds several hubs',
``diff_latency_hists`` turns two cumulative snapshots into the interval between them, and
``hdr_from_log_histogram`` converts one stage to an HdrHistogram (each bucket recorded at its
representative: relative error within ``alpha`` plus HDR's 0.1 %).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from citybrain.stats import write_json_atomic
from hub.latency import STAGES, merge_snapshots

#: HdrHistogram range and precision for latencies in microseconds: 1 µs .. 1 h, 3 digits.
HDR_LOWEST_US = 1
HDR_HIGHEST_US = 3_600_000_000
HDR_DIGITS = 3
_QUANTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99_9", 99.9))
#: Several hubs' ``latency_hist`` as one: the hub's own merge (``hub.latency``), one copy.
merge_latency_hists = merge_snapshots


def new_latency_histogram() -> HdrHistogram:
    """An empty HdrHistogram for latencies in microseconds (1 µs .. 1 h, 3 digits)."""
    return HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_DIGITS)


def hdr_record_many(h: HdrHistogram, values: np.ndarray,
                    counts: np.ndarray | None = None) -> None:
    """Record ``values`` (any real dtype, in the histogram's unit; ``counts`` each, default
    1) into ``h`` as ``record_value`` would one by one, in a few numpy passes.

    Values are truncated to integers and clamped to ``[0, highest_trackable_value]`` (a
    value above it is counted at the top rather than dropped, as ``record_value`` would).
    Each value is first rounded down to its bucket's lowest equivalent value -- the same
    bucket, so the histogram is exactly what per-value recording gives.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return
    iv = np.clip(np.nan_to_num(v, nan=0.0), 0, h.highest_trackable_value).astype(np.int64)
    low = lowest_equivalent(h, iv)
    uniq, inv = np.unique(low, return_inverse=True)
    w = np.bincount(inv.ravel(), weights=None if counts is None else
                    np.asarray(counts, dtype=np.float64).ravel(), minlength=len(uniq))
    n = np.rint(w).astype(np.int64)
    keep = n != 0
    _record_distinct(h, uniq[keep], n[keep])


def _record_distinct(h: HdrHistogram, values: np.ndarray, counts: np.ndarray) -> None:
    """``h.record_value(values[i], counts[i])`` for each ``i``; ``values`` are distinct
    lowest equivalent values (so distinct buckets) in ``[0, highest_trackable_value]``.

    One scatter into the histogram's counts array (thousands of distinct lag buckets per
    report made the per-value Python calls a load generator's biggest cost after zstd),
    with ``record_value``'s bookkeeping: total, min and max of the values recorded. Falls
    back to ``record_value`` when the counts are not the 64-bit ctypes array this relies on.
    """
    try:
        array = np.ctypeslib.as_array(h.counts)
    except (AttributeError, TypeError, ValueError):
        array = None
    if array is None or array.shape != (h.counts_len,) or array.dtype.itemsize != 8:
        for value, n in zip(values.tolist(), counts.tolist(), strict=True):
            h.record_value(value, n)
        return
    # hdrh's counts index: bucket b = bit_length(v | sub_bucket_mask) - unit_magnitude -
    # (half magnitude + 1), sub-bucket v >> (b + unit_magnitude), index (b + 1) * half count
    # + sub-bucket - half count.
    v = np.asarray(values, dtype=np.int64)
    bits = np.frexp((v | h.sub_bucket_mask).astype(np.float64))[1].astype(np.int64)
    bucket = bits - h.unit_magnitude - (h.sub_bucket_half_count_magnitude + 1)
    index = (((bucket + 1) << h.sub_bucket_half_count_magnitude)
             + (v >> (bucket + h.unit_magnitude)) - h.sub_bucket_half_count)
    ok = (index >= 0) & (index < h.counts_len)  # record_value ignores the others
    if not ok.all():
        v, index, counts = v[ok], index[ok], counts[ok]
    if not len(v):
        return
    array[index] += counts.astype(array.dtype)
    h.total_count += int(counts.sum())
    h.min_value = min(h.min_value, int(v.min()))
    h.max_value = max(h.max_value, int(v.max()))


def lowest_equivalent(h: HdrHistogram, values: np.ndarray) -> np.ndarray:
    """Vectorised ``h.get_lowest_equivalent_value`` for non-negative int64 ``values``.

    HDR layout: a value's bucket index is ``bit_length(v | sub_bucket_mask) - unit_magnitude
    - (sub_bucket_half_count_magnitude + 1)`` and values in the bucket are equivalent in
    steps of ``2 ** (bucket + unit_magnitude)``.
    """
    v = np.asarray(values, dtype=np.int64)
    masked = (v | h.sub_bucket_mask).astype(np.float64)
    bits = np.frexp(masked)[1].astype(np.int64)  # bit_length, exact below 2**53
    shift = bits - (h.sub_bucket_half_count_magnitude + 1)
    shift = np.maximum(shift, h.unit_magnitude)
    return (v >> shift) << shift


def hdr_from_log_histogram(keys: Sequence[int] | np.ndarray, counts: Sequence[int] | np.ndarray,
                           alpha: float, min_value: float, max_value: float) -> HdrHistogram:
    """An HdrHistogram in microseconds from a ``LogHistogram``'s sparse bucket counts in
    seconds: each bucket ``keys[i]`` (index into ``representatives``) recorded
    ``counts[i]`` times at its representative. Representatives below 1 µs (the zero bucket,
    and negative latencies from skewed clocks) are recorded as 0.
    """
    from hub.sketch import LogHistogram  # numba import: only when converting

    k = np.asarray(keys, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    if k.shape != c.shape or k.ndim != 1:
        raise ValueError(f"keys and counts must be 1-D of equal length, got {k.shape}, "
                         f"{c.shape}")
    reps = LogHistogram(alpha, 1, min_value, max_value).representatives
    if k.size and (int(k.min()) < 0 or int(k.max()) >= len(reps)):
        raise ValueError(f"bucket keys must be in [0, {len(reps)}) for alpha={alpha}, "
                         f"range [{min_value}, {max_value}]; got [{k.min()}, {k.max()}]")
    if c.size and int(c.min()) < 0:
        raise ValueError("bucket counts must be >= 0")
    h = new_latency_histogram()
    hdr_record_many(h, np.rint(reps[k] * 1e6), c)
    return h


def stage_histogram(latency_hist: Mapping[str, Any], stage: str) -> HdrHistogram:
    """``hdr_from_log_histogram`` of one stage of a hub's ``snap["latency_hist"]``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if latency_hist.get("unit", "s") != "s":
        raise ValueError(f"expected latencies in seconds, got unit {latency_hist['unit']!r}")
    part = latency_hist.get(stage) or {"keys": [], "counts": []}
    return hdr_from_log_histogram(part["keys"], part["counts"], latency_hist["alpha"],
                                  latency_hist["min_value"], latency_hist["max_value"])


def _layout(h: Mapping[str, Any]) -> tuple[float, float, float]:
    return float(h["alpha"]), float(h["min_value"]), float(h["max_value"])


def _as_dict(part: Mapping[str, Any] | None) -> dict[int, int]:
    if not part:
        return {}
    out: dict[int, int] = {}
    for k, c in zip(part["keys"], part["counts"], strict=True):
        out[int(k)] = out.get(int(k), 0) + int(c)
    return out


def _as_sparse(d: Mapping[int, int]) -> dict[str, list[int]]:
    keys = sorted(k for k, c in d.items() if c)
    return {"keys": keys, "counts": [d[k] for k in keys]}


def diff_latency_hists(prev: Mapping[str, Any] | None,
                       cur: Mapping[str, Any]) -> dict[str, Any]:
    """What ``cur`` (a cumulative ``latency_hist``) counted since ``prev``. If a bucket went
    down (the hub restarted and counts from zero) that stage answers ``cur`` as it is;
    ``prev=None`` also gives ``cur``."""
    out: dict[str, Any] = {k: cur[k] for k in ("alpha", "min_value", "max_value")}
    out["unit"] = "s"
    if prev is not None and _layout(prev) != _layout(cur):
        raise ValueError(f"layouts differ: {_layout(prev)} vs {_layout(cur)}")
    for stage in STAGES:
        now = _as_dict(cur.get(stage))
        before = _as_dict(prev.get(stage)) if prev is not None else {}
        delta = {k: c - before.get(k, 0) for k, c in now.items()}
        restarted = any(v < 0 for v in delta.values()) or any(k not in now for k in before)
        out[stage] = _as_sparse(now if restarted else delta)
    return out


def percentiles(h: HdrHistogram) -> dict[str, float | int | None]:
    """p50, p95, p99, p99_9 and max in **seconds** (None when empty) and ``count``, from a
    histogram in microseconds. HDR answers each with its bucket's highest equivalent value
    (at most 0.1 % above the true one)."""
    n = int(h.get_total_count())
    out: dict[str, float | int | None] = {"count": n}
    for name, q in _QUANTILES:
        out[name] = h.get_value_at_percentile(q) / 1e6 if n else None
    out["max"] = h.get_max_value() / 1e6 if n else None
    return out


# -- loss and duplication -------------------------------------------------------------------

@dataclass(frozen=True)
class LossSummary:
    """Per-device accounting: what was published against what landed."""

    published: int
    stored: int
    lost: int                     # sum over devices of max(0, published - stored)
    duplicated: int               # sum over devices of max(0, stored - published)
    devices_with_loss: int
    devices_with_duplicates: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def loss_and_duplication(published: Mapping[str, int],
                         stored: Mapping[str, int]) -> LossSummary:
    """Compare per-device published and stored reading counts (device id -> count).

    Devices missing on one side count 0 there. A device that lost some readings and had
    others stored twice nets out: per-device counts cannot tell them apart, so ``lost`` and
    ``duplicated`` are lower bounds when both happen to one device.
    """
    ids = published.keys() | stored.keys()
    lost = dup = n_lost = n_dup = 0
    for d in ids:
        diff = int(published.get(d, 0)) - int(stored.get(d, 0))
        if diff > 0:
            lost += diff
            n_lost += 1
        elif diff < 0:
            dup -= diff
            n_dup += 1
    return LossSummary(sum(int(v) for v in published.values()),
                       sum(int(v) for v in stored.values()), lost, dup, n_lost, n_dup)


# -- timeline -------------------------------------------------------------------------------

def timeline_from_samples(sent_by_second: Sequence[int] | np.ndarray,
                          samples: Sequence[tuple[float, Mapping[str, Any]]]
                          ) -> list[dict[str, float | None]]:
    """Rows for ``plot``: one per interval between consecutive hub samples.

    ``sent_by_second[s]``: readings the generator published in second ``s`` after the
    start; ``samples``: ``(t_s, snapshot)`` taken by the caller (``t_s`` seconds since the
    start, increasing), each a hub stats snapshot with the cumulative counters
    ``aggregated_readings``, ``stored_raw`` and optionally ``latency_hist``.
    Several hubs: sum their counters and ``merge_latency_hists`` before passing them.
    """
    sent = np.asarray(sent_by_second, dtype=np.float64)
    rows: list[dict[str, float | None]] = []
    for (t0, s0), (t1, s1) in itertools.pairwise(samples):
        dt = t1 - t0
        if dt <= 0:
            continue
        lo, hi = max(0, math.floor(t0)), max(0, math.floor(t1))
        row: dict[str, float | None] = {
            "t_s": t1,
            "published_per_s": float(sent[lo:hi].sum()) / max(1, hi - lo) if hi > lo else None,
            "aggregated_per_s": _rate(s0, s1, "aggregated_readings", dt),
            "stored_per_s": _rate(s0, s1, "stored_raw", dt)}
        if "latency_hist" in s1:
            d = diff_latency_hists(s0.get("latency_hist"), s1["latency_hist"])
            for stage in STAGES:
                p = percentiles(stage_histogram(d, stage))
                row[f"{stage}_p50_s"] = _f(p["p50"])
                row[f"{stage}_p99_s"] = _f(p["p99"])
        rows.append(row)
    return rows


def _rate(a: Mapping[str, Any], b: Mapping[str, Any], key: str, dt: float) -> float | None:
    if key not in a or key not in b:
        return None
    return max(0.0, (float(b[key]) - float(a[key])) / dt)


def _f(x: float | int | None) -> float | None:
    return None if x is None else float(x)


# -- files ----------------------------------------------------------------------------------

def _jsonable(x: Any) -> Any:
    """numpy scalars and arrays, tuples and dataclass-free dicts to JSON types."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_report(path: Path | str, report: Mapping[str, Any]) -> None:
    """Write ``report`` as indented JSON, atomically (write + rename), with a ``machine``
    description (``citybrain.machine.describe()``) unless the report has one."""
    from citybrain.machine import describe as machine  # imports numba: only when writing

    doc = _jsonable(dict(report))
    doc.setdefault("machine", machine())
    write_json_atomic(Path(path), doc)


def plot(path_png: Path | str, timeline: Sequence[Mapping[str, float | None]],
         title: str = "citybrain load test") -> None:
    """A PNG with two panels over ``t_s``: readings/s (published, aggregated, stored) and
    latency p50/p99 (aggregated and stored stages, log scale). Missing series are skipped.
    ``timeline``: rows as ``timeline_from_samples`` returns."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    t = [float(r["t_s"] or 0.0) for r in timeline]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                      constrained_layout=True)
    try:
        for key, label, color in (("published_per_s", "published", "C0"),
                                  ("aggregated_per_s", "aggregated", "C1"),
                                  ("stored_per_s", "stored in InfluxDB", "C2")):
            _line(top, t, timeline, key, label, 1.0, color)
        top.set_ylim(bottom=0)
        top.set_ylabel("readings/s")
        top.set_title(title)
        any_latency = False
        for stage, color in zip(STAGES, ("C1", "C2"), strict=True):  # colours as above
            for q, style in (("p50", "-"), ("p99", "--")):
                any_latency |= _line(bottom, t, timeline, f"{stage}_{q}_s",
                                     f"{stage} {q}", 1e3, color, style)
        if any_latency:
            bottom.set_yscale("log")
        bottom.set_ylabel("latency from device time (ms)")
        bottom.set_xlabel("seconds since start")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper left", fontsize="small")
        fig.savefig(Path(path_png), dpi=100)
    finally:
        plt.close(fig)


def _line(ax: Any, t: list[float], rows: Sequence[Mapping[str, float | None]], key: str,
          label: str, scale: float, color: str, style: str = "-") -> bool:
    """Plot ``rows[key] * scale`` against ``t`` (gaps where missing); False if all missing."""
    y = [float(v) * scale if (v := r.get(key)) is not None else math.nan for r in rows]
    if all(math.isnan(v) for v in y):
        return False
    ax.plot(t, y, style, label=label, color=color)
    return True
