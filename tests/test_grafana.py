"""Grafana provisioning (deploy/grafana/) is valid and its dashboards query only what the hub
really stores.

(a) every provisioning file parses, every dashboard has a uid, title and panels, and the
    JSON is what ``deploy/grafana/build_dashboards.py`` generates;
(b) every InfluxQL query's measurement, fields and tag keys exist in an influxd a real hub
    wrote to (real frames for every device kind, per-minute snapshots, all windows closed);
(c) ``docker-compose config`` still resolves with the grafana service.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import yaml

from citybrain.localstack import InfluxV1Server
from edge.batcher import FrameBuilder
from hub.service import Hub, HubConfig
from hub.sinks import InfluxConfig, ensure_target_with_retry
from tests.test_compose import resolved_config

ROOT = Path(__file__).parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROVISIONING = sorted((GRAFANA / "provisioning").rglob("*.yaml"))


# -- (a) files ---------------------------------------------------------------------------------
def test_provisioning_files_parse() -> None:
    assert PROVISIONING, "no provisioning files"
    kinds = set()
    for path in PROVISIONING:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert doc["apiVersion"] == 1, path
        kinds |= {k for k in ("datasources", "providers") if k in doc}
    assert kinds == {"datasources", "providers"}
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/influxdb.yaml").read_text())
    (influx,) = ds["datasources"]
    assert influx["type"] == "influxdb" and influx["url"] == "http://influxdb:8086"
    assert influx["jsonData"]["dbName"] == "citybrain"
    assert influx["jsonData"]["httpHeaderName1"] == "Authorization"
    assert influx["secureJsonData"]["httpHeaderValue1"] == "Token ${CITYBRAIN_INFLUX_TOKEN}"


def test_dashboards_parse_and_are_generated() -> None:
    names = {p.stem for p in DASHBOARDS}
    assert {"city-overview", "environment", "parking", "kitchen", "pipeline-health"} <= names
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text(encoding="utf-8"))
        assert board["uid"] and board["title"] and board["panels"], path.name
        uids.add(board["uid"])
        for panel in board["panels"]:
            assert panel["title"] and panel["targets"], (path.name, panel.get("title"))
            for t in panel["targets"]:
                assert t["datasource"]["uid"] == "citybrain-influxdb"
    assert len(uids) == len(DASHBOARDS), "dashboard uids must be unique"
    out = subprocess.run([sys.executable, str(GRAFANA / "build_dashboards.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# -- (b) queries -------------------------------------------------------------------------------
@dataclass
class Refs:
    """What one query needs: measurement, fields (SELECT), keys (WHERE: tag or field),
    tags (GROUP BY / SHOW TAG VALUES)."""

    measurement: str
    fields: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)


QUOTED = re.compile(r'"([^"]+)"')
CLAUSES = re.compile(r"^\s*SELECT\s+(?P<select>.+?)\s+FROM\s+\"(?P<m>[^\"]+)\"\s*"
                     r"(?:WHERE\s+(?P<where>.+?))?\s*(?:GROUP BY\s+(?P<group>.+?))?\s*"
                     r"(?:fill\(\w+\))?\s*$", re.I | re.S)
SHOW_TAG_VALUES = re.compile(r'^SHOW TAG VALUES FROM "([^"]+)" WITH KEY = "([^"]+)"$')


def parse_query(q: str) -> Refs:
    if m := SHOW_TAG_VALUES.match(q.strip()):
        return Refs(m.group(1), tags={m.group(2)})
    m = CLAUSES.match(q)
    assert m, f"not a plain InfluxQL SELECT: {q}"
    # string literals and regexes may hold anything: drop them before picking identifiers
    where = re.sub(r"'[^']*'|/[^/]*/", "''", m.group("where") or "")
    return Refs(m.group("m"), fields=set(QUOTED.findall(m.group("select"))),
                keys=set(QUOTED.findall(where)), tags=set(QUOTED.findall(m.group("group") or "")))


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text(encoding="utf-8"))
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                out.append((f"{path.stem}: ${var['name']}", var["query"]))
        for panel in board["panels"]:
            for t in panel["targets"]:
                assert t.get("rawQuery"), (path.name, panel["title"])
                out.append((f"{path.stem}: {panel['title']}", t["query"]))
    return out


def test_query_parser() -> None:
    r = parse_query('SELECT last("aqi") AS aqi, max("x") FROM "aqi_1h" WHERE "district" =~ '
                    "/^$district$/ AND \"night\" = 1 AND \"m\" = 'a \"b\"' AND $timeFilter "
                    'GROUP BY time(1h), "station" fill(none)')
    assert r == Refs("aqi_1h", {"aqi", "x"}, {"district", "night", "m"}, {"station"})
    assert parse_query('SHOW TAG VALUES FROM "pct_1m" WITH KEY = "m"') == \
        Refs("pct_1m", tags={"m"})


# Devices of district 500103 (Yuzhong) — one of every kind, fed every 10 minutes for 3 h.
D = "500103"
AIR = {"pm2_5": 80.0, "pm10": 120.0, "so2": 10.0, "no2": 40.0, "co": 1.2, "o3": 100.0}
WATER = {"ph": 7.2, "do": 6.5, "codmn": 3.0, "nh3n": 0.4, "tp": 0.1}


def _feed(hub: Hub, start: int, hours: int) -> None:
    births = {f"{D}-noise-01-00000": {"zone": "2"}, f"{D}-lot-01-00000": {"capacity": 200}}
    for device, attrs in births.items():
        hub.handle_event(orjson.dumps({"type": "birth", "device": device, "attrs": attrs,
                                       "link": f"link-{device}"}))
    builder = FrameBuilder(D, max_readings=10_000)
    for step in range(hours * 6):
        seq = step
        t = start + step * 600 + 5
        for name, v in AIR.items():  # constant: also a stuck anomaly after an hour
            builder.add(f"{D}-air-01-00000", f"{D}-air-01", seq, t, name, v)
        for name, v in WATER.items():
            builder.add(f"{D}-water-01-00000", f"{D}-water-01", seq, t, name, v + step * 1e-3)
        for k in range(6):  # noise every 10 s for a minute: final 1 min windows
            builder.add(f"{D}-noise-01-00000", f"{D}-noise-01", seq * 6 + k, t + 10 * k,
                        "laeq", 58.0 + (step % 5) + k * 0.1)
        for b in range(3):
            bay = f"{D}-bay-01-{b:05d}"
            builder.add(bay, f"{D}-bay-01", seq, t, "occupied", float((step + b) % 2))
            builder.add(bay, f"{D}-bay-01", seq, t, "battery", 3.3)
        builder.add(f"{D}-lot-01-00000", f"{D}-lot-01", seq, t, "free", 120.0 - step)
        gas = 50.0 if step == 3 else 0.5  # one leak: raised, then cleared
        builder.add(f"{D}-kitchen-01-00000", f"{D}-kitchen-01", seq, t, "gas", gas)
        frame, _, _ = builder.seal()
        hub.handle_frame(frame)
        hub.tick(time.monotonic())
    assert hub.analytics is not None and hub.event_clock_ns is not None
    out = hub.analytics.on_minute(hub.event_clock_ns, hub.windows.pending("1h"))
    for body, lines in out.bodies:
        hub.writer.submit("analytics", body, lines)
    hub.emit(hub.windows.close_all())


def _show(influxd: InfluxV1Server, db: str, q: str) -> dict[str, set[str]]:
    res = influxd.query(q, db=db)["results"][0]
    return {s["name"]: {row[0] for row in s["values"]} for s in res.get("series", [])}


@pytest.mark.integration
def test_dashboard_queries_match_what_the_hub_stores(influxd: InfluxV1Server,
                                                     unique_db: str) -> None:
    hub = Hub(HubConfig(client_id=f"hub-{uuid.uuid4().hex[:8]}",
                        influx=InfluxConfig(url=influxd.url, database=unique_db)))
    ensure_target_with_retry(hub.sink)
    hub.writer.start()
    hour = 3600
    start = (int(time.time()) - 86400) // hour * hour  # a whole hour, a day ago
    _feed(hub, start, hours=3)
    assert hub.counters.get("analytics_errors") == 0
    assert hub.writer.stop(30) == 0

    measurements = set(_show(influxd, unique_db, "SHOW MEASUREMENTS").get("measurements", ()))
    fields = _show(influxd, unique_db, "SHOW FIELD KEYS")
    tags = _show(influxd, unique_db, "SHOW TAG KEYS")
    documented = {"aqi_1h", "aqi_district_1h", "water_class_1h", "noise_1m", "parking_1m",
                  "parking_lot_1m", "kitchen_alarm", "kitchen_alarms_open", "anomaly",
                  "pct_1m", "quality_1m", "completeness_1h", "agg_10s"}
    assert documented <= measurements, f"the hub did not write {documented - measurements}"

    problems = []
    queries = dashboard_queries()
    assert len(queries) > 40
    for where, q in queries:
        r = parse_query(q)
        if r.measurement not in measurements:
            problems.append(f"{where}: no measurement {r.measurement}")
            continue
        f, t = fields.get(r.measurement, set()), tags.get(r.measurement, set())
        problems += [f"{where}: {r.measurement} has no field {x}" for x in r.fields - f]
        problems += [f"{where}: {r.measurement} has no tag {x}" for x in r.tags - t]
        problems += [f"{where}: {r.measurement} has no tag or field {x}"
                     for x in r.keys - f - t]
    assert not problems, "\n".join(problems)


def test_on_minute_with_few_devices() -> None:
    """Regression: per-minute snapshots work before 1,024 devices have registered."""
    hub = Hub(HubConfig(client_id="hub-few", influx=InfluxConfig(url="http://127.0.0.1:9")))
    assert hub.analytics is not None
    builder = FrameBuilder(D, max_readings=100)
    t = int(time.time()) - 60
    builder.add(f"{D}-bay-01-00000", f"{D}-bay-01", 0, t, "occupied", 1.0)
    frame, _, _ = builder.seal()
    hub.handle_frame(frame)
    assert hub.event_clock_ns is not None
    out = hub.analytics.on_minute(hub.event_clock_ns, hub.windows.pending("1h"))
    assert out.bodies


# -- (c) compose -------------------------------------------------------------------------------
def test_compose_has_grafana_with_provisioning() -> None:
    cfg = resolved_config()
    svc = cfg["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana:11\.\d+\.\d+", svc["image"])
    assert [str(p).split("/")[0] for p in svc["ports"]] == ["127.0.0.1:3000:3000"]
    targets = {str(v["target"] if isinstance(v, dict) else v.split(":")[1])
               for v in svc["volumes"]}
    assert {"/etc/grafana/provisioning", "/etc/grafana/dashboards"} <= targets
    env = svc["environment"]
    assert env["CITYBRAIN_INFLUX_TOKEN"] == \
        cfg["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"]
    dbrp = cfg["services"]["influxdb-dbrp"]
    assert dbrp["environment"]["INFLUX_TOKEN"] == env["CITYBRAIN_INFLUX_TOKEN"]
    assert "grafana-data" in cfg["volumes"]
