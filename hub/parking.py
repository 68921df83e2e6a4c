"""On-street bay sensors and lots: sessions, dwell, turnover, occupancy, sensor health.

Bays (``BayTracker``)
---------------------
Input: bay events ``(bay int64, ts_ns int64, occupied float64)`` -- arrivals, departures
and periodic heartbeats repeating the current state -- plus battery readings. Per bay the
tracker keeps the latest state (``STATE_UNKNOWN`` -1 until the first reading, ``0`` free,
``1`` occupied), the last time it was heard from, the session in progress and counters for
the current *counting period*.

Semantics (decided):

* ``occupied`` must be 0, 1 or NaN. NaN is a missing reading: ignored entirely (it does not
  even count as a sign of life -- gap fillers are NaN). Other values are *invalid*: ignored
  and counted.
* Readings of a bay must arrive in time order (equal timestamps are applied in batch
  order). A reading older than the bay's latest applied occupancy reading is *late*:
  ignored and counted (replaying it would invent or lose sessions).
* A session is a ``0 -> 1`` transition (an arrival); its dwell is the time to the next
  ``1 -> 0`` (the departure). A repeated state is a heartbeat: it only refreshes
  ``last_seen``. The first reading of a bay sets its state without a transition: a bay first
  seen occupied has a session in progress whose start is unknown, so its departure is
  reported with ``dwell_ns = -1`` and does not enter the mean dwell.
* ``sessions`` counts arrivals since the counting period started; ``dwell`` sums the dwell of
  departures since then (a session spanning a reset counts where it ends).
  ``turnover = sessions / bays / days of the period`` (design point: ~20 sessions per bay
  per day). The period starts at ``period_start_ns`` (constructor or ``reset_counters``), or
  at the first reading's timestamp if none was given.
* Battery (latest reading by timestamp; NaN ignored): ``BATTERY_NORMAL`` (1) at ``>=
  battery_low_v`` (3.0 V), ``BATTERY_LOW`` (2) in ``[battery_critical_v, battery_low_v)``
  (2.9-3.0 V), ``BATTERY_CRITICAL`` (3) below 2.9 V, ``BATTERY_UNKNOWN`` (0) without a
  reading.
* A bay is *stale* when it was never heard from or ``now - last_seen > stale_factor *
  heartbeat_interval_s`` (the heartbeat interval is a setting, default 1 h, unverified).
  Occupancy and battery readings both refresh ``last_seen`` to their device time, and
  ``heard`` to the hub's event clock when they arrived (the hub calls it for every batch):
  a sensor whose clock lags is not stale while it keeps reporting.
* Occupancy rate of a group (lot or district) = occupied bays / *reporting* bays, reporting =
  known state and not stale (a silent bay's last state is not evidence).

Ids grow: a bay id beyond ``n_bays`` extends the tracker (state unknown, never seen).

Lots (``lot_occupancy``, ``group_lot_occupancy``)
-------------------------------------------------
``occupancy = 1 - free / capacity``, ``free`` clipped to ``[0, capacity]`` (a counter that
over- or under-counts does not give an occupancy outside ``[0, 1]``); NaN when ``free`` is
NaN or ``capacity`` is not ``> 0``. Per group: ``1 - sum(free) / sum(capacity)`` over the
lots with a valid pair (capacity-weighted).

Kernels: ``_bay_update``, ``_battery_update`` (``@njit``, one pass over the batch) and
``_group_counts`` (one pass over the bays: the per-group figures); the per-bay snapshot and
lot maths are vectorised numpy over bays/lots (no Python per reading).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

import numpy as np
from numba import njit

from hub.arrays import check_1d as _check_1d
from hub.arrays import doubled_capacity
from hub.kernel_config import CACHE, FASTMATH, NOGIL

__all__ = [
    "BATTERY_CRITICAL",
    "BATTERY_LOW",
    "BATTERY_NORMAL",
    "BATTERY_UNKNOWN",
    "EVENT_ARRIVAL",
    "EVENT_DEPARTURE",
    "NO_TS",
    "STATE_UNKNOWN",
    "BayEvents",
    "BaySnapshot",
    "BayTracker",
    "BayUpdate",
    "GroupLotOccupancy",
    "battery_status",
    "group_lot_occupancy",
    "lot_occupancy",
]

STATE_UNKNOWN: Final = -1
EVENT_DEPARTURE: Final = 0
EVENT_ARRIVAL: Final = 1
BATTERY_UNKNOWN: Final = 0
BATTERY_NORMAL: Final = 1
BATTERY_LOW: Final = 2
BATTERY_CRITICAL: Final = 3
#: "no timestamp" (never seen / unknown session start).
NO_TS: Final = -(2**63)

NS_PER_S: Final = 1_000_000_000
NS_PER_DAY: Final = 86_400 * NS_PER_S


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BayEvents:
    """Arrivals and departures detected in one ``update`` batch, in batch order."""

    bay: np.ndarray  #: int64
    ts_ns: np.ndarray  #: int64
    kind: np.ndarray  #: uint8: EVENT_ARRIVAL / EVENT_DEPARTURE
    dwell_ns: np.ndarray  #: int64: departure's session length; -1 for arrivals / unknown

    def __len__(self) -> int:
        return int(self.bay.shape[0])


@dataclass(frozen=True, slots=True)
class BayUpdate:
    """What ``BayTracker.update`` did. ``n_applied + n_nan + n_invalid + n_late == n``."""

    events: BayEvents
    n_applied: int  #: readings applied (transitions and heartbeats)
    n_nan: int
    n_invalid: int  #: values other than 0, 1, NaN
    n_late: int  #: older than the bay's latest applied reading


@dataclass(frozen=True, slots=True)
class BaySnapshot:
    """``BayTracker.snapshot``: per bay (``[n_bays]``) and per group (``group_*``,
    ``[n_groups]``). Bays with group id -1 appear per bay but in no group."""

    state: np.ndarray  #: int8: -1 unknown, 0 free, 1 occupied
    last_seen_ns: np.ndarray  #: int64 (NO_TS = never)
    stale: np.ndarray  #: bool
    battery_v: np.ndarray  #: float64 (NaN = none)
    battery_status: np.ndarray  #: uint8 BATTERY_*
    sessions: np.ndarray  #: int64 arrivals in the period
    dwell_mean_s: np.ndarray  #: float64 mean dwell of departures in the period (NaN if none)
    turnover_per_day: np.ndarray  #: float64 sessions / period days (NaN before the period)
    occupied_for_s: np.ndarray  #: float64 now - session start, occupied bays with known start
    period_days: float  #: length of the counting period at ``now`` (NaN if not started)
    group_n_bays: np.ndarray  #: int64 bays in the group
    group_n_reporting: np.ndarray  #: int64 known state and not stale
    group_n_occupied: np.ndarray  #: int64 reporting and occupied
    group_occupancy: np.ndarray  #: float64 occupied / reporting (NaN if none reporting)
    group_n_stale: np.ndarray  #: int64
    group_n_battery_low: np.ndarray  #: int64
    group_n_battery_critical: np.ndarray  #: int64
    group_sessions: np.ndarray  #: int64
    group_turnover: np.ndarray  #: float64 sessions per bay per day
    group_dwell_mean_s: np.ndarray  #: float64


@dataclass(frozen=True, slots=True)
class BayGroups:
    """``BayTracker.group_snapshot``: ``BaySnapshot``'s per-group part, computed in one pass
    over the bays without per-bay arrays (a million devices make half a million bays)."""

    period_days: float
    group_n_bays: np.ndarray
    group_n_reporting: np.ndarray
    group_n_occupied: np.ndarray
    group_occupancy: np.ndarray
    group_n_stale: np.ndarray
    group_n_battery_low: np.ndarray
    group_n_battery_critical: np.ndarray
    group_sessions: np.ndarray
    group_turnover: np.ndarray
    group_dwell_mean_s: np.ndarray


@dataclass(frozen=True, slots=True)
class GroupLotOccupancy:
    """``group_lot_occupancy`` result, per group."""

    occupancy: np.ndarray  #: float64 1 - free / capacity (NaN without a valid lot)
    free: np.ndarray  #: float64 sum of clipped free spaces over valid lots
    capacity: np.ndarray  #: float64 sum of capacities over valid lots
    n_lots: np.ndarray  #: int64 valid lots


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _bay_update(bay, ts_ns, occ, state, state_ts, last_seen, since, sessions, dwell_sum,
                dwell_n, o_bay, o_ts, o_kind, o_dwell):
    """Apply readings in batch order; write events to ``o_*``. Returns (n_events,
    n_applied, n_nan, n_invalid, n_late, min_ts_applied)."""
    n_ev = 0
    n_applied = 0
    n_nan = 0
    n_invalid = 0
    n_late = 0
    t_min = np.int64(2**63 - 1)
    for i in range(bay.shape[0]):
        v = occ[i]
        if v != v:
            n_nan += 1
            continue
        if v != 0.0 and v != 1.0:
            n_invalid += 1
            continue
        b = bay[i]
        t = ts_ns[i]
        if t < state_ts[b]:
            n_late += 1
            continue
        n_applied += 1
        t_min = min(t_min, t)
        state_ts[b] = t
        if t > last_seen[b]:
            last_seen[b] = t
        new = 1 if v == 1.0 else 0
        old = state[b]
        if old == new:
            continue
        state[b] = new
        if old < 0:  # first reading: no transition seen
            since[b] = NO_TS
            continue
        if new == 1:
            sessions[b] += 1
            since[b] = t
            o_bay[n_ev] = b
            o_ts[n_ev] = t
            o_kind[n_ev] = 1
            o_dwell[n_ev] = -1
        else:
            d = np.int64(-1)
            if since[b] != NO_TS:
                d = t - since[b]
                dwell_sum[b] += d
                dwell_n[b] += 1
            since[b] = NO_TS
            o_bay[n_ev] = b
            o_ts[n_ev] = t
            o_kind[n_ev] = 0
            o_dwell[n_ev] = d
        n_ev += 1
    return n_ev, n_applied, n_nan, n_invalid, n_late, t_min


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _battery_update(bay, ts_ns, volts, battery_v, battery_ts, last_seen):
    """Latest battery reading per bay by timestamp (ties: the later in the batch); NaN
    skipped. Returns the number applied."""
    n = 0
    for i in range(bay.shape[0]):
        v = volts[i]
        if v != v:
            continue
        b = bay[i]
        t = ts_ns[i]
        if t > last_seen[b]:
            last_seen[b] = t
        if t >= battery_ts[b]:
            battery_ts[b] = t
            battery_v[b] = v
            n += 1
    return n


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------




def _check_batch(bay: object, ts_ns: object, value: object,
                 value_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = _check_1d("bay", bay, np.int64)
    t = _check_1d("ts_ns", ts_ns, np.int64)
    v = _check_1d(value_name, value, np.float64)
    if not b.shape[0] == t.shape[0] == v.shape[0]:
        raise ValueError(f"bay, ts_ns and {value_name} must have equal lengths, got "
                         f"{b.shape[0]}, {t.shape[0]}, {v.shape[0]}")
    if b.shape[0] and int(b.min()) < 0:
        raise ValueError(f"bay ids must be >= 0, got {int(b.min())}; drop unresolved rows")
    if t.shape[0] and int(t.min()) == NO_TS:
        raise ValueError("ts_ns contains INT64_MIN, reserved as 'no timestamp'")
    return b, t, v


def battery_status(volts: np.ndarray, low_v: float = 3.0,
                   critical_v: float = 2.9) -> np.ndarray:
    """uint8 ``BATTERY_*`` per voltage: normal ``>= low_v``, low ``[critical_v, low_v)``,
    critical ``< critical_v``, unknown for NaN."""
    v = np.asarray(volts, dtype=np.float64)
    out = np.full(v.shape, BATTERY_UNKNOWN, dtype=np.uint8)
    out[v >= low_v] = BATTERY_NORMAL
    out[(v >= critical_v) & (v < low_v)] = BATTERY_LOW
    out[v < critical_v] = BATTERY_CRITICAL
    return out


@njit(cache=CACHE, nogil=NOGIL)  # no fastmath: the float sums are bincount's, in bay order
def _group_counts(group, state, last_seen, battery_v, sessions, dwell_sum, dwell_n, now,
                  limit_ns, low_v, critical_v, n_groups):  # pragma: no cover - compiled
    """Per group of bays (``group`` int64 per bay, -1 = none): int64 ``[7, n_groups]``
    bays, reporting, occupied, stale, battery low, battery critical, sessions; float64
    ``[2, n_groups]`` the dwell sum (ns) and count of departures. The rules are
    ``BayTracker.snapshot``'s (module doc)."""
    counts = np.zeros((7, n_groups), dtype=np.int64)
    dwell = np.zeros((2, n_groups), dtype=np.float64)
    for i in range(group.shape[0]):
        k = group[i]
        if k < 0:
            continue
        seen = last_seen[i]
        stale = seen == NO_TS or now - seen > limit_ns
        reporting = state[i] >= 0 and not stale
        v = battery_v[i]
        counts[0, k] += 1
        if reporting:
            counts[1, k] += 1
            if state[i] == 1:
                counts[2, k] += 1
        if stale:
            counts[3, k] += 1
        if v >= critical_v and v < low_v:  # (NaN: neither)
            counts[4, k] += 1
        elif v < critical_v:
            counts[5, k] += 1
        counts[6, k] += sessions[i]
        dwell[0, k] += np.float64(dwell_sum[i])
        dwell[1, k] += np.float64(dwell_n[i])
    return counts, dwell


