"""Device firmware models: one class per kind, each producing the records of its next message.

A model owns its device's random stream (a ``numpy.random.Generator`` seeded from the run's
seed and a stable hash of the device id) and its schedule in *simulated* time. Call
:meth:`DeviceModel.emit` to produce the message due at :attr:`DeviceModel.next_t`; the k-th
call's result depends only on (seed, device id, simulated start, fault config, k) — never on
wall-clock timing, other devices, or how the runner groups devices into connections.

Kinds (measurements and units from ``seeds/catalogue.csv``):

* ``air``, ``water``, ``noise`` — periodic, every ``System.interval_s`` from a random phase.
* ``bay`` — on-street geomagnetic sensor: an ``occupied`` message on each arrival and
  departure (detected 3–10 s after the car moved), and a periodic heartbeat with ``occupied``
  and ``battery`` (V) that slowly drains.
* ``lot`` — car park: ``entries`` and ``exits`` since the last report and ``free`` spaces.
* ``kitchen`` — periodic sensor message, plus ``ai_event`` camera alerts at random times.
"""

from __future__ import annotations

import hashlib
import math
from functools import cache
from typing import ClassVar, NamedTuple

import numpy as np

from citybrain.payload import Record, encode_birth, encode_data, record
from citybrain.topics import DeviceTopic
from firmware_sim import signals as sig
from firmware_sim.faults import (
    DEFECT_DRAWS,
    FAULT_DRAWS,
    DeviceFaults,
    FaultConfig,
    MessageFaults,
    apply_message_faults,
    draw_defects,
)
from firmware_sim.signals import Channel
from seeds.city import Device

#: Firmware version each kind reports in its birth message.
FIRMWARE: dict[str, str] = {"air": "3.2.1", "water": "2.8.0", "noise": "1.9.4",
                            "bay": "4.1.2", "lot": "2.0.7", "kitchen": "5.3.0"}
SEQ_MODULUS = 2 ** 32


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def device_rng(seed: int, device_id: str) -> np.random.Generator:
    """The device's own random stream: seeded from (seed, stable hash of the device id)."""
    return np.random.default_rng([seed, stable_hash(device_id)])


def defect_draws(seed: int, device_id: str) -> list[float]:
    """Uniforms for the device's later-added lasting defects (``faults.draw_defects``),
    from a second stream, (seed, hash, 1), so that they shift no draw of the first."""
    return np.random.default_rng([seed, stable_hash(device_id), 1]).random(
        DEFECT_DRAWS).tolist()


@cache
def regional_drift(seed: int, district: str) -> sig.Drift:
    """District-wide weather (1–10 day periods) shared by the district's air stations."""
    rng = np.random.default_rng([seed, stable_hash(f"district:{district}")])
    return sig.Drift.draw(sig.Stream(rng), sig.DAY_S, 10 * sig.DAY_S)


class Emission(NamedTuple):
    """One data message as the device produced it."""

    t: float             # simulated UTC time it leaves the device (its clock adds a skew)
    seq: int             # per-device sequence number
    payload: bytes       # the encoded JSON (encoded even when dropped, for inspection)
    n_readings: int      # records in ``payload``
    faults: MessageFaults


_NO_CHANNELS: tuple[Channel, ...] = ()


