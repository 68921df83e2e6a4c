"""The hub's HTTP endpoints: live dashboard, state API, Server-Sent Events, Prometheus.

=====================  ====================================================================
``GET /``              the dashboard (``hub/dashboard/index.html``)
``GET /static/…``      files under ``hub/dashboard/`` (ECharts is vendored there: no CDN)
``GET /api/state``     the live state JSON (``hub.live``), from memory
``GET /events``        Server-Sent Events: ``event: state`` with the same JSON, every second
``GET /api/stats``     the hub's counters, with its latency histograms (``hub.latency``)
``GET /metrics``       Prometheus text format (prometheus-client)
``GET /healthz``       ``ok``
=====================  ====================================================================

Binds to 127.0.0.1 unless told otherwise (``--http-host``). Each request runs on its own
thread (stdlib ``ThreadingHTTPServer``); handlers only read ``LiveState.state_json`` (bytes
swapped in atomically by the processing thread) and counter snapshots.
"""

from __future__ import annotations

import logging
import mimetypes
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("citybrain.http")

DASHBOARD_DIR = Path(__file__).parent / "dashboard"


class StateSource(Protocol):
    """What the handlers read: the live state as JSON bytes (``hub.live.LiveState``, or a
    cluster node's view of its partitions, ``hub.cluster.NodeLiveView``)."""

    @property
    def state_json(self) -> bytes: ...
SSE_INTERVAL_S = 1.0


class CountersCollector:
    """Prometheus view of a ``Counters`` snapshot: flat counters as ``*_total``, labelled
    ones with their label, and the listed gauges as gauges."""

    def __init__(self, prefix: str, snapshot: Callable[[], dict[str, Any]],
                 gauges: tuple[str, ...] = ()) -> None:
        self.prefix = prefix
        self.snapshot = snapshot
        self.gauges = set(gauges)

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self.snapshot().items()):
            metric = f"{self.prefix}_{name}"
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int | float):
                if name in self.gauges:
                    yield GaugeMetricFamily(metric, f"{name} (gauge)", value=float(value))
                else:
                    yield CounterMetricFamily(metric, f"{name} (counter)", value=float(value))
            elif isinstance(value, dict) and all(isinstance(v, int | float)
                                                 for v in value.values()):
                family = CounterMetricFamily(metric, f"{name} by label", labels=["label"])
                for label, v in sorted(value.items()):
                    family.add_metric([str(label)], float(v))
                yield family


def metrics_registry(prefix: str, snapshot: Callable[[], dict[str, Any]],
                     gauges: tuple[str, ...] = ()) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CountersCollector(prefix, snapshot, gauges))
    return registry


class HubHttp:
    """Serve the live view and metrics of one hub in a daemon thread."""

    def __init__(self, live: StateSource, registry: CollectorRegistry, host: str = "127.0.0.1",
                 port: int = 8080, stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.live = live
        self.stats = stats
        self.registry = registry
        self._stop = threading.Event()
        handler = _handler_class(self)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="hub-http",
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()
        log.info("dashboard and metrics at %s", self.url)

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def _handler_class(app: HubHttp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "citybrain-hub"

        def log_message(self, format: str, *args: Any) -> None:  # quiet access log
            log.debug("%s " + format, self.address_string(), *args)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._file(DASHBOARD_DIR / "index.html")
            elif path.startswith("/static/"):
                self._static(path[len("/static/"):])
            elif path == "/api/state":
                self._send(200, "application/json", app.live.state_json)
            elif path == "/events":
                self._events()
            elif path == "/api/stats" and app.stats is not None:
                import orjson
                self._send(200, "application/json",
                           orjson.dumps(app.stats(), option=orjson.OPT_NON_STR_KEYS))
            elif path == "/metrics":
                self._send(200, "text/plain; version=0.0.4; charset=utf-8",
                           generate_latest(app.registry))
            elif path == "/healthz":
                self._send(200, "text/plain", b"ok\n")
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _static(self, rel: str) -> None:
            target = (DASHBOARD_DIR / rel).resolve()
            if DASHBOARD_DIR.resolve() not in target.parents:  # no path traversal
                self._send(404, "text/plain", b"not found\n")
                return
            self._file(target)

        def _file(self, target: Path) -> None:
            if not target.is_file():
                self._send(404, "text/plain", b"not found\n")
                return
            ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype in ("application/javascript",):
                ctype += "; charset=utf-8"
            self._send(200, ctype, target.read_bytes())

        def _events(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "keep-alive")
            self.end_headers()
            try:
                while not app._stop.is_set():
                    self.wfile.write(b"event: state\ndata: " + app.live.state_json + b"\n\n")
                    self.wfile.flush()
                    if app._stop.wait(SSE_INTERVAL_S):
                        break
            except (BrokenPipeError, ConnectionResetError):
                return  # the browser went away

    return Handler


def wait_http(url: str, timeout_s: float = 10.0) -> bool:
    """Poll ``url`` until it answers 200 (used by tests and ``citybrain up``)."""
    from urllib.error import URLError
    from urllib.request import urlopen
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except (URLError, OSError):
            time.sleep(0.1)
    return False
