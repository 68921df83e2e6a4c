"""Project-local servers on loopback: Mosquitto, influxd 1.x and VictoriaMetrics.

Each server runs as a child process of the calling Python process, listens on
127.0.0.1 only, keeps all its state (config, data, log) under one ``data_dir``
and is reached on a port chosen by the caller or picked free at construction.
The same classes back ``make up``, ``citybrain up`` and the pytest fixtures.

Contracts shared by every server class:

* ``start(timeout)`` writes the config into ``data_dir``, launches the binary
  and returns only once the server answers its protocol (MQTT CONNACK, HTTP
  health endpoint).  If the process exits or the deadline passes it raises
  ``RuntimeError`` whose message contains the tail of the server log.
* ``stop(timeout)`` sends SIGTERM, escalates to SIGKILL after ``timeout``
  seconds, and always reaps the child.  ``kill()`` is an immediate SIGKILL
  (for fault-injection tests).  Both are no-ops on a server that is not running.
* ``restart()`` reuses the same port(s) and the same ``data_dir``.
* Ports are fixed for the life of the object, so clients may cache them.
* Servers still running when the interpreter exits normally are stopped by an
  ``atexit`` hook; children run in their own session so a terminal Ctrl-C
  reaches only the owner, which decides the shutdown order.

All durations are in seconds.  Nothing here talks to any host but 127.0.0.1.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = [
    "HOST",
    "INSTALL_COMMAND",
    "INSTALL_HINT",
    "InfluxQueryError",
    "InfluxV1Server",
    "LocalServer",
    "MosquittoServer",
    "TlsFiles",
    "VictoriaMetricsServer",
    "find_binary",
    "free_port",
    "missing_binaries",
]

HOST = "127.0.0.1"
"""The only address any local server binds to or is probed on."""

INSTALL_COMMAND = "apt-get install -y --no-install-recommends mosquitto influxdb victoria-metrics"
"""Debian/Ubuntu command that provides every binary this module launches."""

INSTALL_HINT = (
    f"install the server binaries with `sudo {INSTALL_COMMAND}` "
    "(or run `make setup` / `bash scripts/bootstrap.sh` as root)"
)
"""Human-readable advice shown when a binary is missing."""

_FALLBACK_PATHS: dict[str, tuple[str, ...]] = {
    "mosquitto": ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"),
    "influxd": ("/usr/bin/influxd", "/usr/local/bin/influxd"),
    "victoria-metrics": ("/usr/bin/victoria-metrics", "/usr/local/bin/victoria-metrics"),
}

_POLL_INTERVAL = 0.05
_PROBE_TIMEOUT = 1.0
_HTTP_TIMEOUT = 30.0
_KILL_REAP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 40

TomlValue = str | int | float | bool
TomlSections = Mapping[str, Mapping[str, TomlValue]]


# ---------------------------------------------------------------------------
# binaries and ports


def find_binary(name: str) -> str | None:
    """Return an executable path for ``name`` (PATH first, then sbin/bin fallbacks)."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in _FALLBACK_PATHS.get(name, ()):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_binaries() -> list[str]:
    """Names of the server binaries (mosquitto, influxd, victoria-metrics) not installed."""
    return [name for name in _FALLBACK_PATHS if find_binary(name) is None]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free when checked (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:``port`` right now."""
    return _port_is_bindable(port)


def _port_is_bindable(port: int) -> bool:
    """True if nothing is bound to 127.0.0.1:port (TIME_WAIT leftovers are ignored)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _read_tail(path: Path, lines: int = _LOG_TAIL_LINES, start: int = 0) -> str:
    """Last ``lines`` lines of ``path`` from byte offset ``start`` ('' if unreadable)."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------
# HTTP helper (stdlib only)


def _http(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = _HTTP_TIMEOUT,
) -> tuple[int, bytes]:
    """Send one request; return (status, body) for any HTTP status, raise OSError on I/O errors."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code), err.read()


# ---------------------------------------------------------------------------
# process management shared by every server


_LIVE: set[LocalServer] = set()


def _stop_all_at_exit() -> None:
    """atexit hook: stop every server this process started and did not stop."""
    for server in list(_LIVE):
        try:
            server.stop(timeout=5.0)
        except Exception:  # best effort at interpreter exit
            server.kill()


atexit.register(_stop_all_at_exit)


class _AddressInUseError(RuntimeError):
    """The server died because its port was taken between choosing and binding."""


class LocalServer(ABC):
    """One server binary run as a child process bound to 127.0.0.1.

    Subclasses define the binary, the config they write, the command line and
    the readiness probe.  Construct with ``data_dir`` (created if missing),
    ``port`` (None = pick a free one now) and ``log_path`` (default
    ``data_dir/<name>.log``; appended to across restarts).
    """

    name: ClassVar[str]
    """Binary name, also used for the default log file name."""

    def __init__(
        self, data_dir: Path, port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self._auto_port = port is None
        self._port = free_port() if port is None else port
        self.log_path = (
            Path(log_path).absolute() if log_path else self.data_dir / f"{self.name}.log"
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._has_started = False

    # -- public properties -------------------------------------------------

    @property
    def host(self) -> str:
        """Always "127.0.0.1"."""
        return HOST

    @property
    def port(self) -> int:
        """The main client port (MQTT or HTTP); stable across restarts."""
        return self._port

    @property
    def running(self) -> bool:
        """True while the child process exists and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the running child, or None."""
        return self._proc.pid if self.running and self._proc else None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Last ``lines`` lines of the server log (all runs), for error messages."""
        return _read_tail(self.log_path, lines)

    # -- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> Self:
        """Write config, launch, and wait up to ``timeout`` s until the server answers.

        A no-op if already running.  If the port was auto-picked and another
        process grabbed it before the first successful start, new ports are
        picked (up to 3 attempts).  Raises RuntimeError (with log tail) if the
        binary is missing, exits early, or is not ready by the deadline.
        """
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(_PORT_ATTEMPTS):
            may_repick = self._auto_port and not self._has_started
            if may_repick and not all(_port_is_bindable(p) for p in self._ports()):
                self._repick_ports()
            try:
                self._launch_and_wait(timeout)
            except _AddressInUseError:
                if not may_repick or attempt == _PORT_ATTEMPTS - 1:
                    raise
                self._repick_ports()
                continue
            self._has_started = True
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; always reaps. No-op if stopped."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_KILL_REAP_TIMEOUT)
        self._forget()

    def kill(self) -> None:
        """SIGKILL now and reap (no graceful shutdown, unsaved state is lost)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=_KILL_REAP_TIMEOUT)
        self._forget()

    def restart(self, timeout: float = 20.0) -> Self:
        """Graceful stop then start on the same port(s) and data_dir."""
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {HOST}:{self.port} {state} data_dir={self.data_dir}>"

    # -- subclass hooks ------------------------------------------------------

    @abstractmethod
    def write_config(self) -> None:
        """Write whatever config file the binary needs into data_dir."""

    @abstractmethod
    def command(self, binary: str) -> list[str]:
        """argv that runs the server in the foreground."""

    @abstractmethod
    def probe(self) -> bool:
        """True once the server answers its protocol; must return within ~1 s."""

    def _ports(self) -> list[int]:
        """Every port this server binds (the main one first)."""
        return [self._port]

    def _repick_ports(self) -> None:
        """Pick fresh free ports; only called while no start has succeeded."""
        self._port = free_port()

    def _child_env(self) -> dict[str, str]:
        """Environment for the child process."""
        return dict(os.environ)

    # -- internals -------------------------------------------------------------

    def _binary(self) -> str:
        binary = find_binary(self.name)
        if binary is None:
            raise RuntimeError(f"{self.name} binary not found: {INSTALL_HINT}")
        return binary

    def _launch_and_wait(self, timeout: float) -> None:
        binary = self._binary()
        self.write_config()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(binary),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self._child_env(),
                start_new_session=True,
            )
        _LIVE.add(self)
        try:
            self._wait_ready(timeout, log_offset)
        except BaseException:
            self.kill()  # no half-started orphan, e.g. on Ctrl-C during start
            raise

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                self._forget()
                tail = _read_tail(self.log_path, start=log_offset)
                message = self._failure(f"exited with code {code} during start", tail)
                if "address already in use" in tail.lower():
                    raise _AddressInUseError(message)
                raise RuntimeError(message)
            if self.probe():
                return
            time.sleep(_POLL_INTERVAL)
        self.kill()
        tail = _read_tail(self.log_path, start=log_offset)
        raise RuntimeError(self._failure(f"not ready after {timeout:.1f} s", tail))

    def _failure(self, what: str, tail: str) -> str:
        return (
            f"{self.name} on {HOST}:{self.port} {what} "
            f"(data_dir={self.data_dir}, log={self.log_path}); log tail:\n{tail}"
        )

    def _forget(self) -> None:
        self._proc = None
        _LIVE.discard(self)


class _HttpServer(LocalServer):
    """A LocalServer with an HTTP API on ``port``."""

    @property
    def url(self) -> str:
        """Base URL, "http://127.0.0.1:PORT" (no trailing slash)."""
        return f"http://{HOST}:{self.port}"

    def _get_status(self, path: str) -> int | None:
        """HTTP status of GET path, or None if nothing answers within the probe timeout."""
        try:
            status, _ = _http("GET", self.url + path, timeout=_PROBE_TIMEOUT)
        except (OSError, http.client.HTTPException):
            return None
        return status


# ---------------------------------------------------------------------------
# Mosquitto


def _mqtt_connect_packet(client_id: str) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, 5 s keep-alive, no credentials."""
    cid = client_id.encode()
    rest = b"\x00\x04MQTT\x04\x02\x00\x05" + len(cid).to_bytes(2, "big") + cid
    return bytes([0x10, len(rest)]) + rest


def _mqtt_answers(host: str, port: int, client_id: str, timeout: float,
                  tls: ssl.SSLContext | None = None) -> bool:
    """True if host:port replies to CONNECT with a CONNACK (accepted or refused).

    With ``tls`` the connection is wrapped first (certificate and host name checked);
    a TLS failure is raised as ``ssl.SSLError`` rather than answered with False.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
            with sock:
                sock.sendall(_mqtt_connect_packet(client_id))
                head = sock.recv(4)
                if head[:1] == b"\x20":
                    sock.sendall(b"\xe0\x00")  # DISCONNECT
                    return True
                return False
    except ssl.SSLError:
        raise
    except OSError:
        return False


@dataclass(frozen=True)
class TlsFiles:
    """A TLS listener's files: the CA that signed the server certificate, the certificate
    (with 127.0.0.1 among its subject alternative names) and its private key (PEM)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        """``ca.crt``, ``server.crt`` and ``server.key`` in ``directory`` (as
        ``scripts/make_ca.sh`` writes them)."""
        d = Path(directory).absolute()
        return cls(d / "ca.crt", d / "server.crt", d / "server.key")

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only ``ca``."""
        return ssl.create_default_context(cafile=str(self.ca))


class MosquittoServer(LocalServer):
    """Mosquitto 2.x broker on 127.0.0.1:port with on-disk persistence in data_dir.

    ``password_file`` and ``acl_file`` turn on Mosquitto's own authentication and
    authorisation (see ``citybrain.auth``; pass ``allow_anonymous=False`` too);
    ``tls`` makes the listener on ``port`` TLS-only with those files (the readiness
    probe then speaks TLS and checks the certificate against ``tls.ca``).
    ``config_body`` replaces the generated body entirely (it is formatted with
    ``port``, ``data_dir`` and ``log_path``); ``extra_config`` is appended after
    it, e.g. an extra ``listener``.
    Persistence is saved on graceful stop (and every ``autosave_interval``
    s, Mosquitto's default 1800 s), so retained messages and queued QoS>0
    messages survive ``restart()`` but not ``kill()``.
    Paths must not contain whitespace (Mosquitto's config parser splits on it).
    """

    name: ClassVar[str] = "mosquitto"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        allow_anonymous: bool = True,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        tls: TlsFiles | None = None,
        extra_config: str = "",
        config_body: str | None = None,
    ) -> None:
        super().__init__(data_dir, port, log_path)
        self.allow_anonymous = allow_anonymous
        self.password_file = Path(password_file).absolute() if password_file else None
        self.acl_file = Path(acl_file).absolute() if acl_file else None
        self.tls = tls
        self.extra_config = extra_config
        self.config_body = config_body
        self._probe_count = 0
        self._probe_error: str | None = None
        paths = [self.data_dir, self.log_path, self.password_file, self.acl_file]
        if tls is not None:
            paths += [tls.ca, tls.cert, tls.key]
        for path in paths:
            if path is not None and any(ch.isspace() for ch in str(path)):
                raise ValueError(f"mosquitto cannot use paths with whitespace: {path!s}")

    @property
    def config_path(self) -> Path:
        """Where start() writes mosquitto.conf."""
        return self.data_dir / "mosquitto.conf"

    def default_config(self) -> str:
        """The generated config body (before ``extra_config``)."""
        lines = [
            "# generated by citybrain.localstack on every start; edits are overwritten",
            f"listener {self.port} {HOST}",
        ]
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.cert}",
                      f"keyfile {self.tls.key}"]
        lines.append(f"allow_anonymous {'true' if self.allow_anonymous else 'false'}")
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        lines += [
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "persistence_file mosquitto.db",
            "max_queued_messages 100000",
            "max_inflight_messages 10000",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # Mosquitto drops root to user "mosquitto", which cannot write into
            # a root-owned 0700 data_dir (e.g. pytest's tmp dirs): stay ourselves.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def config_text(self) -> str:
        """Full mosquitto.conf contents: body (generated or ``config_body``) + extra."""
        body = self.config_body
        if body is None:
            body = self.default_config()
        else:
            body = body.format(port=self.port, data_dir=self.data_dir, log_path=self.log_path)
        return body.rstrip("\n") + "\n" + self.extra_config.rstrip("\n") + "\n"

    def write_config(self) -> None:
        """Write mosquitto.conf into data_dir."""
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    def command(self, binary: str) -> list[str]:
        """``mosquitto -c data_dir/mosquitto.conf``."""
        return [binary, "-c", str(self.config_path)]

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``, or ``mqtts://`` with TLS."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{HOST}:{self.port}"

    def probe(self) -> bool:
        """True once the listener answers an MQTT CONNECT with a CONNACK (refused counts:
        the probe has no credentials)."""
        self._probe_count += 1
        client_id = f"citybrain-probe-{os.getpid()}-{self._probe_count}"
        context = self.tls.client_context() if self.tls is not None else None
        try:
            return _mqtt_answers(HOST, self.port, client_id, _PROBE_TIMEOUT, context)
        except ssl.SSLError as exc:
            self._probe_error = f"TLS handshake failed: {exc}"
            return False

    def _failure(self, what: str, tail: str) -> str:
        message = super()._failure(what, tail)
        if self._probe_error:
            message += f"\nlast probe: {self._probe_error}"
        return message


# ---------------------------------------------------------------------------
# influxd 1.x


class InfluxQueryError(RuntimeError):
    """influxd answered /query or /write with an error."""


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _render_toml(sections: TomlSections) -> str:
    """Render {section: {key: value}}; section "" holds top-level keys."""
    out = [f"{k} = {_toml_value(v)}" for k, v in sections.get("", {}).items()]
    for section, keys in sections.items():
        if section:
            out.append(f"\n[{section}]")
            out.extend(f"  {k} = {_toml_value(v)}" for k, v in keys.items())
    return "\n".join(out) + "\n"


def _quote_ident(name: str) -> str:
    """InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxV1Server(_HttpServer):
    """influxd 1.x (tested with Debian's 1.6.7) on 127.0.0.1, everything under data_dir.

    Binds two loopback ports: ``port`` (HTTP API) and ``rpc_port`` (the
    backup/restore RPC service, which otherwise defaults to 8088 and makes a
    second instance fail).  ``settings`` is merged over the generated config,
    e.g. ``{"http": {"auth-enabled": True}}``; section "" holds top-level keys.
    """

    name: ClassVar[str] = "influxd"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        rpc_port: int | None = None,
        settings: TomlSections | None = None,
    ) -> None:
        super().__init__(data_dir, port, log_path)
        self._auto_port = self._auto_port and rpc_port is None
        self.rpc_port = free_port() if rpc_port is None else rpc_port
        self.settings = settings or {}

    @property
    def config_path(self) -> Path:
        """Where start() writes influxdb.conf."""
        return self.data_dir / "influxdb.conf"

    def config_sections(self) -> dict[str, dict[str, TomlValue]]:
        """Generated config as {section: {key: value}} with ``settings`` merged in."""
        sections: dict[str, dict[str, TomlValue]] = {
            # Debian's build renamed upstream's "reporting-disabled" to
            # "reporting-enabled"; unknown keys are ignored, so set both.
            "": {
                "reporting-disabled": True,
                "reporting-enabled": False,
                "bind-address": f"{HOST}:{self.rpc_port}",
            },
            "meta": {"dir": str(self.data_dir / "meta"), "logging-enabled": False},
            "data": {
                "dir": str(self.data_dir / "data"),
                "wal-dir": str(self.data_dir / "wal"),
                "query-log-enabled": False,
            },
            "monitor": {"store-enabled": False},
            "http": {
                "enabled": True,
                "bind-address": f"{HOST}:{self.port}",
                "log-enabled": False,
                "unix-socket-enabled": False,
                "max-body-size": 0,  # 0 = unlimited (bytes)
            },
            "continuous_queries": {"log-enabled": False},
            "logging": {"suppress-logo": True},
        }
        for section, keys in self.settings.items():
            sections.setdefault(section, {}).update(keys)
        return sections

    def write_config(self) -> None:
        """Write influxdb.conf into data_dir."""
        self.config_path.write_text(_render_toml(self.config_sections()), encoding="utf-8")

    def command(self, binary: str) -> list[str]:
        """``influxd run -config data_dir/influxdb.conf``."""
        return [binary, "run", "-config", str(self.config_path)]

    def probe(self) -> bool:
        """True once GET /ping answers 204."""
        return self._get_status("/ping") == 204

    def _ports(self) -> list[int]:
        return [self._port, self.rpc_port]

    def _repick_ports(self) -> None:
        self._port = free_port()
        self.rpc_port = free_port()

    def _child_env(self) -> dict[str, str]:
        """Drop INFLUXDB_* variables: influxd lets them override the config file."""
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    # -- client helpers --------------------------------------------------------

    def query(self, q: str, db: str | None = None, *, epoch: str | None = None) -> dict[str, Any]:
        """Run InfluxQL ``q`` via POST /query and return the parsed JSON body.

        ``epoch`` ("ns", "u", "ms", "s", ...) returns integer timestamps in that
        unit instead of RFC3339 strings.  Raises InfluxQueryError if the HTTP
        status is not 200 or any statement reports an error.
        """
        params = {"q": q}
        if db is not None:
            params["db"] = db
        if epoch is not None:
            params["epoch"] = epoch
        status, body = _http(
            "POST",
            self.url + "/query",
            body=urllib.parse.urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        result: dict[str, Any] = json.loads(body) if body else {}
        errors = [r["error"] for r in result.get("results", []) if "error" in r]
        if status != 200 or "error" in result or errors:
            raise InfluxQueryError(f"query {q!r} -> HTTP {status}: {result.get('error', errors)}")
        return result

    def create_database(self, name: str) -> None:
        """CREATE DATABASE (idempotent in InfluxDB 1.x)."""
        self.query(f"CREATE DATABASE {_quote_ident(name)}")

    def write(self, db: str, lines: str | bytes, precision: str = "ns") -> None:
        """POST line protocol to /write; ``precision`` is the timestamp unit.

        Raises InfluxQueryError unless influxd answers 204.
        """
        data = lines.encode() if isinstance(lines, str) else lines
        qs = urllib.parse.urlencode({"db": db, "precision": precision})
        status, body = _http("POST", f"{self.url}/write?{qs}", body=data)
        if status != 204:
            raise InfluxQueryError(f"write to {db!r} -> HTTP {status}: {body[:500]!r}")


# ---------------------------------------------------------------------------
# VictoriaMetrics


class VictoriaMetricsServer(_HttpServer):
    """Single-node victoria-metrics on 127.0.0.1:port storing into data_dir.

    Accepts InfluxDB line protocol on ``/write`` and ``/api/v2/write``; a
    field ``f`` of measurement ``m`` becomes metric ``m_f`` and ``/write?db=X``
    adds the label ``db="X"``.  Defaults suited to tests: ``-search.latencyOffset=0s``
    (fresh samples visible to queries at once) and a 2 s graceful HTTP shutdown.
    ``extra_args`` are appended to the command line (later flags win).
    """

    name: ClassVar[str] = "victoria-metrics"
    default_args: ClassVar[tuple[str, ...]] = (
        "-search.latencyOffset=0s",
        "-http.maxGracefulShutdownDuration=2s",
    )

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        retention: str = "100y",
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(data_dir, port, log_path)
        self.retention = retention
        self.extra_args = tuple(extra_args)

    def write_config(self) -> None:
        """victoria-metrics is configured by flags only: record them for humans."""
        text = " \\\n  ".join(self.command(self.name)) + "\n"
        (self.data_dir / "victoria-metrics.cmdline").write_text(text, encoding="utf-8")

    def command(self, binary: str) -> list[str]:
        """victoria-metrics with loopback listen address, storage in data_dir."""
        return [
            binary,
            f"-httpListenAddr={HOST}:{self.port}",
            f"-storageDataPath={self.data_dir}",
            f"-retentionPeriod={self.retention}",
            *self.default_args,
            *self.extra_args,
        ]

    def probe(self) -> bool:
        """True once GET /health answers 200."""
        return self._get_status("/health") == 200

    # -- client helpers --------------------------------------------------------

    def write(self, lines: str | bytes, db: str | None = None) -> None:
        """POST InfluxDB line protocol (ns timestamps) to /write; raises unless 204."""
        data = lines.encode() if isinstance(lines, str) else lines
        qs = "?" + urllib.parse.urlencode({"db": db}) if db is not None else ""
        status, body = _http("POST", f"{self.url}/write{qs}", body=data)
        if status != 204:
            raise RuntimeError(f"victoria-metrics write -> HTTP {status}: {body[:500]!r}")

    def flush(self) -> bool:
        """Make recently ingested samples searchable (GET /internal/force_flush).

        Returns False if this build has no such endpoint (404); raises
        RuntimeError on any other non-200 status.
        """
        status, body = _http("GET", self.url + "/internal/force_flush")
        if status == 404:
            return False
        if status != 200:
            raise RuntimeError(f"victoria-metrics force_flush -> HTTP {status}: {body[:500]!r}")
        return True

    def export(
        self, match: str, *, start: str | float | None = None, end: str | float | None = None
    ) -> list[dict[str, Any]]:
        """Series matching selector ``match`` via /api/v1/export (JSON lines).

        Each item is ``{"metric": {labels}, "values": [...], "timestamps": [ms...]}``.
        ``start``/``end`` are unix seconds or RFC3339.  Call ``flush()`` first to
        see samples written in the last few seconds.
        """
        params: list[tuple[str, str]] = [("match[]", match)]
        if start is not None:
            params.append(("start", str(start)))
        if end is not None:
            params.append(("end", str(end)))
        url = f"{self.url}/api/v1/export?{urllib.parse.urlencode(params)}"
        status, body = _http("GET", url)
        if status != 200:
            raise RuntimeError(
                f"victoria-metrics export {match!r} -> HTTP {status}: {body[:500]!r}"
            )
        return [json.loads(line) for line in body.splitlines() if line.strip()]
