"""Pure signal models: (simulated UTC time, per-device parameters, rng) → reading values.

Every function here is pure apart from the random draws it takes from the :class:`Stream` it
is given, and it always takes the *same number* of draws, so a device's random stream stays
aligned message after message (that is what makes the simulator deterministic per device).

Times are UTC seconds since the epoch (float). Daily cycles run on Chongqing local time
(UTC+8, no daylight saving) and are tabulated per minute of the day (the profiles are smooth;
a table lookup is several times cheaper than evaluating them); seasons follow a 365.2425-day
year peaking in mid-July. Slow, smooth variability ("weather", water-quality drift) comes from
:class:`Drift`, a sum of a few sinusoids with per-device periods and phases: a deterministic
function of time, so it needs no state. Fast variability is white noise drawn from the stream.

Values are clamped to the sensor catalogue's valid range (``seeds/catalogue.csv``) and
rounded to the precision a real instrument reports (see :data:`DECIMALS`). Faults that push
values out of range are applied later (``firmware_sim.faults``), never here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from seeds.city import catalogue_by_kind, load_catalogue

LOCAL_UTC_OFFSET_S = 8 * 3600  # Chongqing: China Standard Time, UTC+8
DAY_S = 86_400.0
#: Day of year (0-based, local) at which the seasonal cycle peaks: ~19 July.
SUMMER_PEAK_DAY = 200.0
TAU = 2.0 * math.pi
_SEASON_PHASE = TAU * SUMMER_PEAK_DAY / 365.2425

#: Reported precision (decimal places) per (kind, measurement), from the catalogue's
#: ``resolution`` (the hub scores spikes against the same steps). Integers have 0 and are
#: ints. Water: mg/L to 2 places, but NH3-N and TP to 3 (their class I limits are 0.15 and
#: 0.02 mg/L).
DECIMALS: dict[tuple[str, str], int] = {
    (m.kind, m.name): max(0, round(-math.log10(m.resolution))) for m in load_catalogue()}

#: The numeric measurements each kind's periodic message carries, in message order.
CHANNELS: dict[str, tuple[str, ...]] = {
    "air": ("pm2_5", "pm10", "so2", "no2", "co", "o3", "temp", "humidity"),
    "water": ("ph", "do", "codmn", "nh3n", "tp", "turbidity", "water_temp"),
    "noise": ("laeq", "lmax"),
    "bay": ("battery",),
    "lot": ("entries", "exits", "free"),
    "kitchen": ("cold_temp", "prep_temp", "humidity", "gas", "co", "fume", "uv_minutes"),
}


@dataclass(frozen=True, slots=True)
class Channel:
    """A numeric measurement as a device reports it: catalogue name, unit, range, precision."""

    name: str
    unit: str
    lo: float
    hi: float
    decimals: int
    is_int: bool

    def clean(self, x: float) -> float:
        """Clamp ``x`` into the valid range and round to the reported precision."""
        if x < self.lo:
            x = self.lo
        elif x > self.hi:
            x = self.hi
        if self.is_int:
            return int(x)
        return round(x, self.decimals)


@cache
def channels(kind: str) -> tuple[Channel, ...]:
    """The :class:`Channel` specs of ``kind``'s periodic message, from the catalogue."""
    cat = catalogue_by_kind()[kind]
    out = []
    for name in CHANNELS[kind]:
        m = cat[name]
        out.append(Channel(name, m.unit, m.min, m.max, DECIMALS[(kind, name)], m.dtype == "int"))
    return tuple(out)


@cache
def _bounds(kind: str) -> tuple[tuple[float, float, int], ...]:
    return tuple((c.lo, c.hi, c.decimals) for c in channels(kind))


def clean_all(kind: str, values: Sequence[float]) -> list[float]:
    """Clamp and round float ``values`` of ``kind``'s channels (same as ``Channel.clean``)."""
    return [round(lo if v < lo else hi if v > hi else v, d)
            for v, (lo, hi, d) in zip(values, _bounds(kind), strict=True)]


