"""Data quality of the city's 201 systems, per system and per district.

The city's data-governance plan targets a data aggregation rate (数据汇聚率) of ≥ 90 %; this
module measures it and its companions, from arrays, with no Python work per reading:

* **completeness** (hourly, device time) — the share of expected device reporting slots that
  delivered at least one reading: a device of a system reporting every ``interval_s`` has
  ``3600 / interval_s`` slots an hour (at most 64; one bit each in a per-device ``uint64``).
  Counting slots rather than readings keeps event-driven devices (parking bays report on
  every arrival) from exceeding 100 %. Expected devices come from the city model.
* **timeliness** (per snapshot, taken as each event minute begins) — latency from device
  time to hub receipt, p50, p95, p99 per system, from ``hub.sketch.LogHistogram`` (1 %
  relative error).
* **validity** (per snapshot) — rejected ÷ (accepted + rejected) readings, from the edges'
  dead letters.
* **online** (per snapshot) — devices whose latest reading is within three reporting
  intervals of the event clock, and devices whose link died (MQTT Will) without a new
  birth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hub.arrays import Column
from hub.kernel_config import CACHE, NOGIL
from hub.sketch import LogHistogram
from seeds.city import City

HOUR_NS = 3_600_000_000_000
MAX_SLOTS = 64
QUANTILES = np.array([0.5, 0.95, 0.99])
OFFLINE_AFTER_INTERVALS = 3.0


@njit(cache=CACHE, nogil=NOGIL)
def _mark_slots(device, ts_ns, recv_ns, slot_ns, dev_system, bits, ring_hour, last_seen,
                received, o_system, o_latency):  # pragma: no cover
    """Set the reporting-slot bit of each reading in the 2-hour ring; update last seen; count
    the readings per system (``received``), and give each reading's system (``o_system``)
    and its latency in s, ``(recv_ns - ts_ns) / 1e9`` (``o_latency``: the same float
    numpy's expression gives; this kernel has no fastmath).

    Readings whose hour is not in the ring are skipped (the caller advances the ring first);
    returns how many were marked.

    A device's measurements arrive together: while readings are of one device, its last
    seen time, its slot bits (per ring slot) and its system's count are kept in registers
    and stored when the device changes -- a read-modify-write of a value stored by the
    reading before waits for that store (store-to-load forwarding), which was most of the
    time per reading. The same maxima, ORs and sums, so the same results.
    """
    marked = 0
    d_run = -1  # device of the run in hand
    sy = 0  # its system
    seen = 0  # its last seen time so far
    acc0 = np.uint64(0)  # slot bits to OR into bits[d_run, 0] and bits[d_run, 1]
    acc1 = np.uint64(0)
    run = 0  # readings of the run (added to received[sy] at its end)
    # the device's last slot: every t in [c_lo, c_hi) falls in it (ring slot c_r, bit c_bit;
    # c_r < 0: an hour not in the ring), so a reading there needs no division
    c_lo = 0
    c_hi = 0
    c_r = -1
    c_bit = np.uint64(0)
    for i in range(device.shape[0]):
        d = device[i]
        t = ts_ns[i]
        if d != d_run:
            if d_run >= 0:
                last_seen[d_run] = seen
                bits[d_run, 0] |= acc0
                bits[d_run, 1] |= acc1
                received[sy] += run
            d_run = d
            sy = dev_system[d]
            seen = last_seen[d]
            acc0 = np.uint64(0)
            acc1 = np.uint64(0)
            run = 0
            c_lo = c_hi = 0  # no slot yet
        run += 1
        o_system[i] = sy
        o_latency[i] = (recv_ns - t) / 1e9
        if t > seen:
            seen = t
        if not (c_lo <= t < c_hi):
            h = t // HOUR_NS
            r = h % 2
            hour = h * HOUR_NS
            if ring_hour[r] != h:
                c_lo, c_hi, c_r = hour, hour + HOUR_NS, -1
            else:
                sl = slot_ns[sy]
                s = (t - hour) // sl
                if s >= MAX_SLOTS - 1:  # the last bit takes the rest of the hour
                    s = MAX_SLOTS - 1
                    c_lo, c_hi = hour + s * sl, hour + HOUR_NS
                else:
                    c_lo = hour + s * sl
                    c_hi = min(c_lo + sl, hour + HOUR_NS)
                c_r = r
                c_bit = np.uint64(1) << np.uint64(s)
        if c_r < 0:
            continue
        if c_r == 0:
            acc0 |= c_bit
        else:
            acc1 |= c_bit
        marked += 1
    if d_run >= 0:
        last_seen[d_run] = seen
        bits[d_run, 0] |= acc0
        bits[d_run, 1] |= acc1
        received[sy] += run
    return marked


@dataclass(frozen=True, slots=True)
class CompletenessRows:
    """One hour's completeness: per system (index into ``city.systems``) and per district."""

    hour_start_ns: int
    system_observed: np.ndarray  # int64[n_systems] device-slots with data
    system_expected: np.ndarray  # int64[n_systems]
    district_observed: np.ndarray  # int64[n_districts]
    district_expected: np.ndarray


@dataclass(frozen=True, slots=True)
class MinuteRows:
    """Per system, for the minute just ended (hub time)."""

    devices_expected: np.ndarray  # int64[n_systems]
    devices_seen: np.ndarray  # int64: devices that ever reported
    online: np.ndarray  # int64: reported within 3 intervals of the event clock
    latency_s: np.ndarray  # float64[n_systems, 3]: p50, p95, p99 (NaN: no readings)
    received: np.ndarray  # int64 readings accepted this minute
    rejected: np.ndarray  # int64 readings rejected this minute (dead letters)


class DataQuality:
    """Owned by the hub's processing thread. Devices are dense gids from ``SeriesRegistry``."""

    def __init__(self, city: City) -> None:
        self.city = city
        self.n_systems = len(city.systems)
        self.district_codes = [d.code for d in city.districts]
        district_index = {c: i for i, c in enumerate(self.district_codes)}
        self.system_district = np.array([district_index[s.district_code] for s in city.systems],
                                        dtype=np.int64)
        self.devices_expected = np.array([s.device_count(city.scale) for s in city.systems],
                                         dtype=np.int64)
        self.slots_per_hour = np.array(
            [min(MAX_SLOTS, max(1, int(3600 // s.interval_s))) for s in city.systems],
            dtype=np.int64)
        self.slot_ns = HOUR_NS // self.slots_per_hour
        self.interval_ns = np.array([int(s.interval_s * 1e9) for s in city.systems],
                                    dtype=np.int64)
        self.system_ids = [s.system_id for s in city.systems]
        self.system_index = {sid: i for i, sid in enumerate(self.system_ids)}
        self._cap = 0
        self._dev_system = Column(np.int64)
        self.dev_system = self._dev_system.extend([])
        self.bits = np.zeros((0, 2), dtype=np.uint64)
        self.last_seen = np.empty(0, dtype=np.int64)
        self.ring_hour = np.full(2, np.iinfo(np.int64).min, dtype=np.int64)
        self.latency = LogHistogram(alpha=0.01, n_groups=self.n_systems, min_value=1e-3,
                                    max_value=1e7)
        self.received = np.zeros(self.n_systems, dtype=np.int64)
        self.rejected = np.zeros(self.n_systems, dtype=np.int64)
        self.dead_devices: set[int] = set()

    # -- devices ---------------------------------------------------------------------------
    def sync_devices(self, device_system: np.ndarray | list[int]) -> None:
        """Learn devices registered since the last call (registry's gid → system index)."""
        n = len(device_system)
        if n <= len(self.dev_system):
            return
        if n > self._cap:
            cap = max(1024, 2 * n)
            bits = np.zeros((cap, 2), dtype=np.uint64)
            bits[:self._cap] = self.bits
            seen = np.full(cap, np.iinfo(np.int64).min, dtype=np.int64)
            seen[:self._cap] = self.last_seen
            self.bits, self.last_seen, self._cap = bits, seen, cap
        self.dev_system = self._dev_system.extend(device_system[len(self.dev_system):n])

    def set_dead(self, gids: list[int], dead: bool) -> None:
        """Mark devices whose link died (Will) or was born again."""
        if dead:
            self.dead_devices.update(gids)
        else:
            self.dead_devices.difference_update(gids)

    # -- readings --------------------------------------------------------------------------
    def observe(self, device: np.ndarray, ts_ns: np.ndarray, recv_ns: int,
                ahead_limit_ns: int | None = None) -> list[CompletenessRows]:
        """Account accepted readings (dense device gids ≥ 0, device time in ns).

        ``ahead_limit_ns``: the latest device time that may open an hour (the hub passes its
        event clock plus the allowed clock lead). A reading beyond it counts for latency and
        ``received`` but marks no slot: a device whose clock runs an hour or more ahead
        would otherwise open a future hour and push the current one out of the ring before
        its other readings arrived (one such device took a whole district's completeness to
        a few per cent).

        Returns completed hours whose slots were pushed out of the 2-hour ring by newer
        readings (normally ``close_hours`` emits them first, on the watermark).
        """
        if len(device) == 0:
            return []
        newest = int(ts_ns.max())
        if ahead_limit_ns is not None:
            newest = min(newest, int(ahead_limit_ns))
        emitted = self._open_hour(newest // HOUR_NS)
        system = np.empty(len(device), dtype=np.int64)
        latency_s = np.empty(len(device), dtype=np.float64)
        _mark_slots(device, ts_ns, int(recv_ns), self.slot_ns, self.dev_system, self.bits,
                    self.ring_hour, self.last_seen, self.received, system, latency_s)
        self.latency.add(system, latency_s)
        return emitted

    def observe_rejected(self, system_id: str, readings: int) -> None:
        i = self.system_index.get(system_id)
        if i is not None:
            self.rejected[i] += readings

    # -- hours -----------------------------------------------------------------------------
    def _open_hour(self, hour: int) -> list[CompletenessRows]:
        """Make ``hour`` resident in the ring, emitting the hour it displaces."""
        slot = hour % 2
        held = int(self.ring_hour[slot])
        if held == hour or held > hour:
            return []
        out = [self._emit(slot)] if held != np.iinfo(np.int64).min else []
        self.ring_hour[slot] = hour
        return out

    def close_hours(self, watermark_ns: int) -> list[CompletenessRows]:
        """Emit every resident hour whose end is ≤ ``watermark_ns`` (device time)."""
        out = []
        for slot in np.argsort(self.ring_hour):
            held = int(self.ring_hour[slot])
            if held != np.iinfo(np.int64).min and (held + 1) * HOUR_NS <= watermark_ns:
                out.append(self._emit(int(slot)))
                self.ring_hour[slot] = np.iinfo(np.int64).min
        return out

    def _emit(self, slot: int) -> CompletenessRows:
        n = len(self.dev_system)
        per_device = np.bitwise_count(self.bits[:n, slot]).astype(np.int64)
        self.bits[:, slot] = 0
        observed = np.bincount(self.dev_system, weights=per_device,
                               minlength=self.n_systems).astype(np.int64)
        expected = self.devices_expected * self.slots_per_hour
        nd = len(self.district_codes)
        return CompletenessRows(
            int(self.ring_hour[slot]) * HOUR_NS, observed, expected,
            np.bincount(self.system_district, weights=observed, minlength=nd).astype(np.int64),
            np.bincount(self.system_district, weights=expected, minlength=nd).astype(np.int64))

    # -- minutes ---------------------------------------------------------------------------
    def minute(self, event_clock_ns: int) -> MinuteRows:
        """Per-system figures for the minute just ended; resets the minute's counters."""
        n = len(self.dev_system)
        seen = self.last_seen[:n]
        fresh = seen >= event_clock_ns - OFFLINE_AFTER_INTERVALS * self.interval_ns[
            self.dev_system]
        if self.dead_devices:
            dead = np.fromiter(self.dead_devices, dtype=np.int64)
            fresh[dead[dead < n]] = False
        rows = MinuteRows(
            devices_expected=self.devices_expected.copy(),
            devices_seen=np.bincount(self.dev_system, minlength=self.n_systems),
            online=np.bincount(self.dev_system, weights=fresh,
                               minlength=self.n_systems).astype(np.int64),
            latency_s=self.latency.quantiles(QUANTILES),
            received=self.received.copy(), rejected=self.rejected.copy())
        self.latency.reset()
        self.received[:] = 0
        self.rejected[:] = 0
        return rows
