"""``citybrain loadtest`` end to end: its own Mosquitto, influxd and hub(s), a short load,
and the report: every reading accounted for by InfluxDB, latency histograms, a plot."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest

from citybrain.cli import main
from citybrain.loadtest.generator import LoadConfig
from citybrain.loadtest.profiles import parse_profile
from citybrain.loadtest.run import (
    LoadtestConfig,
    accounting_warnings,
    hub_stop_budget_s,
    influx_authorization,
    influx_settings,
    influxdb_pace,
    run_loadtest,
    stored_per_device,
    stored_total,
    wait_settled,
)
from citybrain.localstack import InfluxV1Server, missing_binaries
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(bool({"mosquitto", "influxd"} & set(missing_binaries())),
                                reason="needs mosquitto and influxd (make setup)")


def test_frames_through_one_hub_lose_nothing(tmp_path: Path) -> None:
    """The CLI, as a user runs it: a 5 s step profile of edge frames."""
    out = tmp_path / "lt"
    code = main(["loadtest", "--profile", "step:steps=2", "--rate", "20000", "--duration", "5",
                 "--devices", "3000", "--out", str(out)])
    report = orjson.loads((out / "report.json").read_bytes())
    assert code == 0 and report["lost"] == 0 and report["drained"]
    assert report["accounting_complete"] and report["accounting_warnings"] == []
    assert report["hub_exit_codes"] == [0] and report["hub_lines_in_flight_at_exit"] == 0
    assert report["hub_unwritten_lines_at_exit"] == report["hub_unprocessed_wal_records"] == 0
    assert report["published_readings"] > 50_000
    assert report["stored_in_aggregates"] == report["published_readings"]
    assert report["stored_raw"] == report["published_readings"]
    assert report["per_device"]["lost"] == 0 and report["per_device"]["duplicated"] == 0
    for stage in ("aggregated", "stored"):
        lat = report["latency"][stage]
        assert lat["count"] == report["published_readings"]
        assert 0 < lat["p50"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    assert report["hub_cpu_us_per_reading"] > 0 and report["hub_peak_rss_bytes"] > 0
    pace = report["hubs_waited_for_influxdb"]
    assert pace["waited_s"] >= 0 and pace["share"] >= 0 and pace["write_errors"] == {}
    assert report["machine"]["cpus"] >= 1 and report["timeline"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_messages_through_an_edge_and_two_hubs(tmp_path: Path) -> None:
    """Per-device JSON messages through a real edge into a two-hub cluster; raw storage
    sampled 1 in 10 (every reading still aggregated)."""
    load = LoadConfig(mode="messages", profile=parse_profile("constant", rate=3000,
                                                             duration_s=4),
                      devices=600, processes=1, connections=2)
    report = run_loadtest(LoadtestConfig(load=load, out_dir=tmp_path, hubs=2, partitions=4,
                                         raw_every=10, progress=False))
    assert report["lost"] == 0 and report["drained"] and report["accounting_complete"]
    assert report["hub_exit_codes"] == [0, 0]
    assert report["stored_in_aggregates"] == report["published_readings"] > 5_000
    assert report["stored_raw"] + report["raw_sampled_out"] == report["published_readings"]
    assert report["per_device"]["devices_with_loss"] == 0


AGG_SUM = 'SELECT sum("count") FROM "agg_1h"'
HOUR_NS = 1_763_712_000_000_000_000


def _agg_lines(devices: range, count: int) -> str:
    return "".join(f"agg_1h,device=d{i} count={count}i {HOUR_NS}\n" for i in devices)


def test_the_aggregate_count_waits_for_writes_still_landing(influxd: InfluxV1Server,
                                                            unique_db: str) -> None:
    """The race the report had: the final windows' writes land after the first count. The
    count is read again until it reaches what was published, so none of it reads as lost."""
    influxd.create_database(unique_db)
    influxd.write(unique_db, _agg_lines(range(0, 50), 7))  # the part stored in time
    first_read = threading.Event()
    reads: list[int] = []

    def read() -> int:
        reads.append(stored_total(influxd.url, unique_db, AGG_SUM))
        first_read.set()
        return reads[-1]

    def late_writer() -> None:  # the rest lands only after the report's first count
        first_read.wait(30)
        influxd.write(unique_db, _agg_lines(range(50, 80), 7))
        influxd.write(unique_db, _agg_lines(range(80, 100), 7))

    writer = threading.Thread(target=late_writer, daemon=True)
    writer.start()
    total, settled = wait_settled(read, 100 * 7, timeout_s=60, settle_s=30, poll_s=0.05)
    writer.join(30)
    assert reads[0] == 50 * 7 and (total, settled) == (100 * 7, True)


def test_a_real_shortfall_still_counts_as_lost(influxd: InfluxV1Server, unique_db: str) -> None:
    """A count that stops short of the target is returned as it is once it stops changing:
    waiting never hides a reading that was not stored."""
    influxd.create_database(unique_db)
    influxd.write(unique_db, _agg_lines(range(0, 10), 3))
    total, settled = wait_settled(lambda: stored_total(influxd.url, unique_db, AGG_SUM),
                                  100, timeout_s=30, settle_s=0.3, poll_s=0.05)
    assert (total, settled) == (30, True)


def test_a_count_still_changing_at_the_deadline_is_not_settled() -> None:
    values = iter(range(1_000_000))
    total, settled = wait_settled(lambda: next(values), 10**9, timeout_s=0.5, settle_s=0.4,
                                  poll_s=0.01)
    assert not settled and total > 0


def test_the_report_says_when_the_accounting_is_incomplete() -> None:
    """A killed hub (its stats file stale), lines unwritten at exit (those a writer still
    held in flight included: ``InfluxWriter.stop`` counts them), a drain that timed out, a
    count still changing: each is named, so a "lost" next to them is not read as vanished."""
    clean = {"unprocessed_wal_records": 0, "unwritten_lines_at_exit": 0,
             "write_queued_lines": 0}
    assert accounting_warnings(True, [0, 0], clean, True) == []
    assert accounting_warnings(True, None, {"write_queued_lines": 5}, True) == []  # remote
    warned = accounting_warnings(False, [0, -9], clean | {"unwritten_lines_at_exit": 12,
                                                          "write_queued_lines": 3}, False)
    assert len(warned) == 4 and any("-9" in w for w in warned)
    # a hub that stopped while its processing thread still ran (``Hub.stop``)
    assert accounting_warnings(True, [0], clean | {"processing_unfinished_at_exit": 1},
                               True) == ["the hubs exited with 1 processing thread(s) still "
                                         "running"]
    # lines a stopped writer refused (their WAL records kept), as in up's report
    assert accounting_warnings(True, [0], clean | {"write_refused_lines": 7}, True) == [
        "the hubs exited with 7 lines refused by its stopped writer (their WAL records kept)"]
    # the hubs get their own stop budget before being killed
    assert hub_stop_budget_s(60.0) > 3 * 60 and hub_stop_budget_s(60.0, 6) > 6 * 3 * 60


def test_waiting_for_the_count_with_a_live_writer(influxd: InfluxV1Server,
                                                   unique_db: str) -> None:
    """Writes racing the count from a writer that keeps going for a while: the count
    returned is the final one (target reached), whatever the interleaving."""
    influxd.create_database(unique_db)
    done = threading.Event()

    def writer() -> None:
        for start in range(0, 200, 20):
            influxd.write(unique_db, _agg_lines(range(start, start + 20), 1))
        done.set()

    threading.Thread(target=writer, daemon=True).start()
    total, settled = wait_settled(lambda: stored_total(influxd.url, unique_db, AGG_SUM), 200,
                                  timeout_s=60, settle_s=30, poll_s=0.02)
    wait_for(done.is_set, 30, lambda: "the writer to finish")
    assert (total, settled) == (200, True)


def test_a_large_load_gets_an_influxd_that_takes_more_than_100k_devices(tmp_path: Path) -> None:
    # influxd's defaults refuse a tag's 100,001st value (a partial write, dropped=1)
    assert influx_settings(1_000)["data"].get("index-version") is None
    with InfluxV1Server(tmp_path / "influxd", settings=influx_settings(1_000_000)) as influx:
        assert 'index-version = "tsi1"' in influx.config_path.read_text()
        influx.create_database("big")
        for lo, hi in ((0, 100_000), (100_000, 100_050)):  # defaults: HTTP 400 for the 2nd
            influx.write("big", "\n".join(f"raw_bay,device=d{i} occupied=1i {i + 1}"
                                          for i in range(lo, hi)), precision="ns")
        res = influx.query('SELECT count("occupied") FROM raw_bay', db="big")
        assert res["results"][0]["series"][0]["values"][0][1] == 100_050


def test_counts_read_an_influxdb_that_wants_credentials(tmp_path: Path) -> None:
    """A deployment's InfluxDB 1.x with ``auth-enabled``: the hub's sink writes with its user
    (HTTP Basic) and the load test's count queries read with theirs; without credentials
    the query fails with an error that says which options to give."""
    from urllib.error import HTTPError
    from urllib.parse import urlencode
    from urllib.request import Request, urlopen

    from hub.sinks import InfluxConfig, InfluxV1Sink
    server = InfluxV1Server(tmp_path / "influxd", settings={"http": {"auth-enabled": True}})
    with server as influx:
        def admin_ready() -> bool:
            """Create the first user (allowed without credentials; it must be an admin)
            until an authenticated query passes: influxd has answered the CREATE USER and
            still refused the next request with "create admin user first" (seen once in CI)."""
            q = urlencode({"q": "CREATE USER ops WITH PASSWORD 'pw' WITH ALL PRIVILEGES"})
            try:
                with urlopen(f"{influx.url}/query", data=q.encode(), timeout=10):
                    pass
            except HTTPError:  # a retry once the user exists: credentials now required
                pass
            check = Request(f"{influx.url}/query?" + urlencode({"q": "SHOW DATABASES"}),
                            headers={"Authorization": influx_authorization("ops", "pw") or ""})
            try:
                with urlopen(check, timeout=10) as resp:
                    return bool(resp.status == 200)
            except HTTPError:
                return False

        wait_for(admin_ready, 20, lambda: "influxd to accept its first admin user")
        sink = InfluxV1Sink(InfluxConfig(url=influx.url, database="city", username="ops",
                                         password="pw"))
        sink.ensure_target()
        sink.write(b'agg_1h,device=d1 count=7i 1700000000000000000\n'
                   b'agg_1h,device=d2 count=5i 1700000000000000000\n')
        auth = influx_authorization("ops", "pw")
        wait_for(lambda: stored_total(influx.url, "city", AGG_SUM, auth) == 12)
        assert stored_per_device(influx.url, "city", auth) == {"d1": 7, "d2": 5}
        with pytest.raises(RuntimeError, match="--influx-username"):
            stored_total(influx.url, "city", AGG_SUM)
        with pytest.raises(RuntimeError, match="HTTP 401"):
            stored_total(influx.url, "city", AGG_SUM, influx_authorization("ops", "wrong"))


def test_influx_authorization_headers() -> None:
    assert influx_authorization() is None
    assert influx_authorization(token="t0k") == "Token t0k"  # 2.x: wins over a user
    assert influx_authorization("ops", "pw", "t0k") == "Token t0k"
    assert influx_authorization("ops", "pw") == "Basic b3BzOnB3"  # base64("ops:pw")


def test_influxdb_pace_is_the_hubs_wait_over_the_run() -> None:
    first = {"write_queue_full_us": 1_000_000, "write_errors": {"503": 2}}
    final = {"write_queue_full_us": 31_000_000, "write_errors": {"503": 5, "connection": 1}}
    pace = influxdb_pace(first, final, hubs=2, load_s=20.0)
    assert pace == {"waited_s": 30.0, "share": 0.75,
                    "write_errors": {"503": 3, "connection": 1}}
    assert influxdb_pace({}, {}, hubs=1, load_s=10.0) == {"waited_s": 0.0, "share": 0.0,
                                                          "write_errors": {}}
