"""``citybrain up``: run the simulated city on this machine and account for every reading.

What it does, in order:
  1. starts a project-local Mosquitto and influxd under ``var/`` on loopback ports (unless a
     broker or InfluxDB is given), and creates the database. The local Mosquitto refuses
     anonymous clients: every device, system, the edges and the hub have their own account
     and ACL (``citybrain.auth``), derived from the fleet secret ``var/mqtt-secret`` (made
     if missing); with ``--tls`` it listens with TLS only, certificates from a local CA
     (``scripts/make_ca.sh``, under ``var/tls``);
  2. starts the hub, the edge processes and the simulator as child processes
     (``citybrain hub|edge|sim``), each writing its counters to ``var/run/*.json``;
  3. runs until ``--duration`` passes or Ctrl-C, then stops in data-flow order, draining each
     tier before stopping the next: sim (waits for its QoS 1 acks) → edges (once they have
     received every reading the sim published: seal and publish last frames) → hub (once it
     has received every framed reading: close windows, store everything);
  4. counts raw readings in InfluxDB with InfluxQL and writes the accounting report:
     ``lost = published − (stored_raw + rejected + duplicates − redelivered + shed)``.
     ``accounting_complete`` (with ``accounting_warnings``) says whether every reading had
     its chance to be stored (always true when nothing is lost): when a drain wait timed
     out, a tier did not exit 0,
     the hub exited with WAL records unprocessed or lines unwritten, an edge with records
     left in its spool, or InfluxDB's count was still changing, ``lost`` still counts every
     reading missing from InfluxDB, but some of it is "not stored in time", not "gone".

Children run in their own process group (so Ctrl-C reaches only this supervisor, which
stops them in order) and die with it (``PR_SET_PDEATHSIG``), so nothing is orphaned.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

import orjson

from citybrain import auth
from citybrain.stats import read_json, write_json_atomic
from seeds.city import City

log = logging.getLogger("citybrain.up")

RAW_MEASUREMENTS = "/^raw_/"
SIM_REPLAY_S = 86400.0
MAKE_CA = Path(__file__).resolve().parents[1] / "scripts" / "make_ca.sh"
#: InfluxDB's count is taken as final once unchanged for this long when it falls short: a
#: write a stopped hub had in flight (influxd applies a request whose body it has, even
#: after the client went away) lands within it.
SETTLE_S = 5.0
#: Credentials a child would otherwise inherit from this process's environment; replaced by
#: each tier's own when this run manages the accounts.
CREDENTIAL_ENV = ("CITYBRAIN_MQTT_USERNAME", "CITYBRAIN_MQTT_PASSWORD",
                  "CITYBRAIN_MQTT_PASSWORD_FILE", auth.SECRET_ENV, auth.SECRET_FILE_ENV)


@dataclass
class UpConfig:
    duration_s: float | None = None
    seed: int = 1
    scale: float = 1.0
    speed: float = 1.0
    report: Path | None = None
    var_dir: Path = Path("var")
    edge_procs: int = 1
    faults: str = "default"
    mqtt_host: str | None = None
    mqtt_port: int = 1883
    influx_url: str | None = None
    influx_db: str = "citybrain"
    mqtt_port_local: int | None = None
    influx_port_local: int | None = None
    #: on stop, a drain wait between tiers gives up after this long without progress...
    drain_timeout_s: float = 120.0
    #: ... or after this long in all (a second Ctrl-C gives up at once)
    drain_max_s: float = 1800.0
    http_port: int = 8080  # the hub's dashboard; a free port is used if this one is taken
    #: the local Mosquitto listens with TLS only (certificates from a CA under var/tls)
    tls: bool = False
    #: the fleet's MQTT provisioning secret; None: var/mqtt-secret for the local broker
    #: (made if missing), or CITYBRAIN_MQTT_SECRET(_FILE) / no accounts with --mqtt-host
    secret_file: Path | None = None
    #: give the local Mosquitto an account per device too (not only per system)
    device_accounts: bool = True
    #: extra command-line arguments per tier (benchmarks: throttled links, small spools)
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    #: hub processes; more than one run as a cluster (``hub.cluster``) sharing var/cluster
    hubs: int = 1
    #: partitions of the districts when ``hubs > 1``
    partitions: int = 12


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """One ``citybrain <tier>`` child process with its log and stats file."""

    def __init__(self, name: str, argv: list[str], var: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv, self.var, self.env = argv, var, env
        self.stats_path = var / "run" / f"{name}.json"
        self.stats_path.unlink(missing_ok=True)
        log_path = var / "log" / f"{name}.log"
        self._log = log_path.open("ab")
        cmd = [sys.executable, "-m", "citybrain.cli", *argv, "--stats-file", str(self.stats_path)]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        self._terminated = False
        self.log_path = log_path

    def stats(self) -> dict[str, Any]:
        return read_json(self.stats_path) or {}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything (what a crash or the OOM killer does)."""
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def respawn(self) -> Child:
        """The same tier again, same arguments and environment (after a crash or a stop)."""
        return Child(self.name, self.argv, self.var, self.env)

    def terminate(self) -> None:
        """SIGTERM, once: a second SIGTERM reaching a process that is already exiting (the
        interpreter restores the default handler as it finalizes) kills it, exit -15."""
        if self.alive() and not self._terminated:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def terminate_and_wait(self, timeout_s: float) -> int:
        self.terminate()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %.0f s; killing it", self.name, timeout_s)
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            self._log.close()


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    log.warning("timed out after %.0f s waiting for %s", timeout_s, what)
    return False


