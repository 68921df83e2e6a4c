"""The city hub service: frames in from MQTT, aggregates and raw readings out to InfluxDB.

Threads and contracts:
  * paho's network thread runs ``_on_message``: it only hands the message to the WAL's
    bounded queue. Messages are acknowledged manually, after they are durable on disk.
  * the WAL thread (``hub.wal``) appends them to the write-ahead log, fsyncs, acknowledges.
  * the processing thread reads the WAL in order (after a crash: first the records kept from
    the previous run) and owns everything stateful: frame de-duplication by (district, edge
    epoch, frame counter), decode (``citybrain.frame``), series
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
not aggregated), and readings at a time no window can hold are counted in
``readings_invalid{reason="window_range"}``.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
import paho.mqtt.client as mqtt

from citybrain import topics
from citybrain.dedup import Deduplicator, Seen
from citybrain.durable_log import unpack_message
from citybrain.frame import Frame, FrameError, decode_frame
from citybrain.memory import release_freed_memory
from citybrain.mqtt import BrokerConfig, Subscription, connect_and_wait, make_client
from citybrain.stats import Counters, StatsWriter
from hub.aggregation import Emission, MultiResolutionWindows, Rows
from hub.analytics import MINUTE_NS, AnalyticsConfig, AnalyticsOut, CityAnalytics
from hub.latency import PipelineLatency
from hub.lineproto import render_merged, render_multi
from hub.live import LiveState
from hub.rollup import ClosedWindow
from hub.series import SeriesRegistry, city_series, presized
from hub.sinks import InfluxConfig, InfluxSink, ensure_target_with_retry, make_sink
from hub.wal import HubWal
from hub.warmup import warm_up
from hub.window import WindowBatch
from hub.writer import InfluxWriter
from hub.writers import SplitWriter
from seeds.city import City

if TYPE_CHECKING:
    from hub.http import HubHttp

log = logging.getLogger("citybrain.hub")

#: Snapshot fields that are levels, not running totals (Prometheus gauges).
HUB_GAUGES = ("frame_queue_depth", "write_queue_depth", "series", "devices", "links_online",
              "event_clock_ns", "latency_p50_s", "latency_p95_s", "latency_p99_s",
              "wal_size_bytes", "wal_backlog_records", "write_queued_lines")
#: Frames remembered per (district, edge epoch) for de-duplication of re-deliveries.
FRAME_DEDUP_WINDOW = 4096
AGG_FIELDS = ["count", "mean", "min", "max", "sum", "first", "last", "std"]
AGG_IS_INT = np.array([True] + [False] * (len(AGG_FIELDS) - 1))
#: Window rows rendered and queued per writer submission (~10 MB of lines; see ``emit``).
EMIT_SLICE_ROWS = 50_000


class SnapshotClock:
    """When the hub takes its minute snapshots (``CityAnalytics.on_minute``): as the event
    clock enters a new minute, at most once per ``min_gap_s`` of hub time, so the snapshots
    follow device time whether it runs at the wall clock's pace or faster (a replayed
    backlog, ``citybrain up --speed``). And early ones ``EARLY_S`` after start: the first
    final windows, hence the first provisional AQI, exist ~40 s in, so the live view fills
    within a minute."""

    EARLY_S = (15.0, 45.0)

    def __init__(self, started_monotonic: float, min_gap_s: float, early: bool = True
                 ) -> None:
        """``early=False``: no early snapshots, one per event minute only."""
        self._started = started_monotonic
        self._min_gap_s = min_gap_s
        self._early = list(self.EARLY_S) if early else []
        self._last = started_monotonic
        self._minute: int | None = None  # event minute of the last snapshot

    def due(self, now_monotonic: float, event_clock_ns: int) -> bool:
        """Whether to take a snapshot now (then it counts as taken)."""
        minute = event_clock_ns // MINUTE_NS
        if self._minute is None:
            self._minute = minute  # the first minute is snapshot as it ends
        early = bool(self._early) and now_monotonic - self._started >= self._early[0]
        if not early and (minute == self._minute
                          or now_monotonic - self._last < self._min_gap_s):
            return False
        while self._early and now_monotonic - self._started >= self._early[0]:
            self._early.pop(0)  # every early time already passed is served by this one
        self._last, self._minute = now_monotonic, minute
        return True


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
    #: Store 1 raw reading in this many (every reading is still aggregated): load tests at
    #: rates above InfluxDB's write limit. Readings not stored raw are counted
    #: (``raw_sampled_out``).
    raw_every: int = 1
    #: Which series' finest windows (``agg_10s``) are stored: "all", or "fast": only those of
    #: series whose system reports more often than once a window (``interval_s`` below
    #: ``window_s``). A slower series' finest window holds one reading, so its row repeats
    #: that reading, and its ``agg_1m`` and ``agg_1h`` rows hold it too; every seeded system
    #: reports every 60 s or slower, and those rows are most of what a city writes
    #: (docs/capacity.md). The windows are still computed (rollups, analytics); rows not
    #: stored are counted (``windows_not_stored``).
    store_fine_windows: Literal["all", "fast"] = "all"
    analytics: bool = True
    analytics_config: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    #: the minute snapshots (quality_1m, parking, open alarms, provisional AQI) are taken as
    #: the event clock enters a new minute, at most once per this many seconds of hub time:
    #: one a minute in real time; a replay or a simulation at 120x gets one every ~4 event
    #: minutes (not one every 2 event hours, as with a snapshot per minute of hub time)
    snapshot_min_gap_s: float = 2.0
    #: return the heap's freed memory to the OS once per event minute (at most once per
    #: ``snapshot_min_gap_s``): ``citybrain.memory.release_freed_memory``
    release_freed_memory: bool = True
    http_host: str = "127.0.0.1"
    http_port: int | None = None  # None: no HTTP server (dashboard, API, /metrics)
    write_batch_lines: int = 10_000
    write_flush_s: float = 0.5
    queue_frames: int = 10_000
    write_queue_lines: int = 500_000
    #: N > 1: raw readings on N - 1 InfluxDB connections of their own, in parallel with
    #: aggregates and analytics on the last (``hub.writers``); 1: everything in order on one.
    write_connections: int = 3
    stats_path: Path | None = None
    #: Write-ahead log directory; None: a temporary one (not durable across runs).
    wal_dir: Path | None = None
    wal_max_bytes: int = 2 * 1024**3
    wal_fsync: bool = True
    #: On stop, emit every open window as final (end of a run). Off for a restart: the WAL
    #: keeps their readings and the next run completes them.
    close_windows_at_exit: bool = True
    #: Serve only these districts (a partition of a cluster, ``hub.cluster``): subscribe to
    #: their topics only. None: every district (``+`` wildcards).
    districts: tuple[str, ...] | None = None
    #: Frames taken from the WAL together (up to this many readings) are aggregated, run
    #: through analytics and rendered as one batch: the per-call costs of some hundred numpy
    #: and kernel calls are paid once per batch, not once per frame (``bench/README.md``).
    #: Only frames already waiting are joined, so an idle hub adds no delay.
    coalesce_readings: int = 200_000
    #: ... and for up to this long, s, frames arriving in a trickle (a few per tick) are
    #: gathered too: at low rates the per-call costs are per frame. Adds at most this much to
    #: device → aggregated latency (edges already hold readings up to 0.5 s in a frame).
    coalesce_linger_s: float = 0.1
    #: Load every compiled kernel at start, before taking frames (``hub.warmup``).
    warm_up: bool = True


def _frame_clock(ts_ns: np.ndarray) -> int | None:
    """A frame's robust "now" in device time: its 90th-percentile timestamp (O(n)).

    An edge appends readings as they come, so a frame's timestamps are often already in
    order: then it is read off (a comparison pass costs ~1/3 of ``np.partition``)."""
    n = len(ts_ns)
    if n == 0:
        return None
    k = (9 * (n - 1)) // 10
    if np.logical_and.reduce(ts_ns[1:] >= ts_ns[:-1]):  # non-decreasing
        return int(ts_ns[k])
    return int(np.partition(ts_ns, k)[k])


def _newest_start(rows: Rows) -> int:
    """The newest window start (ns) among ``rows`` (not empty)."""
    if isinstance(rows, ClosedWindow):
        return rows.start_ns
    return int(rows.window_start_ns.max())


def _coalesced(parts: list[Rows], size: int) -> Iterator[WindowBatch]:
    """The rows of ``parts``, in order, as batches of ``size`` rows (the last one shorter):
    small parts joined, large ones cut, a closed window gathered slice by slice. The
    batches are those of slicing all the parts concatenated, without ever holding them
    concatenated."""
    held: list[WindowBatch] = []
    n = 0
    for part in parts:
        for b in part.slices(size):
            held.append(b)
            n += len(b)
            if n >= size:
                joined = WindowBatch.concat(held)
                held, n = [], 0
                for cut in joined.slices(size):
                    if len(cut) == size:
                        yield cut
                    else:  # the rest starts the next batch
                        held, n = [cut], len(cut)
    if n:
        yield WindowBatch.concat(held)


def _subscriptions(districts: tuple[str, ...] | None) -> list[tuple[str, int]]:
    """Frames, lifecycle events and dead letters at QoS 1: of every district (wildcards) or
    of the given ones."""
    if districts is None:
        return [(topics.FRAMES_FILTER, 1), (topics.EVENTS_FILTER, 1), (topics.DLQ_FILTER, 1)]
    return [(topic(d), 1) for d in districts
            for topic in (topics.frames_topic, topics.events_topic, topics.dlq_topic)]


class _ReadingBatch:
    """Resolved readings of consecutive frames, joined into one batch."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.n = 0  # readings
        self.frames = 0

    def add(self, series: np.ndarray, dev: np.ndarray, ts: np.ndarray,
            value: np.ndarray) -> None:
        self._parts.append((series, dev, ts, value))
        self.n += len(series)
        self.frames += 1

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The batch as (series, device, ts_ns, value) arrays, in arrival order; empties it.

        The arrays are always writeable. A decoded frame's columns are read-only views of
        its payload, and numba types a read-only array apart from a writeable one: handing
        a lone frame's columns to the kernels as they are would make every kernel that reads
        them compile (or load from its disk cache) a second specialisation, on the first
        one-frame batch of a run — seconds of CPU after an edit of ``hub/``, some 50 ms
        for the nine of them even when cached — that the start-up warm-up (``hub.warmup``, whose
        batches always join several frames) never loads. Copying costs far less (16 bytes
        per reading, once per batch)."""
        parts, self._parts, self.n, self.frames = self._parts, [], 0, 0
        if len(parts) == 1:
            s, d, t, v = (a if a.flags.writeable else a.copy() for a in parts[0])
            return s, d, t, v
        s, d, t, v = (np.concatenate(col) for col in zip(*parts, strict=True))
        return s, d, t, v


def _fine_not_stored(cfg: HubConfig, city: City) -> np.ndarray | None:
    """bool per system of ``city``: its series' finest windows are not stored (None: all
    are, ``store_fine_windows="all"``)."""
    if cfg.store_fine_windows == "all":
        return None
    if cfg.store_fine_windows != "fast":
        raise ValueError(f"store_fine_windows must be 'all' or 'fast', got "
                         f"{cfg.store_fine_windows!r}")
    return np.array([s.interval_s >= cfg.window_s for s in city.systems], dtype=np.bool_)


class Hub:
    def __init__(self, cfg: HubConfig, city: City | None = None,
                 sink: InfluxSink | None = None) -> None:
        self.cfg = cfg
        self.city = city or City(cfg.scale)
        self.counters = Counters()
        self.windows = MultiResolutionWindows((cfg.window_s, *cfg.rollups_s),
                                              cfg.allowed_lateness_s, cfg.max_ahead_s,
                                              capacity=presized(city_series(self.city)))
        self.registry = SeriesRegistry(self.city, agg_labels=tuple(self.windows.labels))
        #: per system (index into city.systems): its finest windows are not stored
        self._fine_not_stored = _fine_not_stored(cfg, self.city)
        self.live = LiveState(self.city)
        self.analytics = (CityAnalytics(self.city, self.registry, cfg.analytics_config,
                                        self.live) if cfg.analytics else None)
        self._snapshots = SnapshotClock(time.monotonic(), cfg.snapshot_min_gap_s)
        self._trims = SnapshotClock(time.monotonic(), cfg.snapshot_min_gap_s, early=False)
        self._last_live = 0.0
        self.http: HubHttp | None = None
        self.sink = sink or make_sink(cfg.influx)
        self.latency = PipelineLatency()
        self.sinks = [self.sink]
        on_durable = lambda ticket, ok: self.latency.stored(ticket, time.time_ns(), ok)  # noqa: E731
        self.writer: InfluxWriter | SplitWriter
        if sink is None and cfg.write_connections > 1:  # raw readings on connections of their own
            self.sinks += [make_sink(cfg.influx) for _ in range(cfg.write_connections - 1)]
            self.writer = SplitWriter(self.sinks[1:], self.sink, self.counters,
                                      batch_lines=cfg.write_batch_lines,
                                      flush_s=cfg.write_flush_s,
                                      max_queued_lines=cfg.write_queue_lines,
                                      on_durable=on_durable)
        else:
            self.writer = InfluxWriter(self.sink, self.counters,
                                       batch_lines=cfg.write_batch_lines,
                                       flush_s=cfg.write_flush_s,
                                       max_queued_lines=cfg.write_queue_lines,
                                       on_durable=on_durable)
        self._raw_phase = 0  # position in the 1-in-raw_every sampling of raw readings
        self.event_clock_ns: int | None = None
        self._event_clock_wall = time.monotonic()
        self.online_links: dict[str, set[str]] = {}
        self.frame_dedup = Deduplicator(FRAME_DEDUP_WINDOW)
        self._stopping = threading.Event()
        # stop() gave up waiting for the processing thread: it takes no more WAL records
        self._gave_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-worker", daemon=True)
        self._stats = StatsWriter(cfg.stats_path, self.snapshot)
        self.client = make_client(cfg.client_id, cfg.broker, clean_session=False,
                                  manual_ack=True)
        self._tmp_wal: tempfile.TemporaryDirectory[str] | None = None
        wal_dir = cfg.wal_dir
        if wal_dir is None:
            self._tmp_wal = tempfile.TemporaryDirectory(prefix="citybrain-wal-")
            wal_dir = Path(self._tmp_wal.name)
        self.wal = HubWal(wal_dir, self.counters, self.client.ack,
                          max_bytes=cfg.wal_max_bytes, fsync=cfg.wal_fsync,
                          ingress_size=cfg.queue_frames,
                          window_ns=dict(zip(self.windows.labels, self.windows.resolutions_ns,
                                             strict=True)))
        self._offset = self.wal.log.first_offset  # next WAL record to process
        self._replaying = False  # the record in hand was logged by an earlier run
        self._skip_raw = False  # ... and its raw lines are already stored
        self._record_offset = 0
        self._coalescing = False  # set by the processing loop: ingest() joins frames
        self._batch = _ReadingBatch()
        self._subscription = Subscription(_subscriptions(cfg.districts))
        self.client.on_connect = self._subscription.on_connect
        self.client.on_subscribe = self._subscription.on_subscribe
        self.client.on_message = self._on_message

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self.cfg.warm_up:
            warm_up(self.city, self.cfg)
        ensure_target_with_retry(self.sink)
        self.writer.start()
        if self.wal.replay_until > self._offset:
            log.info("replaying WAL records %d..%d from the previous run", self._offset,
                     self.wal.replay_until - 1)
        self._thread.start()
        self.wal.start()
        connect_and_wait(self.client, self.cfg.broker)
        self._subscription.wait()  # ready only once the broker routes frames here
        self._stats.start()
        if self.cfg.http_port is not None:
            from hub.http import HubHttp, metrics_registry
            registry = metrics_registry("citybrain_hub", self.snapshot, gauges=HUB_GAUGES)
            self.http = HubHttp(self.live, registry, self.cfg.http_host, self.cfg.http_port,
                                stats=self.snapshot)
            self.http.start()
        log.info("hub %s ingesting into %s", self.cfg.client_id, self.cfg.influx.describe())

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Graceful stop, bounded by ``timeout_s`` per stage: take no more messages, log and
        acknowledge what was taken, process the whole WAL, store everything; with
        ``close_windows_at_exit`` also emit open windows as final. Returns the final counters,
        with what remained: ``unprocessed_wal_records`` (kept on disk for the next run) and
        ``unwritten_lines_at_exit`` (their WAL records are kept too).

        A processing thread still busy after its ``timeout_s`` (a long WAL backlog, a slow
        window close) is not waited for again: it is told to give up -- it takes no more
        WAL records and does not close the open windows (the WAL keeps their readings, as
        with ``close_windows_at_exit`` off) -- and the stopped writer refuses whatever it
        submits from then on: never written, counted in ``unwritten_lines_at_exit``, its
        WAL records kept (the checkpoint is not saved while the thread runs, and a refused
        ticket never becomes durable). The snapshot counts what it submitted up to the
        moment it is taken; ``processing_unfinished_at_exit`` (1) says the thread was still
        running then. It is a daemon thread: until it finishes the step in hand or the
        process exits, it can still aggregate and analyse readings and submit their lines
        (refused; counted in ``writer.unwritten_lines`` and later ``snapshot()``s, not in
        the one returned) and publish alarms on the disconnected MQTT client (not sent:
        counted in ``alarms_queued_offline``)."""
        self.wal.close_intake(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()
        self._stopping.set()
        if self._thread.ident is not None:  # started (a failed start stops it too)
            self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            self._gave_up.set()
            log.warning("processing still busy after %.0f s: stopping without it; what it "
                        "submits from now on is counted unwritten, its WAL records are kept",
                        timeout_s)
        self.writer.stop(timeout_s)  # its unwritten lines: read live by snapshot()
        if not self._thread.is_alive():
            self.wal.settle(self.writer.durable_ticket, force_save=True)
        self.counters.inc("unprocessed_wal_records",
                          max(0, self.wal.log.committed_offset - self._offset))
        self.wal.close()
        for each in self.sinks:
            each.close()
        if self._thread.is_alive():  # the snapshots below cannot hold what it does next
            self.counters.inc("processing_unfinished_at_exit")
        self._stats.stop()
        if self.http is not None:
            self.http.stop()
        snap = self.snapshot()
        if self._tmp_wal is not None:
            self._tmp_wal.cleanup()
        return snap

    def snapshot(self) -> dict[str, Any]:
        snap = self.counters.snapshot()
        if self._stopping.is_set():
            # read live, not counted once in stop(): lines a processing thread still running
            # submits after the writer stopped (refused) are in every later snapshot
            snap["unwritten_lines_at_exit"] = self.writer.unwritten_lines
        snap["cpu_s"] = time.process_time()
        wal = self.wal.stats(self._offset)
        snap["frame_queue_depth"] = wal.pop("ingress_depth")
        snap |= wal
        snap["write_queue_depth"] = self.writer.depth
        snap["write_queued_lines"] = self.writer.queued_lines
        snap["series"] = self.registry.n_series
        snap["devices"] = self.registry.n_devices
        snap["links_online"] = len(self.online_links)
        snap["event_clock_ns"] = self.event_clock_ns
        for q in ("p50", "p95", "p99"):
            snap[f"latency_{q}_s"] = self.live.pipeline.get(f"latency_{q}_s")
        snap["influx"] = self.cfg.influx.describe()
        snap["latency_hist"] = self.latency.snapshot()
        return snap

    # -- paho callbacks (network thread) --------------------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.wal.offer(msg.mid, msg.qos, msg.topic, bytes(msg.payload))

    # -- processing thread ----------------------------------------------------------------
    def _run(self) -> None:
        last_tick = time.monotonic()
        reader = self.wal.reader()
        self._offset = reader.next_offset
        linger = self.cfg.coalesce_linger_s
        held_since: float | None = None  # when the batch in hand took its first readings
        unmarked = False  # records processed since the last mark_processed
        while not self._gave_up.is_set():  # stop() no longer waits: its writer refuses lines
            wait = 0.1 if held_since is None else max(
                0.0, held_since + linger - time.monotonic())
            records = reader.read(64, timeout_s=wait)
            if not records and self._stopping.is_set() and self.wal.logging_done and (
                    self._offset >= self.wal.log.committed_offset):
                break
            self._coalescing = True
            for rec in records:
                self._process_record(rec.offset, rec.payload)
            self._coalescing = False
            unmarked |= bool(records)
            now = time.monotonic()
            if held_since is None and self._batch.n:
                held_since = now
            tick_due = now - last_tick >= 0.2
            # Keep joining frames for up to ``linger``; a tick (which may close windows the
            # batch feeds), a stop or a quiet WAL end the batch sooner.
            if (held_since is None or not records or tick_due or self._stopping.is_set()
                    or now - held_since >= linger):
                self._flush_batch()
                held_since = None
                if unmarked:
                    self.wal.mark_processed(self._offset, self.writer.last_ticket)
                    unmarked = False
                if tick_due:
                    self.tick(now)
                    last_tick = now
        self._flush_batch()
        reader.close()
        self._replaying = self._skip_raw = False
        # Given up on: every line of a window close would be refused; the WAL keeps the
        # readings and the next run completes the windows.
        if self.cfg.close_windows_at_exit and not self._gave_up.is_set():
            self.emit(self.windows.close_all())
            if self.analytics is not None and self.event_clock_ns is not None:
                self.minute_snapshots(self.event_clock_ns)
        self.wal.mark_processed(self._offset, self.writer.last_ticket)

    def _process_record(self, offset: int, record: bytes) -> None:
        """One WAL record: a frame, a dead letter or a lifecycle event. Frames' readings join
        the batch in hand; anything else, or a change of replay state, flushes it first, so
        every step sees the records in WAL order."""
        replaying = offset < self.wal.replay_until
        skip_raw = offset < self.wal.checkpoint.durable_offset
        if (replaying, skip_raw) != (self._replaying, self._skip_raw):
            self._flush_batch()
        self._replaying, self._skip_raw = replaying, skip_raw
        self._record_offset = offset
        try:
            topic, payload = unpack_message(record)
            if topic.startswith(f"{topics.PREFIX}/frames/"):
                self.handle_frame(payload)
                return
            self._flush_batch()
            if topic.startswith(f"{topics.PREFIX}/dlq/"):
                self.handle_dead_letter(payload)
            else:
                self.handle_event(payload)
        except Exception:
            log.exception("unexpected error on WAL record %d; counted as failed", offset)
            self.counters.inc_label("frames_rejected", "internal_error")
        finally:
            self._offset = offset + 1

    def handle_frame(self, payload: bytes) -> None:
        """Decode, de-duplicate and admit one frame (processing thread); its readings are
        aggregated at once, or with the frames the processing loop is joining (``ingest``)."""
        self.counters.inc("frames_in")
        try:
            frame = decode_frame(payload)
        except FrameError as exc:
            self.counters.inc_label("frames_rejected", exc.reason)
            log.warning("rejected frame: %s", exc)
            return
        # frame_seq = edge spool epoch (high 32 bits) and counter (low 32): a re-delivered
        # frame (broker after a crash, or an edge replaying its spool) is recognised here.
        stream = f"{frame.district}/{frame.frame_seq >> 32}"
        seen = self.frame_dedup.check(stream, frame.frame_seq & 0xFFFFFFFF)
        if seen is not Seen.NEW:
            self.counters.inc(f"frames_{seen.value}")
            self.counters.inc("readings_in_duplicate_frames", len(frame))
            return
        self.ingest(frame)

    def handle_frames(self, payloads: list[bytes]) -> None:
        """``handle_frame`` for each, their readings aggregated as one batch (what the
        processing loop does with the frames it takes from the WAL together)."""
        self._coalescing = True
        try:
            for payload in payloads:
                self.handle_frame(payload)
        finally:
            self._coalescing = False
            self._flush_batch()

    def ingest(self, frame: Frame) -> None:
        """Admit a decoded, new frame: count it, resolve its series, advance the event clock;
        its readings are then aggregated — at once, or with the frames taken from the WAL
        with it (``coalesce_readings``)."""
        n = len(frame)
        self.counters.inc("frames_ok")
        self.counters.inc("hub_received", n)
        if n == 0:
            return
        resolved = self.registry.resolve(frame)
        series, dev, ts, value = resolved.series, resolved.device, frame.ts_ns, frame.value
        if resolved.invalid:
            self.counters.inc_label("readings_invalid", resolved.reason, resolved.invalid)
            keep = series >= 0
            series, dev, ts, value = series[keep], dev[keep], ts[keep], value[keep]
        self._advance_event_clock(_frame_clock(ts))
        if len(ts):
            self.wal.note_readings(self._record_offset, min(
                int(np.maximum.reduce(ts)), (self.event_clock_ns or 0)
                + self.windows.max_ahead_ns))
            self._batch.add(series, dev, ts, value)
        if not self._coalescing or self._batch.n >= self.cfg.coalesce_readings:
            self._flush_batch()

    def _flush_batch(self) -> None:
        """Aggregate, analyse and store the readings of the frames in hand."""
        batch = self._batch
        if batch.n == 0:
            return
        frames = batch.frames
        series, dev, ts, value = batch.take()
        try:
            self._aggregate(series, dev, ts, value)
        except Exception:
            log.exception("unexpected error aggregating %d frames; counted as failed", frames)
            self.counters.inc_label("frames_rejected", "internal_error", frames)

    def _aggregate(self, series: np.ndarray, dev: np.ndarray, ts: np.ndarray,
                   value: np.ndarray) -> None:
        recv = time.time_ns()
        self.live.observe_latency(ts, recv)
        assert self.event_clock_ns is not None
        if self.analytics is not None:
            clock = self.event_clock_ns
            ahead = clock + self.windows.max_ahead_ns  # as early windows
            self._analytics(lambda a: a.on_readings(series, dev, ts, value, recv, ahead,
                                                    clock))
        if self.cfg.store_raw and not self._skip_raw:
            self._store_raw(series, ts, value)
        out = self.windows.add(series, ts, value, self.event_clock_ns)
        self.latency.aggregated(ts, time.time_ns())
        self.counters.inc("aggregated_readings", out.added)
        self.counters.inc("late_readings", out.late)
        self.counters.inc("early_readings", out.early)
        if out.invalid:  # a time no window holds (INT64_MIN, or past INT64_MAX): stored raw
            self.counters.inc_label("readings_invalid", "window_range", out.invalid)
        self.counters.inc("reaggregated_readings", out.reaggregated)
        self.emit(out.emissions)

    def _store_raw(self, series: np.ndarray, ts: np.ndarray, value: np.ndarray) -> None:
        every = self.cfg.raw_every
        if every > 1:
            # readings i with (phase + i) % every == 0: every every-th from the first such,
            # taken as strided slices (copied to be contiguous), not a mask over the batch
            n = len(ts)
            first = -self._raw_phase % every
            self._raw_phase = (self._raw_phase + n) % every
            series, ts, value = (np.ascontiguousarray(a[first::every])
                                 for a in (series, ts, value))
            self.counters.inc("raw_sampled_out", n - len(ts))
            if not len(ts):
                return
        # In slices of a write batch: each can go on its own connection (a batch of joined
        # frames holds up to coalesce_readings).
        step = max(self.cfg.write_batch_lines, 1)
        for i in range(0, len(ts), step):
            s, t, v = series[i:i + step], ts[i:i + step], value[i:i + step]
            # a message's readings (one device, one time) in one line: fewer lines for
            # influxd to parse, the same points; the writer counts readings (values)
            body, values = render_merged(self.registry.raw_prefixes, s, v, t)
            self.counters.inc("raw_nonfinite_skipped", len(s) - values)
            ticket = self.writer.submit("raw", body, values)
            self.latency.pending_store(ticket, t)

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
            self.live.refresh(self.counters.snapshot(), self.wal.stats(self._offset)[
                "wal_backlog_records"], self.writer.depth, self.event_clock_ns)
        self.wal.settle(self.writer.durable_ticket)
        if self.event_clock_ns is None:
            return
        idle = now_monotonic - self._event_clock_wall
        if idle > self.cfg.window_s:
            self.event_clock_ns += int(idle * 1e9)
            self._event_clock_wall = now_monotonic
        self.emit(self.windows.advance(self.event_clock_ns))
        if self.cfg.release_freed_memory and self._trims.due(now_monotonic,
                                                              self.event_clock_ns):
            self._release_freed_memory()
        if self.analytics is None:
            return
        clock = self.event_clock_ns
        lateness = int(self.cfg.allowed_lateness_s * 1e9)
        self._analytics(lambda a: a.on_tick(clock, lateness))
        if self._snapshots.due(now_monotonic, clock):
            self.minute_snapshots(clock)

    def _release_freed_memory(self) -> None:
        """Hand the heap's freed memory back to the OS, counting the calls and their time
        (``heap_trims``, ``heap_trim_us``)."""
        t0 = time.perf_counter()
        if release_freed_memory():
            self.counters.inc("heap_trims")
            self.counters.inc("heap_trim_us", int((time.perf_counter() - t0) * 1e6))

    def minute_snapshots(self, clock_ns: int) -> None:
        """The analytics' once-a-minute points at hub time ``clock_ns``, with the hour in
        progress of the series they read (the air stations' pollutants)."""
        self._analytics(lambda a: a.on_minute(
            clock_ns, self.windows.pending("1h", select=a.reads_hour_partial)))

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
        if self._skip_raw:  # a replay of what was stored: rebuild state, don't overwrite
            return
        if self._replaying and out.alarms:
            self.counters.inc("alarms_not_republished", len(out.alarms))
            out = AnalyticsOut(out.bodies, [])
        for body, lines in out.bodies:
            self.writer.submit("analytics", body, lines)
        for topic, payload in out.alarms:
            self._publish_alarm(topic, payload)

    def _publish_alarm(self, topic: str, payload: bytes) -> None:
        """Publish one alarm (QoS 1) and count what became of it. The alarm is stored in
        InfluxDB either way (``analytics`` lines); this counts the MQTT notification:
        ``alarms_published`` (handed to the connection), ``alarms_queued_offline`` (the
        broker is away: paho keeps the message and sends it once reconnected -- not if the
        hub stops first) or ``alarms_not_published`` (refused, e.g. paho's queue is full;
        logged)."""
        rc = self.client.publish(topic, payload, qos=1).rc
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self.counters.inc("alarms_published")
        elif rc == mqtt.MQTT_ERR_NO_CONN:
            self.counters.inc("alarms_queued_offline")
        else:
            self.counters.inc("alarms_not_published")
            log.warning("alarm on %s not published: %s", topic, mqtt.error_string(rc))

    def emit(self, emissions: list[Emission]) -> None:
        """Render windows as ``agg_{label}`` points and hand them to the writer.

        Windows already final in InfluxDB (per the WAL checkpoint) are dropped: after a crash
        the replay sees only part of their readings and must not overwrite them."""
        emissions = [self._not_yet_stored(e) for e in emissions]
        # One body per (resolution, final) instead of one per emission: a batch spanning
        # many windows comes out of ``MultiResolutionWindows.add`` as an emission per ring
        # chunk and resolution (hundreds a minute when device time runs fast), and each
        # render and writer hand-off has a fixed cost. The lines are the same, rows in the
        # same order within a group; groups are distinct measurements, or on-time and final
        # rows of distinct windows (one call never emits a window both ways), so InfluxDB
        # stores the same points. A group's final mark covers its newest window (the
        # checkpoint keeps the highest mark) once its one body is stored.
        # A final row whose window was stored on time and has not changed since is not
        # written again (``Emission.unchanged``): InfluxDB holds those values already. That
        # is most final 10 s rows (no late reading reached them): about half the aggregate
        # lines influxd would parse. Its final mark then waits for the writer's last ticket,
        # which the on-time body's precedes.
        groups: dict[tuple[str, bool], list[Rows]] = {}
        ends: dict[tuple[str, bool], int] = {}
        for e in emissions:
            if len(e.rows) == 0:
                continue
            key = (e.label, e.final)
            ends[key] = max(ends.get(key, -(2**63)), _newest_start(e.rows))
            rows = e.rows
            if e.unchanged is not None and e.unchanged.any():
                assert isinstance(rows, WindowBatch)  # set on the finest resolution's only
                self.counters.inc_label("windows_final_unchanged", e.label,
                                        int(np.count_nonzero(e.unchanged)))
                rows = rows.take(~e.unchanged)
            self.counters.inc_label("windows_final" if e.final else "windows_ontime",
                                    e.label, len(e.rows))
            if self._fine_not_stored is not None and e.label == self.windows.labels[0]:
                rows = self._fast_series_rows(e.label, rows)
            groups.setdefault(key, []).append(rows)
        for (label, final), parts in groups.items():
            ticket = self.writer.last_ticket  # if there is nothing to write
            # Rendered and queued a slice at a time: an hour's close at a million devices
            # is 4.5M rows, ~1 GB of lines in one body (and the peak RSS of the hub), and a
            # closed coarse window is gathered a slice at a time too. The writer takes the
            # slices in order, so the last one's ticket covers them all.
            for b in _coalesced(parts, EMIT_SLICE_ROWS):
                values = np.column_stack([b.count.astype(np.float64), b.mean, b.min, b.max,
                                          b.sum, b.first, b.last, np.sqrt(b.variance())])
                body, lines = render_multi(self.registry.agg_prefixes[label], b.series,
                                           AGG_FIELDS, values, AGG_IS_INT, b.window_start_ns)
                ticket = self.writer.submit("agg", body, lines)
            if final:
                width = self.wal.window_ns[label]
                self.wal.mark_final(label, ends[label, final] + width, ticket)
        if self.analytics is not None and emissions:
            self._analytics(lambda a: a.on_emissions(emissions))

    def _fast_series_rows(self, label: str, rows: Rows) -> Rows:
        """The finest windows' rows of series whose system reports faster than a window
        (``store_fine_windows="fast"``); the rest counted in ``windows_not_stored``."""
        assert isinstance(rows, WindowBatch) and self._fine_not_stored is not None
        reg = self.registry
        system = reg.device_system[reg.series_gid[rows.series]]
        skip = self._fine_not_stored[system]
        n_skip = int(np.count_nonzero(skip))
        if not n_skip:
            return rows
        self.counters.inc_label("windows_not_stored", label, n_skip)
        return rows.take(~skip)

    def _not_yet_stored(self, e: Emission) -> Emission:
        through = self.wal.checkpoint.final_through.get(e.label)
        if through is None or len(e.rows) == 0:
            return e
        if isinstance(e.rows, ClosedWindow):  # one window: all or nothing
            if e.rows.start_ns + self.wal.window_ns[e.label] > through:
                return e
            self.counters.inc_label("windows_already_stored", e.label, len(e.rows))
            return Emission(e.label, WindowBatch.empty(), e.final)
        keep = e.rows.window_start_ns + self.wal.window_ns[e.label] > through
        if keep.all():
            return e
        self.counters.inc_label("windows_already_stored", e.label, int((~keep).sum()))
        return Emission(e.label, e.rows.take(keep), e.final,
                        None if e.unchanged is None else e.unchanged[keep])

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
