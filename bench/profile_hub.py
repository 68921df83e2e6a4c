"""Profile the hub's frame path: frames of 5,000 readings through ``Hub.handle_frame`` into a
real influxd, with and without analytics; prints CPU per reading and the top functions.
``group`` > 1 hands the frames over ``group`` at a time (``Hub.handle_frames``), as the
processing loop does with frames waiting in the WAL under load.

    .venv/bin/python -m bench.profile_hub

CPU is the whole process (processing and writer threads; no MQTT: frames are handed to the
hub directly), over 180 frames after 20 warm-up frames.
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from citybrain.localstack import InfluxV1Server
from citybrain.memory import keep_freed_memory
from edge.batcher import FrameBuilder
from hub.service import Hub, HubConfig
from hub.sinks import InfluxConfig, ensure_target_with_retry
from seeds.city import City, catalogue_by_kind

FRAMES = 200
WARM = 20
PER_FRAME = 5000


def make_frames(district: str = "500103") -> list[bytes]:
    """City-like frames: random devices of one district, every measurement of each."""
    devices = list(City().devices({district}))
    rng = np.random.default_rng(1)
    t0 = time.time() - 3600
    frames, seq = [], 0
    for f in range(FRAMES):
        builder = FrameBuilder(district, max_readings=10**6)
        n = 0
        while n < PER_FRAME:
            d = devices[int(rng.integers(len(devices)))]
            for m in catalogue_by_kind()[d.kind].values():
                builder.add(d.device_id, d.system.system_id, seq, t0 + f * 2 + n * 1e-4, m.name,
                            float(m.min + 1))
                n += 1
            seq += 1
        frames.append(builder.seal(f)[0])  # distinct ids: the hub drops re-sent frames
    return frames


def profile(influx_url: str, frames: list[bytes], analytics: bool, raw_every: int = 1,
            group: int = 1) -> float:
    """Returns µs of hub CPU per reading."""
    hub = Hub(HubConfig(client_id=f"profile-{uuid.uuid4().hex[:6]}", analytics=analytics,
                        raw_every=raw_every,
                        influx=InfluxConfig(url=influx_url, database=f"profile{int(analytics)}")))
    ensure_target_with_retry(hub.sink)
    hub.writer.start()
    for frame in frames[:WARM]:
        hub.handle_frame(frame)
    n0 = int(hub.counters.snapshot().get("aggregated_readings", 0))
    prof = cProfile.Profile()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    prof.enable()
    for i in range(WARM, len(frames), group):
        hub.handle_frames(frames[i:i + group])
        hub.tick(time.monotonic())
    prof.disable()
    rate_wall = time.perf_counter() - wall0
    while hub.writer.queued_lines:  # the writer thread's CPU counts too
        time.sleep(0.01)
    n = int(hub.counters.snapshot().get("aggregated_readings", 0)) - n0
    assert n >= (len(frames) - WARM) * PER_FRAME, "frames were dropped: not measuring ingest"
    cpu_us = (time.process_time() - cpu0) / n * 1e6
    rate = n / rate_wall
    print(f"analytics={analytics} raw_every={raw_every} group={group}: "
          f"{cpu_us:.2f} µs CPU per reading, "
          f"{rate:,.0f} readings/s through the processing thread")
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    hub.writer.stop(60)
    return cpu_us


def main() -> None:
    keep_freed_memory()
    frames = make_frames()
    with tempfile.TemporaryDirectory() as tmp, InfluxV1Server(Path(tmp)) as influx:
        for analytics, raw_every in ((True, 1), (False, 1), (True, 100), (False, 100)):
            for group in (1, 16):
                profile(influx.url, frames, analytics, raw_every, group)


if __name__ == "__main__":
    main()