# -- random draws ----------------------------------------------------------------------------
class Stream:
    """A device's random stream: its ``numpy.random.Generator``, read in blocks.

    A numpy call costs microseconds however few numbers it returns, so uniforms and normals
    are drawn :data:`BLOCK` at a time and handed out from lists. What a caller receives is a
    deterministic function of the generator's seed and the sequence of requests.
    """

    BLOCK = 32
    __slots__ = ("_u", "_ui", "_z", "_zi", "generator")

    def __init__(self, generator: np.random.Generator) -> None:
        self.generator = generator
        self._u: list[float] = []
        self._ui = 0
        self._z: list[float] = []
        self._zi = 0

    def uniforms(self, n: int) -> list[float]:
        """``n`` uniforms in [0, 1)."""
        i = self._ui
        j = i + n
        if j > len(self._u):
            self._u = self._u[i:] + self.generator.random(max(self.BLOCK, n)).tolist()
            i, j = 0, n
        self._ui = j
        return self._u[i:j]

    def uniform(self) -> float:
        i = self._ui
        if i >= len(self._u):
            self._u = self.generator.random(self.BLOCK).tolist()
            i = 0
        self._ui = i + 1
        return self._u[i]

    def normals(self, n: int) -> list[float]:
        """``n`` standard normals."""
        i = self._zi
        j = i + n
        if j > len(self._z):
            self._z = self._z[i:] + self.generator.standard_normal(max(self.BLOCK, n)).tolist()
            i, j = 0, n
        self._zi = j
        return self._z[i:j]

    def normal(self) -> float:
        i = self._zi
        if i >= len(self._z):
            self._z = self.generator.standard_normal(self.BLOCK).tolist()
            i = 0
        self._zi = i + 1
        return self._z[i]


# -- time of day and season ------------------------------------------------------------------
def local_hour(t: float) -> float:
    """Hour of the day in Chongqing local time, in [0, 24)."""
    return ((t + LOCAL_UTC_OFFSET_S) % DAY_S) / 3600.0


def minute_of_day(t: float) -> int:
    """Minute of the local day, 0..1439 (the index into the daily profile tables)."""
    return int((t + LOCAL_UTC_OFFSET_S) % DAY_S) // 60


def local_midnight(t: float) -> float:
    """UTC time of the local midnight that starts the day containing ``t``."""
    return t - ((t + LOCAL_UTC_OFFSET_S) % DAY_S)


def seasonal(t: float) -> float:
    """Season in [-1, 1]: +1 in mid-July (Chongqing's hottest), -1 in mid-January."""
    return math.cos(TAU * (t + LOCAL_UTC_OFFSET_S) / (DAY_S * 365.2425) - _SEASON_PHASE)


def bump(h: float, center: float, width: float) -> float:
    """Gaussian bump on the 24 h clock (wraps at midnight); 1 at ``center``, σ = ``width`` h."""
    d = (h - center + 12.0) % 24.0 - 12.0
    return math.exp(-0.5 * (d / width) ** 2)


def diurnal(h: float, peak_hour: float) -> float:
    """Cosine daily cycle in [-1, 1], +1 at ``peak_hour``."""
    return math.cos(TAU * (h - peak_hour) / 24.0)


def dayness(h: float) -> float:
    """≈1 in the daytime period of GB 3096 (06:00–22:00), ≈0 at night; smooth edges."""
    return 1.0 / ((1.0 + math.exp(-2.0 * (h - 6.0))) * (1.0 + math.exp(2.0 * (h - 22.0))))


def traffic(h: float) -> float:
    """Road-traffic intensity in [0.1, 1]: rush hours 07–09 and 17–19 peak, ~0.12 at 03:00."""
    x = 0.12 + 0.45 * dayness(h) + 0.45 * bump(h, 8.0, 0.8) + 0.40 * bump(h, 18.0, 1.0)
    return min(1.0, x)


def service(h: float) -> float:
    """Kitchen activity in [0, 1]: prep from 09:30, lunch ~12:15, dinner ~18:30."""
    x = 0.25 * bump(h, 10.0, 0.8) + bump(h, 12.2, 0.8) + bump(h, 18.6, 1.0)
    return min(1.0, x)


def _mean_over_day(f: Callable[[float], float]) -> float:
    return sum(f(i / 60.0) for i in range(1440)) / 1440.0


def _parking_shape(h: float) -> float:
    return 0.12 + 0.5 * dayness(h) + 0.9 * bump(h, 8.6, 1.0) + 0.5 * bump(h, 12.5, 1.5) \
        + 0.8 * bump(h, 18.3, 1.2)


def _residential_in(h: float) -> float:
    return 0.15 + 0.4 * dayness(h) + 2.2 * bump(h, 19.0, 1.8)


