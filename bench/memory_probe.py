"""Where a hub's memory goes with a million devices (issue 6's "hub < 1 GB" floor).

Frames of ``--devices`` load-test devices (``citybrain.loadtest.devices.DevicePlan``: real
device ids of ``City(scale)``, every numeric measurement of each, visited round-robin) are
handed to one ``Hub`` in this process (``Hub.handle_frames``, every analytics module on, raw
storage 1 in 100, no MQTT) at ``--rate`` readings per simulated second, one batch per
simulated second, until each series has reported ``--cycles`` times. The hub's writes go to
an HTTP endpoint in this process that reads each body and keeps nothing: the probe measures
the hub, not a database creating 4.5M new series (influxd and VictoriaMetrics on the 2-core
dev VM both fall minutes behind at that; the load test at a million devices shows it).

Prints RSS (``/proc/self/status``) and peak (``getrusage``) as it goes, then a JSON summary
and the largest numpy arrays reachable from the hub with their size. The process's own
load generator (plan, frame builders) is measured before the hub starts
(``before_hub_mb``): the hub's share is the rest.

    .venv/bin/python -m bench.memory_probe --devices 1000000 --rate 15000 --cycles 1.2
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import os
import resource
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from citybrain.loadtest.devices import DevicePlan
from citybrain.memory import keep_freed_memory
from citybrain.stats import rss_bytes
from hub.service import Hub, HubConfig
from hub.sinks import InfluxConfig, ensure_target_with_retry

_EMPTY_RESULT = b'{"results":[{"statement_id":0}]}'


class _DiscardingInflux(BaseHTTPRequestHandler):
    """Answers the InfluxDB 1.x endpoints the hub uses (/ping, /query, /write): reads every
    body, stores nothing."""

    def _reply(self, code: int, body: bytes) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        ping = self.path.startswith("/ping")
        self._reply(204 if ping else 200, b"" if ping else _EMPTY_RESULT)

    def do_POST(self) -> None:
        write = self.path.startswith("/write")
        self._reply(204 if write else 200, b"" if write else _EMPTY_RESULT)

    def log_message(self, format: str, *args: Any) -> None:
        return


def rss_mb() -> float:
    return rss_bytes(os.getpid()) / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_after_trim_mb() -> float:
    """RSS once glibc has returned the free memory it keeps (``malloc_trim(0)``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    return rss_mb()


def resident_bytes(a: np.ndarray) -> int | None:
    """Bytes of ``a``'s pages that hold memory of this process (``/proc/self/pagemap``:
    present and mapped only here), None where that cannot be read. Pages never written
    are address space, not memory; pages only ever read map the kernel's shared zero page,
    which ``mincore`` would count as resident, and are left out here."""
    page = os.sysconf("SC_PAGE_SIZE")
    first = a.ctypes.data // page
    last = (a.ctypes.data + max(a.nbytes, 1) - 1) // page
    try:
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(first * 8)
            raw = f.read((last - first + 1) * 8)
    except OSError:
        return None
    entries = np.frombuffer(raw, dtype=np.uint64)
    own = (entries >> np.uint64(63)) & (entries >> np.uint64(56)) & np.uint64(1)
    return int(np.count_nonzero(own)) * page


def largest_arrays(root: object, min_bytes: int = 16 << 20
                   ) -> list[tuple[str, int, np.ndarray]]:
    """(attribute path, bytes, array) of the numpy arrays reachable from ``root`` through object
    attributes, lists and dicts (each buffer once), largest first. Sizes are allocated
    bytes: pages never written are not resident (``resident_bytes`` says what is)."""
    seen: dict[int, tuple[str, int, np.ndarray]] = {}

    def walk(obj: object, path: str, depth: int) -> None:
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in seen and base.nbytes >= min_bytes:
                seen[id(base)] = (path, base.nbytes, base)
            return
        if depth > 6:
            return
        if isinstance(obj, dict):
            items = [(str(k), v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            items = [(str(i), v) for i, v in enumerate(obj)]
        elif type(obj).__module__.split(".")[0] in ("hub", "citybrain"):
            items = list(getattr(obj, "__dict__", {}).items())
            items += [(k, getattr(obj, k)) for cls in type(obj).__mro__
                      for k in getattr(cls, "__slots__", ()) if hasattr(obj, k)]
        else:
            return
        for k, v in items:
            walk(v, f"{path}.{k}", depth + 1)

    walk(root, "hub", 0)
    return sorted(seen.values(), key=lambda x: -x[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=15_000.0,
                    help="readings per simulated second (default 15000: each series about "
                         "every 5 minutes at a million devices)")
    ap.add_argument("--cycles", type=float, default=1.2,
                    help="readings per series over the run (>= 1: every series seen)")
    ap.add_argument("--store-fine-windows", choices=["all", "fast"], default="all",
                    help="the hub's setting of that name (what it sends to InfluxDB is "
                         "summed in the summary: lines and bytes)")
    args = ap.parse_args()
    keep_freed_memory()  # as the hub's CLI does
    plan = DevicePlan.build(args.devices)
    districts = {c: plan.district(c) for c in plan.districts()}
    builders = {c: d.frames for c, d in districts.items()}
    slots = {c: len(d.slots) for c, d in districts.items()}
    total = sum(slots.values())
    before_hub = rss_mb()
    print(f"{plan.devices:,} devices (scale {plan.scale}), {total:,} numeric series; "
          f"load generator {before_hub:.0f} MB", flush=True)
    seconds = int(total * args.cycles / args.rate)
    rng = np.random.default_rng(1)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DiscardingInflux)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hub = Hub(HubConfig(client_id=f"memory-probe-{uuid.uuid4().hex[:6]}", scale=plan.scale,
                        raw_every=100, store_fine_windows=args.store_fine_windows,
                        influx=InfluxConfig(
                            url=f"http://127.0.0.1:{server.server_address[1]}")))
    ensure_target_with_retry(hub.sink)
    hub.writer.start()
    k = dict.fromkeys(districts, 0)
    start_ns = time.time_ns() - (seconds + 60) * 10**9
    wall0 = time.perf_counter()
    seq = 0
    try:
        for sec in range(seconds):
            frames = []
            for c in districts:
                share = slots[c] * args.rate / total
                n = round(share * (sec + 1)) - round(share * sec)
                if n <= 0:
                    continue
                ts = start_ns + sec * 10**9 + np.sort(rng.integers(0, 10**9, n))
                frames.append(builders[c].build(k[c], n, seq, ts, rng, time.time_ns()))
                k[c] += n
                seq += 1
            hub.handle_frames(frames)
            hub.tick(time.monotonic())
            if sec % 60 == 0:
                print(f"  {sec:5d} s simulated: RSS {rss_mb():,.0f} MB, peak {peak_mb():,.0f} MB",
                      flush=True)
        summary = {
            "devices": hub.registry.n_devices, "series": hub.registry.n_series,
            "readings": sum(k.values()), "simulated_s": seconds,
            "aggregated": hub.counters.snapshot().get("aggregated_readings"),
            "wall_s": round(time.perf_counter() - wall0, 1),
            "rss_mb": round(rss_mb()), "peak_rss_mb": round(peak_mb()),
            "before_hub_mb": round(before_hub),
            "heap_trims": hub.counters.get("heap_trims"),
            "heap_trim_ms": round(hub.counters.get("heap_trim_us") / 1e3),
            "agg_lines_sent": hub.counters.get("stored_agg"),
            "raw_lines_sent": hub.counters.get("stored_raw"),
            "mb_sent": round(hub.counters.get("write_bytes") / 2**20)}
        print(json.dumps(summary), flush=True)
        print(f"RSS after malloc_trim(0): {rss_after_trim_mb():,.0f} MB (the rest of RSS is "
              f"freed memory the allocator keeps for reuse, citybrain/memory.py)", flush=True)
        print("  allocated  resident  array")
        for path, nbytes, base in largest_arrays(hub):
            res = resident_bytes(base)
            shown = "?" if res is None else f"{res / 2**20:,.0f}"
            print(f"  {nbytes / 2**20:7,.0f} MB  {shown:>5} MB  {path}")
        every = largest_arrays(hub, min_bytes=1)
        held = sum(resident_bytes(base) or 0 for _, _, base in every)
        print(f"  {sum(n for _, n, _ in every) / 2**20:7,.0f} MB  {held / 2**20:5,.0f} MB  "
              f"all {len(every):,} arrays the hub holds (the rest of its RSS: Python objects, "
              f"compiled code, the allocator's free lists)")
    finally:
        hub.writer.stop(60)
        server.shutdown()


if __name__ == "__main__":
    main()
