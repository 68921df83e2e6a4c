"""Running the simulated firmware against an MQTT broker.

One thread does everything: it advances simulated time, asks the :class:`Scheduler` for the
messages now due, publishes them on their device's link (a paho 2.x client), and drives every
link's socket through one ``selectors`` loop (paho's external-loop API: ``loop_read``,
``loop_write``, ``loop_misc`` and the socket callbacks). paho callbacks only count or append
the link to a list; the loop acts on those lists.

Simulated time is ``start + (monotonic() - t0) * speed``. What a device sends never depends
on wall-clock timing (see ``firmware_sim.schedule``); only *when* it is sent does.

Flow control, per link: at most ``max_inflight`` QoS 1 publishes are unacknowledged at once
(paho's ``max_inflight_messages`` and ``max_queued_messages`` are set to the same value, so
paho never queues and never reuses one of its 65,535 message ids). Messages beyond the window,
or for a link that is (re)connecting, wait in the link's backlog in order; when all backlogs
together hold ``max_pending`` messages, the simulator stops generating until they drain and
simulated time falls behind (``SimStats.max_lag_s``).

Lifecycle of a link: connect with an MQTT Will on the death topic of its first device; on
CONNACK, publish a birth per device (``reset`` ``power_on`` the first time, ``link_lost``
after a reconnect), then its backlog. Injected drops shut the socket down without a
DISCONNECT, so the broker publishes the Will. On stop: no more scheduling, each link's backlog
is flushed, a clean death is published, every QoS 1 publish is awaited (bounded by
``drain_timeout_s``), then the link disconnects.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import resource
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTTErrorCode
from paho.mqtt.enums import CallbackAPIVersion

from citybrain.auth import derive_password
from citybrain.fastpaho import SUPPORTED as FAST_PAHO_SUPPORTED
from citybrain.fastpaho import FastClient
from citybrain.payload import encode_death
from firmware_sim.devices import DeviceModel, make_model, stable_hash
from firmware_sim.faults import FaultConfig, link_downtime_s, link_fault_gap_s
from firmware_sim.schedule import DATA, DUPLICATE, Scheduler
from seeds.city import City

log = logging.getLogger("citybrain.sim")

PAHO_MAX_MID = 65_535
#: Messages generated per pass of the loop before the sockets are serviced again.
BATCH = 2048
#: Longest the loop sleeps in select() when nothing is due, wall seconds.
IDLE_POLL_S = 0.05
#: How long the loop waits for acknowledgements when the backlogs are full, wall seconds.
BACKPRESSURE_POLL_S = 0.005
#: New TCP connections opened per pass while connecting (keeps the broker's accept queue sane).
CONNECT_BURST = 128
#: Wall-clock backoff between attempts to re-open a lost link, seconds.
RECONNECT_BACKOFF_S = (0.25, 5.0)

# Backlog item kinds (DATA = 0 and DUPLICATE = 1 come from the scheduler).
BIRTH = 2
DEATH = 3

# Link states.
IDLE, CONNECTING, UP, DOWN, CLOSING = range(5)


@dataclass(frozen=True)
class SimConfig:
    """What to simulate and where to publish it."""

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    #: one account for every link (a broker without per-device accounts)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: the fleet's provisioning secret (``citybrain.auth``): each link logs in with its own
    #: account and derived password — the system id for a link per system or per chunk of a
    #: system, the device id for a link per device. Excludes ``username``/``password``.
    secret: bytes | None = field(default=None, repr=False)
    #: CA certificate file: connect with TLS and check the broker's certificate against it
    tls_ca: str | None = None
    #: MQTT client ids are ``{prefix}-{system id}`` (or ``-{device id}``, ``-{system}-cNNNN``)
    client_id_prefix: str = "cbsim"
    #: device scale of ``seeds.city.City`` (1.0 ≈ 3.7k devices)
    scale: float = 1.0
    #: random seed (≥ 0): same seed, same start → same message bytes per device
    seed: int = 1
    #: simulated seconds per wall-clock second
    speed: float = 1.0
    #: stop after this many wall-clock seconds of publishing (None: until ``stop`` is set);
    #: connecting before and draining after come on top
    duration_s: float | None = None
    #: simulated start, UTC epoch seconds or an aware datetime. None → now; with speed > 1 and
    #: a duration, now − duration·speed, so that simulated time never runs ahead of real time
    start: float | datetime | None = None
    #: only these district codes (None: all 38)
    districts: Collection[str] | None = None
    #: devices sharing one MQTT connection (None: one connection per system; 1: per device)
    devices_per_link: int | None = None
    #: QoS of data messages (births and deaths always use QoS 1)
    qos: int = 1
    faults: FaultConfig = field(default_factory=FaultConfig)
    #: stop once this many data messages (duplicate re-sends included, drop-outs not) were
    #: generated for sending; all of them are published during the drain
    max_messages: int | None = None
    #: "3.1.1" or "5"; sessions are always clean
    mqtt_version: str = "3.1.1"
    keepalive_s: int = 30
    #: unacknowledged QoS 1 publishes per link (≤ 65,535, paho's message-id space)
    max_inflight: int = 100
    #: messages waiting in link backlogs before generation pauses
    max_pending: int = 200_000
    #: how long the first connection of every link may take, wall seconds
    connect_timeout_s: float = 30.0
    #: how long to wait at stop for backlogs to flush and publishes to be acknowledged
    drain_timeout_s: float = 15.0
    #: how often ``on_progress`` is called, wall seconds
    progress_interval_s: float = 1.0
    #: use :class:`~citybrain.fastpaho.FastClient` (same bytes, less CPU)
    fast_paho: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ValueError(f"speed must be a positive number, got {self.speed!r}")
        if self.duration_s is not None and not self.duration_s >= 0:
            raise ValueError(f"duration_s must be >= 0 or None, got {self.duration_s!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, got {self.qos!r}")
        if self.devices_per_link is not None and self.devices_per_link < 1:
            raise ValueError(f"devices_per_link must be >= 1 or None, got {self.devices_per_link}")
        if not 1 <= self.max_inflight < PAHO_MAX_MID:
            raise ValueError(f"max_inflight must be in 1..{PAHO_MAX_MID - 1} (paho's message-id "
                             f"space), got {self.max_inflight}")
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {self.max_pending}")
        if self.max_messages is not None and self.max_messages < 0:
            raise ValueError(f"max_messages must be >= 0 or None, got {self.max_messages}")
        if self.mqtt_version not in ("3.1.1", "5"):
            raise ValueError(f"mqtt_version must be '3.1.1' or '5', got {self.mqtt_version!r}")
        if not self.client_id_prefix or set("+#/") & set(self.client_id_prefix):
            raise ValueError(f"bad client_id_prefix {self.client_id_prefix!r}")
        if self.secret is not None and (self.username is not None
                                        or self.password is not None):
            raise ValueError("give either a fleet secret (per-link accounts) or one "
                             "username/password, not both")
        self.faults.validate()

    def sim_start(self, wall_now: float) -> float:
        """The simulated start time (UTC seconds) for a run beginning at ``wall_now``."""
        if isinstance(self.start, datetime):
            if self.start.tzinfo is None:
                raise ValueError("SimConfig.start must be timezone-aware (e.g. UTC)")
            return self.start.timestamp()
        if self.start is not None:
            return float(self.start)
        if self.speed > 1.0 and self.duration_s is not None:
            return wall_now - self.duration_s * self.speed
        return wall_now


@dataclass
class SimStats:
    """What a run published. Counts of messages are *data* messages unless named otherwise."""

    #: data messages accepted by ``publish()``, duplicate re-sends included
    messages_published: int = 0
    #: records in those messages, duplicate re-sends included
    readings_published: int = 0
    duplicate_messages: int = 0
    duplicate_readings: int = 0
    births: int = 0
    #: clean deaths published at stop (Wills fired by the broker are not counted)
    deaths: int = 0
    #: links re-established after a drop (injected or not)
    reconnects: int = 0
    #: publishes of every kind (data, births, deaths) acknowledged (QoS 0: written)
    acked: int = 0
    #: publishes of every kind accepted but never acknowledged (0 on a clean run)
    unacked: int = 0
    #: acknowledged with an MQTT 5 failure reason code
    rejected: int = 0
    #: data messages generated but still waiting in a backlog at the end (never published)
    messages_unsent: int = 0
    readings_published_by_district: dict[str, int] = field(default_factory=dict)
    #: faults injected: spikes, stuck_episodes, stuck_readings, dropouts, dropout_readings,
    #: duplicates (scheduled), sensor_deaths (devices failed for good by the run's end),
    #: skew_future_devices, skew_behind_devices, fast_drain_devices, drifting_devices,
    #: link_drops
    faults: dict[str, int] = field(default_factory=dict)
    devices: int = 0
    links: int = 0
    #: simulated UTC time span covered (seconds since the epoch)
    sim_start: float = 0.0
    sim_end: float = 0.0
    #: wall-clock seconds of publishing (after every link connected, before the drain)
    wall_s: float = 0.0
    #: CPU seconds this process used in that time (all threads): capacity on a busy machine
    cpu_s: float = 0.0
    #: largest amount of simulated time the scheduler fell behind, seconds
    max_lag_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with ``messages_per_s``, ``readings_per_s`` (wall) and
        ``cpu_us_per_message`` added."""
        d = asdict(self)
        d["readings_published_by_district"] = dict(sorted(
            self.readings_published_by_district.items()))
        d["messages_per_s"] = self.messages_published / self.wall_s if self.wall_s > 0 else 0.0
        d["readings_per_s"] = self.readings_published / self.wall_s if self.wall_s > 0 else 0.0
        d["cpu_us_per_message"] = (1e6 * self.cpu_s / self.messages_published
                                   if self.messages_published else 0.0)
        return d


