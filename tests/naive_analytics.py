"""Slow, obvious references for the hub's analytics kernels (sketch, anomaly, water, noise,
parking, kitchen) -- stumpy's ``naive.py`` idea, like ``tests/naive.py`` for windows.

Plain Python (dicts, lists, ``math``, ``datetime``, ``np.median``), written for clarity; tests
compare each kernel with its reference on random data. Nothing here is imported by production
code. Each reference restates the contract of its module docstring in the most direct form.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import numpy as np

NS = 1_000_000_000
DAY_NS = 86_400 * NS
NO_TS = -(2**63)

# --------------------------------------------------------------------------------------------
# Percentile sketch
# --------------------------------------------------------------------------------------------


def sketch_layout(alpha: float, min_value: float, max_value: float) -> tuple[float, int, int]:
    """``(1 / ln gamma, k_min, k_max)``."""
    gamma = (1 + alpha) / (1 - alpha)
    inv = 1 / math.log(gamma)
    return inv, math.ceil(math.log(min_value) * inv), math.ceil(math.log(max_value) * inv)


def sketch_bucket(x: float, alpha: float, min_value: float, max_value: float) -> int:
    """Index (in value order) of the bucket of a non-NaN ``x``."""
    inv, k_min, k_max = sketch_layout(alpha, min_value, max_value)
    n_keys = k_max - k_min + 1
    a = abs(x)
    if a < min_value:
        return n_keys  # the zero bucket
    key = k_max if a > max_value else min(max(math.ceil(math.log(a) * inv), k_min), k_max)
    return n_keys + 1 + (key - k_min) if x > 0 else n_keys - 1 - (key - k_min)


def sketch_counts(group: Sequence[int], value: Sequence[float], n_groups: int, alpha: float,
                  min_value: float, max_value: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(counts, min, max)`` of the sketch of these readings, one reading at a time."""
    _, k_min, k_max = sketch_layout(alpha, min_value, max_value)
    counts = np.zeros((n_groups, 2 * (k_max - k_min + 1) + 1), dtype=np.int64)
    vmin = [math.inf] * n_groups
    vmax = [-math.inf] * n_groups
    for g, v in zip(group, value, strict=True):
        if math.isnan(v):
            continue
        counts[g, sketch_bucket(v, alpha, min_value, max_value)] += 1
        vmin[g] = min(vmin[g], v)
        vmax[g] = max(vmax[g], v)
    return counts, np.array(vmin), np.array(vmax)


def inverted_cdf(values: Sequence[float], q: float) -> float:
    """The value of rank ``max(1, ceil(q * n))`` of the sorted values (1-based)."""
    s = sorted(values)
    n = len(s)
    r = min(max(1, math.ceil(q * float(n))), n)
    return s[r - 1]


# --------------------------------------------------------------------------------------------
# Anomaly detectors
# --------------------------------------------------------------------------------------------


@dataclass
class NaiveStuck:
    min_count: int
    min_ns: int
    tolerance: float = 0.0
    runs: dict[int, list[Any]] = field(default_factory=dict)  # series -> [anchor, count, t0]

    def update(self, series: Sequence[int], ts: Sequence[int], value: Sequence[float]
               ) -> list[tuple[bool, int, int]]:
        """Per reading: (flag, run_count, run_ns); NaN -> (False, 0, 0)."""
        out = []
        for s, t, v in zip(series, ts, value, strict=True):
            if math.isnan(v):
                out.append((False, 0, 0))
                continue
            run = self.runs.get(s)
            if run is not None and (v == run[0] or abs(v - run[0]) <= self.tolerance):
                run[1] += 1
            else:
                run = [v, 1, t]
                self.runs[s] = run
            d = t - run[2]
            out.append((run[1] >= self.min_count and d >= self.min_ns, run[1], d))
        return out


def median_mad(xs: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=np.float64)
    med = float(np.median(a))
    return med, float(np.median(np.abs(a - med)))


