"""``citybrain top``: a compact live terminal view of the hub's dashboard numbers.

Polls the hub's ``GET {url}/api/state`` (JSON) every ``--interval`` seconds and redraws
(rich ``Live``): city AQI and devices online, the 38 districts (worst AQI first, trimmed to
the terminal height), the newest alarms and the pipeline's throughput, latency, queues and
storage counters. An unreachable hub shows as one status line; ``--once`` prints one frame
and exits 1 if the hub cannot be reached. Missing or null values render as "—".
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

DEFAULT_URL = "http://127.0.0.1:8080"
DASH = "—"
CST = timezone(timedelta(hours=8))  # Chongqing local time
# HJ 633 categories 1..6
CATEGORY_ZH = {1: "优", 2: "良", 3: "轻度污染", 4: "中度污染", 5: "重度污染", 6: "严重污染"}
CATEGORY_STYLE = {1: "bold green", 2: "bold yellow", 3: "bold dark_orange", 4: "bold red",
                  5: "bold magenta", 6: "bold white on dark_red"}
STATE_STYLE = {"raised": "bold red", "ongoing": "yellow", "cleared": "green"}


class HubUnreachable(Exception):
    pass


def fetch_state(url: str, timeout_s: float = 3.0) -> dict[str, Any]:
    """GET ``{url}/api/state``; raises ``HubUnreachable`` with a one-line reason."""
    endpoint = url.rstrip("/") + "/api/state"
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout_s) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise HubUnreachable(f"{endpoint}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HubUnreachable(f"{endpoint}: {reason}") from exc
    except ValueError as exc:
        raise HubUnreachable(f"{endpoint}: not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise HubUnreachable(f"{endpoint}: expected a JSON object")
    return doc


# -- formatting --------------------------------------------------------------------------------
def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if v == v else None  # NaN -> None


def fmt_int(v: Any) -> str:
    x = _num(v)
    return DASH if x is None else f"{x:,.0f}"


def fmt_float(v: Any, digits: int = 1, unit: str = "") -> str:
    x = _num(v)
    return DASH if x is None else f"{x:,.{digits}f}{unit}"


def fmt_pct(v: Any) -> str:
    x = _num(v)
    return DASH if x is None else f"{100 * x:.0f}%"


def fmt_time(v: Any) -> str:
    x = _num(v)
    return DASH if x is None else datetime.fromtimestamp(x, CST).strftime("%H:%M:%S")


def aqi_text(aqi: Any, category: Any) -> Text:
    cat = int(category) if _num(category) is not None else None
    return Text(fmt_int(aqi), style=CATEGORY_STYLE.get(cat, "") if cat else "")


def category_zh(category: Any) -> str:
    return CATEGORY_ZH.get(int(category), DASH) if _num(category) is not None else DASH


def _sort_key(d: dict[str, Any]) -> tuple[int, float]:
    aqi = _num(d.get("aqi"))
    return (0, -aqi) if aqi is not None else (1, 0.0)  # worst first, unknown last


# -- rendering ---------------------------------------------------------------------------------
def render_state(state: dict[str, Any], url: str, height: int = 50) -> RenderableType:
    city = state.get("city") or {}
    head = Text()
    head.append("citybrain  ", style="bold")
    head.append("city AQI ")
    head.append_text(aqi_text(city.get("aqi"), city.get("category")))
    head.append(f" {category_zh(city.get('category'))}")
    head.append(f"   devices online {fmt_int(city.get('online'))}/{fmt_int(city.get('devices'))}")
    head.append(f"   open alarms {fmt_int(city.get('open_alarms'))}")
    head.append(f"   event clock {fmt_time(state.get('event_clock'))}", style="dim")
    head.append(f"   {url}", style="dim")

    alarms = list(state.get("alarms") or [])
    alarms.sort(key=lambda a: _num(a.get("t")) or 0.0, reverse=True)
    alarms = alarms[:5]
    # header 1 + blank, pipeline ~5, alarms rows + 4, district table chrome 4
    room = max(height - 1 - 6 - (len(alarms) + 4) - 4, 3)
    districts = sorted(state.get("districts") or [], key=_sort_key)
    shown = districts[:room]

    dt = Table(title=None, expand=False, pad_edge=False, box=None, header_style="bold")
    for col, justify in (("district", "left"), ("AQI", "right"), ("类别", "left"),
                         ("bays", "right"), ("lots", "right"), ("alarms", "right"),
                         ("online", "right"), ("complete", "right")):
        dt.add_column(col, justify=justify)  # type: ignore[arg-type]
    for d in shown:
        name = d.get("name_zh") or d.get("name_en") or d.get("code") or DASH
        dt.add_row(f"{d.get('code', '')} {name}", aqi_text(d.get("aqi"), d.get("category")),
                   category_zh(d.get("category")), fmt_pct(d.get("bay_occupancy")),
                   fmt_pct(d.get("lot_occupancy")), fmt_int(d.get("open_alarms")),
                   fmt_pct(d.get("online_ratio")), fmt_pct(d.get("completeness")))
    if len(districts) > len(shown):
        dt.caption = f"… {len(districts) - len(shown)} more districts (enlarge the terminal)"

    at = Table(box=None, pad_edge=False, header_style="bold", title="newest alarms",
               title_justify="left")
    for col in ("time", "district", "restaurant", "alarm", "state", "value"):
        at.add_column(col)
    for a in alarms:
        st = str(a.get("state") or DASH)
        at.add_row(fmt_time(a.get("t")), str(a.get("district") or DASH),
                   str(a.get("restaurant") or DASH),
                   str(a.get("alarm_zh") or a.get("alarm") or DASH),
                   Text(st, style=STATE_STYLE.get(st, "")), fmt_float(a.get("value")))
    if not alarms:
        at.add_row(DASH, "", "", "no alarms", "", "")

    p = state.get("pipeline") or {}
    pt = Table(box=None, pad_edge=False, show_header=False, title="pipeline",
               title_justify="left")
    for _ in range(4):
        pt.add_column(style="dim")
        pt.add_column(justify="right")
    pt.add_row("readings/s", fmt_float(p.get("readings_per_s")),
               "frames/s", fmt_float(p.get("frames_per_s")),
               "latency p50", fmt_float(p.get("latency_p50_s"), 2, " s"),
               "p95 / p99", f"{fmt_float(p.get('latency_p95_s'), 2, ' s')} / "
                            f"{fmt_float(p.get('latency_p99_s'), 2, ' s')}")
    pt.add_row("frame queue", fmt_int(p.get("frame_queue")),
               "write queue", fmt_int(p.get("write_queue")),
               "stored raw", fmt_int(p.get("stored_raw")),
               "stored agg", fmt_int(p.get("stored_agg")))
    pt.add_row("rejected", fmt_int(p.get("rejected")),
               "late", fmt_int(p.get("late_readings")),
               "write errors", Text(fmt_int(p.get("write_errors")),
                                    style="bold red" if (_num(p.get("write_errors")) or 0)
                                    else ""), "", "")
    return Group(head, Text(""), dt, Text(""), at, Text(""), pt)


def render_unreachable(url: str, reason: str, since: float | None = None) -> RenderableType:
    msg = Text("citybrain top: ", style="bold")
    msg.append(f"hub unreachable — {reason}", style="bold red")
    if since is not None:
        msg.append(f" (last good state {time.time() - since:.0f} s ago)", style="dim")
    return msg


# -- CLI ---------------------------------------------------------------------------------------
def add_top_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "top", help="live terminal view of the hub's state (GET /api/state)",
        description="Live terminal view of the hub: city AQI, districts, alarms, pipeline.")
    p.add_argument("--url", default=os.environ.get("CITYBRAIN_HUB_URL", DEFAULT_URL),
                   help="hub HTTP base URL (env CITYBRAIN_HUB_URL; default %(default)s)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between polls (default %(default)s)")
    p.add_argument("--once", action="store_true",
                   help="print one frame and exit (exit 1 if the hub is unreachable)")
    p.set_defaults(func=cmd_top)
    return p


def cmd_top(args: argparse.Namespace, console: Console | None = None) -> int:
    console = console or Console()
    url: str = args.url
    interval = max(float(args.interval), 0.1)
    if args.once:
        try:
            state = fetch_state(url, timeout_s=max(interval, 3.0))
        except HubUnreachable as exc:
            console.print(render_unreachable(url, str(exc)))
            return 1
        console.print(render_state(state, url, console.height))
        return 0
    last: dict[str, Any] | None = None
    last_ok: float | None = None
    try:
        with Live(console=console, screen=False, auto_refresh=False,
                  vertical_overflow="crop") as live:
            while True:
                try:
                    last = fetch_state(url, timeout_s=max(interval, 1.0))
                    last_ok = time.time()
                    view = render_state(last, url, console.height)
                except HubUnreachable as exc:
                    status = render_unreachable(url, str(exc), last_ok)
                    view = Group(status, render_state(last, url, console.height - 1)) \
                        if last is not None else status
                live.update(view, refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        return 0
