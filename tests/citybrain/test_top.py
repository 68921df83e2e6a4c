"""``citybrain top --once`` against a tiny local HTTP server serving a fixed hub state."""

from __future__ import annotations

import argparse
import copy
import json
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from rich.console import Console

from citybrain.top import add_top_parser, cmd_top, fetch_state
from tests.local_http import serving

STATE: dict[str, Any] = {
    "t": 1763712000.1, "event_clock": 1763711990.0,
    "city": {"aqi": 57, "category": 2, "color": "#FFFF00", "devices": 3695, "online": 3600,
             "open_alarms": 12},
    "districts": [
        {"code": "500103", "name_zh": "渝中区", "name_en": "Yuzhong", "aqi": 57, "category": 2,
         "color": "#FFFF00", "primary": ["PM2.5"], "bay_occupancy": 0.62,
         "lot_occupancy": 0.41, "open_alarms": 3, "online_ratio": 0.99, "completeness": 0.97},
        {"code": "500104", "name_zh": "大渡口区", "name_en": "Dadukou", "aqi": 132,
         "category": 3, "color": "#FF7E00", "primary": ["PM10"], "bay_occupancy": None,
         "lot_occupancy": 0.5, "open_alarms": 0, "online_ratio": 1.0, "completeness": None},
        {"code": "500105", "name_zh": "江北区", "name_en": "Jiangbei", "aqi": None,
         "category": None, "color": None, "primary": [], "bay_occupancy": 0.3,
         "lot_occupancy": None, "open_alarms": None, "online_ratio": None,
         "completeness": 0.5},
    ],
    "systems": [{"id": "500103-air-01", "district": "500103", "domain": "environment",
                 "kind": "air", "name_zh": "…", "name_en": "…", "devices": 12, "online": 12,
                 "online_ratio": 1.0, "completeness": 0.98, "validity": 0.999,
                 "latency_p95_s": 0.4}],
    "alarms": [{"t": 1763711990.0 - 60 * i, "restaurant": f"500103-kitchen-01-{i:05d}",
                "district": "500103", "alarm": "gas_leak", "alarm_zh": "燃气泄漏",
                "state": "raised", "value": 50.0 + i} for i in range(7)],
    "pipeline": {"readings_per_s": 1234.5, "frames_per_s": 3.2, "latency_p50_s": 0.2,
                 "latency_p95_s": 0.6, "latency_p99_s": None, "frame_queue": 0,
                 "write_queue": 0, "stored_raw": 123456, "stored_agg": 45678,
                 "late_readings": 12, "rejected": 40, "write_errors": 0,
                 "series": [[1763712000.1, 1234.5]]},
}


class _Handler(BaseHTTPRequestHandler):
    state: dict[str, Any] = STATE

    def do_GET(self) -> None:
        if self.path != "/api/state":
            self.send_error(404)
            return
        body = json.dumps(self.state, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hub_url() -> Iterator[str]:
    with serving(_Handler) as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="citybrain")
    add_top_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["top", *argv])


def run(argv: list[str], height: int = 60) -> tuple[int, str]:
    console = Console(record=True, width=120, height=height, color_system=None,
                      force_terminal=False)
    args = parse(argv)
    assert args.func is cmd_top
    rc = cmd_top(args, console=console)
    return rc, console.export_text()


def test_once_renders_the_state(hub_url: str) -> None:
    rc, out = run(["--url", hub_url, "--once"])
    assert rc == 0, out
    assert "city AQI 57 良" in out
    assert "devices online 3,600/3,695" in out and "open alarms 12" in out
    lines = out.splitlines()
    rows = [next(i for i, ln in enumerate(lines) if code in ln)
            for code in ("500104", "500103", "500105")]
    assert rows == sorted(rows), "districts sorted worst AQI first, unknown last"
    dadukou = lines[rows[0]]
    assert "大渡口区" in dadukou and "132" in dadukou and "轻度污染" in dadukou
    assert "—" in dadukou  # null bay occupancy / completeness
    yuzhong = lines[rows[1]]
    for cell in ("57", "良", "62%", "41%", "3", "99%", "97%"):
        assert cell in yuzhong
    # the 5 newest alarms only (times in Chongqing local time)
    assert "燃气泄漏" in out and "500103-kitchen-01-00004" in out
    assert "500103-kitchen-01-00005" not in out
    assert "15:59:50" in out  # 1763711990 = 2025-11-21 15:59:50 +08:00
    assert "1,234.5" in out and "0.20 s" in out and "0.60 s / —" in out
    assert "123,456" in out and "45,678" in out
    assert "rejected" in out and "40" in out and "write errors" in out


def test_districts_trimmed_to_terminal_height(hub_url: str) -> None:
    many = copy.deepcopy(STATE)
    many["districts"] = [dict(STATE["districts"][0], code=f"5001{i:02d}", aqi=i)
                         for i in range(38)]
    _Handler.state = many
    try:
        rc, out = run(["--url", hub_url, "--once"], height=30)
    finally:
        _Handler.state = STATE
    assert rc == 0
    assert "500137" in out and "500100 " not in out  # worst (aqi 37) shown, best trimmed
    assert "more districts" in out
    assert len(out.splitlines()) <= 30


def test_once_unreachable_hub_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    rc, out = run(["--url", url, "--once"])
    assert rc == 1
    assert "hub unreachable" in out and url in out
    assert len(out.strip().splitlines()) == 1


def test_not_found_is_reported(hub_url: str) -> None:
    rc, out = run(["--url", hub_url + "/nope", "--once"])
    assert rc == 1 and "HTTP 404" in out


def test_url_from_environment(monkeypatch: pytest.MonkeyPatch, hub_url: str) -> None:
    monkeypatch.setenv("CITYBRAIN_HUB_URL", hub_url)
    args = parse(["--once"])
    assert args.url == hub_url and args.interval == 1.0
    assert fetch_state(args.url)["city"]["aqi"] == 57
