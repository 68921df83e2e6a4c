"""``citybrain aqi``: the AQI of one set of concentrations, for people and scripts.

    citybrain aqi PM2.5=80 PM10=120 so2=10 NO2=40 CO=1.2 O3=100
    citybrain aqi --standard 2012 --period 24h pm2.5=80 o3_8h=170 --json

Values are µg/m³ (CO mg/m³). Pollutant names as in the standard (``PM2.5, PM10, SO2, NO2,
CO, O3, O3_8h``), any case, ``pm2_5`` and ``pm25`` accepted. In the daily period ``O3`` is the
day's maximum 1 h mean and ``O3_8h`` its maximum 8 h mean; in the hourly period ``O3_8h`` is
the current 8 h sliding mean (see ``hub.aqi``). Pollutants not given are left out.

Exit status: 0 on success, 2 on bad input (message on stderr, nothing on stdout).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np

from hub import aqi as hj

_PROG = "citybrain aqi"


class _InputError(ValueError):
    pass


def add_aqi_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``aqi`` subcommand on ``subparsers`` (from ``add_subparsers``); sets
    ``func=cmd_aqi``. Returns the new parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "aqi", help="China AQI (HJ 633) of pollutant concentrations",
        description="Compute the China AQI (HJ 633-2026 by default, or HJ 633-2012) of one set "
                    "of concentrations: µg/m³, CO in mg/m³.")
    p.add_argument("values", nargs="+", metavar="POLLUTANT=VALUE",
                   help="e.g. PM2.5=80 PM10=120 SO2=10 NO2=40 CO=1.2 O3=100 O3_8h=90 "
                        "(names in any case)")
    p.add_argument("--standard", type=int, choices=hj.STANDARDS, default=2026,
                   help="HJ 633 edition (default: 2026, in force since 2026-03-01)")
    p.add_argument("--period", choices=hj.PERIODS, default="1h",
                   help="1h: hourly real-time report; 24h: daily report (default: 1h)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    # citybrain.cli.main() configures logging from args.log_level; this command logs nothing.
    p.set_defaults(func=cmd_aqi, log_level="WARNING")
    return p


def parse_values(items: list[str]) -> dict[int, float]:
    """``["PM2.5=80", ...]`` → ``{column index: value}``; raises ``ValueError`` with a message
    fit for the user."""
    out: dict[int, float] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise _InputError(f"expected POLLUTANT=VALUE, got {item!r}")
        col = hj.pollutant_index(name)
        try:
            value = float(raw)
        except ValueError:
            raise _InputError(f"{hj.DISPLAY_NAMES[col]}: {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise _InputError(f"{hj.DISPLAY_NAMES[col]}: {raw!r} is not a finite number")
        if value < 0:
            raise _InputError(f"{hj.DISPLAY_NAMES[col]}: concentration must be >= 0, "
                              f"got {raw}")
        if col in out:
            raise _InputError(f"{hj.DISPLAY_NAMES[col]} given twice")
        out[col] = value
    return out


def _fmt(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:g}"


def cmd_aqi(args: argparse.Namespace) -> int:
    """Print the IAQI table and AQI of ``args.values``; 2 with a message on stderr on bad
    input."""
    try:
        values = parse_values(list(args.values))
    except ValueError as e:
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    if (args.standard == 2012 and values.get(hj.I_O3_8H, 0.0) > 800
            and hj.I_O3 not in values):
        print(f"{_PROG}: error: under HJ 633-2012 an O3_8h above 800 µg/m³ is not rated; "
              "O3 is rated by its 1 h value instead: give O3=...", file=sys.stderr)
        return 2
    conc = np.full((1, hj.N_COLUMNS), np.nan)
    for col, v in values.items():
        conc[0, col] = v
    sub = hj.iaqi(conc, args.standard, args.period)
    aqi, primary, category = hj.aqi_from_iaqi(sub)
    exceeding = hj.exceeding_mask(sub, args.standard)
    a = float(aqi[0])
    zh, en, colour = hj.category_info(int(category[0]))
    prim = hj.primary_names(int(primary[0]))
    exc = hj.primary_names(int(exceeding[0]))
    cols = sorted(values)
    if args.json:
        obj: dict[str, Any] = {
            "standard": f"HJ 633-{args.standard}",
            "period": args.period,
            "aqi": None if math.isnan(a) else int(a),
            "category": int(category[0]),
            "category_zh": zh,
            "category_en": en,
            "colour": colour,
            "primary": prim,
            "iaqi": {hj.DISPLAY_NAMES[c]: (None if math.isnan(sub[0, c]) else int(sub[0, c]))
                     for c in cols},
            "concentration": {hj.DISPLAY_NAMES[c]: values[c] for c in cols},
            "units": {hj.DISPLAY_NAMES[c]: hj.UNITS[c] for c in cols},
        }
        if args.standard == 2012:
            obj["exceeding"] = exc
        print(json.dumps(obj, ensure_ascii=False))
        return 0
    period = "hourly (1h)" if args.period == "1h" else "daily (24h)"
    print(f"HJ 633-{args.standard}, {period}")
    print(f"{'pollutant':<10}{'value':>10}  {'unit':<6}{'IAQI':>6}")
    for c in cols:
        print(f"{hj.DISPLAY_NAMES[c]:<10}{values[c]:>10g}  {hj.UNITS[c]:<6}"
              f"{_fmt(float(sub[0, c])):>6}")
    print(f"AQI       {_fmt(a)}  {zh} / {en}  {colour}")
    print(f"primary   {', '.join(prim) if prim else '—'}")
    if args.standard == 2012:
        print(f"exceeding {', '.join(exc) if exc else '—'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``aqi`` alone (``python -m hub.aqi_cli PM2.5=80 ...``)."""
    parser = argparse.ArgumentParser(prog="citybrain")
    add_aqi_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["aqi", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
