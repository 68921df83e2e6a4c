"""Slow, obvious references for the hub's numba kernels (stumpy's ``naive.py`` idea).

Everything here is plain Python or plain numpy, written for clarity, not speed: tests compare
each kernel with its reference on random data. Nothing here is imported by production code.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------

#: Column order of a window row (same names as ``hub.window.WindowBatch``).
WINDOW_COLUMNS = ("series", "window_start_ns", "count", "sum", "mean", "m2", "min", "max",
                  "first", "first_ts", "last", "last_ts")

Row = dict[str, Any]


def window_rows(series: Sequence[int], ts_ns: Sequence[int], value: Sequence[float],
                window_ns: int) -> dict[tuple[int, int], Row]:
    """Aggregate readings per (series, window_start_ns) with Python loops.

    NaN values are ignored entirely (a group of only NaN has no row). ``first``/``last`` are
    the values at the smallest/largest timestamp; ties go to the earliest-added for first,
    the latest-added for last. ``m2`` is computed two-pass from the exact (``fsum``) mean.
    """
    groups: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for s, t, v in zip(series, ts_ns, value, strict=True):
        if math.isnan(v):
            continue
        start = (int(t) // window_ns) * window_ns  # Python floor division
        groups.setdefault((int(s), start), []).append((int(t), float(v)))
    out: dict[tuple[int, int], Row] = {}
    for (s, start), items in groups.items():
        vals = [v for _, v in items]
        n = len(vals)
        total = math.fsum(vals)
        mean = total / n
        m2 = math.fsum((v - mean) ** 2 for v in vals)
        first_t, first_v = items[0]
        last_t, last_v = items[0]
        for t, v in items[1:]:
            if t < first_t:
                first_t, first_v = t, v
            if t >= last_t:
                last_t, last_v = t, v
        out[(s, start)] = {"series": s, "window_start_ns": start, "count": n, "sum": total,
                           "mean": mean, "m2": m2, "min": min(vals), "max": max(vals),
                           "first": first_v, "first_ts": first_t, "last": last_v,
                           "last_ts": last_t}
    return out


def batch_rows(batch: Any) -> dict[tuple[int, int], Row]:
    """A ``WindowBatch`` as ``{(series, window_start_ns): row}`` (asserting keys are unique)."""
    cols = {c: getattr(batch, c).tolist() for c in WINDOW_COLUMNS}
    out: dict[tuple[int, int], Row] = {}
    for i in range(len(cols["series"])):
        row = {c: cols[c][i] for c in WINDOW_COLUMNS}
        key = (row["series"], row["window_start_ns"])
        assert key not in out, f"duplicate row for {key}"
        out[key] = row
    return out


def assert_rows_match(got: dict[tuple[int, int], Row], want: dict[tuple[int, int], Row],
                      rtol: float = 1e-12) -> None:
    """Exact for count/min/max/first/last and their timestamps; close for sum/mean/m2.

    Tolerances are rounding-error bounds of any summation order, not fudge factors: with
    ``n`` values of magnitude at most ``a`` and ``eps`` the float64 epsilon, a sum is off by
    at most ``n^2 eps a``; a one-pass M2 (Welford/Chan) by about ``n^2 eps a`` per unit of
    standard deviation. A wrong formula misses these by orders of magnitude.
    """
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))[:10]
    eps = float(np.finfo(np.float64).eps)
    for key, w in want.items():
        g = got[key]
        for c in ("series", "window_start_ns", "count", "first_ts", "last_ts"):
            assert g[c] == w[c], (key, c, g[c], w[c])
        for c in ("min", "max", "first", "last"):
            assert g[c] == w[c] or (math.isnan(g[c]) and math.isnan(w[c])), (key, c, g, w)
        n = w["count"]
        a = max(abs(w["min"]), abs(w["max"]))
        if not math.isfinite(a):
            continue
        sum_tol = 4 * n * n * eps * a + rtol * abs(w["sum"])
        assert abs(g["sum"] - w["sum"]) <= sum_tol, (key, "sum", g["sum"], w["sum"], sum_tol)
        mean_tol = sum_tol / n + 4 * eps * a
        assert abs(g["mean"] - w["mean"]) <= mean_tol, (key, "mean", g["mean"], w["mean"])
        std = math.sqrt(w["m2"] / n)
        # Values near 1e-158 square into subnormals (below 2**-1022), where floats keep no
        # relative precision: allow an absolute error of n smallest-normal units there.
        m2_tol = (64 * n * n * eps * a * (std + n * eps * a) + rtol * w["m2"]
                  + n * sys.float_info.min)
        assert abs(g["m2"] - w["m2"]) <= m2_tol, (key, "m2", g["m2"], w["m2"], m2_tol)


def numpy_window_aggregate(series: np.ndarray, ts_ns: np.ndarray, value: np.ndarray,
                           window_ns: int) -> dict[str, np.ndarray]:
    """The same aggregates vectorised with numpy only (lexsort + ``np.*.reduceat``/``at``).

    This is the baseline the kernels are benchmarked against: no Python per reading, but a
    sort of every reading and one pass per statistic.
    """
    keep = ~np.isnan(value)
    s, t, v = series[keep], ts_ns[keep], value[keep]
    w = t // window_ns
    order = np.lexsort((t, s, w))  # by window, series, then time (stable: added order)
    s, t, v, w = s[order], t[order], v[order], w[order]
    brk = np.r_[True, (s[1:] != s[:-1]) | (w[1:] != w[:-1])]
    starts = np.flatnonzero(brk)
    ends = np.r_[starts[1:], len(s)] - 1
    count = np.diff(np.r_[starts, len(s)])
    total = np.add.reduceat(v, starts)
    mean = total / count
    grp = np.cumsum(brk) - 1
    dev = v - mean[grp]
    m2 = np.zeros(len(starts))
    np.add.at(m2, grp, dev * dev)
    # first: the first reading of the group's smallest timestamp (sorted by t, stable);
    # last: the last reading of its largest timestamp.
    return {"series": s[starts], "window_start_ns": w[starts] * window_ns, "count": count,
            "sum": total, "mean": mean, "m2": m2,
            "min": np.minimum.reduceat(v, starts), "max": np.maximum.reduceat(v, starts),
            "first": v[starts], "first_ts": t[starts], "last": v[ends], "last_ts": t[ends]}


@dataclass
class NaiveRing:
    """The ``WindowAggregator`` contract written as plainly as possible: open windows are a
    dict of reading lists; closing aggregates them with ``window_rows``."""

    window_ns: int
    n_slots: int
    open: dict[int, list[tuple[int, int, float]]] = field(default_factory=dict)
    newest: int | None = None
    floor: int | None = None

    def _close_below(self, limit: int) -> dict[tuple[int, int], Row]:
        rows: dict[tuple[int, int], Row] = {}
        for w in sorted(k for k in self.open if k < limit):
            items = self.open.pop(w)
            rows.update(window_rows([x[0] for x in items], [x[1] for x in items],
                                    [x[2] for x in items], self.window_ns))
        return rows

    def add(self, series: Sequence[int], ts_ns: Sequence[int], value: Sequence[float],
            max_window: int | None = None) -> dict[str, Any]:
        """One reading at a time, in order: invalid, early, ring advance, late, NaN, added."""
        closed: dict[tuple[int, int], Row] = {}
        late, early, invalid = [], [], []
        n_added = n_nan = 0
        for i, t in enumerate(ts_ns):
            t = int(t)
            w = t // self.window_ns
            if t == -(2**63) or (w + 1) * self.window_ns - 1 > 2**63 - 1:
                invalid.append(i)
                continue
            if max_window is not None and w > max_window:
                early.append(i)
                continue
            if self.newest is None or w > self.newest:
                self.newest = w
                ring_floor = w - self.n_slots + 1
                self.floor = ring_floor if self.floor is None else max(self.floor, ring_floor)
                closed.update(self._close_below(self.floor))
            assert self.floor is not None
            if w < self.floor:
                late.append(i)
            elif int(series[i]) < 0:
                invalid.append(i)
            elif math.isnan(value[i]):
                n_nan += 1
            else:
                self.open.setdefault(w, []).append((int(series[i]), t, float(value[i])))
                n_added += 1
        return {"n_added": n_added, "n_nan": n_nan, "late_idx": late, "early_idx": early,
                "invalid_idx": invalid, "closed": closed}

    def close_until(self, watermark_ns: int) -> dict[tuple[int, int], Row]:
        limit = watermark_ns // self.window_ns
        self.floor = limit if self.floor is None else max(self.floor, limit)
        return self._close_below(limit)

    def close_all(self) -> dict[tuple[int, int], Row]:
        if self.newest is None:
            return {}
        limit = self.newest + 1
        self.floor = limit if self.floor is None else max(self.floor, limit)
        return self._close_below(limit)


# --------------------------------------------------------------------------------------------
# Line protocol
# --------------------------------------------------------------------------------------------


def format_float(v: float) -> str | None:
    """The line-protocol text of a float field value (None for NaN/inf: not writable).

    |v| < 1e9: ``f"{v:.9f}"`` (correctly rounded, ties to even) with trailing zeros trimmed,
    keeping one digit after the point; 1e9 <= |v| < 9.2e18: ``round(v)`` then ``.0``; larger:
    ``f"{v:.14e}"`` (15 significant digits) with mantissa zeros trimmed, capped at
    ``1.79769313486231e+308`` (the kernel scales in floating point and may differ in the last
    digit: compare with a relative tolerance of 2e-14 there). Anything that
    rounds to zero is ``0.0`` (never ``-0.0``).
    """
    if not math.isfinite(v):
        return None
    a = abs(v)
    if a < 1e9:
        s = f"{v:.9f}".rstrip("0")
        if s.endswith("."):
            s += "0"
        return "0.0" if float(s) == 0.0 else s
    if a < 9.2e18:
        return f"{round(v)}.0"
    text = f"{v:.14e}"
    if math.isinf(float(text)):
        text = f"{math.copysign(1.79769313486231, v):.14f}e+308"
    mant, exp = text.split("e")
    mant = mant.rstrip("0")
    if mant.endswith("."):
        mant += "0"
    return f"{mant}e{exp}"


def format_int(v: float) -> str | None:
    """Integer field text: ``int(v)`` (truncation) + ``i``; None if not finite or outside
    int64."""
    if not math.isfinite(v) or not (-(2.0**63) <= v < 2.0**63):
        return None
    return f"{int(v)}i"


def render_single(prefixes: Sequence[bytes], idx: Sequence[int], value: Sequence[float],
                  ts_ns: Sequence[int]) -> tuple[bytes, int]:
    """One line per row with a finite value: ``prefix + value + " " + ts + "\\n"``."""
    out = []
    for i, v, t in zip(idx, value, ts_ns, strict=True):
        text = format_float(float(v))
        if text is not None:
            out.append(prefixes[int(i)] + f"{text} {int(t)}\n".encode())
    return b"".join(out), len(out)


def render_multi(prefixes: Sequence[bytes], idx: Sequence[int], escaped_keys: Sequence[str],
                 values: np.ndarray, is_int: Sequence[bool],
                 ts_ns: Sequence[int], escaped_int64_keys: Sequence[str] = (),
                 int64_values: Sequence[Sequence[int]] = ()) -> tuple[bytes, int]:
    """One line per row with at least one writable field: ``prefix + k=v,... ts``; the
    exact integer fields (``int64_values[r]``: Python ints) last, always, as ``k=<int>i``."""
    out = []
    for r, (i, t) in enumerate(zip(idx, ts_ns, strict=True)):
        parts = []
        for j, key in enumerate(escaped_keys):
            v = float(values[r, j])
            text = format_int(v) if is_int[j] else format_float(v)
            if text is not None:
                parts.append(f"{key}={text}")
        for j, key in enumerate(escaped_int64_keys):
            parts.append(f"{key}={int(int64_values[r][j])}i")
        if parts:
            out.append(prefixes[int(i)] + f"{','.join(parts)} {int(t)}\n".encode())
    return b"".join(out), len(out)


@dataclass
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | str | bool]
    ts: int | None


class LineParseError(ValueError):
    pass


def _scan(text: str, i: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read from ``i`` up to an unescaped char of ``stops``. ``\\`` followed by a char of
    ``escapable`` stands for that char; any other backslash is literal."""
    out = []
    while i < len(text) and text[i] not in stops:
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in escapable:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out), i


