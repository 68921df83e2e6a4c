"""``citybrain up``: a short city run on its own Mosquitto and influxd, accounted in full."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from citybrain.localstack import InfluxV1Server, MosquittoServer
from citybrain.up import influx_count
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).parents[1]
KEYS = ["published", "edge_accepted", "rejected", "rejected_by_reason", "duplicates",
        "hub_received", "stored_raw", "stored_aggregates", "lost", "influx"]


def citybrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "citybrain.cli", *args]


def test_short_city_run_accounts_for_every_reading(tmp_path: Path, mosquitto: MosquittoServer,
                                                   influxd: InfluxV1Server,
                                                   unique_db: str) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.run(citybrain("up", "--duration", "12", "--speed", "60", "--seed", "7",
                                    "--var-dir", str(tmp_path / "var"), "--report",
                                    str(report), "--mqtt-host", mosquitto.host,
                                    "--mqtt-port", str(mosquitto.port),
                                    "--influx-url", influxd.url, "--influx-db", unique_db),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(report.read_text())
    assert all(k in doc for k in KEYS)
    assert doc["published"] > 1000
    assert doc["lost"] == 0
    # every tier drained in time and stopped cleanly: nothing was left unstored
    assert doc["accounting_complete"] is True and doc["accounting_warnings"] == [], doc[
        "accounting_warnings"]
    assert set(doc["exit_codes"].values()) == {0} and doc["drain_timed_out"] == []
    assert doc["stored_raw"] == doc["stored_raw_counted_in_influxdb"] == doc["hub_received"]
    assert doc["stored_raw"] == influx_count(influxd.url, unique_db)
    assert doc["published"] == (doc["stored_raw"] + doc["rejected"] + doc["duplicates"]
                                - doc["redelivered"])
    assert doc["stored_aggregates"] > 0 and doc["aggregated_readings"] > 0
    assert doc["influx"] == {"url": influxd.url, "api": "v1", "database": unique_db}
    # Default faults are on: bad readings were rejected with reasons, not dropped silently.
    assert doc["rejected"] == sum(doc["rejected_by_reason"].values())
    assert doc["hub"].get("analytics_errors", 0) == 0
    # The analytics were computed live and stored next to the readings.
    res = influxd.query("SHOW MEASUREMENTS", db=unique_db)["results"][0]
    measurements = {row[0] for row in res["series"][0]["values"]}
    assert {"raw_air", "raw_water", "raw_noise", "raw_bay", "raw_lot", "raw_kitchen",
            "agg_10s", "agg_1m", "agg_1h", "aqi_1h", "aqi_district_1h", "water_class_1h",
            "noise_1m", "parking_1m", "parking_lot_1m", "pct_1m", "quality_1m",
            "kitchen_alarms_open"} <= measurements
    # Every tier stopped cleanly: no leftover processes from this run.
    assert not _processes_mentioning(str(tmp_path))


def test_ctrl_c_stops_everything_cleanly(tmp_path: Path) -> None:
    var = tmp_path / "var"
    proc = subprocess.Popen(citybrain("up", "--speed", "10", "--var-dir", str(var)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (var / "run" / "sim.json").exists() and not (var / "run" / "hub.json"
                                                              ).exists():
            assert proc.poll() is None, out_of(proc)
            if time.monotonic() > deadline:
                pytest.fail("the city did not start within 120 s")
            time.sleep(0.2)

        def stored_raw() -> int:  # the hub's run stats file, rewritten each second
            assert proc.poll() is None, out_of(proc)
            return int(_read_stats(var / "run" / "hub.json").get("stored_raw") or 0)

        # the city is moving: readings reached InfluxDB through every tier
        wait_for(lambda: stored_raw() > 0, 120,
                 lambda: f"the hub to store readings ({var / 'run' / 'hub.json'})")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert '"lost": 0' in out
    assert '"accounting_complete": true' in out and "accounting incomplete" not in out
    assert "did not go smoothly" not in out  # no warnings either
    assert not _processes_mentioning(str(tmp_path))


def out_of(proc: subprocess.Popen[str]) -> str:
    """What a finished child printed (for assertion messages)."""
    out, _ = proc.communicate(timeout=10)
    return out[-3000:]


def _read_stats(path: Path) -> dict[str, Any]:
    """A tier's stats file (written atomically); empty until it exists."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (their var dir)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd and int(pid) != os.getpid():
            found.append(cmd)
    return found


def test_influx_count_sums_every_field(tmp_path: Path) -> None:
    from citybrain.localstack import InfluxV1Server
    with InfluxV1Server(tmp_path / "influx") as server:
        server.create_database("c")
        server.write("c", "raw_air,device=a pm2_5=1,o3=2 1\nraw_noise,device=b laeq=3 1\n"
                          "agg_10s,device=a count=1i 1\n")
        assert influx_count(server.url, "c") == 3