def wait_progressing(cond: Callable[[], bool], progress: Callable[[], object],
                     stall_s: float, what: str, cap_s: float,
                     abort: threading.Event | None = None, report_s: float = 30.0) -> bool:
    """Wait until ``cond()`` holds for as long as ``progress()`` keeps changing: give up
    once it has not changed for ``stall_s`` seconds, after ``cap_s`` in all, or when
    ``abort`` is set. True if ``cond()`` held.

    Why: a tier that is still working through a backlog (a hub catching up on InfluxDB
    after a fast simulation) would otherwise be stopped mid-way, and what it had not
    stored yet would read as lost; a tier that is stuck still ends the wait."""
    start = last_change = last_report = time.monotonic()
    seen = progress()
    while not cond():
        now = time.monotonic()
        if abort is not None and abort.is_set():
            log.warning("stopped waiting for %s (interrupted again)", what)
            return False
        if now - last_change >= stall_s or now - start >= cap_s:
            log.warning("timed out waiting for %s: %s", what,
                        f"no progress for {stall_s:.0f} s" if now - last_change >= stall_s
                        else f"still going after {cap_s:.0f} s")
            return False
        if now - last_report >= report_s:
            log.info("still waiting for %s (%.0f s so far; progressing)", what, now - start)
            last_report = now
        time.sleep(0.2)
        latest = progress()
        if latest != seen:
            seen, last_change = latest, time.monotonic()
    return True


def influx_count(url: str, db: str, measurements: str = RAW_MEASUREMENTS) -> int:
    """Number of field values stored in ``measurements`` (InfluxQL ``count(*)``)."""
    q = f"SELECT count(*) FROM {measurements}"
    with urlopen(f"{url.rstrip('/')}/query?{urlencode({'db': db, 'q': q})}", timeout=60) as r:
        doc = orjson.loads(r.read())
    total = 0
    for result in doc.get("results", []):
        if "error" in result:
            raise RuntimeError(f"InfluxQL error: {result['error']}")
        for series in result.get("series", []):
            for row in series.get("values", []):
                total += sum(int(v) for v in row[1:] if v is not None)
    return total


def wait_settled(read: Callable[[], int], target: int, timeout_s: float,
                 settle_s: float = SETTLE_S, poll_s: float = 0.5) -> tuple[int, bool]:
    """``read()`` until it reaches ``target`` or stays unchanged for ``settle_s``, at most
    ``timeout_s``; returns ``(last value, settled)``, ``settled`` False if it was still
    changing (or had not been watched for ``settle_s``) at the deadline.

    Why: writes a hub sent before it exited (or was killed) may still be being applied by
    InfluxDB; a count taken at once would call those readings lost. Real loss is not
    hidden: a count that stops short of ``target`` is returned as it is. (Used by ``up``'s
    accounting and by the load test's.)"""
    deadline = time.monotonic() + timeout_s
    value = read()
    since = time.monotonic()
    while value < target:
        now = time.monotonic()
        if now - since >= settle_s:
            return value, True
        if now >= deadline:
            return value, False
        time.sleep(min(poll_s, max(0.0, deadline - now)))
        latest = read()
        if latest != value:
            value, since = latest, time.monotonic()
    return value, True


