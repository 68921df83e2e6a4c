"""China's Air Quality Index (HJ 633-2012 and HJ 633-2026), vectorised over stations.

Units and inputs
----------------
* Concentrations are float64 in µg/m³, except CO in mg/m³. Columns, always in this order
  (``COLUMNS``): ``pm2_5, pm10, so2, no2, co, o3, o3_8h`` -- the six pollutants of
  ``POLLUTANTS`` plus the O3 8 h sliding mean as a seventh input.
* NaN is "no value" (missing, invalid). A negative or infinite concentration is not a
  measurement either (analyser drift below zero, overflowing counter): it counts as NaN.
  A NaN IAQI is left out of the AQI; a station with no IAQI at all has AQI NaN, category 0.
* ``standard`` is ``2012`` or ``2026`` (the year of HJ 633; 2026 is in force since
  2026-03-01 and is the default). ``period`` is ``"1h"`` (real-time hourly report) or
  ``"24h"`` (daily report).

Which breakpoint column each input uses
---------------------------------------
========  =============================  ====================================
column    ``"1h"`` (hourly)              ``"24h"`` (daily)
========  =============================  ====================================
pm2_5     PM2.5 24 h, on the 1 h mean    PM2.5 24 h
pm10      PM10 24 h, on the 1 h mean     PM10 24 h
so2       SO2 1 h                        SO2 24 h
no2       NO2 1 h                        NO2 24 h
co        CO 1 h                         CO 24 h
o3        O3 1 h                         O3 1 h, on the day's maximum 1 h mean
o3_8h     O3 8 h, on the sliding mean    O3 8 h, on the day's maximum 8 h mean
========  =============================  ====================================

O3 has no 24 h column: a daily report rates O3 on its daily maximum 8 h mean (``o3_8h``).
In the daily period the ``o3`` column is read as the day's maximum *1 h* mean -- never the
24 h mean -- and is optional (NaN: not rated); HJ 633-2012 needs it when the 8 h value
exceeds 800. In the hourly period ``o3_8h`` takes part in the AQI when it is given
(non-NaN): our reference (``domain.md``) publishes the sliding 8 h mean hourly but does not
say whether it enters the hourly AQI, so a caller who wants the 1 h O3 alone passes NaN.

IAQI arithmetic and rounding (decided)
--------------------------------------
``IAQI = (IAQI_hi - IAQI_lo) / (BP_hi - BP_lo) * (C - BP_lo) + IAQI_lo``, then rounded UP
to an integer (ceil) under both standards (our reference states it for 2026; for 2012 it is
our choice, so both editions agree); the AQI is the largest IAQI, so it is an integer.

* A float64 concentration stands for the decimal number it prints as (``repr``): 2.2 mg/m³
  of CO is exactly 2.2. The kernels compute the ceil *exactly* under that reading, so CO 24 h
  2.2 is IAQI 55 -- the textbook float formula gives 55.00000000000001 and a ceil of 56; see
  ``_iaqi_kernel``. (``tests/naive_aqi.py`` is the exact ``decimal``/``Fraction`` reference.)
* 2012: concentrations are used as given (our reference gives concentration rounding for
  2026 only).
* 2026: CO is first rounded to 0.1 mg/m³, every other concentration to 1 µg/m³, both
  half-to-even ("四舍六入五成双", GB/T 8170 -- the national rounding rule; the reference only
  says "rounded"), then the IAQI is rounded up. The 8 h O3 mean is rounded like the others.
* A concentration on a breakpoint gets that breakpoint's IAQI (both segments agree).
* Above the top of a column the IAQI is capped at 500, except where a special rule says
  otherwise:

  - 2012, hourly SO2 above 800 µg/m³: the 1 h SO2 IAQI is not computed; the IAQI is looked up
    in the SO2 **24 h** column with the same concentration (the kernel has no 24 h mean at
    hand; the 1 h mean is the best estimate of it) -- e.g. 801 → 200.125 → 201.
  - 2012, O3 8 h above 800 µg/m³: the 8 h IAQI is not computed (NaN in column ``o3_8h``);
    O3 is rated by its 1 h value in column ``o3`` (NaN if that was not given).
  - 2026: hourly SO2 above 800 µg/m³ → IAQI 200; O3 8 h above 800 µg/m³ → IAQI 300.

Categories and primary pollutant
--------------------------------
Category 1..6 from the AQI: ≤50 优, ≤100 良, ≤150 轻度污染, ≤200 中度污染, ≤300 重度污染,
above 严重污染; 0 when the AQI is NaN (see ``category_info``). The primary pollutant(s) are
reported only when AQI > 50: every column whose IAQI equals the AQI (ties all listed), as
bit ``i`` of ``primary_mask`` for column ``i``. HJ 633-2012 also names "exceeding
pollutants" (IAQI > 100); HJ 633-2026 drops them (``exceeding_mask`` is then all zero).

O3 8 h sliding mean (``O3EightHour``)
-------------------------------------
The value stamped ``hh:00`` is the mean of the 8 hourly means stamped ``hh-7 .. hh``
(the hour stamped 16:00 covers 15:00-16:00), valid only with at least 6 of the 8 hours
present (GB 3095-2012's validity rule); otherwise NaN. The daily maximum is taken over the 17
windows ending 08:00..24:00 of the day and needs 14 of them (HJ 663-2013; both numbers are
constructor settings, not in our reference).

District / city AQI (``group_mean``)
------------------------------------
In China a city's (or district's) AQI is not a mean of station AQIs: each pollutant's
concentration is first averaged over the area's stations, then the IAQIs and the AQI are
computed from those means. ``group_mean`` does the averaging (NaN-ignoring), and the result
goes through ``iaqi``/``aqi_from_iaqi`` -- or, hour by hour, through an
``AirQualityTracker`` keyed by district id, whose O3 8 h value is then the sliding mean of
the district's hourly means (not a mean of the stations' 8 h means, which differ when
stations miss different hours).

Kernels (stumpy-style layers): private ``@njit`` loops; public wrappers that check dtype,
shape and contiguity and say how to fix bad input. The IAQI kernel is compiled with
``EXACT`` (no fastmath) because its exact ceil relies on correctly rounded division; the
others use the shared ``FASTMATH`` policy. All release the GIL; none is parallel (callers
may split rows across threads). Throughput, 1M stations with 2% NaN, warm, best of 7, one
core of the 2-core dev VM under a load average of ~3 (so a floor): ``iaqi`` 10-14 M
stations/s, ``aqi_from_iaqi`` 45-60 M/s, both together 8-11 M/s; ``update_hour`` (O3 ring
included) ~6 M/s; ``group_mean`` 80-100 M rows/s. The exact reference: ~5 k stations/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
from numba import njit

from hub.kernel_config import CACHE, EXACT, FASTMATH, NOGIL

__all__ = [
    "COLUMNS",
    "DISPLAY_NAMES",
    "HOUR_NS",
    "IAQI_LEVELS",
    "N_COLUMNS",
    "PERIODS",
    "POLLUTANTS",
    "STANDARDS",
    "AirQualityTracker",
    "AqiResult",
    "O3EightHour",
    "aqi_from_iaqi",
    "breakpoints",
    "category_info",
    "exceeding_mask",
    "group_mean",
    "iaqi",
    "pollutant_index",
    "primary_names",
]

# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------

#: The six pollutants, in column order.
POLLUTANTS: Final = ("pm2_5", "pm10", "so2", "no2", "co", "o3")
#: Input/IAQI columns: the six pollutants plus the O3 8 h sliding mean.
COLUMNS: Final = (*POLLUTANTS, "o3_8h")
N_COLUMNS: Final = 7
#: Names as written in the standard, by column.
DISPLAY_NAMES: Final = ("PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "O3_8h")
#: Unit of each column.
UNITS: Final = ("µg/m³", "µg/m³", "µg/m³", "µg/m³", "mg/m³", "µg/m³", "µg/m³")
STANDARDS: Final = (2012, 2026)
PERIODS: Final = ("1h", "24h")
HOUR_NS: Final = 3_600_000_000_000
DAY_NS: Final = 24 * HOUR_NS

I_PM25, I_PM10, I_SO2, I_NO2, I_CO, I_O3, I_O3_8H = range(7)

_ALIASES: Final[dict[str, int]] = {
    "pm2_5": I_PM25, "pm25": I_PM25, "pm10": I_PM10, "so2": I_SO2, "no2": I_NO2,
    "co": I_CO, "o3": I_O3, "o3_1h": I_O3, "o3_8h": I_O3_8H, "o38h": I_O3_8H,
}


def pollutant_index(name: str) -> int:
    """Column index of a pollutant name, any case, ``.``/``-``/``_`` alike: ``PM2.5``,
    ``pm2_5``, ``PM25`` → 0; ``O3_8h``, ``o3-8h`` → 6; ``O3_1h`` is ``O3``."""
    key = name.strip().lower().replace(".", "_").replace("-", "_").replace(" ", "")
    try:
        return _ALIASES[key]
    except KeyError:
        raise ValueError(f"unknown pollutant {name!r}; one of "
                         f"{', '.join(DISPLAY_NAMES)} (any case)") from None


# --------------------------------------------------------------------------------------------
# Breakpoint tables (HJ 633-2012 table 1, and the HJ 633-2026 changes)
# --------------------------------------------------------------------------------------------

#: IAQI at each breakpoint row.
IAQI_LEVELS: Final = np.array([0, 50, 100, 150, 200, 300, 400, 500], dtype=np.float64)
_N = math.nan
# Columns of the 2012 table, µg/m³ (CO mg/m³); NaN where the table has "—".
_SO2_24H = [0, 50, 150, 475, 800, 1600, 2100, 2620]
_SO2_1H = [0, 150, 500, 650, 800, _N, _N, _N]
_NO2_24H = [0, 40, 80, 180, 280, 565, 750, 940]
_NO2_1H = [0, 100, 200, 700, 1200, 2340, 3090, 3840]
_PM10_2012 = [0, 50, 150, 250, 350, 420, 500, 600]
_PM10_2026 = [0, 50, 120, 250, 350, 420, 500, 600]
_CO_24H = [0, 2, 4, 14, 24, 36, 48, 60]
_CO_1H = [0, 5, 10, 35, 60, 90, 120, 150]
_O3_1H = [0, 160, 200, 300, 400, 800, 1000, 1200]
_O3_8H = [0, 100, 160, 215, 265, 800, _N, _N]
_PM25_2012 = [0, 35, 75, 115, 150, 250, 350, 500]
_PM25_2026 = [0, 35, 60, 115, 150, 250, 350, 500]

# What happens above the top breakpoint of a column.
OVER_CAP = 0  #: IAQI 500 (the column reaches IAQI 500)
OVER_CONST = 1  #: a fixed IAQI (2026: SO2 1 h → 200, O3 8 h → 300)
OVER_ALT = 2  #: look the value up in the alternative column (2012: SO2 1 h → SO2 24 h)
OVER_NAN = 3  #: not computed (2012: O3 8 h; the 1 h O3 IAQI stands)

# Concentration rounding before the lookup.
ROUND_NONE = -1
ROUND_INT = 0
ROUND_TENTH = 1


#: Row of the lookup tables holding the OVER_ALT column (2012: SO2 24 h).
ALT_ROW = 7


@dataclass(frozen=True)
class _Table:
    bp: np.ndarray  # float64 [8, 8]: rows 0..6 the columns, row ALT_ROW; NaN past the top
    slope: np.ndarray  # float64 [8, 8]: IAQI per unit in the segment ending at each index
    top: np.ndarray  # int64 [7]: index of each column's last breakpoint
    over_mode: np.ndarray  # int64 [7]
    over_value: np.ndarray  # float64 [7] (OVER_CONST)
    rounding: np.ndarray  # int64 [7]


def _build_table(standard: int, period: str) -> _Table:
    pm25 = _PM25_2012 if standard == 2012 else _PM25_2026
    pm10 = _PM10_2012 if standard == 2012 else _PM10_2026
    if period == "1h":
        cols = [pm25, pm10, _SO2_1H, _NO2_1H, _CO_1H, _O3_1H, _O3_8H]
    else:
        cols = [pm25, pm10, _SO2_24H, _NO2_24H, _CO_24H, _O3_1H, _O3_8H]
    # One array for the columns and the alternative column: the kernel switches rows by
    # index (switching between two arrays costs reference counting in the inner loop).
    bp = np.array([*cols, _SO2_24H], dtype=np.float64)
    slope = np.full(bp.shape, np.nan)
    slope[:, 1:] = np.diff(IAQI_LEVELS) / np.diff(bp, axis=1)
    top = np.array([int(np.flatnonzero(~np.isnan(r))[-1]) for r in bp[:7]], dtype=np.int64)
    over_mode = np.full(7, OVER_CAP, dtype=np.int64)
    over_value = np.full(7, 500.0)
    if standard == 2012:
        if period == "1h":
            over_mode[I_SO2] = OVER_ALT
        over_mode[I_O3_8H] = OVER_NAN
        rounding = np.full(7, ROUND_NONE, dtype=np.int64)
    else:
        if period == "1h":
            over_mode[I_SO2] = OVER_CONST
            over_value[I_SO2] = 200.0
        over_mode[I_O3_8H] = OVER_CONST
        over_value[I_O3_8H] = 300.0
        rounding = np.full(7, ROUND_INT, dtype=np.int64)
        rounding[I_CO] = ROUND_TENTH
    for c in range(7):  # a column that stops short of IAQI 500 must have a special rule
        assert top[c] == 7 or over_mode[c] != OVER_CAP, (standard, period, c)
    for arr in (bp, slope, top, over_mode, over_value, rounding):
        arr.flags.writeable = False
    return _Table(bp, slope, top, over_mode, over_value, rounding)


_TABLES: Final = {(s, p): _build_table(s, p) for s in STANDARDS for p in PERIODS}


def _table(standard: int, period: str) -> _Table:
    if standard not in STANDARDS:
        raise ValueError(f"standard must be 2012 or 2026 (HJ 633-2012 / HJ 633-2026, in force "
                         f"since 2026-03-01), got {standard!r}")
    if period not in PERIODS:
        raise ValueError(f"period must be '1h' (hourly real-time report) or '24h' (daily "
                         f"report), got {period!r}")
    return _TABLES[(int(standard), period)]


def breakpoints(standard: int = 2026, period: str = "1h") -> np.ndarray:
    """Read-only float64 ``[7, 8]`` breakpoints, one row per column of ``COLUMNS`` (the one
    the period uses, see the module doc), NaN past a column's top; IAQI per breakpoint
    index in ``IAQI_LEVELS``."""
    return _table(standard, period).bp[:7]


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


#: Distance from an integer below which the float estimate of an IAQI is not trusted and an
#: exact test decides. The estimate's error is far smaller: concentrations on the tables
#: are <= 3840, so |x - C| <= ulp/2 <= 2.3e-13, slopes are <= 25 IAQI per unit, and the two
#: float operations add a few ulp of 500.
_NEAR = 1e-9
#: Under 2026 rounding an exact IAQI is an integer or >= 1/1140 above one (see the kernel).
_WHOLE_MARGIN = 1e-6


@njit(cache=CACHE, fastmath=EXACT)
def _tenths(x):
    """``x`` (>= 0) rounded to tenths as the decimal it prints as, half to even, as a count
    of tenths (an integer-valued float).

    ``h(m) = (2m+1)/20`` is the correctly rounded double of the decimal half-way point
    between ``m`` and ``m+1`` tenths: ``x`` is above/below/at that decimal exactly when it is
    above/below/equal to ``h(m)`` (rounding to double is monotone). Values clearly away from a
    half-way point (the common case) skip that test, and so do values far above every table
    (>= 1e5; they are capped, and near 2**53 a step of 1.0 would not even change ``n``).
    """
    y = x * 10.0
    n = np.rint(y)
    if y >= 1e6 or abs(abs(y - n) - 0.5) > _NEAR:
        return n
    while x > (2.0 * n + 1.0) / 20.0:
        n += 1.0
    while x < (2.0 * n - 1.0) / 20.0:
        n -= 1.0
    if n % 2.0 != 0.0:  # odd: a tie goes to the even neighbour
        if x == (2.0 * n + 1.0) / 20.0:
            n += 1.0
        elif x == (2.0 * n - 1.0) / 20.0:
            n -= 1.0
    return n


@njit(cache=CACHE, fastmath=EXACT)
def _ceil_steps_decimal(x, lo, dbp, di, m):
    """Exact ``ceil(di * (C - lo) / dbp)`` for the decimal ``C`` that ``x`` prints as, given
    an estimate ``m`` within one of it.

    It is the smallest integer ``m`` with ``C <= q(m) = lo + m * dbp / di``. Every ``q(m)`` is
    a decimal with at most two places (``di`` is 50 or 100, breakpoints are integers), and
    ``Q(m) = (lo*di + m*dbp) / di`` -- integer operands, one IEEE division -- is its
    correctly rounded double; so ``x <= Q(m)`` decides ``C <= q(m)`` exactly.
    """
    base = lo * di
    m = min(max(m, 1.0), di)
    while m > 1.0 and x <= (base + (m - 1.0) * dbp) / di:
        m -= 1.0
    while x > (base + m * dbp) / di:
        m += 1.0
    return m


@njit(cache=CACHE, fastmath=EXACT, nogil=NOGIL)
def _iaqi_kernel(conc, bp, slope, top, over_mode, over_value, rounding, out):
    """IAQI of every cell of ``conc [n, 7]`` into ``out [n, 7]`` (see the module doc).

    Per cell: validate; round (2026); above the column's top apply its OVER_* rule (OVER_ALT
    continues in row ``ALT_ROW``); find the segment; ``t = (x - lo) * slope``; ``ceil(t)``
    unless ``t`` is within ``_NEAR`` of an integer, where an exact test decides: integer
    arithmetic in doubles for a whole-number value, else ``_ceil_steps_decimal``. Rounded
    (2026) values need no test: ``ceil(t - _WHOLE_MARGIN)`` is exact for them.
    """
    n = conc.shape[0]
    for i in range(n):
        for c in range(7):
            x = conc[i, c]
            # NaN, negative and +inf are not measurements (every comparison with NaN is False).
            if not (0.0 <= x < np.inf):
                out[i, c] = np.nan
                continue
            r = rounding[c]
            if r == ROUND_INT:
                x = np.rint(x)
            elif r == ROUND_TENTH:
                x = _tenths(x) / 10.0
            if x <= 0.0:
                out[i, c] = 0.0
                continue
            row = c
            if x > bp[c, top[c]]:
                mode = over_mode[c]
                if mode == OVER_CAP:
                    out[i, c] = 500.0
                    continue
                if mode == OVER_CONST:
                    out[i, c] = over_value[c]
                    continue
                if mode == OVER_NAN:
                    out[i, c] = np.nan
                    continue
                if x > bp[ALT_ROW, 7]:
                    out[i, c] = 500.0
                    continue
                row = ALT_ROW
            k = 1
            while x > bp[row, k]:
                k += 1
            lo = bp[row, k - 1]
            ilo = IAQI_LEVELS[k - 1]
            t = (x - lo) * slope[row, k]
            if r != ROUND_NONE:
                # x is a whole number (of tenths for CO): the exact IAQI step count is a
                # fraction whose denominator divides hi - lo (10 * (hi - lo) <= 300 for CO),
                # at most 1140: an integer, or >= 1/1140 above one -- far more than
                # _WHOLE_MARGIN plus the float error.
                out[i, c] = ilo + np.ceil(t - _WHOLE_MARGIN)
                continue
            m = np.ceil(t)
            if m - t <= _NEAR or t - (m - 1.0) <= _NEAR:
                di = IAQI_LEVELS[k] - ilo
                dbp = bp[row, k] - lo
                if x == np.floor(x):
                    # di * (x - lo) and m * dbp are integers below 2**53: exact.
                    m = np.rint(t)
                    if m * dbp < di * (x - lo):
                        m += 1.0
                else:
                    m = _ceil_steps_decimal(x, lo, dbp, di, m)
            out[i, c] = ilo + m


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _aqi_kernel(iaqi, aqi, primary, category):
    n, m = iaqi.shape
    for i in range(n):
        best = -np.inf
        for c in range(m):
            v = iaqi[i, c]
            if v > best:  # False for NaN
                best = v
        if best == -np.inf:
            aqi[i] = np.nan
            primary[i] = 0
            category[i] = 0
            continue
        aqi[i] = best
        mask = 0
        if best > 50.0:
            for c in range(m):
                if iaqi[i, c] == best:
                    mask |= 1 << c
        primary[i] = mask
        if best <= 50.0:
            category[i] = 1
        elif best <= 100.0:
            category[i] = 2
        elif best <= 150.0:
            category[i] = 3
        elif best <= 200.0:
            category[i] = 4
        elif best <= 300.0:
            category[i] = 5
        else:
            category[i] = 6


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _exceeding_kernel(iaqi, out):
    n, m = iaqi.shape
    for i in range(n):
        mask = 0
        for c in range(m):
            if iaqi[i, c] > 100.0:
                mask |= 1 << c
        out[i] = mask


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _group_mean_kernel(conc, groups, out):
    """NaN-ignoring mean of the rows of each group; groups already validated in range."""
    n_groups, c = out.shape
    sums = np.zeros((n_groups, c))
    counts = np.zeros((n_groups, c), dtype=np.int64)
    for i in range(conc.shape[0]):
        g = groups[i]
        for j in range(c):
            v = conc[i, j]
            if v == v:
                sums[g, j] += v
                counts[g, j] += 1
    for g in range(n_groups):
        for j in range(c):
            out[g, j] = sums[g, j] / counts[g, j] if counts[g, j] > 0 else np.nan


_NO_HOUR = -(2**63)
H1_SLOTS = 8  #: hourly O3 values kept per station (the 8 h window)
H8_SLOTS = 32  #: 8 h means kept per station (a day's 17 windows + 15 h of slack)


@njit(cache=CACHE, nogil=NOGIL)
def _o3_check(ids, hour, last_hour, mark):
    """First index of a duplicated id (code 1) or of a station whose last hour is newer than
    ``hour`` (code 2); (-1, 0) when the batch is fine. ``mark`` is all-zero on entry and on
    exit."""
    bad = -1
    code = 0
    for i in range(ids.shape[0]):
        s = ids[i]
        if mark[s]:
            bad = i
            code = 1
            break
        mark[s] = 1
        lh = last_hour[s]
        if lh != _NO_HOUR and lh > hour:
            bad = i
            code = 2
            break
    for i in range(ids.shape[0]):
        mark[ids[i]] = 0
    return bad, code


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _o3_update(ids, hour, o3, h1, h8, last_hour, min_valid, out):
    """Store each station's hourly O3 for ``hour`` and its 8 h mean; hours skipped since its
    last update become NaN. Stations passed ``_o3_check`` (no duplicates, not late)."""
    n1 = h1.shape[1]
    n8 = h8.shape[1]
    for i in range(ids.shape[0]):
        s = ids[i]
        lh = last_hour[s]
        if lh == _NO_HOUR or hour - lh >= n8:
            h1[s, :] = np.nan
            h8[s, :] = np.nan
        else:
            for hh in range(lh + 1, hour + 1):  # empty for a revision (hour == lh)
                h1[s, hh % n1] = np.nan
                h8[s, hh % n8] = np.nan
        v = o3[i]
        h1[s, hour % n1] = v if 0.0 <= v < np.inf else np.nan
        total = 0.0
        count = 0
        for j in range(n1):
            x = h1[s, j]
            if x == x:
                total += x
                count += 1
        mean = total / count if count >= min_valid else np.nan
        h8[s, hour % n8] = mean
        out[i] = mean
        last_hour[s] = hour


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _o3_daily_max(ids, end_hour, n_windows, min_valid, h8, last_hour, out):
    """Max of the 8 h means of the ``n_windows`` hours ending at ``end_hour`` (NaN with fewer
    than ``min_valid`` of them present in the ring)."""
    n8 = h8.shape[1]
    for i in range(ids.shape[0]):
        s = ids[i]
        lh = last_hour[s]
        best = -np.inf
        count = 0
        if lh != _NO_HOUR:
            for hh in range(end_hour - n_windows + 1, end_hour + 1):
                if hh > lh or hh <= lh - n8:
                    continue
                v = h8[s, hh % n8]
                if v == v:
                    count += 1
                    best = max(best, v)
        out[i] = best if count >= min_valid else np.nan


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_array(name: str, a: object, dtype: type[np.generic], ndim: int,
                 cols: int | None = None) -> np.ndarray:
    dt = np.dtype(dtype)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}; "
                        f"pass np.asarray({name}, dtype=np.{dt.name})")
    if a.ndim != ndim:
        want = "1-D" if ndim == 1 else f"2-D [n, {cols}]"
        raise ValueError(f"{name} must be {want}, got shape {a.shape}")
    if cols is not None and a.shape[1] != cols:
        raise ValueError(f"{name} must have {cols} columns, got shape {a.shape}"
                         + ("; columns are " + ", ".join(COLUMNS[:cols]) if cols <= 7 else ""))
    if a.dtype != dt:
        raise TypeError(f"{name} must be {dt.name}, got {a.dtype}; "
                        f"pass {name}.astype(np.{dt.name})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (it is a strided view); "
                         f"pass np.ascontiguousarray({name})")
    return a


def _check_hour(name: str, ns: int) -> int:
    ns = int(ns)
    if ns % HOUR_NS:
        raise ValueError(f"{name} must be a whole hour in ns since the epoch (the end of the "
                         f"averaging period), got {ns}; e.g. pass (ns // HOUR_NS) * HOUR_NS")
    return ns // HOUR_NS


# --------------------------------------------------------------------------------------------
# Public API: stateless
# --------------------------------------------------------------------------------------------


def iaqi(conc: np.ndarray, standard: int = 2026, period: str = "1h") -> np.ndarray:
    """IAQI of each station and column: float64 ``[n, 7]`` from concentrations ``[n, 7]``
    (columns ``COLUMNS``; µg/m³, CO mg/m³; NaN = missing).

    Integer-valued results (ceil), NaN where the input is NaN/negative/inf or a special rule
    says "not computed". Rounding, caps and special rules: see the module doc.
    """
    tab = _table(standard, period)
    c = _check_array("conc", conc, np.float64, 2, N_COLUMNS)
    out = np.empty_like(c)
    _iaqi_kernel(c, tab.bp, tab.slope, tab.top, tab.over_mode, tab.over_value, tab.rounding,
                 out)
    return out


def aqi_from_iaqi(iaqi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(aqi f64[n], primary_mask uint8[n], category int8[n])`` from IAQI ``[n, c]``
    (``c <= 8``, normally the 7 of ``iaqi``).

    ``aqi`` is the largest non-NaN IAQI (NaN if none). ``primary_mask`` has bit ``i`` set for
    each column whose IAQI equals the AQI, only when AQI > 50 (else 0). ``category`` is 1..6
    (≤50, ≤100, ≤150, ≤200, ≤300, above), 0 when the AQI is NaN.
    """
    a = _check_array("iaqi", iaqi, np.float64, 2)
    if a.shape[1] > 8:
        raise ValueError(f"iaqi must have at most 8 columns (primary_mask is uint8), "
                         f"got shape {a.shape}")
    n = a.shape[0]
    aqi = np.empty(n, dtype=np.float64)
    primary = np.empty(n, dtype=np.uint8)
    category = np.empty(n, dtype=np.int8)
    _aqi_kernel(a, aqi, primary, category)
    return aqi, primary, category


