"""Overload: ten times more than the links can carry, for two minutes, with memory measured.

The city runs as real processes (``citybrain.up.CityRun``: Mosquitto, influxd, hub, edge,
sim). Two links are throttled by ``bench.throttle.ThrottledProxy`` (a slow network, not a
fake server):

  * edge-0 → broker (its frame uplink): to a tenth of its measured unthrottled frame rate,
    so it must spool to disk; its spool is small on purpose (``--spool-max-mb``) so the
    configured policy (drop oldest) must shed, counted;
  * hub → InfluxDB: to a twentieth of the hub's unthrottled write rate (edge-1, the other
    half of the districts, still sends at full rate, so the hub receives a bit over half):
    the hub's write queue is small on purpose, so its write-ahead log holds the backlog.

Phases: warm-up (unthrottled: measures the offered rates), overload (``overload_s``,
default 120 s, memory sampled every second), recovery (limits lifted, everything drains),
then the accounting report: every reading published is stored, rejected, a duplicate, or
counted as shed by the spool policy — ``unexplained`` must be 0.

Run: ``python -m bench.overload --out bench/results/overload.json`` (``--quick``: 10 s).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.run import machine
from bench.throttle import ThrottledProxy
from citybrain.localstack import InfluxV1Server, free_port
from citybrain.stats import rss_bytes, write_json_atomic
from citybrain.up import CityRun, UpConfig

SPOOL_MAX_MB = 4
WAL_MAX_MB = 512


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MiB (0 once it has gone)."""
    return rss_bytes(pid) / 2**20


class Sampler:
    """Every second: RSS of hub and edge, spool and WAL sizes, shed counters."""

    def __init__(self, city: CityRun) -> None:
        self.city = city
        self.rows: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, float]]:
        self._stop.set()
        self._thread.join(5)
        return self.rows

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            hub, edge = self.city.hub.stats(), self.city.edges[0].stats()
            self.rows.append({
                "t_s": round(time.monotonic() - self._t0, 1),
                "hub_rss_mb": rss_mb(self.city.hub.proc.pid),
                "edge_rss_mb": rss_mb(self.city.edges[0].proc.pid),
                "edge_spool_mb": int(edge.get("spool_bytes") or 0) / 2**20,
                "edge_queue": int(edge.get("queue_depth") or 0),
                "edge_dropped_readings": int(edge.get("spool_dropped_readings") or 0),
                "hub_wal_mb": int(hub.get("wal_size_bytes") or 0) / 2**20,
                "hub_wal_backlog_records": int(hub.get("wal_backlog_records") or 0),
                "hub_write_queued_lines": int(hub.get("write_queued_lines") or 0),
            })


def _hub_logged(city: CityRun) -> int:
    """Frames (and events) the hub has taken into its WAL so far: its inflow."""
    return int(city.hub.stats().get("wal_records") or 0)


def _rate(proxy: ThrottledProxy, seconds: float) -> float:
    """Bytes per second the proxy forwarded client → server over the next ``seconds``
    (measured again, up to 10 times, while nothing flows yet: tiers still starting)."""
    for _ in range(10):
        b0 = proxy.bytes[0]
        time.sleep(seconds)
        if proxy.bytes[0] > b0:
            break
    return (proxy.bytes[0] - b0) / seconds


def run_overload(out: Path, overload_s: float = 120.0, warmup_s: float = 20.0,
                 speed: float = 600.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="citybrain-overload-") as tmp:
        var = Path(tmp)
        influx = InfluxV1Server(var / "influxdb", port=free_port(),
                                log_path=var / "log" / "influxd.log").start()
        to_influx = ThrottledProxy(free_port(), "127.0.0.1", influx.port, None).start()
        cfg = UpConfig(duration_s=warmup_s + overload_s, speed=speed, var_dir=var / "city",
                       edge_procs=2,
                       influx_url=f"http://127.0.0.1:{to_influx.listen_port}",
                       http_port=free_port(), device_accounts=False, drain_timeout_s=600.0)
        city = CityRun(cfg)
        try:
            city.start_services()
            uplink = ThrottledProxy(free_port(), city.mqtt[0], city.mqtt[1], None).start()
            cfg.extra_args = {
                "edge-0": ["--uplink-host", "127.0.0.1", "--uplink-port",
                           str(uplink.listen_port), "--spool-max-mb", str(SPOOL_MAX_MB)],
                "hub": ["--wal-max-mb", str(WAL_MAX_MB), "--write-queue-lines", "50000"]}
            city.start_tiers()
            time.sleep(warmup_s / 2)
            frame_rate = _rate(uplink, warmup_s / 4)
            h0, t0 = _hub_logged(city), time.monotonic()
            write_rate = _rate(to_influx, warmup_s / 4)
            warm_hub_rate = (_hub_logged(city) - h0) / (time.monotonic() - t0)
            sampler = Sampler(city).start()
            logged0 = _hub_logged(city)
            uplink.set_rate(frame_rate / 10)
            to_influx.set_rate(write_rate / 20)
            time.sleep(overload_s)
            overload_rows = list(sampler.rows)
            hub_rate = (_hub_logged(city) - logged0) / overload_s
            uplink.set_rate(None)
            to_influx.set_rate(None)
            report = city.drain_and_stop()
            rows = sampler.stop()
        finally:
            city.stop_everything()
            influx.stop()
    shed = report["shed"]
    result = {
        "machine": machine(),
        "overload_s": overload_s,
        "offered_frame_bytes_per_s": frame_rate,
        "uplink_limit_bytes_per_s": frame_rate / 10,
        "offered_write_bytes_per_s": write_rate,
        "influx_limit_bytes_per_s": write_rate / 20,
        "hub_wal_records_per_s_warm": warm_hub_rate,
        "hub_wal_records_per_s_during_overload": hub_rate,
        # what the hub would have written at its overload inflow ÷ what InfluxDB let through
        "hub_overload_factor": 20 * hub_rate / max(warm_hub_rate, 1e-9),
        "hub_rss_mb_max": max(r["hub_rss_mb"] for r in overload_rows),
        "hub_rss_mb_first_10s": max(r["hub_rss_mb"] for r in overload_rows[:10]),
        "edge_rss_mb_max": max(r["edge_rss_mb"] for r in overload_rows),
        "edge_rss_mb_first_10s": max(r["edge_rss_mb"] for r in overload_rows[:10]),
        "edge_spool_mb_max": max(r["edge_spool_mb"] for r in overload_rows),
        "edge_spool_limit_mb": SPOOL_MAX_MB,
        "hub_wal_mb_max": max(r["hub_wal_mb"] for r in overload_rows),
        "hub_wal_backlog_records_max": max(r["hub_wal_backlog_records"] for r in overload_rows),
        "published": report["published"],
        "stored_raw": report["stored_raw_counted_in_influxdb"],
        "rejected": report["rejected"],
        "duplicates": report["duplicates"],
        "shed_by_spool_policy": shed,
        "unexplained": report["lost"],
        "samples": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/overload.json"))
    p.add_argument("--overload-s", type=float, default=120.0)
    p.add_argument("--quick", action="store_true", help="10 s of overload (for tests)")
    args = p.parse_args()
    r = run_overload(args.out, overload_s=10.0 if args.quick else args.overload_s,
                     warmup_s=8.0 if args.quick else 20.0)
    print({k: v for k, v in r.items() if k not in ("samples", "machine")})
    return 0 if r["unexplained"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
