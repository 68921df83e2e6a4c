"""Load generation over several processes: district frames or per-device JSON messages.

``run_load(cfg)`` starts ``cfg.processes`` publisher processes (``multiprocessing``, spawn)
that each own a disjoint set of districts (so each district's ``frame_seq`` stream has one
owner), lets them publish to the broker at ``cfg.broker`` for ``cfg.profile.duration_s``
seconds, and merges their reports into a ``LoadResult``.

Modes
-----
* ``frames`` -- the generator plays the district edges: columnar frames
  (``citybrain.frame``) of up to ``frame_readings`` readings on ``cb/v1/frames/{district}``
  at QoS 1, ``frame_seq = (epoch << 32) | counter`` with a random 32-bit epoch per district
  and run (a rerun is never taken for a redelivery by the hub's de-duplication). A frame is
  sealed when it is full or when its oldest reading has waited ``frame_max_age_s`` (as an
  edge does), so publish lag includes that batching delay.
* ``messages`` -- every device publishes citybrain's JSON data message on its own topic at
  ``cfg.qos``, ``seq`` 0, 1, 2, ... per device, over ``connections`` MQTT connections per
  process.

Pacing and time
---------------
Each district is a stream with share ``f = weight / total weight`` of the profile, visiting
its slots (frames: one per device and measurement) or devices (messages) round-robin. Item
``j`` of a stream is due at ``profile.time_of(end_j / f)`` (``end_j``: readings up to and
including it), and that intended instant -- wall clock, ``start_ns`` plus the schedule -- is
its timestamp (``ts_ns`` / ``t``), not the moment it leaves: if the generator stalls, the
stall shows as latency downstream instead of being hidden (coordinated omission). Pacing
runs on ``time.monotonic()`` mapped to ``start_ns`` once, so a wall-clock step does not make
a process burst or pause.

The publish lag (send time - intended time) of *every reading* goes into an HdrHistogram in
microseconds. Because every reading carries its own intended time and none is skipped, this
already counts the time a stall held back readings; ``record_corrected_value`` would
synthesise those samples a second time, so values are recorded as they are.

Every loop has a deadline; the whole run is bounded by ``duration + grace_s``; a worker that
fails sends its traceback and the parent terminates every process.

Cost (2-core dev VM shared with other work, local Mosquitto 2.0, QoS 1, CPU time): frames
mode with 10k devices and 5,000-reading frames takes ~0.25 µs of CPU per reading in all --
2 M readings/s from 2 processes use under half a core -- of which building the frame and
its bookkeeping ~0.1 µs (zstd level 1 alone ~0.07 µs) and paho and the loop the rest; with
1M devices a frame names ~5,000 distinct parking bays (its device table is sliced, not
encoded, per frame) and building costs ~0.17 µs. Messages mode ~5k messages/s per process,
the same as ``bench.peers.load`` measured next to it.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import queue
import secrets
import signal
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from hdrh.histogram import HdrHistogram

from citybrain.loadtest import kernels
from citybrain.loadtest.devices import (
    DevicePlan,
    DistrictDevices,
    MessageTable,
    assign,
    encode_message,
)
from citybrain.loadtest.procs import QOS1_WINDOW, wait_ready
from citybrain.loadtest.profiles import RateProfile
from citybrain.loadtest.report import hdr_record_many, new_latency_histogram, percentiles
from citybrain.mqtt import BrokerConfig, make_client
from citybrain.topics import frames_topic

log = logging.getLogger("citybrain.loadtest")

MODES = ("frames", "messages")
#: Frames in flight (unacknowledged) per process, as the edge's uplink (≤ 64 frames).
FRAME_WINDOW = 64
#: Seconds: process start-up (imports, device tables, connect) and the start-signal margin.
READY_TIMEOUT_S = 120.0
START_MARGIN_S = 0.3
#: Most messages one loop pass publishes before it reads acknowledgements and reports.
MESSAGES_PER_PASS = 2_000
#: Longest sleep of an idle loop pass (also the pacing granularity), seconds.
IDLE_S = 0.002


@dataclass(frozen=True)
class LoadConfig:
    """What to generate. Rates are readings/s (``profile.rate``), times seconds."""

    mode: str = "frames"
    profile: RateProfile = field(default_factory=RateProfile)
    devices: int = 10_000
    #: City scale the hub runs with; None: the smallest that holds ``devices``.
    scale: float | None = None
    processes: int = 2
    connections: int = 4              # messages mode: MQTT connections per process
    qos: int = 1                      # messages mode (frames are always QoS 1)
    frame_readings: int = 5_000       # frames mode: readings per frame at most
    frame_max_age_s: float = 0.5      # frames mode: seal a frame once its oldest waited this
    readings_per_message: int = 3     # messages mode (capped by the kind's measurements)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    topic_prefix: str = ""            # prepended to every topic (tests isolate themselves)
    seed: int = 0                     # values only: epochs and client ids are always random
    report_interval_s: float = 0.5
    grace_s: float = 30.0             # after the profile: waiting for acknowledgements

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, got {self.qos}")
        for name in ("devices", "processes", "connections", "frame_readings",
                     "readings_per_message"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.frame_max_age_s > 0 and self.report_interval_s > 0 and self.grace_s >= 0):
            raise ValueError("frame_max_age_s and report_interval_s must be > 0, grace_s >= 0")

    def plan(self) -> DevicePlan:
        return DevicePlan.build(self.devices, self.scale)

    def weights(self, plan: DevicePlan) -> dict[str, int]:
        """Readings per round-robin cycle of each district (its share of the rate)."""
        rpm = self.readings_per_message if self.mode == "messages" else None
        return {d: plan.weight(d, rpm) for d in plan.districts()}


@dataclass(frozen=True)
class Progress:
    """What ``run_load`` hands ``on_progress`` about every ``report_interval_s``."""

    elapsed_s: float        # since the start signal
    readings: int           # published (handed to MQTT) so far, all processes
    acked_readings: int     # of which acknowledged by the broker (QoS 1) or written (QoS 0)
    expected: float         # what the profile asked for by now
    readings_per_s: float   # since the previous progress call
    errors: int
    lag_p99_s: float | None  # publish lag so far


@dataclass
class LoadResult:
    """Merged reports of every process. Counts are readings unless named otherwise."""

    config: LoadConfig
    plan: DevicePlan
    start_ns: int                  # wall clock of t = 0 of the profile
    elapsed_s: float               # start to the last report
    readings: int                  # published: handed to the MQTT client
    acked_readings: int            # acknowledged (QoS 1) or written to the socket (QoS 0)
    messages: int                  # MQTT publishes (frames or JSON messages)
    errors: int                    # publish() calls refused (their readings are not counted)
    disconnects: int
    expected: int                  # what the schedule asked for over the whole profile
    lag_us: HdrHistogram           # publish lag per reading, microseconds
    published_by_second: np.ndarray  # int64: readings by intended second since start
    sent_by_second: np.ndarray       # int64: readings by actual send second since start
    counts: dict[str, np.ndarray]    # district -> readings per device, ``plan.device_ids``
    processes: int = 0               # publisher processes used (at most one per district)
    interrupted: bool = False        # stopped early (KeyboardInterrupt / stop_event)

    @property
    def unacked_readings(self) -> int:
        return self.readings - self.acked_readings

    def device_counts(self) -> dict[str, int]:
        """Published readings per device id (only devices that published something)."""
        out: dict[str, int] = {}
        for district, counts in self.counts.items():
            ids = self.plan.device_ids(district)
            for i in np.flatnonzero(counts).tolist():
                out[ids[i]] = int(counts[i])
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready totals (no per-device data)."""
        cfg = self.config
        return {
            "mode": cfg.mode, "profile": cfg.profile.describe(), "devices": self.plan.devices,
            "scale": self.plan.scale, "processes": self.processes,
            "published_readings": self.readings, "acked_readings": self.acked_readings,
            "unacked_readings": self.unacked_readings, "expected_readings": self.expected,
            "mqtt_publishes": self.messages, "publish_errors": self.errors,
            "disconnects": self.disconnects, "elapsed_s": round(self.elapsed_s, 3),
            "readings_per_s": self.readings / self.elapsed_s if self.elapsed_s > 0 else 0.0,
            "publish_lag": percentiles(self.lag_us), "interrupted": self.interrupted,
        }