def exceeding_mask(iaqi: np.ndarray, standard: int = 2026) -> np.ndarray:
    """uint8 ``[n]``: bit ``i`` set where column ``i`` has IAQI > 100 -- HJ 633-2012's
    "exceeding pollutants" (超标污染物). HJ 633-2026 has none: all zero."""
    _table(standard, "1h")
    a = _check_array("iaqi", iaqi, np.float64, 2)
    if a.shape[1] > 8:
        raise ValueError(f"iaqi must have at most 8 columns, got shape {a.shape}")
    out = np.zeros(a.shape[0], dtype=np.uint8)
    if standard == 2012:
        _exceeding_kernel(a, out)
    return out


def group_mean(conc: np.ndarray, group_ids: np.ndarray, n_groups: int) -> np.ndarray:
    """float64 ``[n_groups, c]``: per group and column, the mean of the non-NaN values of the
    rows ``i`` with ``group_ids[i] == g`` (NaN where a group has none).

    For a district (or city) AQI, average the stations' concentrations with this, then take
    the IAQI of the means: that is how China computes an area's AQI (see the module doc).
    ``group_ids`` must be int64 in ``[0, n_groups)``.
    """
    c = _check_array("conc", conc, np.float64, 2)
    g = _check_array("group_ids", group_ids, np.int64, 1)
    if g.shape[0] != c.shape[0]:
        raise ValueError(f"group_ids has {g.shape[0]} entries for {c.shape[0]} rows of conc")
    n_groups = int(n_groups)
    if n_groups < 0:
        raise ValueError(f"n_groups must be >= 0, got {n_groups}")
    if g.shape[0] and (int(g.min()) < 0 or int(g.max()) >= n_groups):
        raise ValueError(f"group_ids must be in [0, {n_groups}), got range "
                         f"[{int(g.min())}, {int(g.max())}]; drop stations without a group "
                         "first or raise n_groups")
    out = np.empty((n_groups, c.shape[1]), dtype=np.float64)
    _group_mean_kernel(c, g, out)
    return out