class _Events:
    """What paho callbacks report to the loop (appended to from the loop's own thread)."""

    def __init__(self, sel: selectors.BaseSelector) -> None:
        self.sel = sel
        self.connected: list[_Link] = []
        self.lost: list[_Link] = []


class _Link:
    """One MQTT connection carrying one or more devices (paho's userdata for its client)."""

    __slots__ = ("accepted", "account", "acked", "backlog", "client", "connects",
                 "death_topic", "down_until", "error", "events", "fault_rng", "id", "index",
                 "injected", "models", "next_fault_t", "opened", "rejected", "retry_at",
                 "retry_delay", "state", "window")

    def __init__(self, index: int, link_id: str, models: list[int], death_topic: str,
                 fault_rng: np.random.Generator, window: int, events: _Events,
                 account: str = "") -> None:
        self.index = index
        self.events = events  # where this link's paho callbacks report
        self.id = link_id
        self.account = account  # MQTT username with a fleet secret: system or device id
        self.models = models
        self.death_topic = death_topic
        self.fault_rng = fault_rng
        self.window = window
        self.client: mqtt.Client | None = None
        self.opened = False  # connect() was called once; later attempts use reconnect()
        self.state = IDLE
        self.accepted = 0   # publishes accepted by paho (all kinds)
        self.acked = 0      # ... of which acknowledged (callback)
        self.rejected = 0
        self.connects = 0
        #: (kind, model index, topic, payload, n_readings), sent in order
        self.backlog: deque[tuple[int, int, str, bytes, int]] = deque()
        self.down_until = -math.inf  # simulated time a dropped link may reconnect
        self.retry_at = 0.0          # wall time of the next reconnect attempt
        self.retry_delay = RECONNECT_BACKOFF_S[0]
        self.injected = False
        self.next_fault_t = math.inf
        self.error: str | None = None


