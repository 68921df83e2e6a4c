"""Misbehaving firmware: fault rates, per-device fault profiles, and per-message faults.

Rates come in three flavours, named by what they apply to:

* **per message** — a probability applied independently to every data message a device
  generates (``spike_rate``, ``stuck_rate``, ``dropout_rate``, ``duplicate_rate``);
* **per device** — the fraction of devices drawn once, when the device is created, to have a
  lasting defect (``skew_future_rate``, ``skew_behind_rate``, ``fast_drain_rate``,
  ``drift_rate``);
* **per device and simulated day** — a hazard: bay sensors failing for good
  (``sensor_death_rate_per_day``);
* **per link and simulated hour** — the rate of a connection dropping
  (``reconnect_rate_per_hour``).

Every decision is drawn from the device's own random stream with a *fixed number of draws per
message*, whether or not faults are enabled: the clean readings of a run with faults equal
those of a run without, message for message, except where a fault hit. The defects added
later (calibration drift, sensor death) draw from a second stream of their own
(:func:`draw_defects`), so adding them changed no reading of the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from firmware_sim.signals import Channel, Stream

#: Uniform draws every data message takes from its device's stream for fault decisions.
FAULT_DRAWS = 9
#: Ordinary clocks are within this many seconds of true time (NTP-synced firmware).
NORMAL_SKEW_LIMIT_S = 2.0


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Fault-injection rates (see the module docstring for what each rate applies to).

    Defaults are small and realistic: a few per mille per message, a few devices per
    thousand with a bad clock, one bay sensor in a hundred with a fast-draining battery,
    three air stations in a hundred drifting. Bay sensors die far faster than in a real fleet
    (0.5 % a day), so that a run of a few simulated hours has some.
    """

    #: per message: one numeric reading replaced by a value far outside its valid range
    spike_rate: float = 0.002
    #: multiplier range of a spike (the result is also forced above the range's maximum)
    spike_factor: tuple[float, float] = (10.0, 100.0)
    #: per message: one numeric channel freezes at its current value ("stuck sensor")
    stuck_rate: float = 0.001
    #: mean length of a stuck episode, simulated seconds (exponential)
    stuck_mean_s: float = 3600.0
    #: per message: generated (its ``seq`` is used) but never sent — a radio drop-out
    dropout_rate: float = 0.003
    #: per message sent (not dropped): the exact same bytes (same ``seq``) published again later
    duplicate_rate: float = 0.002
    #: delay of the re-send, simulated seconds (uniform): a firmware retry after a timeout
    duplicate_delay_s: tuple[float, float] = (2.0, 20.0)
    #: per device: normal clock error σ, seconds (clipped to ±2 s)
    skew_sigma_s: float = 0.5
    #: per device: clock far in the future (the edge rejects its readings)
    skew_future_rate: float = 0.002
    #: offset of a far-future clock, seconds (uniform)
    skew_future_s: tuple[float, float] = (900.0, 7200.0)
    #: per device: clock minutes behind (readings arrive late but valid)
    skew_behind_rate: float = 0.005
    #: lag of a behind clock, seconds (uniform)
    skew_behind_s: tuple[float, float] = (120.0, 900.0)
    #: per bay sensor: battery drains fast (a failing cell, a chatty radio)
    fast_drain_rate: float = 0.01
    #: extra drain of such a battery, volts per simulated day (uniform)
    fast_drain_v_per_day: tuple[float, float] = (0.02, 0.08)
    #: per air station: its optical PM sensor's calibration drifts (fouled optics, humidity
    #: creeping into the cell): PM2.5 and PM10 read ``1 + g`` times the true value, ``g``
    #: growing linearly with time; the hub's peer-drift detector flags the ones that stand
    #: well apart from their district's stations (about twice their middle value or more)
    drift_rate: float = 0.03
    #: how fast ``g`` grows, per simulated day (uniform); one drifting sensor in four reads
    #: low instead (its reading divided by ``1 + g``)
    drift_per_day: tuple[float, float] = (0.05, 0.15)
    #: how long the sensor has been drifting when the run starts, simulated days (uniform)
    drift_age_days: tuple[float, float] = (2.0, 20.0)
    #: per bay sensor and simulated day: the sensor fails for good (a dead cell, flooding,
    #: a snow plough) and falls silent: no data, no heartbeat, no birth after a reconnect;
    #: the hub should count its bay as stale
    sensor_death_rate_per_day: float = 0.005
    #: per link (MQTT connection) and simulated hour: the link drops; the broker publishes
    #: its Will, the link reconnects after a downtime and re-sends every device's birth
    reconnect_rate_per_hour: float = 0.05
    #: how long a dropped link stays down, simulated seconds (uniform)
    reconnect_downtime_s: tuple[float, float] = (5.0, 60.0)

    @classmethod
    def none(cls) -> FaultConfig:
        """No faults at all: perfect clocks, no spikes, drops, duplicates or reconnects."""
        return cls(spike_rate=0.0, stuck_rate=0.0, dropout_rate=0.0, duplicate_rate=0.0,
                   skew_sigma_s=0.0, skew_future_rate=0.0, skew_behind_rate=0.0,
                   fast_drain_rate=0.0, drift_rate=0.0, sensor_death_rate_per_day=0.0,
                   reconnect_rate_per_hour=0.0)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first rate or range that makes no sense."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                lo, hi = v
                if not (0.0 <= lo <= hi and math.isfinite(hi)):
                    raise ValueError(f"FaultConfig.{f.name}={v!r}: need 0 <= low <= high")
            elif not (v >= 0.0 and math.isfinite(v)):
                raise ValueError(f"FaultConfig.{f.name}={v!r}: need a finite value >= 0")
        for name in ("spike_rate", "stuck_rate", "dropout_rate", "duplicate_rate",
                     "fast_drain_rate", "drift_rate"):
            if getattr(self, name) > 1.0:
                raise ValueError(f"FaultConfig.{name} is a probability; got "
                                 f"{getattr(self, name)}")
        if self.skew_future_rate + self.skew_behind_rate > 1.0:
            raise ValueError("FaultConfig: skew_future_rate + skew_behind_rate > 1")
        if self.spike_factor[0] < 1.0:
            raise ValueError("FaultConfig.spike_factor must be >= 1")