_CATEGORIES: Final = (
    ("—", "no data", ""),
    ("优", "Excellent", "#00E400"),
    ("良", "Good", "#FFFF00"),
    ("轻度污染", "Lightly polluted", "#FF7E00"),
    ("中度污染", "Moderately polluted", "#FF0000"),
    ("重度污染", "Heavily polluted", "#99004C"),
    ("严重污染", "Severely polluted", "#7E0023"),
)


def category_info(category: int) -> tuple[str, str, str]:
    """``(name_zh, name_en, colour)`` of category 1..6, e.g. ``(轻度污染, Lightly polluted,
    #FF7E00)``; category 0 (AQI NaN) gives ``("—", "no data", "")``."""
    c = int(category)
    if not 0 <= c <= 6:
        raise ValueError(f"category must be 0..6, got {category!r}")
    return _CATEGORIES[c]


def primary_names(mask: int) -> list[str]:
    """Display names of the columns whose bit is set in ``mask`` (column order)."""
    m = int(mask)
    if not 0 <= m < 1 << N_COLUMNS:
        raise ValueError(f"mask must be in [0, {1 << N_COLUMNS}), got {mask!r}")
    return [DISPLAY_NAMES[i] for i in range(N_COLUMNS) if m >> i & 1]


# --------------------------------------------------------------------------------------------
# Public API: stateful
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AqiResult:
    """AQI of ``k`` stations for one hour or one day (equal-length arrays, input order).

    ``iaqi[:, i]`` is column ``COLUMNS[i]``. ``o3_8h`` is the 8 h O3 value used (hourly: the
    sliding mean, unrounded; daily: the daily maximum). ``exceeding_mask`` is all zero under
    HJ 633-2026. ``end_ns`` is the end of the hour/day the values cover.
    """

    standard: int
    period: str
    end_ns: int
    station_ids: np.ndarray  #: int64 [k]
    aqi: np.ndarray  #: float64 [k], integer-valued, NaN when no pollutant has a value
    iaqi: np.ndarray  #: float64 [k, 7]
    primary_mask: np.ndarray  #: uint8 [k], bit i = COLUMNS[i] is primary (AQI > 50 only)
    category: np.ndarray  #: int8 [k], 1..6, 0 when aqi is NaN
    o3_8h: np.ndarray  #: float64 [k]
    exceeding_mask: np.ndarray  #: uint8 [k], 2012 only: bit i = IAQI > 100

    def __len__(self) -> int:
        return int(self.station_ids.shape[0])

    def take(self, rows: np.ndarray) -> AqiResult:
        """The stations at ``rows`` (indices or a bool mask), in that order."""
        return replace(self, station_ids=self.station_ids[rows], aqi=self.aqi[rows],
                       iaqi=self.iaqi[rows], primary_mask=self.primary_mask[rows],
                       category=self.category[rows], o3_8h=self.o3_8h[rows],
                       exceeding_mask=self.exceeding_mask[rows])

    def primary(self, i: int) -> list[str]:
        """Display names of row ``i``'s primary pollutant(s) (empty when AQI ≤ 50)."""
        return primary_names(int(self.primary_mask[i]))


