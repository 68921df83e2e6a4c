"""citybrain itself on the peers' load: its real edge and hub, as child processes.

On the same Mosquitto and influxd as the other peers, ``run_citybrain`` starts
``citybrain hub`` (InfluxDB 1.x API, its own database, a fresh WAL, no HTTP server,
analytics **on** — its default, what a deployment runs: AQI, alarms, quality, the
10 s / 1 min / 1 h windows) and then ``edge_procs`` ``citybrain edge`` processes serving
every district of ``seeds.city.City(1.0)`` (a fresh spool each, no /metrics server), with
``citybrain.up.Child`` (``python -m citybrain.cli``, logs and stats files under ``log_dir``).
Once every tier is subscribed (its stats file exists), the load (``bench.peers.load``) is
published on the real device topics; the edges validate, de-duplicate and frame the
messages, the hub logs the frames to its WAL, aggregates them and stores every reading raw
(one line per reading, ``raw_*`` measurements) plus the aggregates and analytics.

Completion is seen from outside, as for Node-RED: the raw readings in InfluxDB are counted
every 0.25 s until every published reading landed or the count stopped growing for
``IDLE_S``. Then the edges and the hub are stopped with SIGTERM, in data-flow order, and
their final stats files read. CPU is each process's ``time.process_time()`` (its ``cpu_s``
counter: every thread) from just before the first publish to its exit, so it includes the
hub's work at stop (closing every open window, ``--close-windows-at-exit``) but not start-up
(imports, numba, the city registry); the part spent after the last reading landed (from
``/proc`` at that moment) is reported too (``stop_cpu_us_per_reading``). The tiers' MQTT
sessions are persistent; they are removed afterwards so that the broker does not queue the
next peers' load for them.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.peers.common import REPO, RUN_TIMEOUT_S, PeerResult, cpu_seconds
from bench.peers.load import publish_load
from citybrain import topics
from citybrain.localstack import InfluxV1Server
from citybrain.up import Child, influx_count
from seeds.city import City

#: Bound on the tiers' start-up (imports, numba, registry, connect, subscribe), seconds.
START_TIMEOUT_S = 120.0
#: The raw count stopped growing this long: what has not landed is lost, seconds.
IDLE_S = 10.0
POLL_S = 0.25
#: Bound on each tier's graceful stop (SIGTERM, drain, exit), seconds; then SIGKILL.
EDGE_STOP_S, HUB_STOP_S = 60.0, 120.0
#: Bound on removing one MQTT session after the run, seconds.
FORGET_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CitybrainResult(PeerResult):
    """A ``PeerResult`` with the CPU split between the tiers (µs per landed reading; their
    sum is ``cpu_us_per_reading``) and what the edges rejected (explains a loss)."""

    hub_cpu_us_per_reading: float | None = None
    edge_cpu_us_per_reading: float | None = None
    #: the part of ``cpu_us_per_reading`` spent after the last reading landed: the graceful
    #: stop (the hub closing every open window and storing those aggregates)
    stop_cpu_us_per_reading: float | None = None
    rejected_readings: int = 0
    analytics: bool = True
    #: readings the hub folded into its windows, and those behind its allowed lateness
    #: (stored raw, not aggregated): on a live load every reading is aggregated
    aggregated_readings: int = 0
    late_readings: int = 0

    def as_figures(self, key: str) -> dict[str, float | None]:
        out = super().as_figures(key)
        out[f"{key}_hub_cpu_us_per_reading"] = self.hub_cpu_us_per_reading
        out[f"{key}_edge_cpu_us_per_reading"] = self.edge_cpu_us_per_reading
        out[f"{key}_stop_cpu_us_per_reading"] = self.stop_cpu_us_per_reading
        out[f"{key}_rejected_readings"] = float(self.rejected_readings)
        out[f"{key}_analytics"] = 1.0 if self.analytics else 0.0
        out[f"{key}_aggregated_readings"] = float(self.aggregated_readings)
        out[f"{key}_late_readings"] = float(self.late_readings)
        return out


def district_codes() -> list[str]:
    """Every district of the seeded city (scale 1.0), sorted."""
    return sorted(d.code for d in City(1.0).districts)


def tier_env(host: str, port: int) -> dict[str, str]:
    """This environment without any ``CITYBRAIN_*`` setting (credentials, TLS, a database
    someone exported), pointed at the peers' broker, scale 1.0, the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update(CITYBRAIN_MQTT_HOST=host, CITYBRAIN_MQTT_PORT=str(port), CITYBRAIN_SCALE="1.0",
               PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]))
    return env