# -- pacing ---------------------------------------------------------------------------------

class Stream:
    """Round-robin over items of ``weights`` readings each, with ``share`` of the profile.

    Item ``j`` (0-based, any cycle) ends at reading ``end(j) = (j // D) * W + ends[j % D]``
    and is due once ``expected_by(t) * share >= end(j)``: at ``profile.time_of(end(j) /
    share)``, computed by ``kernels.item_times`` (bit for bit that numpy expression).
    """

    def __init__(self, weights: np.ndarray, share: float, profile: RateProfile) -> None:
        self.ends = np.ascontiguousarray(np.cumsum(weights.astype(np.int64)))
        self.d = len(self.ends)
        self.w = int(self.ends[-1])
        self.share = share
        self.profile = profile
        #: One reading per item (frames: one per slot), so ``ends`` is ``1 .. D``.
        self.unit = bool(np.all(weights == 1))
        self._segments = profile.segment_arrays()

    def due(self, expected: float) -> int:
        """Items due when the profile expects ``expected`` readings in all."""
        x = expected * self.share
        cycles = math.floor(x / self.w)
        rest = x - cycles * self.w
        if self.unit:
            # searchsorted(1 .. W, rest, "right") is floor(rest) clamped to [0, W]: the same
            # count without a numpy call (this runs for every district on every loop pass).
            return cycles * self.d + min(max(math.floor(rest), 0), self.w)
        return cycles * self.d + int(np.searchsorted(self.ends, rest, "right"))

    def expected_below(self, items: int) -> float:
        """An ``expected`` below which ``due(expected) < items``: a cheap test that a
        stream has fewer than ``items`` due (``-inf``, never true, unless ``unit``).

        For unit weights ``due(e)`` is at most ``floor(x) + 1`` for the rounded ``x = e *
        share`` (``floor(x)``, or one more when ``x / W`` rounds up to a whole cycle), so
        ``x < items - 1`` is enough; the factor keeps the product's rounding on the safe
        side."""
        if not self.unit:
            return -math.inf
        return (items - 1) / self.share * (1.0 - 1e-9)

    def intended(self, j0: int, n: int) -> np.ndarray:
        """Intended times of items ``j0 .. j0 + n - 1``, seconds since the start (float64)."""
        out_s = np.empty(n)
        self.times_into(j0, 0, out_s, np.empty(n, dtype=np.int64))
        return out_s

    def times_into(self, j0: int, start_ns: int, out_s: np.ndarray, out_ns: np.ndarray) -> None:
        """Intended times of items ``j0 .. j0 + len(out_s) - 1``: seconds since the start
        into ``out_s`` (float64) and ``start_ns + rint(seconds * 1e9)`` into ``out_ns``
        (int64, ns since the epoch; both C-contiguous, same length)."""
        if out_s.shape != out_ns.shape or out_s.dtype != np.float64 or out_ns.dtype != np.int64:
            raise ValueError("out_s and out_ns must be float64 and int64 of the same length")
        kernels.item_times(j0, self.ends, self.share, *self._segments, start_ns, out_s, out_ns)