def _check_ids(ids: object, k_name: str = "station_ids") -> np.ndarray:
    s = _check_array(k_name, ids, np.int64, 1)
    if s.shape[0] and int(s.min()) < 0:
        raise ValueError(f"{k_name} must be >= 0 (dense ids), got {int(s.min())}")
    return s


class O3EightHour:
    """Per-station O3 8 h sliding means from hourly means, and their daily maxima.

    State per station: the last 8 hourly O3 values (a ring ``[capacity, 8]`` indexed by
    ``hour % 8``), the last 32 8 h means, and the station's newest hour. Station ids are
    dense ``>= 0``; capacity doubles as larger ids arrive. Not thread-safe: one owner.

    Hours only move forward per station: updating an hour again replaces it (a revision);
    an hour older than the station's newest raises ``ValueError`` before any state changes.
    Hours a station skipped count as missing.
    """

    def __init__(self, capacity: int = 1024, min_hours: int = 6, day_windows: int = 17,
                 min_day_windows: int = 14) -> None:
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not 1 <= int(min_hours) <= H1_SLOTS:
            raise ValueError(f"min_hours must be in 1..{H1_SLOTS}, got {min_hours}")
        if not 1 <= int(day_windows) <= H8_SLOTS:
            raise ValueError(f"day_windows must be in 1..{H8_SLOTS}, got {day_windows}")
        if not 1 <= int(min_day_windows) <= int(day_windows):
            raise ValueError(f"min_day_windows must be in 1..day_windows, got "
                             f"{min_day_windows}")
        self.min_hours = int(min_hours)
        self.day_windows = int(day_windows)
        self.min_day_windows = int(min_day_windows)
        self._capacity = int(capacity)
        self._h1 = np.full((self._capacity, H1_SLOTS), np.nan)
        self._h8 = np.full((self._capacity, H8_SLOTS), np.nan)
        self._last = np.full(self._capacity, _NO_HOUR, dtype=np.int64)
        self._mark = np.zeros(self._capacity, dtype=np.uint8)

    @property
    def capacity(self) -> int:
        return self._capacity

    def last_hour_end_ns(self, station: int) -> int | None:
        """End (ns) of the newest hour seen for ``station``, None if never seen."""
        s = int(station)
        if not 0 <= s < self._capacity or self._last[s] == _NO_HOUR:
            return None
        return int(self._last[s]) * HOUR_NS

    def update(self, hour_end_ns: int, station_ids: np.ndarray, o3_1h: np.ndarray
               ) -> np.ndarray:
        """Record the 1 h O3 means (µg/m³, NaN = missing) of the hour ending ``hour_end_ns``
        and return float64 ``[k]``: each station's 8 h mean over hours ending
        ``hour_end - 7h .. hour_end`` (NaN with fewer than ``min_hours`` values)."""
        hour = _check_hour("hour_end_ns", hour_end_ns)
        ids = _check_ids(station_ids)
        v = _check_array("o3_1h", o3_1h, np.float64, 1)
        if v.shape[0] != ids.shape[0]:
            raise ValueError(f"o3_1h has {v.shape[0]} values for {ids.shape[0]} stations")
        self._prepare(hour, ids)
        out = np.empty(ids.shape[0], dtype=np.float64)
        _o3_update(ids, hour, v, self._h1, self._h8, self._last, self.min_hours, out)
        return out

    def daily_max(self, day_end_ns: int, station_ids: np.ndarray) -> np.ndarray:
        """float64 ``[k]``: the largest 8 h mean among the ``day_windows`` hours ending at
        ``day_end_ns`` (by default 08:00..24:00 of the day), NaN with fewer than
        ``min_day_windows`` of them valid. Windows are kept for 32 hours: call this within
        15 h of the day's end. Station ids never seen give NaN."""
        end = _check_hour("day_end_ns", day_end_ns)
        ids = _check_ids(station_ids)
        out = np.full(ids.shape[0], np.nan)
        known = ids < self._capacity
        sel = np.ascontiguousarray(ids[known])
        part = np.empty(sel.shape[0], dtype=np.float64)
        _o3_daily_max(sel, end, self.day_windows, self.min_day_windows, self._h8, self._last,
                      part)
        out[known] = part
        return out

    def _prepare(self, hour: int, ids: np.ndarray) -> None:
        if ids.shape[0] == 0:
            return
        needed = int(ids.max()) + 1
        if needed > self._capacity:
            self._grow(needed)
        bad, code = _o3_check(ids, hour, self._last, self._mark)
        if code == 1:
            raise ValueError(f"station id {int(ids[bad])} appears twice in one batch "
                             f"(index {int(bad)}); pass each station once per hour")
        if code == 2:
            s = int(ids[bad])
            raise ValueError(f"station {s} already has hour ending "
                             f"{int(self._last[s]) * HOUR_NS} ns, newer than "
                             f"{hour * HOUR_NS}: hours only move forward (recompute a past "
                             "hour with iaqi()/aqi_from_iaqi() directly)")

    def _grow(self, needed: int) -> None:
        cap = self._capacity
        while cap < needed:
            cap *= 2
        h1 = np.full((cap, H1_SLOTS), np.nan)
        h8 = np.full((cap, H8_SLOTS), np.nan)
        last = np.full(cap, _NO_HOUR, dtype=np.int64)
        h1[: self._capacity] = self._h1
        h8[: self._capacity] = self._h8
        last[: self._capacity] = self._last
        self._h1, self._h8, self._last = h1, h8, last
        self._mark = np.zeros(cap, dtype=np.uint8)
        self._capacity = cap