def _cpu(child: Child) -> float:
    return float(child.stats().get("cpu_s", 0.0))


def _wait_started(children: list[Child], timeout_s: float) -> None:
    """Until every child wrote its stats file (it is subscribed then); RuntimeError with
    the log's path if one exits first or the bound passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        for c in children:
            if not c.alive():
                raise RuntimeError(f"citybrain {c.name} exited at start ({c.proc.returncode}); "
                                   f"log {c.log_path}")
        if all(c.stats_path.exists() for c in children):
            return
        if time.monotonic() > deadline:
            late = [c.name for c in children if not c.stats_path.exists()]
            raise RuntimeError(f"citybrain {late} not started after {timeout_s:.0f} s; logs "
                               f"under {children[0].log_path.parent}")
        time.sleep(0.1)


def _wait_raw(influx: InfluxV1Server, db: str, expected: int, children: list[Child],
              idle_s: float = IDLE_S, timeout_s: float = RUN_TIMEOUT_S) -> tuple[int, float]:
    """Poll the raw readings of ``db`` every ``POLL_S`` until ``expected`` landed, the count
    stopped growing for ``idle_s``, a tier exited, or ``timeout_s`` passed. Returns
    (readings counted, monotonic time the last increase was seen)."""
    deadline = time.monotonic() + timeout_s
    last_n, last_t = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = influx_count(influx.url, db)
        now = time.monotonic()
        if n != last_n:
            last_n, last_t = n, now
        if (n >= expected or now - last_t > idle_s
                or not all(c.alive() for c in children)):
            break
        time.sleep(POLL_S)
    return max(last_n, 0), last_t


def forget_sessions(host: str, port: int, client_ids: Sequence[str],
                    retained: Sequence[str] = ()) -> None:
    """Remove the broker's persistent sessions of ``client_ids`` (connect with a clean
    session, disconnect) and clear the retained messages on ``retained`` topics. Each
    connection is bounded by ``FORGET_TIMEOUT_S``; a failure is ignored (best effort)."""
    for i, cid in enumerate(client_ids):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
        try:
            client.connect(host, port, keepalive=30)
            deadline = time.monotonic() + FORGET_TIMEOUT_S
            while not client.is_connected() and time.monotonic() < deadline:
                client.loop(0.05)
            if i == 0:
                for topic in retained:
                    client.publish(topic, b"", qos=1, retain=True)
                end = time.monotonic() + 1.0
                while time.monotonic() < min(end, deadline):
                    client.loop(0.05)
            client.disconnect()
            client.loop(0.1)
        except OSError:
            pass


def run_citybrain(host: str, port: int, influx: InfluxV1Server, db: str, n: int, qos: int,
                  publishers: int = 2, log_dir: Path | None = None, edge_procs: int = 1,
                  analytics: bool = True, hub_args: Sequence[str] = ()) -> CitybrainResult:
    """citybrain's edge(s) and hub on one load (see the module docstring).

    ``db`` must be new (its raw readings are counted); ``log_dir`` keeps the tiers' logs
    and stats files (``citybrain-<db>/log``, ``/run``), a temporary directory if None.
    ``hub_args``: extra ``citybrain hub`` arguments, for experiments (the bench runs the
    defaults), e.g. ``["--lateness-s", "10800"]``.
    Raises RuntimeError when a tier does not start or does not stop cleanly.
    """
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="peers-citybrain-") as tmp:
        var = (log_dir or Path(tmp)) / f"citybrain-{db}"
        for sub in ("run", "log"):
            (var / sub).mkdir(parents=True, exist_ok=True)
        durable = Path(tmp)  # WAL and spools: fresh, removed afterwards
        env = tier_env(host, port)
        hub_id = f"peers-cb-hub-{tag}"
        argv = ["hub", "--influx-url", influx.url, "--influx-api", "v1", "--influx-db", db,
                "--http-port", "-1", "--client-id", hub_id,
                "--wal-dir", str(durable / "wal"), "--close-windows-at-exit"]
        if not analytics:
            argv.append("--no-analytics")
        argv += hub_args
        codes = district_codes()
        parts = max(1, min(edge_procs, len(codes)))
        edge_ids = [f"peers-cb-edge-{tag}-{i}" for i in range(parts)]
        children: list[Child] = []
        stopped: list[tuple[Child, int]] = []
        try:
            hub = Child("hub", argv, var, env)
            children.append(hub)
            _wait_started([hub], START_TIMEOUT_S)  # frames need the hub's session first
            edges = [Child(f"edge-{i}", ["edge", "--districts", ",".join(codes[i::parts]),
                                         "--client-id", edge_ids[i], "--metrics-port", "-1",
                                         "--spool-dir", str(durable / "spool" / f"edge-{i}")],
                           var, env) for i in range(parts)]
            children += edges
            _wait_started(edges, START_TIMEOUT_S)
            cpu0: dict[str, float] = {}

            def baseline() -> None:  # the tiers are idle: their last stats are current
                cpu0.update({c.name: _cpu(c) for c in children})

            load = publish_load(host, port, n, qos, publishers, on_ready=baseline)
            landed, t_last = _wait_raw(influx, db, load.readings, children)
            cpu_landed = sum(cpu_seconds(c.proc.pid) for c in children if c.alive())
            stopped += [(c, c.terminate_and_wait(EDGE_STOP_S)) for c in edges]
            stopped.append((hub, hub.terminate_and_wait(HUB_STOP_S)))
            failed = [f"{c.name} exit {rc} (log {c.log_path})" for c, rc in stopped if rc]
            if failed:
                raise RuntimeError(f"citybrain did not stop cleanly: {failed}")
            final: dict[str, dict[str, Any]] = {c.name: c.stats() for c in children}
        finally:  # on a failure: stop what is left (SIGTERM, then SIGKILL), close its log
            done = {id(c) for c, _ in stopped}
            for c in children:
                if id(c) not in done:
                    c.terminate_and_wait(10.0)
            forget_sessions(host, port, [hub_id, *[f"{e}-dev" for e in edge_ids]],
                            retained=[topics.edge_state_topic(e) for e in edge_ids])
    hub_cpu = float(final["hub"].get("cpu_s", 0.0)) - cpu0["hub"]
    edge_cpu = sum(float(final[e.name].get("cpu_s", 0.0)) - cpu0[e.name] for e in edges)
    rejected = sum(int(final[e.name].get("readings_rejected", 0)) for e in edges)
    stop_cpu = sum(float(s.get("cpu_s", 0.0)) for s in final.values()) - cpu_landed
    span = t_last - load.t_start

    def per_reading(cpu_s: float) -> float | None:
        return cpu_s * 1e6 / landed if landed else None

    return CitybrainResult(
        "citybrain", published_readings=load.readings, landed_readings=landed,
        readings_per_s=landed / span if landed and span > 0 else 0.0,
        publish_msgs_per_s=load.msgs_per_s, cpu_us_per_reading=per_reading(hub_cpu + edge_cpu),
        hub_cpu_us_per_reading=per_reading(hub_cpu), edge_cpu_us_per_reading=per_reading(edge_cpu),
        stop_cpu_us_per_reading=per_reading(max(0.0, stop_cpu)), rejected_readings=rejected,
        analytics=analytics, aggregated_readings=int(final["hub"].get("aggregated_readings", 0)),
        late_readings=int(final["hub"].get("late_readings", 0))
        + int(final["hub"].get("early_readings", 0)))
