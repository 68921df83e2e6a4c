"""Fault injection: rates as configured, spikes out of range, stuck sensors, clock skew."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from firmware_sim import signals as sig
from firmware_sim.devices import DeviceModel, make_model
from firmware_sim.faults import (
    NORMAL_SKEW_LIMIT_S,
    DeviceFaults,
    FaultConfig,
    apply_message_faults,
    link_downtime_s,
    link_fault_gap_s,
    spike_value,
)
from firmware_sim.schedule import DUPLICATE, Scheduler
from seeds.city import City, catalogue_by_kind

START = datetime(2025, 11, 17, 0, 0, tzinfo=UTC).timestamp() - 8 * 3600


def within(observed: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """``observed`` successes of ``n`` trials are consistent with probability ``p``."""
    mean = n * p
    return abs(observed - mean) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def test_defaults_are_small_and_none_is_clean() -> None:
    f = FaultConfig()
    f.validate()
    for rate in (f.spike_rate, f.stuck_rate, f.dropout_rate, f.duplicate_rate):
        assert 0 < rate <= 0.005  # a few per mille per message
    none = FaultConfig.none()
    none.validate()
    assert none.spike_rate == none.stuck_rate == none.dropout_rate == none.duplicate_rate == 0
    assert none.skew_sigma_s == none.skew_future_rate == none.skew_behind_rate == 0
    assert none.reconnect_rate_per_hour == 0 and none.fast_drain_rate == 0


@pytest.mark.parametrize("bad", [
    {"spike_rate": -0.1}, {"dropout_rate": 1.5}, {"stuck_mean_s": math.nan},
    {"skew_future_s": (10.0, 5.0)}, {"skew_future_rate": 0.6, "skew_behind_rate": 0.6},
    {"spike_factor": (0.5, 2.0)}])
def test_validate_rejects_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultConfig(**bad).validate()  # type: ignore[arg-type]


def test_message_fault_rates_match_the_config() -> None:
    cfg = FaultConfig(spike_rate=0.02, stuck_rate=0.006, dropout_rate=0.03, duplicate_rate=0.02)
    city = City(0.1)
    models = [make_model(d, 9, cfg, START) for d in city.devices()]
    sched = Scheduler(models)
    limits = {(m.kind, m.name): (m.min, m.max) for kind in catalogue_by_kind().values()
              for m in kind.values()}
    sent = dups_sent = numeric = spiked = 0
    while (out := sched.pop(START + 3 * 3600)) is not None:
        if out.kind == DUPLICATE:
            dups_sent += 1
            continue
        sent += 1
        kind = models[out.model].kind
        values = [(r["n"], r["v"]) for r in orjson.loads(out.payload)["e"] if "v" in r]
        if values:
            numeric += 1
            lo_hi = [limits[(kind, n)] for n, _ in values]
            spiked += any(not lo <= v <= hi for (_, v), (lo, hi) in zip(values, lo_hi,
                                                                          strict=True))
    f = sched.faults
    generated = sum(m.seq for m in models)
    assert generated == sent + f.dropouts
    assert within(f.dropouts, generated, cfg.dropout_rate)
    assert within(f.duplicates, sent, cfg.duplicate_rate)  # dropped messages get no re-send
    assert dups_sent == f.duplicates - sched.pending_duplicates()
    # Spikes and stuck sensors hit only messages with numeric readings.
    assert within(spiked, numeric, cfg.spike_rate)
    assert within(f.stuck_episodes, round(numeric / (1 - cfg.dropout_rate)), cfg.stuck_rate)
    assert f.stuck_readings > f.stuck_episodes


def test_spikes_are_far_outside_the_valid_range() -> None:
    for kind in sig.CHANNELS:
        for ch in sig.channels(kind):
            for v in (0.0, ch.lo, ch.hi, (ch.lo + ch.hi) / 2):
                for factor in (10.0, 100.0):
                    x = spike_value(v, ch, factor)
                    assert x > ch.hi * 1.5, (kind, ch.name, v, x)
                    assert isinstance(x, int) if ch.is_int else isinstance(x, float)


def test_spiked_messages_carry_one_out_of_range_reading() -> None:
    cfg = FaultConfig(spike_rate=1.0, stuck_rate=0.0, dropout_rate=0.0, duplicate_rate=0.0)
    system = next(s for s in City(1.0).systems if s.kind == "air")
    model = make_model(next(City(1.0).devices_of(system)), 1, cfg, START)
    cat = catalogue_by_kind()["air"]
    for _ in range(50):
        e = model.emit()
        out = [r for r in orjson.loads(e.payload)["e"] if not cat[r["n"]].min <= r["v"]
               <= cat[r["n"]].max]
        assert e.faults.spiked and len(out) == 1


def test_stuck_sensor_repeats_its_value_until_the_episode_ends() -> None:
    cfg = FaultConfig(stuck_mean_s=600.0)
    dev = DeviceFaults(skew_s=0.0, skew_kind="normal", extra_drain_v_per_day=0.0)
    chans = sig.channels("air")
    start_u = [0.9] * 9
    start_u[6], start_u[7], start_u[8] = 0.0, 0.99, 0.5  # stuck now, on the last channel
    mf = apply_message_faults(cfg, dev, 0.0, [1.0] * 8, chans, start_u)
    assert mf.stuck_started and 7 in dev.stuck
    until = dev.stuck[7][1]
    assert until == pytest.approx(-600.0 * math.log(0.5))
    quiet = [0.9] * 9
    for t in (60.0, 120.0, until - 1.0):
        values = [2.0] * 8
        mf = apply_message_faults(cfg, dev, t, values, chans, quiet)
        assert values[7] == 1.0 and values[6] == 2.0 and mf.stuck_readings == 1
    values = [3.0] * 8
    apply_message_faults(cfg, dev, until + 1.0, values, chans, quiet)
    assert values[7] == 3.0 and not dev.stuck


def test_clock_skew_distribution() -> None:
    cfg = FaultConfig()
    n = 40_000
    profiles = [DeviceFaults.draw(cfg, sig.Stream(np.random.default_rng(i))) for i in range(n)]
    future = [p.skew_s for p in profiles if p.skew_kind == "future"]
    behind = [p.skew_s for p in profiles if p.skew_kind == "behind"]
    normal = [p.skew_s for p in profiles if p.skew_kind == "normal"]
    assert within(len(future), n, cfg.skew_future_rate)
    assert within(len(behind), n, cfg.skew_behind_rate)
    assert all(s > 600.0 for s in future)  # > +10 min: the edge rejects these
    assert all(-900.0 <= s <= -120.0 for s in behind)  # minutes behind
    assert all(abs(s) <= NORMAL_SKEW_LIMIT_S for s in normal)
    assert sum(1 for s in normal if abs(s) < 1.0) / len(normal) > 0.9
    assert abs(float(np.mean(normal))) < 0.02


def test_skew_shows_in_device_time() -> None:
    cfg = FaultConfig(skew_future_rate=1.0)
    system = next(s for s in City(1.0).systems if s.kind == "noise")
    model = make_model(next(City(1.0).devices_of(system)), 1, cfg, START)
    e = model.emit()
    assert orjson.loads(e.payload)["t"] - e.t > 900.0 - 0.01


def test_fast_drain_fraction() -> None:
    cfg = FaultConfig()
    n = 20_000
    drains = [DeviceFaults.draw(cfg, sig.Stream(np.random.default_rng(i))).extra_drain_v_per_day
              for i in range(n)]
    fast = [d for d in drains if d > 0]
    assert within(len(fast), n, cfg.fast_drain_rate)
    assert all(cfg.fast_drain_v_per_day[0] <= d <= cfg.fast_drain_v_per_day[1] for d in fast)


def test_link_fault_gaps_are_exponential_at_the_configured_rate() -> None:
    cfg = FaultConfig(reconnect_rate_per_hour=2.0)
    rng = np.random.default_rng(3)
    gaps = [link_fault_gap_s(cfg, rng) for _ in range(5000)]
    assert np.mean(gaps) == pytest.approx(1800.0, rel=0.06)
    downs = [link_downtime_s(cfg, rng) for _ in range(1000)]
    assert all(cfg.reconnect_downtime_s[0] <= d <= cfg.reconnect_downtime_s[1] for d in downs)
    assert link_fault_gap_s(FaultConfig.none(), rng) == math.inf


def test_no_faults_means_no_faults() -> None:
    city = City(0.1)
    models = [make_model(d, 1, FaultConfig.none(), START) for d in city.devices()]
    sched = Scheduler(models)
    while sched.pop(START + 2 * 3600) is not None:
        pass
    assert sched.faults.to_dict() == dict.fromkeys(sched.faults.to_dict(), 0)
    assert all(m.faults.skew_s == 0.0 for m in models)


# -- lasting defects drawn from the second stream: calibration drift, sensor death ------------
def models_of(kind: str, cfg: FaultConfig, scale: float = 1.0) -> list[DeviceModel]:
    return [make_model(d, 3, cfg, START) for d in City(scale).devices() if d.kind == kind]


def test_defaults_and_none_for_drift_and_death() -> None:
    f = FaultConfig()
    assert 0 < f.drift_rate <= 0.05 and 0 < f.sensor_death_rate_per_day <= 0.01
    none = FaultConfig.none()
    assert none.drift_rate == 0 and none.sensor_death_rate_per_day == 0
    for m in models_of("air", none) + models_of("bay", none, 0.2):
        assert m.faults.drift_per_s == 0.0 and m.faults.dies_at == math.inf
        assert m.faults.gain(START + 1e6) == 1.0


@pytest.mark.parametrize("bad", [{"drift_rate": 1.5}, {"drift_per_day": (0.2, 0.1)},
                                 {"sensor_death_rate_per_day": -1.0}])
def test_validate_rejects_bad_defect_settings(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultConfig(**bad).validate()  # type: ignore[arg-type]


def test_drift_fraction_direction_and_gain() -> None:
    cfg = FaultConfig(drift_rate=0.3)
    air = models_of("air", cfg, 2.0)
    drifting = [m for m in air if m.faults.drift_per_s != 0.0]
    assert within(len(drifting), len(air), cfg.drift_rate)
    low = [m for m in drifting if m.faults.drift_per_s < 0]
    assert 0 < len(low) < len(drifting) / 2  # one in four reads low
    for m in drifting:
        f = m.faults
        per_day = abs(f.drift_per_s) * 86400.0
        age_days = (START - f.drift_since) / 86400.0
        assert cfg.drift_per_day[0] <= per_day <= cfg.drift_per_day[1]
        assert cfg.drift_age_days[0] <= age_days <= cfg.drift_age_days[1]
        g = per_day * age_days
        assert f.gain(START) == pytest.approx(1 + g if f.drift_per_s > 0 else 1 / (1 + g))
        later = f.gain(START + 86400.0)  # it keeps drifting the same way
        assert (later > f.gain(START) > 1.0) or (later < f.gain(START) < 1.0)
    # only air stations' optical sensors drift
    assert all(m.faults.drift_per_s == 0.0 for m in models_of("water", cfg, 2.0))


def test_a_drifting_station_reads_pm_times_its_gain_and_nothing_else_changes() -> None:
    dev = next(d for d in City(1.0).devices() if d.kind == "air")
    clean = make_model(dev, 5, FaultConfig.none(), START)
    drift = make_model(dev, 5, dataclasses.replace(FaultConfig.none(), drift_rate=1.0), START)
    assert drift.faults.drift_per_s != 0.0
    names = [c.name for c in sig.channels("air")]
    for _ in range(50):
        a, b = clean.emit(), drift.emit()
        va = {r["n"]: r["v"] for r in orjson.loads(a.payload)["e"]}
        vb = {r["n"]: r["v"] for r in orjson.loads(b.payload)["e"]}
        gain = drift.faults.gain(a.t)
        for n in names:
            if n in ("pm2_5", "pm10"):
                assert vb[n] == pytest.approx(va[n] * gain, rel=0.02, abs=0.6)
            else:
                assert vb[n] == va[n]


def test_defects_shift_no_reading_of_devices_they_spare() -> None:
    """The defects come from a second stream: a kitchen is the same byte for byte."""
    dev = next(d for d in City(1.0).devices() if d.kind == "kitchen")
    cfgs = [FaultConfig.none(), dataclasses.replace(FaultConfig.none(), drift_rate=1.0,
                                                    sensor_death_rate_per_day=100.0)]
    a, b = (make_model(dev, 5, c, START) for c in cfgs)
    assert [a.emit().payload for _ in range(100)] == [b.emit().payload for _ in range(100)]


def test_dead_bays_fall_silent_at_the_configured_hazard() -> None:
    cfg = FaultConfig(sensor_death_rate_per_day=2.0)
    bays = models_of("bay", cfg, 0.5)
    day = 86400.0
    dead_in_a_day = sum(m.faults.dies_at < START + day for m in bays)
    assert within(dead_in_a_day, len(bays), 1 - math.exp(-2.0))
    assert all(m.faults.dies_at > START for m in bays)
    sched = Scheduler(bays)
    last: dict[int, float] = {}
    while (out := sched.pop(START + day)) is not None:
        if out.kind != DUPLICATE:
            last[out.model] = out.t
    for i, m in enumerate(bays):
        if m.faults.dies_at < START + day:
            assert m.next_t == math.inf and not m.alive(m.faults.dies_at)
            assert last.get(i, START) < m.faults.dies_at  # nothing sent once dead
        else:
            assert m.alive(START + day) and last[i] > START + day - 2 * m.interval_s
    assert sched.deaths_by(START + day) == dead_in_a_day
    while sched.pop(math.inf) is not None:  # every bay dies in the end: the run drains
        pass
    assert all(m.next_t == math.inf for m in bays) and sched.deaths_by(math.inf) == len(bays)
    with pytest.raises(RuntimeError, match="failed for good"):
        next(m for m in bays if m.next_t == math.inf).emit()
    # mains-powered devices never die
    assert all(m.faults.dies_at == math.inf for m in models_of("kitchen", cfg, 0.2))


def test_a_dead_sensor_resends_nothing() -> None:
    """A re-send due after the device's death is not sent (the draw is taken all the same)."""
    cfg = dataclasses.replace(FaultConfig.none(), duplicate_rate=1.0,
                              duplicate_delay_s=(300.0, 900.0), sensor_death_rate_per_day=6.0)
    bays = models_of("bay", cfg, 0.2)
    sched = Scheduler(bays)
    dups = 0
    while (out := sched.pop(START + 86400.0)) is not None:
        assert out.t < bays[out.model].faults.dies_at, out
        dups += out.kind == DUPLICATE
    assert dups > 100 and sched.deaths_by(START + 86400.0) > len(bays) / 2
