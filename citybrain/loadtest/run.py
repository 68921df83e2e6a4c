"""``citybrain loadtest``: drive a hub with a known load and account for every reading.

Topology. By default the run is self-contained: a local Mosquitto and influxd (loopback,
temporary directories), ``--hubs`` hub processes (more than one: a cluster, ``hub.cluster``)
and, in ``messages`` mode, ``--edge-procs`` edge processes, all ``citybrain`` children. With
``--mqtt-host`` and ``--hub-url`` it loads an existing deployment instead: the hub's
``/api/stats`` gives its counters and latency histograms, ``--influx-url`` the storage to
count in.

What is measured:

* **throughput**: readings aggregated by the hub per second over the steady part of the
  run (from the first aggregated reading to the end of the load), and raw points stored;
* **latency** from device time (the generator's *intended* send time, so a stalled sender
  shows up: no coordinated omission) to the reading being in the hub's window state
  (``aggregated``) and to its raw line acknowledged by InfluxDB (``stored``), as HDR
  histograms (p50, p95, p99, p99.9, max), overall and per second;
* **loss and duplication**, judged by InfluxDB: per device, the readings the generator
  published (its per-device sequence numbers) against the count stored in the hub's hourly
  aggregates (``sum(count)`` of ``agg_1h`` grouped by device), plus the hub's own account
  (late, early, invalid readings, duplicate frames) and what the hubs still held when they
  stopped (``hub_unprocessed_wal_records``, ``hub_unwritten_lines_at_exit``: kept in their
  WAL for the next run, so not a loss, though not stored in this one). The final hourly
  windows are stored only as the hubs stop, so the count is read once every hub has exited
  and InfluxDB's answer has settled; ``accounting_complete`` (with ``accounting_warnings``)
  says whether every reading had its chance to be stored -- when not, ``lost`` still counts
  every reading missing from InfluxDB, but some of it is "not stored in time", not "gone";
* **cost**: hub CPU time per reading (all hub processes) and peak RSS.

Outputs: ``report.json`` (with the machine's description) and ``report.png`` (rate and
latency over time) under ``--out``; a live progress bar on a terminal.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import orjson

from citybrain.loadtest.generator import LoadConfig, LoadResult, Progress, run_load
from citybrain.loadtest.report import (
    loss_and_duplication,
    percentiles,
    plot,
    stage_histogram,
    timeline_from_samples,
    write_report,
)
from citybrain.mqtt import BrokerConfig
from citybrain.up import (
    HUB_LEFTOVERS,
    Child,
    accounting_complete,
    wait_settled,
    wait_until,
)
from hub.cluster import combine_snapshots
from hub.latency import STAGES

log = logging.getLogger("citybrain.loadtest")

#: Per-device accounting needs one InfluxDB series per device in the answer: above this
#: many devices only totals are compared (the query would dominate the run).
PER_DEVICE_LIMIT = 200_000


@dataclass
class LoadtestConfig:
    load: LoadConfig
    out_dir: Path = Path("var/loadtest")
    hubs: int = 1
    partitions: int = 12
    edge_procs: int = 1
    raw_every: int = 1
    analytics: bool = True
    #: extra ``citybrain hub`` arguments (local mode)
    hub_args: list[str] = field(default_factory=list)
    #: an existing deployment: its broker, its hubs' HTTP base URLs, its InfluxDB (v1); an
    #: ``influx_url`` alone: local broker and hubs writing to that InfluxDB
    mqtt_host: str | None = None
    mqtt_port: int = 1883
    hub_urls: list[str] = field(default_factory=list)
    influx_url: str | None = None
    influx_db: str = "citybrain"
    #: ``Authorization`` header of the count queries (``influx_authorization``); None: none
    influx_auth: str | None = field(default=None, repr=False)
    #: bound of each wait for the system to settle: the drain after the load, each stage of
    #: a hub's own graceful stop (given to the hubs as ``--stop-timeout-s``), InfluxDB's
    #: count of the aggregates settling
    drain_timeout_s: float = 120.0
    progress: bool = True


# -- the system under test -------------------------------------------------------------------

#: Devices from which the load test's own influxd keeps its series index on disk (tsi1):
#: the in-memory index needs ~4 KB of RAM per series, ~20 GB for a million devices' 4.5M.
TSI_FROM_DEVICES = 100_000


def influx_settings(devices: int) -> dict[str, dict[str, Any]]:
    """influxd 1.x settings for a load of ``devices`` devices. Its defaults refuse points
    past 1M series per database and 100k values per tag (a partial write, ``dropped=N``):
    a load test of more than 100k devices (one ``device`` tag value each) would measure
    that refusal, not the hub. So both limits are lifted, and from ``TSI_FROM_DEVICES`` on
    the index is tsi1 (below it, the in-memory index is the faster and the default)."""
    data: dict[str, Any] = {"max-series-per-database": 0, "max-values-per-tag": 0}
    if devices >= TSI_FROM_DEVICES:
        data["index-version"] = "tsi1"
    return {"data": data}


class LocalStack:
    """Mosquitto, influxd, hubs and (messages mode) edges on this machine."""

    def __init__(self, cfg: LoadtestConfig, var: Path, scale: float) -> None:
        self.cfg, self.var, self.scale = cfg, var, scale
        self.services: list[Any] = []
        self.hubs: list[Child] = []
        self.edges: list[Child] = []
        for sub in ("run", "log"):
            (var / sub).mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        from citybrain.localstack import InfluxV1Server, MosquittoServer
        logs = self.var / "log"
        broker = MosquittoServer(self.var / "mosquitto", log_path=logs / "mosquitto.log")
        broker.start()
        self.services.append(broker)
        if self.cfg.influx_url:  # an InfluxDB of the caller's (benchmarks measure it too)
            self.influx_url = self.cfg.influx_url
        else:
            influx = InfluxV1Server(self.var / "influxdb", log_path=logs / "influxd.log",
                                    settings=influx_settings(self.cfg.load.devices))
            influx.start()
            self.services.append(influx)
            self.influx_url = influx.url
        self.broker = BrokerConfig(broker.host, broker.port)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CITYBRAIN_MQTT_", "CITYBRAIN_INFLUX_"))}
        env.update({"CITYBRAIN_MQTT_HOST": broker.host, "CITYBRAIN_MQTT_PORT": str(broker.port),
                    "CITYBRAIN_SCALE": str(self.scale), "PYTHONUNBUFFERED": "1"})
        self._start_hubs(env)
        if self.cfg.load.mode == "messages":
            self._start_edges(env)

    def _start_hubs(self, env: dict[str, str]) -> None:
        cfg = self.cfg
        base = ["hub", "--influx-url", self.influx_url, "--influx-api", "v1",
                "--influx-db", cfg.influx_db, "--http-port", "-1", "--close-windows-at-exit",
                "--raw-every", str(cfg.raw_every),
                *([] if cfg.analytics else ["--no-analytics"]), *cfg.hub_args,
                # last, so stop_hubs knows the hubs' own stop budget
                "--stop-timeout-s", str(cfg.drain_timeout_s)]
        if cfg.hubs <= 1:
            self.hubs = [Child("hub", [*base, "--wal-dir", str(self.var / "wal")], self.var, env)]
        else:
            self.hubs = [Child(f"hub-{i}", [*base, "--partitions", str(cfg.partitions),
                                            "--cluster-dir", str(self.var / "cluster"),
                                            "--node-id", f"hub-{i}"], self.var, env)
                         for i in range(cfg.hubs)]
        wait_until(lambda: all(h.stats_path.exists() or not h.alive() for h in self.hubs), 120,
                   "the hubs to start")
        if cfg.hubs > 1:
            wait_until(lambda: self._partitions_served() == cfg.partitions
                       or not all(h.alive() for h in self.hubs), 120,
                       "every partition to be served")
        self._check_alive(self.hubs)

    def _partitions_served(self) -> int:
        return len({p for h in self.hubs for p in h.stats().get("partitions_owned", [])})

    def _start_edges(self, env: dict[str, str]) -> None:
        from seeds.city import City
        codes = sorted(d.code for d in City(self.scale).districts)
        parts = [codes[i::self.cfg.edge_procs] for i in range(self.cfg.edge_procs)]
        self.edges = [Child(f"edge-{i}", ["edge", "--districts", ",".join(part),
                                          "--client-id", f"loadtest-edge-{i}",
                                          "--spool-dir", str(self.var / "spool" / str(i))],
                            self.var, env) for i, part in enumerate(parts)]
        wait_until(lambda: all(e.stats_path.exists() or not e.alive() for e in self.edges), 120,
                   "the edges to start")
        self._check_alive(self.edges)

    @staticmethod
    def _check_alive(children: list[Child]) -> None:
        for c in children:
            if not c.alive():
                raise RuntimeError(f"{c.name} exited at start; see {c.log_path}")

    def hub_stats(self) -> dict[str, Any]:
        return combine_snapshots([h.stats() for h in self.hubs])

    def rss_bytes(self) -> int:
        from citybrain.stats import rss_bytes
        return sum(rss_bytes(h.proc.pid) for h in self.hubs)

    def edge_dropped(self) -> int:
        """Readings the edges rejected or found duplicate so far (they never reach a hub)."""
        total = 0
        for e in self.edges:
            st = e.stats()
            total += int(st.get("duplicates", 0)) + sum(
                int(v) for v in (st.get("rejected") or {}).values())
        return total

    def stop_edges(self) -> list[dict[str, Any]]:
        for e in self.edges:
            e.terminate_and_wait(self.cfg.drain_timeout_s)
        return [e.stats() for e in self.edges]

    def stop_hubs(self) -> list[int]:
        """SIGTERM every hub and wait for each to finish its graceful stop; returns their
        exit codes (0: stopped cleanly, its final stats written). The wait covers the hub's
        own bounded stop (``hub_stop_budget_s``): a hub is killed only if it overruns that,
        since a killed hub never stores its final windows nor writes its final stats."""
        owned = {h.name: len(h.stats().get("partitions_owned") or []) for h in self.hubs}
        for h in self.hubs:  # all at once: a cluster hub would adopt a leaving one's share
            h.terminate()  # once (Child.terminate says why)
        exits = []
        for h in self.hubs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                h.proc.wait(hub_stop_budget_s(self.cfg.drain_timeout_s, owned[h.name]))
            exits.append(h.terminate_and_wait(10))  # exited: closes its log; else kills it
        return exits

    def close(self) -> None:
        for c in [*self.edges, *self.hubs]:
            if c.alive():
                c.terminate_and_wait(30)
        for s in reversed(self.services):
            s.stop()


def hub_stop_budget_s(stop_timeout_s: float, partitions: int = 0) -> float:
    """The longest a hub's graceful stop may take with ``--stop-timeout-s stop_timeout_s``,
    plus a margin: per hub (``hub.service.Hub.stop``) close the intake, join the processing
    thread, stop the writer (joined for ``stop_timeout_s`` + 10 s), each bounded by the
    timeout; a cluster node (``hub.cluster.HubNode.stop``) joins its thread (+5 s) and then
    stops its ``partitions`` one after another."""
    per_hub = 3 * stop_timeout_s + 10
    return stop_timeout_s + 5 + max(1, partitions) * per_hub + 30


class RemoteHubs:
    """An existing deployment's hubs, read through their ``/api/stats``."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    def hub_stats(self) -> dict[str, Any]:
        snaps = []
        for url in self.urls:
            with urlopen(f"{url.rstrip('/')}/api/stats", timeout=5) as r:
                snaps.append(orjson.loads(r.read()))
        return combine_snapshots(snaps)


