"""``citybrain bench --quick`` runs end to end and writes every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMISED = [
    "kernel_window_readings_per_s", "numpy_reference_readings_per_s",
    "pandas_groupby_readings_per_s", "kernel_vs_pandas", "aqi_stations_per_s",
    "percentile_sketch_readings_per_s", "spike_detector_readings_per_s",
    "stuck_detector_readings_per_s", "lineproto_lines_per_s", "frame_decode_readings_per_s",
    "city_readings_per_s", "e2e_readings_per_s", "hub_cpu_us_per_reading",
    "half_load_p99_aggregated_s", "hub_raw_store_points_per_s", "influx_raw_hub_lines_per_s",
    "influx_raw_hub_lines_burst_per_s",
    "hub_scaling_1_to_2", "citybrain_peer_readings_per_s",
    # peers, side by side (bench/peers): Node-RED only where Node.js and npm are present
    "raw_subscriber_msgs_per_s", "naive_bridge_readings_per_s",
    "naive_bridge_per_message_readings_per_s", "influx_raw_points_per_s",
]


def test_bench_quick_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "-m", "citybrain.cli", "bench", "--quick", "--out",
                    str(out)], check=True, timeout=600, cwd=Path(__file__).parents[1])
    doc = json.loads(out.read_text())
    missing = [k for k in PROMISED if k not in doc]
    assert not missing, missing
    for k in PROMISED:
        assert doc[k] > 0, k  # measured, not a placeholder
    for k in ("e2e_lost", "city_lost", "half_load_lost", "hub_raw_store_lost",
              "hub_scaling_lost"):
        assert doc[k] == 0, k
    assert doc["machine"]["cpus"] >= 1
