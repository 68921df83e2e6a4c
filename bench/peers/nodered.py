"""Node-RED as people deploy it: mqtt in → json → function (build the point) → join (5,000
messages or 1 s) → node-red-contrib-influxdb ``influxdb batch``.

The flow is ``nodered/flow.json`` (broker, QoS, topic and database from environment
variables), the settings ``nodered/settings.js`` (headless: loopback only, no editor, no
palette installs, no telemetry), the versions ``nodered/package.json`` (node-red 4.1,
node-red-contrib-influxdb 0.7, locked in ``package-lock.json``), installed with ``npm ci``
into ``nodered/node_modules``. Node-RED runs as ``node red.js`` (so its pid is the process
measured), in a temporary user directory holding a copy of the flow.

Completion is seen from outside: InfluxDB's count is polled every 0.25 s until every
published reading landed or it stopped growing; CPU is the Node process's, from /proc,
between ready and that point.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.peers.common import READY_TIMEOUT_S, PeerResult, cpu_seconds, wait_landed
from bench.peers.load import publish_load
from bench.peers.raw_subscriber import data_filter
from citybrain.localstack import InfluxV1Server, free_port

NODERED_DIR = Path(__file__).parent / "nodered"
RED_JS = NODERED_DIR / "node_modules" / "node-red" / "red.js"
INFLUX_NODE = NODERED_DIR / "node_modules" / "node-red-contrib-influxdb" / "package.json"
NPM_TIMEOUT_S = 300.0
PING_TIMEOUT_S = 30.0
#: node-red 4 needs Node.js 18 or later.
NODE_MIN_MAJOR = 18


def node_major(node: str) -> int:
    """Major version of the ``node`` binary (0 if it does not answer)."""
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=20,
                             check=False).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0


def installed() -> bool:
    return RED_JS.is_file() and INFLUX_NODE.is_file()


def unavailable_reason(install: bool) -> str | None:
    """None when Node-RED can run; otherwise why not. ``install``: run ``npm ci`` if needed
    (``npm install`` without a lock file); an unreachable registry is a reason, not an error.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        return "Node.js is not installed (`node` not on PATH)"
    if (major := node_major(node)) < NODE_MIN_MAJOR:
        return f"Node.js {major} is too old for node-red 4 (needs {NODE_MIN_MAJOR} or later)"
    if installed():
        return None
    if not install:
        return ("Node-RED is not installed in bench/peers/nodered/node_modules "
                "(quick mode does not install it: run `npm ci` there, or a full bench)")
    if npm is None:
        return "npm is not installed (`npm` not on PATH)"
    try:
        ping = subprocess.run([npm, "ping", "--fetch-retries=1", "--fetch-timeout=15000"],
                              cwd=NODERED_DIR, capture_output=True, text=True,
                              timeout=PING_TIMEOUT_S, check=False)
        if ping.returncode != 0:
            return f"npm registry unreachable (`npm ping` exit {ping.returncode})"
    except subprocess.TimeoutExpired:
        return f"npm registry unreachable (`npm ping` gave no answer in {PING_TIMEOUT_S:.0f} s)"
    lock = (NODERED_DIR / "package-lock.json").is_file()
    cmd = [npm, "ci" if lock else "install", "--no-audit", "--no-fund", "--omit=dev"]
    try:
        proc = subprocess.run(cmd, cwd=NODERED_DIR, capture_output=True, text=True,
                              timeout=NPM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"`npm {cmd[1]}` timed out after {NPM_TIMEOUT_S:.0f} s (registry unreachable?)"
    if proc.returncode != 0 or not installed():
        errors = [ln for ln in (proc.stderr or proc.stdout).splitlines()
                  if ln.startswith("npm error") and "    at " not in ln]
        detail = " | ".join(errors[:4]) or "no output"
        return f"`npm {cmd[1]}` failed (exit {proc.returncode}; registry unreachable?): {detail}"
    return None


class NodeRed:
    """A headless Node-RED on a free loopback port running ``flow.json`` in a temp userDir."""

    def __init__(self, user_dir: Path, env: dict[str, str]) -> None:
        user_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(NODERED_DIR / "flow.json", user_dir / "flow.json")
        self.log_path = user_dir / "node-red.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            ["node", str(RED_JS), "--settings", str(NODERED_DIR / "settings.js"),
             "--userDir", str(user_dir)],
            env={**os.environ, "NODE_RED_PORT": str(free_port()), **env}, cwd=user_dir,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            self._lines.put(line)
        self._lines.put(None)

    def wait_connected(self, timeout: float) -> None:
        """Until the MQTT node logs "Connected to broker" (it subscribes right after)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise RuntimeError(f"Node-RED did not connect to the broker; log "
                                   f"{self.log_path}:\n{self.log_path.read_text()[-3000:]}")
            if "Connected to broker" in line:
                time.sleep(0.5)  # the SUBSCRIBE follows the CONNACK
                return

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def run_nodered(host: str, port: int, influx: InfluxV1Server, db: str, n: int, qos: int,
                processes: int = 2, prefix: str = "", idle_s: float = 5.0) -> PeerResult:
    """Create ``db``, start Node-RED on the flow, publish the load, count what landed."""
    influx.create_database(db)
    env = {"MQTT_HOST": host, "MQTT_PORT": str(port), "MQTT_QOS": str(qos),
           "MQTT_TOPIC": data_filter(prefix), "INFLUX_HOST": "127.0.0.1",
           "INFLUX_PORT": str(influx.port), "INFLUX_DB": db}
    with tempfile.TemporaryDirectory(prefix="peers-nodered-") as tmp:
        red = NodeRed(Path(tmp) / "userdir", env)
        try:
            red.wait_connected(READY_TIMEOUT_S)
            cpu0 = cpu_seconds(red.proc.pid)
            load = publish_load(host, port, n, qos, processes, prefix)
            landed, t_last = wait_landed(influx, db, load.readings, idle_s)
            cpu = cpu_seconds(red.proc.pid) - cpu0
        finally:
            red.stop()
    span = t_last - load.t_start
    return PeerResult(
        "nodered", published_readings=load.readings, landed_readings=landed,
        readings_per_s=landed / span if landed and span > 0 else 0.0,
        publish_msgs_per_s=load.msgs_per_s,
        cpu_us_per_reading=cpu * 1e6 / landed if landed else None)
