"""The hub under load (``citybrain loadtest`` runs), for ``citybrain bench``.

Every figure comes from real processes on this machine: the multi-process load generator,
Mosquitto, the hub(s) and influxd, all sharing its cores. Runs, in order:

1. **Frame path, flat out** (``e2e_*``, ``hub_cpu_us_per_reading``): edge-batched frames
   offered faster than this machine can carry them, raw storage sampled 1 in 100 (as issue 6
   allows in this mode), every analytics module on. The rate is readings counted in the
   hub's aggregates per second over the steady part; loss is judged by InfluxDB (the
   aggregates' counts against what was published).
2. **Half load** (``half_load_*``): half the rate run 1 reached; latency from device time
   to aggregated and to stored (HDR, p99).
3. **Raw storage** (``hub_raw_store_points_per_s``): every reading stored raw, windows
   only, offered above influxd's write rate; next to it, on the same influxd,
   ``influx_raw_hub_lines_per_s``: influxd's own rate for the same kind of lines (the hub's
   raw line shape: one field, device/district/system tags), pre-rendered, 5,000-line
   batches, 2 connections.
4. **Scaling** (``hub_scaling_1_to_2``): run 1's load on one hub and on a cluster of two.
5. **Memory** (full runs only, ``hub_rss_mb_1m_devices``): a million devices, each seen.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from citybrain.loadtest.generator import LoadConfig
from citybrain.loadtest.profiles import parse_profile
from citybrain.loadtest.run import LoadtestConfig, run_loadtest
from citybrain.localstack import InfluxV1Server

DEVICES = 10_000


def _run(tmp: Path, rate: float, duration: float, **kw: Any) -> dict[str, Any]:
    devices = kw.pop("devices", DEVICES)
    load = LoadConfig(mode="frames", profile=parse_profile("constant", rate=rate,
                                                           duration_s=duration),
                      devices=devices, processes=2)
    out = tmp / uuid.uuid4().hex[:8]
    cfg = LoadtestConfig(load=load, out_dir=out, progress=False, **kw)
    t0 = time.perf_counter()
    report = run_loadtest(cfg)
    print(f"  loadtest {rate:,.0f}/s x {duration:g} s {kw}: aggregated "
          f"{report.get('aggregated_readings_per_s', 0):,.0f}/s, lost {report['lost']} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return report


def hub_raw_lines(devices: int, n_lines: int, batch_lines: int = 5_000) -> list[bytes]:
    """Raw line protocol exactly as the hub renders it (its registry, its renderer) for
    ``devices`` real devices, one reading per line (each has its own timestamp, so none
    merge), in ``batch_lines`` bodies."""
    from citybrain.frame import decode_frame, encode_frame
    from citybrain.loadtest.devices import DevicePlan
    from hub.lineproto import render_merged
    from hub.series import SeriesRegistry
    from seeds.city import City
    plan = DevicePlan.build(devices, None)
    city = City(plan.scale)
    reg = SeriesRegistry(city)
    series_parts = []
    for district in plan.districts():
        ids = plan.device_ids(district)
        systems = [i.rsplit("-", 1)[0] for i in ids]
        n = len(ids)
        frame = decode_frame(encode_frame(district, 0, 0, list(ids), systems, ["battery"],
                                          np.zeros(n), np.zeros(n), np.zeros(n), np.arange(n),
                                          np.zeros(n)))
        s = reg.resolve(frame).series
        series_parts.append(s[s >= 0])
    series = np.concatenate(series_parts)
    idx = np.arange(n_lines) % len(series)
    ts = 1_763_712_000_000_000_000 + np.arange(n_lines, dtype=np.int64) * 1_000_000
    values = np.round(np.random.default_rng(1).uniform(1, 90, n_lines), 2)
    body, _ = render_merged(reg.raw_prefixes, series[idx], values, ts)
    lines = body.split(b"\n")
    return [b"\n".join(lines[i:i + batch_lines]) for i in range(0, n_lines, batch_lines)]


def influx_limit(influx: InfluxV1Server, devices: int, n_lines: int) -> float:
    from bench.peers.influx_raw import write_batches
    batches = hub_raw_lines(devices, n_lines)
    db = f"limit_{uuid.uuid4().hex[:6]}"
    influx.create_database(db)
    seconds, errors = write_batches(influx, db, batches, 2)
    if errors:
        print(f"  influxd refused {errors} batches", flush=True)
    return n_lines / seconds


def bench_hub_load(quick: bool) -> dict[str, float | None]:
    """See the module docstring. Quick (CI): short runs at modest rates, about a minute."""
    dur = 6.0 if quick else 20.0
    flat_out = 300_000.0 if quick else 2_500_000.0
    out: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="citybrain-hubload-") as tmp_s:
        tmp = Path(tmp_s)
        r1 = _run(tmp, flat_out, dur, raw_every=100)
        rate = float(r1.get("aggregated_readings_per_s", 0.0))
        out.update({"e2e_readings_per_s": rate, "e2e_offered_readings_per_s": flat_out,
                    "e2e_published_readings_per_s": float(r1["load"]["readings_per_s"]),
                    "e2e_lost": float(r1["lost"]),
                    "hub_cpu_us_per_reading": r1.get("hub_cpu_us_per_reading"),
                    "e2e_hub_peak_rss_mb": r1["hub_peak_rss_bytes"] / 2**20})
        half = _run(tmp, max(rate / 2, 10_000.0), dur, raw_every=100)
        lat = half.get("latency") or {}
        out.update({
            "half_load_readings_per_s": half.get("aggregated_readings_per_s"),
            "half_load_lost": float(half["lost"]),
            "half_load_p99_aggregated_s": (lat.get("aggregated") or {}).get("p99"),
            "half_load_p99_stored_s": (lat.get("stored") or {}).get("p99"),
            "half_load_publish_lag_p99_s": half["load"]["publish_lag"]["p99"]})
        with InfluxV1Server(tmp / "influxd") as influx:
            out["influx_raw_hub_lines_per_s"] = influx_limit(
                influx, DEVICES, 200_000 if quick else 1_000_000)
            raw = _run(tmp, 100_000.0 if quick else 400_000.0, dur, raw_every=1,
                       analytics=False, influx_url=influx.url,
                       influx_db=f"raw_{uuid.uuid4().hex[:6]}")
        out["hub_raw_store_points_per_s"] = raw.get("raw_points_per_s")
        out["hub_raw_store_lost"] = float(raw["lost"])
        limit = out["influx_raw_hub_lines_per_s"]
        out["hub_raw_store_vs_influx_raw"] = (
            (out["hub_raw_store_points_per_s"] or 0.0) / limit if limit else None)
        two = _run(tmp, flat_out, dur, raw_every=100, hubs=2, partitions=12)
        out["hub_scaling_2_hubs_readings_per_s"] = two.get("aggregated_readings_per_s")
        out["hub_scaling_1_to_2"] = (
            float(two.get("aggregated_readings_per_s") or 0.0) / rate if rate else None)
        out["hub_scaling_lost"] = float(two["lost"])
        if not quick:
            big = _run(tmp, 300_000.0, 40.0, raw_every=100, devices=1_000_000)
            out["hub_rss_mb_1m_devices"] = big["hub_peak_rss_bytes"] / 2**20
            out["hub_1m_devices_lost"] = float(big["lost"])
    return out
