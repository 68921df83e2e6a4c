"""Device firmware models: determinism, message contents, ranges, parking and kitchen behaviour."""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
import pytest

from citybrain.topics import DeviceTopic
from firmware_sim import signals as sig
from firmware_sim.devices import (
    BayModel,
    DeviceModel,
    KitchenModel,
    LotModel,
    make_model,
    stable_hash,
)
from firmware_sim.faults import FaultConfig
from seeds.city import AI_EVENTS, KINDS, City, Device, catalogue_by_kind

START = datetime(2025, 11, 17, 0, 0, tzinfo=UTC).timestamp() - 8 * 3600  # local midnight
CLEAN = FaultConfig.none()


@cache
def city() -> City:
    return City(1.0)


def first_device(kind: str, n: int = 0) -> Device:
    system = next(s for s in city().systems if s.kind == kind)
    return Device(system.device_id(n), system, n)


def devices_of(kind: str, count: int) -> list[Device]:
    out: list[Device] = []
    for s in city().systems:
        if s.kind == kind:
            out += list(city().devices_of(s))
        if len(out) >= count:
            break
    return out[:count]


def messages(model: DeviceModel, n: int) -> list[bytes]:
    return [model.emit().payload for _ in range(n)]


def run_until(model: DeviceModel, end: float) -> Iterator[tuple[float, dict[str, Any]]]:
    """(simulated time, decoded message) for each message of ``model`` before ``end``."""
    while model.next_t < end:
        e = model.emit()
        yield e.t, orjson.loads(e.payload)


# -- determinism --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_gives_identical_bytes(kind: str) -> None:
    dev = first_device(kind, 3)
    a = messages(make_model(dev, 7, FaultConfig(), START), 300)
    b = messages(make_model(dev, 7, FaultConfig(), START), 300)
    assert a == b


@pytest.mark.parametrize("kind", KINDS)
def test_different_seed_or_device_gives_different_bytes(kind: str) -> None:
    a = messages(make_model(first_device(kind, 3), 7, CLEAN, START), 50)
    assert a != messages(make_model(first_device(kind, 3), 8, CLEAN, START), 50)
    assert a != messages(make_model(first_device(kind, 4), 7, CLEAN, START), 50)


def test_a_device_does_not_depend_on_its_neighbours() -> None:
    """Building (and running) other devices first must not change a device's messages."""
    target = first_device("air", 5)
    alone = messages(make_model(target, 3, FaultConfig(), START), 100)
    others = [make_model(d, 3, FaultConfig(), START) for d in devices_of("kitchen", 20)]
    for m in others:
        m.emit()
    again = messages(make_model(target, 3, FaultConfig(), START), 100)
    assert alone == again


def test_stable_hash_is_fixed_across_processes() -> None:
    # A constant: Python's hash() would change with PYTHONHASHSEED, this must not.
    assert stable_hash("500103-air-01-00017") == 1059299374389384168


def test_clean_values_equal_faulty_ones_where_no_fault_hit() -> None:
    """Fault decisions use a fixed number of draws, so faults never shift the clean stream."""
    dev = first_device("kitchen", 9)
    heavy = FaultConfig(spike_rate=0.05, stuck_rate=0.0, dropout_rate=0.05, duplicate_rate=0.05)
    clean, faulty = make_model(dev, 5, CLEAN, START), make_model(dev, 5, heavy, START)
    same = 0
    for _ in range(400):
        a, b = clean.emit(), faulty.emit()
        if not b.faults.spiked:
            assert orjson.loads(a.payload)["e"] == orjson.loads(b.payload)["e"]
            same += 1
    assert same > 350


# -- message structure --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_messages_match_payload_contract_and_catalogue(kind: str) -> None:
    cat = catalogue_by_kind()[kind]
    for dev in devices_of(kind, 5):
        model = make_model(dev, 1, CLEAN, START)
        topic = DeviceTopic.parse(model.data_topic)
        assert (topic.district, topic.domain, topic.system, topic.device, topic.channel) == (
            dev.district_code, dev.domain, dev.system.system_id, dev.device_id, "data")
        expected_seq = 0
        for t, msg in run_until(model, START + 2 * sig.DAY_S):
            assert set(msg) == {"dev", "seq", "t", "e"}
            assert msg["dev"] == dev.device_id
            assert msg["seq"] == expected_seq
            expected_seq += 1
            assert msg["t"] == pytest.approx(t, abs=0.001)  # no clock skew without faults
            assert msg["e"]
            for rec in msg["e"]:
                m = cat[rec["n"]]
                assert rec["u"] == m.unit
                if m.dtype == "bool":
                    assert isinstance(rec["vb"], bool) and set(rec) == {"n", "u", "vb"}
                elif m.dtype == "enum":
                    assert rec["vs"] in AI_EVENTS and set(rec) == {"n", "u", "vs"}
                else:
                    v = rec["v"]
                    assert m.min <= v <= m.max, (rec, dev.device_id)
                    assert isinstance(v, int) if m.dtype == "int" else isinstance(v, float)
        assert expected_seq > 0


@pytest.mark.parametrize(("kind", "interval"), [("air", 60.0), ("water", 600.0),
                                                ("noise", 60.0), ("lot", 60.0)])
def test_periodic_devices_report_every_interval_from_a_random_phase(kind: str,
                                                                    interval: float) -> None:
    phases = set()
    for dev in devices_of(kind, 10):
        assert dev.system.interval_s == interval
        model = make_model(dev, 1, CLEAN, START)
        times = [model.emit().t for _ in range(20)]
        assert START <= times[0] < START + interval
        phases.add(round(times[0] - START, 3))
        gaps = {round(b - a, 6) for a, b in itertools.pairwise(times)}
        assert gaps == {interval}
    assert len(phases) == 10