def _residential_out(h: float) -> float:
    return 0.25 + 0.4 * dayness(h) + 2.5 * bump(h, 8.0, 1.2)


def _ai_shape(h: float) -> float:
    return 0.15 + 2.2 * service(h) + 0.35 * bump(h, 2.5, 2.0)


_PARKING_MEAN = _mean_over_day(_parking_shape)
_RES_IN_MEAN = _mean_over_day(_residential_in)
_RES_OUT_MEAN = _mean_over_day(_residential_out)
_AI_MEAN = _mean_over_day(_ai_shape)


def parking_demand(h: float) -> float:
    """Relative arrival rate of cars (mean 1 over a day): rush-hour peaks, quiet nights."""
    return _parking_shape(h) / _PARKING_MEAN


def residential_demand(h: float) -> float:
    """Relative arrival rate at residential garages (mean 1 over a day): after work."""
    return _residential_in(h) / _RES_IN_MEAN


def residential_departure(h: float) -> float:
    """Relative departure hazard at residential garages (mean 1 over a day): mornings."""
    return _residential_out(h) / _RES_OUT_MEAN


def ai_event_relative_rate(h: float) -> float:
    """Relative rate of AI-camera events (mean 1 over a day): service hours, rodents at night."""
    return _ai_shape(h) / _AI_MEAN


def _table(f: Callable[[float], float]) -> tuple[float, ...]:
    """``f`` at the middle of every minute of the day."""
    return tuple(f((i + 0.5) / 60.0) for i in range(1440))


#: Per-minute tables of the daily profiles (index: :func:`minute_of_day`).
TRAFFIC = _table(traffic)
DAYNESS = _table(dayness)
SERVICE = _table(service)
PARKING_DEMAND = _table(parking_demand)
RESIDENTIAL_DEMAND = _table(residential_demand)
RESIDENTIAL_DEPARTURE = _table(residential_departure)
AI_EVENT_RATE = _table(ai_event_relative_rate)
#: cos(2π(h − 15)/24): the afternoon-peaking cycle of temperature (and its mirror, humidity)
AFTERNOON = _table(lambda h: diurnal(h, 15.0))
#: photochemistry: max(0, cos(2π(h − 14.5)/24))^1.5
SUNLIGHT = _table(lambda h: max(0.0, diurnal(h, 14.5)) ** 1.5)
#: night-time inversion boost of particulates, peaking ~05:00
INVERSION = _table(lambda h: 1.0 + 0.25 * bump(h, 5.0, 2.5))
#: Largest values of the tabulated rates (for thinning Poisson processes).
PARKING_DEMAND_MAX = max(PARKING_DEMAND)
AI_EVENT_RATE_MAX = max(AI_EVENT_RATE)


# -- slow deterministic variability ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Drift:
    """Smooth variability: a normalised sum of three sinusoids, value in [-1, 1], mean ≈ 0.

    Periods are drawn log-uniformly between the bounds given to :meth:`draw`; the sum is
    divided by the sum of the weights so that it never leaves [-1, 1].
    """

    omega: tuple[float, float, float]    # angular frequencies, rad/s
    phases: tuple[float, float, float]
    weights: tuple[float, float, float]

    @classmethod
    def draw(cls, rng: Stream, min_period_s: float, max_period_s: float) -> Drift:
        """Random periods (log-uniform in the bounds), phases and weights: 9 uniforms."""
        u = rng.uniforms(9)
        lo, hi = math.log(min_period_s), math.log(max_period_s)
        omega = tuple(TAU / math.exp(lo + (hi - lo) * u[i]) for i in range(3))
        raw = [0.3 + u[6 + i] for i in range(3)]
        total = sum(raw)
        return cls((omega[0], omega[1], omega[2]), (TAU * u[3], TAU * u[4], TAU * u[5]),
                   (raw[0] / total, raw[1] / total, raw[2] / total))

    def __call__(self, t: float) -> float:
        (o0, o1, o2), (p0, p1, p2), (w0, w1, w2) = self.omega, self.phases, self.weights
        return (w0 * math.sin(o0 * t + p0) + w1 * math.sin(o1 * t + p1)
                + w2 * math.sin(o2 * t + p2))