@dataclass
class NaiveSpike:
    window: int
    k: float
    min_periods: int
    abs_floor: float = 0.0
    hist: dict[int, deque[float]] = field(default_factory=dict)
    floors: dict[int, float] = field(default_factory=dict)  # per series: set_floor

    def update(self, series: Sequence[int], value: Sequence[float]
               ) -> list[tuple[bool, float, float, float]]:
        """Per reading: (flag, score, median, mad), NaN for unscored readings."""
        out = []
        kc = self.k * 1.4826
        for s, v in zip(series, value, strict=True):
            if not math.isfinite(v):
                out.append((False, math.nan, math.nan, math.nan))
                continue
            h = self.hist.setdefault(s, deque(maxlen=self.window))
            if len(h) >= self.min_periods:
                med, mad = median_mad(list(h))
                dev = abs(v - med)
                if mad > 0:
                    out.append((dev > kc * mad, dev / (1.4826 * mad), med, mad))
                else:
                    floor = self.floors.get(s, self.abs_floor)
                    out.append((dev > floor, math.inf if dev > 0 else 0.0, med, mad))
            else:
                out.append((False, math.nan, math.nan, math.nan))
            h.append(float32_kept(v))
        return out


def float32_kept(v: float) -> float:
    """A spike history keeps float32 values: ``v`` clamped to the finite float32 range, then
    rounded to float32."""
    big = float(np.finfo(np.float32).max)
    return float(np.float32(min(max(v, -big), big)))


def naive_peer(group: Sequence[int], value: Sequence[float], k: float, min_group_size: int,
               abs_floor: float) -> tuple[list[tuple[bool, bool, float]],
                                          dict[int, tuple[float, float, int]]]:
    """Per row (scored, exceed, score) and per group (median, mad, n finite)."""
    members: dict[int, list[float]] = defaultdict(list)
    for g, v in zip(group, value, strict=True):
        if math.isfinite(v):
            members[g].append(v)
    stats = {g: (*median_mad(vs), len(vs)) for g, vs in members.items()}
    rows = []
    kc = k * 1.4826
    for g, v in zip(group, value, strict=True):
        if not math.isfinite(v) or len(members.get(g, [])) < min_group_size:
            rows.append((False, False, math.nan))
            continue
        med, mad, _ = stats[g]
        d = v - med
        if mad > 0:
            rows.append((True, abs(d) > kc * mad, d / (1.4826 * mad)))
        else:
            score = 0.0 if d == 0 else math.copysign(math.inf, d)
            rows.append((True, abs(d) > abs_floor, score))
    return rows, stats


def naive_pooled_log(group: Sequence[int], value: Sequence[float], k: float,
                     min_group_size: int, min_pooled: int, history: Sequence[float] = ()
                     ) -> list[tuple[bool, bool, float]]:
    """Per row (scored, exceed, score) of ``anomaly.pooled_log_scores``, from its
    definition: log ratios to the group's median of log values, one spread pooled over
    the window's deviations and ``history``'s."""
    members: dict[int, list[float]] = defaultdict(list)
    for g, v in zip(group, value, strict=True):
        if math.isfinite(v) and v > 0:
            members[g].append(math.log(v))
    med = {g: float(np.median(vs)) for g, vs in members.items()}
    d: list[float | None] = []
    for g, v in zip(group, value, strict=True):
        ok = math.isfinite(v) and v > 0 and len(members.get(g, [])) >= min_group_size
        d.append(math.log(v) - med[g] if ok else None)
    devs = [*history, *(abs(x) for x in d if x is not None)]
    if len(devs) < min_pooled:
        return [(False, False, math.nan) for _ in d]
    scale = 1.4826 * float(np.median(devs))
    rows = []
    for x in d:
        if x is None:
            rows.append((False, False, math.nan))
        elif scale > 0:
            rows.append((True, abs(x) > k * scale, x / scale))
        else:
            rows.append((True, False, math.nan if x == 0 else math.copysign(math.inf, x)))
    return rows


@dataclass
class NaiveDrift:
    k: float
    min_windows: int
    min_group_size: int
    abs_floor: float = 0.0
    counter: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def update(self, station: Sequence[int], group: Sequence[int], value: Sequence[float]
               ) -> list[tuple[bool, int, float]]:
        """Per row: (flag, consecutive, score)."""
        rows, _ = naive_peer(group, value, self.k, self.min_group_size, self.abs_floor)
        out = []
        for s, (scored, exceed, score) in zip(station, rows, strict=True):
            if scored:
                self.counter[s] = self.counter[s] + 1 if exceed else 0
            flag = scored and exceed and self.counter[s] >= self.min_windows
            out.append((flag, self.counter[s], score))
        return out