def test_births_carry_the_next_seq_without_using_it() -> None:
    model = make_model(first_device("air"), 1, CLEAN, START)
    for _ in range(5):
        model.emit()
    birth = orjson.loads(model.birth(START + 500.0, "cbsim-x", "power_on"))
    assert birth == {"dev": model.device_id, "seq": 5, "t": START + 500.0, "fw": "3.2.1",
                     "reset": "power_on", "link": "cbsim-x", "interval_s": 60.0}
    assert orjson.loads(model.emit().payload)["seq"] == 5


def test_make_model_rejects_unknown_kinds() -> None:
    system = dataclasses.replace(next(s for s in city().systems if s.kind == "air"), kind="tram")
    with pytest.raises(ValueError, match="tram"):
        make_model(Device(system.device_id(0), system, 0), 1, CLEAN, START)


# -- parking --------------------------------------------------------------------------------------
def test_bay_sessions_per_day_are_near_twenty() -> None:
    days = 3
    per_bay = []
    for dev in devices_of("bay", 150):
        model = make_model(dev, 11, CLEAN, START)
        assert isinstance(model, BayModel)
        arrivals = sum(1 for _, msg in run_until(model, START + days * sig.DAY_S)
                       if len(msg["e"]) == 1 and msg["e"][0]["vb"] is True)
        per_bay.append(arrivals / days)
    assert 17.0 <= statistics.fmean(per_bay) <= 23.0
    assert min(per_bay) >= 3.0 and max(per_bay) <= 60.0


def test_bay_events_alternate_and_heartbeats_carry_battery() -> None:
    model = make_model(first_device("bay", 2), 4, CLEAN, START)
    assert isinstance(model, BayModel)
    state: bool | None = None
    heartbeats = []
    for t, msg in run_until(model, START + sig.DAY_S):
        names = [r["n"] for r in msg["e"]]
        if names == ["occupied"]:
            new = msg["e"][0]["vb"]
            assert new != state  # arrivals and departures alternate
            state = new
        else:
            assert names == ["occupied", "battery"]
            if state is not None:
                assert msg["e"][0]["vb"] == state
            heartbeats.append(t)
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(heartbeats)}
    assert gaps == {model.interval_s}


def test_bay_batteries_drain_slowly_and_faster_with_the_fault() -> None:
    fast = FaultConfig(fast_drain_rate=1.0, fast_drain_v_per_day=(0.05, 0.05))
    healthy = make_model(first_device("bay", 5), 1, CLEAN, START)
    failing = make_model(first_device("bay", 5), 1, fast, START)
    assert isinstance(healthy, BayModel) and isinstance(failing, BayModel)
    month = START + 30 * sig.DAY_S
    assert 0.0 < healthy.battery_true(START) - healthy.battery_true(month) < 0.05
    assert failing.battery_true(START) - failing.battery_true(month) > 1.0
    assert failing.battery_true(START + 10_000 * sig.DAY_S) == 2.0  # floor of the catalogue


def test_bay_battery_levels_span_normal_low_and_critical() -> None:
    models = [make_model(d, 2, CLEAN, START) for d in devices_of("bay", 1500)]
    volts = [m.v0 for m in models if isinstance(m, BayModel)]
    normal = sum(1 for v in volts if v >= 3.0) / len(volts)
    low = sum(1 for v in volts if 2.9 <= v < 3.0) / len(volts)
    critical = sum(1 for v in volts if v < 2.9) / len(volts)
    assert normal > 0.93 and 0.005 < low < 0.05 and 0.0 < critical < 0.03


def test_lot_counts_balance_against_capacity() -> None:
    for dev in devices_of("lot", 10):
        model = make_model(dev, 3, CLEAN, START)
        assert isinstance(model, LotModel)
        free_prev = model.capacity - model.occupied
        busy = 0
        for _, msg in run_until(model, START + sig.DAY_S):
            v = {r["n"]: r["v"] for r in msg["e"]}
            assert 0 <= v["free"] <= model.capacity
            assert v["free"] == free_prev - v["entries"] + v["exits"]
            free_prev = v["free"]
            busy += v["entries"]
        assert busy > 0


def test_kitchen_ai_events_come_a_few_times_a_day() -> None:
    days = 2
    counts = []
    names: Counter[str] = Counter()
    for dev in devices_of("kitchen", 25):
        model = make_model(dev, 5, CLEAN, START)
        assert isinstance(model, KitchenModel)
        n = 0
        for _, msg in run_until(model, START + days * sig.DAY_S):
            if msg["e"][0]["n"] == "ai_event":
                assert len(msg["e"]) == 1
                names[msg["e"][0]["vs"]] += 1
                n += 1
            else:
                assert [r["n"] for r in msg["e"]] == list(sig.CHANNELS["kitchen"])
        counts.append(n / days)
    assert 1.0 < statistics.fmean(counts) < 5.0
    assert set(names) == set(AI_EVENTS)


def test_births_declare_installation_attrs() -> None:
    import orjson

    from firmware_sim.devices import make_model
    from firmware_sim.faults import FaultConfig
    from seeds.city import City

    city = City()
    seen: dict[str, dict] = {}
    for dev in city.devices():
        if dev.kind in seen:
            continue
        model = make_model(dev, 1, FaultConfig.none(), 1_763_712_000.0)
        seen[dev.kind] = orjson.loads(model.birth(1_763_712_000.0, "l", "power_on")).get(
            "attrs", {})
    assert seen["lot"]["capacity"] >= 30
    assert seen["noise"]["zone"] in {"1", "2", "3", "4a"}
    assert isinstance(seen["kitchen"]["frozen"], bool)
    assert seen["air"] == {}