# -- air quality (HJ 633 pollutants + met) ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class AirSite:
    """A roadside or background air station. Concentrations µg/m³ (CO mg/m³), °C, %RH."""

    pm_base: float          # annual-mean PM2.5 at this site, µg/m³ (Chongqing ≈ 35)
    pm_ratio: float         # PM10 / PM2.5
    so2_base: float         # µg/m³
    no2_base: float         # µg/m³, daily mean at average traffic
    co_base: float          # mg/m³
    o3_base: float          # µg/m³, summer-afternoon peak scale
    traffic_exposure: float  # 0.3 (park, background) … 1.5 (kerbside)
    temp_offset: float      # °C, urban heat island / altitude
    regional: Drift         # district-wide weather (shared by the district's stations)
    local: Drift            # this station's own wiggles (hours to days)

    @classmethod
    def draw(cls, rng: Stream, regional: Drift) -> AirSite:
        u = rng.uniforms(6)
        site = math.exp(0.25 * (u[0] - 0.5) * 2)
        exposure = 0.3 + 1.2 * u[1]
        return cls(pm_base=35.0 * site, pm_ratio=1.4 + 0.5 * u[2],
                   so2_base=5.0 + 7.0 * u[3], no2_base=22.0 + 18.0 * exposure,
                   co_base=0.55 + 0.35 * exposure * site, o3_base=120.0 + 60.0 * u[4],
                   traffic_exposure=exposure, temp_offset=-1.5 + 3.0 * u[5],
                   regional=regional, local=Drift.draw(rng, 2 * 3600.0, 2 * DAY_S))


def air(t: float, p: AirSite, rng: Stream, pm_gain: float = 1.0) -> list[float]:
    """pm2_5, pm10, so2, no2, co, o3, temp, humidity at ``t`` (clamped and rounded).

    ``pm_gain``: calibration factor of the PM sensor (1.0 healthy; a drifting optical
    sensor's, ``faults.DeviceFaults.gain``), applied to PM2.5 and PM10 before rounding.

    Shapes: traffic pollutants (NO2, CO, PM) follow rush hours and the night-time inversion;
    O3 peaks mid-afternoon and is stronger in summer; PM is higher in winter; temperature
    peaks ~15:00 and humidity is its mirror image. 8 normals.
    """
    z = rng.normals(8)
    m = minute_of_day(t)
    s = seasonal(t)
    tr = TRAFFIC[m]
    w = p.regional(t)
    loc = p.local(t)
    aft = AFTERNOON[m]
    exp = math.exp
    pm25 = (p.pm_base * (1.0 - 0.38 * s) * (1.0 + 0.6 * p.traffic_exposure * (tr - 0.5))
            * INVERSION[m] * exp(0.5 * w + 0.15 * loc + 0.08 * z[0]))
    pm10 = pm25 * p.pm_ratio * exp(0.05 * z[1])
    so2 = p.so2_base * (0.9 + 0.2 * tr) * exp(0.3 * w + 0.1 * z[2])
    no2 = (p.no2_base * (0.45 + 0.9 * tr) * (1.0 - 0.15 * s)
           * exp(0.25 * w + 0.1 * loc + 0.08 * z[3]))
    co = p.co_base * (0.7 + 0.6 * tr) * (1.0 - 0.2 * s) * exp(0.3 * w + 0.06 * z[4])
    o3 = (p.o3_base * (0.75 + 0.35 * s) * (0.15 + 0.85 * SUNLIGHT[m]) * exp(0.2 * loc - 0.1 * w)
          - 0.1 * no2 * tr) * exp(0.06 * z[5])
    temp = 18.5 + 9.5 * s + p.temp_offset + 4.0 * aft + 2.0 * loc + 0.15 * z[6]
    rh = 76.0 - 13.0 * aft + 8.0 * w - 4.0 * loc + 1.0 * z[7]
    return clean_all("air", (pm25 * pm_gain, pm10 * pm_gain, so2, no2, co, max(2.0, o3), temp,
                             rh))


# -- environmental noise (GB 3096) -----------------------------------------------------------
#: Daytime LAeq limits by functional zone (GB 3096-2008): 1, 2, 3, 4a; nights are 10–15 dB lower.
ZONE_DAY_DB = (55.0, 60.0, 65.0, 70.0)


