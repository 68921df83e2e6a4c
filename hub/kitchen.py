"""Open-kitchen (明厨亮灶) alarm engine: de-duplicated alarms with a lifecycle.

Input readings ``(restaurant int64, ts_ns int64, measurement code, value float64)``, in
batch order; measurement codes follow the catalogue's ``kitchen`` rows (``MEASUREMENTS``):
``M_COLD_TEMP`` 0 (°C), ``M_PREP_TEMP`` 1 (°C), ``M_HUMIDITY`` 2, ``M_GAS`` 3 (%LEL),
``M_CO`` 4, ``M_FUME`` 5 (mg/m³), ``M_UV_MINUTES`` 6 (min), ``M_AI_EVENT`` 7 (value = event
code 1..6). Humidity and CO have no rule (counted as ``n_ignored``).

Alarm types (``ALARM_NAMES_EN`` / ``ALARM_NAMES_ZH``)
-----------------------------------------------------
* 0 ``A_COLD_ROOM`` 冷库温度异常 -- cold_temp outside ``[cold_min_c, cold_max_c]`` (chilled
  0-10 °C by default; per restaurant with ``set_range``, e.g. frozen -20..-1 °C) for at least
  ``cold_min_duration_s`` (30 min).
* 1 ``A_PREP_ROOM`` 专间温度超标 -- prep_temp ``> prep_max_c`` (25 °C) for at least
  ``prep_min_duration_s`` (15 min).
* 2 ``A_GAS_LEAK`` 燃气泄漏 -- gas ``> gas_max_lel_pct`` (10 %LEL), immediately.
* 3 ``A_FUME`` 油烟超标 -- fume ``> fume_limit_mg_m3`` (1.0) for at least
  ``fume_min_duration_s`` (10 min: sustained exceedance; a kitchen's fume swings above and
  below the limit from one reading to the next while cooking).
* 4 ``A_UV_SHORT`` 紫外消毒时长不足 -- UV minutes of a local day ``< uv_min_minutes`` (30),
  evaluated at day end.
* 5..10 ``A_AI_NO_HAT_MASK`` 未戴帽子口罩, ``A_AI_NO_WORK_CLOTHES`` 未穿工作服,
  ``A_AI_SMOKING`` 吸烟, ``A_AI_PHONE_USE`` 使用手机, ``A_AI_RODENT`` 鼠患,
  ``A_AI_UNATTENDED_FLAME`` 灶台无人看管 -- today's count of AI-camera event code
  ``1..6`` (type = 4 + code) ``> ai_max_per_day[code - 1]`` (default ``(3, 3, 0, 3, 0, 0)``:
  smoking, rodents and an unattended flame alarm on the first event).

The threshold bounds are inclusive on the compliant side (``25.0`` °C in the prep room is
fine, ``25.1`` is not).

``fume_limit_mg_m3`` defaults to **1.0 mg/m³**, Chongqing's local catering standard, not
the national GB 18483-2001 limit of 2.0 (``KitchenConfig.national()`` switches to 2.0):
the engine runs for Chongqing. The limit is compared with each reading (feed window means if
the limit should apply to averages).

Lifecycle and de-duplication
----------------------------
At most one *open* alarm per (restaurant, alarm type). Transitions (``AlarmTransitions``):
``ST_RAISED`` 1 (opens it), ``ST_ONGOING`` 2 (an update of an open alarm), ``ST_CLEARED`` 3
(closes it). Repeated violations never raise a second alarm: they update the open one's
``peak`` and emit ``ongoing`` at most every ``ongoing_interval_s`` (None = never; 0 = on every
violating reading). Every transition carries the alarm's ``raised_ts_ns`` (its identity with
restaurant and type), the triggering ``value`` and the ``peak`` (worst value while open:
largest excursion outside the range for the threshold rules, lowest minutes for UV, highest
count for AI). The engine is a pure state machine: the hub publishes transitions on MQTT and
stores them; ``open_alarms()`` lists the open ones (e.g. to republish after a restart).

Threshold rules (types 0-3), per reading in batch order:

* NaN values are missing: ignored (they neither clear nor extend anything).
* A reading older than the last one applied for that (restaurant, rule) is *late*: ignored.
* Violating reading: starts the *pending* interval if none; raises when ``ts - pending_start
  >= min_duration`` (0 for gas by default: the first violating reading raises; a compliant
  reading in between cancels the interval, so every reading of it must violate); while open,
  cancels a clear-pending interval, updates ``peak`` and maybe emits ``ongoing``.
* Compliant reading: cancels a pending interval. While an alarm is open it starts the
  *clear-pending* interval if none, and clears the alarm when ``ts - clear_pending_start >=
  clear_min_duration_s`` (5 min by default, one value for the four rules; 0 = the first
  compliant reading clears): hysteresis, so that a value hovering around the limit does not
  raise and clear over and over. The ``cleared`` transition carries the time and value of
  the reading that completed the interval.
  A gap in the readings does not break a pending or clear-pending interval.

Daily rules (local day = UTC+8 date, ``tz_offset_s``):

* UV: the day's minutes are the sum of the readings (each reading = one disinfection run) or,
  with ``uv_cumulative=True``, their maximum (each reading = the running total of the day).
  Evaluated at day end for every restaurant that has ever reported a UV reading (it has a
  UV lamp): ``< uv_min_minutes`` raises (or emits ``ongoing`` if still open from an earlier
  day), otherwise clears an open one. A restaurant silent all day counts 0 minutes.
* AI events: counted per (restaurant, code) for the current day; the reading that brings the
  count above ``ai_max_per_day[code - 1]`` raises (immediately, not at day end); later events
  update it. AI alarms are cleared at day end, when the counts restart. Values other than
  the integers 1..6 are *invalid*.
* The engine tracks one *current day* (the first reading's, or ``start_ns``). A reading of a
  later day first closes the current one (day-end evaluation stamped with the day's end, the
  next local midnight, UTC ns), then the engine moves to the reading's day (skipped empty
  days are not evaluated one by one). Readings of an earlier day still feed the threshold
  rules but are *late* for the daily rules. Call ``day_end(now_ns)`` on a timer at local
  midnight so that the UV rule fires even when no reading arrives.

Timestamps must be sane device times (validated at the edge): one reading years ahead would
close the current day early.

Kernels: ``_kitchen_kernel`` (one pass over the batch, stops at a day change) and ``_day_end``
(one pass over restaurants), state arrays ``[n_restaurants, N_ALARM_TYPES]``, and
``[n_restaurants, 4]`` for what only the threshold rules keep (``pending`` and
``clear_pending`` hold an interval's start, ``-2**63`` for none; ``last_ts``, ``peak_key``):
at a million devices (318k restaurants) that is 71 MB less than a column per alarm type.

Throughput (one core of the 2-core dev VM, warm JIT, best of 7, 1M readings of all 8
measurement codes over 10k random restaurants in time order, ~190k transitions, quiet VM,
three processes): 16-23 M readings/s (2026-11-22, with the fume duration and the clear
hysteresis; an earlier kernel without them measured 30-36 M on data with ~85k transitions).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

import numpy as np
from numba import njit

from hub.arrays import doubled_capacity
from hub.kernel_config import CACHE, FASTMATH, NOGIL

__all__ = [
    "AI_EVENT_NAMES",
    "ALARM_NAMES_EN",
    "ALARM_NAMES_ZH",
    "A_AI_NO_HAT_MASK",
    "A_AI_NO_WORK_CLOTHES",
    "A_AI_PHONE_USE",
    "A_AI_RODENT",
    "A_AI_SMOKING",
    "A_AI_UNATTENDED_FLAME",
    "A_COLD_ROOM",
    "A_FUME",
    "A_GAS_LEAK",
    "A_PREP_ROOM",
    "A_UV_SHORT",
    "MEASUREMENTS",
    "M_AI_EVENT",
    "M_CO",
    "M_COLD_TEMP",
    "M_FUME",
    "M_GAS",
    "M_HUMIDITY",
    "M_PREP_TEMP",
    "M_UV_MINUTES",
    "N_ALARM_TYPES",
    "STATE_NAMES",
    "ST_CLEARED",
    "ST_ONGOING",
    "ST_RAISED",
    "AlarmTransitions",
    "KitchenAlarms",
    "KitchenConfig",
    "KitchenUpdate",
    "measurement_code",
]

# -- measurement codes (input), catalogue names ------------------------------------------------
M_COLD_TEMP: Final = 0
M_PREP_TEMP: Final = 1
M_HUMIDITY: Final = 2
M_GAS: Final = 3
M_CO: Final = 4
M_FUME: Final = 5
M_UV_MINUTES: Final = 6
M_AI_EVENT: Final = 7
MEASUREMENTS: Final = ("cold_temp", "prep_temp", "humidity", "gas", "co", "fume",
                       "uv_minutes", "ai_event")

# -- alarm types ---------------------------------------------------------------------------
A_COLD_ROOM: Final = 0
A_PREP_ROOM: Final = 1
A_GAS_LEAK: Final = 2
A_FUME: Final = 3
A_UV_SHORT: Final = 4
A_AI_NO_HAT_MASK: Final = 5
A_AI_NO_WORK_CLOTHES: Final = 6
A_AI_SMOKING: Final = 7
A_AI_PHONE_USE: Final = 8
A_AI_RODENT: Final = 9
A_AI_UNATTENDED_FLAME: Final = 10
N_ALARM_TYPES: Final = 11
#: Alarm type code -> English name.
ALARM_NAMES_EN: Final = ("cold_room_temperature", "prep_room_temperature", "gas_leak",
                         "cooking_fume", "uv_disinfection_short", "ai_no_hat_mask",
                         "ai_no_work_clothes", "ai_smoking", "ai_phone_use", "ai_rodent",
                         "ai_unattended_flame")
#: Alarm type code -> Chinese name.
ALARM_NAMES_ZH: Final = ("冷库温度异常", "专间温度超标", "燃气泄漏", "油烟超标",
                         "紫外消毒时长不足", "未戴帽子口罩", "未穿工作服", "吸烟",
                         "使用手机", "鼠患", "灶台无人看管")
#: AI-camera event code (1..6) -> name; alarm type = ``A_AI_NO_HAT_MASK - 1 + code``.
AI_EVENT_NAMES: Final = {1: "no_hat_mask", 2: "no_work_clothes", 3: "smoking",
                         4: "phone_use", 5: "rodent", 6: "unattended_flame"}

# -- transition states -----------------------------------------------------------------------
ST_RAISED: Final = 1
ST_ONGOING: Final = 2
ST_CLEARED: Final = 3
STATE_NAMES: Final = {ST_RAISED: "raised", ST_ONGOING: "ongoing", ST_CLEARED: "cleared"}

NS_PER_S: Final = 1_000_000_000
NS_PER_DAY: Final = 86_400 * NS_PER_S
_NO_TS = -(2**63)
_I64_MAX = 2**63 - 1
_N_RANGE = 4  # threshold rules: alarm types 0..3
_N_AI = 6
_AI0 = A_AI_NO_HAT_MASK - 1  # alarm type of AI code e = _AI0 + e

# kernel status
_DONE = 0
_NEW_DAY = 1
#: measurement code -> threshold rule (alarm type 0..3), -1 for the others
_RANGE_RULE = np.array([A_COLD_ROOM, A_PREP_ROOM, -1, A_GAS_LEAK, -1, A_FUME, -1, -1],
                       dtype=np.int64)


def measurement_code(name: str) -> int:
    """Catalogue measurement name (``kitchen`` kind) -> ``M_*`` code."""
    try:
        return MEASUREMENTS.index(name)
    except ValueError:
        raise ValueError(f"unknown kitchen measurement {name!r}; one of {MEASUREMENTS}") from None


@dataclass(frozen=True, slots=True)
class KitchenConfig:
    """Settings (defaults: domain reference; durations and AI maxima are unverified starting
    points)."""

    cold_min_c: float = 0.0  #: chilled range, default for every restaurant
    cold_max_c: float = 10.0
    cold_min_duration_s: float = 1800.0
    prep_max_c: float = 25.0
    prep_min_duration_s: float = 900.0
    gas_max_lel_pct: float = 10.0
    gas_min_duration_s: float = 0.0
    fume_limit_mg_m3: float = 1.0  #: Chongqing local standard (national GB 18483: 2.0)
    fume_min_duration_s: float = 600.0  #: sustained exceedance (gas: immediate)
    #: threshold rules (types 0-3): an open alarm clears after this long compliant
    clear_min_duration_s: float = 300.0
    uv_min_minutes: float = 30.0
    uv_cumulative: bool = False  #: readings are running daily totals (max) instead of runs (sum)
    #: alarm when today's count of AI event code c exceeds ``ai_max_per_day[c - 1]``
    ai_max_per_day: tuple[int, ...] = (3, 3, 0, 3, 0, 0)
    ongoing_interval_s: float | None = 300.0
    tz_offset_s: int = 8 * 3600

    def __post_init__(self) -> None:
        if not self.cold_min_c <= self.cold_max_c:
            raise ValueError("need cold_min_c <= cold_max_c")
        for name in ("cold_min_duration_s", "prep_min_duration_s", "gas_min_duration_s",
                     "fume_min_duration_s", "clear_min_duration_s", "uv_min_minutes"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if len(self.ai_max_per_day) != _N_AI or min(self.ai_max_per_day) < 0:
            raise ValueError("ai_max_per_day needs 6 counts >= 0 (event codes 1..6)")
        if self.ongoing_interval_s is not None and not self.ongoing_interval_s >= 0.0:
            raise ValueError("ongoing_interval_s must be >= 0 or None")
        if abs(self.tz_offset_s) > 14 * 3600:
            raise ValueError("tz_offset_s must be within ±14 h")

    @classmethod
    def national(cls) -> KitchenConfig:
        """Defaults with the national cooking-fume limit (GB 18483-2001, 2.0 mg/m³)."""
        return cls(fume_limit_mg_m3=2.0)


@dataclass(frozen=True, slots=True)
class AlarmTransitions:
    """Alarm transitions, equal-length arrays, in the order they happened."""

    restaurant: np.ndarray  #: int64
    alarm_type: np.ndarray  #: uint8 A_*
    state: np.ndarray  #: uint8 ST_RAISED / ST_ONGOING / ST_CLEARED
    ts_ns: np.ndarray  #: int64: reading time (day end for daily evaluations)
    value: np.ndarray  #: float64: triggering value (°C, %LEL, mg/m³, minutes, count)
    peak: np.ndarray  #: float64: worst value while open (see module doc)
    raised_ts_ns: np.ndarray  #: int64: when the alarm was raised (its identity)

    def __post_init__(self) -> None:
        n = self.restaurant.shape[0]
        for f in fields(self):
            a = getattr(self, f.name)
            if not isinstance(a, np.ndarray) or a.ndim != 1 or a.shape[0] != n:
                raise ValueError(f"AlarmTransitions.{f.name} must be 1-D of length {n}")

    def __len__(self) -> int:
        return int(self.restaurant.shape[0])

    @staticmethod
    def empty() -> AlarmTransitions:
        i = np.empty(0, dtype=np.int64)
        u = np.empty(0, dtype=np.uint8)
        f = np.empty(0, dtype=np.float64)
        return AlarmTransitions(i, u, u.copy(), i.copy(), f, f.copy(), i.copy())

    @staticmethod
    def concat(parts: list[AlarmTransitions]) -> AlarmTransitions:
        parts = [p for p in parts if len(p)]
        if not parts:
            return AlarmTransitions.empty()
        if len(parts) == 1:
            return parts[0]
        return AlarmTransitions(*(np.concatenate([getattr(p, f.name) for p in parts])
                                  for f in fields(AlarmTransitions)))

    def rows(self) -> list[tuple[int, int, int, int, float, float, int]]:
        """As Python tuples (restaurant, alarm_type, state, ts, value, peak, raised_ts)."""
        cols = [getattr(self, f.name).tolist() for f in fields(self)]
        return list(zip(*cols, strict=True))


@dataclass(frozen=True, slots=True)
class KitchenUpdate:
    """``KitchenAlarms.update`` result.
    ``n_applied + n_nan + n_invalid + n_late + n_ignored == n``."""

    transitions: AlarmTransitions
    n_applied: int  #: readings that fed a rule
    n_nan: int
    n_invalid: int  #: AI values not in 1..6, negative UV minutes
    n_late: int  #: older than the rule's state (threshold rules) or than the current day
    n_ignored: int  #: measurements without a rule (humidity, co)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _emit(k, r, a, st, t, v, pk, rts, o_r, o_a, o_s, o_t, o_v, o_p, o_rt):
    o_r[k] = r
    o_a[k] = a
    o_s[k] = st
    o_t[k] = t
    o_v[k] = v
    o_p[k] = pk
    o_rt[k] = rts
    return k + 1


@njit(cache=CACHE, nogil=NOGIL)
def _ranges(restaurant, code, ts_ns):
    """``(min, max)`` of ``restaurant``, of ``code`` and of ``ts_ns`` (``n >= 1`` each,
    equal lengths), flattened: what ``update`` checks, in one pass instead of six."""
    r_lo = r_hi = restaurant[0]
    c_lo = c_hi = code[0]
    t_lo = t_hi = ts_ns[0]
    for i in range(1, restaurant.shape[0]):
        r_lo = min(r_lo, restaurant[i])
        r_hi = max(r_hi, restaurant[i])
        c_lo = min(c_lo, code[i])
        c_hi = max(c_hi, code[i])
        t_lo = min(t_lo, ts_ns[i])
        t_hi = max(t_hi, ts_ns[i])
    return r_lo, r_hi, c_lo, c_hi, t_lo, t_hi


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _kitchen_kernel(start, restaurant, ts_ns, code, value, cur_day, tz_ns,
                    lo, hi, min_dur, clear_ns, ongoing_ns, uv_cumulative, ai_max,
                    is_open, pending, clear_pending, raised_ts, last_emit, last_ts, peak,
                    peak_key, last_val, uv, has_uv, ai_cnt, counters, k0,
                    o_r, o_a, o_s, o_t, o_v, o_p, o_rt):
    """Process readings ``start..`` until the end (returns (_DONE, n, k)) or a reading of a
    day after ``cur_day`` (returns (_NEW_DAY, its index, k)), emitting transitions from
    ``k0``. ``counters`` (int64[5]): applied, nan, invalid, late, ignored (accumulated).
    ``peak_key`` is the ordering key of ``peak`` (larger = worse); ``clear_pending``: start
    of the compliant run of an open threshold alarm (``_NO_TS``: none)."""
    k = k0
    for i in range(start, restaurant.shape[0]):
        t = ts_ns[i]
        day = (t + tz_ns) // NS_PER_DAY
        if day > cur_day:
            return _NEW_DAY, i, k
        v = value[i]
        if v != v:
            counters[1] += 1
            continue
        r = restaurant[i]
        m = code[i]
        a = _RANGE_RULE[m]
        if a >= 0:
            if t < last_ts[r, a]:
                counters[3] += 1
                continue
            counters[0] += 1
            last_ts[r, a] = t
            lo_ = lo[r, a]
            hi_ = hi[r, a]
            if v < lo_ or v > hi_:
                exc = max(lo_ - v, v - hi_)
                if is_open[r, a]:
                    clear_pending[r, a] = _NO_TS
                    last_val[r, a] = v
                    if exc > peak_key[r, a]:
                        peak_key[r, a] = exc
                        peak[r, a] = v
                    if t - last_emit[r, a] >= ongoing_ns:
                        last_emit[r, a] = t
                        k = _emit(k, r, a, ST_ONGOING, t, v, peak[r, a], raised_ts[r, a],
                                  o_r, o_a, o_s, o_t, o_v, o_p, o_rt)
                else:
                    if pending[r, a] == _NO_TS:
                        pending[r, a] = t
                        peak_key[r, a] = exc
                        peak[r, a] = v
                    elif exc > peak_key[r, a]:
                        peak_key[r, a] = exc
                        peak[r, a] = v
                    if t - pending[r, a] >= min_dur[a]:
                        is_open[r, a] = True
                        clear_pending[r, a] = _NO_TS
                        raised_ts[r, a] = t
                        last_emit[r, a] = t
                        last_val[r, a] = v
                        k = _emit(k, r, a, ST_RAISED, t, v, peak[r, a], t,
                                  o_r, o_a, o_s, o_t, o_v, o_p, o_rt)
            else:
                pending[r, a] = _NO_TS
                if is_open[r, a]:
                    if clear_pending[r, a] == _NO_TS:
                        clear_pending[r, a] = t
                    if t - clear_pending[r, a] >= clear_ns:
                        is_open[r, a] = False
                        clear_pending[r, a] = _NO_TS
                        k = _emit(k, r, a, ST_CLEARED, t, v, peak[r, a], raised_ts[r, a],
                                  o_r, o_a, o_s, o_t, o_v, o_p, o_rt)
        elif m == M_UV_MINUTES:
            if not v >= 0.0:
                counters[2] += 1
                continue
            if day < cur_day:
                counters[3] += 1
                continue
            counters[0] += 1
            has_uv[r] = True
            if uv_cumulative:
                uv[r] = max(uv[r], v)
            else:
                uv[r] += v
        elif m == M_AI_EVENT:
            if not (v >= 1.0 and v <= 6.0 and v == np.floor(v)):
                counters[2] += 1
                continue
            if day < cur_day:
                counters[3] += 1
                continue
            counters[0] += 1
            e = np.int64(v) - 1
            c = ai_cnt[r, e] + 1
            ai_cnt[r, e] = c
            if c > ai_max[e]:
                b = _AI0 + 1 + e
                cf = np.float64(c)
                peak[r, b] = cf
                last_val[r, b] = cf
                if not is_open[r, b]:
                    is_open[r, b] = True
                    raised_ts[r, b] = t
                    last_emit[r, b] = t
                    k = _emit(k, r, b, ST_RAISED, t, cf, cf, t,
                              o_r, o_a, o_s, o_t, o_v, o_p, o_rt)
                elif t - last_emit[r, b] >= ongoing_ns:
                    last_emit[r, b] = t
                    k = _emit(k, r, b, ST_ONGOING, t, cf, cf, raised_ts[r, b],
                              o_r, o_a, o_s, o_t, o_v, o_p, o_rt)
        else:
            counters[4] += 1
    return _DONE, restaurant.shape[0], k


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _day_end(end_ts, n_rest, uv_min, is_open, raised_ts, last_emit, peak, last_val, uv,
             has_uv, ai_cnt, o_r, o_a, o_s, o_t, o_v, o_p, o_rt):
    """Evaluate the daily rules of the day ending at ``end_ts`` and restart the day's
    counters. Returns the number of transitions written."""
    k = 0
    a = A_UV_SHORT
    for r in range(n_rest):
        if has_uv[r]:
            mins = uv[r]
            if mins < uv_min:
                last_val[r, a] = mins
                if is_open[r, a]:
                    peak[r, a] = min(peak[r, a], mins)
                    last_emit[r, a] = end_ts
                    k = _emit(k, r, a, ST_ONGOING, end_ts, mins, peak[r, a], raised_ts[r, a],
                              o_r, o_a, o_s, o_t, o_v, o_p, o_rt)
                else:
                    is_open[r, a] = True
                    raised_ts[r, a] = end_ts
                    last_emit[r, a] = end_ts
                    peak[r, a] = mins
                    k = _emit(k, r, a, ST_RAISED, end_ts, mins, mins, end_ts,
                              o_r, o_a, o_s, o_t, o_v, o_p, o_rt)
            elif is_open[r, a]:
                is_open[r, a] = False
                k = _emit(k, r, a, ST_CLEARED, end_ts, mins, peak[r, a], raised_ts[r, a],
                          o_r, o_a, o_s, o_t, o_v, o_p, o_rt)
        uv[r] = 0.0
        for e in range(_N_AI):
            b = _AI0 + 1 + e
            if is_open[r, b]:
                is_open[r, b] = False
                k = _emit(k, r, b, ST_CLEARED, end_ts, np.float64(ai_cnt[r, e]), peak[r, b],
                          raised_ts[r, b], o_r, o_a, o_s, o_t, o_v, o_p, o_rt)
            ai_cnt[r, e] = 0
    return k


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_1d(name: str, a: object, dtype: type[np.generic] | tuple[type[np.generic], ...]
              ) -> np.ndarray:
    dts = [np.dtype(d) for d in (dtype if isinstance(dtype, tuple) else (dtype,))]
    want = " or ".join(d.name for d in dts)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}; "
                        f"pass np.asarray({name}, dtype=np.{dts[0].name})")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}; pass {name}.ravel()")
    if a.dtype not in dts:
        raise TypeError(f"{name} must be {want}, got {a.dtype}; "
                        f"pass {name}.astype(np.{dts[0].name})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be contiguous (it is a strided view); "
                         f"pass np.ascontiguousarray({name})")
    return a


def _buffers(n: int) -> tuple[np.ndarray, ...]:
    return (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.uint8),
            np.empty(n, dtype=np.uint8), np.empty(n, dtype=np.int64),
            np.empty(n, dtype=np.float64), np.empty(n, dtype=np.float64),
            np.empty(n, dtype=np.int64))


def _transitions(bufs: tuple[np.ndarray, ...], k: int, lo: int = 0) -> AlarmTransitions:
    return AlarmTransitions(*(b[lo:k].copy() for b in bufs))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class KitchenAlarms:
    """The alarm engine for restaurants ``0 .. n_restaurants-1`` (grows with larger ids).
    See the module doc for rules and lifecycle. Not thread-safe: one owner."""

    _open: np.ndarray
    _pending: np.ndarray
    _clear_pending: np.ndarray
    _raised_ts: np.ndarray
    _last_emit: np.ndarray
    _last_ts: np.ndarray
    _peak: np.ndarray
    _peak_key: np.ndarray
    _last_val: np.ndarray
    _lo: np.ndarray
    _hi: np.ndarray
    _uv: np.ndarray
    _has_uv: np.ndarray
    _ai_cnt: np.ndarray

    def __init__(self, n_restaurants: int = 1024, config: KitchenConfig | None = None,
                 start_ns: int | None = None, capacity: int = 0) -> None:
        """``capacity``: restaurants held before the state grows (default ``n_restaurants``;
        size it for the expected count: growth doubles, every new row written)."""
        if int(n_restaurants) < 0:
            raise ValueError(f"n_restaurants must be >= 0, got {n_restaurants}")
        self.config = KitchenConfig() if config is None else config
        if not isinstance(self.config, KitchenConfig):
            raise TypeError("config must be a KitchenConfig")
        c = self.config
        self._tz_ns = int(c.tz_offset_s) * NS_PER_S
        self._min_dur = np.array([c.cold_min_duration_s, c.prep_min_duration_s,
                                  c.gas_min_duration_s, c.fume_min_duration_s]) * NS_PER_S
        self._min_dur = np.minimum(self._min_dur, 9.0e18).astype(np.int64)
        self._clear_ns = int(min(c.clear_min_duration_s * NS_PER_S, 9.0e18))
        self._ongoing_ns = (_I64_MAX if c.ongoing_interval_s is None
                            else min(int(c.ongoing_interval_s * NS_PER_S), _I64_MAX))
        self._ai_max = np.array(c.ai_max_per_day, dtype=np.int64)
        self._default_lo = np.array([c.cold_min_c, -np.inf, -np.inf, -np.inf])
        self._default_hi = np.array([c.cold_max_c, c.prep_max_c, c.gas_max_lel_pct,
                                     c.fume_limit_mg_m3])
        self._n = 0
        self._cap = 0
        self._alloc(max(int(n_restaurants), int(capacity), 1))
        self._n = int(n_restaurants)
        self._day: int | None = None if start_ns is None else self.local_day(int(start_ns))

    # -- state -----------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        old = self._cap
        na = N_ALARM_TYPES

        def grow(prev: np.ndarray | None, shape: tuple[int, ...], fill: object,
                 dtype: type[np.generic]) -> np.ndarray:
            new = np.empty((cap, *shape), dtype=dtype)
            new[...] = fill
            if prev is not None:
                new[:old] = prev[:old]
            return new

        first = old == 0
        self._open = grow(None if first else self._open, (na,), False, np.bool_)
        # pending, clear_pending, last_ts and peak_key: threshold rules only (see above)
        self._pending = grow(None if first else self._pending, (_N_RANGE,), _NO_TS, np.int64)
        self._clear_pending = grow(None if first else self._clear_pending, (_N_RANGE,),
                                   _NO_TS, np.int64)
        self._raised_ts = grow(None if first else self._raised_ts, (na,), _NO_TS, np.int64)
        self._last_emit = grow(None if first else self._last_emit, (na,), _NO_TS, np.int64)
        self._last_ts = grow(None if first else self._last_ts, (_N_RANGE,), _NO_TS, np.int64)
        self._peak = grow(None if first else self._peak, (na,), np.nan, np.float64)
        self._peak_key = grow(None if first else self._peak_key, (_N_RANGE,), -np.inf,
                              np.float64)
        self._last_val = grow(None if first else self._last_val, (na,), np.nan, np.float64)
        self._lo = grow(None if first else self._lo, (_N_RANGE,), self._default_lo,
                        np.float64)
        self._hi = grow(None if first else self._hi, (_N_RANGE,), self._default_hi,
                        np.float64)
        self._uv = grow(None if first else self._uv, (), 0.0, np.float64)
        self._has_uv = grow(None if first else self._has_uv, (), False, np.bool_)
        self._ai_cnt = grow(None if first else self._ai_cnt, (_N_AI,), 0, np.int64)
        self._cap = cap

    def _ensure(self, n: int) -> None:
        if n > self._cap:
            self._alloc(doubled_capacity(self._cap, n))
        self._n = max(self._n, n)

    @property
    def n_restaurants(self) -> int:
        return self._n

    @property
    def current_day(self) -> int | None:
        """Local day (days since 1970-01-01 in UTC+8) the daily rules are counting."""
        return self._day

    def local_day(self, ts_ns: int) -> int:
        return (int(ts_ns) + self._tz_ns) // NS_PER_DAY

    def day_end_ns(self, day: int) -> int:
        """UTC ns of the end (next local midnight) of local day ``day``."""
        return (int(day) + 1) * NS_PER_DAY - self._tz_ns

    def set_range(self, restaurant: np.ndarray, alarm_type: int, lo: float | np.ndarray,
                  hi: float | np.ndarray) -> None:
        """Per-restaurant compliant range ``[lo, hi]`` of a threshold rule (``A_COLD_ROOM``
        .. ``A_FUME``), e.g. ``set_range(frozen_ids, A_COLD_ROOM, -20.0, -1.0)``. ``-inf``
        / ``inf`` for an open side. Takes effect from the next reading."""
        r = _check_1d("restaurant", restaurant, np.int64)
        if not 0 <= int(alarm_type) < _N_RANGE:
            raise ValueError("alarm_type must be a threshold rule: A_COLD_ROOM, A_PREP_ROOM, "
                             "A_GAS_LEAK or A_FUME")
        if r.shape[0] and int(r.min()) < 0:
            raise ValueError("restaurant ids must be >= 0")
        lo_a = np.broadcast_to(np.asarray(lo, dtype=np.float64), r.shape)
        hi_a = np.broadcast_to(np.asarray(hi, dtype=np.float64), r.shape)
        if not (lo_a <= hi_a).all():
            raise ValueError("need lo <= hi (not NaN)")
        if r.shape[0]:
            self._ensure(int(r.max()) + 1)
        self._lo[r, int(alarm_type)] = lo_a
        self._hi[r, int(alarm_type)] = hi_a

    # -- ingest ----------------------------------------------------------------------------
    def update(self, restaurant: np.ndarray, ts_ns: np.ndarray, code: np.ndarray,
               value: np.ndarray) -> KitchenUpdate:
        """Feed a batch (int64 restaurant ids, int64 ns, measurement codes ``M_*`` as int8
        or int64, float64 values); returns the alarm transitions it caused, day-end
        evaluations included, in order."""
        r = _check_1d("restaurant", restaurant, np.int64)
        t = _check_1d("ts_ns", ts_ns, np.int64)
        m = _check_1d("code", code, (np.int8, np.int64))
        v = _check_1d("value", value, np.float64)
        n = r.shape[0]
        if not n == t.shape[0] == m.shape[0] == v.shape[0]:
            raise ValueError(f"restaurant, ts_ns, code and value must have equal lengths, got "
                             f"{n}, {t.shape[0]}, {m.shape[0]}, {v.shape[0]}")
        if n == 0:
            return KitchenUpdate(AlarmTransitions.empty(), 0, 0, 0, 0, 0)
        r_min, r_max, m_min, m_max, t_min, t_max = (int(x) for x in _ranges(r, m, t))
        if r_min < 0:
            raise ValueError(f"restaurant ids must be >= 0, got {r_min}; drop "
                             "unresolved rows")
        if m_min < 0 or m_max >= len(MEASUREMENTS):
            raise ValueError(f"measurement codes must be in [0, {len(MEASUREMENTS)}) (M_*), "
                             f"got [{m_min}, {m_max}]")
        if t_min <= -(2**62) or t_max >= 2**62:
            raise ValueError("ts_ns out of range: |ts_ns| must be < 2**62 (year 2116)")
        m64 = m.astype(np.int64, copy=False)  # read only: int64 codes need no copy
        self._ensure(r_max + 1)
        if self._day is None:
            self._day = self.local_day(int(t[0]))
        bufs = _buffers(n)
        counters = np.zeros(5, dtype=np.int64)
        parts: list[AlarmTransitions] = []
        pos = 0
        k_lo = 0
        while True:
            status, pos, k = _kitchen_kernel(
                pos, r, t, m64, v, self._day, self._tz_ns, self._lo, self._hi,
                self._min_dur, self._clear_ns, self._ongoing_ns, self.config.uv_cumulative,
                self._ai_max, self._open, self._pending, self._clear_pending, self._raised_ts,
                self._last_emit, self._last_ts, self._peak, self._peak_key, self._last_val,
                self._uv, self._has_uv, self._ai_cnt, counters, k_lo, *bufs)
            parts.append(_transitions(bufs, int(k), k_lo))
            k_lo = int(k)
            if status == _DONE:
                break
            parts.append(self._close_day())
            self._day = self.local_day(int(t[pos]))
        c = counters.tolist()
        return KitchenUpdate(AlarmTransitions.concat(parts), *c)

    def day_end(self, now_ns: int) -> AlarmTransitions:
        """Close the current local day if ``now_ns`` is at or past its end (evaluate UV,
        clear AI alarms, restart the day's counts) and move to ``now_ns``'s day. Call it on a
        timer at local midnight; a no-op otherwise."""
        if self._day is None:
            self._day = self.local_day(int(now_ns))
            return AlarmTransitions.empty()
        if int(now_ns) < self.day_end_ns(self._day):
            return AlarmTransitions.empty()
        out = self._close_day()
        self._day = self.local_day(int(now_ns))
        return out

    def _close_day(self) -> AlarmTransitions:
        assert self._day is not None
        bufs = _buffers(self._n * (1 + _N_AI))
        k = _day_end(self.day_end_ns(self._day), self._n, float(self.config.uv_min_minutes),
                     self._open, self._raised_ts, self._last_emit, self._peak,
                     self._last_val, self._uv, self._has_uv, self._ai_cnt, *bufs)
        return _transitions(bufs, int(k))

    # -- queries ---------------------------------------------------------------------------
    def open_alarms(self) -> AlarmTransitions:
        """Every open alarm as a row (state ``ST_ONGOING``, ``ts_ns`` = last emitted
        transition, ``value`` = latest violating value), ordered by (restaurant, type)."""
        op = self._open[: self._n]
        rr, aa = np.nonzero(op)
        return AlarmTransitions(
            rr.astype(np.int64), aa.astype(np.uint8),
            np.full(rr.shape[0], ST_ONGOING, dtype=np.uint8),
            self._last_emit[rr, aa].copy(), self._last_val[rr, aa].copy(),
            self._peak[rr, aa].copy(), self._raised_ts[rr, aa].copy())

    def ai_counts(self) -> np.ndarray:
        """int64 ``[n_restaurants, 6]``: today's AI events per code (column = code - 1)."""
        return self._ai_cnt[: self._n].copy()

    def uv_minutes(self) -> np.ndarray:
        """float64 ``[n_restaurants]``: UV minutes counted for the current day so far."""
        return self._uv[: self._n].copy()
