"""Generate the Grafana dashboards in ``deploy/grafana/dashboards/`` (dashboards as code).

    python deploy/grafana/build_dashboards.py          # rewrite the JSON files
    python deploy/grafana/build_dashboards.py --check  # exit 1 if they are out of date

Every query is plain InfluxQL over the measurements the hub writes (``docs/architecture.md``,
"Stored measurements"). Conventions, relied on by ``tests/test_grafana.py``: measurements,
fields and tag keys are always double-quoted; aliases (``AS x``) never are.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards"
DS = {"type": "influxdb", "uid": "citybrain-influxdb"}
DISTRICT = '"district" =~ /^$district$/'

# China AQI categories (HJ 633): 0-50 优, 51-100 良, 101-150 轻度, 151-200 中度,
# 201-300 重度, >300 严重
AQI_STEPS = [("#00E400", None), ("#FFFF00", 51), ("#FF7E00", 101), ("#FF0000", 151),
             ("#99004C", 201), ("#7E0023", 301)]


def _thresholds(steps: Sequence[tuple[str, float | None]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def _target(query: str, ref: str = "A", fmt: str = "time_series",
            alias: str = "") -> dict[str, Any]:
    t: dict[str, Any] = {"refId": ref, "datasource": DS, "rawQuery": True, "query": query,
                         "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    return t


class Board:
    def __init__(self, uid: str, title: str, tags: list[str], refresh: str = "1m",
                 time_from: str = "now-6h") -> None:
        self.uid, self.title, self.tags = uid, title, tags
        self.refresh, self.time_from = refresh, time_from
        self.panels: list[dict[str, Any]] = []
        self.variables: list[dict[str, Any]] = []
        self._x = self._y = 0
        self._row_h = 0

    def var(self, name: str, label: str, query: str, multi: bool = True) -> Board:
        self.variables.append({
            "name": name, "label": label, "type": "query", "datasource": DS,
            "query": query, "definition": query, "refresh": 2, "sort": 1,
            "multi": multi, "includeAll": multi, "allValue": ".*" if multi else None,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi
            else {},
        })
        return self

    def panel(self, kind: str, title: str, targets: list[dict[str, Any]], w: int = 12,
              h: int = 8, unit: str = "", decimals: int | None = None,
              thresholds: Sequence[tuple[str, float | None]] | None = None,
              minmax: tuple[float | None, float | None] = (None, None),
              options: dict[str, Any] | None = None, description: str = "") -> Board:
        if self._x + w > 24:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        defaults: dict[str, Any] = {}
        if unit:
            defaults["unit"] = unit
        if decimals is not None:
            defaults["decimals"] = decimals
        if thresholds:
            defaults["thresholds"] = _thresholds(thresholds)
            defaults["color"] = {"mode": "thresholds"}
        if minmax[0] is not None:
            defaults["min"] = minmax[0]
        if minmax[1] is not None:
            defaults["max"] = minmax[1]
        self.panels.append({
            "id": len(self.panels) + 1, "type": kind, "title": title,
            "description": description, "datasource": DS,
            "gridPos": {"x": self._x, "y": self._y, "w": w, "h": h},
            "targets": targets, "options": options or {},
            "fieldConfig": {"defaults": defaults, "overrides": []},
        })
        self._x += w
        self._row_h = max(self._row_h, h)
        return self

    def json(self) -> dict[str, Any]:
        return {
            "uid": self.uid, "title": self.title, "tags": ["citybrain", *self.tags],
            "timezone": "Asia/Shanghai", "schemaVersion": 39, "version": 1,
            "editable": False, "graphTooltip": 1, "refresh": self.refresh,
            "time": {"from": self.time_from, "to": "now"},
            "templating": {"list": self.variables}, "annotations": {"list": []},
            "links": [{"type": "dashboards", "tags": ["citybrain"], "asDropdown": True,
                       "title": "citybrain"}],
            "panels": self.panels,
        }


def district_var(b: Board, measurement: str = "quality_1m") -> Board:
    return b.var("district", "District",
                 f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "district"')


TABLE_LAST = {"showHeader": True}


def overview() -> Board:
    b = district_var(Board("citybrain-overview", "citybrain · City overview", ["overview"]))
    b.panel("stat", "City open kitchen alarms", [_target(
        'SELECT sum("open") AS open FROM "kitchen_alarms_open" WHERE $timeFilter '
        'GROUP BY time(1m) fill(none)')], w=6, h=5,
        thresholds=[("green", None), ("orange", 1), ("red", 10)],
        options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"})
    b.panel("stat", "City bay occupancy", [_target(
        'SELECT mean("bay_occupancy") AS occupancy FROM "parking_1m" '
        'WHERE "level" = \'district\' AND $timeFilter GROUP BY time(1m) fill(none)')],
        w=6, h=5, unit="percentunit", decimals=0,
        options={"reduceOptions": {"calcs": ["lastNotNull"]}})
    b.panel("stat", "Devices online", [_target(
        'SELECT sum("online") AS online FROM "quality_1m" WHERE "level" = \'district\' '
        'AND $timeFilter GROUP BY time(1m) fill(none)')], w=6, h=5,
        options={"reduceOptions": {"calcs": ["lastNotNull"]}})
    b.panel("stat", "Devices online (ratio)", [_target(
        'SELECT sum("online") / sum("devices") AS ratio FROM "quality_1m" '
        'WHERE "level" = \'district\' AND $timeFilter GROUP BY time(1m) fill(none)')],
        w=6, h=5, unit="percentunit", decimals=1,
        thresholds=[("red", None), ("orange", 0.9), ("green", 0.98)],
        options={"reduceOptions": {"calcs": ["lastNotNull"]}})
    b.panel("bargauge", "District AQI (latest hour)", [_target(
        'SELECT last("aqi") AS aqi FROM "aqi_district_1h" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY "district"', alias="$tag_district")], w=12, h=14,
        thresholds=AQI_STEPS, minmax=(0, 300),
        options={"orientation": "horizontal", "displayMode": "gradient",
                 "reduceOptions": {"calcs": ["lastNotNull"]}},
        description="Hourly AQI per district (HJ 633) from the mean of its stations; the "
                    "hour in progress is provisional (final = 0).")
    b.panel("timeseries", "District AQI", [_target(
        'SELECT last("aqi") AS aqi FROM "aqi_district_1h" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY time(1h), "district" fill(none)',
        alias="$tag_district")], w=12, h=14, thresholds=AQI_STEPS)
    b.panel("timeseries", "Bay occupancy by district", [_target(
        'SELECT mean("bay_occupancy") AS occupancy FROM "parking_1m" '
        'WHERE "level" = \'district\' AND ' + DISTRICT +
        ' AND $timeFilter GROUP BY time($__interval), "district" fill(none)',
        alias="$tag_district")], unit="percentunit", minmax=(0, 1))
    b.panel("timeseries", "Lot occupancy by district", [_target(
        'SELECT mean("lot_occupancy") AS occupancy FROM "parking_1m" '
        'WHERE "level" = \'district\' AND ' + DISTRICT +
        ' AND $timeFilter GROUP BY time($__interval), "district" fill(none)',
        alias="$tag_district")], unit="percentunit", minmax=(0, 1))
    b.panel("timeseries", "Open kitchen alarms by district", [_target(
        'SELECT last("open") AS open FROM "kitchen_alarms_open" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY time($__interval), "district" fill(none)',
        alias="$tag_district")], w=24, options={"legend": {"displayMode": "table",
                                                           "placement": "right"}})
    return b


def environment() -> Board:
    b = district_var(Board("citybrain-environment", "citybrain · Environment",
                           ["environment"], time_from="now-24h"))
    b.var("m", "Measurement (percentiles)", 'SHOW TAG VALUES FROM "pct_1m" WITH KEY = "m"',
          multi=False)
    b.panel("timeseries", "Station AQI (hourly)", [_target(
        'SELECT last("aqi") AS aqi FROM "aqi_1h" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY time(1h), "station" fill(none)', alias="$tag_station")],
        thresholds=AQI_STEPS)
    b.panel("timeseries", "Station PM2.5 / O3 IAQI", [
        _target('SELECT max("iaqi_pm2_5") AS pm2_5 FROM "aqi_1h" WHERE ' + DISTRICT +
                ' AND $timeFilter GROUP BY time(1h) fill(none)', "A", alias="IAQI PM2.5"),
        _target('SELECT max("iaqi_o3") AS o3 FROM "aqi_1h" WHERE ' + DISTRICT +
                ' AND $timeFilter GROUP BY time(1h) fill(none)', "B", alias="IAQI O3")])
    b.panel("table", "Latest station AQI", [_target(
        'SELECT last("aqi") AS aqi, last("category") AS category, '
        'last("primary_mask") AS primary_mask, last("final") AS final FROM "aqi_1h" '
        'WHERE ' + DISTRICT + ' AND $timeFilter GROUP BY "district", "station"',
        fmt="table")], w=24, options=TABLE_LAST)
    b.panel("timeseries", "Water quality class (GB 3838, 6 = 劣V)", [_target(
        'SELECT max("class") AS class FROM "water_class_1h" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY time(1h), "station" fill(none)', alias="$tag_station")],
        minmax=(1, 6), decimals=0,
        thresholds=[("#00E400", None), ("#FFFF00", 3), ("#FF7E00", 4), ("#FF0000", 5),
                    ("#7E0023", 6)])
    b.panel("timeseries", "Water: dissolved oxygen / NH3-N / TP", [
        _target('SELECT mean("do") AS do FROM "water_class_1h" WHERE ' + DISTRICT +
                ' AND $timeFilter GROUP BY time(1h) fill(none)', "A", alias="DO mg/L"),
        _target('SELECT mean("nh3n") AS nh3n FROM "water_class_1h" WHERE ' + DISTRICT +
                ' AND $timeFilter GROUP BY time(1h) fill(none)', "B", alias="NH3-N mg/L"),
        _target('SELECT mean("tp") AS tp FROM "water_class_1h" WHERE ' + DISTRICT +
                ' AND $timeFilter GROUP BY time(1h) fill(none)', "C", alias="TP mg/L")])
    b.panel("timeseries", "Noise LAeq vs limit (GB 3096)", [
        _target('SELECT mean("laeq") AS laeq FROM "noise_1m" WHERE ' + DISTRICT +
                ' AND $timeFilter GROUP BY time($__interval), "monitor" fill(none)', "A",
                alias="$tag_monitor"),
        _target('SELECT max("limit") AS lim FROM "noise_1m" WHERE ' + DISTRICT +
                ' AND $timeFilter GROUP BY time($__interval), "zone" fill(none)', "B",
                alias="limit zone $tag_zone")], unit="dB")
    b.panel("timeseries", "Noise monitors exceeding", [_target(
        'SELECT sum("exceeding") AS exceeding FROM "noise_1m" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY time(1m), "district" fill(none)',
        alias="$tag_district")], decimals=0)
    b.panel("timeseries", "Max exceedance by zone", [_target(
        'SELECT max("exceedance_db") AS exceedance FROM "noise_1m" WHERE ' + DISTRICT +
        ' AND "night" = 1 AND $timeFilter GROUP BY time($__interval), "zone" fill(none)',
        alias="night, zone $tag_zone"), _target(
        'SELECT max("exceedance_db") AS exceedance FROM "noise_1m" WHERE ' + DISTRICT +
        ' AND "night" = 0 AND $timeFilter GROUP BY time($__interval), "zone" fill(none)',
        "B", alias="day, zone $tag_zone")], unit="dB")
    b.panel("timeseries", "Per-minute percentiles of $m (p50 / p95 / p99)", [_target(
        'SELECT mean("p50") AS p50, mean("p95") AS p95, mean("p99") AS p99 FROM "pct_1m" '
        'WHERE "m" = \'$m\' AND ' + DISTRICT +
        ' AND $timeFilter GROUP BY time($__interval), "district" fill(none)',
        alias="$tag_district $col")], w=24)
    return b


def parking() -> Board:
    b = district_var(Board("citybrain-parking", "citybrain · Parking", ["parking"]),
                     "parking_1m")
    where = 'WHERE "level" = \'district\' AND ' + DISTRICT + ' AND $timeFilter '
    by = 'GROUP BY time($__interval), "district" fill(none)'
    b.panel("timeseries", "On-street bay occupancy", [_target(
        'SELECT mean("bay_occupancy") AS occupancy FROM "parking_1m" ' + where + by,
        alias="$tag_district")], unit="percentunit", minmax=(0, 1))
    b.panel("timeseries", "Lot occupancy (district)", [_target(
        'SELECT mean("lot_occupancy") AS occupancy FROM "parking_1m" ' + where + by,
        alias="$tag_district")], unit="percentunit", minmax=(0, 1))
    b.panel("timeseries", "Bays reporting / occupied / stale", [
        _target('SELECT sum("bays_reporting") AS reporting FROM "parking_1m" ' + where +
                'GROUP BY time(1m) fill(none)', "A", alias="reporting"),
        _target('SELECT sum("bays_occupied") AS occupied FROM "parking_1m" ' + where +
                'GROUP BY time(1m) fill(none)', "B", alias="occupied"),
        _target('SELECT sum("bays_stale") AS stale FROM "parking_1m" ' + where +
                'GROUP BY time(1m) fill(none)', "C", alias="stale")], decimals=0)
    b.panel("timeseries", "Bay sensor batteries low / critical", [
        _target('SELECT sum("battery_low") AS low FROM "parking_1m" ' + where +
                'GROUP BY time(1m) fill(none)', "A", alias="low"),
        _target('SELECT sum("battery_critical") AS critical FROM "parking_1m" ' + where +
                'GROUP BY time(1m) fill(none)', "B", alias="critical")], decimals=0)
    b.panel("timeseries", "Turnover (per bay per day) and mean dwell", [
        _target('SELECT mean("turnover_per_bay_day") AS turnover FROM "parking_1m" ' +
                where + by, "A", alias="turnover $tag_district"),
        _target('SELECT mean("dwell_mean_s") AS dwell FROM "parking_1m" ' + where + by, "B",
                alias="dwell s $tag_district")])
    b.panel("timeseries", "Lot free spaces vs capacity (district)", [
        _target('SELECT last("lot_free") AS free FROM "parking_1m" ' + where + by, "A",
                alias="free $tag_district"),
        _target('SELECT last("lot_capacity") AS capacity FROM "parking_1m" ' + where + by,
                "B", alias="capacity $tag_district")], decimals=0)
    b.panel("table", "Lots (latest)", [_target(
        'SELECT last("occupancy") AS occupancy, last("free") AS free, '
        'last("capacity") AS capacity FROM "parking_lot_1m" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY "district", "lot"', fmt="table")], w=24, h=10,
        options=TABLE_LAST)
    b.panel("timeseries", "Lot occupancy", [_target(
        'SELECT mean("occupancy") AS occupancy FROM "parking_lot_1m" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY time($__interval), "lot" fill(none)', alias="$tag_lot")],
        w=24, unit="percentunit", minmax=(0, 1))
    return b


def kitchen() -> Board:
    b = district_var(Board("citybrain-kitchen", "citybrain · Kitchens (明厨亮灶)", ["kitchen"],
                           time_from="now-24h"), "kitchen_alarms_open")
    b.panel("timeseries", "Open alarms by district", [_target(
        'SELECT last("open") AS open FROM "kitchen_alarms_open" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY time($__interval), "district" fill(none)',
        alias="$tag_district")], decimals=0)
    b.panel("timeseries", "Alarms raised by type", [_target(
        'SELECT count("value") AS raised FROM "kitchen_alarm" WHERE "state" = \'raised\' '
        'AND ' + DISTRICT + ' AND $timeFilter GROUP BY time($__interval), "alarm" fill(0)',
        alias="$tag_alarm")], decimals=0,
        options={"legend": {"displayMode": "table", "placement": "right"}})
    b.panel("table", "Alarm transitions", [_target(
        'SELECT "value", "peak", "raised_ts" FROM "kitchen_alarm" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY "district", "restaurant", "alarm", "state"',
        fmt="table")], w=24, h=12, options={"showHeader": True,
                                            "sortBy": [{"displayName": "Time",
                                                        "desc": True}]},
        description="Every raised / ongoing / cleared transition; value and peak in the "
                    "alarm's unit, raised_ts in ns.")
    b.panel("timeseries", "Gas leak / cooking fume peaks", [_target(
        'SELECT max("peak") AS peak FROM "kitchen_alarm" WHERE ' + DISTRICT +
        ' AND "alarm" =~ /^(gas_leak|cooking_fume)$/ AND $timeFilter '
        'GROUP BY time($__interval), "alarm" fill(none)', alias="$tag_alarm")], w=24)
    return b


def pipeline() -> Board:
    b = district_var(Board("citybrain-pipeline", "citybrain · Pipeline health & data quality",
                           ["pipeline", "quality"], refresh="30s", time_from="now-3h"))
    b.panel("timeseries", "Readings aggregated per 10 s, by kind", [_target(
        'SELECT sum("count") AS readings FROM "agg_10s" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY time(10s), "kind" fill(0)', alias="$tag_kind")],
        description="Sum of the 10 s window counts: the readings that reached the hub in "
                    "time to be aggregated.")
    b.panel("timeseries", "Readings received / rejected per minute", [
        _target('SELECT sum("received") AS received FROM "quality_1m" WHERE '
                '"level" = \'system\' AND ' + DISTRICT +
                ' AND $timeFilter GROUP BY time(1m) fill(none)', "A", alias="received"),
        _target('SELECT sum("rejected") AS rejected FROM "quality_1m" WHERE '
                '"level" = \'system\' AND ' + DISTRICT +
                ' AND $timeFilter GROUP BY time(1m) fill(none)', "B", alias="rejected")])
    b.panel("timeseries", "Online ratio by district", [_target(
        'SELECT mean("online_ratio") AS online FROM "quality_1m" WHERE "level" = \'district\' '
        'AND ' + DISTRICT + ' AND $timeFilter GROUP BY time($__interval), "district" '
        'fill(none)', alias="$tag_district")], unit="percentunit", minmax=(0, 1))
    b.panel("timeseries", "Validity by domain", [_target(
        'SELECT mean("validity") AS validity FROM "quality_1m" WHERE "level" = \'system\' '
        'AND ' + DISTRICT + ' AND $timeFilter GROUP BY time($__interval), "domain" '
        'fill(none)', alias="$tag_domain")], unit="percentunit", minmax=(0, 1))
    b.panel("timeseries", "Device → hub latency (worst system)", [_target(
        'SELECT max("latency_p50_s") AS p50, max("latency_p95_s") AS p95, '
        'max("latency_p99_s") AS p99 FROM "quality_1m" WHERE "level" = \'system\' AND ' +
        DISTRICT + ' AND $timeFilter GROUP BY time($__interval) fill(none)')], unit="s")
    b.panel("timeseries", "Completeness (hourly) by district", [_target(
        'SELECT mean("completeness") AS completeness FROM "completeness_1h" '
        'WHERE "level" = \'district\' AND ' + DISTRICT +
        ' AND $timeFilter GROUP BY time(1h), "district" fill(none)', alias="$tag_district")],
        unit="percentunit", minmax=(0, 1))
    b.panel("table", "Least complete systems (last hour)", [_target(
        'SELECT last("completeness") AS completeness, last("observed_slots") AS observed, '
        'last("expected_slots") AS expected FROM "completeness_1h" WHERE '
        '"level" = \'system\' AND ' + DISTRICT + ' AND $timeFilter GROUP BY "district", "id"',
        fmt="table")], w=24, h=10,
        options={"showHeader": True, "sortBy": [{"displayName": "completeness",
                                                 "desc": False}]})
    b.panel("timeseries", "Anomalies by reason", [_target(
        'SELECT count("score") AS anomalies FROM "anomaly" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY time($__interval), "reason" fill(0)',
        alias="$tag_reason")], decimals=0)
    b.panel("table", "Latest anomalies", [_target(
        'SELECT "score", "value" FROM "anomaly" WHERE ' + DISTRICT +
        ' AND $timeFilter GROUP BY "district", "device", "m", "reason", "system"',
        fmt="table")], options={"showHeader": True,
                                "sortBy": [{"displayName": "Time", "desc": True}]})
    return b


BOARDS = {"city-overview": overview, "environment": environment, "parking": parking,
          "kitchen": kitchen, "pipeline-health": pipeline}


def render() -> dict[Path, str]:
    return {OUT / f"{name}.json": json.dumps(make().json(), ensure_ascii=False, indent=2) + "\n"
            for name, make in BOARDS.items()}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [p.name for p, text in files.items()
                 if not p.exists() or p.read_text(encoding="utf-8") != text]
        if stale:
            print(f"out of date: {', '.join(stale)} (run {Path(__file__).name})")
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