@dataclass(frozen=True, slots=True)
class NoiseSite:
    """A sound-level monitor. Levels in dB(A)."""

    day_db: float        # typical daytime LAeq at this site
    night_drop_db: float  # how much quieter the night is
    traffic_db: float    # extra dB at full traffic vs average
    local: Drift
    zone: str = "2"      # GB 3096 functional zone the monitor stands in

    @classmethod
    def draw(cls, rng: Stream) -> NoiseSite:
        u = rng.uniforms(4)
        zone = min(3, int(u[0] * 4))
        # Most monitors sit near their zone's limit, some above it.
        day = ZONE_DAY_DB[zone] - 6.0 + 9.0 * u[1]
        return cls(day_db=day, night_drop_db=7.0 + 6.0 * u[2], traffic_db=2.0 + 4.0 * u[3],
                   local=Drift.draw(rng, 3600.0, DAY_S), zone=("1", "2", "3", "4a")[zone])


def noise(t: float, p: NoiseSite, rng: Stream) -> list[float]:
    """laeq, lmax in dB(A) for the reporting interval ending at ``t``. 1 normal, 1 uniform.

    LAeq drops at night (22:00–06:00) and rises with rush-hour traffic; Lmax is LAeq plus an
    exponential excess (a passing truck, a horn) of 6–46 dB.
    """
    z = rng.normal()
    u = rng.uniform()
    m = minute_of_day(t)
    laeq = (p.day_db - p.night_drop_db * (1.0 - DAYNESS[m]) + p.traffic_db * (TRAFFIC[m] - 0.55)
            + 1.5 * p.local(t) + 1.2 * z)
    lmax = laeq + 6.0 + min(40.0, -7.0 * math.log(1.0 - u))
    return clean_all("noise", (laeq, lmax))


# -- surface water (GB 3838) -----------------------------------------------------------------
#: Class boundaries (I..V) per parameter, GB 3838-2002, mg/L; DO is a lower bound.
WATER_CLASS_LIMITS: dict[str, tuple[float, ...]] = {
    "do": (7.5, 6.0, 5.0, 3.0, 2.0),
    "codmn": (2.0, 4.0, 6.0, 10.0, 15.0),
    "nh3n": (0.15, 0.5, 1.0, 1.5, 2.0),
    "tp": (0.02, 0.1, 0.2, 0.3, 0.4),
}
_WATER_LOW = {"do": 9.0, "codmn": 1.0, "nh3n": 0.05, "tp": 0.01}


def class_value(q: float, param: str) -> float:
    """The concentration of ``param`` at quality level ``q`` (class units).

    ``q`` in (k-1, k] lands in class k: q = 2.5 is the middle of class III's band. Linear between
    boundaries, extended below class I and beyond class V (劣V).
    """
    lim = WATER_CLASS_LIMITS[param]
    pts = (_WATER_LOW[param], *lim)  # at q = 0, 1, 2, 3, 4, 5
    if q <= 0.0:
        return pts[0]
    if q >= 5.0:
        return lim[4] + (lim[4] - lim[3]) * (q - 5.0)
    i = int(q)
    return pts[i] + (pts[i + 1] - pts[i]) * (q - i)


@dataclass(frozen=True, slots=True)
class WaterSite:
    """An automatic surface-water station on a river (Yangtze / Jialing and tributaries)."""

    q: float                # overall quality level in class units (1.5 → class II)
    q_offsets: tuple[float, float, float, float]  # per-parameter deviation (do, codmn, nh3n, tp)
    ph_base: float
    turbidity_base: float   # NTU
    temp_offset: float      # °C
    drift: Drift            # slow (days–weeks) quality drift

    @classmethod
    def draw(cls, rng: Stream) -> WaterSite:
        u = rng.uniforms(9)
        # Most stations class II–III, some IV, a few V or worse.
        if u[0] < 0.75:
            q = 0.7 + 2.0 * u[1]
        elif u[0] < 0.92:
            q = 2.9 + 1.0 * u[1]
        else:
            q = 3.9 + 1.6 * u[1]
        offsets = (0.5 * (u[2] - 0.5), 0.6 * (u[3] - 0.5), 0.6 * (u[4] - 0.5), 0.6 * (u[5] - 0.5))
        return cls(q=q, q_offsets=offsets, ph_base=7.3 + 0.9 * u[6],
                   turbidity_base=8.0 * math.exp(2.5 * u[7]), temp_offset=-1.5 + 3.0 * u[8],
                   drift=Drift.draw(rng, 2 * DAY_S, 20 * DAY_S))


