"""Surface-water quality class per station, GB 3838-2002 (地表水环境质量标准), basic items.

Input: one row per station (or per sample / closed window row) with the five automatic-station
parameters, mg/L except pH (dimensionless):

==============  =====  =====  =====  =====  =====  =======================================
parameter       I      II     III    IV     V      rule
==============  =====  =====  =====  =====  =====  =======================================
pH              6-9    6-9    6-9    6-9    6-9    inside [6, 9] (inclusive) -> I, else 劣V
DO ≥            7.5    6      5      3      2      higher is better
CODMn ≤         2      4      6      10     15
NH3-N ≤         0.15   0.5    1.0    1.5    2.0
TP ≤ (rivers)   0.02   0.1    0.2    0.3    0.4
TP ≤ (lakes)    0.01   0.025  0.05   0.1    0.2    lakes and reservoirs (``lake=True``)
==============  =====  =====  =====  =====  =====  =======================================

A parameter's class is the best class whose limit it meets, bounds inclusive (``DO >= 7.5``
is class I, ``CODMn <= 2`` is class I); a value beyond the class V limit is class 6 = 劣V.

pH decision: the standard gives one range, 6-9, for all five classes, so pH cannot
discriminate between I and V: a pH inside the range is class I for pH (it never worsens the
station's class) and a pH outside it is 劣V (class 6) -- the water fails every class.

The station's class is the worst parameter class (单因子评价, "the worst parameter decides");
``deciding`` is a bitmask of every parameter attaining it (ties all listed). NaN (missing) or
negative values are *not assessed* (per-parameter class 0) and never decide; a station with no
assessed parameter has class 0 and ``deciding`` 0. Lakes/reservoirs use the lake TP column
(``lake`` per station, or one bool for all).

Codes: ``CLASS_I`` 1 .. ``CLASS_V`` 5, ``CLASS_WORSE_THAN_V`` 6 (劣V), ``CLASS_NONE`` 0;
parameter bits ``BIT_PH`` 1, ``BIT_DO`` 2, ``BIT_CODMN`` 4, ``BIT_NH3N`` 8, ``BIT_TP`` 16;
per-parameter columns in ``PARAMETERS`` order.

Kernel: ``_classify`` (``@njit``, one pass over stations); ``classify_water`` validates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numba import njit

from hub.arrays import check_1d as _check_1d
from hub.kernel_config import CACHE, FASTMATH, NOGIL

__all__ = [
    "BIT_CODMN",
    "BIT_DO",
    "BIT_NH3N",
    "BIT_PH",
    "BIT_TP",
    "CLASS_I",
    "CLASS_II",
    "CLASS_III",
    "CLASS_IV",
    "CLASS_LABELS",
    "CLASS_NONE",
    "CLASS_V",
    "CLASS_WORSE_THAN_V",
    "DO_MIN",
    "LIMITS_MAX",
    "PARAMETERS",
    "PH_RANGE",
    "WaterClass",
    "classify_water",
    "deciding_names",
]

CLASS_NONE: Final = 0
CLASS_I: Final = 1
CLASS_II: Final = 2
CLASS_III: Final = 3
CLASS_IV: Final = 4
CLASS_V: Final = 5
CLASS_WORSE_THAN_V: Final = 6
#: Class code -> label.
CLASS_LABELS: Final[dict[int, str]] = {0: "none", 1: "I", 2: "II", 3: "III", 4: "IV",
                                       5: "V", 6: "劣V"}

#: Parameter order of the per-parameter class columns and of the bits.
PARAMETERS: Final = ("ph", "do", "codmn", "nh3n", "tp")
BIT_PH: Final = 1
BIT_DO: Final = 2
BIT_CODMN: Final = 4
BIT_NH3N: Final = 8
BIT_TP: Final = 16

#: pH range valid for classes I-V (inclusive).
PH_RANGE: Final = (6.0, 9.0)
#: Dissolved oxygen lower limits (mg/L), classes I..V.
DO_MIN: Final = (7.5, 6.0, 5.0, 3.0, 2.0)
#: Upper limits (mg/L), classes I..V, for the "<=" parameters.
LIMITS_MAX: Final[dict[str, tuple[float, ...]]] = {
    "codmn": (2.0, 4.0, 6.0, 10.0, 15.0),
    "nh3n": (0.15, 0.5, 1.0, 1.5, 2.0),
    "tp_river": (0.02, 0.1, 0.2, 0.3, 0.4),
    "tp_lake": (0.01, 0.025, 0.05, 0.1, 0.2),
}

_DO = np.array(DO_MIN, dtype=np.float64)
_MAX = np.array([LIMITS_MAX["codmn"], LIMITS_MAX["nh3n"], LIMITS_MAX["tp_river"],
                 LIMITS_MAX["tp_lake"]], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class WaterClass:
    """``classify_water`` result, one row per station."""

    klass: np.ndarray  #: int8 [n]: 1..5, 6 = 劣V, 0 = nothing assessed
    deciding: np.ndarray  #: uint8 [n]: BIT_* of the parameters attaining ``klass``
    param_class: np.ndarray  #: int8 [n, 5]: class per parameter (PARAMETERS order), 0 = NaN

    def __len__(self) -> int:
        return int(self.klass.shape[0])


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _le_class(x, limits, row):
    """Best class whose upper limit ``limits[row, k]`` is ``>= x``; 6 beyond V; 0 if NaN
    or negative."""
    if not x >= 0.0:
        return 0
    for k in range(5):
        if x <= limits[row, k]:
            return k + 1
    return 6


@njit(cache=CACHE, fastmath=FASTMATH, nogil=NOGIL)
def _classify(ph, do, codmn, nh3n, tp, lake, ph_lo, ph_hi, do_min, limits, o_class,
              o_bits, o_param):
    n = ph.shape[0]
    one_lake = lake.shape[0] == 1
    for i in range(n):
        x = ph[i]
        if x != x or x < 0.0:
            c0 = 0
        elif ph_lo <= x <= ph_hi:
            c0 = 1
        else:
            c0 = 6
        x = do[i]
        if not x >= 0.0:
            c1 = 0
        else:
            c1 = 6
            for k in range(5):
                if x >= do_min[k]:
                    c1 = k + 1
                    break
        c2 = _le_class(codmn[i], limits, 0)
        c3 = _le_class(nh3n[i], limits, 1)
        is_lake = lake[0] if one_lake else lake[i]
        c4 = _le_class(tp[i], limits, 3 if is_lake else 2)
        worst = max(c0, c1, c2, c3, c4)
        bits = 0
        if worst > 0:
            if c0 == worst:
                bits |= 1
            if c1 == worst:
                bits |= 2
            if c2 == worst:
                bits |= 4
            if c3 == worst:
                bits |= 8
            if c4 == worst:
                bits |= 16
        o_class[i] = worst
        o_bits[i] = bits
        o_param[i, 0] = c0
        o_param[i, 1] = c1
        o_param[i, 2] = c2
        o_param[i, 3] = c3
        o_param[i, 4] = c4




def classify_water(ph: np.ndarray, do: np.ndarray, codmn: np.ndarray, nh3n: np.ndarray,
                   tp: np.ndarray, lake: bool | np.ndarray = False) -> WaterClass:
    """GB 3838-2002 class per station (module doc). Five equal-length contiguous float64
    arrays (NaN = not measured); ``lake``: one bool, or a bool array per station selecting
    the lake/reservoir TP limits."""
    arrs = {name: _check_1d(name, a, np.float64)
            for name, a in zip(PARAMETERS, (ph, do, codmn, nh3n, tp), strict=True)}
    lengths = {k: a.shape[0] for k, a in arrs.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"ph, do, codmn, nh3n and tp must have equal lengths, got {lengths}")
    n = lengths["ph"]
    if isinstance(lake, np.ndarray):
        lk = _check_1d("lake", lake, np.bool_)
        if lk.shape[0] != n:
            raise ValueError(f"lake must have one entry per station ({n}), got {lk.shape[0]}; "
                             "or pass a single bool")
    elif isinstance(lake, bool | np.bool_):
        lk = np.array([bool(lake)], dtype=np.bool_)
    else:
        raise TypeError(f"lake must be a bool or a bool array, got {type(lake).__name__}")
    o_class = np.empty(n, dtype=np.int8)
    o_bits = np.empty(n, dtype=np.uint8)
    o_param = np.empty((n, 5), dtype=np.int8)
    if n:
        _classify(arrs["ph"], arrs["do"], arrs["codmn"], arrs["nh3n"], arrs["tp"], lk,
                  PH_RANGE[0], PH_RANGE[1], _DO, _MAX, o_class, o_bits, o_param)
    return WaterClass(o_class, o_bits, o_param)


def deciding_names(bits: int) -> list[str]:
    """Parameter names of a ``deciding`` bitmask, in ``PARAMETERS`` order."""
    return [name for k, name in enumerate(PARAMETERS) if int(bits) & (1 << k)]
