"""``citybrain loadtest`` end to end: its own Mosquitto, influxd and hub(s), a short load,
and the report: every reading accounted for by InfluxDB, latency histograms, a plot."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from citybrain.cli import main
from citybrain.loadtest.generator import LoadConfig
from citybrain.loadtest.profiles import parse_profile
from citybrain.loadtest.run import LoadtestConfig, run_loadtest
from citybrain.localstack import missing_binaries

pytestmark = pytest.mark.skipif(bool({"mosquitto", "influxd"} & set(missing_binaries())),
                                reason="needs mosquitto and influxd (make setup)")


def test_frames_through_one_hub_lose_nothing(tmp_path: Path) -> None:
    """The CLI, as a user runs it: a 5 s step profile of edge frames."""
    out = tmp_path / "lt"
    code = main(["loadtest", "--profile", "step:steps=2", "--rate", "20000", "--duration", "5",
                 "--devices", "3000", "--out", str(out)])
    report = orjson.loads((out / "report.json").read_bytes())
    assert code == 0 and report["lost"] == 0 and report["drained"]
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
    assert report["lost"] == 0 and report["drained"]
    assert report["stored_in_aggregates"] == report["published_readings"] > 5_000
    assert report["stored_raw"] + report["raw_sampled_out"] == report["published_readings"]
    assert report["per_device"]["devices_with_loss"] == 0
