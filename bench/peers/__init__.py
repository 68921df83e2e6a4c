"""Peers, side by side: what people use today, measured on the same load as citybrain.

One run starts its own Mosquitto and influxd (``citybrain.localstack``, free loopback ports,
temporary directories) and measures, one after the other, on the same load (``load``: N
air-station messages of three readings, published by two processes, same QoS):

* ``raw_subscriber`` — a paho subscriber that only counts: the MQTT limit;
* ``naive_bridge`` — the small paho → InfluxDB bridge a user would write, batched (5,000
  lines or 1 s) and writing once per message;
* ``nodered`` — Node-RED 4.1 with node-red-contrib-influxdb 0.7 (mqtt in → json → function →
  join → influxdb batch), when Node.js is present (quick mode: only if already installed);
* ``influx_raw`` — influxd's own write rate for pre-built line protocol, 5,000-line batches
  over 1 and 2 connections: the storage limit;
* ``citybrain`` — citybrain itself: its real edge (every district) and hub (analytics on,
  its default) as child processes (``citybrain_peer``), after one unmeasured warm-up run
  (the hub's numba kernels are compiled on first use and cached on disk); figures
  ``citybrain_peer_*``, and the ratios to the others measured in the same run
  (``citybrain_vs_*``).

Each consumer is its own process, so its CPU time per reading is its own (citybrain's is
its edge's plus its hub's). Rates are readings landed (counted in InfluxDB afterwards) per
second, from the first publish to the last reading landed; loss is published − landed. See
``bench/README.md`` ("Peers, side by side").
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.peers.citybrain_peer import CitybrainResult, run_citybrain
from bench.peers.common import PeerResult
from bench.peers.influx_raw import RawWriteResult, run_influx_raw
from bench.peers.load import READINGS_PER_MESSAGE
from bench.peers.naive_bridge import run_naive_bridge
from bench.peers.nodered import run_nodered, unavailable_reason
from bench.peers.raw_subscriber import run_raw_subscriber
from citybrain.localstack import HOST, InfluxV1Server, MosquittoServer

__all__ = ["Figures", "PeerResult", "bench_peers", "citybrain_ratios", "combine"]

#: Flat bench figures: numbers, ``None`` for a peer that could not run, and its reason (str).
Figures = dict[str, float | str | None]

QUICK_MESSAGES, FULL_MESSAGES = 3_000, 34_000          # ×3 readings each
QUICK_RAW_POINTS, FULL_RAW_POINTS = 50_000, 500_000    # influx_raw lines (×3 readings)
QUICK_PASSES, FULL_PASSES = 1, 2
QOS = 1
PUBLISHERS = 2
#: citybrain's warm-up run before the passes (not measured): the hub's numba kernels compile
#: on first use and are cached on disk, so a first run after a checkout or an edit of hub/
#: would otherwise count seconds of compilation as the load's CPU.
CITYBRAIN_WARMUP_MESSAGES = 500


def bench_peers(quick: bool, qos: int = QOS, messages: int | None = None,
                publishers: int = PUBLISHERS, passes: int | None = None) -> Figures:
    """Run every peer on one load and return flat figures (see the module docstring).

    ``quick`` (CI): 3,000 messages, 50k raw points, one pass, Node-RED only if already
    installed — about 40 s. Full: 34,000 messages (102k readings, as in the reference
    measurements), 500k raw points, two passes, Node-RED installed with ``npm ci`` if missing
    (an unreachable registry gives ``nodered_readings_per_s: None`` and a reason, not a
    failure) — about 5 minutes on 2 cores. With several passes, as in ``bench.run``: the best
    rate, the lowest CPU per reading, and the worst loss of any pass.
    """
    n = messages or (QUICK_MESSAGES if quick else FULL_MESSAGES)
    passes = passes or (QUICK_PASSES if quick else FULL_PASSES)
    out: Figures = {"peers_messages": float(n), "peers_readings": float(n * READINGS_PER_MESSAGE),
                    "peers_qos": float(qos), "peers_publishers": float(publishers),
                    "peers_passes": float(passes)}
    with tempfile.TemporaryDirectory(prefix="citybrain-peers-") as tmp:
        mosq = MosquittoServer(Path(tmp) / "mosquitto")
        influx = InfluxV1Server(Path(tmp) / "influxd")
        mosq.start()
        try:
            influx.start()
            try:
                out.update(_run_all(mosq, influx, n, qos, publishers, passes, quick,
                                    Path(tmp)))
            finally:
                influx.stop()
        finally:
            mosq.stop()
    return out


def combine(runs: list[PeerResult]) -> PeerResult:
    """Several passes of one peer: best rate, lowest CPU per reading, worst loss. A
    subclass's own fields (citybrain's CPU split) come from the pass with the lowest CPU,
    so that they add up to its ``cpu_us_per_reading``."""
    cpus = [r.cpu_us_per_reading for r in runs if r.cpu_us_per_reading is not None]
    cheapest = min(runs, key=lambda r: (r.cpu_us_per_reading is None,
                                        r.cpu_us_per_reading or 0.0))
    return dataclasses.replace(cheapest, name=runs[0].name,
                               published_readings=runs[0].published_readings,
                               landed_readings=min(r.landed_readings for r in runs),
                               readings_per_s=max(r.readings_per_s for r in runs),
                               publish_msgs_per_s=max(r.publish_msgs_per_s for r in runs),
                               cpu_us_per_reading=min(cpus) if cpus else None)


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    return a / b if a is not None and b else None


def citybrain_ratios(results: dict[str, PeerResult]) -> Figures:
    """citybrain against the peers of the same run (None when a side did not run):
    ``citybrain_vs_naive_bridge`` / ``_vs_nodered`` — readings/s ratios (> 1: citybrain is
    faster); ``citybrain_vs_raw_subscriber`` — citybrain's readings/s over the counting
    subscriber's: the share of the MQTT limit the per-device message path reaches;
    ``citybrain_cpu_vs_naive_bridge`` — the bridge's CPU per reading over citybrain's
    (> 1: citybrain spends less CPU per reading)."""
    cb, bridge = results.get("citybrain"), results.get("naive_bridge")
    nodered, raw = results.get("nodered"), results.get("raw_subscriber")

    def rate(r: PeerResult | None) -> float | None:
        return r.readings_per_s if r is not None else None

    return {
        "citybrain_vs_naive_bridge": _ratio(rate(cb), rate(bridge)),
        "citybrain_vs_nodered": _ratio(rate(cb), rate(nodered)),
        "citybrain_vs_raw_subscriber": _ratio(rate(cb), rate(raw)),
        "citybrain_cpu_vs_naive_bridge": _ratio(
            bridge.cpu_us_per_reading if bridge is not None else None,
            cb.cpu_us_per_reading if cb is not None else None),
    }


def _run_all(mosq: MosquittoServer, influx: InfluxV1Server, n: int, qos: int, publishers: int,
             passes: int, quick: bool, log_dir: Path) -> Figures:
    """Pass after pass of every peer in turn (not all passes of one peer in a row), so that on
    a shared machine each peer meets the same mix of quiet and busy moments."""
    out: Figures = {}
    runs: dict[str, list[PeerResult]] = {}
    raw_writes: list[RawWriteResult] = []
    seconds: dict[str, float] = {}
    reason = unavailable_reason(install=not quick)
    cb_reason: str | None = None
    points = QUICK_RAW_POINTS if quick else FULL_RAW_POINTS

    def timed(key: str, fn: Callable[..., PeerResult], *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        runs.setdefault(key, []).append(fn(*args, **kwargs))
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        run_citybrain(HOST, mosq.port, influx, "peers_citybrain_warmup",
                      CITYBRAIN_WARMUP_MESSAGES, qos, publishers, log_dir=log_dir)
    except (RuntimeError, OSError) as exc:
        cb_reason = f"citybrain warm-up failed: {exc}"[:2000]
    seconds["citybrain_warmup"] = time.perf_counter() - t0
    for i in range(passes):
        print(f"  peers: pass {i + 1} of {passes}", flush=True)
        timed("raw_subscriber", run_raw_subscriber, HOST, mosq.port, n, qos, publishers,
              log_dir=log_dir)
        for mode, key in (("batched", "naive_bridge"),
                          ("per-message", "naive_bridge_per_message")):
            timed(key, run_naive_bridge, HOST, mosq.port, influx, f"peers_{key}_{i}", n, qos,
                  mode, publishers, log_dir=log_dir)
        if reason is None:
            try:
                timed("nodered", run_nodered, HOST, mosq.port, influx, f"peers_nodered_{i}", n,
                      qos, publishers)
            except (RuntimeError, OSError) as exc:  # a peer that cannot run is a result
                reason = f"Node-RED run failed: {exc}"[:2000]
                runs.pop("nodered", None)
        if cb_reason is None:
            try:
                timed("citybrain", run_citybrain, HOST, mosq.port, influx,
                      f"peers_citybrain_{i}", n, qos, publishers, log_dir=log_dir)
            except (RuntimeError, OSError) as exc:  # reported, never hidden: figures None
                cb_reason = f"citybrain run failed: {exc}"[:2000]
                runs.pop("citybrain", None)
        t0 = time.perf_counter()
        raw_writes += run_influx_raw(influx, f"peers_influx_raw_{i}", points)
        seconds["influx_raw"] = seconds.get("influx_raw", 0.0) + time.perf_counter() - t0

    combined = {key: combine(results) for key, results in runs.items()}
    for key, res in combined.items():
        if key == "raw_subscriber":
            out["raw_subscriber_msgs_per_s"] = res.readings_per_s / READINGS_PER_MESSAGE
            out["raw_subscriber_lost_messages"] = float(res.lost_readings // READINGS_PER_MESSAGE)
            out["raw_subscriber_cpu_us_per_reading"] = res.cpu_us_per_reading
            out["raw_subscriber_publish_msgs_per_s"] = res.publish_msgs_per_s
        elif key == "citybrain":
            out.update(res.as_figures("citybrain_peer"))
            out["citybrain_peer_rejected_readings"] = float(max(
                r.rejected_readings for r in runs[key] if isinstance(r, CitybrainResult)))
        else:
            out.update(res.as_figures(key))
    out.update(citybrain_ratios(combined))
    if cb_reason is not None:
        print(f"  peers: {cb_reason}", flush=True)
        out.update({"citybrain_peer_readings_per_s": None,
                    "citybrain_peer_cpu_us_per_reading": None,
                    "citybrain_peer_hub_cpu_us_per_reading": None,
                    "citybrain_peer_edge_cpu_us_per_reading": None,
                    "citybrain_peer_lost_readings": None,
                    "citybrain_peer_failed_reason": cb_reason})
    if reason is not None:
        print(f"  peers: Node-RED skipped: {reason}", flush=True)
        out.update({"nodered_readings_per_s": None, "nodered_cpu_us_per_reading": None,
                    "nodered_lost_readings": None, "nodered_skipped_reason": reason})

    for c in sorted({r.connections for r in raw_writes}):
        same = [r for r in raw_writes if r.connections == c]
        out[f"influx_raw_{c}conn_points_per_s"] = max(r.points_per_s for r in same)
        out[f"influx_raw_{c}conn_lost_readings"] = float(
            same[0].points * READINGS_PER_MESSAGE - min(r.landed_readings for r in same))
    best = max(raw_writes, key=lambda r: r.points_per_s)
    out["influx_raw_points_per_s"] = best.points_per_s
    out["influx_raw_readings_per_s"] = best.readings_per_s

    out["load_publish_msgs_per_s"] = max(r.publish_msgs_per_s for rs in runs.values()
                                         for r in rs)
    for key, s in seconds.items():
        out[f"peers_{key}_s"] = round(s, 2)
    return out