# --------------------------------------------------------------------------------------------
# Bay tracker
# --------------------------------------------------------------------------------------------


class BayTracker:
    """Per-bay occupancy state, sessions and sensor health (module doc). Not thread-safe."""

    _state: np.ndarray
    _state_ts: np.ndarray
    _last_seen: np.ndarray
    _since: np.ndarray
    _sessions: np.ndarray
    _dwell_sum: np.ndarray
    _dwell_n: np.ndarray
    _battery_v: np.ndarray
    _battery_ts: np.ndarray

    def __init__(self, n_bays: int = 1024, heartbeat_interval_s: float = 3600.0,
                 stale_factor: float = 3.0, battery_low_v: float = 3.0,
                 battery_critical_v: float = 2.9, period_start_ns: int | None = None,
                 capacity: int = 0) -> None:
        """``capacity``: bays held before the state grows (default ``n_bays``; size it for
        the expected count: growth doubles, every new entry written)."""
        if int(n_bays) < 0:
            raise ValueError(f"n_bays must be >= 0, got {n_bays}")
        if not float(heartbeat_interval_s) > 0.0 or not float(stale_factor) > 0.0:
            raise ValueError("heartbeat_interval_s and stale_factor must be > 0")
        if not float(battery_critical_v) <= float(battery_low_v):
            raise ValueError("need battery_critical_v <= battery_low_v")
        self.heartbeat_interval_s = float(heartbeat_interval_s)
        self.stale_factor = float(stale_factor)
        self.battery_low_v = float(battery_low_v)
        self.battery_critical_v = float(battery_critical_v)
        self._period_start: int | None = None if period_start_ns is None else int(
            period_start_ns)
        self._n = 0
        self._cap = 0
        self._alloc(max(int(n_bays), int(capacity), 1))
        self._n = int(n_bays)

    # -- state -----------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        old = self._cap

        def grow(prev: np.ndarray | None, fill: float, dtype: type[np.generic]) -> np.ndarray:
            new = np.full(cap, fill, dtype=dtype)
            if prev is not None and old:
                new[:old] = prev[:old]
            return new

        first = old == 0
        self._state = grow(None if first else self._state, STATE_UNKNOWN, np.int8)
        self._state_ts = grow(None if first else self._state_ts, NO_TS, np.int64)
        self._last_seen = grow(None if first else self._last_seen, NO_TS, np.int64)
        self._since = grow(None if first else self._since, NO_TS, np.int64)
        self._sessions = grow(None if first else self._sessions, 0, np.int64)
        self._dwell_sum = grow(None if first else self._dwell_sum, 0, np.int64)
        self._dwell_n = grow(None if first else self._dwell_n, 0, np.int64)
        self._battery_v = grow(None if first else self._battery_v, np.nan, np.float64)
        self._battery_ts = grow(None if first else self._battery_ts, NO_TS, np.int64)
        self._cap = cap

    def _ensure(self, n: int) -> None:
        if n > self._cap:
            self._alloc(doubled_capacity(self._cap, n))
        self._n = max(self._n, n)

    @property
    def n_bays(self) -> int:
        """Bays tracked: ``max(n_bays given, largest id seen + 1)``."""
        return self._n

    @property
    def period_start_ns(self) -> int | None:
        return self._period_start

    # -- ingest ----------------------------------------------------------------------------
    def update(self, bay: np.ndarray, ts_ns: np.ndarray, occupied: np.ndarray) -> BayUpdate:
        """Apply occupancy readings (int64 bay ids, int64 ns, float64 0/1/NaN) in batch
        order; returns the arrivals/departures detected and the accounting."""
        b, t, v = _check_batch(bay, ts_ns, occupied, "occupied")
        n = b.shape[0]
        if n:
            self._ensure(int(b.max()) + 1)
        o_bay = np.empty(n, dtype=np.int64)
        o_ts = np.empty(n, dtype=np.int64)
        o_kind = np.empty(n, dtype=np.uint8)
        o_dwell = np.empty(n, dtype=np.int64)
        k = n_applied = n_nan = n_invalid = n_late = 0
        if n:
            k, n_applied, n_nan, n_invalid, n_late, t_min = _bay_update(
                b, t, v, self._state, self._state_ts, self._last_seen, self._since,
                self._sessions, self._dwell_sum, self._dwell_n, o_bay, o_ts, o_kind, o_dwell)
            if self._period_start is None and n_applied:
                self._period_start = int(t_min)
        ev = BayEvents(o_bay[:k].copy(), o_ts[:k].copy(), o_kind[:k].copy(),
                       o_dwell[:k].copy())
        return BayUpdate(ev, int(n_applied), int(n_nan), int(n_invalid), int(n_late))

    def update_battery(self, bay: np.ndarray, ts_ns: np.ndarray, volts: np.ndarray) -> int:
        """Battery readings (int64 bay ids, int64 ns, float64 V; NaN skipped): keeps the
        latest per bay and refreshes ``last_seen``. Returns the number of readings kept."""
        b, t, v = _check_batch(bay, ts_ns, volts, "volts")
        if b.shape[0] == 0:
            return 0
        self._ensure(int(b.max()) + 1)
        return int(_battery_update(b, t, v, self._battery_v, self._battery_ts,
                                   self._last_seen))

    def heard(self, bay: np.ndarray, at_ns: int) -> None:
        """Bays ``bay`` (int64 ids) were heard from at ``at_ns`` (the hub's event clock when
        their readings arrived): ``last_seen`` becomes at least ``at_ns``. Staleness asks
        whether a sensor still reports, so it is judged on when the hub heard it, not on the
        sensor's own clock alone: a bay whose clock runs 14 minutes behind, reporting every
        minute, would otherwise look silent for 14 minutes (seen live, ``up --speed 60``)."""
        b = np.asarray(bay, dtype=np.int64)
        if b.shape[0] == 0:
            return
        if int(b.min()) < 0:
            raise ValueError("bay ids must be >= 0")
        self._ensure(int(b.max()) + 1)
        self._last_seen[b] = np.maximum(self._last_seen[b], np.int64(at_ns))

    def reset_counters(self, start_ns: int) -> None:
        """Start a new counting period at ``start_ns`` (e.g. local midnight): sessions and
        dwell sums go to zero; states, sessions in progress and health are kept."""
        self._sessions[:] = 0
        self._dwell_sum[:] = 0
        self._dwell_n[:] = 0
        self._period_start = int(start_ns)

    # -- queries ---------------------------------------------------------------------------
    def _groups(self, group_ids: np.ndarray, n_groups: int | None) -> tuple[np.ndarray, int]:
        """Checked ``group_ids`` (the tracker extended to them) and the number of groups."""
        g = _check_1d("group_ids", group_ids, np.int64)
        if g.shape[0] < self._n:
            raise ValueError(f"group_ids has {g.shape[0]} entries but bays 0..{self._n - 1} "
                             "are tracked: pass one entry per bay (-1 = no group)")
        if g.shape[0] and int(g.min()) < -1:
            raise ValueError("group_ids must be >= -1")
        self._ensure(g.shape[0])
        n = g.shape[0]
        ng = (int(g.max()) + 1 if n else 0) if n_groups is None else int(n_groups)
        if n and int(g.max()) >= ng:
            raise ValueError(f"n_groups={ng} but group ids reach {int(g.max())}")
        return g, ng

    def _period_days(self, now: int) -> float:
        """Days of the counting period at ``now`` (NaN before it started)."""
        if self._period_start is None:
            return float("nan")
        return (now - self._period_start) / NS_PER_DAY

    def group_snapshot(self, now_ns: int, group_ids: np.ndarray,
                       n_groups: int | None = None) -> BayGroups:
        """``snapshot``'s per-group figures alone (same arguments), without its per-bay
        arrays: what the hub reads once a minute."""
        g, ng = self._groups(group_ids, n_groups)
        n = g.shape[0]
        now = int(now_ns)
        counts, dwell = _group_counts(
            g, self._state[:n], self._last_seen[:n], self._battery_v[:n], self._sessions[:n],
            self._dwell_sum[:n], self._dwell_n[:n], np.int64(now),
            float(self.stale_factor * self.heartbeat_interval_s * NS_PER_S),
            float(self.battery_low_v), float(self.battery_critical_v), ng)
        days = self._period_days(now)
        n_bays, n_rep, n_occ = counts[0], counts[1], counts[2]
        occ_rate = np.full(ng, np.nan)
        np.divide(n_occ, n_rep, out=occ_rate, where=n_rep > 0)
        g_turn = np.full(ng, np.nan)
        if days > 0:
            np.divide(counts[6], n_bays * days, out=g_turn, where=n_bays > 0)
        g_dwell = np.full(ng, np.nan)
        np.divide(dwell[0] / NS_PER_S, dwell[1], out=g_dwell, where=dwell[1] > 0)
        return BayGroups(
            period_days=days, group_n_bays=n_bays, group_n_reporting=n_rep,
            group_n_occupied=n_occ, group_occupancy=occ_rate, group_n_stale=counts[3],
            group_n_battery_low=counts[4], group_n_battery_critical=counts[5],
            group_sessions=counts[6], group_turnover=g_turn, group_dwell_mean_s=g_dwell)

    def snapshot(self, now_ns: int, group_ids: np.ndarray,
                 n_groups: int | None = None) -> BaySnapshot:
        """State at ``now_ns``. ``group_ids``: int64 group (lot or district) per bay, ``-1``
        for none; its length is the number of registered bays (``>= n_bays``; the tracker
        extends to it, bays never heard from are unknown and stale). ``n_groups`` defaults
        to ``max(group_ids) + 1``. The per-group part is ``group_snapshot``'s."""
        groups = self.group_snapshot(now_ns, group_ids, n_groups)
        n = len(group_ids)
        now = int(now_ns)
        last_seen = self._last_seen[:n].copy()
        limit_ns = self.stale_factor * self.heartbeat_interval_s * NS_PER_S
        never = last_seen == NO_TS
        age = np.int64(now) - np.where(never, np.int64(now), last_seen)  # no NO_TS overflow
        volts = self._battery_v[:n].copy()
        sessions = self._sessions[:n].copy()
        dn = self._dwell_n[:n].copy()
        dwell_mean = np.full(n, np.nan)
        np.divide(self._dwell_sum[:n].astype(np.float64) / NS_PER_S, dn, out=dwell_mean,
                  where=dn > 0)
        days = groups.period_days
        turnover = sessions / days if days > 0 else np.full(n, np.nan)
        state = self._state[:n].copy()
        since = self._since[:n]
        occ_known = (state == 1) & (since != NO_TS)
        occupied_for = np.full(n, np.nan)
        occupied_for[occ_known] = (np.int64(now) - since[occ_known]) / NS_PER_S
        return BaySnapshot(
            state=state, last_seen_ns=last_seen, stale=never | (age > limit_ns),
            battery_v=volts,
            battery_status=battery_status(volts, self.battery_low_v, self.battery_critical_v),
            sessions=sessions, dwell_mean_s=dwell_mean,
            turnover_per_day=np.asarray(turnover, dtype=np.float64),
            occupied_for_s=occupied_for,
            **{f.name: getattr(groups, f.name) for f in fields(BayGroups)})