#: Hub final-stats keys that say it stopped with readings not (yet) stored, and what they are.
HUB_LEFTOVERS = (
    ("unprocessed_wal_records", "WAL records unprocessed (left in its WAL)"),
    ("unwritten_lines_at_exit", "lines unwritten (their WAL records kept)"),
    ("write_refused_lines", "lines refused by its stopped writer (their WAL records kept)"),
    ("processing_unfinished_at_exit", "processing thread(s) still running"),
)


def accounting_warnings(hub: dict[str, Any], edges: list[dict[str, Any]], *,
                        timed_out: Sequence[str] = (), exits: Mapping[str, int] | None = None,
                        settled: bool = True) -> list[str]:
    """Why ``lost`` may count readings that were not stored *in time* rather than gone
    (empty: every reading had its chance; whatever is missing from InfluxDB is lost).

    ``hub``: the hubs' final stats (combined); ``edges``: each edge's final stats;
    ``timed_out``: the drain waits that timed out (what they waited for); ``exits``: exit
    code per child (sim, edges, hubs); ``settled``: InfluxDB's count had stopped changing.
    ``unwritten_lines_at_exit`` includes the ``write_refused_lines``; both are reported."""
    out = [f"timed out waiting for {what}: readings may still have been on their way when "
           "the tiers were stopped (in the broker's session queue, an edge spool or the "
           "hub's WAL: not stored in this run)" for what in timed_out]
    failed = {name: code for name, code in (exits or {}).items() if code != 0}
    if failed:
        out.append("exit codes " + ", ".join(f"{n} {c}" for n, c in failed.items())
                   + ": a tier killed or failed did not finish its graceful stop (storing or "
                   "publishing what it held) nor write its final counters")
    for key, what in HUB_LEFTOVERS:
        if int(hub.get(key) or 0):
            out.append(f"the hub exited with {int(hub[key]):,} {what}")
    left = sum(int(e.get("spool_left_records") or 0) for e in edges)
    if left:
        out.append(f"the edges exited with {left:,} records left in their spools "
                   "(not published in this run)")
    if not settled:
        out.append("InfluxDB's count of raw readings was still changing when read")
    return out


def accounting_complete(lost: int, warnings: Sequence[str]) -> bool:
    """False when some of ``lost`` may be readings not stored in time rather than gone (the
    ``warnings`` say why). With nothing lost every reading is accounted for whatever
    happened on the way (a drain wait that timed out while the hub caught up later): the
    warnings are then information only."""
    return lost == 0 or not warnings


