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
    """The same aggregation as a pandas groupby, written for speed as a careful data engineer
    would: one int64 group key per (series, window) instead of two key columns (pandas then
    factorizes one column instead of two plus their combination), and the input arrays
    wrapped, not copied, into the DataFrame. Measured ~15-20 % faster than the two-column
    form (``pandas_window_aggregate_two_keys``) on the bench data. Returns the aggregates and
    the decoded (series, window index) of each row, like the kernel's output.
    """
    import pandas as pd
    window = ts_ns // window_ns
    w0 = int(window.min())
    n_windows = int(window.max()) - w0 + 1
    if (int(series.max()) + 1) * n_windows >= 2**62:  # key would overflow: two columns
        return pandas_window_aggregate_two_keys(series, ts_ns, value, window_ns)
    key = series * n_windows + (window - w0)
    df = pd.DataFrame({"key": key, "value": value}, copy=False)
    out = df.groupby("key", sort=False)["value"].agg(["count", "sum", "min", "max", "mean",
                                                      "last"])
    k = out.index.to_numpy()
    return out.assign(series=k // n_windows, window=k % n_windows + w0)


def pandas_window_aggregate_two_keys(series: np.ndarray, ts_ns: np.ndarray,
                                     value: np.ndarray, window_ns: int) -> object:
    """The same aggregation as the textbook pandas groupby on two key columns."""
    import pandas as pd
    df = pd.DataFrame({"series": series, "window": ts_ns // window_ns, "value": value})
    return df.groupby(["series", "window"], sort=False)["value"].agg(
        ["count", "sum", "min", "max", "mean", "last"])