def _field_value(tok: str) -> float | int | bool:
    if tok.endswith("i"):
        return int(tok[:-1])
    if tok in ("t", "T", "true", "True", "TRUE"):
        return True
    if tok in ("f", "F", "false", "False", "FALSE"):
        return False
    if not tok or any(c not in "0123456789.-+eE" for c in tok):
        raise LineParseError(f"bad number {tok!r}")
    return float(tok)


def parse_lines(data: bytes) -> list[Point]:
    """Parse line protocol by the documented escaping rules (strict: raises on malformed).

    measurement: ``\\,`` and ``\\ `` are escapes; tag keys/values and field keys: ``\\,``,
    ``\\=``, ``\\ ``; string field values: ``\\"`` and ``\\\\``. Other backslashes are literal.
    """
    points = []
    for raw in data.split(b"\n"):
        if not raw or raw.startswith(b"#"):
            continue
        text = raw.decode("utf-8")
        meas, i = _scan(text, 0, ", ", ", ")
        if not meas:
            raise LineParseError(f"missing measurement: {text!r}")
        tags: dict[str, str] = {}
        while i < len(text) and text[i] == ",":
            key, i = _scan(text, i + 1, ",= ", ",= ")
            if i >= len(text) or text[i] != "=" or not key:
                raise LineParseError(f"bad tag key in {text!r}")
            val, i = _scan(text, i + 1, ",= ", ",= ")
            if not val or (i < len(text) and text[i] == "="):
                raise LineParseError(f"bad tag value in {text!r}")
            if key in tags:
                raise LineParseError(f"duplicate tag {key!r}")
            tags[key] = val
        if i >= len(text) or text[i] != " ":
            raise LineParseError(f"missing fields: {text!r}")
        fields: dict[str, float | int | str | bool] = {}
        i += 1
        while True:
            key, i = _scan(text, i, ",= ", ",= ")
            if i >= len(text) or text[i] != "=" or not key:
                raise LineParseError(f"bad field key in {text!r}")
            i += 1
            if i < len(text) and text[i] == '"':
                i += 1
                chars = []
                while i < len(text) and text[i] != '"':
                    if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
                        i += 1
                    chars.append(text[i])
                    i += 1
                if i >= len(text):
                    raise LineParseError(f"unterminated string in {text!r}")
                i += 1
                fields[key] = "".join(chars)
            else:
                j = i
                while j < len(text) and text[j] not in ", ":
                    j += 1
                fields[key] = _field_value(text[i:j])
                i = j
            if i < len(text) and text[i] == ",":
                i += 1
                continue
            break
        ts: int | None = None
        if i < len(text):
            if text[i] != " ":
                raise LineParseError(f"garbage after fields in {text!r}")
            tok = text[i + 1:]
            if not tok or not tok.lstrip("-").isdigit():
                raise LineParseError(f"bad timestamp {tok!r}")
            ts = int(tok)
        points.append(Point(meas, tags, fields, ts))
    return points