# -- MQTT link ------------------------------------------------------------------------------

class Link:
    """One MQTT connection driven by its owner's thread (no paho network thread: ``publish``
    writes to the socket itself and ``service`` reads acknowledgements, as in
    ``bench.peers.load``). Keeps at most ``window`` QoS 1 publishes unacknowledged."""

    def __init__(self, client_id: str, broker: BrokerConfig, window: int) -> None:
        self.broker = broker
        self.window = window
        # paho's own in-flight cap is off (0): with one, every PUBACK scans all unacknowledged
        # messages (O(window) per ack: 2 s of CPU per 13k messages at a 2,000 window);
        # ``room()`` keeps the window instead, so paho never needs to queue.
        self.client = make_client(client_id, broker, max_inflight=0, max_queued=0)
        self.client.on_publish = self._on_publish
        self.pending: dict[int, int] = {}  # mid -> readings, QoS 1 until its PUBACK
        self.acked_readings = 0
        self.disconnects = 0
        self._next_reconnect = 0.0

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        self.acked_readings += self.pending.pop(mid, 0)

    def connect(self, timeout_s: float = 30.0) -> None:
        """Connect and wait for the CONNACK. Raises ``ConnectionRefusedError`` (nothing
        listens), ``ConnectionError`` (the broker refused: bad credentials, ACL) or
        ``TimeoutError``."""
        where = f"{self.broker.host}:{self.broker.port}"
        refused: list[str] = []

        def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            if getattr(rc, "is_failure", False):
                refused.append(str(rc))

        self.client.on_connect = on_connect
        deadline = time.monotonic() + timeout_s
        self.client.connect(self.broker.host, self.broker.port, self.broker.keepalive_s)
        while not self.client.is_connected():
            if refused:
                raise ConnectionError(f"broker {where} refused the connection: {refused[0]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no CONNACK from {where} in {timeout_s} s")
            self.client.loop(0.05)

    def room(self) -> bool:
        return len(self.pending) < self.window

    def publish(self, topic: str, payload: bytes, qos: int, readings: int) -> bool:
        """Hand one message to paho. True when it will be delivered as far as paho can tell
        (written, or QoS 1 kept for after a reconnect); False when paho refused it."""
        info = self.client.publish(topic, payload, qos=qos)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (qos and info.rc == mqtt.MQTT_ERR_NO_CONN):
            if qos:
                self.pending[info.mid] = readings
            else:
                self.acked_readings += readings
            return True
        return False

    def service(self, timeout_s: float = 0.0) -> None:
        """Read acknowledgements and flush the socket; reconnect (at most once a second)
        after a lost connection -- paho re-sends unacknowledged QoS 1 messages then."""
        rc = self.client.loop(timeout_s)
        if rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
            return
        now = time.monotonic()
        if now < self._next_reconnect:
            time.sleep(min(timeout_s, self._next_reconnect - now))
            return
        self._next_reconnect = now + 1.0
        self.disconnects += 1
        try:
            self.client.reconnect()
        except OSError as exc:
            log.warning("reconnect to %s:%s failed: %s", self.broker.host, self.broker.port,
                        exc)

    def close(self) -> None:
        try:
            self.client.disconnect()
            self.client.loop(0.1)
        except OSError:
            pass