class DeviceModel:
    """Base class: identity, random stream, fault profile, sequence numbers and encoding."""

    kind: ClassVar[str] = ""
    __slots__ = ("cfg", "data_topic", "device", "device_id", "district", "faults",
                 "interval_s", "next_t", "rng", "seq")

    def __init__(self, device: Device, seed: int, faults: FaultConfig, start: float) -> None:
        if device.kind != self.kind:
            raise ValueError(f"{type(self).__name__} models {self.kind!r} devices, "
                             f"not {device.kind!r} ({device.device_id})")
        self.device = device
        self.device_id = device.device_id
        self.district = device.district_code
        self.interval_s = device.system.interval_s
        self.cfg = faults
        self.rng = sig.Stream(device_rng(seed, device.device_id))
        self.faults = DeviceFaults.draw(faults, self.rng)
        draw_defects(faults, self.faults, self.kind, start, defect_draws(seed, self.device_id))
        self.seq = 0
        #: simulated time of the next message (the runner's heap key; ``inf``: none, the
        #: device has failed for good)
        self.next_t = start
        self.data_topic = self.topic("data")
        self._setup(seed, start)
        self._stop_if_dead()

    def _stop_if_dead(self) -> None:
        """A message due at or after the device's death is never sent: no more messages."""
        if self.next_t >= self.faults.dies_at:
            self.next_t = math.inf

    def alive(self, t: float) -> bool:
        """Whether the device still works at simulated time ``t`` (a dead one sends
        nothing, not even a birth when its link reconnects)."""
        return t < self.faults.dies_at

    # -- kind-specific ------------------------------------------------------------------------
    def _setup(self, seed: int, start: float) -> None:
        """Draw the device's parameters and set :attr:`next_t` (fixed number of draws)."""
        raise NotImplementedError

    def _sample(self, t: float) -> tuple[list[Record], list[float], tuple[Channel, ...]]:
        """Readings of the message due at ``t``; advance :attr:`next_t`.

        Returns (non-numeric records, numeric values, their channels); numeric values are
        subject to stuck/spike faults, the other records are not.
        """
        raise NotImplementedError

    # -- common -------------------------------------------------------------------------------
    def topic(self, channel: str) -> str:
        d = self.device
        return str(DeviceTopic(d.district_code, d.domain, d.system.system_id, d.device_id,
                               channel))

    def device_time(self, t: float) -> float:
        """What this device's clock shows at simulated time ``t`` (ms resolution)."""
        return round(t + self.faults.skew_s, 3)

    def emit(self) -> Emission:
        """Produce the message due at :attr:`next_t` and schedule the next one."""
        t = self.next_t
        if t == math.inf:
            raise RuntimeError(f"{self.device_id} has failed for good: it sends nothing more")
        records, values, chans = self._sample(t)
        self._stop_if_dead()
        mf = apply_message_faults(self.cfg, self.faults, t, values, chans,
                                  self.rng.uniforms(FAULT_DRAWS))
        if chans:
            records += [record(c.name, c.unit, v) for c, v in zip(chans, values, strict=True)]
        seq = self.seq
        self.seq = (seq + 1) % SEQ_MODULUS
        payload = encode_data(self.device_id, seq, round(t + self.faults.skew_s, 3), records)
        return Emission(t, seq, payload, len(records), mf)

    def birth(self, t: float, link: str, reset_cause: str) -> bytes:
        """Birth payload at simulated time ``t``: carries the *next* data seq (not used up)."""
        return encode_birth(self.device_id, self.seq, self.device_time(t),
                            firmware=FIRMWARE[self.kind], reset_cause=reset_cause, link=link,
                            interval_s=self.interval_s, attrs=self.attrs())

    def attrs(self) -> dict[str, str | int | bool]:
        """What the device declares in its birth about where it is installed."""
        return {}


class PeriodicModel(DeviceModel):
    """A device that reports every ``interval_s`` from a random phase in [0, interval_s)."""

    __slots__ = ("_k", "_t0")

    def _schedule(self, start: float) -> None:
        self._t0 = start + self.rng.uniform() * self.interval_s
        self._k = 0
        self.next_t = self._t0

    def _advance_periodic(self) -> float:
        """Move to the next period; returns its time. Computed from k (no float creep)."""
        self._k += 1
        return self._t0 + self._k * self.interval_s


class AirModel(PeriodicModel):
    kind = "air"
    __slots__ = ("site",)

    def _setup(self, seed: int, start: float) -> None:
        self.site = sig.AirSite.draw(self.rng, regional_drift(seed, self.district))
        self._schedule(start)

    def _sample(self, t: float) -> tuple[list[Record], list[float], tuple[Channel, ...]]:
        values = sig.air(t, self.site, self.rng, pm_gain=self.faults.gain(t))
        self.next_t = self._advance_periodic()
        return [], values, sig.channels("air")


class WaterModel(PeriodicModel):
    kind = "water"
    __slots__ = ("site",)

    def _setup(self, seed: int, start: float) -> None:
        self.site = sig.WaterSite.draw(self.rng)
        self._schedule(start)

    def _sample(self, t: float) -> tuple[list[Record], list[float], tuple[Channel, ...]]:
        values = sig.water(t, self.site, self.rng)
        self.next_t = self._advance_periodic()
        return [], values, sig.channels("water")


class NoiseModel(PeriodicModel):
    kind = "noise"
    __slots__ = ("site",)

    def _setup(self, seed: int, start: float) -> None:
        self.site = sig.NoiseSite.draw(self.rng)
        self._schedule(start)

    def _sample(self, t: float) -> tuple[list[Record], list[float], tuple[Channel, ...]]:
        values = sig.noise(t, self.site, self.rng)
        self.next_t = self._advance_periodic()
        return [], values, sig.channels("noise")

    def attrs(self) -> dict[str, str | int | bool]:
        return {"zone": self.site.zone}


