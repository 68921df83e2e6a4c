"""Several hub processes, one city: partitions leased through a shared directory.

A *partition* (a fixed set of districts, ``hub.partitions``) is served by exactly one hub
process at a time. Serving it means running one ``hub.service.Hub`` for those districts with

* its own persistent MQTT session, client id ``{client_id}-p{N}``, subscribed to the
  partition's district topics only (QoS 1, acknowledged after the WAL fsync);
* its own write-ahead log, ``{cluster_dir}/wal/p{N}``;
* its own window state, event clock and analytics over its districts' devices.

Moving a partition is therefore exactly the crash-and-restart path a single hub already
survives: the new owner replays the partition's WAL (what was acknowledged but not yet
final and stored) and takes over the MQTT session by client id, so the broker re-delivers
what was never acknowledged. Nothing is merged across hubs: each district's readings meet
in one process, so its aggregates are those a single hub computes.

The shared directory (one filesystem with working ``flock``: a local disk or volume for
hubs on one machine, NFSv4 or similar across machines) holds:

``members/{node_id}.lock``   each live hub holds an exclusive ``flock`` on its file; the
                             kernel releases it when the process dies, however it dies
``partitions/p{N}.lock``     the owner of partition N holds its ``flock`` while serving it
``wal/p{N}/``                partition N's write-ahead log

Every ``poll_s`` each node lists the live members, computes the same partition → member
map as every other node (``assign_partitions``: rendezvous hashing with bounded loads),
gracefully hands over partitions that are no longer its own (stop intake, process and store
what was taken, keep open windows in the WAL, release the lock) and takes those that are
(as soon as the previous owner released the lock — at once if it died).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hub.latency import merge_snapshots
from hub.partitions import assign_districts, assign_partitions, districts_of
from hub.service import HUB_GAUGES, Hub, HubConfig
from seeds.city import City

log = logging.getLogger("citybrain.cluster")

#: Snapshot keys combined by maximum across partitions, not summed.
_MAX_KEYS = {"event_clock_ns", "latency_p50_s", "latency_p95_s", "latency_p99_s"}


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class FileLock:
    """An exclusive, non-blocking ``flock`` on ``path`` (created if missing).

    The kernel releases it when the holder's process exits, even on SIGKILL. Two
    ``FileLock`` objects on one path exclude each other in one process too (a flock
    belongs to the open file description).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        self._fd = fd
        return True

    def still_linked(self) -> bool:
        """True if ``path`` is still the file this lock holds (not removed or replaced)."""
        if self._fd is None:
            return False
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock


def live_members(members_dir: Path, me: str) -> list[str]:
    """Node ids whose member lock is held, ``me`` included. A member file whose lock is free
    belongs to a dead node: it is removed (under its lock, so a restarting node that opened
    it meanwhile notices with ``FileLock.still_linked`` and registers again)."""
    live = {me}
    for path in sorted(members_dir.glob("*.lock")):
        node = path.name[:-len(".lock")]
        if node == me:
            continue
        probe = FileLock(path)
        try:
            if probe.try_acquire():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                live.add(node)
        except FileNotFoundError:
            continue  # removed by another node between glob and open
        finally:
            probe.release()
    return sorted(live)


@dataclass(frozen=True)
class ClusterConfig:
    directory: Path
    partitions: int
    node_id: str
    #: Wait this long after joining before taking partitions, so hubs started together see
    #: each other first (otherwise the first one takes everything, then hands most over).
    join_grace_s: float = 2.0
    poll_s: float = 0.5
    #: Per-stage bound for a graceful hand-over (``Hub.stop``).
    handover_timeout_s: float = 60.0


def partition_city(city: City, districts: list[str]) -> City:
    """The city restricted to ``districts``: a partition's hub knows only its own devices,
    so its per-system and per-district analytics never write points for others."""
    keep = set(districts)
    return City(city.scale, districts=tuple(d for d in city.districts if d.code in keep),
                systems=tuple(s for s in city.systems if s.district_code in keep))


