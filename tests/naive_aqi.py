"""Slow, obvious reference for ``hub.aqi``: one pollutant, one station, straight from the table.

The table is typed again here, row by row exactly as ``domain.md`` prints it (not column by
column as ``hub.aqi`` holds it), so a transcription slip in either shows up as a mismatch.
Arithmetic is exact: a float concentration is read as the decimal it prints as
(``Decimal(repr(x))``), rounded with ``decimal``, interpolated with ``Fraction`` and rounded
up with ``math.ceil``. Nothing here is imported by production code.
"""

from __future__ import annotations

import itertools
import math
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

NAN = float("nan")
D = None  # the table's "—"

# IAQI | SO2 24h | SO2 1h | NO2 24h | NO2 1h | PM10 24h | CO 24h | CO 1h | O3 1h | O3 8h |
# PM2.5 24h   -- HJ 633-2012, µg/m³ (CO mg/m³)
TABLE_2012: list[tuple[int | None, ...]] = [
    (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    (50, 50, 150, 40, 100, 50, 2, 5, 160, 100, 35),
    (100, 150, 500, 80, 200, 150, 4, 10, 200, 160, 75),
    (150, 475, 650, 180, 700, 250, 14, 35, 300, 215, 115),
    (200, 800, 800, 280, 1200, 350, 24, 60, 400, 265, 150),
    (300, 1600, D, 565, 2340, 420, 36, 90, 800, 800, 250),
    (400, 2100, D, 750, 3090, 500, 48, 120, 1000, D, 350),
    (500, 2620, D, 940, 3840, 600, 60, 150, 1200, D, 500),
]
HEADER = ("IAQI", "SO2 24h", "SO2 1h", "NO2 24h", "NO2 1h", "PM10 24h", "CO 24h", "CO 1h",
          "O3 1h", "O3 8h", "PM2.5 24h")

NAMES = ("PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "O3_8h")

CATEGORIES = {1: ("优", "#00E400"), 2: ("良", "#FFFF00"), 3: ("轻度污染", "#FF7E00"),
              4: ("中度污染", "#FF0000"), 5: ("重度污染", "#99004C"), 6: ("严重污染", "#7E0023")}


def column(name: str, standard: int) -> list[tuple[int, int]]:
    """``[(concentration, IAQI), ...]`` of one table column, up to its last entry."""
    j = HEADER.index(name)
    pts = [(bp, level) for row in TABLE_2012
           if (bp := row[j]) is not None and (level := row[0]) is not None]
    if standard == 2026 and name in ("PM2.5 24h", "PM10 24h"):  # the 2026 change
        new100 = 60 if name == "PM2.5 24h" else 120
        pts = [(new100 if iaqi == 100 else bp, iaqi) for bp, iaqi in pts]
    return pts


def column_name(pollutant: str, period: str) -> str:
    """Which table column rates ``pollutant`` (a display name) in ``period``."""
    if pollutant in ("PM2.5", "PM10"):
        return f"{pollutant} 24h"  # also for hourly PM means
    if pollutant == "O3":
        return "O3 1h"  # hourly value, or the day's maximum hourly value
    if pollutant == "O3_8h":
        return "O3 8h"
    return f"{pollutant} {period}"


def interpolate(pts: list[tuple[int, int]], c: Fraction) -> Fraction:
    for (bp_lo, i_lo), (bp_hi, i_hi) in itertools.pairwise(pts):
        if bp_lo <= c <= bp_hi:
            return Fraction(i_hi - i_lo, bp_hi - bp_lo) * (c - bp_lo) + i_lo
    raise AssertionError("concentration outside the column")  # pragma: no cover


def exact(x: float, standard: int, pollutant: str) -> Fraction:
    """The concentration the kernels must rate: the printed decimal, rounded under 2026."""
    d = Decimal(repr(float(x)))
    if standard == 2026:
        with localcontext() as ctx:
            ctx.prec = 400  # enough digits for any float64, so quantize never overflows
            d = d.quantize(Decimal("0.1") if pollutant == "CO" else Decimal(1),
                           rounding=ROUND_HALF_EVEN)
    return Fraction(d)


def iaqi(pollutant: str, x: float, standard: int, period: str) -> float:
    """IAQI of one concentration (display name, e.g. "SO2"); NaN for missing/invalid."""
    if math.isnan(x) or math.isinf(x) or x < 0:
        return NAN
    c = exact(x, standard, pollutant)
    pts = column(column_name(pollutant, period), standard)
    top = pts[-1][0]
    if c > top:
        if pollutant == "SO2" and period == "1h":
            if standard == 2012:  # "use the 24 h SO2 IAQI instead" (on the same value)
                pts = column("SO2 24h", 2012)
                if c <= pts[-1][0]:
                    return float(math.ceil(interpolate(pts, c)))
                return 500.0
            return 200.0
        if pollutant == "O3_8h":
            return NAN if standard == 2012 else 300.0  # 2012: rate O3 by its 1 h value
        return 500.0  # cap
    return float(math.ceil(interpolate(pts, c)))


def iaqi_row(conc: list[float], standard: int, period: str) -> list[float]:
    return [iaqi(NAMES[i], float(conc[i]), standard, period) for i in range(7)]


def aqi(iaqis: list[float]) -> tuple[float, list[str], int]:
    """``(AQI, primary pollutant names, category)``."""
    vals = [v for v in iaqis if not math.isnan(v)]
    if not vals:
        return NAN, [], 0
    a = max(vals)
    primary = [NAMES[i] for i, v in enumerate(iaqis) if v == a] if a > 50 else []
    for cat, upper in enumerate((50, 100, 150, 200, 300), start=1):
        if a <= upper:
            return a, primary, cat
    return a, primary, 6


def o3_8h(hourly: dict[int, float], hour: int, min_hours: int = 6) -> float:
    """Mean of the valid hourly values of hours ``hour-7 .. hour`` (NaN with < min_hours)."""
    vals = [hourly[h] for h in range(hour - 7, hour + 1)
            if h in hourly and hourly[h] >= 0 and math.isfinite(hourly[h])]
    return sum(vals) / len(vals) if len(vals) >= min_hours else NAN


def o3_daily_max(eight_hour: dict[int, float], end_hour: int, windows: int = 17,
                 min_valid: int = 14) -> float:
    vals = [eight_hour[h] for h in range(end_hour - windows + 1, end_hour + 1)
            if h in eight_hour and not math.isnan(eight_hour[h])]
    return max(vals) if len(vals) >= min_valid else NAN


def group_mean(rows: list[list[float]], groups: list[int], n_groups: int,
               n_cols: int) -> list[list[float]]:
    out = []
    for g in range(n_groups):
        col_means = []
        for j in range(n_cols):
            vals = [r[j] for r, gi in zip(rows, groups, strict=True)
                    if gi == g and not math.isnan(r[j])]
            col_means.append(math.fsum(vals) / len(vals) if vals else NAN)
        out.append(col_means)
    return out