# --------------------------------------------------------------------------------------------
# Water (GB 3838-2002)
# --------------------------------------------------------------------------------------------


def naive_water(ph: float, do: float, codmn: float, nh3n: float, tp: float, lake: bool
                ) -> tuple[int, list[str], list[int]]:
    """(class 0..6, deciding parameter names, per-parameter classes), from the table."""

    def le(x: float, limits: tuple[float, ...]) -> int:
        if math.isnan(x) or x < 0:
            return 0
        for cls, lim in enumerate(limits, start=1):
            if x <= lim:
                return cls
        return 6

    c_ph = 0 if math.isnan(ph) or ph < 0 else (1 if 6 <= ph <= 9 else 6)
    if math.isnan(do) or do < 0:
        c_do = 0
    elif do >= 7.5:
        c_do = 1
    elif do >= 6:
        c_do = 2
    elif do >= 5:
        c_do = 3
    elif do >= 3:
        c_do = 4
    elif do >= 2:
        c_do = 5
    else:
        c_do = 6
    classes = {"ph": c_ph, "do": c_do,
               "codmn": le(codmn, (2, 4, 6, 10, 15)),
               "nh3n": le(nh3n, (0.15, 0.5, 1.0, 1.5, 2.0)),
               "tp": le(tp, (0.01, 0.025, 0.05, 0.1, 0.2) if lake else (0.02, 0.1, 0.2, 0.3,
                                                                            0.4))}
    worst = max(classes.values())
    deciding = [p for p, c in classes.items() if worst > 0 and c == worst]
    return worst, deciding, list(classes.values())


# --------------------------------------------------------------------------------------------
# Noise (GB 3096-2008)
# --------------------------------------------------------------------------------------------

NOISE_LIMITS = {"day": [50, 55, 60, 65, 70, 70], "night": [40, 45, 50, 55, 55, 60]}


