"""Environmental noise against GB 3096-2008 (声环境质量标准) limits, per reading or window row.

Zones and limits, LAeq dB(A) (``LIMITS[period, zone]``, a setting: pass ``limits=``):

======  ====  ====  ====  ====  ====  ====
zone    0     1     2     3     4a    4b
code    0     1     2     3     4     5
day     50    55    60    65    70    70
night   40    45    50    55    55    60
======  ====  ====  ====  ====  ====  ====

Period: local time (UTC+8, ``tz_offset_s``) of the timestamp; *day* is ``[06:00, 22:00)``,
*night* ``[22:00, 06:00)`` (the bounds are settings: ``day_start_s``/``day_end_s``, seconds
after local midnight). For closed window rows pass ``window_start_ns``: hourly windows on
UTC hours are whole local hours (the offset is whole hours), so each lies in one period.

``exceedance = laeq - limit`` (dB; positive = exceeding, 0 = at the limit = compliant). NaN
when ``laeq`` is NaN or the monitor's zone code is invalid (``< 0`` or ``> 5``, e.g. ``-1`` =
zone not configured); then ``limit`` is NaN too (for an invalid zone) and the reading is not
counted by ``noise_daily``.

Period codes: ``PERIOD_DAY`` 0, ``PERIOD_NIGHT`` 1.

Daily aggregate (``noise_daily``): the *noise day* ``d`` of a reading is the local date on
which its day period starts: ``d = floor((ts + tz_offset - day_start) / 1 day)`` (days since
1970-01-01), so noise day ``d`` is the day period ``[06:00, 22:00)`` of date ``d`` followed
by the night ``[22:00, 06:00 of d + 1)`` -- a night is reported with the evening it starts
on, never split across two dates. One row per (monitor, noise day) with valid readings.

Kernels: ``_exceedance`` (one pass over readings), ``_daily`` (one pass over readings sorted
by (noise day, monitor)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numba import njit

from hub.arrays import check_1d as _check_1d
from hub.kernel_config import CACHE, FASTMATH, NOGIL

__all__ = [
    "LIMITS",
    "PERIOD_DAY",
    "PERIOD_NIGHT",
    "ZONE_CODES",
    "NoiseDaily",
    "NoiseExceedance",
    "noise_daily",
    "noise_exceedance",
    "zone_code",
]

#: Zone name -> code.
ZONE_CODES: Final[dict[str, int]] = {"0": 0, "1": 1, "2": 2, "3": 3, "4a": 4, "4b": 5}
PERIOD_DAY: Final = 0
PERIOD_NIGHT: Final = 1
#: GB 3096-2008 limits, dB(A): ``LIMITS[period, zone_code]`` (read-only).
LIMITS: Final = np.array([[50.0, 55.0, 60.0, 65.0, 70.0, 70.0],
                          [40.0, 45.0, 50.0, 55.0, 55.0, 60.0]], dtype=np.float64)
LIMITS.flags.writeable = False

NS_PER_S: Final = 1_000_000_000
NS_PER_DAY: Final = 86_400 * NS_PER_S
_TZ_CST = 8 * 3600
_DAY_START = 6 * 3600
_DAY_END = 22 * 3600


def zone_code(name: str) -> int:
    """``"0" | "1" | "2" | "3" | "4a" | "4b"`` (case-insensitive) -> 0..5."""
    try:
        return ZONE_CODES[str(name).strip().lower()]
    except KeyError:
        raise ValueError(f"unknown GB 3096 zone {name!r}; one of {list(ZONE_CODES)}") from None


@dataclass(frozen=True, slots=True)
class NoiseExceedance:
    """Per input row of ``noise_exceedance``."""

    period: np.ndarray  #: uint8: PERIOD_DAY / PERIOD_NIGHT
    limit: np.ndarray  #: float64 dB(A) (NaN for an invalid zone)
    exceedance: np.ndarray  #: float64 laeq - limit (NaN if laeq NaN or zone invalid)
    noise_day: np.ndarray  #: int64 days since 1970-01-01 (see module doc)

    def __len__(self) -> int:
        return int(self.period.shape[0])


@dataclass(frozen=True, slots=True)
class NoiseDaily:
    """One row per (monitor, noise day) with valid readings, ordered by (noise_day,
    monitor). ``*_exceed`` count readings with exceedance > 0; ``max_*`` is the largest
    exceedance of the period (NaN when it had no valid reading)."""

    monitor: np.ndarray  #: int64
    noise_day: np.ndarray  #: int64
    n_day: np.ndarray  #: int64 valid readings in the day period
    n_day_exceed: np.ndarray  #: int64
    n_night: np.ndarray  #: int64
    n_night_exceed: np.ndarray  #: int64
    max_day: np.ndarray  #: float64 dB
    max_night: np.ndarray  #: float64 dB

    def __len__(self) -> int:
        return int(self.monitor.shape[0])


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _exceedance(monitor, ts_ns, laeq, zone, limits, tz_ns, day_start_ns, day_end_ns,
                o_period, o_limit, o_exc, o_day):
    n_zones = limits.shape[1]
    for i in range(ts_ns.shape[0]):
        local = ts_ns[i] + tz_ns
        tod = local % NS_PER_DAY  # floor modulo: in [0, 1 day) for negative times too
        p = 0 if day_start_ns <= tod < day_end_ns else 1
        o_period[i] = p
        o_day[i] = (local - day_start_ns) // NS_PER_DAY
        z = zone[monitor[i]]
        if z < 0 or z >= n_zones:
            o_limit[i] = np.nan
            o_exc[i] = np.nan
        else:
            lim = limits[p, z]
            o_limit[i] = lim
            o_exc[i] = laeq[i] - lim


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _daily(order, monitor, noise_day, period, exc, o_i, o_f):
    """Fold readings visited in ``order`` (grouped by (noise_day, monitor)); NaN exceedance
    is skipped. ``o_i`` rows: monitor, noise_day, n_day, n_day_exceed, n_night,
    n_night_exceed; ``o_f`` rows: max_day, max_night. Returns the number of rows."""
    j = -1
    for k in range(order.shape[0]):
        r = order[k]
        e = exc[r]
        if e != e:
            continue
        m = monitor[r]
        d = noise_day[r]
        if j < 0 or o_i[0, j] != m or o_i[1, j] != d:
            j += 1
            o_i[0, j] = m
            o_i[1, j] = d
            for c in range(2, 6):
                o_i[c, j] = 0
            o_f[0, j] = np.nan
            o_f[1, j] = np.nan
        p = period[r]
        o_i[2 + 2 * p, j] += 1
        if e > 0.0:
            o_i[3 + 2 * p, j] += 1
        cur = o_f[p, j]
        if cur != cur or e > cur:
            o_f[p, j] = e
    return j + 1




def _check_period_settings(tz_offset_s: int, day_start_s: int, day_end_s: int) -> None:
    if not 0 <= day_start_s < day_end_s <= 86_400:
        raise ValueError(f"need 0 <= day_start_s < day_end_s <= 86400, got {day_start_s}, "
                         f"{day_end_s}")
    if abs(tz_offset_s) > 14 * 3600:
        raise ValueError(f"tz_offset_s must be within ±14 h, got {tz_offset_s}")


def noise_exceedance(monitor: np.ndarray, ts_ns: np.ndarray, laeq: np.ndarray,
                     monitor_zone: np.ndarray, limits: np.ndarray | None = None,
                     tz_offset_s: int = _TZ_CST, day_start_s: int = _DAY_START,
                     day_end_s: int = _DAY_END) -> NoiseExceedance:
    """Period, limit and exceedance per reading (module doc).

    ``monitor``: int64 ids indexing ``monitor_zone`` (int8 zone code per monitor, ``-1`` =
    unknown); ``ts_ns``: int64 ns UTC (a window row's start); ``laeq``: float64 dB(A).
    ``limits``: float64 ``[2, 6]`` override of ``LIMITS``.
    """
    m = _check_1d("monitor", monitor, np.int64)
    t = _check_1d("ts_ns", ts_ns, np.int64)
    v = _check_1d("laeq", laeq, np.float64)
    z = _check_1d("monitor_zone", monitor_zone, np.int8)
    lim = LIMITS if limits is None else limits
    if not isinstance(lim, np.ndarray) or lim.shape != (2, 6) or lim.dtype != np.float64:
        raise ValueError("limits must be a float64 array of shape (2, 6): [day, night] x "
                         "zones 0, 1, 2, 3, 4a, 4b")
    lim = np.ascontiguousarray(lim)
    _check_period_settings(int(tz_offset_s), int(day_start_s), int(day_end_s))
    n = m.shape[0]
    if not n == t.shape[0] == v.shape[0]:
        raise ValueError(f"monitor, ts_ns and laeq must have equal lengths, got {n}, "
                         f"{t.shape[0]}, {v.shape[0]}")
    if n and (int(m.min()) < 0 or int(m.max()) >= z.shape[0]):
        raise ValueError(f"monitor ids must be in [0, len(monitor_zone)={z.shape[0]}), got "
                         f"[{int(m.min())}, {int(m.max())}]; extend monitor_zone (-1 = unknown)")
    tz_ns = int(tz_offset_s) * NS_PER_S
    if n and (int(t.max()) > 2**63 - 1 - tz_ns - NS_PER_DAY
              or int(t.min()) < -(2**63) + 2 * NS_PER_DAY + abs(tz_ns)):
        raise ValueError("ts_ns too close to the int64 range limits")
    period = np.empty(n, dtype=np.uint8)
    limit = np.empty(n, dtype=np.float64)
    exc = np.empty(n, dtype=np.float64)
    day = np.empty(n, dtype=np.int64)
    if n:
        _exceedance(m, t, v, z, lim, tz_ns, int(day_start_s) * NS_PER_S,
                    int(day_end_s) * NS_PER_S, period, limit, exc, day)
    return NoiseExceedance(period, limit, exc, day)


def noise_daily(monitor: np.ndarray, result: NoiseExceedance) -> NoiseDaily:
    """Exceedance counts per (monitor, noise day) and period from a ``noise_exceedance``
    result (``monitor`` is the id array passed to it)."""
    m = _check_1d("monitor", monitor, np.int64)
    if m.shape[0] != len(result):
        raise ValueError(f"monitor has {m.shape[0]} rows, the result {len(result)}")
    n = m.shape[0]
    order = np.lexsort((m, result.noise_day)).astype(np.int64)
    o_i = np.empty((6, n), dtype=np.int64)
    o_f = np.empty((2, n), dtype=np.float64)
    k = int(_daily(order, m, result.noise_day, result.period, result.exceedance, o_i, o_f))
    o_i = o_i[:, :k].copy()
    o_f = o_f[:, :k].copy()
    return NoiseDaily(o_i[0], o_i[1], o_i[2], o_i[3], o_i[4], o_i[5], o_f[0], o_f[1])
