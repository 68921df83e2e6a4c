"""Plain numpy baselines, run on the same data as the kernels they are compared with."""

from __future__ import annotations

import numpy as np


def numpy_window_aggregate(series: np.ndarray, ts_ns: np.ndarray, value: np.ndarray,
                           window_ns: int) -> dict[str, np.ndarray]:
    """Tumbling-window count/sum/min/max/mean/last per (series, window) with numpy only.

    The idiomatic vectorised approach: one composite key, a stable sort, ``reduceat``.
    """
    window = ts_ns // window_ns
    key = series.astype(np.int64) * (int(window.max()) + 1 - int(window.min())) + (
        window - window.min())
    order = np.argsort(key, kind="stable")
    k = key[order]
    v = value[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    counts = np.diff(np.r_[starts, len(k)])
    sums = np.add.reduceat(v, starts)
    ts_sorted = ts_ns[order]
    # last by time within each group: lexsort puts the latest reading of a group at its end.
    order_t = np.lexsort((ts_sorted, k))
    ends = np.r_[starts[1:], len(k)] - 1
    return {"key": k[starts], "count": counts, "sum": sums,
            "min": np.minimum.reduceat(v, starts), "max": np.maximum.reduceat(v, starts),
            "mean": sums / counts, "last": v[order_t][ends]}


def pandas_window_aggregate(series: np.ndarray, ts_ns: np.ndarray, value: np.ndarray,
                            window_ns: int) -> object:
    """The same aggregation as a pandas groupby (what a data engineer would write)."""
    import pandas as pd
    df = pd.DataFrame({"series": series, "window": ts_ns // window_ns, "value": value})
    return df.groupby(["series", "window"], sort=False)["value"].agg(
        ["count", "sum", "min", "max", "mean", "last"])
