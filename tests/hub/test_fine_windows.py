"""``store_fine_windows="fast"`` against a real influxd: a city whose systems all report every
60 s or slower stores no ``agg_10s`` row, and everything else exactly as with "all"."""

from __future__ import annotations

import uuid
from typing import Literal

import pytest

from citybrain.localstack import InfluxV1Server, missing_binaries
from citybrain.up import influx_count
from hub.service import Hub, HubConfig
from hub.sinks import InfluxConfig, ensure_target_with_retry
from tests.test_cluster import city_frames, rows

pytestmark = pytest.mark.skipif("influxd" in missing_binaries(), reason="needs influxd")


def run_hub(influxd: InfluxV1Server, db: str,
            store_fine_windows: Literal["all", "fast"]) -> Hub:
    hub = Hub(HubConfig(client_id=f"hub-{uuid.uuid4().hex[:8]}",
                        store_fine_windows=store_fine_windows,
                        influx=InfluxConfig(url=influxd.url, database=db)))
    ensure_target_with_retry(hub.sink)
    hub.writer.start()
    for _, frame, _ in city_frames():
        hub.handle_frame(frame)
        hub.tick(hub._event_clock_wall)  # the frame's wall time: see test_coalescing
    hub.emit(hub.windows.close_all())
    assert hub.writer.stop(60) == 0
    return hub


def test_fast_stores_no_10s_row_of_a_slow_city_and_the_same_everything_else(
        influxd: InfluxV1Server, unique_db: str) -> None:
    total = sum(n for _, _, n in city_frames())
    every, fast = f"{unique_db}_all", f"{unique_db}_fast"
    hub_all, hub_fast = run_hub(influxd, every, "all"), run_hub(influxd, fast, "fast")
    assert len(rows(influxd, every, "agg_10s")) > 1000
    assert rows(influxd, fast, "agg_10s") == set()
    for m in ("agg_1m", "agg_1h"):
        assert rows(influxd, every, m) == rows(influxd, fast, m), m
    assert influx_count(influxd.url, every) == influx_count(influxd.url, fast) == total
    # every 10 s row was computed as before, and each one "all" would have written (not an
    # unchanged final) is counted as not stored
    c_all, c = hub_all.counters.snapshot(), hub_fast.counters.snapshot()
    assert (c["windows_ontime"], c["windows_final"]) == (c_all["windows_ontime"],
                                                         c_all["windows_final"])
    unchanged = c.get("windows_final_unchanged", {}).get("10s", 0)
    assert c["windows_not_stored"] == {
        "10s": c["windows_ontime"]["10s"] + c["windows_final"]["10s"] - unchanged}
