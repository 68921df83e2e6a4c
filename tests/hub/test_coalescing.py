"""Frames aggregated together store exactly what frames aggregated one by one store.

Under load the hub's processing loop joins the frames waiting in its WAL into one batch
(``HubConfig.coalesce_readings``); this checks that the batching changes only the cost.
"""

from __future__ import annotations

import uuid

import pytest

from citybrain.localstack import InfluxV1Server, missing_binaries
from citybrain.up import influx_count
from hub.service import Hub, HubConfig
from hub.sinks import InfluxConfig, ensure_target_with_retry
from tests.test_cluster import city_frames, rows

pytestmark = pytest.mark.skipif("influxd" in missing_binaries(), reason="needs influxd")

COUNTERS = ("hub_received", "frames_ok", "aggregated_readings", "late_readings",
            "early_readings", "reaggregated_readings", "analytics_errors")


def run_hub(influxd: InfluxV1Server, db: str, frames: list[bytes], group: int,
            coalesce_readings: int = 200_000) -> dict[str, int]:
    hub = Hub(HubConfig(client_id=f"hub-{uuid.uuid4().hex[:8]}",
                        coalesce_readings=coalesce_readings,
                        influx=InfluxConfig(url=influxd.url, database=db)))
    ensure_target_with_retry(hub.sink)
    hub.writer.start()
    for i in range(0, len(frames), group):
        if group == 1:
            hub.handle_frame(frames[i])
        else:
            hub.handle_frames(frames[i:i + group])
        # tick at the wall time of the last frame, not "now": a frame slowed by a busy
        # machine or a cold kernel cache must not read as 10 s of idleness, which advances
        # the event clock and would close windows at different points in the three runs
        hub.tick(hub._event_clock_wall)
    hub.emit(hub.windows.close_all())
    assert hub.writer.stop(60) == 0
    return {k: hub.counters.get(k) for k in COUNTERS}


def test_frames_taken_together_store_what_frames_taken_one_by_one_store(
        influxd: InfluxV1Server, unique_db: str) -> None:
    frames = [frame for _, frame, _ in city_frames()]
    total = sum(n for _, _, n in city_frames())
    one, many, capped = f"{unique_db}_one", f"{unique_db}_many", f"{unique_db}_capped"
    by_one = run_hub(influxd, one, frames, group=1)
    together = run_hub(influxd, many, frames, group=45)  # spans rounds: more than 38 districts
    # a cap below one frame's size: every frame flushed on its own, inside handle_frames
    small = run_hub(influxd, capped, frames, group=45, coalesce_readings=1)
    assert by_one == together == small
    assert by_one["aggregated_readings"] == total and by_one["analytics_errors"] == 0
    for m in ("agg_10s", "agg_1m", "agg_1h"):
        a, b, c = (rows(influxd, db, m) for db in (one, many, capped))
        assert len(a) > 1000 if m == "agg_10s" else a
        assert a == b == c, f"{m}: {len(a ^ b)} points differ when frames are joined"
    assert [influx_count(influxd.url, db) for db in (one, many, capped)] == [total] * 3
