"""The hub's live view of the city, served to operators from memory (never from InfluxDB).

Contract: only the hub's processing thread calls ``observe`` and ``refresh``; ``refresh``
renders the whole state to JSON bytes (orjson) and swaps them in with one attribute
assignment, so HTTP threads read ``state_json`` without locks and never see a half-built
state. The JSON schema is documented in ``docs/architecture.md`` ("Live state").
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import numpy as np
import orjson

from hub.aqi import category_info, primary_names
from hub.sketch import LogHistogram
from seeds.city import City

CATEGORY_COLORS = ("", "#00E400", "#FFFF00", "#FF7E00", "#FF0000", "#99004C", "#7E0023")
SERIES_SECONDS = 120
LATENCY_WINDOW_S = 10.0


def _num(x: Any) -> float | None:
    """JSON-safe number: NaN/inf become null. (``math.isfinite``: the same answer as
    ``np.isfinite`` for a float, without numpy's per-call overhead — ~1,000 calls a
    refresh.)"""
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


class LiveState:
    """Latest values per district and system, the alarm feed, and pipeline health."""

    def __init__(self, city: City) -> None:
        self.city = city
        self.codes = [d.code for d in city.districts]
        nd, ns = len(self.codes), len(city.systems)
        self.district_aqi = np.full(nd, np.nan)
        self.district_category = np.zeros(nd, dtype=np.int64)
        self.district_primary = np.zeros(nd, dtype=np.int64)
        self.city_aqi: tuple[float, int] = (np.nan, 0)
        self.bay_occupancy = np.full(nd, np.nan)
        self.lot_occupancy = np.full(nd, np.nan)
        self.open_alarms = np.zeros(nd, dtype=np.int64)
        self.sys_online = np.zeros(ns, dtype=np.int64)
        self.sys_devices = np.array([s.device_count(city.scale) for s in city.systems])
        index = {c: i for i, c in enumerate(self.codes)}
        self.sys_district = np.array([index[s.district_code] for s in city.systems])
        self.sys_validity = np.full(ns, np.nan)
        self.sys_latency_p95 = np.full(ns, np.nan)
        self.sys_completeness = np.full(ns, np.nan)
        self.alarms: deque[dict[str, Any]] = deque(maxlen=50)
        self.series: deque[tuple[float, float]] = deque(maxlen=SERIES_SECONDS)
        self.latency = LogHistogram(alpha=0.01, n_groups=1, min_value=1e-3, max_value=1e7)
        self._latency_q = (np.nan, np.nan, np.nan)
        self._latency_since = time.monotonic()
        self._last: tuple[float, int, int] | None = None  # (monotonic, received, frames)
        self.pipeline: dict[str, Any] = {}
        self.state_json = b"{}"
        self.refresh({}, 0, 0, None)

    # -- updates from the processing thread ------------------------------------------------
    def observe_latency(self, ts_ns: np.ndarray, recv_ns: int) -> None:
        """Device time → hub receipt, seconds; percentiles over ~10 s windows."""
        if len(ts_ns):
            self.latency.add(np.zeros(len(ts_ns), dtype=np.int64), (recv_ns - ts_ns) / 1e9)

    def alarm(self, doc: dict[str, Any]) -> None:
        self.alarms.appendleft({k: doc.get(k) for k in (
            "t", "restaurant", "district", "system", "alarm", "alarm_zh", "state", "value")})

    def refresh(self, counters: dict[str, Any], frame_queue: int, write_queue: int,
                event_clock_ns: int | None) -> None:
        """Recompute rates and render the state JSON (processing thread, ~1 Hz)."""
        now = time.monotonic()
        received = int(counters.get("hub_received", 0))
        frames = int(counters.get("frames_in", 0))
        rate = frame_rate = 0.0
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            rate = (received - self._last[1]) / dt
            frame_rate = (frames - self._last[2]) / dt
        self._last = (now, received, frames)
        self.series.append((round(time.time(), 3), round(rate, 1)))
        if now - self._latency_since >= LATENCY_WINDOW_S:
            q = self.latency.quantiles(np.array([0.5, 0.95, 0.99]))[0]
            self._latency_q = (float(q[0]), float(q[1]), float(q[2]))
            self.latency.reset()
            self._latency_since = now
        self.pipeline = {
            "readings_per_s": round(rate, 1), "frames_per_s": round(frame_rate, 2),
            "latency_p50_s": _num(self._latency_q[0]), "latency_p95_s": _num(self._latency_q[1]),
            "latency_p99_s": _num(self._latency_q[2]), "frame_queue": frame_queue,
            "write_queue": write_queue, "stored_raw": int(counters.get("stored_raw", 0)),
            "stored_agg": int(counters.get("stored_agg", 0)),
            "late_readings": int(counters.get("late_readings", 0)),
            "rejected": int(counters.get("dead_letters_seen", 0)),
            "write_errors": sum(counters.get("write_errors", {}).values()),
            "series": list(self.series)}
        self.state_json = orjson.dumps(self.document(event_clock_ns))

    # -- rendering -------------------------------------------------------------------------
    def document(self, event_clock_ns: int | None) -> dict[str, Any]:
        sd = self.sys_district
        online_d = np.bincount(sd, weights=self.sys_online, minlength=len(self.codes))
        devices_d = np.bincount(sd, weights=self.sys_devices, minlength=len(self.codes))
        comp = np.nan_to_num(self.sys_completeness, nan=0.0)
        have = ~np.isnan(self.sys_completeness)
        comp_d = np.bincount(sd, weights=comp * self.sys_devices * have,
                             minlength=len(self.codes))
        comp_w = np.bincount(sd, weights=self.sys_devices * have, minlength=len(self.codes))
        # Python lists, not numpy scalars: indexing an array per field per row was most of
        # a refresh. The values are the same (float64 → float, int64 → int); a system
        # without devices has no online ratio, as numpy's 0/0 → NaN → null gave.
        aqi_d, cat_d = self.district_aqi.tolist(), self.district_category.tolist()
        prim_d, bay_d = self.district_primary.tolist(), self.bay_occupancy.tolist()
        lot_d, alarms_d = self.lot_occupancy.tolist(), self.open_alarms.tolist()
        online_l, devices_l = online_d.tolist(), devices_d.tolist()
        comp_l, comp_wl = comp_d.tolist(), comp_w.tolist()
        districts = []
        for i, d in enumerate(self.city.districts):
            cat = int(cat_d[i])
            districts.append({
                "code": d.code, "name_zh": d.name_zh, "name_en": d.name_pinyin,
                "aqi": _num(aqi_d[i]), "category": cat or None,
                "color": CATEGORY_COLORS[cat] or None,
                "primary": primary_names(int(prim_d[i])),
                "bay_occupancy": _num(bay_d[i]),
                "lot_occupancy": _num(lot_d[i]),
                "open_alarms": int(alarms_d[i]),
                "online_ratio": _num(online_l[i] / devices_l[i]) if devices_l[i] else None,
                "completeness": _num(comp_l[i] / comp_wl[i]) if comp_wl[i] else None})
        sys_devices, sys_online = self.sys_devices.tolist(), self.sys_online.tolist()
        sys_comp, sys_valid = self.sys_completeness.tolist(), self.sys_validity.tolist()
        sys_p95 = self.sys_latency_p95.tolist()
        systems = [{
            "id": s.system_id, "district": s.district_code, "domain": s.domain, "kind": s.kind,
            "name_zh": s.name_zh, "name_en": s.name_en, "devices": int(sys_devices[j]),
            "online": int(sys_online[j]),
            "online_ratio": _num(sys_online[j] / sys_devices[j]) if sys_devices[j] else None,
            "completeness": _num(sys_comp[j]),
            "validity": _num(sys_valid[j]),
            "latency_p95_s": _num(sys_p95[j])}
            for j, s in enumerate(self.city.systems)]
        aqi, cat = self.city_aqi
        return {
            "t": round(time.time(), 3),
            "event_clock": None if event_clock_ns is None else event_clock_ns / 1e9,
            "city": {"aqi": _num(aqi), "category": cat or None,
                     "category_zh": category_info(cat)[0] if cat else None,
                     "color": CATEGORY_COLORS[cat] or None,
                     "devices": int(self.sys_devices.sum()),
                     "online": int(self.sys_online.sum()),
                     "open_alarms": int(self.open_alarms.sum())},
            "districts": districts, "systems": systems, "alarms": list(self.alarms),
            "pipeline": self.pipeline}