def naive_noise(monitor: Sequence[int], ts: Sequence[int], laeq: Sequence[float],
                zone: Sequence[int], tz_hours: int = 8, day_start_h: int = 6,
                day_end_h: int = 22) -> list[tuple[str, float, float, int]]:
    """Per reading (period "day"/"night", limit, exceedance, noise day) via ``datetime``."""
    tz = timezone(timedelta(hours=tz_hours))
    out = []
    for m, t, v in zip(monitor, ts, laeq, strict=True):
        local = datetime.fromtimestamp(t // NS, tz=tz)
        secs = local.hour * 3600 + local.minute * 60 + local.second
        period = "day" if day_start_h * 3600 <= secs < day_end_h * 3600 else "night"
        shifted = (local - timedelta(hours=day_start_h)).date()
        noise_day = (shifted - date(1970, 1, 1)).days
        z = zone[m]
        if 0 <= z <= 5:
            lim = float(NOISE_LIMITS[period][z])
            out.append((period, lim, v - lim, noise_day))
        else:
            out.append((period, math.nan, math.nan, noise_day))
    return out


def naive_noise_daily(monitor: Sequence[int], rows: Sequence[tuple[str, float, float, int]]
                      ) -> dict[tuple[int, int], dict[str, Any]]:
    """``{(monitor, noise_day): {n_day, n_day_exceed, n_night, n_night_exceed, max_day,
    max_night}}`` over readings with a non-NaN exceedance."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for m, (period, _, exc, day) in zip(monitor, rows, strict=True):
        if math.isnan(exc):
            continue
        r = out.setdefault((m, day), {"n_day": 0, "n_day_exceed": 0, "n_night": 0,
                                      "n_night_exceed": 0, "max_day": math.nan,
                                      "max_night": math.nan})
        r[f"n_{period}"] += 1
        if exc > 0:
            r[f"n_{period}_exceed"] += 1
        key = f"max_{period}"
        if math.isnan(r[key]) or exc > r[key]:
            r[key] = exc
    return out


# --------------------------------------------------------------------------------------------
# Parking
# --------------------------------------------------------------------------------------------


@dataclass
class NaiveBays:
    heartbeat_interval_s: float = 3600.0
    stale_factor: float = 3.0
    low_v: float = 3.0
    critical_v: float = 2.9
    period_start: int | None = None
    state: dict[int, int] = field(default_factory=dict)
    state_ts: dict[int, int] = field(default_factory=dict)
    last_seen: dict[int, int] = field(default_factory=dict)
    since: dict[int, int | None] = field(default_factory=dict)
    sessions: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    dwells: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    battery: dict[int, tuple[int, float]] = field(default_factory=dict)

    def _seen(self, b: int, t: int) -> None:
        self.last_seen[b] = max(self.last_seen.get(b, t), t)

    def update(self, bay: Sequence[int], ts: Sequence[int], occ: Sequence[float]
               ) -> tuple[list[tuple[int, int, int, int]], dict[str, int]]:
        """Events (bay, ts, kind 1 arrival / 0 departure, dwell or -1) and counters."""
        events = []
        acc = {"n_applied": 0, "n_nan": 0, "n_invalid": 0, "n_late": 0}
        first_applied = None
        for b, t, v in zip(bay, ts, occ, strict=True):
            if math.isnan(v):
                acc["n_nan"] += 1
                continue
            if v not in (0.0, 1.0):
                acc["n_invalid"] += 1
                continue
            if b in self.state_ts and t < self.state_ts[b]:
                acc["n_late"] += 1
                continue
            acc["n_applied"] += 1
            first_applied = t if first_applied is None else min(first_applied, t)
            self.state_ts[b] = t
            self._seen(b, t)
            new = int(v)
            old = self.state.get(b)
            self.state[b] = new
            if old is None:
                self.since[b] = None
            elif old == 0 and new == 1:
                self.sessions[b] += 1
                self.since[b] = t
                events.append((b, t, 1, -1))
            elif old == 1 and new == 0:
                start = self.since.get(b)
                if start is None:
                    events.append((b, t, 0, -1))
                else:
                    self.dwells[b].append(t - start)
                    events.append((b, t, 0, t - start))
                self.since[b] = None
        if self.period_start is None and first_applied is not None:
            self.period_start = first_applied
        return events, acc

    def update_battery(self, bay: Sequence[int], ts: Sequence[int],
                       volts: Sequence[float]) -> None:
        for b, t, v in zip(bay, ts, volts, strict=True):
            if math.isnan(v):
                continue
            self._seen(b, t)
            if b not in self.battery or t >= self.battery[b][0]:
                self.battery[b] = (t, v)

    def reset_counters(self, start_ns: int) -> None:
        self.sessions.clear()
        self.dwells.clear()
        self.period_start = start_ns

    def snapshot(self, now: int, group_ids: Sequence[int]) -> dict[str, Any]:
        per_bay: list[dict[str, Any]] = []
        days = math.nan if self.period_start is None else (now - self.period_start) / DAY_NS
        for b in range(len(group_ids)):
            seen = self.last_seen.get(b)
            limit = self.stale_factor * self.heartbeat_interval_s * NS
            stale = seen is None or (now - seen) > limit
            volts = self.battery[b][1] if b in self.battery else math.nan
            if math.isnan(volts):
                status = 0
            elif volts >= self.low_v:
                status = 1
            elif volts >= self.critical_v:
                status = 2
            else:
                status = 3
            d = self.dwells.get(b, [])
            state = self.state.get(b, -1)
            start = self.since.get(b)
            per_bay.append({
                "state": state, "stale": stale, "battery_status": status,
                "sessions": self.sessions.get(b, 0),
                "dwell_mean_s": sum(d) / len(d) / NS if d else math.nan,
                "turnover_per_day": self.sessions.get(b, 0) / days if days > 0 else math.nan,
                "occupied_for_s": ((now - start) / NS if state == 1 and start is not None
                                   else math.nan),
                "dwells": d,
            })
        groups: dict[int, dict[str, Any]] = {}
        for b, g in enumerate(group_ids):
            if g < 0:
                continue
            r = groups.setdefault(g, {"n_bays": 0, "n_reporting": 0, "n_occupied": 0,
                                      "n_stale": 0, "n_low": 0, "n_critical": 0,
                                      "sessions": 0, "dwells": []})
            p = per_bay[b]
            r["n_bays"] += 1
            if p["state"] >= 0 and not p["stale"]:
                r["n_reporting"] += 1
                r["n_occupied"] += p["state"] == 1
            r["n_stale"] += p["stale"]
            r["n_low"] += p["battery_status"] == 2
            r["n_critical"] += p["battery_status"] == 3
            r["sessions"] += p["sessions"]
            r["dwells"] += p["dwells"]
        for r in groups.values():
            r["occupancy"] = (r["n_occupied"] / r["n_reporting"] if r["n_reporting"]
                              else math.nan)
            r["turnover"] = r["sessions"] / r["n_bays"] / days if days > 0 else math.nan
            r["dwell_mean_s"] = (sum(r["dwells"]) / len(r["dwells"]) / NS if r["dwells"]
                                 else math.nan)
        return {"bays": per_bay, "groups": groups, "days": days}


# --------------------------------------------------------------------------------------------
# Kitchen alarms
# --------------------------------------------------------------------------------------------

RAISED, ONGOING, CLEARED = 1, 2, 3
RANGE_RULE = {0: 0, 1: 1, 3: 2, 5: 3}  # measurement code -> alarm type
UV_CODE, AI_CODE = 6, 7
UV_ALARM = 4


@dataclass
class NaiveAlarm:
    raised: int
    last_emit: int
    peak: float
    peak_key: float
    last_val: float


@dataclass
class NaiveKitchen:
    """Dictionary model of ``hub.kitchen.KitchenAlarms`` (configuration as plain values)."""

    n_restaurants: int
    lo: dict[int, float]  # alarm type -> default lower bound
    hi: dict[int, float]
    min_dur: dict[int, int]  # alarm type -> ns
    ongoing_ns: int | None
    uv_min: float
    uv_cumulative: bool
    ai_max: Sequence[int]
    tz_ns: int = 8 * 3600 * NS
    clear_ns: int = 0  # threshold rules: compliant this long to clear (0: first reading)
    day: int | None = None
    overrides: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    open: dict[tuple[int, int], NaiveAlarm] = field(default_factory=dict)
    pending: dict[tuple[int, int], tuple[int, float, float]] = field(default_factory=dict)
    clear_pending: dict[tuple[int, int], int] = field(default_factory=dict)  # compliant since
    last_ts: dict[tuple[int, int], int] = field(default_factory=dict)
    uv: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    has_uv: set[int] = field(default_factory=set)
    ai: dict[tuple[int, int], int] = field(default_factory=lambda: defaultdict(int))

    def local_day(self, t: int) -> int:
        return (t + self.tz_ns) // DAY_NS

    def _range(self, r: int, a: int) -> tuple[float, float]:
        return self.overrides.get((r, a), (self.lo[a], self.hi[a]))

    def _ongoing_due(self, al: NaiveAlarm, t: int) -> bool:
        return self.ongoing_ns is not None and t - al.last_emit >= self.ongoing_ns

    def update(self, rows: Sequence[tuple[int, int, int, float]]
               ) -> tuple[list[tuple[Any, ...]], list[int]]:
        """rows of (restaurant, ts, code, value) -> (transitions, [applied, nan, invalid,
        late, ignored])."""
        out: list[tuple[Any, ...]] = []
        cnt = [0, 0, 0, 0, 0]
        if rows:
            self.n_restaurants = max(self.n_restaurants, max(r for r, *_ in rows) + 1)
        for r, t, code, v in rows:
            if self.day is None:
                self.day = self.local_day(t)
            if self.local_day(t) > self.day:
                out += self.close_day()
                self.day = self.local_day(t)
            if math.isnan(v):
                cnt[1] += 1
            elif code in RANGE_RULE:
                self._range_reading(r, t, RANGE_RULE[code], v, out, cnt)
            elif code == UV_CODE:
                if v < 0:
                    cnt[2] += 1
                elif self.local_day(t) < self.day:
                    cnt[3] += 1
                else:
                    cnt[0] += 1
                    self.has_uv.add(r)
                    self.uv[r] = max(self.uv[r], v) if self.uv_cumulative else self.uv[r] + v
            elif code == AI_CODE:
                if v not in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
                    cnt[2] += 1
                elif self.local_day(t) < self.day:
                    cnt[3] += 1
                else:
                    cnt[0] += 1
                    self._ai_event(r, t, int(v), out)
            else:
                cnt[4] += 1
        return out, cnt

    def _range_reading(self, r: int, t: int, a: int, v: float, out: list[tuple[Any, ...]],
                       cnt: list[int]) -> None:
        key = (r, a)
        if key in self.last_ts and t < self.last_ts[key]:
            cnt[3] += 1
            return
        cnt[0] += 1
        self.last_ts[key] = t
        lo, hi = self._range(r, a)
        al = self.open.get(key)
        if lo <= v <= hi:
            self.pending.pop(key, None)
            if al is not None:
                since = self.clear_pending.setdefault(key, t)
                if t - since >= self.clear_ns:
                    del self.open[key]
                    del self.clear_pending[key]
                    out.append((r, a, CLEARED, t, v, al.peak, al.raised))
            return
        exc = max(lo - v, v - hi)
        if al is not None:
            self.clear_pending.pop(key, None)
            al.last_val = v
            if exc > al.peak_key:
                al.peak, al.peak_key = v, exc
            if self._ongoing_due(al, t):
                al.last_emit = t
                out.append((r, a, ONGOING, t, v, al.peak, al.raised))
            return
        start, peak, peak_key = self.pending.get(key, (t, v, exc))
        if exc > peak_key:
            peak, peak_key = v, exc
        self.pending[key] = (start, peak, peak_key)
        if t - start >= self.min_dur[a]:
            self.open[key] = NaiveAlarm(t, t, peak, peak_key, v)
            out.append((r, a, RAISED, t, v, peak, t))

    def _ai_event(self, r: int, t: int, code: int, out: list[tuple[Any, ...]]) -> None:
        self.ai[(r, code)] += 1
        c = self.ai[(r, code)]
        if c <= self.ai_max[code - 1]:
            return
        a = 4 + code
        al = self.open.get((r, a))
        if al is None:
            self.open[(r, a)] = NaiveAlarm(t, t, float(c), float(c), float(c))
            out.append((r, a, RAISED, t, float(c), float(c), t))
            return
        al.peak = al.last_val = float(c)
        if self._ongoing_due(al, t):
            al.last_emit = t
            out.append((r, a, ONGOING, t, float(c), float(c), al.raised))

    def close_day(self) -> list[tuple[Any, ...]]:
        assert self.day is not None
        end = (self.day + 1) * DAY_NS - self.tz_ns
        out: list[tuple[Any, ...]] = []
        for r in range(self.n_restaurants):
            if r in self.has_uv:
                mins = self.uv[r]
                al = self.open.get((r, UV_ALARM))
                if mins < self.uv_min:
                    if al is None:
                        self.open[(r, UV_ALARM)] = NaiveAlarm(end, end, mins, 0.0, mins)
                        out.append((r, UV_ALARM, RAISED, end, mins, mins, end))
                    else:
                        al.peak = min(al.peak, mins)
                        al.last_emit = end
                        al.last_val = mins
                        out.append((r, UV_ALARM, ONGOING, end, mins, al.peak, al.raised))
                elif al is not None:
                    del self.open[(r, UV_ALARM)]
                    out.append((r, UV_ALARM, CLEARED, end, mins, al.peak, al.raised))
            self.uv[r] = 0.0
            for code in range(1, 7):
                al = self.open.pop((r, 4 + code), None)
                if al is not None:
                    out.append((r, 4 + code, CLEARED, end, float(self.ai[(r, code)]),
                                al.peak, al.raised))
                self.ai[(r, code)] = 0
        return out

    def day_end(self, now: int) -> list[tuple[Any, ...]]:
        if self.day is None:
            self.day = self.local_day(now)
            return []
        if now < (self.day + 1) * DAY_NS - self.tz_ns:
            return []
        out = self.close_day()
        self.day = self.local_day(now)
        return out


def utc_ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
           tz_hours: int = 8) -> int:
    """ns since the epoch of a local wall-clock time (default UTC+8)."""
    dt = datetime(year, month, day, hour, minute, tzinfo=timezone(timedelta(hours=tz_hours)))
    return int(dt.astimezone(UTC).timestamp()) * NS