# -- worker ---------------------------------------------------------------------------------

#: ``kernels.tally`` weights meaning "one reading per item" (empty: nothing to write to).
_ONE_EACH = np.zeros(0, dtype=np.int64)


@dataclass
class _Tally:
    """A worker's counters. Lags are counted straight into HDR buckets as items are
    published (``kernels.tally``, one pass, no per-item Python) and folded into the
    histogram at each report; each report starts a new histogram, so deltas travel to the
    parent."""

    seconds: int
    readings: int = 0
    messages: int = 0
    errors: int = 0
    lag: HdrHistogram = field(default_factory=new_latency_histogram)
    published_by_second: np.ndarray = field(init=False)
    sent_by_second: np.ndarray = field(init=False)
    #: Readings per HDR bucket of ``lag`` since the last report (``kernels.tally`` layout).
    _lag_counts: np.ndarray = field(init=False)
    _sent1: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.published_by_second = np.zeros(self.seconds, dtype=np.int64)
        self.sent_by_second = np.zeros(self.seconds, dtype=np.int64)
        h = self.lag
        # Bucket b holds values below 2 ** (b + 1 + unit + half magnitude); the last is the
        # one of highest_trackable_value.
        top = h.highest_trackable_value | h.sub_bucket_mask
        buckets = top.bit_length() - (h.sub_bucket_half_count_magnitude + 1) \
            - h.unit_magnitude + 1
        self._lag_counts = np.zeros(max(buckets, 1) * h.sub_bucket_count, dtype=np.int64)
        self._sent1 = np.zeros(1)

    def published(self, messages: int, intended_s: np.ndarray, sent_s: np.ndarray,
                  weights: np.ndarray | None = None) -> None:
        """Account ``messages`` publishes carrying items intended at ``intended_s`` and sent
        at ``sent_s`` (seconds since the start, per item), ``weights`` readings per item
        (``None``: one each)."""
        w = _ONE_EACH if weights is None else np.ascontiguousarray(weights, dtype=np.int64)
        self._account(messages, intended_s, np.ascontiguousarray(sent_s, dtype=np.float64), w)

    def published_at(self, messages: int, intended_s: np.ndarray, sent_s: float) -> None:
        """``published`` of items of one reading each, all sent at ``sent_s`` (a frame)."""
        self._sent1[0] = sent_s
        self._account(messages, intended_s, self._sent1, _ONE_EACH)

    def _account(self, messages: int, intended_s: np.ndarray, sent_s: np.ndarray,
                 weights: np.ndarray) -> None:
        intended = np.ascontiguousarray(intended_s, dtype=np.float64)
        if len(sent_s) not in (1, len(intended)) or len(weights) not in (0, len(intended)):
            raise ValueError("sent_s and weights must be per item (or one sent_s for all)")
        h = self.lag
        self.readings += kernels.tally(
            intended, sent_s, weights, self.published_by_second, self.sent_by_second,
            self._lag_counts, h.sub_bucket_mask, h.sub_bucket_half_count_magnitude,
            h.unit_magnitude, h.sub_bucket_count, h.highest_trackable_value)
        self.messages += messages

    def take_lag(self) -> bytes:
        """The lag histogram since the previous call, encoded; then starts a new one."""
        idx = np.flatnonzero(self._lag_counts)
        if len(idx):
            h = self.lag
            bucket, sub = np.divmod(idx, h.sub_bucket_count)
            # Each bucket's lowest value: hdr_record_many records it in the same bucket.
            hdr_record_many(h, sub << (bucket + h.unit_magnitude), self._lag_counts[idx])
            self._lag_counts[idx] = 0
        out: bytes = self.lag.encode()
        # A new histogram, not ``reset()``: hdrh zeroes its counts one by one in Python
        # (2 ms per report); a new one is a zeroed ctypes array (0.2 ms).
        self.lag = new_latency_histogram()
        return out


