"""The InfluxDB token (and v1 password) come from the environment or a file and never show up
in reprs, ``describe()``, error messages, logs, the stats file or the hub's HTTP endpoints."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.request import urlopen

import pytest

from citybrain.localstack import MosquittoServer, VictoriaMetricsServer, free_port
from citybrain.mqtt import BrokerConfig
from hub.service import HubConfig
from hub.sinks import InfluxConfig, WriteError, load_secret, make_sink
from tests.local_http import serving

TOKEN = "tok-3f9a1c7e5b2d4a6f8e0c"
PASSWORD = "pw-8d6b4f2a0c9e7d5b"
ROOT = Path(__file__).parents[2]


def test_config_repr_and_describe_hide_secrets() -> None:
    cfg = InfluxConfig(url=f"http://admin:{PASSWORD}@127.0.0.1:8086", api="v2", token=TOKEN,
                       username="admin", password=PASSWORD)
    hub = HubConfig(broker=BrokerConfig(username="hub", password=PASSWORD), influx=cfg)
    for text in (repr(cfg), str(cfg.describe()), repr(hub)):
        assert TOKEN not in text and PASSWORD not in text, text
    assert cfg.describe()["url"] == "http://127.0.0.1:8086"


def test_token_file_first_line_and_errors_without_contents(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    assert load_secret("ignored", path) == TOKEN
    assert load_secret("from-env", None) == "from-env"
    with pytest.raises(ValueError) as err:
        load_secret("", tmp_path / "missing")
    assert "missing" in str(err.value)


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with 401 (or 500) and every request header in the body."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = ("\n".join(f"{k}: {v}" for k, v in self.headers.items()) + "\n" + self.path)
        status = 500 if "/api/v2/buckets" in self.path else 401
        data = json.dumps({"message": body}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    with serving(_Echo) as url:
        yield url


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_errors_from_a_server_echoing_credentials_are_scrubbed(echo_url: str, api: str) -> None:
    cfg = InfluxConfig(url=echo_url, api=api, token=TOKEN, username="admin", password=PASSWORD)
    basic = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    sink = make_sink(cfg)
    for call in (sink.ensure_target, lambda: sink.write(b"m f=1 1\n")):
        with pytest.raises(WriteError) as err:
            call()
        text = str(err.value)
        assert "***" in text  # the server did echo a credential ...
        assert TOKEN not in text and PASSWORD not in text and basic not in text  # ... masked
    sink.close()


def test_unreachable_error_drops_credentials_in_the_url() -> None:
    cfg = InfluxConfig(url=f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}", api="v1",
                       username="admin", password=PASSWORD)
    with pytest.raises(WriteError) as err:
        make_sink(cfg).write(b"m f=1 1\n")
    assert err.value.retryable and PASSWORD not in str(err.value)


@pytest.mark.integration
def test_running_hub_never_shows_the_token(tmp_path: Path, mosquitto: MosquittoServer,
                                           victoria: VictoriaMetricsServer) -> None:
    token_file = tmp_path / "influx-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    stats, port = tmp_path / "hub.json", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update({"CITYBRAIN_INFLUX_TOKEN_FILE": str(token_file), "CITYBRAIN_INFLUX_API": "v2",
                "CITYBRAIN_INFLUX_URL": victoria.url, "PYTHONUNBUFFERED": "1"})
    cmd = [sys.executable, "-m", "citybrain.cli", "hub", "--mqtt-port", str(mosquitto.port),
           "--client-id", f"hub-token-{os.getpid()}", "--log-level", "DEBUG",
           "--stats-file", str(stats), "--http-port", str(port), "--wal-dir",
           str(tmp_path / "wal")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    pages = []
    try:
        deadline = time.monotonic() + 90
        while not stats.exists():
            if proc.poll() is not None:
                pytest.fail(f"hub exited: {proc.communicate()[0][-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("hub wrote no stats file within 90 s")
            time.sleep(0.2)
        for path in ("/api/state", "/metrics", "/"):
            with urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
                pages.append(r.read().decode(errors="replace"))
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "victoria" in out.lower() or "ingesting into" in out  # it did log its target
    for text in (out, stats.read_text(), *pages):
        assert TOKEN not in text
    assert victoria.url in json.dumps(json.loads(stats.read_text()).get("influx", {}))
