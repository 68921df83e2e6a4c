"""What the operations centre acts on, computed live from the hub's arrays.

``CityAnalytics`` is the glue between the hub's data (readings resolved to series and
devices, closed windows) and the pure kernels of the analytics modules; it keeps no
per-reading Python state and does no I/O. It returns rendered line protocol and alarm
messages; the hub writes and publishes them.

Inputs and outputs (measurements are documented in ``docs/architecture.md``):

* raw readings → data quality (``hub.quality``), parking bays (``hub.parking``), lots,
  kitchen alarms (``hub.kitchen``), stuck and spike anomalies (``hub.anomaly``), and
  per-minute percentiles per district and measurement (``hub.sketch``);
* final 1 min windows → noise exceedance (``hub.noise``);
* final 1 h windows → hourly AQI per station and district (``hub.aqi``), water class
  (``hub.water``), peer drift of air stations; the hour in progress → provisional AQI;
* each minute (hub time) → quality, parking and open-alarm snapshots, completed hours of
  completeness, local day ends (daily AQI, UV and AI-camera kitchen rules).

Device metadata (lot capacity, noise zone, freezer or chiller) comes from birth messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numba import njit

from citybrain import topics
from hub import kitchen as kt
from hub.aggregation import Emission
from hub.anomaly import DriftDetector, SpikeDetector, StuckDetector, scan_stuck_and_spikes
from hub.aqi import POLLUTANTS, AirQualityTracker, group_mean
from hub.arrays import Column
from hub.kernel_config import CACHE, NOGIL
from hub.live import LiveState
from hub.noise import noise_exceedance, zone_code
from hub.parking import BayTracker, group_lot_occupancy, lot_occupancy
from hub.points import EntityPoints
from hub.quality import CompletenessRows, DataQuality
from hub.series import (
    GLOBAL_CODE,
    GLOBAL_NAMES,
    KEY_GLOBAL_CODE,
    KEY_KIND_CODE,
    KIND_CODE,
    SeriesRegistry,
    city_series,
    presized,
)
from hub.sketch import LogHistogram
from hub.water import classify_water
from hub.window import WindowBatch
from seeds.city import City, load_catalogue

log = logging.getLogger("citybrain.analytics")

S = 1_000_000_000
MINUTE_NS = 60 * S
HOUR_NS = 3600 * S
DAY_NS = 86400 * S
TZ_NS = 8 * 3600 * S  # Chongqing local time, UTC+8

AQI_FIELDS = ["aqi", "category", "primary_mask", "final", "iaqi_pm2_5", "iaqi_pm10",
              "iaqi_so2", "iaqi_no2", "iaqi_co", "iaqi_o3", "iaqi_o3_8h", "o3_8h"]
AQI_INT = ["aqi", "category", "primary_mask", "final"]
# Readings that are events or counters, not levels: no stuck/spike scoring for them.
NOT_SCORED = {"occupied", "ai_event", "entries", "exits", "uv_minutes"}
SCORED_NAMES = frozenset(GLOBAL_NAMES) - NOT_SCORED
# Levels that legitimately hold one value for hours, so a flat line is no sign of a stuck
# sensor: spikes are scored, stuck runs are not reported. (kind, measurement): a bay battery
# drains ~1 mV a day in 10 mV steps (one value for days); a lot's free spaces sit at 0
# while it is full; a closed kitchen's gas, CO and fume sensors sit at their baseline all
# night (an air station's CO keeps moving: it is still judged).
NOT_STUCK = {("bay", "battery"), ("lot", "free"), ("kitchen", "gas"), ("kitchen", "co"),
             ("kitchen", "fume")}
PCT_Q = np.array([0.5, 0.95, 0.99])

#: A batch spanning more event-time minutes than this is split with ``np.unique`` (the
#: counting sort of ``_split_by_minute`` needs a counter per minute of the span).
PCT_SPLIT_MINUTES = 64


@njit(cache=CACHE, nogil=NOGIL)
def _split_by_minute(ts_ns, first, series, pct_group, start, o_group, o_value, value
                     ):  # pragma: no cover
    """Stable counting sort of the readings by event-time minute ``ts_ns // MINUTE_NS -
    first`` (every one in ``[0, len(start) - 1)``): minute ``first + m``'s readings, in
    batch order, are ``o_group[start[m]:start[m + 1]]`` (their ``pct_group[series]``) and
    ``o_value[...]`` afterwards. ``start``: int64 zeros; ``o_*``: ``[n]`` outputs, except
    for one minute: then the values are ``value`` itself and ``o_value`` is not used."""
    n_min = start.shape[0] - 1
    if n_min == 1:  # the usual case: only the groups are needed
        for i in range(ts_ns.shape[0]):
            o_group[i] = pct_group[series[i]]
        start[1] = ts_ns.shape[0]
        return
    if n_min == 2:  # a batch across one minute's end. Both cursors are registers: a
        # cursor array would chain every placement to the previous one's store
        # (store-to-load forwarding: ~3x the time of this whole pass, measured).
        edge = (first + 1) * MINUTE_NS
        c0 = 0
        for i in range(ts_ns.shape[0]):
            c0 += ts_ns[i] < edge
        start[1] = c0
        start[2] = ts_ns.shape[0]
        j0 = 0
        j1 = c0
        for i in range(ts_ns.shape[0]):
            early = ts_ns[i] < edge
            j = j0 if early else j1
            o_group[j] = pct_group[series[i]]
            o_value[j] = value[i]
            j0 += early
            j1 += 1 - early
        return
    for i in range(ts_ns.shape[0]):
        start[ts_ns[i] // MINUTE_NS - first + 1] += 1
    for m in range(n_min):
        start[m + 1] += start[m]
    fill = start[:n_min].copy()
    for i in range(ts_ns.shape[0]):
        m = ts_ns[i] // MINUTE_NS - first
        j = fill[m]
        o_group[j] = pct_group[series[i]]
        o_value[j] = value[i]
        fill[m] = j + 1


# Which state tracker a series' readings feed (``CityAnalytics.s_role``); 0: none of them.
ROLE_BAY_OCCUPIED = 1
ROLE_BAY_BATTERY = 2
ROLE_LOT_FREE = 3
ROLE_KITCHEN = 4
N_ROLES = 5  # _split_by_role names the four roles one by one: change it with them


@njit(cache=CACHE, nogil=NOGIL)
def _split_by_role(series, device, ts_ns, value, role_of, code_of, start, o_code, o_device,
                   o_ts, o_value):  # pragma: no cover
    """Stable counting sort of the readings by ``role_of[series]`` (int8 ROLE_* codes, 1..4;
    0 = none, left out): role ``r``'s readings, in batch order, are
    ``o_*[start[r]:start[r + 1]]`` afterwards, ``o_code`` holding ``code_of[series]`` (the
    kitchen measurement code). ``start``: int64 ``[N_ROLES + 1]``; ``o_*``: ``[n]``
    outputs. One pass to count, one to place: the trackers then take contiguous slices
    instead of a mask and four gathers each. The four counts and cursors are
    scalars, not an array indexed by role: consecutive placements would otherwise wait on
    each other's stores (store-to-load forwarding), ~3x the time of the pass."""
    n1 = n2 = n3 = n4 = 0
    for i in range(series.shape[0]):
        r = role_of[series[i]]
        n1 += r == 1
        n2 += r == 2
        n3 += r == 3
        n4 += r == 4
    start[0] = 0
    start[1] = 0
    start[2] = n1
    start[3] = n1 + n2
    start[4] = n1 + n2 + n3
    start[5] = n1 + n2 + n3 + n4
    c1, c2, c3, c4 = start[1], start[2], start[3], start[4]
    for i in range(series.shape[0]):
        s = series[i]
        r = role_of[s]
        if r == 0:
            continue
        j = c1 if r == 1 else (c2 if r == 2 else (c3 if r == 3 else c4))
        o_code[j] = code_of[s]
        o_device[j] = device[i]
        o_ts[j] = ts_ns[i]
        o_value[j] = value[i]
        c1 += r == 1
        c2 += r == 2
        c3 += r == 3
        c4 += r == 4