class _Worker:
    """One publisher process's state; ``run`` is its whole life (see the module doc)."""

    def __init__(self, index: int, cfg: LoadConfig, plan: DevicePlan, districts: list[str],
                 weights: dict[str, int], reports: Any) -> None:
        self.index = index
        self.cfg = cfg
        self.reports = reports
        self.profile = cfg.profile
        total = sum(weights.values())
        self.tables: list[DistrictDevices] = [plan.district(d) for d in districts]
        self.sent = [0] * len(districts)  # items (readings or messages) behind us, per district
        # Readings per device: messages mode counts them as it goes; frames mode counts the
        # readings of refused frames here and derives the rest from ``sent`` (round-robin).
        self.counts = [np.zeros(len(t), dtype=np.int64) for t in self.tables]
        self.rng = np.random.default_rng([cfg.seed, index])
        self.start_ns = 0
        self.mono0 = 0.0  # time.monotonic() at t = 0 of the profile
        run_id = uuid.uuid4().hex[:8]
        self.msg: list[MessageTable] = []
        if cfg.mode == "frames":
            self.streams = [Stream(np.ones(len(t.slots), dtype=np.int64),
                                   weights[t.code] / total, self.profile) for t in self.tables]
            # Random per run: the hub de-duplicates frames by (district, epoch, counter).
            self.epochs = [secrets.randbits(32) for _ in self.tables]
            self.frame_counter = [0] * len(self.tables)
            self.links = [Link(f"cb-load-{run_id}-{index}", cfg.broker, FRAME_WINDOW)]
            self.topics = [_prefixed(cfg.topic_prefix, frames_topic(t.code))
                           for t in self.tables]
            self.builders = [t.frames for t in self.tables]
            # Reused per frame: intended times (s) and timestamps (ns) of its readings.
            self._intended = np.empty(cfg.frame_readings)
            self._ts_ns = np.empty(cfg.frame_readings, dtype=np.int64)
            # Per district, for the item ``sent`` they were computed at: the intended time of
            # the oldest unsent reading, and the ``expected`` below which fewer than a frame's
            # readings are due. Loop passes test them; they change once per frame.
            self._wake_at = [-1] * len(self.tables)
            self._oldest = [0.0] * len(self.tables)
            self._full_at = [0.0] * len(self.tables)
        else:
            self.msg = [MessageTable.of(t.kind, cfg.readings_per_message) for t in self.tables]
            self.streams = [Stream(m.readings, weights[t.code] / total, self.profile)
                            for t, m in zip(self.tables, self.msg, strict=True)]
            self.device_topics = [t.topics(cfg.topic_prefix) for t in self.tables]
            self.links = [Link(f"cb-load-{run_id}-{index}-{c}", cfg.broker, QOS1_WINDOW)
                          for c in range(cfg.connections)]
            # A device keeps its connection: device i of the process (over its districts).
            self.link_base = np.cumsum([0] + [len(t) for t in self.tables])[:-1].tolist()
        self.final = [s.due(self.profile.total) for s in self.streams]
        self.tally = _Tally(seconds=_seconds(cfg))
        kernels.warm_up()  # compile before the clock starts, not on the first frame

    def now(self) -> float:
        """Seconds since t = 0 of the profile (monotonic)."""
        return time.monotonic() - self.mono0

    # -- life --------------------------------------------------------------------------
    def run(self, ready: Any, go: MpEvent, start_ns: Any, stop: MpEvent) -> None:
        for link in self.links:
            link.connect()
        ready.put(self.index)
        if not go.wait(READY_TIMEOUT_S * 2):
            raise TimeoutError("no start signal from the parent")
        self.start_ns = int(start_ns.value)
        self.mono0 = time.monotonic() + (self.start_ns - time.time_ns()) / 1e9
        # One clock reading per test: reading it again for the sleep could find t = 0 passed
        # and sleep a negative time (a ValueError that killed a worker at start).
        while (wait := -self.now()) > 0 and not stop.is_set():
            time.sleep(min(0.01, wait))
        deadline = self.profile.duration_s + self.cfg.grace_s
        next_report = self.cfg.report_interval_s
        step = self._frames_pass if self.cfg.mode == "frames" else self._messages_pass
        while not stop.is_set():
            now = self.now()
            if now > deadline or (now >= self.profile.duration_s and self.sent == self.final):
                break
            busy = step(now)
            if now >= next_report:
                self._report(final=False)
                next_report = now + self.cfg.report_interval_s
            for link in self.links:
                link.service(0.0 if busy else IDLE_S / len(self.links))
        # Drain: wait for the broker's acknowledgements, bounded by the same deadline.
        while (any(link.pending for link in self.links) and self.now() < deadline
               and not stop.is_set()):
            for link in self.links:
                link.service(0.01)
        self._report(final=True)
        for link in self.links:
            link.close()

    def _report(self, final: bool) -> None:
        t = self.tally
        msg: dict[str, Any] = {
            "type": "done" if final else "progress", "worker": self.index, "t": self.now(),
            "readings": t.readings, "messages": t.messages, "errors": t.errors,
            "acked_readings": sum(link.acked_readings for link in self.links),
            "disconnects": sum(link.disconnects for link in self.links),
            "lag": t.take_lag()}
        if final:
            msg.update(counts={tb.code: c for tb, c in zip(self.tables, self._device_counts(),
                                                           strict=True)},
                       published_by_second=t.published_by_second,
                       sent_by_second=t.sent_by_second, expected=self._expected())
        self.reports.put(msg)

    def _device_counts(self) -> list[np.ndarray]:
        """Published readings per device of each district (int64, plan order)."""
        if self.msg:
            return self.counts
        # Frames: readings 0 .. sent - 1 went out round-robin, less the refused frames'.
        return [t.slots.published_per_device(k) - refused
                for t, k, refused in zip(self.tables, self.sent, self.counts, strict=True)]

    def _expected(self) -> int:
        """Readings the schedule asks of this process over the whole profile."""
        if not self.msg:
            return int(sum(self.final))
        out = 0
        for table, items in zip(self.msg, self.final, strict=True):
            cycles, rest = divmod(items, len(table.readings))
            out += int(cycles * table.readings.sum() + table.readings[:rest].sum())
        return out

    # -- frames ------------------------------------------------------------------------
    def _frames_pass(self, now: float) -> bool:
        """Seal and publish every frame that is due; True if anything was published."""
        expected = self.profile.expected_by(now)
        link = self.links[0]
        busy = False
        ending = now >= self.profile.duration_s
        for i, stream in enumerate(self.streams):
            if not ending and self._quiet(i, expected, now):
                continue
            pending = min(stream.due(expected), self.final[i]) - self.sent[i]
            while pending > 0 and link.room():
                if (pending < self.cfg.frame_readings and not ending
                        and now - self._oldest_unsent(i) < self.cfg.frame_max_age_s):
                    break
                n = min(pending, self.cfg.frame_readings)
                self._publish_frame(i, n, link)
                pending -= n
                busy = True
        return busy

    def _quiet(self, i: int, expected: float, now: float) -> bool:
        """True if district ``i`` has no frame to seal now (while the profile runs): fewer
        than ``frame_readings`` readings due and the oldest unsent one younger than
        ``frame_max_age_s``. A shortcut only: whenever it says True the exact test in
        ``_frames_pass`` would seal nothing either, and it costs two comparisons instead of
        a ``due`` per district per pass (passes run hundreds of times a second)."""
        oldest = self._oldest_unsent(i)  # refreshes _full_at too
        return expected < self._full_at[i] and now - oldest < self.cfg.frame_max_age_s

    def _oldest_unsent(self, i: int) -> float:
        """Intended time of district ``i``'s next reading, seconds since the start. Also
        refreshes ``_full_at[i]``: both change only when a frame goes."""
        k = self.sent[i]
        if self._wake_at[i] != k:
            self._wake_at[i] = k
            stream = self.streams[i]
            self._oldest[i] = float(stream.intended(k, 1)[0])
            self._full_at[i] = stream.expected_below(k + self.cfg.frame_readings)
        return self._oldest[i]

    def _publish_frame(self, i: int, n: int, link: Link) -> None:
        k0 = self.sent[i]
        intended, ts_ns = self._intended[:n], self._ts_ns[:n]
        self.streams[i].times_into(k0, self.start_ns, intended, ts_ns)
        frame_seq = (self.epochs[i] << 32) | (self.frame_counter[i] & 0xFFFFFFFF)
        self.frame_counter[i] += 1
        payload = self.builders[i].build(k0, n, frame_seq, ts_ns, self.rng, time.time_ns())
        self.sent[i] = k0 + n  # sent or refused, these readings are behind us
        sent_s = self.now()
        if link.publish(self.topics[i], payload, 1, n):
            self.tally.published_at(1, intended, sent_s)
        else:
            self.tally.errors += 1
            # Refused: not published; ``_device_counts`` takes these readings off again.
            self.counts[i] += self.tables[i].slots.readings_per_device(k0, n)

    # -- messages ----------------------------------------------------------------------
    def _messages_pass(self, now: float) -> bool:
        """Publish due messages, at most ``MESSAGES_PER_PASS``; True if any was published."""
        expected = self.profile.expected_by(now)
        budget = MESSAGES_PER_PASS
        for i, stream in enumerate(self.streams):
            pending = min(min(stream.due(expected), self.final[i]) - self.sent[i], budget)
            if pending > 0:
                budget -= self._publish_messages(i, pending)
            if budget <= 0:
                break
        return budget < MESSAGES_PER_PASS

    def _publish_messages(self, i: int, n: int) -> int:
        """Publish district ``i``'s next ``n`` due messages in order, stopping at a full
        window (the rest stays due). Returns how many were handed over or refused."""
        table, tb = self.msg[i], self.tables[i]
        j0 = self.sent[i]
        intended = self.streams[i].intended(j0, n)
        seq, dev = np.divmod(np.arange(j0, j0 + n, dtype=np.int64), len(tb))
        values = table.values(dev, self.rng.random((n, table.width)))
        t_s = ((self.start_ns + np.rint(intended * 1e9).astype(np.int64)) / 1e9).tolist()
        # Plain lists: numpy scalar indexing per message costs more than the JSON encoding.
        seq_l, dev_l = seq.tolist(), dev.tolist()
        kind_l, readings_l = tb.kind[dev].tolist(), table.readings[dev].tolist()
        ids, topics = tb.ids, self.device_topics[i]
        ok = np.zeros(n, dtype=bool)
        sent_s = np.zeros(n)
        done = 0
        for q in range(n):
            d = dev_l[q]
            link = self.links[(self.link_base[i] + d) % len(self.links)]
            if self.cfg.qos and not link.room():
                break
            payload = encode_message(ids[d], kind_l[q], table, seq_l[q], t_s[q], values[q])
            sent_s[q] = self.now()
            ok[q] = link.publish(topics[d], payload, self.cfg.qos, readings_l[q])
            done += 1
        self.sent[i] = j0 + done
        good = np.flatnonzero(ok)
        if len(good):
            r = table.readings[dev[good]]
            np.add.at(self.counts[i], dev[good], r)
            self.tally.published(len(good), intended[good], sent_s[good], r)
        self.tally.errors += done - len(good)
        return done