# --------------------------------------------------------------------------------------------
# Lots
# --------------------------------------------------------------------------------------------


def _lot_valid(free: np.ndarray, capacity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = _check_1d("free", free, np.float64)
    c = _check_1d("capacity", capacity, np.float64)
    if f.shape[0] != c.shape[0]:
        raise ValueError(f"free and capacity must have equal lengths, got {f.shape[0]}, "
                         f"{c.shape[0]}")
    valid = (f == f) & (c > 0) & np.isfinite(c)
    return valid, np.clip(f, 0.0, np.where(valid, c, 0.0))


def lot_occupancy(free: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Per lot ``1 - clip(free, 0, capacity) / capacity`` (float64 inputs); NaN where free
    is NaN or capacity is not a positive finite number."""
    valid, fc = _lot_valid(free, capacity)
    out = np.full(valid.shape[0], np.nan)
    np.subtract(1.0, fc / np.where(valid, capacity, 1.0), out=out, where=valid)
    return out


def group_lot_occupancy(group: np.ndarray, free: np.ndarray, capacity: np.ndarray,
                        n_groups: int | None = None) -> GroupLotOccupancy:
    """Capacity-weighted occupancy per group (district) of lots: ``1 - sum(free) /
    sum(capacity)`` over valid lots (see ``lot_occupancy``); ``group`` int64 per lot,
    ``-1`` = none."""
    g = _check_1d("group", group, np.int64)
    valid, fc = _lot_valid(free, capacity)
    if g.shape[0] != valid.shape[0]:
        raise ValueError("group, free and capacity must have equal lengths")
    if g.shape[0] and int(g.min()) < -1:
        raise ValueError("group ids must be >= -1")
    ng = (int(g.max()) + 1 if g.shape[0] else 0) if n_groups is None else int(n_groups)
    if g.shape[0] and int(g.max()) >= ng:
        raise ValueError(f"n_groups={ng} but group ids reach {int(g.max())}")
    use = valid & (g >= 0)
    gg = g[use]
    f_sum = np.bincount(gg, weights=fc[use], minlength=ng)
    c_sum = np.bincount(gg, weights=capacity[use], minlength=ng)
    n_lots = np.bincount(gg, minlength=ng).astype(np.int64)
    occ = np.full(ng, np.nan)
    np.subtract(1.0, f_sum / np.where(c_sum > 0, c_sum, 1.0), out=occ, where=c_sum > 0)
    return GroupLotOccupancy(occ, f_sum, c_sum, n_lots)