def _no_pending() -> int:
    return 0


# -- paho callbacks: thin, they only count or append ---------------------------------------------
def _on_connect(client: mqtt.Client, link: _Link, flags: Any, rc: Any, props: Any) -> None:
    if rc.is_failure:
        link.error = str(rc)
    elif props is not None and hasattr(props, "ReceiveMaximum"):
        link.window = min(link.window, int(props.ReceiveMaximum))
    link.events.connected.append(link)


def _on_disconnect(client: mqtt.Client, link: _Link, flags: Any, rc: Any, props: Any) -> None:
    link.events.lost.append(link)


def _on_publish(client: mqtt.Client, link: _Link, mid: int, rc: Any, props: Any) -> None:
    link.acked += 1
    if rc.is_failure:
        link.rejected += 1


def _on_socket_open(client: mqtt.Client, link: _Link, sock: Any) -> None:
    link.events.sel.register(sock, selectors.EVENT_READ, link)


def _registered(sel: selectors.BaseSelector, sock: Any) -> bool:
    """True if ``sock`` is in ``sel`` (False once the run closed its selector: paho may
    close a client's socket later, when the client is garbage-collected)."""
    registered = sel.get_map()
    return registered is not None and sock in registered


def _on_socket_close(client: mqtt.Client, link: _Link, sock: Any) -> None:
    sel = link.events.sel
    if _registered(sel, sock):
        sel.unregister(sock)