def _prefixed(prefix: str, topic: str) -> str:
    return f"{prefix}/{topic}" if prefix else topic


def _worker_main(index: int, cfg: LoadConfig, plan: DevicePlan, districts: list[str],
                 weights: dict[str, int], ready: Any, reports: Any, go: MpEvent,
                 start_ns: Any, stop: MpEvent) -> None:
    """Process entry point: any failure is reported with its traceback, then re-raised.

    Ctrl-C reaches the whole process group; workers ignore it and stop when the parent sets
    ``stop``, so they still send their final report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _Worker(index, cfg, plan, districts, weights, reports).run(ready, go, start_ns, stop)
    except BaseException:
        reports.put({"type": "error", "worker": index, "error": traceback.format_exc()})
        raise


# -- parent ---------------------------------------------------------------------------------

@dataclass
class _Merge:
    """The parent's running merge of worker reports."""

    workers: int
    latest: dict[int, dict[str, Any]] = field(default_factory=dict)
    done: dict[int, dict[str, Any]] = field(default_factory=dict)
    lag: HdrHistogram = field(default_factory=new_latency_histogram)

    def add(self, msg: dict[str, Any]) -> None:
        if msg.get("lag"):
            self.lag.add(HdrHistogram.decode(msg["lag"]))
        self.latest[msg["worker"]] = msg
        if msg["type"] == "done":
            self.done[msg["worker"]] = msg

    def total(self, key: str) -> int:
        return sum(int(m[key]) for m in self.latest.values())