def make_local_ca(directory: Path) -> Any:
    """A CA and a server certificate for 127.0.0.1 in ``directory`` (kept if present)."""
    from citybrain.localstack import TlsFiles
    if not MAKE_CA.exists():
        raise SystemExit(f"--tls needs {MAKE_CA} (run from a checkout of citybrain)")
    proc = subprocess.run(["bash", str(MAKE_CA), str(directory)], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        raise SystemExit(f"making the local CA failed: {proc.stderr.strip()}")
    return TlsFiles.in_dir(directory)


def _split(codes: list[str], parts: int) -> list[list[str]]:
    parts = max(1, min(parts, len(codes)))
    return [codes[i::parts] for i in range(parts)]


def build_report(sim: dict[str, Any], edges: list[dict[str, Any]], hub: dict[str, Any],
                 counted_raw: int, influx: dict[str, str]) -> dict[str, Any]:
    """The accounting report: every published reading is stored, rejected or a duplicate."""
    def total(key: str) -> int:
        return sum(int(e.get(key, 0)) for e in edges)

    rejected: dict[str, int] = {}
    for e in edges:
        for reason, n in e.get("rejected", {}).items():
            rejected[reason] = rejected.get(reason, 0) + int(n)
    for reason, n in hub.get("readings_invalid", {}).items():
        rejected[f"hub_{reason}"] = rejected.get(f"hub_{reason}", 0) + int(n)
    published = int(sim.get("readings_published", 0))
    stored_raw = int(hub.get("stored_raw", 0))
    duplicates = total("duplicates")
    n_rejected = sum(rejected.values())
    # Duplicates beyond those the simulator sent on purpose are MQTT at-least-once
    # redeliveries (a link dropped with messages in flight): extra copies of readings that
    # were published once, so they are not subtracted again. A lost message still shows.
    redelivered = max(0, duplicates - int(sim.get("duplicate_readings", 0)))
    return {
        "published": published,
        "published_messages": int(sim.get("messages_published", 0)),
        "duplicate_sends": int(sim.get("duplicate_readings", 0)),
        "edge_received": total("readings_in"),
        "edge_accepted": total("readings_accepted"),
        "edge_framed": total("readings_framed"),
        "frames": total("frames_published"),
        "frame_bytes": total("frame_bytes"),
        "rejected": n_rejected,
        "rejected_by_reason": dict(sorted(rejected.items())),
        "duplicates": duplicates,
        "redelivered": redelivered,
        "hub_received": int(hub.get("hub_received", 0)),
        "stored_raw": stored_raw,
        "stored_raw_counted_in_influxdb": counted_raw,
        "stored_aggregates": int(hub.get("stored_agg", 0)),
        "aggregated_readings": int(hub.get("aggregated_readings", 0)),
        "late_readings": int(hub.get("late_readings", 0)),
        "early_readings": int(hub.get("early_readings", 0)),
        # InfluxDB is the judge: its own count of raw points (the hub's counter restarts
        # with the hub; re-written points after a crash replay overwrite, not add).
        # shed: readings an edge's full spool dropped by its policy, each one counted
        "shed": total("spool_dropped_readings"),
        "lost": published - (counted_raw + n_rejected + duplicates - redelivered
                             + total("spool_dropped_readings")),
        "influx": influx,
        "sim": sim,
        "edges": edges,
        "hub": hub,
    }


class CityRun:
    """The running city: local services plus the hub, edge and sim children."""

    def __init__(self, cfg: UpConfig) -> None:
        self.cfg = cfg
        #: set (a second Ctrl-C) to stop waiting for the tiers to drain
        self.abort = threading.Event()
        self.var = cfg.var_dir.resolve()
        for sub in ("run", "log"):
            (self.var / sub).mkdir(parents=True, exist_ok=True)
        self.services: list[Any] = []
        self.children: list[Child] = []
        self.mqtt = (cfg.mqtt_host or "127.0.0.1", cfg.mqtt_port)
        self.influx_url = cfg.influx_url or ""
        self.secret: bytes | None = None       # the fleet secret, when this run has one
        self.secret_path: Path | None = None   # ... and the file the sim reads it from
        self.tls_ca: str | None = None         # CA the tiers trust (local broker with --tls)
        self.hub_restarted = False

    def _setup_mqtt_auth(self) -> Any:
        """Secret, password and ACL files for the local broker; returns them."""
        cfg = self.cfg
        self.secret_path = (cfg.secret_file or self.var / "mqtt-secret").resolve()
        self.secret = auth.ensure_secret_file(self.secret_path)
        city = City(cfg.scale)
        n = 2 + len(city.systems) + (city.device_total if cfg.device_accounts else 0)
        if n > 100_000:
            print(f"MQTT accounts: hashing up to {n} passwords on {os.cpu_count()} cores (once:"
                  f" reused while {self.secret_path.name} and --scale stay the same; "
                  "--no-device-accounts skips the devices) ...", flush=True)
        files = auth.write_broker_files(self.var / "auth", self.secret, city,
                                        devices=cfg.device_accounts)
        log.info("MQTT accounts: %d in %s (%s, %.1f s)", files.accounts, files.password_file,
                 "reused" if files.reused else "written", files.seconds)
        return files

    def start_services(self) -> None:
        from citybrain.localstack import InfluxV1Server, MosquittoServer, missing_binaries
        missing = missing_binaries()
        needed = [b for b in missing if (b == "mosquitto" and not self.cfg.mqtt_host)
                  or (b == "influxd" and not self.cfg.influx_url)]
        if needed:
            raise SystemExit(f"missing {', '.join(needed)}: run `make setup` (as root it "
                             "installs them) or apt-get install mosquitto influxdb")
        if not self.cfg.mqtt_host:
            files = self._setup_mqtt_auth()
            tls = make_local_ca(self.var / "tls") if self.cfg.tls else None
            self.tls_ca = str(tls.ca) if tls is not None else None
            broker = MosquittoServer(self.var / "mosquitto", port=self.cfg.mqtt_port_local,
                                     log_path=self.var / "log" / "mosquitto.log",
                                     allow_anonymous=False, password_file=files.password_file,
                                     acl_file=files.acl_file, tls=tls)
            # Mosquitto reads the whole password file before it listens (~6 s for 1M).
            broker.start(timeout=20.0 + files.accounts / 50_000)
            self.services.append(broker)
            self.mqtt = (broker.host, broker.port)
        else:
            if self.cfg.tls:
                raise SystemExit("--tls configures the local Mosquitto; with --mqtt-host set "
                                 "CITYBRAIN_MQTT_TLS_CA to the CA of that broker instead")
            self.secret = auth.load_secret(path=self.cfg.secret_file)
            if self.secret is not None:
                self.secret_path = self.cfg.secret_file or (
                    Path(os.environ[auth.SECRET_FILE_ENV]) if os.environ.get(auth.SECRET_FILE_ENV)
                    else None)
                if self.secret_path is None:  # the secret came as a value: hand it on in a file
                    self.secret_path = self.var / "auth" / "mqtt-secret"
                    auth.write_private(self.secret_path, self.secret + b"\n")
        if not self.cfg.influx_url:
            influx = InfluxV1Server(self.var / "influxdb", port=self.cfg.influx_port_local,
                                    log_path=self.var / "log" / "influxd.log")
            influx.start()
            self.services.append(influx)
            self.influx_url = influx.url

    def _tier_env(self, base: dict[str, str], account: str | None) -> dict[str, str]:
        """``base`` plus the credentials of ``account`` ("hub", "edge"; None: the sim)."""
        env = dict(base)
        if self.secret is None:
            return env
        if account is None:
            env[auth.SECRET_FILE_ENV] = str(self.secret_path)
        else:
            password_file = self.var / "auth" / f"{account}.password"
            auth.write_private(password_file, auth.derive_password(self.secret, account) + "\n")
            env.update({"CITYBRAIN_MQTT_USERNAME": account,
                        "CITYBRAIN_MQTT_PASSWORD_FILE": str(password_file)})
        return env

    def start_tiers(self) -> None:
        env = dict(os.environ)
        if self.secret is not None:  # each tier gets its own account, nothing inherited
            for name in CREDENTIAL_ENV:
                env.pop(name, None)
        if not self.cfg.mqtt_host:
            env.pop("CITYBRAIN_MQTT_TLS_CA", None)
            if self.tls_ca:
                env["CITYBRAIN_MQTT_TLS_CA"] = self.tls_ca
        env.update({"CITYBRAIN_MQTT_HOST": self.mqtt[0], "CITYBRAIN_MQTT_PORT": str(self.mqtt[1]),
                    "CITYBRAIN_SCALE": str(self.cfg.scale), "PYTHONUNBUFFERED": "1"})
        from citybrain.localstack import free_port, port_is_free
        self.http_port = (self.cfg.http_port if port_is_free(self.cfg.http_port)
                          else free_port())
        self._fresh_durable_dirs()
        self._start_hubs(env)
        codes = sorted(d.code for d in City(self.cfg.scale).districts)
        parts = _split(codes, self.cfg.edge_procs)
        self.edge_metrics = [free_port() for _ in parts]
        edge_env = self._tier_env(env, auth.EDGE_USER)
        self.edges = [Child(f"edge-{i}", ["edge", "--districts", ",".join(part),
                                          "--client-id", f"citybrain-edge-{i}",
                                          "--metrics-port", str(self.edge_metrics[i]),
                                          "--spool-dir", str(self.var / "spool" / f"edge-{i}"),
                                          *self.cfg.extra_args.get(
                                              f"edge-{i}", self.cfg.extra_args.get("edge", []))],
                            self.var, edge_env)
                      for i, part in enumerate(parts)]
        self.children += self.edges
        wait_until(lambda: all(e.stats_path.exists() or not e.alive() for e in self.edges), 60,
                   "the edges to start")
        for child in self.children:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited at start; see {child.log_path}")
        sim_args = ["sim", "--seed", str(self.cfg.seed), "--speed", str(self.cfg.speed),
                    "--faults", self.cfg.faults, *self.cfg.extra_args.get("sim", [])]
        if self.cfg.duration_s is not None:
            sim_args += ["--duration", str(self.cfg.duration_s)]
        elif self.cfg.speed > 1:
            # Faster than real time with no end: replay from a day ago, so device clocks stay
            # behind the edges' for a day / (speed − 1) of wall time instead of running ahead
            # (and being rejected as ts_future) within seconds.
            sim_args += ["--start-ago-s", str(SIM_REPLAY_S)]
        self.sim = Child("sim", sim_args, self.var, self._tier_env(env, None))
        self.children.append(self.sim)

    def _start_hubs(self, env: dict[str, str]) -> None:
        """One hub, or ``cfg.hubs`` hubs sharing the partitions through ``var/cluster``;
        ready once every partition is served (a partition's session must exist at the
        broker before frames for it are published, or the broker drops them)."""
        hub_env = self._tier_env(env, auth.HUB_USER)
        base = ["hub", "--influx-url", self.influx_url, "--influx-api", "v1",
                "--influx-db", self.cfg.influx_db, "--close-windows-at-exit"]
        if self.cfg.hubs <= 1:
            args = [*base, "--http-port", str(self.http_port),
                    "--wal-dir", str(self.var / "wal" / "hub"),
                    *self.cfg.extra_args.get("hub", [])]
            self.hubs = [Child("hub", args, self.var, hub_env)]
        else:
            from citybrain.localstack import free_port
            self.hubs = [Child(f"hub-{i}", [
                *base, "--http-port", str(self.http_port if i == 0 else free_port()),
                "--partitions", str(self.cfg.partitions),
                "--cluster-dir", str(self.var / "cluster"), "--node-id", f"hub-{i}",
                *self.cfg.extra_args.get(f"hub-{i}", self.cfg.extra_args.get("hub", []))],
                self.var, hub_env) for i in range(self.cfg.hubs)]
        self.hub = self.hubs[0]
        self.children += self.hubs
        wait_until(lambda: all(h.stats_path.exists() or not h.alive() for h in self.hubs), 90,
                   "the hubs to start")
        if self.cfg.hubs > 1:
            wait_until(lambda: len(self.partitions_served()) == self.cfg.partitions
                       or not all(h.alive() for h in self.hubs), 90,
                       "every partition to be served")

    def partitions_served(self) -> set[int]:
        """Partitions some live hub of the cluster serves now (from their stats files)."""
        return {int(p) for h in self.hubs if h.alive()
                for p in h.stats().get("partitions_owned", [])}

    def hub_stats(self) -> dict[str, Any]:
        """The hubs' counters combined (one hub: its own). A killed hub's last stats count
        too: what it stored stays stored."""
        if len(self.hubs) == 1:
            return self.hub.stats()
        from hub.cluster import combine_snapshots
        return combine_snapshots([h.stats() for h in self.hubs])

    def _fresh_durable_dirs(self) -> None:
        """Each run accounts for itself: the hub WAL and edge spools start empty. What an
        interrupted earlier run left in them is reported, then removed."""
        import shutil
        for d in (self.var / "wal", self.var / "spool", self.var / "cluster"):
            if not d.exists():
                continue
            left = sum(p.stat().st_size for p in d.rglob("*.seg"))
            if left:
                print(f"note: {d} holds {left} bytes from an earlier run; starting afresh",
                      flush=True)
            shutil.rmtree(d)

    def restart(self, child: Child, *, kill: bool, down_s: float = 0.0) -> Child:
        """Crash (SIGKILL) or stop (SIGTERM) a hub or edge child, wait ``down_s``, start it
        again; it resumes from its WAL or spool. Returns the new child."""
        if kill:
            child.kill()
        else:
            child.terminate_and_wait(self.cfg.drain_timeout_s)
        time.sleep(down_s)
        new = child.respawn()
        self.children[self.children.index(child)] = new
        if child in self.hubs:
            self.hubs[self.hubs.index(child)] = new
            self.hub = self.hubs[0]
            self.hub_restarted = True
        else:
            self.edges[self.edges.index(child)] = new
        wait_until(lambda: new.stats_path.exists() or not new.alive(), 60,
                   f"{new.name} to start again")
        return new

    def _hub_progress(self) -> tuple[int, ...]:
        """Counters that move while a hub works through its backlog."""
        return tuple(int(h.stats().get(k) or 0) for h in self.hubs if h.alive()
                     for k in ("hub_received", "aggregated_readings", "stored_raw",
                               "stored_agg", "wal_backlog_records", "write_queued_lines"))

    def _wait_hub_quiet(self, timeout_s: float) -> bool:
        """True once the hub has nothing in flight for 3 s running: no WAL backlog, nothing
        queued to log or to write (after a restart its counters restart, so counts can't
        tell); gives up after ``timeout_s`` without progress (``wait_progressing``)."""
        quiet_since: float | None = None

        def quiet() -> bool:
            nonlocal quiet_since
            idle = all(int(h.stats().get(k) or 0) == 0 for h in self.hubs if h.alive()
                       for k in ("wal_backlog_records", "frame_queue_depth",
                                 "write_queue_depth", "write_queued_lines"))
            if not idle:
                quiet_since = None
                return False
            quiet_since = quiet_since or time.monotonic()
            return time.monotonic() - quiet_since >= 3.0

        return wait_progressing(quiet, self._hub_progress, timeout_s,
                                "the hub to finish its backlog", self.cfg.drain_max_s,
                                self.abort)

    def drain_and_stop(self) -> dict[str, Any]:
        """Stop tiers in data-flow order, each after the previous one's output arrived.

        Each drain wait goes on while the tier it waits for makes progress, up to
        ``drain_timeout_s`` without any and ``drain_max_s`` in all (``wait_progressing``);
        one that gives up, a tier that does not exit 0, or what the final stats say was left
        behind makes the report's ``accounting_complete`` false, with the reasons in
        ``accounting_warnings``."""
        t = self.cfg.drain_timeout_s
        timed_out: list[str] = []  # the drain waits that gave up

        def drain(cond: Callable[[], bool], progress: Callable[[], object], what: str
                  ) -> None:
            if not wait_progressing(cond, progress, t, what, self.cfg.drain_max_s,
                                    self.abort):
                timed_out.append(what)

        def edges_in() -> int:
            return sum(int(e.stats().get("readings_in", 0)) for e in self.edges)

        exits = {self.sim.name: self.sim.terminate_and_wait(t)}
        sim = self.sim.stats()
        published = int(sim.get("readings_published", 0))
        drain(lambda: edges_in() >= published, edges_in,
              "the edges to receive every published reading")
        for e in self.edges:
            exits[e.name] = e.terminate_and_wait(t)
        edges = [e.stats() for e in self.edges]
        # readings a full spool shed (counted by the edge) can never arrive
        framed = sum(int(e.get("readings_framed", 0)) - int(e.get("spool_dropped_readings", 0))
                     for e in edges)
        if not self.hub_restarted:  # a restarted hub's counters say nothing of the past
            drain(lambda: int(self.hub_stats().get("hub_received", 0)) >= framed,
                  self._hub_progress, "the hub to receive every framed reading")
        if not self._wait_hub_quiet(t):
            timed_out.append("the hub to finish its backlog")
        # All at once: a cluster hub that sees another leave would adopt its partitions.
        for h in self.hubs:
            h.terminate()
        for h in self.hubs:
            exits[h.name] = h.terminate_and_wait(t)
        hub = self.hub_stats()
        influx = {"url": self.influx_url, "api": "v1", "database": self.cfg.influx_db}

        def count() -> int:
            return influx_count(self.influx_url, self.cfg.influx_db)

        report = build_report(sim, edges, hub, count(), influx)
        settled = True
        if report["lost"] > 0:  # writes a hub sent before it exited may still be landing
            counted, settled = wait_settled(
                count, report["stored_raw_counted_in_influxdb"] + report["lost"], t)
            report = build_report(sim, edges, hub, counted, influx)
        warnings = accounting_warnings(hub, edges, timed_out=timed_out, exits=exits,
                                       settled=settled)
        if report["lost"] > 0 and warnings:
            log.warning("%d readings counted lost, but the accounting is incomplete (%s): some "
                        "may only not have been stored in time", report["lost"],
                        "; ".join(warnings))
        report["accounting_complete"] = accounting_complete(report["lost"], warnings)
        report["accounting_warnings"] = warnings
        report["exit_codes"] = exits
        report["drain_timed_out"] = timed_out
        report["mqtt"] = {"host": self.mqtt[0], "port": self.mqtt[1],
                          "tls": self.tls_ca is not None or bool(
                              self.cfg.mqtt_host and os.environ.get("CITYBRAIN_MQTT_TLS_CA")),
                          "accounts": self.secret is not None}
        return report

    def stop_everything(self) -> None:
        for child in reversed(self.children):
            if child.alive():
                child.terminate_and_wait(30)
        for service in reversed(self.services):
            service.stop()

    def print_where_to_look(self) -> None:
        print(f"""
citybrain is running — a simulated Chongqing, {City(self.cfg.scale).device_total} devices
  dashboard       http://127.0.0.1:{self.http_port}/   (live city view, 城市大脑)
  hub metrics     http://127.0.0.1:{self.http_port}/metrics   state: /api/state
  edge metrics    {', '.join(f'http://127.0.0.1:{p}/metrics' for p in self.edge_metrics)}
  terminal view   citybrain top --url http://127.0.0.1:{self.http_port}
  MQTT broker     {'mqtts' if self.tls_ca else 'mqtt'}://{self.mqtt[0]}:{self.mqtt[1]}  \
(topics cb/v1/#){self._auth_note()}
  InfluxDB        {self.influx_url}  database '{self.cfg.influx_db}'
                  try: influx -port {self.influx_url.rsplit(':', 1)[-1]} -database \
{self.cfg.influx_db} -execute 'SHOW MEASUREMENTS'
  live counters   {self.var / 'run'}/*.json
  logs            {self.var / 'log'}/
Press Ctrl-C to stop: the city drains, stops cleanly and prints its accounting.
""", flush=True)


    def _auth_note(self) -> str:
        if self.secret is None:
            return ""
        lines = f"""
  MQTT accounts   one per device and system, plus 'edge' and 'hub' (ACL: {self.var / 'auth'}\
/acl)
                  a password: citybrain auth password USER --mqtt-secret-file {self.secret_path}"""
        if self.tls_ca:
            lines += f"\n  MQTT TLS CA     {self.tls_ca}"
        return lines


def run_city(cfg: UpConfig) -> int:
    """Run the city; returns 0 when every reading is accounted for (lost == 0), else 1 --
    also when the accounting is incomplete (``accounting_warnings`` say why)."""
    stop = threading.Event()
    city = CityRun(cfg)

    def on_signal(*_: object) -> None:  # the first stops the city, a second its draining
        (city.abort if stop.is_set() else stop).set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        city.start_services()
        city.start_tiers()
        city.print_where_to_look()
        deadline = None if cfg.duration_s is None else time.monotonic() + cfg.duration_s
        while not stop.wait(0.5):
            if deadline is not None and time.monotonic() >= deadline:
                break
            dead = [c for c in city.children if not c.alive() and c is not city.sim]
            if dead:
                log.error("%s exited unexpectedly; see %s", dead[0].name, dead[0].log_path)
                break
        print("stopping: draining the sim, then the edges, then the hub, as long as each "
              "makes progress (Ctrl-C again to stop waiting) ...", flush=True)
        report = city.drain_and_stop()
    finally:
        city.stop_everything()
    summary = {k: report[k] for k in ("published", "edge_accepted", "rejected", "duplicates",
                                      "hub_received", "stored_raw",
                                      "stored_raw_counted_in_influxdb", "stored_aggregates",
                                      "lost", "accounting_complete")}
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode(), flush=True)
    if report["accounting_warnings"]:
        print("accounting incomplete: some of 'lost' may be readings not stored in time "
              "rather than gone:" if not report["accounting_complete"] else
              "nothing lost, though the run did not go smoothly:", flush=True)
        for warning in report["accounting_warnings"]:
            print(f"  - {warning}", flush=True)
    if cfg.report:
        cfg.report.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cfg.report, report)
        print(f"report written to {cfg.report}")
    ok = report["lost"] == 0
    return 0 if ok else 1
