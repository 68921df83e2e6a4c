"""The simulator's lasting defects are caught by the hub: a drifting air station is flagged
as a peer-drift anomaly, and dead bay sensors are counted stale.

Eight simulated hours of one district, the firmware models' own messages, checked by the
edge's validation and packed by its frame builder, fed to a real hub writing to a real
influxd (no broker: what `make up` does over hours, in seconds).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from citybrain.localstack import InfluxV1Server
from edge.batcher import FrameBuilder
from edge.validate import check_envelope, check_records, parse_topic
from firmware_sim.devices import DeviceModel, make_model
from firmware_sim.faults import FaultConfig
from firmware_sim.schedule import Scheduler
from hub.service import Hub, HubConfig
from hub.sinks import InfluxConfig, ensure_target_with_retry
from seeds.city import City

pytestmark = pytest.mark.integration

HOURS = 8
#: 08:00 in Chongqing (UTC+8), a fixed day: the simulated readings are the same every run
START = datetime(2025, 11, 17, 0, 0, tzinfo=UTC).timestamp()
CLEAN = FaultConfig.none()


def district_models(city: City, district: str) -> tuple[list[DeviceModel], str]:
    """The district's air stations and bays: its first station drawn to read high drifts
    (3× the truth at start, +50 % of it a day), its bays die at 3 a day (~2 in 3 within the
    run). Returns (models, the drifting station)."""
    drifting = dataclasses.replace(CLEAN, drift_rate=1.0, drift_per_day=(0.5, 0.5),
                                   drift_age_days=(4.0, 4.0))
    dying = dataclasses.replace(CLEAN, sensor_death_rate_per_day=3.0)
    models: list[DeviceModel] = []
    drifter = ""
    for d in city.devices():
        if d.district_code != district or d.kind not in ("air", "bay"):
            continue
        if d.kind == "air" and not drifter:
            m = make_model(d, 11, drifting, START)
            if m.faults.drift_per_s > 0:  # reads high (one in four would read low)
                drifter = d.device_id
                models.append(m)
                continue
        if d.kind == "air":
            models.append(make_model(d, 11, CLEAN, START))
        else:
            models.append(make_model(d, 11, dying if d.kind == "bay" else CLEAN, START))
    return models, drifter


def feed(hub: Hub, city: City, district: str, models: list[DeviceModel]) -> set[int]:
    """The models' messages, HOURS of them, through the edge's checks and frame builder
    into ``hub`` (a frame per 10 simulated minutes); returns the models heard from."""
    sched = Scheduler(models)
    heard: set[int] = set()  # devices that sent something: the hub knows them
    builder = FrameBuilder(district, max_readings=50_000)
    for step in range(1, HOURS * 6 + 1):
        until = START + step * 600
        while (out := sched.pop(until)) is not None:
            model = models[out.model]
            env = check_envelope(city, parse_topic(model.data_topic, {district}),
                                 orjson.loads(out.payload))
            readings, rejected = check_records(env)
            assert not rejected, out.payload  # the edge takes every clean message
            heard.add(out.model)
            builder.add_many(model.device_id, model.device.system.system_id, env.seq, env.t,
                             [r.name for r in readings], [r.value for r in readings])
        frame, _, _ = builder.seal()
        hub.handle_frame(frame)
        hub.tick(time.monotonic())
    hub.emit(hub.windows.close_all())
    time.sleep(2.1)  # the snapshot clock takes one every 2 s of hub time
    hub.tick(time.monotonic())
    return heard


def test_drifting_station_and_dead_bays_are_caught(influxd: InfluxV1Server,
                                                   unique_db: str) -> None:
    city = City(1.0)
    district = next(dc for dc in sorted({d.district_code for d in city.devices()})
                    if sum(1 for d in city.devices()
                           if d.district_code == dc and d.kind == "air") >= 8)
    models, drifter = district_models(city, district)
    assert drifter
    m = next(x for x in models if x.device_id == drifter)
    assert m.faults.gain(START) == pytest.approx(3.0)

    hub = Hub(HubConfig(client_id=f"hub-{uuid.uuid4().hex[:8]}",
                        influx=InfluxConfig(url=influxd.url, database=unique_db)))
    ensure_target_with_retry(hub.sink)
    hub.writer.start()
    try:
        heard = feed(hub, city, district, models)
    finally:
        unwritten = hub.writer.stop(30)
    assert hub.counters.get("analytics_errors") == 0 and unwritten == 0

    def rows(q: str) -> list[list]:
        res = influxd.query(q, db=unique_db)["results"][0]
        return [r for s in res.get("series", []) for r in s["values"]]

    flagged = rows("SELECT score, value FROM anomaly WHERE reason = 'drift' "
                   "GROUP BY device")
    devices = {r[1] for r in
               rows("SHOW TAG VALUES FROM anomaly WITH KEY = device WHERE reason = 'drift'")}
    assert flagged and devices == {drifter}  # the drifter, and no healthy peer
    # Stale: silent for more than 3 heartbeats (30 min). Bays dead for 40 min are; those
    # that died in the last 40 min may be (their last message came up to 10 min earlier).
    end = START + HOURS * 3600
    died = [m.faults.dies_at for i, m in enumerate(models) if i in heard]
    surely, maybe = sum(t < end - 2400 for t in died), sum(t < end for t in died)
    stale = rows(f"SELECT last(bays_stale) FROM parking_1m WHERE district = '{district}' "
                 "AND level = 'district'")
    assert surely > 10 and stale and surely <= stale[0][1] <= maybe
