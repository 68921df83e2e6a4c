"""Load the hub's compiled kernels before the first frame arrives.

numba compiles each kernel — or loads it from its on-disk cache — on its first call. The
hub has some dozens of them, ≈ 1.5 s of CPU in all (measured on the peers' load: the hub
spent 1.55 s on first calls against 1.2 µs per reading after them). Without a warm-up that
time lands on the first frames: a latency spike for operators, and CPU counted against the
first readings. ``warm_up`` pushes synthetic frames — the first device of every system
of the city, every measurement of its kind, over two hours of device time so that windows
of every resolution close — through a throwaway hub that is never started: no MQTT, no
InfluxDB (its sink only counts), a temporary WAL. Nothing is stored, published or kept;
only the kernels stay loaded, for every hub of the process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from citybrain.frame import encode_frame
from hub.sinks import InfluxConfig
from seeds.city import City, catalogue_by_kind

if TYPE_CHECKING:
    from hub.service import HubConfig

log = logging.getLogger("citybrain.hub")

#: Device times of the synthetic rounds, s from the first: some 10 s and 1 min windows,
#: then two hours on, so that windows of every resolution close with readings in them.
_ROUND_OFFSETS_S = (0, 5, 10, 20, 30, 60, 90, 120, 3700, 7300)
#: The round (at 5 s) whose every other reading is 10 s later: its batch spans two 10 s
#: windows, which takes the window kernel's general path (one window: its fast path).
_STRADDLE_ROUND = 1
_warmed = False


class CountingSink:
    """An ``InfluxSink`` that stores nothing: it counts what it is given."""

    def __init__(self) -> None:
        self.config = InfluxConfig()
        self.lines = 0

    def ensure_target(self) -> None:
        pass

    def write(self, body: bytes) -> None:
        self.lines += body.count(b"\n")

    def close(self) -> None:
        pass


def synthetic_frames(city: City, end_s: float) -> list[bytes]:
    """One frame per round and district: the first device of every system, every
    measurement of its kind at mid-range, at ``_ROUND_OFFSETS_S`` ending at ``end_s``
    (every other reading of ``_STRADDLE_ROUND`` 10 s later)."""
    per_district: dict[str, tuple[list[str], list[str], list[str], list[float]]] = {}
    for system in city.systems:
        device = next(iter(city.devices_of(system)), None)
        if device is None:
            continue
        devices, systems, names, values = per_district.setdefault(
            system.district_code, ([], [], [], []))
        for m in catalogue_by_kind()[system.kind].values():
            devices.append(device.device_id)
            systems.append(system.system_id)
            names.append(m.name)
            values.append(float(m.min + (m.max - m.min) / 2))
    tables = []  # per district: what every round's frame shares
    for code, (devices, systems, names, values) in per_district.items():
        uniq_dev = list(dict.fromkeys(devices))
        uniq_names = sorted(set(names))
        tables.append((code, uniq_dev, [systems[devices.index(d)] for d in uniq_dev],
                       uniq_names, np.array(values),
                       np.array([uniq_dev.index(d) for d in devices]),
                       np.array([uniq_names.index(x) for x in names])))
    frames = []
    t0 = end_s - _ROUND_OFFSETS_S[-1]
    for r, offset in enumerate(_ROUND_OFFSETS_S):
        for k, (code, uniq_dev, dev_systems, uniq_names, value, dev_idx, name_idx) in \
                enumerate(tables):
            n = len(value)
            ts = np.full(n, int((t0 + offset) * 1e9), dtype=np.int64)
            if r == _STRADDLE_ROUND:  # a window on: a batch across two windows
                ts[1::2] += 10 * 10**9
            frames.append(encode_frame(code, (1 << 32) | (r * len(tables) + k), 0, uniq_dev,
                                       dev_systems, uniq_names, ts, value, np.full(n, r),
                                       dev_idx, name_idx))
    return frames


def warm_up(city: City, cfg: HubConfig) -> float:
    """Call every kernel of the hub's data path once (first call in the process only);
    returns the seconds of CPU it took."""
    global _warmed
    if _warmed:
        return 0.0
    from hub.service import Hub  # the throwaway hub; service imports this module
    cpu0 = time.process_time()
    hub = Hub(replace(cfg, http_port=None, stats_path=None, wal_dir=None, wal_fsync=False,
                      write_connections=1), city, sink=CountingSink())
    hub.writer.start()
    try:
        frames = synthetic_frames(city, time.time() - 86_400)
        per_round = len(frames) // len(_ROUND_OFFSETS_S)  # one frame per district
        for i in range(0, len(frames), per_round):
            hub.handle_frames(frames[i:i + per_round])
            hub.tick(time.monotonic())
        clock = hub.event_clock_ns or 0
        hub.emit(hub.windows.close_all())
        if hub.analytics is not None:
            hub.minute_snapshots(clock)
    finally:
        hub.writer.stop(10.0)
        hub.wal.close()
        if hub._tmp_wal is not None:
            hub._tmp_wal.cleanup()
    _warmed = True
    spent = time.process_time() - cpu0
    log.info("kernels loaded in %.2f s of CPU", spent)
    return spent
