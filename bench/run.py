"""``citybrain bench``: kernel throughput against numpy on the same data, and end to end.

Results are JSON (one flat object of numbers plus a ``machine`` description). Timings are
best-of-N wall-clock on this machine; ratios are computed in the same run, on the same data,
so they stay meaningful on a busy or slower machine.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from citybrain.stats import write_json_atomic


def machine() -> dict[str, Any]:
    import numba
    return {"python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "cpus": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine()}


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def city_like_readings(n: int, n_series: int, seed: int = 7) -> tuple[np.ndarray, ...]:
    """Readings as the hub sees them: series cycling in order, device time advancing."""
    rng = np.random.default_rng(seed)
    series = (np.arange(n, dtype=np.int64) % n_series)
    ts = 1_763_712_000_000_000_000 + (np.arange(n, dtype=np.int64) // n_series) * 1_000_000_000
    ts += rng.integers(0, 1_000_000_000, n)
    value = rng.normal(50.0, 15.0, n)
    return series, ts, value


def bench_windows(quick: bool) -> dict[str, float]:
    from bench.reference import numpy_window_aggregate, pandas_window_aggregate
    from hub.window import WindowAggregator, aggregate_batch
    n, n_series = (1_000_000, 10_000) if quick else (10_000_000, 100_000)
    series, ts, value = city_like_readings(n, n_series)
    window_ns = 10_000_000_000
    aggregate_batch(series[:1000], ts[:1000], value[:1000], window_ns)  # compile (cached)
    repeat = 3
    t_kernel = best_of(lambda: aggregate_batch(series, ts, value, window_ns), repeat)
    t_numpy = best_of(lambda: numpy_window_aggregate(series, ts, value, window_ns), repeat)
    t_pandas = best_of(lambda: pandas_window_aggregate(series, ts, value, window_ns), repeat)

    def streaming() -> None:
        agg = WindowAggregator(window_ns, n_slots=8, capacity=n_series)
        step = 50_000
        for i in range(0, n, step):
            agg.add(series[i:i + step], ts[i:i + step], value[i:i + step])
        agg.close_all()
    streaming()
    t_stream = best_of(streaming, repeat)
    return {
        "window_bench_readings": n, "window_bench_series": n_series,
        "kernel_window_readings_per_s": n / t_kernel,
        "numpy_reference_readings_per_s": n / t_numpy,
        "pandas_groupby_readings_per_s": n / t_pandas,
        "kernel_vs_numpy": t_numpy / t_kernel,
        "kernel_vs_pandas": t_pandas / t_kernel,
        "streaming_window_readings_per_s": n / t_stream,
    }


def bench_lineproto(quick: bool) -> dict[str, float]:
    from hub.lineproto import PrefixTable, render_single, series_prefix
    n, n_series = (200_000, 2_000) if quick else (2_000_000, 20_000)
    table = PrefixTable()
    for i in range(n_series):
        table.add(series_prefix("raw_air", {"device": f"500103-air-01-{i:05d}",
                                            "district": "500103", "system": "500103-air-01"},
                                "pm2_5"))
    series, ts, value = city_like_readings(n, n_series)
    render_single(table, series[:10], value[:10], ts[:10])
    body: list[bytes] = []
    t = best_of(lambda: body.append(render_single(table, series, value, ts)[0]), 3)
    return {"lineproto_lines_per_s": n / t, "lineproto_mb_per_s": len(body[-1]) / t / 1e6}


def bench_frame_codec(quick: bool) -> dict[str, float]:
    from citybrain.frame import decode_frame, encode_frame
    n = 5000
    series, ts, value = city_like_readings(n, 600)
    rounds = 200 if quick else 2000
    frame = encode_frame("500103", 0, 0, [f"d{i}" for i in range(600)], ["s"] * 600, ["pm2_5"],
                         ts, np.round(value, 1), np.zeros(n), series, np.zeros(n))
    t = best_of(lambda: [decode_frame(frame) for _ in range(rounds)], 3)
    return {"frame_decode_readings_per_s": n * rounds / t,
            "frame_bytes_per_reading": len(frame) / n}


def bench_e2e(quick: bool) -> dict[str, float]:
    """sim → Mosquitto → edge → hub → influxd on this machine, all real processes."""
    from citybrain.up import CityRun, UpConfig
    duration = 12.0 if quick else 40.0
    with tempfile.TemporaryDirectory(prefix="citybrain-bench-") as tmp:
        cfg = UpConfig(duration_s=duration, seed=1, scale=1.0, speed=120.0 if quick else 600.0,
                       var_dir=Path(tmp), edge_procs=2, faults="default")
        run = CityRun(cfg)
        try:
            run.start_services()
            run.start_tiers()
            warm = 3.0 if quick else 8.0
            time.sleep(warm)
            s0, t0 = int(run.hub.stats().get("stored_raw", 0)), time.monotonic()
            time.sleep(duration - warm)
            s1, t1 = int(run.hub.stats().get("stored_raw", 0)), time.monotonic()
            report = run.drain_and_stop()
        finally:
            run.stop_everything()
    hub = report["hub"]
    hub_cpu = float(hub.get("cpu_s", 0.0))
    return {"e2e_readings_per_s": (s1 - s0) / (t1 - t0),
            "e2e_published": report["published"], "e2e_stored_raw": report["stored_raw"],
            "e2e_lost": report["lost"],
            "hub_cpu_us_per_reading": (hub_cpu * 1e6 / report["hub_received"]
                                       if report["hub_received"] and hub_cpu else 0.0)}


def run_bench(out: Path, quick: bool = False) -> int:
    results: dict[str, Any] = {"machine": machine(), "quick": quick,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for part in (bench_windows, bench_lineproto, bench_frame_codec, bench_e2e):
        t0 = time.perf_counter()
        results.update(part(quick))
        results[f"{part.__name__}_s"] = round(time.perf_counter() - t0, 2)
        print(f"{part.__name__}: done in {results[f'{part.__name__}_s']} s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, results)
    for k, v in results.items():
        if isinstance(v, float):
            print(f"  {k:40s} {v:,.1f}")
    print(f"results written to {out}")
    return 0