class AirQualityTracker:
    """Hourly and daily AQI of stations, keeping each station's O3 8 h state. Pure: no I/O,
    no clock (times are passed in). Not thread-safe: one owner.

    ``standard`` (2012 or 2026) is fixed per tracker; ``o3`` is an ``O3EightHour`` to use
    (default: the national rules, 6 of 8 hours, 14 of 17 daily windows).
    """

    def __init__(self, standard: int = 2026, capacity: int = 1024,
                 o3: O3EightHour | None = None) -> None:
        _table(standard, "1h")
        self.standard = int(standard)
        self.o3 = o3 if o3 is not None else O3EightHour(capacity)

    def update_hour(self, hour_end_ns: int, station_ids: np.ndarray,
                    conc_1h: np.ndarray) -> AqiResult:
        """Hourly (real-time) AQI of the hour ending ``hour_end_ns`` (a whole hour, ns; the
        value stamped 16:00 covers 15:00-16:00).

        ``station_ids``: int64 ``[k]``, dense ids >= 0, each at most once. ``conc_1h``:
        float64 ``[k, 6]`` hourly means in ``POLLUTANTS`` order (µg/m³, CO mg/m³, NaN =
        missing). Each station's O3 8 h ring advances to this hour (see ``O3EightHour`` for
        revisions and late hours); the 8 h mean joins the AQI when valid.
        """
        ids = _check_ids(station_ids)
        c = _check_array("conc_1h", conc_1h, np.float64, 2, 6)
        if c.shape[0] != ids.shape[0]:
            raise ValueError(f"conc_1h has {c.shape[0]} rows for {ids.shape[0]} stations")
        o3_8h = self.o3.update(hour_end_ns, ids, np.ascontiguousarray(c[:, I_O3]))
        return self._result(int(hour_end_ns), "1h", ids, c, o3_8h)

    def daily(self, day_end_ns: int, station_ids: np.ndarray, conc_24h: np.ndarray,
              o3_8h_max: np.ndarray | None = None) -> AqiResult:
        """Daily AQI of the day ending ``day_end_ns`` (a whole hour, ns: local midnight).

        ``conc_24h``: float64 ``[k, 6]``: 24 h means of PM2.5, PM10, SO2, NO2, CO; in the
        ``o3`` column the day's maximum 1 h mean (NaN if not wanted, see the module doc).
        ``o3_8h_max``: float64 ``[k]`` daily maxima of the 8 h means; None takes them from
        this tracker's own hourly updates (``O3EightHour.daily_max``). State is not changed.
        """
        _check_hour("day_end_ns", day_end_ns)
        ids = _check_ids(station_ids)
        c = _check_array("conc_24h", conc_24h, np.float64, 2, 6)
        if c.shape[0] != ids.shape[0]:
            raise ValueError(f"conc_24h has {c.shape[0]} rows for {ids.shape[0]} stations")
        if o3_8h_max is None:
            o3 = self.o3.daily_max(day_end_ns, ids)
        else:
            o3 = _check_array("o3_8h_max", o3_8h_max, np.float64, 1)
            if o3.shape[0] != ids.shape[0]:
                raise ValueError(f"o3_8h_max has {o3.shape[0]} values for {ids.shape[0]} "
                                 "stations")
        return self._result(int(day_end_ns), "24h", ids, c, o3)

    def _result(self, end_ns: int, period: str, ids: np.ndarray, conc6: np.ndarray,
                o3_8h: np.ndarray) -> AqiResult:
        conc = np.empty((ids.shape[0], N_COLUMNS), dtype=np.float64)
        conc[:, :6] = conc6
        conc[:, I_O3_8H] = o3_8h
        sub = iaqi(conc, self.standard, period)
        aqi, primary, category = aqi_from_iaqi(sub)
        return AqiResult(self.standard, period, end_ns, ids.copy(), aqi, sub, primary,
                         category, np.array(o3_8h, dtype=np.float64),
                         exceeding_mask(sub, self.standard))
