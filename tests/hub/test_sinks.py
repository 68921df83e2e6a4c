"""Both InfluxDB API generations behind one sink, against real servers."""

from __future__ import annotations

import pytest

from citybrain.localstack import InfluxV1Server, VictoriaMetricsServer, free_port
from hub.sinks import InfluxConfig, WriteError, make_sink

pytestmark = pytest.mark.integration


def lines(n: int, meas: str = "raw_air") -> bytes:
    t0 = 1_700_000_000_000_000_000
    return b"".join(f"{meas},device=d{i % 7},district=500103 pm2_5={i}.5 {t0 + i}\n".encode()
                    for i in range(n))


def test_v1_creates_database_and_writes(influxd: InfluxV1Server, unique_db: str) -> None:
    sink = make_sink(InfluxConfig(url=influxd.url, api="v1", database=unique_db))
    sink.ensure_target()
    sink.ensure_target()  # idempotent
    sink.write(lines(1234))
    doc = influxd.query("SELECT count(pm2_5) FROM raw_air", db=unique_db)
    assert doc["results"][0]["series"][0]["values"][0][1] == 1234
    sink.close()


def test_v1_bad_line_is_not_retryable(influxd: InfluxV1Server, unique_db: str) -> None:
    sink = make_sink(InfluxConfig(url=influxd.url, api="v1", database=unique_db))
    sink.ensure_target()
    with pytest.raises(WriteError) as e:
        sink.write(b"raw_air,device=x pm2_5= 1\n")
    assert e.value.status == 400 and not e.value.retryable


def test_v1_unreachable_is_retryable() -> None:
    sink = make_sink(InfluxConfig(url=f"http://127.0.0.1:{free_port()}", api="v1"))
    with pytest.raises(WriteError) as e:
        sink.write(lines(1))
    assert e.value.retryable


def test_v2_writes_through_influxdb_client(victoria: VictoriaMetricsServer) -> None:
    sink = make_sink(InfluxConfig(url=victoria.url, api="v2", org="citybrain",
                                  bucket="citybrain", token="secret-token"))
    sink.ensure_target()  # victoria-metrics has no buckets API: skipped with a warning
    sink.write(lines(500, meas="raw_v2check"))
    victoria.flush()
    rows = victoria.export('{__name__=~"raw_v2check.*"}')
    assert sum(len(r["values"]) for r in rows) == 500
    sink.close()


def test_v2_unreachable_is_retryable() -> None:
    sink = make_sink(InfluxConfig(url=f"http://127.0.0.1:{free_port()}", api="v2",
                                  token="t"))
    with pytest.raises(WriteError) as e:
        sink.write(lines(1))
    assert e.value.retryable