def run_load(cfg: LoadConfig, on_progress: Callable[[Progress], None] | None = None,
             stop_event: Any = None) -> LoadResult:
    """Run the load described by ``cfg`` and return the merged result.

    Blocks for about ``cfg.profile.duration_s`` (plus start-up and the acknowledgement
    drain, at most ``grace_s``). ``on_progress`` is called from this thread every
    ``report_interval_s``. ``stop_event`` (anything with ``is_set()``) or Ctrl-C stops the
    workers early: they report what they published and the result has ``interrupted``.
    Raises RuntimeError if a worker fails (every process is terminated first).
    """
    plan = cfg.plan()
    weights = cfg.weights(plan)
    bins = assign(weights, cfg.processes)
    ctx = mp.get_context("spawn")
    ready, reports = ctx.Queue(), ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    start_ns = ctx.Value("q", 0)
    procs = [ctx.Process(target=_worker_main, name=f"cb-load-{i}", daemon=True,
                         args=(i, cfg, plan, districts, weights, ready, reports, go, start_ns,
                               stop))
             for i, districts in enumerate(bins)]
    merge = _Merge(len(procs))
    interrupted = False
    try:
        for p in procs:
            p.start()
        try:
            wait_ready(ready, procs, READY_TIMEOUT_S)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{_errors(reports)}") from None
        start_ns.value = time.time_ns() + int(START_MARGIN_S * 1e9)
        go.set()
        interrupted = _collect(cfg, procs, reports, merge, start_ns.value, on_progress,
                               stop, stop_event)
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        _drain(procs, reports, merge, deadline=time.monotonic() + 10.0)
    finally:
        stop.set()
        _reap(procs)
    if len(merge.done) < len(procs):
        raise RuntimeError(f"{len(procs) - len(merge.done)} load process(es) gave no final "
                           "report")
    return _result(cfg, plan, start_ns.value, merge, interrupted)