def water_class(param: str, value: float) -> int:
    """GB 3838 class (1..5, 6 for worse than V) of one parameter's value."""
    lim = WATER_CLASS_LIMITS[param]
    for k, limit in enumerate(lim, start=1):
        if (value >= limit) if param == "do" else (value <= limit):
            return k
    return 6


def water(t: float, p: WaterSite, rng: Stream) -> list[float]:
    """ph, do, codmn, nh3n, tp, turbidity, water_temp at ``t`` (mg/L, NTU, °C). 7 normals.

    Quality drifts slowly (days to weeks) around the station's class; summer runoff raises
    turbidity, CODMn and TP; DO follows photosynthesis (afternoon high, pre-dawn low) and drops
    in warm water.
    """
    z = rng.normals(7)
    m = minute_of_day(t)
    s = seasonal(t)
    d = p.drift(t)
    q = p.q + 0.5 * d + 0.15 * max(0.0, s)
    o = p.q_offsets
    aft = AFTERNOON[m]
    ph = p.ph_base + 0.12 * aft + 0.1 * d + 0.02 * z[0]
    do = class_value(q + o[0], "do") * (1.0 - 0.07 * s) + 0.5 * aft + 0.05 * z[1]
    codmn = class_value(q + o[1] + 0.15 * s, "codmn") * math.exp(0.03 * z[2])
    nh3n = class_value(q + o[2], "nh3n") * math.exp(0.04 * z[3])
    tp = class_value(q + o[3] + 0.2 * s, "tp") * math.exp(0.04 * z[4])
    turbidity = p.turbidity_base * (1.0 + 1.5 * max(0.0, s)) * math.exp(0.5 * d + 0.05 * z[5])
    wt = 18.5 + 8.0 * s + p.temp_offset + 0.6 * aft + 0.05 * z[6]
    return clean_all("water", (ph, do, codmn, nh3n, tp, turbidity, wt))


# -- open-kitchen monitoring (明厨亮灶) ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KitchenSite:
    """A restaurant back kitchen: cold room, prep room (专间), cooking line, UV lamps."""

    frozen: bool              # cold room is a freezer (−20…−1 °C) or chiller (0…10 °C)
    cold_setpoint: float      # °C
    defrost_period_s: float   # defrost cycle every 6 or 8 h
    defrost_phase_s: float
    defrost_len_s: float      # 20–30 min
    defrost_rise: float       # °C above setpoint at the defrost peak
    prep_base: float          # °C, prep room with its own AC
    prep_heat: float          # °C added at full service
    gas_base: float           # %LEL
    burners: float            # %LEL added at full service (burners lit, no leak)
    co_base: float            # ppm
    co_service: float         # ppm added at full service (poor extraction → high)
    fume_idle: float          # mg/m³ after the purifier, no cooking
    fume_service: float       # mg/m³ added at full service (some kitchens exceed 2.0)
    uv_sessions: tuple[tuple[float, float], ...]  # (local start hour, minutes) each day

    @classmethod
    def draw(cls, rng: Stream) -> KitchenSite:
        u = rng.uniforms(21)
        frozen = u[0] < 0.4
        setpoint = -18.0 + 3.0 * (u[1] - 0.5) if frozen else 2.0 + 3.0 * u[1]
        period = 6 * 3600.0 if u[2] < 0.5 else 8 * 3600.0
        # UV: most kitchens run 40–60 min a day; ~12 % fall short of the 30 min requirement.
        if u[3] < 0.12:
            sessions: tuple[tuple[float, float], ...] = ((14.0 + u[4], 10.0 + 15.0 * u[5]),)
        elif u[3] < 0.6:
            sessions = ((5.5 + u[4], 40.0 + 20.0 * u[5]),)
        else:
            sessions = ((14.0 + u[4], 20.0 + 10.0 * u[5]), (21.5 + u[6], 20.0 + 15.0 * u[7]))
        # Fume after the purifier: ~15 % of kitchens have a poor one and exceed 2.0 mg/m³.
        fume_service = 0.3 + 1.0 * u[8] + (1.4 + 1.0 * u[9] if u[10] < 0.15 else 0.0)
        return cls(frozen=frozen, cold_setpoint=setpoint, defrost_period_s=period,
                   defrost_phase_s=period * u[11], defrost_len_s=1200.0 + 600.0 * u[12],
                   defrost_rise=(9.0 if frozen else 5.0) * (0.7 + 0.6 * u[13]),
                   prep_base=19.0 + 3.5 * u[14], prep_heat=1.5 + 3.5 * u[15],
                   gas_base=0.3 * u[16], burners=0.5 + 2.0 * u[17], co_base=1.0 + 3.0 * u[18],
                   co_service=5.0 + 25.0 * u[19], fume_idle=0.03 + 0.12 * u[20],
                   fume_service=fume_service, uv_sessions=sessions)