@dataclass
class AnalyticsOut:
    """What one call produced: line protocol to store and alarms to publish."""

    bodies: list[tuple[bytes, int]] = field(default_factory=list)
    alarms: list[tuple[str, bytes]] = field(default_factory=list)  # (topic, JSON)

    def add(self, rendered: tuple[bytes, int]) -> None:
        if rendered[1]:
            self.bodies.append(rendered)

    def extend(self, other: AnalyticsOut) -> None:
        self.bodies += other.bodies
        self.alarms += other.alarms


@dataclass(frozen=True)
class AnalyticsConfig:
    aqi_standard: int = 2026
    kitchen: kt.KitchenConfig = field(default_factory=kt.KitchenConfig)
    bay_heartbeat_s: float = 600.0
    stuck_min_count: int = 12
    stuck_min_duration_s: float = 3600.0
    spike_window: int = 31
    spike_k: float = 6.0
    #: resolution steps of its sensor a reading must move to be a spike when its history's
    #: MAD is 0 (quantised values: a mostly constant history; see ``SpikeDetector``)
    spike_floor_steps: float = 3.0
    #: hourly values a pollutant needs in a local day for its daily value (24 h mean; O3's
    #: largest hourly value) to count in the daily AQI (GB 3095-2012's data validity rule:
    #: at least 20 hourly means a day); O3's 8 h daily maximum has its own rule (aqi.py)
    daily_min_hours: int = 20
    #: peer drift of air stations' hourly PM2.5: robust units of the spread of stations' log
    #: ratios to their district's median, pooled over the hub's stations and the last 24
    #: hours (``anomaly.pooled_log_scores``), for ``drift_hours`` hours in a row
    drift_k: float = 4.0
    drift_hours: int = 3