def _on_socket_register_write(client: mqtt.Client, link: _Link, sock: Any) -> None:
    sel = link.events.sel
    if _registered(sel, sock):
        sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, link)


def _on_socket_unregister_write(client: mqtt.Client, link: _Link, sock: Any) -> None:
    sel = link.events.sel
    if _registered(sel, sock):
        sel.modify(sock, selectors.EVENT_READ, link)


class _Run:
    """State of one ``run_sim`` call."""

    def __init__(self, cfg: SimConfig, stop: threading.Event,
                 on_progress: Callable[[SimStats], None] | None) -> None:
        self.cfg = cfg
        self.stop = stop
        self.on_progress = on_progress
        self.start = cfg.sim_start(time.time())
        city = City(cfg.scale)
        districts = set(cfg.districts) if cfg.districts is not None else None
        devices = list(city.devices(districts))
        if not devices:
            raise ValueError(f"no devices to simulate: districts={sorted(districts or [])!r} "
                             "matches no district of the city")
        self.models: list[DeviceModel] = [make_model(d, cfg.seed, cfg.faults, self.start)
                                          for d in devices]
        self.sched = Scheduler(self.models)
        skews = [m.faults.skew_kind for m in self.models]
        #: lasting per-device defects of this run
        self.device_faults = {
            "skew_future_devices": skews.count("future"),
            "skew_behind_devices": skews.count("behind"),
            "fast_drain_devices": sum(1 for m in self.models
                                      if m.kind == "bay" and m.faults.extra_drain_v_per_day > 0),
            "drifting_devices": sum(1 for m in self.models if m.faults.drift_per_s != 0.0),
        }
        self.sel = selectors.DefaultSelector()
        self.events = _Events(self.sel)
        self.links = self._build_links()
        self.link_of: list[_Link] = [None] * len(self.models)  # type: ignore[list-item]
        for link in self.links:
            for i in link.models:
                self.link_of[i] = link
        self.stats = SimStats(devices=len(self.models), links=len(self.links),
                              sim_start=self.start, sim_end=self.start)
        self.by_district: dict[str, int] = {}
        self.to_flush: set[_Link] = set()
        self.down: set[_Link] = set()
        self.fault_heap: list[tuple[float, int]] = []
        self.pending = 0      # data/duplicate items waiting in backlogs
        self.generated = 0    # data messages handed to links (published or backlogged)
        self.t0 = time.monotonic()
        self.sim_now = self.start
        self.running = False   # every link connected once; the clock is running
        self.stopping = False  # stop requested: drain, reconnect down links at once
        self.done = False      # max_messages reached

    # -- setup ----------------------------------------------------------------------------------
    def _build_links(self) -> list[_Link]:
        cfg = self.cfg
        # (link name, account, devices): a link per device logs in as the device, any
        # other link as its system (whose account may publish for all its devices).
        groups: list[tuple[str, str, list[int]]] = []
        by_system: dict[str, list[int]] = {}
        for i, m in enumerate(self.models):
            by_system.setdefault(m.device.system.system_id, []).append(i)
        for system_id, idx in by_system.items():
            n = cfg.devices_per_link
            if n is None:
                groups.append((system_id, system_id, idx))
            elif n == 1:
                groups += [(self.models[i].device_id, self.models[i].device_id, [i])
                           for i in idx]
            else:
                groups += [(f"{system_id}-c{j // n:04d}", system_id, idx[j:j + n])
                           for j in range(0, len(idx), n)]
        links = []
        for k, (name, account, idx) in enumerate(groups):
            rng = np.random.default_rng([cfg.seed, stable_hash(f"link:{name}")])
            links.append(_Link(k, f"{cfg.client_id_prefix}-{name}", idx,
                               self.models[idx[0]].topic("death"), rng, cfg.max_inflight,
                               self.events, account))
        return links

    def _make_client(self, link: _Link) -> mqtt.Client:
        cfg = self.cfg
        cls = FastClient if cfg.fast_paho and FAST_PAHO_SUPPORTED else mqtt.Client
        if cfg.mqtt_version == "5":
            client = cls(callback_api_version=CallbackAPIVersion.VERSION2, client_id=link.id,
                         protocol=mqtt.MQTTv5)
        else:
            client = cls(callback_api_version=CallbackAPIVersion.VERSION2, client_id=link.id,
                         protocol=mqtt.MQTTv311, clean_session=True)
        if cfg.secret is not None:
            client.username_pw_set(link.account, derive_password(cfg.secret, link.account))
        elif cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls_ca:
            client.tls_set(ca_certs=cfg.tls_ca)
        client.max_inflight_messages_set(cfg.max_inflight)
        client.max_queued_messages_set(cfg.max_inflight)
        client.user_data_set(link)
        client.on_connect = _on_connect
        client.on_disconnect = _on_disconnect
        client.on_publish = _on_publish
        client.on_socket_open = _on_socket_open
        client.on_socket_close = _on_socket_close
        client.on_socket_register_write = _on_socket_register_write
        client.on_socket_unregister_write = _on_socket_unregister_write
        return client

    def _raise_fd_limit(self) -> None:
        need = len(self.links) + 256
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < need:
            new = need if hard == resource.RLIM_INFINITY else min(need, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            if new < need:
                log.warning("only %d file descriptors allowed for %d links", new, len(self.links))

    def _open(self, link: _Link) -> None:
        """Start (re)connecting ``link``; on failure schedule another attempt.

        Raises ``ConnectionError`` if the broker cannot be reached before the run started.
        """
        cfg = self.cfg
        client = link.client
        assert client is not None
        client.will_set(link.death_topic, encode_death(link.id, round(self.sim_now, 3)), qos=1)
        link.state = CONNECTING
        link.error = None
        try:
            if not link.opened:
                link.opened = True
                if cfg.mqtt_version == "5":
                    client.connect(cfg.mqtt_host, cfg.mqtt_port, cfg.keepalive_s,
                                   clean_start=True)
                else:
                    client.connect(cfg.mqtt_host, cfg.mqtt_port, cfg.keepalive_s)
            else:
                client.reconnect()
        except OSError as exc:
            if not self.running:
                raise ConnectionError(f"cannot connect to MQTT broker {cfg.mqtt_host}:"
                                      f"{cfg.mqtt_port}: {exc}") from exc
            link.state = DOWN
            link.retry_at = time.monotonic() + link.retry_delay
            log.debug("link %s: connect failed (%s), retry in %.2fs", link.id, exc,
                      link.retry_delay)
            link.retry_delay = min(RECONNECT_BACKOFF_S[1], link.retry_delay * 2)
            self.down.add(link)

    def _connect_all(self) -> None:
        """Open every link and wait until each has its CONNACK (and births queued)."""
        self._raise_fd_limit()
        deadline = time.monotonic() + self.cfg.connect_timeout_s
        f = self.cfg.faults
        for link in self.links:
            link.client = self._make_client(link)
            if f.reconnect_rate_per_hour > 0:
                link.next_fault_t = self.start + link_fault_gap_s(f, link.fault_rng)
                heapq.heappush(self.fault_heap, (link.next_fault_t, link.index))
        waiting = deque(self.links)
        n_connecting = 0
        while True:
            while waiting and n_connecting < CONNECT_BURST:
                self._open(waiting.popleft())
                n_connecting += 1
            self._poll(0.0 if waiting else IDLE_POLL_S)
            n_connecting -= self._handle_link_events()
            self._retry_down(time.monotonic())
            if not waiting and all(link.state == UP for link in self.links):
                return
            if self.stop.is_set():
                return
            if time.monotonic() > deadline:
                bad = [link for link in self.links if link.state != UP]
                raise ConnectionError(
                    f"{len(bad)} of {len(self.links)} links not connected to "
                    f"{self.cfg.mqtt_host}:{self.cfg.mqtt_port} after "
                    f"{self.cfg.connect_timeout_s}s (first: {bad[0].id}: {bad[0].error})")

    # -- link lifecycle -------------------------------------------------------------------------
    def _handle_link_events(self) -> int:
        """Act on CONNACKs and lost connections reported by callbacks; returns links up."""
        ev = self.events
        n_up = 0
        if ev.connected:
            connected, ev.connected = ev.connected, []
            for link in connected:
                if link.error is not None:
                    if link.connects == 0:
                        raise ConnectionError(f"broker refused link {link.id}: {link.error}")
                    log.warning("link %s refused: %s", link.id, link.error)
                    continue
                self._link_up(link)
                n_up += 1
        if ev.lost:
            lost, ev.lost = ev.lost, []
            for link in lost:
                if link.state == CLOSING:
                    continue
                if link.state == UP and not link.injected:
                    log.warning("link %s lost its connection; reconnecting", link.id)
                link.state = DOWN
                if link.injected:
                    link.retry_at = time.monotonic()
                else:
                    link.down_until = self.sim_now
                    link.retry_at = time.monotonic() + link.retry_delay
                    link.retry_delay = min(RECONNECT_BACKOFF_S[1], link.retry_delay * 2)
                self.down.add(link)
        return n_up

    def _link_up(self, link: _Link) -> None:
        link.state = UP
        link.connects += 1
        link.injected = False
        link.retry_delay = RECONNECT_BACKOFF_S[0]
        self.down.discard(link)
        reset = "power_on" if link.connects == 1 else "link_lost"
        if link.connects > 1:
            self.stats.reconnects += 1
        if any(item[0] == BIRTH for item in link.backlog):  # births of a connection that died
            link.backlog = deque(item for item in link.backlog if item[0] != BIRTH)
        births = [(BIRTH, i, self.models[i].topic("birth"),
                   self.models[i].birth(self.sim_now, link.id, reset), 0) for i in link.models
                  if self.models[i].alive(self.sim_now)]
        link.backlog.extendleft(reversed(births))
        self.to_flush.add(link)

    def _inject_link_faults(self) -> None:
        """Drop the links whose next fault time has come (socket shut, no DISCONNECT)."""
        heap = self.fault_heap
        while heap and heap[0][0] <= self.sim_now:
            link = self.links[heapq.heappop(heap)[1]]
            f = self.cfg.faults
            if link.state == UP and link.client is not None:
                sock = link.client.socket()
                if sock is not None:
                    # DOWN at once: nothing more is published on it, and a fault due again
                    # before paho notices the dead socket cannot drop it a second time.
                    link.state = DOWN
                    link.injected = True
                    link.down_until = link.next_fault_t + link_downtime_s(f, link.fault_rng)
                    self.stats.faults["link_drops"] = self.stats.faults.get("link_drops", 0) + 1
                    if isinstance(sock, socket.socket):
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
            link.next_fault_t = max(link.down_until, link.next_fault_t) \
                + link_fault_gap_s(f, link.fault_rng)
            heapq.heappush(heap, (link.next_fault_t, link.index))

    def _retry_down(self, now: float) -> None:
        if not self.down:
            return
        for link in list(self.down):
            client = link.client
            if (link.state == DOWN and client is not None and client.socket() is None
                    and now >= link.retry_at
                    and (self.sim_now >= link.down_until or self.stopping)):
                self.down.discard(link)
                self._open(link)

    # -- publishing -----------------------------------------------------------------------------
    def _flush(self, link: _Link) -> None:
        """Publish ``link``'s backlog in order while its window has room."""
        client = link.client
        assert client is not None
        backlog = link.backlog
        qos = self.cfg.qos
        stats = self.stats
        while backlog and link.accepted - link.acked < link.window:
            kind, i, topic, payload, n = backlog[0]
            q = 1 if kind >= BIRTH else qos
            rc = client.publish(topic, payload, q).rc
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not (
                    rc == MQTTErrorCode.MQTT_ERR_NO_CONN and q > 0):
                break
            backlog.popleft()
            link.accepted += 1
            if kind == BIRTH:
                stats.births += 1
            elif kind == DEATH:
                stats.deaths += 1
            else:
                self.pending -= 1
                self._count_data(i, kind, n)
        if not backlog:
            self.to_flush.discard(link)

    def _count_data(self, i: int, kind: int, n: int) -> None:
        stats = self.stats
        stats.messages_published += 1
        stats.readings_published += n
        d = self.models[i].district
        self.by_district[d] = self.by_district.get(d, 0) + n
        if kind == DUPLICATE:
            stats.duplicate_messages += 1
            stats.duplicate_readings += n

    def _generate(self) -> bool:
        """Publish (or backlog) up to BATCH due messages; True if more are due right now."""
        sched = self.sched
        cap = self.cfg.max_messages
        qos = self.cfg.qos
        models = self.models
        link_of = self.link_of
        stats = self.stats
        by_district = self.by_district
        for _ in range(BATCH):
            if self.pending >= self.cfg.max_pending:
                return False
            if cap is not None and self.generated >= cap:
                self.done = True
                return False
            out = sched.pop(self.sim_now)
            if out is None:
                return False
            self.generated += 1
            i = out.model
            link = link_of[i]
            if (link.state == UP and not link.backlog
                    and link.accepted - link.acked < link.window):
                assert link.client is not None
                rc = link.client.publish(models[i].data_topic, out.payload, qos).rc
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                        rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0):
                    link.accepted += 1
                    if out.kind == DATA:  # inline _count_data: this is the hot path
                        n = out.n_readings
                        stats.messages_published += 1
                        stats.readings_published += n
                        d = models[i].district
                        by_district[d] = by_district.get(d, 0) + n
                    else:
                        self._count_data(i, out.kind, out.n_readings)
                    continue
            link.backlog.append((out.kind, i, models[i].data_topic, out.payload, out.n_readings))
            self.pending += 1
            self.to_flush.add(link)
        return True

    # -- the loop -------------------------------------------------------------------------------
    def _poll(self, timeout: float) -> None:
        tls = self.cfg.tls_ca is not None
        for key, mask in self.sel.select(timeout):
            client = key.data.client
            if mask & selectors.EVENT_READ:
                client.loop_read()
                # TLS records already decrypted into the SSL buffer wake no select():
                # read them now, or their PUBACKs would wait for the next bytes to arrive.
                while tls and (sock := client.socket()) is not None and getattr(
                        sock, "pending", _no_pending)() > 0:
                    if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
            if mask & selectors.EVENT_WRITE and client.socket() is not None:
                client.loop_write()

    def _misc(self) -> None:
        for link in self.links:
            client = link.client
            if client is not None and client.socket() is not None:
                client.loop_misc()

    def execute(self) -> SimStats:
        try:
            self._connect_all()
            self.running = True
            self.t0 = time.monotonic()
            cpu0 = time.process_time()
            self._main_loop()
            self.stats.wall_s = time.monotonic() - self.t0
            self.stats.cpu_s = time.process_time() - cpu0
            self.stats.sim_end = self.sim_now
        finally:
            self.stopping = True
            try:
                if self.running:
                    self._drain_and_close()
                else:
                    self._close_now()
            finally:
                self._finish_stats()
                self.sel.close()
        s = self.stats
        log.info("sim: %d messages (%d readings) published in %.1fs, %d unacked, %d unsent",
                 s.messages_published, s.readings_published, s.wall_s, s.unacked,
                 s.messages_unsent)
        return s

    def _main_loop(self) -> None:
        cfg = self.cfg
        end = self.t0 + cfg.duration_s if cfg.duration_s is not None else math.inf
        next_misc = self.t0 + 1.0
        next_progress = self.t0 + cfg.progress_interval_s
        start, speed, t0 = self.start, cfg.speed, self.t0
        while not self.stop.is_set() and not self.done:
            now = time.monotonic()
            if now >= end:
                break
            self.sim_now = start + (now - t0) * speed
            self._handle_link_events()
            if self.fault_heap:
                self._inject_link_faults()
            if self.down:
                self._retry_down(now)
            more = self._generate()
            if self.to_flush:
                for link in list(self.to_flush):
                    if link.state == UP:
                        self._flush(link)
            nt = self.sched.next_time()
            if more or nt <= self.sim_now:
                lag = self.sim_now - nt
                if lag > self.stats.max_lag_s:
                    self.stats.max_lag_s = lag
                # Backlogs full: wait a little for acknowledgements instead of spinning.
                timeout = BACKPRESSURE_POLL_S if self.pending >= cfg.max_pending else 0.0
            else:
                timeout = min(IDLE_POLL_S, (nt - self.sim_now) / speed, max(0.0, end - now))
            self._poll(timeout)
            if now >= next_misc:
                self._misc()
                next_misc = now + 1.0
            if self.on_progress is not None and now >= next_progress:
                self.on_progress(self._snapshot())
                next_progress = now + cfg.progress_interval_s

    def _outstanding(self) -> int:
        return sum(link.accepted - link.acked for link in self.links)

    def _drain_and_close(self) -> None:
        """Flush backlogs, publish a clean death per link, await acks, disconnect."""
        cfg = self.cfg
        deadline = time.monotonic() + cfg.drain_timeout_s
        for link in self.links:
            if link.client is None:
                continue
            death = encode_death(link.id, round(self.sim_now, 3))
            link.backlog.append((DEATH, link.models[0], link.death_topic, death, 0))
            self.to_flush.add(link)
        while time.monotonic() < deadline:
            self._handle_link_events()
            self._retry_down(time.monotonic())
            for link in list(self.to_flush):
                if link.state == UP:
                    self._flush(link)
            if not self.to_flush and self._outstanding() == 0:
                break
            self._poll(0.02)
        # Disconnect: the broker discards each Will on a clean DISCONNECT.
        for link in self.links:
            client = link.client
            if client is None:
                continue
            if client.socket() is not None:
                link.state = CLOSING
                client.disconnect()
        close_deadline = time.monotonic() + 2.0
        while time.monotonic() < close_deadline and any(
                link.client is not None and link.client.socket() is not None
                for link in self.links):
            self._poll(0.02)
        self._close_now()  # whatever did not close in time

    def _close_now(self) -> None:
        """Close every socket still open, without waiting."""
        for link in self.links:
            sock = link.client.socket() if link.client is not None else None
            if sock is not None:
                link.state = CLOSING
                if sock in self.sel.get_map():
                    self.sel.unregister(sock)
                sock.close()

    def _snapshot(self) -> SimStats:
        s = SimStats(**{k: v for k, v in asdict(self.stats).items()})
        s.sim_end = self.sim_now
        s.wall_s = time.monotonic() - self.t0
        s.readings_published_by_district = dict(self.by_district)
        s.acked = sum(link.acked for link in self.links)
        s.unacked = self._outstanding()
        s.faults = self._faults()
        return s

    def _faults(self) -> dict[str, int]:
        return {**self.sched.faults.to_dict(), **self.device_faults,
                "sensor_deaths": self.sched.deaths_by(self.sim_now),
                "link_drops": self.stats.faults.get("link_drops", 0)}

    def _finish_stats(self) -> None:
        s = self.stats
        s.readings_published_by_district = dict(self.by_district)
        s.acked = sum(link.acked for link in self.links)
        s.unacked = self._outstanding()
        s.rejected = sum(link.rejected for link in self.links)
        s.messages_unsent = sum(1 for link in self.links for item in link.backlog
                                if item[0] < BIRTH)
        s.faults = self._faults()


def run_sim(cfg: SimConfig, stop: threading.Event | None = None,
            on_progress: Callable[[SimStats], None] | None = None) -> SimStats:
    """Run the simulated firmware until ``stop`` is set, ``cfg.duration_s`` has passed or
    ``cfg.max_messages`` were generated; return what was published.

    Blocks the calling thread (everything runs on it, ``on_progress`` included, every
    ``cfg.progress_interval_s``, with a snapshot it may keep). Raises ``ConnectionError`` if
    the broker cannot be reached or refuses a link at start, ``ValueError`` for a bad config.
    """
    cfg.validate()
    return _Run(cfg, stop or threading.Event(), on_progress).execute()
