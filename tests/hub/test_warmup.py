"""The warm-up loads every kernel the data path calls, and leaves nothing behind."""

from __future__ import annotations

import itertools
import sys
import time

import pytest
from numba.core.registry import CPUDispatcher

from hub import warmup
from hub.service import Hub, HubConfig
from hub.sinks import InfluxConfig
from hub.warmup import CountingSink, warm_up
from seeds.city import City
from tests.test_cluster import city_frames


def loaded_kernels() -> dict[str, int]:
    """Compiled overloads of every numba kernel of the hub and its shared modules."""
    out = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith(("hub.", "citybrain.")):
            continue
        for attr, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher):
                out[f"{name}.{attr}"] = len(obj.overloads)
    return out


def assert_no_kernel_loaded_since(before: dict[str, int]) -> None:
    after = loaded_kernels()
    new = {k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)}
    assert not new, f"kernels first called after the warm-up: {new}"


def test_after_the_warm_up_a_hub_loads_no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warmup, "_warmed", False)
    city = City(1.0)
    cfg = HubConfig(client_id="warm", influx=InfluxConfig(url="http://127.0.0.1:9"))
    assert warm_up(city, cfg) > 0.0
    assert warm_up(city, cfg) == 0.0  # once per process
    before = loaded_kernels()
    sink = CountingSink()
    hub = Hub(cfg, city, sink=sink)
    hub.writer.start()
    frames = [frame for _, frame, _ in city_frames()]
    for i in range(0, len(frames), 50):
        hub.handle_frames(frames[i:i + 50])
        hub.tick(time.monotonic())
    hub.emit(hub.windows.close_all())
    assert hub.writer.stop(30) == 0
    assert sink.lines > 100_000 and hub.counters.get("analytics_errors") == 0
    assert_no_kernel_loaded_since(before)


def test_one_frame_batches_load_no_kernel_after_the_warm_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of one frame (a tick or a quiet WAL ends the batch after one frame) hands the
    kernels that frame's columns: read-only views of its payload, which numba types apart
    from the writeable arrays of the warm-up's joined batches. The batch copies them, so
    the warm-up's kernels serve it too."""
    monkeypatch.setattr(warmup, "_warmed", False)
    city = City(1.0)
    cfg = HubConfig(client_id="warm1", influx=InfluxConfig(url="http://127.0.0.1:9"))
    warm_up(city, cfg)
    before = loaded_kernels()
    sink = CountingSink()
    hub = Hub(cfg, city, sink=sink)
    hub.writer.start()
    for _, frame, _ in itertools.islice(city_frames(), 120):
        hub.handle_frame(frame)  # not coalescing: aggregated at once, one frame per batch
        hub.tick(time.monotonic())
    hub.emit(hub.windows.close_all())
    assert hub.writer.stop(30) == 0
    assert sink.lines > 0 and hub.counters.get("analytics_errors") == 0
    assert_no_kernel_loaded_since(before)
