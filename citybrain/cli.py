"""The ``citybrain`` command line: one entry point, a subcommand per tier and tool.

Every option falls back to an environment variable, shown in ``--help`` as ``[env: NAME]``,
so the same code runs under ``make up``, in docker-compose and on separate machines.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from citybrain.mqtt import BrokerConfig

ENV_PREFIX = "CITYBRAIN_"
#: ``citybrain loadtest`` without --rate/--duration (or rate=/duration= in --profile); a soak
#: lasts ``DEFAULT_SOAK_DURATION_S``
LOADTEST_RATE = 50_000.0
LOADTEST_DURATION_S = 30.0


class _RepeatReplacingEnv(argparse.Action):
    """``action="append"`` whose default (the environment's list) the command line replaces
    rather than extends: ``--flag A --flag B`` gives ``[A, B]`` whatever the environment
    says, as for every other option (command line over environment over default)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        current = getattr(namespace, self.dest)
        # argparse starts the namespace with the default object itself: the first use
        # replaces it, later ones append
        items = [] if current is self.default or current is None else list(current)
        setattr(namespace, self.dest, [*items, values])


def env_option(p: argparse.ArgumentParser, flag: str, *, default: Any = None,
               type: Callable[[str], Any] = str, help: str = "", **kw: Any) -> None:
    """Add ``--flag`` whose default comes from ``CITYBRAIN_FLAG`` when that is set. A
    repeatable option (``action="append"``) reads the variable as a comma-separated list."""
    env = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
    raw = os.environ.get(env)
    if kw.get("action") == "append":
        kw["action"] = _RepeatReplacingEnv
        value = [type(x.strip()) for x in (raw or "").split(",") if x.strip()] or default
        env = f"{env}, comma-separated"
    else:
        value = type(raw) if raw not in (None, "") else default
    shown = "" if default is None else f" (default: {default})"
    p.add_argument(flag, default=value, type=type, help=f"{help}{shown} [env: {env}]", **kw)


def env_flag(p: argparse.ArgumentParser, flag: str, help: str) -> None:
    """A boolean switch, also set by ``CITYBRAIN_FLAG=1``."""
    env = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
    on = os.environ.get(env, "").lower() in ("1", "true", "yes", "on")
    p.add_argument(flag, action="store_true", default=on, help=f"{help} [env: {env}]")


def _districts(value: str) -> set[str] | None:
    value = value.strip()
    if value in ("", "all"):
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def add_common(p: argparse.ArgumentParser, *, stats_file: bool = True,
               scale: bool = True) -> None:
    """``--log-level``, and ``--stats-file``/``--scale`` where the subcommand uses them (an
    option offered and then ignored would mislead)."""
    env_option(p, "--log-level", default="INFO", help="logging level")
    if stats_file:
        env_option(p, "--stats-file", type=Path,
                   help="write counters as JSON here every second")
    if scale:
        env_option(p, "--scale", default=1.0, type=float,
                   help="device multiplier: 1 ≈ 3.7k devices, 270 ≈ 1M")


def add_mqtt(p: argparse.ArgumentParser) -> None:
    env_option(p, "--mqtt-host", default="127.0.0.1", help="MQTT broker host")
    env_option(p, "--mqtt-port", default=1883, type=int, help="MQTT broker port")
    env_option(p, "--mqtt-username", help="MQTT username")
    env_option(p, "--mqtt-password", help="MQTT password (prefer --mqtt-password-file)")
    env_option(p, "--mqtt-password-file", type=Path, help="read the MQTT password from this file")
    env_option(p, "--mqtt-tls-ca", help="CA certificate file: connect with TLS")


def add_influx(p: argparse.ArgumentParser) -> None:
    env_option(p, "--influx-url", default="http://127.0.0.1:8086", help="InfluxDB URL")
    env_option(p, "--influx-api", default="v1", choices=["v1", "v2"],
               help="v1: /write with database; v2: /api/v2/write with org, bucket, token")
    env_option(p, "--influx-db", default="citybrain", help="v1 database")
    env_option(p, "--influx-rp", default="", help="v1 retention policy (empty: default)")
    env_option(p, "--influx-username", default="", help="v1 user")
    env_option(p, "--influx-password", default="", help="v1 password")
    env_option(p, "--influx-org", default="citybrain", help="v2 organisation")
    env_option(p, "--influx-bucket", default="citybrain", help="v2 bucket")
    env_option(p, "--influx-token", default="", help="v2 token (prefer --influx-token-file)")
    env_option(p, "--influx-token-file", type=Path, help="read the v2 token from this file")


def mqtt_password(args: argparse.Namespace) -> str | None:
    """``--mqtt-password``, or the first line of ``--mqtt-password-file``."""
    if args.mqtt_password_file:
        from citybrain.auth import read_password_file
        return read_password_file(Path(args.mqtt_password_file))
    return args.mqtt_password or None


def broker_from(args: argparse.Namespace) -> BrokerConfig:
    return BrokerConfig(host=args.mqtt_host, port=args.mqtt_port, username=args.mqtt_username,
                        password=mqtt_password(args), tls_ca=args.mqtt_tls_ca)


def influx_from(args: argparse.Namespace) -> Any:
    from hub.sinks import InfluxConfig, load_secret
    token = load_secret(args.influx_token, args.influx_token_file)
    return InfluxConfig(url=args.influx_url, api=args.influx_api, database=args.influx_db,
                        retention_policy=args.influx_rp, username=args.influx_username,
                        password=args.influx_password, org=args.influx_org,
                        bucket=args.influx_bucket, token=token)


def wait_for_signal(duration_s: float | None) -> threading.Event:
    """An event set on SIGTERM/SIGINT, or after ``duration_s`` if given."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    if duration_s is not None:
        timer = threading.Timer(duration_s, stop.set)
        timer.daemon = True
        timer.start()
    return stop


# -- subcommands ---------------------------------------------------------------------------
def cmd_sim(args: argparse.Namespace) -> int:
    from citybrain.stats import write_json_atomic
    from firmware_sim import FaultConfig, SimConfig, run_sim
    faults = FaultConfig.none() if args.faults == "none" else FaultConfig()
    from citybrain.auth import load_secret
    start = None if args.start_ago_s is None else time.time() - args.start_ago_s
    cfg = SimConfig(mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port,
                    username=args.mqtt_username, password=mqtt_password(args),
                    secret=load_secret(args.mqtt_secret, args.mqtt_secret_file),
                    tls_ca=args.mqtt_tls_ca,
                    scale=args.scale, seed=args.seed, speed=args.speed,
                    duration_s=args.duration, districts=_districts(args.districts),
                    devices_per_link=args.devices_per_link, qos=args.qos, faults=faults,
                    client_id_prefix=args.client_id, start=start)
    stop = wait_for_signal(None)
    stats = run_sim(cfg, stop=stop)
    if args.stats_file:
        Path(args.stats_file).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.stats_file), stats.to_dict())
    logging.getLogger("citybrain.sim").info("sim done: %s", stats.to_dict())
    return 0


def cmd_edge(args: argparse.Namespace) -> int:
    import dataclasses

    from edge.gateway import EdgeConfig, EdgeGateway
    from edge.validate import TimeLimits
    broker = broker_from(args)
    uplink = None
    if args.uplink_host or args.uplink_port:
        uplink = dataclasses.replace(broker, host=args.uplink_host or broker.host,
                                     port=args.uplink_port or broker.port)
    cfg = EdgeConfig(broker=broker, uplink=uplink, districts=_districts(args.districts),
                     scale=args.scale, client_id=args.client_id,
                     frame_max_readings=args.frame_max_readings,
                     frame_max_delay_s=args.frame_max_delay_s,
                     time_limits=TimeLimits(args.max_future_s, args.max_past_s),
                     metrics_host=args.metrics_host,
                     metrics_port=None if args.metrics_port < 0 else args.metrics_port,
                     spool_dir=args.spool_dir or Path("var/spool") / args.client_id,
                     spool_max_bytes=int(args.spool_max_mb * 1024**2),
                     spool_full=args.spool_full, ack_window=args.ack_window,
                     stats_path=args.stats_file)
    gw = EdgeGateway(cfg)
    stop = wait_for_signal(args.duration)
    gw.start()
    while not stop.wait(1.0) and not gw.failed:
        pass
    final = gw.stop(args.stop_timeout_s)
    logging.getLogger("citybrain.edge").info(
        "edge stopped: %d readings framed, %d rejected, %d duplicates; %d records left in "
        "the spool for the next run", final.get("readings_framed", 0),
        final.get("readings_rejected", 0), final.get("duplicates", 0),
        final.get("spool_left_records", 0))
    return 70 if gw.failed else 0  # EX_SOFTWARE: the spool failed; a supervisor restarts us


def cmd_hub(args: argparse.Namespace) -> int:
    from citybrain.memory import keep_freed_memory
    from hub.analytics import AnalyticsConfig
    from hub.kitchen import KitchenConfig
    from hub.service import Hub, HubConfig
    keep_freed_memory()
    analytics = AnalyticsConfig(aqi_standard=args.aqi_standard,
                                kitchen=KitchenConfig(fume_limit_mg_m3=args.fume_limit))
    cfg = HubConfig(broker=broker_from(args), influx=influx_from(args), scale=args.scale,
                    client_id=args.client_id, window_s=args.window_s,
                    allowed_lateness_s=args.lateness_s, store_raw=not args.no_raw,
                    raw_every=args.raw_every,
                    store_fine_windows=args.store_fine_windows,
                    analytics=not args.no_analytics, analytics_config=analytics,
                    http_host=args.http_host,
                    http_port=None if args.http_port < 0 else args.http_port,
                    wal_dir=args.wal_dir or Path("var/wal") / args.client_id,
                    wal_max_bytes=int(args.wal_max_mb * 1024**2),
                    write_queue_lines=args.write_queue_lines,
                    write_connections=args.write_connections,
                    close_windows_at_exit=args.close_windows_at_exit,
                    stats_path=args.stats_file)
    if args.partitions > 0:
        return _run_hub_node(cfg, args)
    hub = Hub(cfg)
    stop = wait_for_signal(args.duration)
    hub.start()
    while not stop.wait(1.0) and not hub.wal.failed:
        pass
    final = hub.stop(args.stop_timeout_s)
    logging.getLogger("citybrain.hub").info(
        "hub stopped: %d readings received, %d raw and %d aggregate points stored; left for "
        "the next run: %d WAL records unprocessed, %d lines unwritten",
        final.get("hub_received", 0), final.get("stored_raw", 0), final.get("stored_agg", 0),
        final.get("unprocessed_wal_records", 0), final.get("unwritten_lines_at_exit", 0))
    return 70 if hub.wal.failed else 0  # EX_SOFTWARE: the WAL failed; restart us


def _run_hub_node(cfg: Any, args: argparse.Namespace) -> int:
    """``citybrain hub --partitions P``: one hub of a cluster sharing ``--cluster-dir``."""
    from citybrain.stats import StatsWriter
    from hub.cluster import ClusterConfig, HubNode, default_node_id
    if args.cluster_dir is None:
        raise SystemExit("--partitions needs --cluster-dir: a directory every hub of the "
                         "cluster shares (one filesystem with working flock)")
    cluster = ClusterConfig(args.cluster_dir, args.partitions,
                            args.node_id or default_node_id(),
                            handover_timeout_s=args.stop_timeout_s)
    node = HubNode(replace(cfg, stats_path=None), cluster)
    stats = StatsWriter(args.stats_file, node.snapshot)
    http = None
    if cfg.http_port is not None:
        from hub.http import HubHttp, metrics_registry
        from hub.service import HUB_GAUGES
        registry = metrics_registry("citybrain_hub", node.snapshot, gauges=HUB_GAUGES)
        http = HubHttp(node.live_view(), registry, cfg.http_host, cfg.http_port,
                       stats=node.snapshot)
    stop = wait_for_signal(args.duration)
    node.start()
    stats.start()
    if http is not None:
        http.start()
    while not stop.wait(0.2) and not node.failed:  # prompt: peers must not adopt at stop
        pass
    final = node.stop(args.stop_timeout_s)
    stats.stop()
    if http is not None:
        http.stop()
    logging.getLogger("citybrain.hub").info(
        "hub node %s stopped: %d readings received, %d raw and %d aggregate points stored, "
        "%d hand-overs, %d partitions adopted", cluster.node_id, final.get("hub_received", 0),
        final.get("stored_raw", 0), final.get("stored_agg", 0), node.handovers, node.adoptions)
    return 70 if node.failed else 0


def cmd_up(args: argparse.Namespace) -> int:
    from citybrain.up import UpConfig, run_city
    cfg = UpConfig(duration_s=args.duration, seed=args.seed, scale=args.scale,
                   speed=args.speed, report=args.report, var_dir=args.var_dir,
                   edge_procs=args.edge_procs, faults=args.faults,
                   mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port,
                   influx_url=args.influx_url, influx_db=args.influx_db,
                   mqtt_port_local=args.local_mqtt_port, influx_port_local=args.local_influx_port,
                   http_port=args.http_port, tls=args.tls, secret_file=args.mqtt_secret_file,
                   device_accounts=not args.no_device_accounts, hubs=args.hubs,
                   partitions=args.partitions)
    return run_city(cfg)


def cmd_loadtest(args: argparse.Namespace) -> int:
    from citybrain.loadtest.generator import LoadConfig
    from citybrain.loadtest.profiles import parse_profile
    from citybrain.loadtest.run import LoadtestConfig, influx_authorization, run_loadtest
    from hub.sinks import load_secret
    profile = parse_profile(args.profile, rate=args.rate, duration_s=args.duration,
                            default_rate=LOADTEST_RATE, default_duration_s=LOADTEST_DURATION_S)
    load = LoadConfig(mode=args.mode, profile=profile, devices=args.devices,
                      processes=args.processes, connections=args.connections, qos=args.qos,
                      frame_readings=args.frame_readings,
                      readings_per_message=args.readings_per_message, broker=broker_from(args),
                      seed=args.seed)
    cfg = LoadtestConfig(load=load, out_dir=args.out, hubs=args.hubs, partitions=args.partitions,
                         edge_procs=args.edge_procs, raw_every=args.raw_every,
                         analytics=not args.no_analytics,
                         mqtt_host=args.mqtt_host if args.hub_url else None,
                         mqtt_port=args.mqtt_port, hub_urls=args.hub_url or [],
                         influx_url=args.influx_url if args.hub_url else None,
                         influx_db=args.influx_db, progress=sys.stderr.isatty(),
                         influx_auth=influx_authorization(
                             args.influx_username, args.influx_password,
                             load_secret(args.influx_token, args.influx_token_file)))
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through run_loadtest: its servers are stopped

    signal.signal(signal.SIGTERM, interrupt)
    report = run_loadtest(cfg)
    lat = report.get("latency") or {}
    agg = lat.get("aggregated") or {}
    print(f"published {report['published_readings']:,} readings; in stored aggregates "
          f"{report['stored_in_aggregates']:,}; lost {report['lost']:,}; hub aggregated "
          f"{report.get('aggregated_readings_per_s', 0):,.0f} readings/s at "
          f"{report.get('hub_cpu_us_per_reading', 0):.2f} µs CPU each; device time -> "
          f"aggregated p50 {agg.get('p50')} s, p99 {agg.get('p99')} s")
    pace = report.get("hubs_waited_for_influxdb") or {}
    if (pace.get("share") or 0) >= 0.05:
        print(f"the hubs waited {pace['waited_s']:,.1f} s for InfluxDB to take their lines "
              f"({pace['share']:.0%} of the load's duration per hub): InfluxDB set the pace")
    print(f"report: {args.out / 'report.json'}  plot: {args.out / 'report.png'}")
    return 0 if report["lost"] == 0 else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.run import run_bench
    return run_bench(args.out, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    from citybrain.loadtest.profiles import DEFAULT_SOAK_DURATION_S
    parser = argparse.ArgumentParser(
        prog="citybrain",
        description="Edge-IoT telemetry pipeline for a simulated Chongqing city operations "
                    "centre: simulated firmware → MQTT → district edges → hub → InfluxDB.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sim", help="run simulated device firmware, publishing over MQTT")
    add_common(p)
    add_mqtt(p)
    env_option(p, "--seed", default=1, type=int, help="random seed: same seed, same readings")
    env_option(p, "--speed", default=1.0, type=float,
               help="simulated seconds per wall-clock second")
    env_option(p, "--duration", type=float, help="stop after this many wall-clock seconds")
    env_option(p, "--districts", default="all", help="comma-separated district codes, or all")
    env_option(p, "--devices-per-link", type=int,
               help="devices sharing one MQTT connection (default: one connection per system)")
    env_option(p, "--qos", default=1, type=int, choices=[0, 1], help="MQTT QoS of readings")
    env_option(p, "--faults", default="default", choices=["default", "none"],
               help="misbehaviour: the default rates (docs/architecture.md, 'Simulated "
               "misbehaviour'), or none")
    env_option(p, "--client-id", default="citybrain-sim", help="MQTT client id prefix")
    env_option(p, "--mqtt-secret", help="the fleet's provisioning secret: each link logs in "
               "as its system (or device) with a derived password (prefer --mqtt-secret-file)")
    env_option(p, "--mqtt-secret-file", type=Path, help="read the provisioning secret from here")
    env_option(p, "--start-ago-s", type=float,
               help="start simulated time this many seconds before now (default: now, or "
                    "now − duration·speed when faster than real time with a duration)")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("edge", help="run district edge gateways")
    add_common(p)
    add_mqtt(p)
    env_option(p, "--districts", default="all", help="comma-separated district codes, or all")
    env_option(p, "--client-id", default="citybrain-edge", help="MQTT client id")
    env_option(p, "--frame-max-readings", default=5000, type=int,
               help="seal a frame at this many readings")
    env_option(p, "--frame-max-delay-s", default=0.5, type=float,
               help="seal a frame when its oldest reading waited this long")
    env_option(p, "--max-future-s", default=300.0, type=float,
               help="reject device times further ahead of the edge clock")
    env_option(p, "--max-past-s", default=30 * 86400.0, type=float,
               help="reject device times further behind the edge clock")
    env_option(p, "--metrics-host", default="127.0.0.1", help="address of /metrics")
    env_option(p, "--metrics-port", default=9101, type=int,
               help="Prometheus /metrics port (-1: off)")
    env_option(p, "--uplink-host", help="publish frames to this broker host (default: the "
               "device broker; same credentials)")
    env_option(p, "--uplink-port", type=int, help="... and port")
    env_option(p, "--spool-dir", type=Path,
               help="on-disk spool, kept across restarts (default: var/spool/CLIENT_ID)")
    env_option(p, "--spool-max-mb", default=256.0, type=float, help="spool size limit, MiB")
    env_option(p, "--spool-full", default="drop_oldest", choices=["drop_oldest", "block"],
               help="when the spool is full: drop its oldest frames (counted) or stop taking "
                    "device messages (the broker holds them)")
    env_option(p, "--ack-window", default=5000, type=int,
               help="device messages awaiting acknowledgement before a commit is forced "
                    "(the broker must allow this many in flight)")
    env_option(p, "--stop-timeout-s", default=30.0, type=float,
               help="on SIGTERM/Ctrl-C, wait at most this long per stage to drain")
    env_option(p, "--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_edge)

    p = sub.add_parser("hub", help="run the city hub: frames → aggregates → InfluxDB")
    add_common(p)
    add_mqtt(p)
    add_influx(p)
    env_option(p, "--client-id", default="citybrain-hub", help="MQTT client id")
    env_option(p, "--window-s", default=10.0, type=float, help="aggregation window, device time")
    env_option(p, "--lateness-s", default=30.0, type=float,
               help="how long a window stays open for late readings")
    env_flag(p, "--no-raw", "store aggregates only, not raw readings")
    env_option(p, "--raw-every", default=1, type=int,
               help="store 1 raw reading in N (all are aggregated; the rest are counted as "
                    "raw_sampled_out): load tests above InfluxDB's write limit")
    env_option(p, "--store-fine-windows", default="all", choices=["all", "fast"],
               help="whose finest windows (agg_10s) go to InfluxDB: all series, or 'fast': "
                    "only series whose system reports more often than once a window (a "
                    "slower one's window holds its one reading, which its raw point and "
                    "agg_1m row hold too); every window is still computed, the rows not "
                    "stored are counted as windows_not_stored")
    env_flag(p, "--no-analytics", "windows only: no AQI, alarms, quality and other analytics")
    env_option(p, "--http-host", default="127.0.0.1",
               help="address of the dashboard, /api/state, /events and /metrics")
    env_option(p, "--http-port", default=8080, type=int, help="their port (-1: no server)")
    env_option(p, "--aqi-standard", default=2026, type=int, choices=[2012, 2026],
               help="HJ 633 version for AQI (2026 is in force since 2026-03-01)")
    env_option(p, "--fume-limit", default=1.0, type=float,
               help="cooking-fume alarm limit, mg/m³ (Chongqing 1.0; national GB 18483: 2.0)")
    env_option(p, "--wal-dir", type=Path,
               help="write-ahead log, kept across restarts (default: var/wal/CLIENT_ID)")
    env_option(p, "--wal-max-mb", default=2048.0, type=float,
               help="WAL size limit, MiB; when full the hub stops acknowledging frames and "
                    "the broker holds them")
    env_option(p, "--write-connections", default=3, type=int,
               help="InfluxDB connections: one for aggregates and analytics (kept in order), "
                    "the others for raw readings (in parallel); 1: everything on one")
    env_option(p, "--write-queue-lines", default=500_000, type=int,
               help="lines rendered and waiting for InfluxDB before processing pauses (the "
                    "WAL holds the rest on disk)")
    env_flag(p, "--close-windows-at-exit", "on stop, emit every open window as final (the "
             "end of a run) instead of keeping its readings in the WAL for the next run")
    env_option(p, "--stop-timeout-s", default=60.0, type=float,
               help="on SIGTERM/Ctrl-C, wait at most this long per stage to drain")
    env_option(p, "--partitions", default=0, type=int,
               help="run as one hub of a cluster: the districts are split into this many "
                    "partitions, each served by one hub at a time (0: this hub serves all)")
    env_option(p, "--cluster-dir", type=Path,
               help="with --partitions: the directory every hub of the cluster shares "
                    "(membership and partition locks, each partition's WAL)")
    env_option(p, "--node-id", help="with --partitions: this hub's name in the cluster "
               "(default: HOSTNAME-PID)")
    env_option(p, "--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_hub)

    p = sub.add_parser(
        "loadtest", help="load-test a hub: a known load in, loss and latency out",
        description="Publish a load (edge frames or per-device messages) following a rate "
                    "profile from several processes, and measure what the hub makes of it: "
                    "readings aggregated and stored per second, latency from device time to "
                    "aggregated and to stored (HDR histograms, no coordinated omission), loss "
                    "and duplication per device judged by InfluxDB, hub CPU and memory. By "
                    "default it starts its own Mosquitto, influxd, hub(s) and edges; with "
                    "--hub-url it loads an existing deployment. Writes OUT/report.json and "
                    "OUT/report.png; exits 1 if any reading was lost.")
    add_common(p, stats_file=False, scale=False)  # --devices sizes the load
    add_mqtt(p)
    # Loss is judged with InfluxDB's v1 /query API (1.x, or 2.x's v1 compatibility API).
    env_option(p, "--influx-url", default="http://127.0.0.1:8086",
               help="with --hub-url: the deployment's InfluxDB (1.x, or 2.x through its v1 "
                    "query API)")
    env_option(p, "--influx-db", default="citybrain", help="with --hub-url: its database")
    env_option(p, "--influx-username", default="", help="with --hub-url: InfluxDB 1.x user "
               "allowed to read the database (HTTP Basic)")
    env_option(p, "--influx-password", default="", help="that user's password")
    env_option(p, "--influx-token", default="", help="with --hub-url: an InfluxDB 2.x token "
               "allowed to read the bucket, for its v1 query API (prefer --influx-token-file)")
    env_option(p, "--influx-token-file", type=Path, help="read that token from this file")
    env_option(p, "--profile", default="constant",
               help="constant | step[:steps=N] | ramp[:start=R] | soak | "
                    "burst[:period=S,burst=S,base=F]")
    env_option(p, "--rate", type=float,
               help=f"readings/s (peak) (default: {LOADTEST_RATE:,.0f}; or rate= in --profile)")
    env_option(p, "--duration", type=float,
               help=f"seconds of load (default: {LOADTEST_DURATION_S:g}, soak "
                    f"{DEFAULT_SOAK_DURATION_S:g}; or duration= in --profile)")
    env_option(p, "--mode", default="frames", choices=["frames", "messages"],
               help="edge-batched frames straight to the hub, or per-device JSON messages "
                    "through edges")
    env_option(p, "--devices", default=10_000, type=int, help="distinct devices")
    env_option(p, "--processes", default=2, type=int, help="load generator processes")
    env_option(p, "--connections", default=4, type=int,
               help="messages mode: MQTT connections per process")
    env_option(p, "--qos", default=1, type=int, choices=[0, 1], help="messages mode: MQTT QoS")
    env_option(p, "--frame-readings", default=5000, type=int, help="frames mode: frame size")
    env_option(p, "--readings-per-message", default=3, type=int,
               help="messages mode: readings per message")
    env_option(p, "--hubs", default=1, type=int, help="hub processes (a cluster when > 1)")
    env_option(p, "--partitions", default=12, type=int, help="with --hubs > 1")
    env_option(p, "--edge-procs", default=1, type=int, help="messages mode: edge processes")
    env_option(p, "--raw-every", default=1, type=int,
               help="the hub stores 1 raw reading in N (all are aggregated)")
    env_flag(p, "--no-analytics", "the hub computes windows only")
    env_option(p, "--hub-url", action="append",
               help="an existing hub's HTTP base URL (repeat per hub): load that deployment "
                    "(its broker: --mqtt-host; its InfluxDB: --influx-url) instead of a local "
                    "one")
    env_option(p, "--seed", default=0, type=int, help="seed of the readings' values")
    env_option(p, "--out", type=Path, default=Path("var/loadtest"),
               help="directory for report.json and report.png")
    p.set_defaults(func=cmd_loadtest)

    p = sub.add_parser("up", help="run the whole simulated city locally and account for it")
    add_common(p, stats_file=False)
    env_option(p, "--duration", type=float, help="run this many seconds, then stop and report "
               "(default: until Ctrl-C)")
    env_option(p, "--seed", default=1, type=int, help="random seed")
    env_option(p, "--speed", default=1.0, type=float, help="simulated seconds per second")
    env_option(p, "--report", type=Path, help="write the accounting report (JSON) here")
    env_option(p, "--var-dir", default=Path("var"), type=Path,
               help="data, logs and stats of the local services")
    env_option(p, "--edge-procs", default=1, type=int, help="edge processes (districts split)")
    env_option(p, "--hubs", default=1, type=int,
               help="hub processes; more than one share the districts as a cluster")
    env_option(p, "--partitions", default=12, type=int,
               help="with --hubs > 1: partitions the districts are split into")
    env_option(p, "--faults", default="default", choices=["default", "none"],
               help="device misbehaviour")
    env_option(p, "--mqtt-host", help="use this broker instead of starting a local Mosquitto")
    env_option(p, "--mqtt-port", default=1883, type=int, help="port of --mqtt-host")
    env_option(p, "--influx-url", help="use this InfluxDB 1.x instead of starting a local one")
    env_option(p, "--influx-db", default="citybrain", help="database")
    env_option(p, "--local-mqtt-port", type=int, help="port for the local Mosquitto (free one)")
    env_option(p, "--local-influx-port", type=int, help="port for the local influxd (free one)")
    env_option(p, "--http-port", default=8080, type=int,
               help="the hub's dashboard port (a free one if it is taken)")
    env_option(p, "--mqtt-secret-file", type=Path,
               help="the fleet's MQTT provisioning secret (default: VAR_DIR/mqtt-secret, made "
                    "if missing); with --mqtt-host, the broker's accounts must derive from it")
    env_flag(p, "--tls", "the local Mosquitto listens with TLS only, certificates from a local "
             "CA made under VAR_DIR/tls (scripts/make_ca.sh)")
    env_flag(p, "--no-device-accounts", "give the local Mosquitto system, edge and hub "
             "accounts only (skips hashing a password per device; the sim uses system links)")
    p.set_defaults(func=cmd_up)

    from hub.aqi_cli import add_aqi_parser
    add_aqi_parser(sub)

    from citybrain.auth import add_auth_parser
    add_auth_parser(sub)

    from citybrain.top import add_top_parser
    add_top_parser(sub)

    p = sub.add_parser("bench", help="measure kernels and the end-to-end path; write JSON")
    add_common(p, stats_file=False, scale=False)
    env_option(p, "--out", default=Path("bench/results/latest.json"), type=Path,
               help="where to write the results")
    env_flag(p, "--quick", "smaller sizes (for tests)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = str(getattr(args, "log_level", "WARNING")).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
