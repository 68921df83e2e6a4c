"""The city hub service: frames in from MQTT, aggregates and raw readings out to InfluxDB.

Threads and contracts:
  * paho's network thread runs ``_on_message``: it only enqueues the payload (bounded queue).
  * the processing thread owns everything stateful: decode (``citybrain.frame``), series
    resolution (``hub.series``), windowed aggregation (``hub.window``, numba), line-protocol
    rendering (``hub.lineproto``, numba); it hands rendered bytes to the writer.
  * the writer thread (``hub.writer``) batches and stores them in InfluxDB.

Event time: windows are tumbling in device time. The hub's event clock is the running
maximum of each frame's 90th-percentile reading time — robust to the odd device whose clock
is far ahead (under a tenth of a frame), yet following a frame that spans a long stretch of
device time (a replayed backlog) — and advances with wall time while no frames arrive, so
windows still close when traffic stops. Firing, lateness and rollups are
``hub.aggregation``'s: on time at the window's end, final once the allowed lateness has
passed. Readings for an already-closed window are counted as ``late_readings`` (still stored
raw); readings implausibly far ahead of the event clock are ``early_readings`` (stored raw,
not aggregated).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt

from citybrain import topics
from citybrain.frame import Frame, FrameError, decode_frame
from citybrain.mqtt import BrokerConfig, Subscription, connect_and_wait, make_client
from citybrain.stats import Counters, StatsWriter
from hub.aggregation import Emission, MultiResolutionWindows
from hub.analytics import AnalyticsConfig, AnalyticsOut, CityAnalytics
from hub.lineproto import render_multi, render_single
from hub.live import LiveState
from hub.series import SeriesRegistry
from hub.sinks import InfluxConfig, InfluxSink, ensure_target_with_retry, make_sink
from hub.writer import InfluxWriter
from seeds.city import City

if TYPE_CHECKING:
    from hub.http import HubHttp

log = logging.getLogger("citybrain.hub")

#: Snapshot fields that are levels, not running totals (Prometheus gauges).
HUB_GAUGES = ("frame_queue_depth", "write_queue_depth", "series", "devices", "links_online",
              "event_clock_ns", "latency_p50_s", "latency_p95_s", "latency_p99_s")
AGG_FIELDS = ["count", "mean", "min", "max", "sum", "first", "last", "std"]
AGG_IS_INT = np.array([True] + [False] * (len(AGG_FIELDS) - 1))


@dataclass
class HubConfig:
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    influx: InfluxConfig = field(default_factory=InfluxConfig)
    scale: float = 1.0
    client_id: str = "citybrain-hub"
    window_s: float = 10.0
    rollups_s: tuple[float, ...] = (60.0, 3600.0)
    allowed_lateness_s: float = 30.0
    max_ahead_s: float = 300.0
    store_raw: bool = True
    analytics: bool = True
    analytics_config: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    snapshot_interval_s: float = 60.0
    http_host: str = "127.0.0.1"
    http_port: int | None = None  # None: no HTTP server (dashboard, API, /metrics)
    write_batch_lines: int = 10_000
    write_flush_s: float = 0.5
    queue_frames: int = 10_000
    stats_path: Path | None = None


def _frame_clock(ts_ns: np.ndarray) -> int | None:
    """A frame's robust "now" in device time: its 90th-percentile timestamp (O(n))."""
    if len(ts_ns) == 0:
        return None
    k = (9 * (len(ts_ns) - 1)) // 10
    return int(np.partition(ts_ns, k)[k])