class KitchenModel(PeriodicModel):
    """Sensors every interval; AI-camera events as a non-homogeneous Poisson process."""

    kind = "kitchen"
    __slots__ = ("_next_ai", "_next_periodic", "ai_per_day", "site")

    def attrs(self) -> dict[str, str | int | bool]:
        return {"frozen": self.site.frozen}

    def _setup(self, seed: int, start: float) -> None:
        self.site = sig.KitchenSite.draw(self.rng)
        # A few alerts a day per kitchen; some kitchens are much sloppier than others.
        self.ai_per_day = 2.0 * math.exp(0.7 * self.rng.normal())
        self._schedule(start)
        self._next_periodic = self.next_t
        self._next_ai = self._draw_ai(start)
        self.next_t = min(self._next_periodic, self._next_ai)

    def _draw_ai(self, t: float) -> float:
        """Time of the next camera event after ``t`` (thinning; two draws per candidate)."""
        lam_max = self.ai_per_day / sig.DAY_S * sig.AI_EVENT_RATE_MAX
        while True:
            u = self.rng.uniforms(2)
            t -= math.log(1.0 - u[0]) / lam_max
            if u[1] * sig.AI_EVENT_RATE_MAX < sig.AI_EVENT_RATE[sig.minute_of_day(t)]:
                return t

    def _sample(self, t: float) -> tuple[list[Record], list[float], tuple[Channel, ...]]:
        if self._next_ai <= self._next_periodic:
            name = sig.ai_event_name(sig.local_hour(t), self.rng.uniform())
            self._next_ai = self._draw_ai(t)
            self.next_t = min(self._next_periodic, self._next_ai)
            return [record("ai_event", "enum", name)], [], _NO_CHANNELS
        values = sig.kitchen(t, self.site, self.rng)
        self._next_periodic = self._advance_periodic()
        self.next_t = min(self._next_periodic, self._next_ai)
        return [], values, sig.channels("kitchen")


#: Share of a bay's average arrival-to-arrival cycle that the car is parked.
BAY_DWELL_SHARE = 0.5
#: Calibration of vacancy lengths so that a bay sees its target sessions per day on average
#: (the night lull makes a naive rate fall short); checked by the tests.
BAY_VACANCY_SCALE = 0.72
BAY_DWELL_SIGMA = 0.8
#: Detection delay of a geomagnetic sensor, seconds (uniform).
BAY_DETECT_S = (3.0, 10.0)
#: Battery drain of a healthy sensor, V per day (uniform); each uplink costs a little more.
BAY_DRAIN_V_PER_DAY = (0.0003, 0.0007)
BAY_DRAIN_V_PER_EVENT = 2e-6


class BayModel(PeriodicModel):
    """On-street bay sensor: event-driven occupancy messages plus periodic heartbeats."""

    kind = "bay"
    __slots__ = ("_change_t", "_event_t", "_next_hb", "_start", "drain_v_per_day", "dwell_mean_s",
                 "n_events", "occupied", "sessions_per_day", "v0", "vacancy_mean_s")

    def _setup(self, seed: int, start: float) -> None:
        u = self.rng.uniforms(4)
        z = self.rng.normal()
        self.sessions_per_day = min(45.0, max(6.0, 20.0 * math.exp(0.3 * z)))
        cycle = sig.DAY_S / self.sessions_per_day
        self.dwell_mean_s = BAY_DWELL_SHARE * cycle
        self.vacancy_mean_s = (1.0 - BAY_DWELL_SHARE) * cycle * BAY_VACANCY_SCALE
        # Battery at start: most sensors are young; a few are already low (2.9–3.0 V) or
        # critical (< 2.9 V).
        r = u[0]
        if r < 0.01:
            self.v0 = 2.5 + 0.4 * u[1]
        elif r < 0.03:
            self.v0 = 2.9 + 0.1 * u[1]
        elif r < 0.08:
            self.v0 = 3.0 + 0.45 * u[1]
        else:
            self.v0 = 3.45 + 0.2 * u[1]
        lo, hi = BAY_DRAIN_V_PER_DAY
        self.drain_v_per_day = lo + (hi - lo) * u[2] + self.faults.extra_drain_v_per_day
        self.occupied = u[3] < 0.45 * sig.PARKING_DEMAND[sig.minute_of_day(start)]
        self.n_events = 0
        self._start = start
        self._schedule(start)
        self._next_hb = self.next_t
        self._change_t = start + self._duration(start)
        self._event_t = self._change_t + self._detect_delay()
        self.next_t = min(self._next_hb, self._event_t)

    def _detect_delay(self) -> float:
        lo, hi = BAY_DETECT_S
        return lo + (hi - lo) * self.rng.uniform()

    def _duration(self, t: float) -> float:
        """How long the current state (parked or vacant) lasts from ``t``, seconds."""
        if self.occupied:
            median = self.dwell_mean_s * math.exp(-0.5 * BAY_DWELL_SIGMA ** 2)
            return max(60.0, median * math.exp(BAY_DWELL_SIGMA * self.rng.normal()))
        # Arrivals: Poisson with rate parking_demand(h) / vacancy_mean_s, by thinning.
        lam_max = sig.PARKING_DEMAND_MAX / self.vacancy_mean_s
        t0 = t
        while True:
            u = self.rng.uniforms(2)
            t -= math.log(1.0 - u[0]) / lam_max
            if u[1] * sig.PARKING_DEMAND_MAX < sig.PARKING_DEMAND[sig.minute_of_day(t)]:
                return max(20.0, t - t0)

    def battery_true(self, t: float) -> float:
        """The cell's voltage at ``t`` (V), before measurement effects; never below 2.0."""
        used = self.drain_v_per_day * (t - self._start) / sig.DAY_S \
            + BAY_DRAIN_V_PER_EVENT * self.n_events
        return max(2.0, self.v0 - used)

    def _sample(self, t: float) -> tuple[list[Record], list[float], tuple[Channel, ...]]:
        if self._event_t <= self._next_hb:
            self.occupied = not self.occupied
            self.n_events += 1
            self._change_t += self._duration(self._change_t)
            self._event_t = self._change_t + self._detect_delay()
            self.next_t = min(self._next_hb, self._event_t)
            return [record("occupied", "bool", self.occupied)], [], _NO_CHANNELS
        battery = sig.battery_reading(self.battery_true(t), t, self.rng)
        self._next_hb = self._advance_periodic()
        self.next_t = min(self._next_hb, self._event_t)
        return [record("occupied", "bool", self.occupied)], [battery], sig.channels("bay")


