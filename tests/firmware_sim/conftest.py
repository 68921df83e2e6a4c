"""Fixtures for the simulator's tests: a private Mosquitto broker on 127.0.0.1.

``sim_broker`` starts ``/usr/sbin/mosquitto`` (or the one on PATH) on a free port with a config
of its own in ``tmp_path``, waits until the port accepts connections, and terminates it after
the test. Named so as not to clash with the shared fixtures of ``tests/conftest.py``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto",)
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SimBroker:
    host: str
    port: int
    log_path: Path


def _mosquitto_binary() -> str | None:
    for p in MOSQUITTO_PATHS:
        if Path(p).is_file():
            return p
    return shutil.which("mosquitto")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def sim_broker(tmp_path: Path) -> Iterator[SimBroker]:
    """A Mosquitto of this test's own on 127.0.0.1 (anonymous, unlimited queues)."""
    binary = _mosquitto_binary()
    if binary is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto", pytrace=False)
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    # Unlimited per-client queue: a test subscriber that falls behind must not lose messages.
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    "max_queued_messages 0\npersistence false\n")
    log_path = tmp_path / "mosquitto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _accepts("127.0.0.1", port):
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {proc.returncode}: "
                            f"{log_path.read_text(errors='replace')}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"mosquitto did not listen on port {port} within "
                            f"{START_TIMEOUT_S}s", pytrace=False)
            time.sleep(0.05)
        yield SimBroker("127.0.0.1", port, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
