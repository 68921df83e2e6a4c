"""The hub dashboard in a real headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright; never ``playwright install``).

What is checked against a running hub (``dashboard_url``):
  * the page loads, ECharts comes from ``/static/vendor/echarts.min.js`` (the version pinned in
    package.json) and NO request leaves 127.0.0.1 (air-gapped operations centre: no CDN);
  * ``#readings-per-s`` shows a number, then changes (live SSE updates), ``#connection`` is live;
  * the 38 districts are rendered (tiles and the AQI chart);
  * no console error/warning and no uncaught page error;
  * with ``/events`` blocked the page falls back to polling ``/api/state``;
  * a 1920x1080 screenshot is saved (to the test's temporary directory; with
    ``CITYBRAIN_UPDATE_SCREENSHOT=1`` to ``docs/dashboard.png``).

``dashboard_url`` is a running stack: ``citybrain up`` with its own Mosquitto and influxd, the
hub, two edges and the simulator (speed 30), or the URL in ``$CITYBRAIN_DASHBOARD_URL``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest

from tests.waiting import wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "hub" / "dashboard"
VENDORED_ECHARTS = DASHBOARD_DIR / "vendor" / "echarts.min.js"
SEEDS_DIR = ROOT / "seeds"
SCREENSHOT = ROOT / "docs" / "dashboard.png"

CHROMIUM = os.environ.get("CITYBRAIN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
N_DISTRICTS = 38
LIVE_TIMEOUT_MS = 20_000

pytestmark = pytest.mark.slow


def pinned_echarts_version() -> str:
    """The exact echarts version pinned in package.json."""
    return str(json.loads((ROOT / "package.json").read_text())["dependencies"]["echarts"])


# ---- stand-in hub (swap for the real one in ``dashboard_url``) --------------------------------

_ALARMS = [("gas_leak", "燃气泄漏"), ("cold_room_temperature", "冷库温度异常"),
           ("cooking_fume", "油烟超标"), ("ai_smoking", "吸烟"), ("ai_rodent", "鼠患"),
           ("ai_no_hat_mask", "未戴帽子口罩"), ("prep_room_temperature", "专间温度超标")]
_AQI_BREAKS = (50, 100, 150, 200, 300)
_AQI_COLORS = ("#00E400", "#FFFF00", "#FF7E00", "#FF0000", "#99004C", "#7E0023")


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running stack's hub, once readings flow through it."""
    if not VENDORED_ECHARTS.is_file():
        pytest.fail(f"{VENDORED_ECHARTS.relative_to(ROOT)} is missing: run scripts/vendor_js.sh "
                    "(or make setup)", pytrace=False)
    url = os.environ.get("CITYBRAIN_DASHBOARD_URL")
    if url:
        yield url.rstrip("/")
        return
    from citybrain.localstack import free_port
    port = free_port()
    var = tmp_path_factory.mktemp("city")
    proc = subprocess.Popen(
        [sys.executable, "-m", "citybrain.cli", "up", "--speed", "30", "--edge-procs", "2",
         "--var-dir", str(var), "--http-port", str(port)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def stored_readings() -> bool:
        assert proc.poll() is None, f"citybrain up exited; see {var}/log"
        try:
            with urlopen(base + "/api/state", timeout=2) as r:
                return bool(json.loads(r.read())["pipeline"].get("stored_raw", 0) > 0)
        except (URLError, OSError, ValueError, KeyError):
            return False

    try:
        # wait until the hub has stored readings: the city is moving
        wait_for(stored_readings, 120, lambda: f"no readings; see {var}/log")
        yield base
    finally:
        proc.send_signal(signal.SIGINT)  # the city drains and stops cleanly
        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium via Playwright (no downloaded browser build)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'", pytrace=False)
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (or make setup)",
                    pytrace=False)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class PageWatch:
    """Console errors/warnings, uncaught page errors and non-local requests of one page."""

    def __init__(self, page: Page) -> None:
        self.console: list[str] = []
        self.page_errors: list[str] = []
        self.external: list[str] = []
        self.vendor_responses: list[tuple[str, int]] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda err: self.page_errors.append(str(err)))
        page.on("request", self._on_request)
        page.on("response", lambda r: self.vendor_responses.append((r.url, r.status))
                if "/static/vendor/" in r.url else None)

    def _on_console(self, msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            self.console.append(f"{msg.type}: {msg.text} @ {msg.location}")

    def _on_request(self, req: Request) -> None:
        parts = urlsplit(req.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if parts.hostname not in LOCAL_HOSTS:
            self.external.append(req.url)


def _open(browser: Browser) -> tuple[Page, PageWatch]:
    page = browser.new_page(viewport={"width": 1920, "height": 1080}, device_scale_factor=1)
    return page, PageWatch(page)


_NUMBER_JS = """(sel) => {
    const t = (document.querySelector(sel)?.textContent || '').replace(/,/g, '').trim();
    return t !== '' && Number.isFinite(Number(t)) ? t : null;
}"""


def _wait_number(page: Page, sel: str, timeout_ms: int = LIVE_TIMEOUT_MS) -> float:
    handle = page.wait_for_function(_NUMBER_JS, arg=sel, timeout=timeout_ms)
    return float(handle.json_value())


def _wait_change(page: Page, sel: str, before: str, timeout_ms: int = LIVE_TIMEOUT_MS) -> str:
    page.wait_for_function(
        "([sel, before]) => { const t = document.querySelector(sel)?.textContent || '';"
        " return /\\d/.test(t) && t !== before; }",
        arg=[sel, before], timeout=timeout_ms)
    return page.text_content(sel) or ""


def capture_dashboard(browser: Browser, url: str, out: Path = SCREENSHOT) -> Path:
    """Load the dashboard, check it goes live and renders, save a screenshot; return its path."""
    page, watch = _open(browser)
    try:
        page.goto(url + "/", wait_until="load")

        _wait_number(page, "#readings-per-s")
        first = page.text_content("#readings-per-s") or ""
        changed = _wait_change(page, "#readings-per-s", first)
        assert changed != first
        page.wait_for_function(
            "document.querySelector('#connection').dataset.state === 'live'", timeout=5_000)

        # ECharts: vendored copy of the pinned version, served by the hub.
        assert page.evaluate("typeof echarts") == "object", "ECharts did not load"
        assert page.evaluate("echarts.version") == pinned_echarts_version()
        assert any(urlsplit(u).path == "/static/vendor/echarts.min.js" and s == 200
                   for u, s in watch.vendor_responses), watch.vendor_responses

        # 38 districts: tiles with a name each, and 38 bars in the AQI chart.
        assert page.locator("#district-grid .district-tile").count() == N_DISTRICTS
        names = page.locator("#district-grid .district-tile .dn").all_text_contents()
        assert len(set(names)) == N_DISTRICTS and all(names)
        n_bars = page.evaluate("echarts.getInstanceByDom(document.getElementById("
                               "'chart-district-aqi')).getOption().series[0].data.length")
        assert n_bars == N_DISTRICTS

        # Headline figures and the other panels have content.
        assert re.fullmatch(r"\d+|—", (page.text_content("#city-aqi") or "").strip())
        assert re.fullmatch(r"[\d,]+", (page.text_content("#stored-raw") or "").strip())
        assert page.locator("#domain-rows tr").count() > 0
        n_points = page.evaluate("echarts.getInstanceByDom(document.getElementById("
                                 "'chart-readings')).getOption().series[0].data.length")
        assert n_points > 0

        # The city's first AQI comes with the hub's first analytics snapshot (~15 s in).
        _wait_number(page, "#city-aqi", timeout_ms=90_000)
        page.wait_for_timeout(1200)  # let bar animations settle before the picture
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=False)

        assert not watch.page_errors, watch.page_errors
        assert not watch.console, watch.console
        assert not watch.external, f"requests left 127.0.0.1: {watch.external}"
    finally:
        page.close()
    return out


def test_dashboard_live(browser: Browser, dashboard_url: str, tmp_path: Path) -> None:
    update = os.environ.get("CITYBRAIN_UPDATE_SCREENSHOT") == "1"
    shot = capture_dashboard(browser, dashboard_url,
                             SCREENSHOT if update else tmp_path / "dashboard.png")
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_dashboard_polls_when_sse_fails(browser: Browser, dashboard_url: str) -> None:
    page, watch = _open(browser)
    try:
        page.route("**/events", lambda route: route.fulfill(status=503, body="no SSE"))
        page.goto(dashboard_url + "/", wait_until="load")
        page.wait_for_function(
            "document.querySelector('#connection').dataset.state === 'polling'",
            timeout=LIVE_TIMEOUT_MS)
        _wait_number(page, "#readings-per-s")
        first = page.text_content("#readings-per-s") or ""
        _wait_change(page, "#readings-per-s", first)
        assert page.locator("#district-grid .district-tile").count() == N_DISTRICTS
        # The blocked stream itself is reported by Chromium; nothing else may be.
        others = [m for m in watch.console if "/events" not in m and "503" not in m]
        assert not others, others
        assert not watch.page_errors, watch.page_errors
        assert not watch.external, watch.external
    finally:
        page.close()