def _uniform(bounds: tuple[float, float], u: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * u


@dataclass(slots=True)
class DeviceFaults:
    """A device's lasting defects, drawn once, and its running stuck-sensor state."""

    skew_s: float             # device clock minus true time, seconds
    skew_kind: str            # "normal" (|skew| ≤ 2 s), "future" or "behind"
    extra_drain_v_per_day: float  # added battery drain (bay sensors), V/day; 0 if healthy
    #: channel index → (frozen value, simulated time the episode ends)
    stuck: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: calibration drift (``draw_defects``): gain error growth per simulated second, signed
    #: (< 0: the sensor reads low); 0 if the sensor is healthy
    drift_per_s: float = 0.0
    #: simulated time the drift began (before the run's start)
    drift_since: float = 0.0
    #: simulated time the device fails for good (``inf``: never)
    dies_at: float = math.inf

    def gain(self, t: float) -> float:
        """Calibration factor of the drifting channels at simulated time ``t``: the sensor
        reads ``gain × true value``; 1.0 for a healthy sensor. A sensor reading high reads
        ``1 + g`` times the truth, one reading low ``1 / (1 + g)``, ``g = |rate| × age``."""
        if self.drift_per_s == 0.0:
            return 1.0
        g = abs(self.drift_per_s) * max(0.0, t - self.drift_since)
        return 1.0 + g if self.drift_per_s > 0.0 else 1.0 / (1.0 + g)

    @classmethod
    def draw(cls, cfg: FaultConfig, rng: Stream) -> DeviceFaults:
        """Draw a device's profile: always 4 uniforms and 1 normal from ``rng``."""
        u = rng.uniforms(4)
        z = rng.normal()
        if u[0] < cfg.skew_future_rate:
            skew, kind = _uniform(cfg.skew_future_s, u[1]), "future"
        elif u[0] < cfg.skew_future_rate + cfg.skew_behind_rate:
            skew, kind = -_uniform(cfg.skew_behind_s, u[1]), "behind"
        else:
            lim = NORMAL_SKEW_LIMIT_S
            skew, kind = max(-lim, min(lim, cfg.skew_sigma_s * z)), "normal"
        drain = _uniform(cfg.fast_drain_v_per_day, u[3]) if u[2] < cfg.fast_drain_rate else 0.0
        return cls(skew_s=skew, skew_kind=kind, extra_drain_v_per_day=drain)


@dataclass(frozen=True, slots=True)
class MessageFaults:
    """What the faults did to one data message (read by the runner for its statistics)."""

    dropped: bool = False
    duplicate_after_s: float = 0.0   # > 0: re-send the same bytes this much later (sim s)
    spiked: bool = False
    stuck_started: bool = False
    stuck_readings: int = 0


NO_FAULTS = MessageFaults()

#: Uniform draws :func:`draw_defects` always takes from a device's defect stream.
DEFECT_DRAWS = 5
#: Device kinds whose optical sensor can drift (``FaultConfig.drift_rate``).
DRIFT_KINDS = frozenset({"air"})
#: Device kinds that can fail for good (``FaultConfig.sensor_death_rate_per_day``):
#: battery-powered street sensors; the others are mains-powered.
DEATH_KINDS = frozenset({"bay"})


def draw_defects(cfg: FaultConfig, faults: DeviceFaults, kind: str, start: float,
                 u: list[float]) -> None:
    """Fill ``faults``' calibration drift and death time for a ``kind`` device in a run
    starting at simulated ``start`` (UTC epoch s), from :data:`DEFECT_DRAWS` uniforms ``u``
    of the device's defect stream (a stream of its own: these draws shift nothing else).

    ``u`` is used as: 0 drifting?, 1 drift speed, 2 reads low?, 3 drift age, 4 death time
    (exponential with the configured hazard; one draw whatever the kind).
    """
    if kind in DRIFT_KINDS and u[0] < cfg.drift_rate:
        per_day = _uniform(cfg.drift_per_day, u[1]) * (-1.0 if u[2] < 0.25 else 1.0)
        faults.drift_per_s = per_day / 86400.0
        faults.drift_since = start - _uniform(cfg.drift_age_days, u[3]) * 86400.0
    if kind in DEATH_KINDS and cfg.sensor_death_rate_per_day > 0.0:
        faults.dies_at = start - math.log(1.0 - u[4]) * 86400.0 / cfg.sensor_death_rate_per_day


def spike_value(v: float, ch: Channel, factor: float) -> float:
    """``v`` multiplied far out of ``ch``'s valid range (always above its maximum)."""
    x = max(abs(v) * factor, ch.hi * (1.5 + factor / 20.0))
    return int(x) if ch.is_int else round(x, ch.decimals)


def apply_message_faults(cfg: FaultConfig, dev: DeviceFaults, t: float, values: list[float],
                         chans: tuple[Channel, ...], u: list[float]) -> MessageFaults:
    """Apply per-message faults to ``values`` (in place) for a message generated at ``t``.

    ``u`` holds :data:`FAULT_DRAWS` uniforms from the device's stream, used as: 0 drop-out,
    1 duplicate, 2 duplicate delay, 3 spike, 4 spiked channel, 5 spike factor, 6 stuck,
    7 stuck channel, 8 stuck duration. Stuck channels repeat their frozen value until their
    episode ends; a spike is applied last, on top of anything else.
    """
    n = len(values)
    dropped = u[0] < cfg.dropout_rate
    dup = _uniform(cfg.duplicate_delay_s, u[2]) if u[1] < cfg.duplicate_rate else 0.0
    stuck_started = False
    stuck_readings = 0
    spiked = False
    if n:
        stuck = dev.stuck
        if u[6] < cfg.stuck_rate:
            ch = int(u[7] * n)
            if ch not in stuck:
                until = t - cfg.stuck_mean_s * math.log(1.0 - u[8])
                stuck[ch] = (values[ch], until)
                stuck_started = True
        if stuck:
            for ch, (frozen, until) in list(stuck.items()):
                if t < until:
                    values[ch] = frozen
                    stuck_readings += 1
                else:
                    del stuck[ch]
        if u[3] < cfg.spike_rate:
            ch = int(u[4] * n)
            values[ch] = spike_value(values[ch], chans[ch], _uniform(cfg.spike_factor, u[5]))
            spiked = True
    if not (dropped or dup or spiked or stuck_started or stuck_readings):
        return NO_FAULTS
    return MessageFaults(dropped, dup, spiked, stuck_started, stuck_readings)


def link_fault_gap_s(cfg: FaultConfig, rng: np.random.Generator) -> float:
    """Simulated seconds until a link's next drop (exponential); ``inf`` if disabled.

    Always takes one draw from ``rng``.
    """
    u = float(rng.random())
    if cfg.reconnect_rate_per_hour <= 0.0:
        return math.inf
    return -math.log(1.0 - u) * 3600.0 / cfg.reconnect_rate_per_hour


def link_downtime_s(cfg: FaultConfig, rng: np.random.Generator) -> float:
    """Simulated seconds a dropped link stays down; one draw from ``rng``."""
    return _uniform(cfg.reconnect_downtime_s, float(rng.random()))