def _collect(cfg: LoadConfig, procs: list[Any], reports: Any, merge: _Merge, start: int,
             on_progress: Callable[[Progress], None] | None, stop: MpEvent,
             stop_event: Any) -> bool:
    """Read reports until every worker is done; bounded by duration + grace + a margin.
    Returns True if stopped early."""
    deadline = time.monotonic() + START_MARGIN_S + cfg.profile.duration_s + cfg.grace_s + 30.0
    next_progress = time.monotonic() + cfg.report_interval_s
    last = (0.0, 0)
    interrupted = False
    while len(merge.done) < len(procs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"load processes did not finish by the deadline; done "
                               f"{sorted(merge.done)}")
        if stop_event is not None and stop_event.is_set() and not stop.is_set():
            stop.set()
            interrupted = True
        try:
            msg = reports.get(timeout=0.1)
        except queue.Empty:
            dead = [p.name for i, p in enumerate(procs)
                    if p.exitcode is not None and i not in merge.done]
            if dead:
                raise RuntimeError(f"load process(es) {dead} exited without a final report"
                                   ) from None
            continue
        if msg["type"] == "error":
            raise RuntimeError(f"load process {msg['worker']} failed:\n{msg['error']}")
        merge.add(msg)
        if on_progress is not None and time.monotonic() >= next_progress:
            next_progress = time.monotonic() + cfg.report_interval_s
            last = _progress(cfg, merge, start, last, on_progress)
    return interrupted


def _progress(cfg: LoadConfig, merge: _Merge, start: int, last: tuple[float, int],
              on_progress: Callable[[Progress], None]) -> tuple[float, int]:
    elapsed = (time.time_ns() - start) / 1e9
    readings = merge.total("readings")
    dt = elapsed - last[0]
    on_progress(Progress(elapsed_s=elapsed, readings=readings,
                         acked_readings=merge.total("acked_readings"),
                         expected=cfg.profile.expected_by(elapsed),
                         readings_per_s=(readings - last[1]) / dt if dt > 0 else 0.0,
                         errors=merge.total("errors"),
                         lag_p99_s=percentiles(merge.lag)["p99"]))
    return elapsed, readings


def _drain(procs: list[Any], reports: Any, merge: _Merge, deadline: float) -> None:
    """After a stop: take final reports until all arrived or ``deadline`` (monotonic)."""
    while len(merge.done) < len(procs) and time.monotonic() < deadline:
        try:
            msg = reports.get(timeout=0.1)
        except queue.Empty:
            continue
        except KeyboardInterrupt:
            return
        if msg["type"] != "error":
            merge.add(msg)


def _errors(reports: Any) -> str:
    """Tracebacks workers reported so far (non-blocking)."""
    out: list[str] = []
    while True:
        try:
            msg = reports.get(timeout=0.2)
        except queue.Empty:
            return "\n".join(out)
        if msg.get("type") == "error":
            out.append(f"load process {msg['worker']}:\n{msg['error']}")


def _reap(procs: list[Any]) -> None:
    """Join every process (bounded), terminate then kill the ones still alive."""
    deadline = time.monotonic() + 10.0
    for p in procs:
        if p.pid is None:
            continue
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.terminate()
            p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)


def _result(cfg: LoadConfig, plan: DevicePlan, start: int, merge: _Merge,
            interrupted: bool) -> LoadResult:
    done = list(merge.done.values())
    seconds = _seconds(cfg)
    counts: dict[str, np.ndarray] = {}
    for m in done:
        counts.update(m["counts"])
    return LoadResult(
        config=cfg, plan=plan, start_ns=start, elapsed_s=max(m["t"] for m in done),
        readings=sum(m["readings"] for m in done),
        acked_readings=sum(m["acked_readings"] for m in done),
        messages=sum(m["messages"] for m in done), errors=sum(m["errors"] for m in done),
        disconnects=sum(m["disconnects"] for m in done),
        expected=sum(m["expected"] for m in done), lag_us=merge.lag,
        published_by_second=sum((m["published_by_second"] for m in done),
                                np.zeros(seconds, dtype=np.int64)),
        sent_by_second=sum((m["sent_by_second"] for m in done),
                           np.zeros(seconds, dtype=np.int64)),
        counts=counts, processes=len(done), interrupted=interrupted)


def _seconds(cfg: LoadConfig) -> int:
    """Length of the per-second series: the profile, the acknowledgement drain, one more."""
    return math.ceil(cfg.profile.duration_s + cfg.grace_s) + 1