class HubNode:
    """One hub process of a cluster: runs a ``Hub`` per partition it currently owns."""

    def __init__(self, base: HubConfig, cluster: ClusterConfig, city: City | None = None) -> None:
        if cluster.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {cluster.partitions}")
        self.base = base
        self.cluster = cluster
        self.city = city or City(base.scale)
        weights = {d.code: float(sum(s.base_devices for s in self.city.systems_in(d.code)))
                   for d in self.city.districts}
        self.assignment = assign_districts(weights, cluster.partitions)
        self.dir = cluster.directory
        for sub in ("members", "partitions", "wal"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._member = FileLock(self.dir / "members" / f"{cluster.node_id}.lock")
        self.hubs: dict[int, tuple[Hub, FileLock]] = {}
        self._retired: dict[str, Any] = {}  # counters of partitions handed over or stopped
        self._lock = threading.Lock()  # guards hubs and _retired against snapshot()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-node", daemon=True)
        self.handovers = 0
        self.adoptions = 0
        self.failed = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Join the cluster, wait ``join_grace_s``, take this node's share of partitions
        (those whose previous owner has released them), then keep rebalancing."""
        if not self._member.try_acquire():
            raise RuntimeError(f"node id {self.cluster.node_id!r} is already running in "
                               f"{self.dir}; give each hub its own --node-id")
        log.info("node %s joined %s (%d partitions)", self.cluster.node_id, self.dir,
                 self.cluster.partitions)
        self._stopping.wait(self.cluster.join_grace_s)
        self.rebalance()
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Stop every partition hub (``close_windows_at_exit`` as configured), release the
        locks, leave the cluster. Returns the final combined counters."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s + 5)
        for p in sorted(self.hubs):
            self._stop_partition(p, close_windows=self.base.close_windows_at_exit,
                                 timeout_s=timeout_s)
        self._member.release()
        return self.snapshot()

    def _run(self) -> None:
        while not self._stopping.wait(self.cluster.poll_s):
            if not self._member.still_linked():  # removed while we looked dead: re-register
                self._member.release()
                self._member.try_acquire()
            try:
                self.rebalance()
            except Exception:
                log.exception("rebalance failed; retrying")
            if any(h.wal.failed for h, _ in list(self.hubs.values())):
                self.failed = True

    # -- partitions ------------------------------------------------------------------------
    def owned(self) -> list[int]:
        return sorted(self.hubs)

    def rebalance(self) -> None:
        members = live_members(self.dir / "members", self.cluster.node_id)
        target = assign_partitions(self.cluster.partitions, members)
        mine = {p for p, m in target.items() if m == self.cluster.node_id}
        for p in sorted(set(self.hubs) - mine):
            if self._stopping.is_set():
                return
            log.info("handing partition %d over to %s", p, target.get(p))
            self._stop_partition(p, close_windows=False,
                                 timeout_s=self.cluster.handover_timeout_s)
            self.handovers += 1
        for p in sorted(mine - set(self.hubs)):
            if self._stopping.is_set():
                return
            self._try_start_partition(p)

    def _try_start_partition(self, p: int) -> None:
        lock = FileLock(self.dir / "partitions" / f"p{p}.lock")
        if not lock.try_acquire():
            return  # the previous owner is still handing it over: next poll
        wal_dir = self.dir / "wal" / f"p{p}"
        adopted = wal_dir.exists() and any(wal_dir.iterdir())
        districts = districts_of(self.assignment, p)
        cfg = replace(self.base, client_id=f"{self.base.client_id}-p{p}", wal_dir=wal_dir,
                      districts=tuple(districts), http_port=None, stats_path=None)
        try:
            hub = Hub(cfg, city=partition_city(self.city, districts))
        except Exception:
            log.exception("could not open partition %d; retrying", p)
            lock.release()
            return
        try:
            hub.start()
        except Exception:
            log.exception("could not start partition %d; retrying", p)
            # Its WAL and writer threads may be running: stop them before another node may
            # open the same WAL (the lock is what keeps a WAL to one writer).
            hub.cfg.close_windows_at_exit = False
            try:
                hub.stop(self.cluster.handover_timeout_s)
            except Exception:
                log.exception("partition %d did not stop cleanly; keeping its lock", p)
                return  # held until this process exits: better stalled than two writers
            lock.release()
            return
        with self._lock:
            self.hubs[p] = (hub, lock)
        if adopted:
            self.adoptions += 1
        log.info("serving partition %d (%s)%s", p, ",".join(districts),
                 ": resuming its WAL" if adopted else "")

    def _stop_partition(self, p: int, *, close_windows: bool, timeout_s: float) -> None:
        hub, lock = self.hubs[p]
        hub.cfg.close_windows_at_exit = close_windows
        final = hub.stop(timeout_s)
        if hub.wal.failed:
            self.failed = True
        with self._lock:
            _combine(self._retired, final)
            del self.hubs[p]
        lock.release()  # only now may another node open the WAL and the session

    # -- observation -----------------------------------------------------------------------
    def live_view(self) -> NodeLiveView:
        return NodeLiveView(self)

    def snapshot(self) -> dict[str, Any]:
        """Counters of every partition this node served, summed (levels: max)."""
        with self._lock:
            total: dict[str, Any] = {}
            _combine(total, self._retired, levels=False)
            for hub, _ in self.hubs.values():
                _combine(total, hub.snapshot())
        total["cpu_s"] = time.process_time()
        total["node_id"] = self.cluster.node_id
        total["partitions_owned"] = self.owned()
        total["partitions_total"] = self.cluster.partitions
        total["handovers"] = self.handovers
        total["adoptions"] = self.adoptions
        return total


def combine_snapshots(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Several hubs' snapshots as one: counters summed, levels as in ``HubNode.snapshot``."""
    total: dict[str, Any] = {}
    for snap in snaps:
        _combine(total, snap)
    total["cpu_s"] = sum(float(s.get("cpu_s") or 0.0) for s in snaps)
    return total


def _combine(into: dict[str, Any], snap: dict[str, Any], levels: bool = True) -> None:
    """Add ``snap``'s counters into ``into``: numbers and labelled counts are summed, the
    ``_MAX_KEYS`` levels take the maximum, other gauges (queue depths) are summed only
    when ``levels`` (a retired partition has none)."""
    for key, value in snap.items():
        if key == "cpu_s" or isinstance(value, bool) or value is None:
            continue
        if key == "latency_hist":
            if value:
                into[key] = merge_snapshots([into.get(key) or {}, value])
            continue
        if key in _MAX_KEYS:
            if isinstance(value, int | float):
                into[key] = max(into.get(key) or value, value)
        elif isinstance(value, int | float):
            if key in HUB_GAUGES and not levels:
                continue
            into[key] = into.get(key, 0) + value
        elif isinstance(value, dict) and all(isinstance(v, int | float) for v in value.values()):
            bucket = into.setdefault(key, {})
            for label, n in value.items():
                bucket[label] = bucket.get(label, 0) + n
        elif key not in into:
            into[key] = value


class NodeLiveView:
    """What ``/api/state`` serves for a cluster node: which partitions it serves and each
    partition's live state (``hub.live``). The dashboard draws a single hub's state; a
    cluster is watched through each node's ``/metrics`` and InfluxDB."""

    def __init__(self, node: HubNode) -> None:
        self.node = node

    @property
    def state_json(self) -> bytes:
        import orjson
        with self.node._lock:
            parts = {str(p): hub.live.state_json for p, (hub, _) in self.node.hubs.items()}
        body = b",".join(b'"%s":%s' % (p.encode(), s) for p, s in parts.items())
        head = orjson.dumps({"node_id": self.node.cluster.node_id,
                             "partitions_owned": self.node.owned()})
        return head[:-1] + b',"partitions":{' + body + b"}}"