# -- sampling and accounting -------------------------------------------------------------------

class Sampler:
    """Hub counters once a second in the background: ``(wall ns, snapshot, rss bytes)``."""

    def __init__(self, stack: LocalStack | RemoteHubs) -> None:
        self.stack = stack
        self.samples: list[tuple[int, dict[str, Any], int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadtest-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self) -> dict[str, Any]:
        try:
            snap = self.stack.hub_stats()
        except (OSError, ValueError) as exc:
            log.warning("could not read hub stats: %s", exc)
            return {}
        rss = self.stack.rss_bytes() if isinstance(self.stack, LocalStack) else 0
        self.samples.append((time.time_ns(), snap, rss))
        return snap

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def influx_authorization(username: str = "", password: str = "", token: str = ""
                         ) -> str | None:
    """The ``Authorization`` header for InfluxDB's v1 ``/query``: ``Token`` for InfluxDB
    2.x's v1 compatibility API (the compose stack), HTTP Basic for 1.x with
    ``auth-enabled`` (as the hub's v1 writes); None without credentials."""
    if token:
        return f"Token {token}"
    if username:
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    return None


def influx_query(url: str, db: str, q: str, auth: str | None = None
                 ) -> list[dict[str, Any]]:
    """Run InfluxQL ``q`` on database ``db`` (v1 ``/query``); the result's series."""
    params = urlencode({"db": db, "q": q})
    req = Request(f"{url}/query?{params}", headers={"Authorization": auth} if auth else {})
    try:
        with urlopen(req, timeout=300) as r:
            body = orjson.loads(r.read())
    except HTTPError as exc:
        if exc.code in (401, 403):
            raise RuntimeError(
                f"InfluxDB at {url} refused the count query (HTTP {exc.code}): give the "
                "load test credentials allowed to read database "
                f"{db!r}: --influx-username/--influx-password (1.x) or --influx-token "
                "(2.x)") from None
        raise
    result = body["results"][0]
    if "error" in result:
        raise RuntimeError(f"InfluxDB: {result['error']} ({q})")
    series: list[dict[str, Any]] = result.get("series", [])
    return series


def stored_per_device(url: str, db: str, auth: str | None = None) -> dict[str, int]:
    """Readings counted in the hub's stored hourly aggregates, per device."""
    out: dict[str, int] = {}
    for s in influx_query(url, db, 'SELECT sum("count") FROM "agg_1h" GROUP BY "device"',
                          auth):
        out[s["tags"]["device"]] = int(s["values"][0][1] or 0)
    return out


def stored_total(url: str, db: str, q: str, auth: str | None = None) -> int:
    """The sum of every value of ``q``'s first row per series (a count or a sum)."""
    series = influx_query(url, db, q, auth)
    return int(sum(v or 0 for s in series for v in s["values"][0][1:]))


def steady_rates(samples: list[tuple[int, dict[str, Any], int]], end_ns: int
                 ) -> dict[str, float]:
    """Rates over the steady part: from the first sample with aggregated readings to the
    last sample before ``end_ns`` (the end of the load)."""
    live = [(t, s) for t, s, _ in samples if t <= end_ns
            and int(s.get("aggregated_readings", 0)) > 0]
    if len(live) < 2:
        return {}
    (t0, a), (t1, b) = live[0], live[-1]
    dt = (t1 - t0) / 1e9
    agg = int(b.get("aggregated_readings", 0)) - int(a.get("aggregated_readings", 0))
    cpu = float(b.get("cpu_s", 0.0)) - float(a.get("cpu_s", 0.0))
    raw = int(b.get("stored_raw", 0)) - int(a.get("stored_raw", 0))
    return {"aggregated_readings_per_s": agg / dt, "raw_points_per_s": raw / dt,
            "hub_cpu_us_per_reading": cpu * 1e6 / agg if agg else 0.0,
            "steady_window_s": dt}


def wait_drained(sampler: Sampler, expected: int, timeout_s: float,
                 upstream: Callable[[], int] = lambda: 0) -> bool:
    """Until the hubs have accounted for ``expected`` readings (aggregated, late, early or
    invalid; ``upstream()``: those the edges rejected or found duplicate, which never reach
    a hub) and have nothing in flight -- no WAL backlog, no frames queued, no lines waiting
    for InfluxDB (``write_queued_lines`` counts lines until InfluxDB acknowledged them), so
    the hubs' stop has only their final windows left to store -- or ``timeout_s`` passes."""
    def accounted(s: dict[str, Any]) -> int:
        return sum(int(s.get(k, 0)) for k in ("aggregated_readings", "late_readings",
                                              "early_readings")) + sum(
            int(v) for v in (s.get("readings_invalid") or {}).values())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = sampler.sample()
        idle = all(int(s.get(k) or 0) == 0 for k in ("wal_backlog_records", "frame_queue_depth",
                                                     "write_queued_lines"))
        if accounted(s) + upstream() >= expected and idle:
            return True
        time.sleep(0.5)
    return False


# -- the run -----------------------------------------------------------------------------------

@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    with Progress(TextColumn("[bold]load"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                  transient=False) as bar:
        task = bar.add_task("load", total=max(1, total), status="starting")
        yield (bar, task)


def run_loadtest(cfg: LoadtestConfig) -> dict[str, Any]:
    """Run the load against the system under test; returns the report (also written to
    ``cfg.out_dir/report.json`` with a plot in ``report.png``)."""
    load = cfg.load
    plan = load.plan()
    remote = cfg.mqtt_host is not None
    if remote and not (cfg.hub_urls and cfg.influx_url):
        raise ValueError("loading an existing deployment needs --hub-url and --influx-url")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="citybrain-loadtest-") as tmp:
        stack: LocalStack | RemoteHubs
        if remote:
            stack = RemoteHubs(cfg.hub_urls)
            broker = replace(load.broker, host=cfg.mqtt_host or "", port=cfg.mqtt_port)
            influx_url = cfg.influx_url or ""
        else:
            stack = LocalStack(cfg, Path(tmp), plan.scale)
        try:
            if isinstance(stack, LocalStack):
                stack.start()
                broker, influx_url = stack.broker, stack.influx_url
            return _run(cfg, replace(load, broker=broker), stack, influx_url)
        finally:
            if isinstance(stack, LocalStack):
                stack.close()


def _run(cfg: LoadtestConfig, load: LoadConfig, stack: LocalStack | RemoteHubs,
         influx_url: str) -> dict[str, Any]:
    sampler = Sampler(stack)
    baseline = sampler.sample()
    sampler.start()
    total = int(load.profile.total)
    with _progress_bar(cfg.progress, total) as bar:
        def on_progress(p: Progress) -> None:
            if bar is None:
                return
            last = sampler.samples[-1][1] if sampler.samples else {}
            lag = f"{p.lag_p99_s * 1e3:.0f} ms" if p.lag_p99_s is not None else "-"
            bar[0].update(bar[1], completed=p.readings, status=(
                f"{p.readings_per_s:,.0f} readings/s sent, publish lag p99 {lag}, hub "
                f"aggregated {int(last.get('aggregated_readings', 0)):,}"))
        result = run_load(load, on_progress=on_progress)
    end_ns = time.time_ns()
    upstream = stack.edge_dropped if isinstance(stack, LocalStack) else (lambda: 0)
    drained = wait_drained(sampler, int(baseline.get("aggregated_readings", 0))
                           + result.acked_readings, cfg.drain_timeout_s, upstream)
    sampler.stop()
    final = sampler.sample()
    edges: list[dict[str, Any]] = []
    exits: list[int] | None = None
    if isinstance(stack, LocalStack):
        edges = stack.stop_edges()
        exits = stack.stop_hubs()
        final = stack.hub_stats()
    return _report(cfg, load, result, sampler, final, edges, influx_url, end_ns, drained,
                   exits)


def accounting_warnings(drained: bool, exits: list[int] | None, final: dict[str, Any],
                        settled: bool) -> list[str]:
    """Why the stored counts may fall short of what the hubs would have stored given time
    (empty: every reading had its chance; whatever is missing from InfluxDB is lost)."""
    out = []
    if not drained:
        out.append("the hubs had not drained within the drain timeout when they were stopped")
    if exits is not None and any(code != 0 for code in exits):
        out.append(f"hub exit codes {exits}: a hub killed or failed did not store its final "
                   "windows nor write its final counters")
    for key, what in HUB_LEFTOVERS:  # as up's report
        if exits is not None and int(final.get(key) or 0):
            out.append(f"the hubs exited with {int(final[key]):,} {what}")
    if not settled:
        out.append("InfluxDB's count of the aggregates was still changing at the deadline")
    return out


def influxdb_pace(first: dict[str, Any], final: dict[str, Any], hubs: int,
                  load_s: float) -> dict[str, Any]:
    """How long the hubs' processing waited for InfluxDB during the run (counters of
    ``first`` to ``final``, summed over the hubs): their write queue was full, so they took
    no frames until InfluxDB acknowledged lines. ``share`` is that wait per hub over the
    load's duration: near 1, InfluxDB, not the hub, set the pace of the run."""
    waited_s = (int(final.get("write_queue_full_us") or 0)
                - int(first.get("write_queue_full_us") or 0)) / 1e6
    errors = {k: int(v) - int((first.get("write_errors") or {}).get(k, 0))
              for k, v in (final.get("write_errors") or {}).items()}
    return {"waited_s": round(waited_s, 3),
            "share": round(waited_s / (max(hubs, 1) * load_s), 3) if load_s > 0 else None,
            "write_errors": {k: v for k, v in errors.items() if v}}


def _report(cfg: LoadtestConfig, load: LoadConfig, result: LoadResult, sampler: Sampler,
            final: dict[str, Any], edges: list[dict[str, Any]], influx_url: str, end_ns: int,
            drained: bool, exits: list[int] | None = None) -> dict[str, Any]:
    db, auth = cfg.influx_db, cfg.influx_auth
    hub_late = sum(int(final.get(k, 0)) for k in ("late_readings", "early_readings"))
    invalid = sum(int(v) for v in (final.get("readings_invalid") or {}).values())
    rejected = sum(int(v) for e in edges for v in (e.get("rejected") or {}).values())
    duplicates = sum(int(e.get("duplicates", 0)) for e in edges)
    # What the aggregates hold when nothing is lost; the count is read until it gets there
    # or stops changing (writes a hub sent before it exited may still be landing).
    aggregated, settled = wait_settled(
        lambda: stored_total(influx_url, db, 'SELECT sum("count") FROM "agg_1h"', auth),
        result.readings - (hub_late + invalid + rejected + duplicates), cfg.drain_timeout_s)
    raw = stored_total(influx_url, db, "SELECT count(*) FROM /^raw_/", auth)
    per_device = None
    if result.plan.devices <= PER_DEVICE_LIMIT:
        stored = stored_per_device(influx_url, db, auth)
        per_device = loss_and_duplication(result.device_counts(), stored).as_dict()
    lost = result.readings - (aggregated + hub_late + invalid + rejected + duplicates)
    warnings = accounting_warnings(drained, exits, final, settled)
    if lost > 0 and warnings:
        log.warning("%d readings counted lost, but the accounting is incomplete (%s): some "
                    "may only not have been stored in time", lost, "; ".join(warnings))
    hist = final.get("latency_hist")  # already merged over the hubs (combine_snapshots)
    start_s = result.start_ns / 1e9
    timeline = timeline_from_samples(
        result.sent_by_second, [((t / 1e9) - start_s, s) for t, s, _ in sampler.samples])
    report: dict[str, Any] = {
        "load": result.summary(),
        "hubs": cfg.hubs, "partitions": cfg.partitions if cfg.hubs > 1 else None,
        "raw_every": cfg.raw_every, "analytics": cfg.analytics,
        "published_readings": result.readings, "acked_readings": result.acked_readings,
        "stored_in_aggregates": aggregated, "stored_raw": raw,
        # Judged by InfluxDB: published − (in stored aggregates + counted late/early +
        # rejected with a reason + duplicates); 0 when nothing vanished.
        "lost": lost,
        # False: the hubs did not get to store everything (see accounting_warnings), so
        # "lost" may include readings not stored in time rather than vanished
        "accounting_complete": accounting_complete(lost, warnings),
        "accounting_warnings": warnings,
        "hub_exit_codes": exits,
        "late_or_early": hub_late, "invalid": invalid, "edge_rejected": rejected,
        "edge_duplicates": duplicates, "duplicate_frames": int(final.get("frames_duplicate", 0)),
        "raw_sampled_out": int(final.get("raw_sampled_out", 0)),
        "per_device": per_device, "drained": drained,
        "hubs_waited_for_influxdb": influxdb_pace(
            sampler.samples[0][1] if sampler.samples else {}, final,
            len(cfg.hub_urls) or cfg.hubs, load.profile.duration_s),
        # What the hubs still held when they stopped (kept in their WAL for the next run,
        # not stored in this one): a non-zero "lost" next to these is not a loss
        "hub_unwritten_lines_at_exit": int(final.get("unwritten_lines_at_exit", 0)),
        "hub_unprocessed_wal_records": int(final.get("unprocessed_wal_records", 0)),
        # The part of hub_unwritten_lines_at_exit a writer still held when the hubs exited
        # (taken off its queue, not acknowledged: InfluxDB may yet apply it)
        "hub_lines_in_flight_at_exit": int(final.get("write_queued_lines") or 0)
        if exits is not None else None,
        "latency": {stage: percentiles(stage_histogram(hist, stage)) for stage in STAGES}
        if hist else None,
        "hub_peak_rss_bytes": max((r for _, _, r in sampler.samples), default=0),
        **steady_rates(sampler.samples, end_ns),
        "timeline": timeline,
    }
    write_report(cfg.out_dir / "report.json", report)
    try:
        prof = load.profile
        plot(cfg.out_dir / "report.png", timeline, title=(
            f"citybrain loadtest: {load.mode}, {prof.kind} {prof.rate:,.0f} readings/s for "
            f"{prof.duration_s:g} s, {result.plan.devices:,} devices, {cfg.hubs} hub(s)"))
    except Exception as exc:  # a plot is a convenience: the JSON report stands
        log.warning("could not draw the plot: %s", exc)
    return report