class CityAnalytics:
    """Owned by the hub's processing thread."""

    def __init__(self, city: City, registry: SeriesRegistry,
                 config: AnalyticsConfig | None = None, live: LiveState | None = None) -> None:
        self.city = city
        self.live = live or LiveState(city)
        self.registry = registry
        self.cfg = config or AnalyticsConfig()
        self.districts = [d.code for d in city.districts]
        self.district_index = {c: i for i, c in enumerate(self.districts)}
        self.quality = DataQuality(city)
        self.aqi_station = AirQualityTracker(self.cfg.aqi_standard)
        self.aqi_district = AirQualityTracker(self.cfg.aqi_standard)
        self.aqi_city = AirQualityTracker(self.cfg.aqi_standard)
        # bays and restaurants are numbered among their own kind (one per bay or kitchen
        # device): sized for the city's up front, as the detectors below for every scored
        # series
        self.bays = BayTracker(n_bays=0, heartbeat_interval_s=self.cfg.bay_heartbeat_s,
                               capacity=presized(_devices_of_kind(city, "bay")))
        kitchens = _devices_of_kind(city, "kitchen")
        self.kitchen = kt.KitchenAlarms(config=self.cfg.kitchen,
                                        capacity=presized(kitchens))
        scored = presized(city_series(city, SCORED_NAMES))
        self.stuck = StuckDetector(scored, min_count=self.cfg.stuck_min_count,
                                   min_duration_s=self.cfg.stuck_min_duration_s)
        self.spikes = SpikeDetector(scored, window=self.cfg.spike_window, k=self.cfg.spike_k)
        self.drift = DriftDetector(k=self.cfg.drift_k, min_windows=self.cfg.drift_hours,
                                   method="pooled_log")
        n_groups = len(self.districts) * len(GLOBAL_NAMES)
        self._pct: dict[int, LogHistogram] = {}  # event-time minute -> sketch
        # Sketches of closed minutes, emptied, for the next minutes: a sketch is 8.9 MB of
        # counts that a new one would zero in full (len(_pct) + len(_pct_spare) <= 3).
        self._pct_spare: list[LogHistogram] = []
        self._pct_groups = n_groups
        # Per-series and per-device arrays, extended from the registry as it grows (append-only
        # columns: amortised O(1), not a full copy per registration).
        # Sized for the whole city up front: grown by doubling, a million devices' columns
        # ended at 8.4M entries for 4.5M series, the copies' pages all written.
        n_s = presized(city_series(city))
        n_d = presized(city.device_total)
        # Per-series columns in the narrowest dtype of their range: 4.5M series at a million
        # devices make each int64 one 34 MB. Column.extend raises on a value that does not
        # fit (no wrapping). Arithmetic with them is done in int64 (under NEP 50 a narrow
        # array times a Python int stays narrow and may wrap); numba widens their integer
        # arithmetic to int64 itself.
        # int8: KIND_CODE (6 kinds), GLOBAL_CODE (28 measurements)
        self._cols = {name: Column(np.int8, 0, n_s) for name in ("s_kind", "s_name")}
        # int32: device gids (as the registry's series_gid) and percentile groups
        # (districts * measurements)
        self._cols |= {name: Column(np.int32, 0, n_s) for name in ("s_device", "s_pct_group")}
        self._cols |= {name: Column(np.int64, 0, n_d) for name in (
            "d_district", "d_kind", "d_restaurant", "restaurant_gid", "d_air",
            "d_bay", "bay_gid")}
        self._cols["_stuck_open"] = Column(np.bool_, False, scored)
        self._cols["_spike_open"] = Column(np.bool_, False, scored)
        self._cols["s_scored"] = Column(np.bool_, False, n_s)
        self._cols["s_slot"] = Column(np.int32, -1, n_s)  # int32: fewer slots than series
        self._cols["s_role"] = Column(np.int8, 0, n_s)
        self._cols["s_kitchen_code"] = Column(np.int8, 0, n_s)  # int8: 8 kitchen.M_* codes
        self._cols["lot_free"] = Column(np.float64, np.nan, n_d)
        self._cols["lot_ts"] = Column(np.int64, -(2**63), n_d)
        self._stuck_open = self._cols["_stuck_open"].extend([])
        #: per scored series' slot: its last scored reading spiked (an episode is open)
        self._spike_open = self._cols["_spike_open"].extend([])
        #: series -> scored by the stuck and spike detectors (its measurement is a level)
        self.s_scored = self._cols["s_scored"].extend([])
        #: series -> its row in the stuck and spike detectors (numbered among the scored
        #: series: ~28 % of a city's are counters or events, and a history is 168 B), -1
        self.s_slot = self._cols["s_slot"].extend([])
        #: series -> ROLE_* (the tracker its readings feed), 0 for none
        self.s_role = self._cols["s_role"].extend([])
        #: series -> its kitchen.M_* code (restaurants' series; 0 for the others)
        self.s_kitchen_code = self._cols["s_kitchen_code"].extend([])
        self.s_kind = self._cols["s_kind"].extend([])
        self.s_name = self._cols["s_name"].extend([])
        self.s_device = self._cols["s_device"].extend([])
        #: series -> its percentile group (district * len(GLOBAL_NAMES) + measurement)
        self.s_pct_group = self._cols["s_pct_group"].extend([])
        self.d_district = self._cols["d_district"].extend([])
        self.d_kind = self._cols["d_kind"].extend([])
        # The kitchen engine's state is per restaurant (~0.6 KB each): restaurants are
        # numbered among kitchens only, not by device gid (a third of a city's devices).
        #: device gid -> its restaurant number in ``self.kitchen``, -1 for other kinds
        self.d_restaurant = self._cols["d_restaurant"].extend([])
        #: restaurant number -> device gid
        self.restaurant_gid = self._cols["restaurant_gid"].extend([])
        # Likewise the air-quality trackers' state is per station (O3 histories, 0.5 KB
        # each): numbered among air stations, ~6 % of a city's devices, not by device gid.
        #: device gid -> its air station number in ``self.aqi_station``, -1 for other kinds
        self.d_air = self._cols["d_air"].extend([])
        # Bays likewise, in ``self.bays`` (half a city's devices, ~65 B of state each).
        #: device gid -> its bay number in ``self.bays``, -1 for other kinds
        self.d_bay = self._cols["d_bay"].extend([])
        #: bay number -> device gid
        self.bay_gid = self._cols["bay_gid"].extend([])
        self._n_air = 0
        self.lot_free = self._cols["lot_free"].extend([])
        self.lot_ts = self._cols["lot_ts"].extend([])
        self.attrs: dict[str, dict[str, Any]] = {}  # device id -> attrs from its birth
        self._attrs_applied: set[str] = set()
        self._day_acc: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._points = _measurements()
        #: (series, newly stuck) -> its ``anomaly`` point's entity (prefix index): a
        #: series' labels never change once registered, so each is looked up once, not
        #: once per anomaly (a Python label lookup and tag tuple per row, ~15 µs).
        self._anomaly_entities: dict[tuple[int, bool], int] = {}
        #: percentile group -> its ``pct_1m`` entity, -1 until first rendered (likewise:
        #: a group's district and measurement never change; one lookup per group, not one
        #: per group per minute)
        self._pct_entities = np.full(n_groups, -1, dtype=np.int64)

    # -- registry sync ---------------------------------------------------------------------
    def _sync(self) -> None:
        reg = self.registry
        n = reg.n_series
        cols = self._cols
        if n > len(self.s_kind):
            k0 = len(self.s_kind)
            keys = reg.series_key[k0:n]
            self.s_kind = cols["s_kind"].extend(KEY_KIND_CODE[keys])
            self.s_name = cols["s_name"].extend(KEY_GLOBAL_CODE[keys])
            self.s_device = cols["s_device"].extend(reg.series_gid[k0:n])
            self.s_scored = cols["s_scored"].extend(
                ~np.isin(self.s_name[k0:n], NOT_SCORED_CODES))
            scored = np.flatnonzero(self.s_scored[k0:n])
            slot = np.full(n - k0, -1, dtype=np.int64)
            slot[scored] = len(self._stuck_open) + np.arange(len(scored))
            self.s_slot = cols["s_slot"].extend(slot)
            self._stuck_open = cols["_stuck_open"].extend(np.zeros(len(scored), bool))
            self._spike_open = cols["_spike_open"].extend(np.zeros(len(scored), bool))
            k_new, n_new = self.s_kind[k0:n][scored], self.s_name[k0:n][scored]
            self.spikes.set_floor(slot[scored], self.cfg.spike_floor_steps
                                  * RESOLUTION_OF[k_new, n_new])
            self.s_role = cols["s_role"].extend(
                ROLE_OF[self.s_kind[k0:n], self.s_name[k0:n]])
            self.s_kitchen_code = cols["s_kitchen_code"].extend(
                KITCHEN_CODE[self.s_name[k0:n]])
        nd = reg.n_devices
        if nd > len(self.d_kind):
            d0 = len(self.d_kind)
            systems = reg.device_system[d0:nd].tolist()
            self.d_district = cols["d_district"].extend(
                [self.district_index[self.city.systems[s].district_code] for s in systems])
            self.d_kind = cols["d_kind"].extend(
                [KIND_CODE[self.city.systems[s].kind] for s in systems])
            kitchens = np.flatnonzero(self.d_kind[d0:nd] == KIND_CODE["kitchen"])
            number = np.full(nd - d0, -1, dtype=np.int64)
            number[kitchens] = len(self.restaurant_gid) + np.arange(len(kitchens))
            self.d_restaurant = cols["d_restaurant"].extend(number)
            self.restaurant_gid = cols["restaurant_gid"].extend(kitchens + d0)
            bays = np.flatnonzero(self.d_kind[d0:nd] == KIND_CODE["bay"])
            number = np.full(nd - d0, -1, dtype=np.int64)
            number[bays] = len(self.bay_gid) + np.arange(len(bays))
            self.d_bay = cols["d_bay"].extend(number)
            self.bay_gid = cols["bay_gid"].extend(bays + d0)
            airs = np.flatnonzero(self.d_kind[d0:nd] == KIND_CODE["air"])
            number = np.full(nd - d0, -1, dtype=np.int64)
            number[airs] = self._n_air + np.arange(len(airs))
            self._n_air += len(airs)
            self.d_air = cols["d_air"].extend(number)
            self.lot_free = cols["lot_free"].extend(np.full(nd - d0, np.nan))
            self.lot_ts = cols["lot_ts"].extend(np.full(nd - d0, -(2**63)))
            self.quality.sync_devices(reg.device_system)
            for gid in range(d0, nd):
                self._apply_attrs(reg.device_ids[gid], gid)
        if n > len(self.s_pct_group):  # after the devices: a new series' device may be new
            k0 = len(self.s_pct_group)
            # in int64 (d_district's dtype, made explicit): never in s_name's int8
            district = self.d_district[self.s_device[k0:n]].astype(np.int64, copy=False)
            self.s_pct_group = cols["s_pct_group"].extend(
                district * len(GLOBAL_NAMES) + self.s_name[k0:n])

    def _apply_attrs(self, device: str, gid: int) -> None:
        attrs = self.attrs.get(device)
        if not attrs or device in self._attrs_applied:
            return
        self._attrs_applied.add(device)
        if attrs.get("frozen") and self.d_kind[gid] == KIND_CODE["kitchen"]:
            self.kitchen.set_range(self.d_restaurant[[gid]], kt.A_COLD_ROOM, -20.0, -1.0)

    def _attr(self, gid: int, name: str) -> Any:
        return self.attrs.get(self.registry.device_ids[gid], {}).get(name)

    # -- lifecycle events ------------------------------------------------------------------
    def on_birth(self, device: str, attrs: dict[str, Any]) -> None:
        if attrs:
            self.attrs[device] = attrs
            self._attrs_applied.discard(device)
            gid = self.registry.device_gid(device)
            if gid is not None and gid < len(self.d_kind):
                self._apply_attrs(device, gid)

    def on_rejected(self, system_id: str, readings: int) -> None:
        self.quality.observe_rejected(system_id, readings)

    # -- readings --------------------------------------------------------------------------
    def on_readings(self, series: np.ndarray, device: np.ndarray, ts_ns: np.ndarray,
                    value: np.ndarray, recv_ns: int,
                    ahead_limit_ns: int | None = None,
                    clock_ns: int | None = None) -> AnalyticsOut:
        """Analyse a batch of accepted readings (received at ``recv_ns``, wall ns).
        ``ahead_limit_ns``: the latest device time that may open a new completeness hour
        (``DataQuality.observe``): the event clock plus the allowed clock lead.
        ``clock_ns``: the hub's event clock as the batch arrived; the bays in it count as
        heard then (``BayTracker.heard``), whatever their own clocks say."""
        out = AnalyticsOut()
        if len(series) == 0:
            return out
        self._sync()
        for rows in self.quality.observe(device, ts_ns, recv_ns, ahead_limit_ns):
            out.add(self._completeness_points(rows))
        n = len(series)
        start = np.zeros(N_ROLES + 1, dtype=np.int64)
        r_code, r_device = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        r_ts, r_value = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float64)
        _split_by_role(series, device, ts_ns, value, self.s_role, self.s_kitchen_code, start,
                       r_code, r_device, r_ts, r_value)

        def role(r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            """The readings of role ``r``, in batch order (views)."""
            a, b = int(start[r]), int(start[r + 1])
            return r_code[a:b], r_device[a:b], r_ts[a:b], r_value[a:b]

        self._parking(role(ROLE_BAY_OCCUPIED), role(ROLE_BAY_BATTERY), role(ROLE_LOT_FREE),
                      clock_ns)
        out.extend(self._kitchen(*role(ROLE_KITCHEN)))
        out.add(self._anomalies(series, ts_ns, value))
        self._percentiles(series, ts_ns, value)
        return out

    def _parking(self, occupied: tuple[np.ndarray, ...], battery: tuple[np.ndarray, ...],
                 free: tuple[np.ndarray, ...], clock_ns: int | None) -> None:
        """Bays' occupancy and battery readings, lots' free spaces: each ``(code, device,
        ts_ns, value)`` in batch order (``code`` unused); the bays count as heard at
        ``clock_ns`` if given."""
        _, device, ts_ns, value = occupied
        if len(device):
            bay = self.d_bay[device]
            self.bays.update(bay, ts_ns, value)
            if clock_ns is not None:
                self.bays.heard(bay, clock_ns)
        _, device, ts_ns, value = battery
        if len(device):
            bay = self.d_bay[device]
            self.bays.update_battery(bay, ts_ns, value)
            if clock_ns is not None:
                self.bays.heard(bay, clock_ns)
        _, device, ts_ns, value = free
        if len(device):
            order = np.argsort(ts_ns, kind="stable")  # latest reading wins
            d, t, v = device[order], ts_ns[order], value[order]
            newer = t >= self.lot_ts[d]
            self.lot_free[d[newer]] = v[newer]
            self.lot_ts[d[newer]] = t[newer]

    def _kitchen(self, code: np.ndarray, device: np.ndarray, ts_ns: np.ndarray,
                 value: np.ndarray) -> AnalyticsOut:
        """Restaurants' readings (every measurement of the kitchen kind), in batch order;
        ``code``: their ``kitchen.M_*`` measurement codes."""
        if len(code) == 0:
            return AnalyticsOut()
        # every reading here is of a kitchen device (ROLE_KITCHEN): a restaurant
        upd = self.kitchen.update(self.d_restaurant[device], ts_ns, code, value)
        return self._alarm_out(upd.transitions)

    def _alarm_out(self, tr: kt.AlarmTransitions) -> AnalyticsOut:
        out = AnalyticsOut()
        if len(tr) == 0:
            return out
        p = self._points["kitchen_alarm"]
        reg = self.registry
        ents = []
        for restaurant, a, st, t, v, pk, rts in tr.rows():
            r = int(self.restaurant_gid[restaurant])
            dev = reg.device_ids[r]
            district = self.districts[self.d_district[r]]
            system = self._system_id(r)
            ents.append(p.entity([kt.ALARM_NAMES_EN[a], district, dev, kt.STATE_NAMES[st],
                                  system]))
            doc = {"restaurant": dev, "district": district, "system": system,
                   "alarm": kt.ALARM_NAMES_EN[a], "alarm_zh": kt.ALARM_NAMES_ZH[a],
                   "state": kt.STATE_NAMES[st], "t": t / 1e9, "value": v, "peak": pk,
                   "raised_t": rts / 1e9}
            out.alarms.append((topics.alarms_topic(district), orjson.dumps(doc)))
            self.live.alarm(doc)
        # raised_ts is ns (an int64 field): passed as int64, since float64 loses its low digits
        vals = np.column_stack([tr.value, tr.peak])
        out.add(p.render(ents, vals, tr.ts_ns, tr.raised_ts_ns))
        return out

    def _anomalies(self, series: np.ndarray, ts_ns: np.ndarray, value: np.ndarray
                   ) -> tuple[bytes, int]:
        """Stuck and spike scoring of the readings of level measurements (``NOT_SCORED``
        excluded): a point for each reading that starts a stuck episode (the transition
        into a stuck run, not every reading of it; not for ``NOT_STUCK``) or a spike
        episode (consecutive spiking readings of a series: ``ScanRows.spike_start``)."""
        found = scan_stuck_and_spikes(self.stuck, self.spikes, series, ts_ns, value,
                                      self.s_slot, self._stuck_open, self._spike_open)
        rows, stuck, score = found.row, found.stuck, found.score
        sr = series[rows]
        keep = np.where(stuck, ~NOT_STUCK_OF[self.s_kind[sr], self.s_name[sr]],
                        found.spike_start)
        if not keep.all():
            rows, stuck, score = rows[keep], stuck[keep], score[keep]
        if len(rows) == 0:
            return b"", 0
        p = self._points["anomaly"]
        known = self._anomaly_entities
        ents = []
        for s, is_stuck in zip(series[rows].tolist(), stuck.tolist(), strict=True):
            e = known.get((s, is_stuck))
            if e is None:
                e = known[s, is_stuck] = self._series_entity(p, s,
                                                             "stuck" if is_stuck else "spike")
            ents.append(e)
        return p.render(ents, np.column_stack([score, value[rows]]), ts_ns[rows])

    def _series_entity(self, p: EntityPoints, series: int, reason: str) -> int:
        s = self.registry.labels(series)
        return p.entity([s.device, s.district, s.name, reason, s.system])

    def _percentiles(self, series: np.ndarray, ts_ns: np.ndarray, value: np.ndarray) -> None:
        """Sketch values per (district, measurement) and event-time minute, minutes in
        ascending order. A batch usually lies within one minute: then it is added whole; a
        batch over a few minutes is sorted apart by minute in one pass (``np.unique`` and a
        selection per minute only for a spread over ``PCT_SPLIT_MINUTES`` or more)."""
        first = int(np.minimum.reduce(ts_ns)) // MINUTE_NS
        last = int(np.maximum.reduce(ts_ns)) // MINUTE_NS
        if last - first >= PCT_SPLIT_MINUTES:  # a wide spread: the distinct minutes
            group = self.s_pct_group[series].astype(np.int64)  # sketch ids are int64
            minute = ts_ns // MINUTE_NS
            for m in np.unique(minute).tolist():
                sketch = self._pct_sketch(m)
                if sketch is not None:
                    sel = minute == m
                    sketch.add(group[sel], value[sel])
            return
        # one minute (the usual case) or a few (a batch across a minute's end): one pass
        # sorts them apart. One kernel for both, so the hub's warm-up loads it.
        n = len(series)
        start = np.zeros(last - first + 2, dtype=np.int64)
        group = np.empty(n, dtype=np.int64)
        by_minute = np.empty(n if last > first else 0, dtype=np.float64)
        _split_by_minute(ts_ns, first, series, self.s_pct_group, start, group, by_minute,
                         value)
        if last == first:
            by_minute = value
        bounds = start.tolist()
        for m in range(first, last + 1):
            a, b = bounds[m - first], bounds[m - first + 1]
            if a == b:
                continue  # no reading in that minute
            sketch = self._pct_sketch(m)
            if sketch is not None:
                sketch.add(group[a:b], by_minute[a:b])

    def _pct_sketch(self, m: int) -> LogHistogram | None:
        """The open sketch of minute ``m`` (opened if need be), None if ``m`` is late."""
        if self._pct and m < min(self._pct):
            return None  # older than the oldest open minute: late for percentiles
        sketch = self._pct.get(m)
        if sketch is None:
            if len(self._pct) >= 3:
                return None  # at most 3 open minutes (bounded memory)
            sketch = self._pct[m] = (self._pct_spare.pop() if self._pct_spare else
                                     LogHistogram(0.02, self._pct_groups, 1e-3, 1e6))
        return sketch

    # -- closed windows --------------------------------------------------------------------
    def on_emissions(self, emissions: list[Emission]) -> AnalyticsOut:
        out = AnalyticsOut()
        self._sync()
        for e in emissions:
            if not e.final or len(e.rows) == 0:
                continue
            # the few series read here are gathered alone from a closed coarse window
            if e.label == "1m":
                out.add(self._noise(e.rows.select(self._is_noise)))
            elif e.label == "1h":
                out.extend(self._hourly(e.rows.select(self._is_hourly), final=True))
        return out

    def _is_noise(self, series: np.ndarray) -> np.ndarray:
        """Bool per series id: a noise level (LAeq), which ``_noise`` reads."""
        return self.s_name[series] == GLOBAL_CODE["laeq"]

    def _is_hourly(self, series: np.ndarray) -> np.ndarray:
        """Bool per series id: an air station's pollutant or a water station's series,
        which ``_hourly`` reads."""
        return self._is_pollutant(series) | (self.s_kind[series] == KIND_CODE["water"])

    def _is_pollutant(self, series: np.ndarray) -> np.ndarray:
        """Bool per series id: an air station's pollutant (what the AQI reads; not its
        temperature and humidity, a quarter of its series)."""
        return (self.s_kind[series] == KIND_CODE["air"]) & IS_POLLUTANT[self.s_name[series]]

    def _noise(self, rows: WindowBatch) -> tuple[bytes, int]:
        sel = self._is_noise(rows.series)
        if not sel.any():
            return b"", 0
        series = rows.series[sel]
        dev = self.s_device[series]
        monitors, inverse = np.unique(dev, return_inverse=True)
        zones = np.array([_zone(self._attr(int(g), "zone")) for g in monitors], dtype=np.int8)
        res = noise_exceedance(inverse.astype(np.int64), rows.window_start_ns[sel],
                               np.ascontiguousarray(rows.mean[sel]), zones)
        p = self._points["noise_1m"]
        ents = [p.entity([self.districts[self.d_district[g]], self.registry.device_ids[g],
                          self._system_id(g),
                          str(self._attr(int(g), "zone") or "unknown")]) for g in dev]
        vals = np.column_stack([rows.mean[sel], res.limit, res.exceedance,
                                (res.exceedance > 0).astype(np.float64),
                                res.period.astype(np.float64)])
        return p.render(ents, vals, rows.window_start_ns[sel])

    def _hourly(self, rows: WindowBatch, final: bool) -> AnalyticsOut:
        out = AnalyticsOut()
        kinds = self.s_kind[rows.series]
        air = kinds == KIND_CODE["air"]
        if air.any():
            out.extend(self._aqi(rows.take(air), final))
        water = kinds == KIND_CODE["water"]
        if water.any() and final:
            out.add(self._water(rows.take(water)))
        return out

    def _station_matrix(self, rows: WindowBatch, names: tuple[str, ...]
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ONE window as a station × measurement matrix of means:
        (station device gids int64[k], means float64[k, len(names)], NaN = missing)."""
        dev = self.s_device[rows.series]
        col = np.full(len(rows), -1, dtype=np.int8)
        name = self.s_name[rows.series]
        for j, n in enumerate(names):
            col[name == GLOBAL_CODE[n]] = j
        keep = col >= 0
        stations, inv = np.unique(dev[keep], return_inverse=True)
        conc = np.full((len(stations), len(names)), np.nan)
        conc[inv, col[keep]] = rows.mean[keep]
        return stations.astype(np.int64), conc

    def _system_id(self, gid: int | np.integer) -> str:
        """The system id of device ``gid`` (the registry's device -> system column)."""
        return self.city.systems[self.registry.device_system[gid]].system_id

    def _aqi(self, rows: WindowBatch, final: bool) -> AnalyticsOut:
        out = AnalyticsOut()
        starts = np.unique(rows.window_start_ns)
        for start in starts:  # (one hour, as a rule: then no copy of its 0.4M rows)
            hour = rows if len(starts) == 1 else rows.take(rows.window_start_ns == start)
            stations, conc = self._station_matrix(hour, POLLUTANTS)
            end = int(start) + HOUR_NS
            res = self.aqi_station.update_hour(end, self.d_air[stations], conc)
            p = self._points["aqi_1h"]
            ents = [p.entity([self.districts[self.d_district[g]], self.registry.device_ids[g],
                              self._system_id(g)])
                    for g in stations]
            out.add(p.render(ents, _aqi_values(res, final), end))
            districts = self.d_district[stations]
            dconc = group_mean(conc, districts, len(self.districts))
            present = np.unique(districts)
            dres = self.aqi_district.update_hour(end, present, dconc[present])
            pd = self._points["aqi_district_1h"]
            out.add(pd.render([pd.entity([self.districts[d]]) for d in present],
                              _aqi_values(dres, final), end))
            self._live_aqi(end, present, dres, conc)
            if final:
                self._accumulate_day(end, stations, conc)
                pm25 = np.ascontiguousarray(conc[:, POLLUTANTS.index("pm2_5")])
                out.add(self._drift(end, stations, pm25))
        return out

    def _drift(self, hour_end: int, stations: np.ndarray, pm25: np.ndarray
               ) -> tuple[bytes, int]:
        """Air stations drifting from their district peers' hourly PM2.5."""
        res = self.drift.update(stations, self.d_district[stations], pm25)
        rows = np.flatnonzero(res.flag)
        if len(rows) == 0:
            return b"", 0
        p = self._points["anomaly"]
        reg = self.registry
        ents = [p.entity([reg.device_ids[g], self.districts[self.d_district[g]], "pm2_5",
                          "drift", self._system_id(g)])
                for g in stations[rows]]
        return p.render(ents, np.column_stack([res.score[rows], pm25[rows]]), hour_end)

    def _live_aqi(self, end: int, present: np.ndarray, dres: Any, conc: np.ndarray) -> None:
        """Latest district and city AQI for the live view (city: mean of all stations)."""
        live = self.live
        live.district_aqi[present] = dres.aqi
        live.district_category[present] = dres.category
        live.district_primary[present] = dres.primary_mask
        city_conc = group_mean(conc, np.zeros(len(conc), dtype=np.int64), 1)
        cres = self.aqi_city.update_hour(end, np.zeros(1, dtype=np.int64), city_conc)
        live.city_aqi = (float(cres.aqi[0]), int(cres.category[0]))

    def _accumulate_day(self, hour_end: int, stations: np.ndarray, conc: np.ndarray) -> None:
        day = (hour_end - 1 + TZ_NS) // DAY_NS
        acc = self._day_acc.get(day)
        need = int(stations.max()) + 1
        if acc is None or acc[0].shape[0] < need:
            size = max(need, 64, 0 if acc is None else acc[0].shape[0] * 2)
            grown = (np.zeros((size, 6)), np.zeros((size, 6)), np.full(size, np.nan))
            if acc is not None:
                for a, b in zip(grown, acc, strict=True):
                    a[:b.shape[0]] = b
            acc = self._day_acc[day] = grown
        total, count, o3max = acc
        ok = ~np.isnan(conc)
        total[stations] += np.where(ok, conc, 0.0)
        count[stations] += ok
        o3max[stations] = np.fmax(o3max[stations], conc[:, POLLUTANTS.index("o3")])

    def _daily(self, watermark_ns: int) -> AnalyticsOut:
        out = AnalyticsOut()
        for day in sorted(self._day_acc):
            day_end = (day + 1) * DAY_NS - TZ_NS
            if day_end > watermark_ns:
                break
            total, count, o3max = self._day_acc.pop(day)
            stations = np.flatnonzero(count.sum(axis=1) > 0).astype(np.int64)
            if len(stations) == 0:
                continue
            # a daily value from fewer than daily_min_hours hourly values is not valid (a
            # hub started mid-day, an outage): that pollutant takes no part in the daily AQI
            with np.errstate(invalid="ignore", divide="ignore"):
                conc = np.where(count[stations] >= self.cfg.daily_min_hours,
                                total[stations] / count[stations], np.nan)
            o3 = POLLUTANTS.index("o3")  # its daily value is the day's largest hourly one
            conc[:, o3] = np.where(count[stations, o3] >= self.cfg.daily_min_hours,
                                   o3max[stations], np.nan)
            res = self.aqi_station.daily(day_end, self.d_air[stations], conc)
            valid = np.isfinite(res.aqi)  # no pollutant valid: no daily AQI at all
            if not valid.all():
                stations, res = stations[valid], res.take(valid)
                if len(stations) == 0:
                    continue
            p = self._points["aqi_1d"]
            ents = [p.entity([self.districts[self.d_district[g]], self.registry.device_ids[g],
                              self._system_id(g)])
                    for g in stations]
            out.add(p.render(ents, _aqi_values(res, True), day_end))
        return out

    def _water(self, rows: WindowBatch) -> tuple[bytes, int]:
        bodies: list[bytes] = []
        total = 0
        for start in np.unique(rows.window_start_ns):
            hour = rows.take(rows.window_start_ns == start)
            params = ("ph", "do", "codmn", "nh3n", "tp")
            stations, m = self._station_matrix(hour, params)
            wc = classify_water(*(np.ascontiguousarray(m[:, j]) for j in range(5)))
            p = self._points["water_class_1h"]
            ents = [p.entity([self.districts[self.d_district[g]], self.registry.device_ids[g],
                              self._system_id(g)])
                    for g in stations]
            vals = np.column_stack([wc.klass.astype(np.float64),
                                    wc.deciding.astype(np.float64), m])
            body, n = p.render(ents, vals, int(start) + HOUR_NS)
            bodies.append(body)
            total += n
        return b"".join(bodies), total

    # -- periodic --------------------------------------------------------------------------
    def on_tick(self, event_clock_ns: int, lateness_ns: int) -> AnalyticsOut:
        """Event-time work due at ``event_clock_ns``: closed percentile minutes, completed
        hours of completeness, local day ends."""
        out = AnalyticsOut()
        watermark = event_clock_ns - lateness_ns
        for m in sorted(self._pct):
            if (m + 1) * MINUTE_NS > watermark:
                break
            sketch = self._pct.pop(m)
            groups = sketch.nonempty()
            out.add(self._percentile_points(m, sketch, groups))
            sketch.reset(groups)  # only the rows it used: the rest are still empty
            self._pct_spare.append(sketch)
        for rows in self.quality.close_hours(watermark):
            out.add(self._completeness_points(rows))
        out.extend(self._daily(watermark))
        out.extend(self._alarm_out(self.kitchen.day_end(watermark)))
        return out

    def reads_hour_partial(self, series: np.ndarray) -> np.ndarray:
        """Which of ``series`` (int64 ids) ``on_minute`` reads in its ``hour_partial``: the
        air stations' pollutants (bool mask; for ``MultiResolutionWindows.pending``'s
        ``select``: ~0.4M series at a million devices)."""
        self._sync()
        return self._is_pollutant(series)

    def on_minute(self, event_clock_ns: int, hour_partial: WindowBatch) -> AnalyticsOut:
        """Snapshots for operators (hub time, once a minute): quality, parking, open alarms,
        and the provisional AQI of the hour in progress (``hour_partial``: the 1 h rollup's
        pending partial state)."""
        self._sync()
        out = AnalyticsOut()
        out.add(self._quality_points(event_clock_ns))
        out.extend(self._parking_points(event_clock_ns))
        out.add(self._open_alarm_points(event_clock_ns))
        air = hour_partial.select(self._is_pollutant) if len(hour_partial) else hour_partial
        if len(air):
            out.extend(self._aqi(air, final=False))
        return out

    def _percentile_points(self, minute: int, sketch: LogHistogram, groups: np.ndarray
                           ) -> tuple[bytes, int]:
        """``groups``: the sketch's non-empty groups (``sketch.nonempty()``); only their rows
        are read."""
        if len(groups) == 0:
            return b"", 0
        counts = sketch.count(groups)
        q = sketch.quantiles(PCT_Q, groups)
        p = self._points["pct_1m"]
        known = self._pct_entities
        ents = known[groups]
        new = np.flatnonzero(ents < 0)
        if len(new):  # groups never rendered before: their entities, in group order
            nn = len(GLOBAL_NAMES)
            for i in new.tolist():
                g = int(groups[i])
                known[g] = p.entity([self.districts[g // nn], GLOBAL_NAMES[g % nn]])
            ents = known[groups]
        vals = np.column_stack([q, counts.astype(np.float64)])
        return p.render(ents, vals, minute * MINUTE_NS)

    def _completeness_points(self, rows: CompletenessRows) -> tuple[bytes, int]:
        p = self._points["completeness_1h"]
        n_sys = len(self.city.systems)
        ents = [p.entity(["system", s.district_code, s.system_id]) for s in self.city.systems]
        ents += [p.entity(["district", d, d]) for d in self.districts]
        observed = np.concatenate([rows.system_observed, rows.district_observed])
        expected = np.concatenate([rows.system_expected, rows.district_expected])
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = observed / expected
        self.live.sys_completeness = ratio[:n_sys].copy()
        vals = np.column_stack([ratio, observed, expected]).astype(np.float64)
        assert len(ents) == n_sys + len(self.districts)
        return p.render(ents, vals, rows.hour_start_ns + HOUR_NS)

    def _quality_points(self, now_ns: int) -> tuple[bytes, int]:
        m = self.quality.minute(now_ns)
        live = self.live
        live.sys_online = m.online.copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            live.sys_validity = m.received / (m.received + m.rejected)
        live.sys_latency_p95 = m.latency_s[:, 1].copy()
        p = self._points["quality_1m"]
        systems = self.city.systems
        ents = [p.entity(["system", s.district_code, s.domain, s.system_id]) for s in systems]
        sd = self.quality.system_district
        nd = len(self.districts)

        def by_district(x: np.ndarray) -> np.ndarray:
            return np.bincount(sd, weights=x, minlength=nd)

        ents += [p.entity(["district", d, "all", d]) for d in self.districts]
        expected = np.concatenate([m.devices_expected, by_district(m.devices_expected)])
        online = np.concatenate([m.online, by_district(m.online)])
        received = np.concatenate([m.received, by_district(m.received)])
        rejected = np.concatenate([m.rejected, by_district(m.rejected)])
        lat = np.vstack([m.latency_s, np.full((nd, 3), np.nan)])
        with np.errstate(invalid="ignore", divide="ignore"):
            vals = np.column_stack([expected, online, online / expected, received, rejected,
                                    received / (received + rejected), lat])
        return p.render(ents, vals.astype(np.float64), now_ns)

    def _parking_points(self, now_ns: int) -> AnalyticsOut:
        out = AnalyticsOut()
        nd = len(self.d_kind)
        if nd == 0:
            return out
        nd_ = len(self.districts)
        snap = self.bays.group_snapshot(now_ns, self.d_district[self.bay_gid], nd_)
        p = self._points["parking_1m"]
        has = snap.group_n_bays > 0
        ents = [p.entity(["district", self.districts[d]]) for d in np.flatnonzero(has)]
        lots = np.flatnonzero(self.d_kind == KIND_CODE["lot"])
        cap = np.array([float(self._attr(int(g), "capacity") or np.nan) for g in lots])
        lot_group = group_lot_occupancy(self.d_district[lots], self.lot_free[lots], cap, nd_)
        self.live.bay_occupancy = snap.group_occupancy.copy()
        self.live.lot_occupancy = lot_group.occupancy.copy()
        vals = np.column_stack([
            snap.group_occupancy, snap.group_n_reporting, snap.group_n_occupied,
            snap.group_n_stale, snap.group_n_battery_low, snap.group_n_battery_critical,
            snap.group_turnover, snap.group_dwell_mean_s, lot_group.occupancy,
            lot_group.free, lot_group.capacity])[has]
        out.add(p.render(ents, vals.astype(np.float64), now_ns))
        if len(lots):
            pl = self._points["parking_lot_1m"]
            ents = [pl.entity([self.districts[self.d_district[g]], self.registry.device_ids[g],
                               self._system_id(g)]) for g in lots]
            occ = lot_occupancy(self.lot_free[lots], cap)
            out.add(pl.render(ents, np.column_stack([occ, self.lot_free[lots], cap]), now_ns))
        return out

    def _open_alarm_points(self, now_ns: int) -> tuple[bytes, int]:
        open_ = self.kitchen.open_alarms()
        counts = np.bincount(self.d_district[self.restaurant_gid[open_.restaurant]],
                             minlength=len(self.districts)) \
            if len(open_) else np.zeros(len(self.districts), dtype=np.int64)
        self.live.open_alarms = counts.astype(np.int64)
        p = self._points["kitchen_alarms_open"]
        ents = [p.entity([d]) for d in self.districts]
        return p.render(ents, counts.astype(np.float64)[:, None], now_ns)


# -- helpers -----------------------------------------------------------------------------------
def _devices_of_kind(city: City, kind: str) -> int:
    """Devices of ``kind`` (a catalogue kind) the whole city has."""
    return sum(s.device_count(city.scale) for s in city.systems if s.kind == kind)


KITCHEN_CODE = np.full(len(GLOBAL_NAMES), 0, dtype=np.int64)
for _i, _n in enumerate(GLOBAL_NAMES):
    if _n in kt.MEASUREMENTS:
        KITCHEN_CODE[_i] = kt.measurement_code(_n)
#: bool per global measurement code: one of the AQI's pollutants
IS_POLLUTANT = np.isin(np.arange(len(GLOBAL_NAMES)), [GLOBAL_CODE[n] for n in POLLUTANTS])
NOT_SCORED_CODES = np.array([GLOBAL_CODE[n] for n in NOT_SCORED], dtype=np.int64)


def _role_of() -> np.ndarray:
    """``ROLE_OF[kind code, global name code]``: the ROLE_* of a series."""
    out = np.zeros((len(KIND_CODE), len(GLOBAL_NAMES)), dtype=np.int8)
    out[KIND_CODE["bay"], GLOBAL_CODE["occupied"]] = ROLE_BAY_OCCUPIED
    out[KIND_CODE["bay"], GLOBAL_CODE["battery"]] = ROLE_BAY_BATTERY
    out[KIND_CODE["lot"], GLOBAL_CODE["free"]] = ROLE_LOT_FREE
    out[KIND_CODE["kitchen"], :] = ROLE_KITCHEN  # every measurement of a restaurant
    return out


ROLE_OF = _role_of()


def _resolution_of() -> np.ndarray:
    """``RESOLUTION_OF[kind code, global name code]``: the smallest step the sensor reports
    (catalogue ``resolution``, in the measurement's unit; 1 where the kind has none)."""
    out = np.ones((len(KIND_CODE), len(GLOBAL_NAMES)), dtype=np.float64)
    for m in load_catalogue():
        out[KIND_CODE[m.kind], GLOBAL_CODE[m.name]] = m.resolution
    return out


RESOLUTION_OF = _resolution_of()
#: ``NOT_STUCK_OF[kind code, global name code]``: True for the ``NOT_STUCK`` measurements
NOT_STUCK_OF = np.zeros((len(KIND_CODE), len(GLOBAL_NAMES)), dtype=np.bool_)
for _k, _n in NOT_STUCK:
    NOT_STUCK_OF[KIND_CODE[_k], GLOBAL_CODE[_n]] = True


def _zone(z: Any) -> int:
    try:
        return zone_code(str(z)) if z is not None else -1
    except ValueError:
        return -1




def _aqi_values(res: Any, final: bool) -> np.ndarray:
    return np.column_stack([res.aqi, res.category.astype(np.float64),
                            res.primary_mask.astype(np.float64),
                            np.full(len(res), 1.0 if final else 0.0), res.iaqi, res.o3_8h])


def _measurements() -> dict[str, EntityPoints]:
    station = ["district", "station", "system"]
    return {
        "aqi_1h": EntityPoints("aqi_1h", station, AQI_FIELDS, AQI_INT),
        "aqi_district_1h": EntityPoints("aqi_district_1h", ["district"], AQI_FIELDS, AQI_INT),
        "aqi_1d": EntityPoints("aqi_1d", station, AQI_FIELDS, AQI_INT),
        "water_class_1h": EntityPoints("water_class_1h", station,
                                       ["class", "deciding", "ph", "do", "codmn", "nh3n", "tp"],
                                       ["class", "deciding"]),
        "noise_1m": EntityPoints("noise_1m", ["district", "monitor", "system", "zone"],
                                 ["laeq", "limit", "exceedance_db", "exceeding", "night"],
                                 ["exceeding", "night"]),
        "parking_1m": EntityPoints("parking_1m", ["level", "district"], [
            "bay_occupancy", "bays_reporting", "bays_occupied", "bays_stale", "battery_low",
            "battery_critical", "turnover_per_bay_day", "dwell_mean_s", "lot_occupancy",
            "lot_free", "lot_capacity"], ["bays_reporting", "bays_occupied", "bays_stale",
                                          "battery_low", "battery_critical"]),
        "parking_lot_1m": EntityPoints("parking_lot_1m", ["district", "lot", "system"],
                                       ["occupancy", "free", "capacity"]),
        "kitchen_alarm": EntityPoints("kitchen_alarm", ["alarm", "district", "restaurant",
                                                        "state", "system"],
                                      ["value", "peak"], int64_fields=["raised_ts"]),
        "kitchen_alarms_open": EntityPoints("kitchen_alarms_open", ["district"], ["open"],
                                            ["open"]),
        "anomaly": EntityPoints("anomaly", ["device", "district", "m", "reason", "system"],
                                ["score", "value"]),
        "pct_1m": EntityPoints("pct_1m", ["district", "m"], ["p50", "p95", "p99", "count"],
                               ["count"]),
        "completeness_1h": EntityPoints("completeness_1h", ["level", "district", "id"],
                                        ["completeness", "observed_slots", "expected_slots"],
                                        ["observed_slots", "expected_slots"]),
        "quality_1m": EntityPoints("quality_1m", ["level", "district", "domain", "id"], [
            "devices", "online", "online_ratio", "received", "rejected", "validity",
            "latency_p50_s", "latency_p95_s", "latency_p99_s"],
            ["devices", "online", "received", "rejected"]),
    }