class Hub:
    def __init__(self, cfg: HubConfig, city: City | None = None,
                 sink: InfluxSink | None = None) -> None:
        self.cfg = cfg
        self.city = city or City(cfg.scale)
        self.counters = Counters()
        self.windows = MultiResolutionWindows((cfg.window_s, *cfg.rollups_s),
                                              cfg.allowed_lateness_s, cfg.max_ahead_s)
        self.registry = SeriesRegistry(self.city, agg_labels=tuple(self.windows.labels))
        self.live = LiveState(self.city)
        self.analytics = (CityAnalytics(self.city, self.registry, cfg.analytics_config,
                                        self.live) if cfg.analytics else None)
        # Early snapshots at 15 s and 45 s (the first final windows, hence the first
        # provisional AQI, exist ~40 s in), so the live view fills within a minute.
        self._started = time.monotonic()
        self._early_snapshots = [15.0, 45.0]
        self._last_snapshot = self._started
        self._last_live = 0.0
        self.http: HubHttp | None = None
        self.sink = sink or make_sink(cfg.influx)
        self.writer = InfluxWriter(self.sink, self.counters, batch_lines=cfg.write_batch_lines,
                                   flush_s=cfg.write_flush_s)
        self.event_clock_ns: int | None = None
        self._event_clock_wall = time.monotonic()
        self.online_links: dict[str, set[str]] = {}
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(cfg.queue_frames)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-worker", daemon=True)
        self._stats = StatsWriter(cfg.stats_path, self.snapshot)
        self.client = make_client(cfg.client_id, cfg.broker, clean_session=False)
        self._subscription = Subscription([(topics.FRAMES_FILTER, 1), (topics.EVENTS_FILTER, 1),
                                           (topics.DLQ_FILTER, 1)])
        self.client.on_connect = self._subscription.on_connect
        self.client.on_subscribe = self._subscription.on_subscribe
        self.client.on_message = self._on_message

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        ensure_target_with_retry(self.sink)
        self.writer.start()
        self._thread.start()
        connect_and_wait(self.client, self.cfg.broker)
        self._subscription.wait()  # ready only once the broker routes frames here
        self._stats.start()
        if self.cfg.http_port is not None:
            from hub.http import HubHttp, metrics_registry
            registry = metrics_registry("citybrain_hub", self.snapshot, gauges=HUB_GAUGES)
            self.http = HubHttp(self.live, registry, self.cfg.http_host, self.cfg.http_port)
            self.http.start()
        log.info("hub %s ingesting into %s", self.cfg.client_id, self.cfg.influx.describe())

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Stop ingesting, close every window, store everything; returns final counters."""
        self.client.disconnect()
        self.client.loop_stop()
        self._stopping.set()
        self._thread.join(timeout=timeout_s)
        unwritten = self.writer.stop(timeout_s)
        self.counters.inc("unwritten_lines_at_exit", unwritten)
        self.sink.close()
        self._stats.stop()
        if self.http is not None:
            self.http.stop()
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        snap = self.counters.snapshot()
        snap["cpu_s"] = time.process_time()
        snap["frame_queue_depth"] = self._queue.qsize()
        snap["write_queue_depth"] = self.writer.depth
        snap["series"] = self.registry.n_series
        snap["devices"] = self.registry.n_devices
        snap["links_online"] = len(self.online_links)
        snap["event_clock_ns"] = self.event_clock_ns
        for q in ("p50", "p95", "p99"):
            snap[f"latency_{q}_s"] = self.live.pipeline.get(f"latency_{q}_s")
        snap["influx"] = self.cfg.influx.describe()
        return snap

    # -- paho callbacks (network thread) --------------------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._queue.put((msg.topic, bytes(msg.payload)))

    # -- processing thread ----------------------------------------------------------------
    def _run(self) -> None:
        last_tick = time.monotonic()
        while True:
            try:
                topic, payload = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    break
            else:
                try:
                    if topic.startswith(f"{topics.PREFIX}/frames/"):
                        self.handle_frame(payload)
                    elif topic.startswith(f"{topics.PREFIX}/dlq/"):
                        self.handle_dead_letter(payload)
                    else:
                        self.handle_event(payload)
                except Exception:
                    log.exception("unexpected error on %s; frame counted as failed", topic)
                    self.counters.inc_label("frames_rejected", "internal_error")
            now = time.monotonic()
            if now - last_tick >= 0.2:
                self.tick(now)
                last_tick = now
        self.emit(self.windows.close_all())
        if self.analytics is not None and self.event_clock_ns is not None:
            self._analytics(lambda a: a.on_minute(self.event_clock_ns or 0,
                                                   self.windows.pending("1h")))

    def handle_frame(self, payload: bytes) -> None:
        """Decode, aggregate and render one frame (processing thread)."""
        self.counters.inc("frames_in")
        try:
            frame = decode_frame(payload)
        except FrameError as exc:
            self.counters.inc_label("frames_rejected", exc.reason)
            log.warning("rejected frame: %s", exc)
            return
        self.ingest(frame)

    def ingest(self, frame: Frame) -> None:
        n = len(frame)
        self.counters.inc("frames_ok")
        self.counters.inc("hub_received", n)
        if n == 0:
            return
        resolved = self.registry.resolve(frame)
        series, ts, value = resolved.series, frame.ts_ns, frame.value
        if resolved.invalid:
            self.counters.inc_label("readings_invalid", resolved.reason, resolved.invalid)
            keep = series >= 0
            series, ts, value = series[keep], ts[keep], value[keep]
        self._advance_event_clock(_frame_clock(ts))
        recv = time.time_ns()
        self.live.observe_latency(ts, recv)
        if self.analytics is not None and len(series):
            dev = resolved.device[resolved.series >= 0] if resolved.invalid else resolved.device
            self._analytics(lambda a: a.on_readings(series, dev, ts, value, recv))
        if self.cfg.store_raw and len(series):
            body, lines = render_single(self.registry.raw_prefixes, series, value, ts)
            self.counters.inc("raw_nonfinite_skipped", len(series) - lines)
            self.writer.submit("raw", body, lines)
        assert self.event_clock_ns is not None
        out = self.windows.add(series, ts, value, self.event_clock_ns)
        self.counters.inc("aggregated_readings", out.added)
        self.counters.inc("late_readings", out.late)
        self.counters.inc("early_readings", out.early)
        self.counters.inc("reaggregated_readings", out.reaggregated)
        self.emit(out.emissions)

    def _advance_event_clock(self, candidate_ns: int | None) -> None:
        now = time.monotonic()
        current = self.event_clock_ns
        if current is None or (candidate_ns is not None and candidate_ns > current):
            self.event_clock_ns = candidate_ns
        self._event_clock_wall = now

    def tick(self, now_monotonic: float) -> None:
        """Close windows the watermark has passed; idle time advances the event clock;
        refresh the live view once a second."""
        if now_monotonic - self._last_live >= 1.0:
            self._last_live = now_monotonic
            self.live.refresh(self.counters.snapshot(), self._queue.qsize(), self.writer.depth,
                              self.event_clock_ns)
        if self.event_clock_ns is None:
            return
        idle = now_monotonic - self._event_clock_wall
        if idle > self.cfg.window_s:
            self.event_clock_ns += int(idle * 1e9)
            self._event_clock_wall = now_monotonic
        self.emit(self.windows.advance(self.event_clock_ns))
        if self.analytics is None:
            return
        clock = self.event_clock_ns
        lateness = int(self.cfg.allowed_lateness_s * 1e9)
        self._analytics(lambda a: a.on_tick(clock, lateness))
        early = bool(self._early_snapshots) and (
            now_monotonic - self._started >= self._early_snapshots[0])
        if early or now_monotonic - self._last_snapshot >= self.cfg.snapshot_interval_s:
            if early:
                self._early_snapshots.pop(0)
            self._last_snapshot = now_monotonic
            self._analytics(lambda a: a.on_minute(clock, self.windows.pending("1h")))

    def _analytics(self, call: Any) -> None:
        """Run an analytics step; store its points and publish its alarms. An analytics
        failure is counted and logged, never allowed to stop ingestion."""
        assert self.analytics is not None
        try:
            out: AnalyticsOut = call(self.analytics)
        except Exception:
            log.exception("analytics step failed")
            self.counters.inc("analytics_errors")
            return
        for body, lines in out.bodies:
            self.writer.submit("analytics", body, lines)
        for topic, payload in out.alarms:
            self.client.publish(topic, payload, qos=1)
            self.counters.inc("alarms_published")

    def emit(self, emissions: list[Emission]) -> None:
        """Render windows as ``agg_{label}`` points and hand them to the writer."""
        for e in emissions:
            b = e.rows
            if len(b) == 0:
                continue
            values = np.column_stack([b.count.astype(np.float64), b.mean, b.min, b.max, b.sum,
                                      b.first, b.last, np.sqrt(b.variance())])
            body, lines = render_multi(self.registry.agg_prefixes[e.label], b.series,
                                       AGG_FIELDS, values, AGG_IS_INT, b.window_start_ns)
            kind = "final" if e.final else "ontime"
            self.counters.inc_label(f"windows_{kind}", e.label, len(b))
            self.writer.submit("agg", body, lines)
        if self.analytics is not None and emissions:
            self._analytics(lambda a: a.on_emissions(emissions))

    def _mark_dead(self, devices: list[str], dead: bool) -> None:
        if self.analytics is None:
            return
        gids = [g for g in map(self.registry.device_gid, devices) if g is not None]
        self.analytics.quality.set_dead(gids, dead)

    def handle_dead_letter(self, payload: bytes) -> None:
        """Count rejected readings per system for validity (data quality)."""
        try:
            letter = orjson.loads(payload)
            parts = str(letter.get("topic", "")).split("/")
            readings = int(letter.get("readings", 0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            self.counters.inc_label("events_rejected", "bad_dead_letter")
            return
        self.counters.inc("dead_letters_seen")
        if self.analytics is not None and len(parts) == 8:
            self.analytics.on_rejected(parts[5], readings)

    def handle_event(self, payload: bytes) -> None:
        """Device births and deaths forwarded by edges: track which links are online."""
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.counters.inc_label("events_rejected", "malformed_json")
            return
        if not isinstance(event, dict):
            self.counters.inc_label("events_rejected", "not_an_object")
            return
        kind = event.get("type")
        link = str(event.get("link"))
        if kind == "birth":
            device = str(event.get("device"))
            self.online_links.setdefault(link, set()).add(device)
            self.counters.inc("births")
            if self.analytics is not None:
                attrs = event.get("attrs")
                self.analytics.on_birth(device, attrs if isinstance(attrs, dict) else {})
                self._mark_dead([device], False)
        elif kind == "death":
            gone = self.online_links.pop(link, set())
            devices = event.get("devices")
            if isinstance(devices, list):
                gone |= {str(d) for d in devices}
            self.counters.inc("deaths")
            self._mark_dead(sorted(gone), True)
        else:
            self.counters.inc_label("events_rejected", "unknown_type")