class LotModel(PeriodicModel):
    """Car park or garage: counts entries and exits, reports free spaces against capacity."""

    kind = "lot"
    __slots__ = ("capacity", "dwell_s", "occupied", "residential", "turnover_per_day")

    def attrs(self) -> dict[str, str | int | bool]:
        return {"capacity": self.capacity}

    def _setup(self, seed: int, start: float) -> None:
        u = self.rng.uniforms(4)
        z = self.rng.normal()
        self.residential = u[0] < 0.35
        self.capacity = int(min(3000.0, max(30.0, 300.0 * math.exp(0.8 * z))))
        if self.residential:
            self.turnover_per_day = 1.0 + 1.0 * u[1]
            self.dwell_s = (8.0 + 6.0 * u[2]) * 3600.0
        else:
            self.turnover_per_day = 3.0 + 3.0 * u[1]
            self.dwell_s = (1.5 + 2.0 * u[2]) * 3600.0
        self.occupied = int(self.capacity * (0.2 + 0.4 * u[3]))
        self._schedule(start)

    def _sample(self, t: float) -> tuple[list[Record], list[float], tuple[Channel, ...]]:
        m = sig.minute_of_day(t)
        dt = self.interval_s
        if self.residential:
            demand = sig.RESIDENTIAL_DEMAND[m]
            hazard = sig.RESIDENTIAL_DEPARTURE[m] / self.dwell_s
        else:
            demand = sig.PARKING_DEMAND[m]
            hazard = 1.0 / self.dwell_s
        lam_in = self.capacity * self.turnover_per_day / sig.DAY_S * demand * dt
        lam_out = self.occupied * min(1.0, hazard * dt)
        n_in, n_out = self.rng.generator.poisson((lam_in, lam_out)).tolist()
        n_out = min(n_out, self.occupied)
        n_in = min(n_in, self.capacity - self.occupied + n_out)  # a full car park turns cars away
        self.occupied += n_in - n_out
        self.next_t = self._advance_periodic()
        return [], [n_in, n_out, self.capacity - self.occupied], sig.channels("lot")


MODELS: dict[str, type[DeviceModel]] = {
    m.kind: m for m in (AirModel, WaterModel, NoiseModel, BayModel, LotModel, KitchenModel)}


def make_model(device: Device, seed: int, faults: FaultConfig, start: float) -> DeviceModel:
    """The firmware model of ``device`` for a run with ``seed`` starting at simulated ``start``."""
    try:
        cls = MODELS[device.kind]
    except KeyError:
        raise ValueError(f"no firmware model for device kind {device.kind!r}") from None
    return cls(device, seed, faults, start)
