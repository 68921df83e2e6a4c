"""InfluxDB sinks: both API generations behind one small interface.

A sink takes a body of pre-rendered line protocol (``bytes``, ns precision) and either stores
all of it or raises ``WriteError``. It never buffers: the caller keeps its data until
``write`` returns, so no client library is ever the only holder of unwritten points (the
influxdb-client batching ``WriteApi`` is not used: its ``flush()`` does nothing and it loses
data at exit).

Errors are sorted as in quix-streams' sinks: ``retryable`` (connection failures, 429, 5xx —
``retry_after`` honours the server's Retry-After) or not (400 bad line, 401/403/404, 413).

* ``InfluxV1Sink``: ``POST /write?db=&rp=&precision=ns`` with basic auth; creates the database
  with ``CREATE DATABASE`` (idempotent). Tested against Debian's influxd 1.6.
* ``InfluxV2Sink``: influxdb-client's synchronous write to ``/api/v2/write`` (org, bucket,
  token); creates the bucket when missing. Tested against victoria-metrics, which implements
  that endpoint but not the buckets API (then creation is skipped with a warning).

Secrets: the v2 token and the v1 password come from the environment
(``CITYBRAIN_INFLUX_TOKEN``) or a file (``--influx-token-file``, ``CITYBRAIN_INFLUX_TOKEN_FILE``;
``load_secret``), never from a logged place. They are left out of ``InfluxConfig``'s repr and
``describe()`` (which also drops credentials written into the URL), and scrubbed from every
``WriteError`` message, so logs, stats files and ``/api/state`` never carry them.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

import urllib3

log = logging.getLogger("citybrain.sink")


def load_secret(value: str = "", path: Path | str | None = None) -> str:
    """A token or password: the first line of ``path`` if given, else ``value``.

    Errors name the file, never its contents.
    """
    if not path:
        return value
    from citybrain.auth import read_first_line
    return read_first_line(path)


def public_url(url: str) -> str:
    """``url`` without user name and password (``http://u:p@host`` → ``http://host``)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every non-empty ``secrets`` value replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class WriteError(Exception):
    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


def classify_status(status: int, body: str, retry_after: str | None) -> WriteError:
    """Turn a non-2xx HTTP answer into a ``WriteError`` of the right kind."""
    retryable = status == 429 or status >= 500
    after: float | None = None
    if retry_after:
        try:
            after = float(retry_after)
        except ValueError:
            after = None
    return WriteError(f"HTTP {status}: {body[:300]}", retryable=retryable, status=status,
                      retry_after=after)


@dataclass(frozen=True)
class InfluxConfig:
    """Where aggregates and raw readings go. ``api`` is ``v1`` or ``v2``."""

    url: str = "http://127.0.0.1:8086"
    api: str = "v1"
    database: str = "citybrain"  # v1
    retention_policy: str = ""  # v1; empty: the database's default
    username: str = ""  # v1
    password: str = field(default="", repr=False)  # v1; never logged (nor is the URL's)
    org: str = "citybrain"  # v2
    bucket: str = "citybrain"  # v2
    token: str = field(default="", repr=False)  # v2; never logged
    timeout_s: float = 30.0

    def __repr__(self) -> str:  # no token, no password, no credentials in the URL
        return (f"InfluxConfig(url={public_url(self.url)!r}, api={self.api!r}, "
                f"database={self.database!r}, retention_policy={self.retention_policy!r}, "
                f"username={self.username!r}, org={self.org!r}, bucket={self.bucket!r}, "
                f"timeout_s={self.timeout_s!r})")

    def describe(self) -> dict[str, str]:
        """Where data goes, without secrets (for reports and logs)."""
        url = public_url(self.url)
        if self.api == "v1":
            return {"url": url, "api": "v1", "database": self.database,
                    "retention_policy": self.retention_policy}
        return {"url": url, "api": "v2", "org": self.org, "bucket": self.bucket}

    def secrets(self) -> tuple[str, ...]:
        """Values that must never leave this process in a message (the basic-auth header
        value included)."""
        basic = (base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
                 if self.username else "")
        parts = urlsplit(self.url)
        return tuple(s for s in (self.token, self.password, basic, parts.password) if s)

    def scrub(self, text: str) -> str:
        """``text`` with this config's secrets masked."""
        return scrub(text, *self.secrets())


class InfluxSink(Protocol):
    config: InfluxConfig

    def ensure_target(self) -> None: ...

    def write(self, body: bytes) -> None: ...

    def close(self) -> None: ...


class _Errors:
    """``WriteError``s whose messages carry none of the config's secrets."""

    config: InfluxConfig

    def _status_error(self, status: int, body: str, retry_after: str | None) -> WriteError:
        return classify_status(status, self.config.scrub(body), retry_after)

    def _unreachable(self, exc: Exception) -> WriteError:
        return WriteError(self.config.scrub(f"{public_url(self.config.url)} unreachable: {exc}"),
                          retryable=True)


class InfluxV1Sink(_Errors):
    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        self._http = urllib3.PoolManager(
            maxsize=4, timeout=urllib3.Timeout(connect=5.0, read=config.timeout_s), retries=False)
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if config.username:
            cred = f"{config.username}:{config.password}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(cred).decode()

    def _request(self, method: str, path: str, params: dict[str, str],
                 body: bytes | None = None) -> urllib3.BaseHTTPResponse:
        url = f"{self.config.url.rstrip('/')}{path}?{urlencode(params)}"
        try:
            return self._http.request(method, url, body=body, headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(exc) from None

    def ensure_target(self) -> None:
        name = self.config.database.replace('"', '\\"')
        resp = self._request("POST", "/query", {"q": f'CREATE DATABASE "{name}"'})
        if resp.status != 200:
            raise self._status_error(resp.status, resp.data.decode(errors="replace"),
                                     resp.headers.get("Retry-After"))

    def write(self, body: bytes) -> None:
        params = {"db": self.config.database, "precision": "ns"}
        if self.config.retention_policy:
            params["rp"] = self.config.retention_policy
        resp = self._request("POST", "/write", params, body)
        if resp.status != 204:
            raise self._status_error(resp.status, resp.data.decode(errors="replace"),
                                     resp.headers.get("Retry-After"))

    def close(self) -> None:
        self._http.clear()


class InfluxV2Sink(_Errors):
    def __init__(self, config: InfluxConfig) -> None:
        try:
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS
        except ImportError as exc:  # pragma: no cover - it is a core dependency
            raise ImportError("InfluxDB v2 needs influxdb-client: pip install "
                              "influxdb-client") from exc
        self.config = config
        self._client = InfluxDBClient(url=config.url, token=config.token, org=config.org,
                                      timeout=int(config.timeout_s * 1000), retries=False)
        self._write = self._client.write_api(write_options=SYNCHRONOUS)

    def ensure_target(self) -> None:
        from influxdb_client.rest import ApiException
        try:
            buckets = self._client.buckets_api()
            if buckets.find_bucket_by_name(self.config.bucket) is None:
                orgs = self._client.organizations_api().find_organizations(org=self.config.org)
                buckets.create_bucket(bucket_name=self.config.bucket, org_id=orgs[0].id)
                log.info("created bucket %s", self.config.bucket)
        except ApiException as exc:
            if exc.status in (400, 404, 405):
                log.warning("%s has no buckets API (HTTP %s); assuming it creates buckets "
                            "on write", public_url(self.config.url), exc.status)
                return
            raise self._status_error(exc.status or 0, str(exc.body), None) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(exc) from None

    def write(self, body: bytes) -> None:
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException
        try:
            precision: Any = WritePrecision.NS
            self._write.write(bucket=self.config.bucket, org=self.config.org, record=body,
                              write_precision=precision)
        except ApiException as exc:
            headers: Any = exc.headers or {}
            raise self._status_error(exc.status or 0, str(exc.body),
                                     headers.get("Retry-After")) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(exc) from None

    def close(self) -> None:
        self._write.close()
        self._client.close()


def make_sink(config: InfluxConfig) -> InfluxSink:
    if config.api == "v1":
        return InfluxV1Sink(config)
    if config.api == "v2":
        return InfluxV2Sink(config)
    raise ValueError(f"influx api must be 'v1' or 'v2', got {config.api!r}")


def ensure_target_with_retry(sink: InfluxSink, timeout_s: float = 60.0) -> None:
    """Create the database/bucket, retrying while the server is still starting."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            sink.ensure_target()
            return
        except WriteError as exc:
            if not exc.retryable or time.monotonic() > deadline:
                raise
            log.info("waiting for InfluxDB at %s: %s", public_url(sink.config.url), exc)
            time.sleep(0.5)