def uv_minutes_today(t: float, sessions: tuple[tuple[float, float], ...]) -> float:
    """Minutes of UV disinfection since local midnight at ``t`` (pure; resets each day)."""
    since_midnight_h = local_hour(t)
    total = 0.0
    for start_h, minutes in sessions:
        elapsed = (since_midnight_h - start_h) * 60.0
        if elapsed > 0.0:
            total += min(minutes, elapsed)
    return total


def defrost_offset(t: float, p: KitchenSite) -> float:
    """°C the cold room is above setpoint because of a defrost cycle (0 outside one)."""
    x = (t - p.defrost_phase_s) % p.defrost_period_s
    if x < p.defrost_len_s:
        return p.defrost_rise * math.sin(math.pi * x / p.defrost_len_s)
    # Recovery: the compressor pulls the room back down over ~10 min after the heater stops.
    after = x - p.defrost_len_s
    if after > 3600.0:
        return 0.0
    return 0.3 * p.defrost_rise * math.exp(-after / 600.0) * (1.0 - math.exp(-after / 60.0))


def kitchen(t: float, p: KitchenSite, rng: Stream) -> list[float]:
    """cold_temp, prep_temp, humidity, gas, co, fume, uv_minutes at ``t``. 6 normals.

    Units: °C, °C, %RH, %LEL, ppm, mg/m³, min. Cooking (lunch, dinner) drives prep-room
    temperature, humidity, gas, CO and fume; cold rooms hold their setpoint apart from
    defrost cycles and door openings during service.
    """
    z = rng.normals(6)
    s = seasonal(t)
    sv = SERVICE[minute_of_day(t)]
    cold = p.cold_setpoint + defrost_offset(t, p) + 0.8 * sv * abs(z[0]) + 0.2 * z[1]
    prep = p.prep_base + 1.2 * s + p.prep_heat * sv + 0.25 * z[2]
    rh = 58.0 + 14.0 * sv + 6.0 * s + 2.0 * z[3]
    gas = p.gas_base + p.burners * sv + 0.1 * abs(z[4])
    co = p.co_base + p.co_service * sv + 0.8 * abs(z[5])
    fume = (p.fume_idle + p.fume_service * sv) * math.exp(0.2 * z[4])
    uv = uv_minutes_today(t, p.uv_sessions)
    return clean_all("kitchen", (cold, prep, rh, gas, co, fume, uv))


#: AI-camera events (明厨亮灶) and their relative frequency during opening hours; at night
#: (closed kitchen) nearly every event is a rodent.
AI_EVENT_WEIGHTS_DAY: tuple[tuple[str, float], ...] = (
    ("no_hat_mask", 0.32), ("no_work_clothes", 0.2), ("phone_use", 0.2), ("smoking", 0.14),
    ("rodent", 0.08), ("unattended_flame", 0.06))


def ai_event_name(h: float, u: float) -> str:
    """Which event the camera flags, from a uniform ``u`` in [0, 1) at local hour ``h``."""
    if dayness(h) < 0.5 and service(h) < 0.1:
        return "rodent" if u < 0.85 else "unattended_flame"
    acc = 0.0
    for name, w in AI_EVENT_WEIGHTS_DAY:
        acc += w
        if u < acc:
            return name
    return AI_EVENT_WEIGHTS_DAY[-1][0]


# -- parking ---------------------------------------------------------------------------------
def battery_reading(v_true: float, t: float, rng: Stream) -> float:
    """Measured battery voltage (V): the true voltage, sagging ~3 mV/°C below 20 °C, ± 5 mV.

    1 normal.
    """
    temp = 18.5 + 9.5 * seasonal(t) + 4.0 * AFTERNOON[minute_of_day(t)]
    v = v_true + 0.003 * min(0.0, temp - 20.0) + 0.005 * rng.normal()
    return clean_all("bay", (v,))[0]
