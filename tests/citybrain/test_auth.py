"""Who may publish: accounts, derived passwords, Mosquitto's password file, the ACL and TLS.

The broker tests run a real Mosquitto 2.x (``citybrain.localstack.MosquittoServer``) with the
files ``citybrain.auth`` writes for a small city, on a free 127.0.0.1 port. A denied PUBLISH
is acknowledged silently in MQTT 3.1.1, so the tests prove denial twice: MQTT 5 clients see
reason code 135 (Not authorized) in the PUBACK, and a subscriber with read rights never gets
the message — checked deterministically with an allowed marker message published after it on
the same connection (the broker keeps one client's messages in order).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citybrain import auth, topics
from citybrain.localstack import MosquittoServer, TlsFiles, free_port
from citybrain.mqtt import BrokerConfig, connect_and_wait, make_client
from seeds.city import City

ROOT = Path(__file__).parents[2]
SCALE = 0.05  # at least one device per system: a few hundred accounts, hashed in a second
WAIT_S = 20.0
NOT_AUTHORIZED = 135


# -- passwords and files (no broker) -------------------------------------------------------------
def test_derived_passwords_are_unique_stable_and_depend_on_the_secret() -> None:
    secret = b"s" * 32
    a = auth.derive_password(secret, "500103-air-01-00000")
    assert a == auth.derive_password(secret, "500103-air-01-00000")
    assert a != auth.derive_password(secret, "500103-air-01-00001")
    assert a != auth.derive_password(b"t" * 32, "500103-air-01-00000")
    assert len(a) == 43 and base64.urlsafe_b64decode(a + "=")  # 256 bits, base64url


def test_mosquitto_hash_has_the_pbkdf2_sha512_format() -> None:
    encoded = auth.mosquitto_hash("pw")
    empty, kind, iterations, salt, digest = encoded.split("$")
    assert (empty, kind, iterations) == ("", "7", "101")
    assert len(base64.b64decode(salt)) == 12 and len(base64.b64decode(digest)) == 64
    assert auth.verify_mosquitto_hash("pw", encoded)
    assert not auth.verify_mosquitto_hash("pW", encoded)
    assert auth.mosquitto_hash("pw") != encoded  # a fresh salt each time


def test_our_hash_verifies_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        pytest.fail("mosquitto_passwd is missing: apt-get install mosquitto")
    path = tmp_path / "pw"
    subprocess.run([exe, "-c", "-b", str(path), "dev", "the-password"], check=True,
                   capture_output=True, timeout=30)
    user, encoded = path.read_text().strip().split(":", 1)
    assert user == "dev" and encoded.startswith("$7$")
    assert auth.verify_mosquitto_hash("the-password", encoded)
    assert not auth.verify_mosquitto_hash("the-passwordx", encoded)


@pytest.mark.parametrize("bad", ["", "a b", "a:b", "a/b", "a+b", "a#b", "-lead", "ü"])
def test_usernames_that_could_escape_a_pattern_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        auth.check_username(bad)


def test_secret_file_is_private_kept_and_checked(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "var" / "mqtt-secret"
    first = auth.ensure_secret_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.ensure_secret_file(path) == first  # kept
    assert auth.ensure_secret_file(path, "given-secret-0123456789") == b"given-secret-0123456789"
    with pytest.raises(auth.SecretError) as err:
        auth.ensure_secret_file(tmp_path / "short", "short-one")
    assert "short-one" not in str(err.value)
    monkeypatch.delenv(auth.SECRET_ENV, raising=False)
    monkeypatch.setenv(auth.SECRET_FILE_ENV, str(path))
    assert auth.load_secret() == b"given-secret-0123456789"
    monkeypatch.setenv(auth.SECRET_ENV, "from-the-environment-123")
    assert auth.load_secret() == b"from-the-environment-123"


def test_acl_grants_each_account_its_own_topics_only() -> None:
    city = City(SCALE)
    text = auth.acl_text(auth.system_accounts(city))
    lines = text.splitlines()
    assert "pattern write cb/v1/dev/+/+/+/%u/+" in lines
    assert not any(line.startswith("pattern read") for line in lines)
    s = city.systems[0]
    i = lines.index(f"user {s.system_id}")
    assert lines[i + 1] == f"topic write cb/v1/dev/{s.district_code}/{s.domain}/{s.system_id}/+/+"
    # Only the edge reads device topics; only the hub reads frames.
    readers: dict[str, set[str | None]] = {}
    user = None
    for line in lines:
        if line.startswith("user "):
            user = line.split()[1]
        elif line.startswith("topic read"):
            readers.setdefault(line.split()[2], set()).add(user)
    assert readers["cb/v1/dev/#"] == {"edge"}
    assert readers[topics.FRAMES_FILTER] == {"hub"}


def test_broker_files_are_private_and_reused_until_the_secret_changes(tmp_path: Path) -> None:
    city = City(SCALE)
    first = auth.write_broker_files(tmp_path, b"a" * 32, city)
    names = [line.split(":")[0] for line in first.password_file.read_text().splitlines()]
    assert names[:3] == ["edge", "hub", "ops"]
    assert len(names) == first.accounts == 3 + len(city.systems) + city.device_total
    for path in (first.password_file, first.acl_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.write_broker_files(tmp_path, b"a" * 32, city).reused
    again = auth.write_broker_files(tmp_path, b"b" * 32, city)
    assert not again.reused
    line = next(x for x in again.password_file.read_text().splitlines() if x.startswith("hub:"))
    assert auth.verify_mosquitto_hash(auth.derive_password(b"b" * 32, "hub"), line[4:])
    small = auth.write_broker_files(tmp_path, b"b" * 32, city, devices=False)
    assert small.accounts == 3 + len(city.systems)


def test_parallel_hashing_writes_the_same_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_PARALLEL_FROM", 10)
    monkeypatch.setattr(auth, "_CHUNK", 7)
    names = [f"500103-air-01-{i:05d}" for i in range(40)]
    text = auth.password_file_text(b"k" * 32, names, workers=2)
    rows = [line.split(":", 1) for line in text.splitlines()]
    assert [u for u, _ in rows] == names
    assert all(auth.verify_mosquitto_hash(auth.derive_password(b"k" * 32, u), h)
               for u, h in rows)


# -- a real broker with the fleet's accounts -------------------------------------------------------
@dataclass
class SecuredBroker:
    port: int
    secret: bytes
    city: City
    tls: TlsFiles | None = None
    server: MosquittoServer | None = None

    def config(self, username: str | None, password: str | None = None) -> BrokerConfig:
        if username is not None and password is None:
            password = auth.derive_password(self.secret, username)
        return BrokerConfig(port=self.port, username=username, password=password,
                            tls_ca=str(self.tls.ca) if self.tls else None)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def _start_secured(directory: Path, secret: bytes, tls: TlsFiles | None = None) -> SecuredBroker:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: apt-get install mosquitto")
    city = City(SCALE)
    files = auth.write_broker_files(directory / "auth", secret, city)
    server = MosquittoServer(directory / "mosquitto", allow_anonymous=False,
                             password_file=files.password_file, acl_file=files.acl_file, tls=tls)
    server.start()
    return SecuredBroker(server.port, secret, city, tls, server)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    broker = _start_secured(tmp_path_factory.mktemp("secured"), auth.new_secret().encode())
    try:
        yield broker
    finally:
        broker.stop()


class Client:
    """A connected paho client (3.1.1 or 5) recording what it receives and PUBACK codes."""

    def __init__(self, broker: SecuredBroker, username: str | None, *, v5: bool = False,
                 password: str | None = None, client_id: str | None = None) -> None:
        cfg = broker.config(username, password)
        cid = client_id or f"test-{username}-{os.urandom(3).hex()}"
        if v5:
            self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                 client_id=cid, protocol=mqtt.MQTTv5)
            if username is not None:
                self.c.username_pw_set(username, cfg.password)
            if cfg.tls_ca:
                self.c.tls_set(ca_certs=cfg.tls_ca)
        else:
            self.c = make_client(cid, cfg)
        self.received: list[tuple[str, bytes]] = []
        self.codes: dict[int, int] = {}
        self._cond = threading.Condition()
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self._subacks: dict[int, list[Any]] = {}
        connect_and_wait(self.c, cfg, timeout_s=WAIT_S)

    def _on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def _on_publish(self, c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        with self._cond:
            self.codes[mid] = int(rc.value)
            self._cond.notify_all()

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: list[Any], props: Any) -> None:
        with self._cond:
            self._subacks[mid] = rcs
            self._cond.notify_all()

    def _wait(self, cond: Any, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(cond, WAIT_S):
                pytest.fail(f"timed out after {WAIT_S} s waiting for {what}")

    def subscribe(self, *filters: str) -> None:
        _, mid = self.c.subscribe([(f, 1) for f in filters])
        self._wait(lambda: mid in self._subacks, f"SUBACK for {filters}")

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and wait for the PUBACK; its reason code (3.1.1: always 0)."""
        mid = self.c.publish(topic, payload, qos=1).mid
        self._wait(lambda: mid in self.codes, f"PUBACK for {topic}")
        return self.codes[mid]

    def wait_for(self, payload: bytes) -> None:
        self._wait(lambda: any(p == payload for _, p in self.received), f"message {payload!r}")

    def payloads(self) -> list[bytes]:
        with self._cond:
            return [p for _, p in self.received]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def _device_topic(device: Any, channel: str = "data") -> str:
    return str(topics.DeviceTopic(device.district_code, device.domain, device.system.system_id,
                                  device.device_id, channel))


def _two_devices(city: City) -> tuple[Any, Any, Any]:
    """Two devices of one system (a, b) and one device of another system (c)."""
    system = next(s for s in city.systems if s.device_count(city.scale) >= 2)
    a, b = list(city.devices_of(system))[:2]
    other = next(s for s in city.systems if s.system_id != system.system_id)
    c = next(city.devices_of(other))
    return a, b, c


def test_wrong_unknown_and_missing_credentials_are_refused(secured: SecuredBroker) -> None:
    device = next(secured.city.devices())
    for username, password in ((device.device_id, "wrong"), ("nobody", "x"), (None, None),
                               (device.device_id, auth.derive_password(b"x" * 32,
                                                                       device.device_id))):
        client = make_client(f"refused-{os.urandom(3).hex()}", secured.config(username, password))
        with pytest.raises(ConnectionError, match="ot authori"):
            connect_and_wait(client, secured.config(username, password), timeout_s=WAIT_S)
    ok = make_client("accepted", secured.config(device.device_id))
    connect_and_wait(ok, secured.config(device.device_id), timeout_s=WAIT_S)
    ok.disconnect()
    ok.loop_stop()


def test_device_cannot_publish_on_another_devices_topic(secured: SecuredBroker,
                                                        clients: list[Client]) -> None:
    a, b, c = _two_devices(secured.city)
    edge = Client(secured, auth.EDGE_USER)
    clients.append(edge)
    edge.subscribe(topics.device_filter())
    dev = Client(secured, a.device_id, v5=True)
    clients.append(dev)
    assert dev.publish(_device_topic(a), b"a-own") == 0
    assert dev.publish(_device_topic(a, "birth"), b"a-birth") == 0
    # The same system's device, another system's device, b's id under a's system, a made-up
    # system level, and topics outside the device tree.
    forged = [_device_topic(b), _device_topic(c), _device_topic(c, "death"),
              f"cb/v1/dev/{a.district_code}/{a.domain}/{a.system.system_id}/{b.device_id}/data",
              f"cb/v1/dev/{a.district_code}/{a.domain}/{a.device_id}/{b.device_id}/data",
              topics.frames_topic(a.district_code), topics.alarms_topic(a.district_code),
              topics.edge_state_topic("citybrain-edge")]
    for topic in forged:
        assert dev.publish(topic, b"forged:" + topic.encode()) == NOT_AUTHORIZED, topic
    # Over MQTT 3.1.1 the broker acknowledges the forgery but delivers nothing either.
    dev311 = Client(secured, a.device_id)
    clients.append(dev311)
    assert dev311.publish(_device_topic(b), b"forged-311") == 0
    dev311.publish(_device_topic(a), b"marker")
    edge.wait_for(b"marker")
    got = edge.payloads()
    assert b"a-own" in got and b"a-birth" in got
    assert not [p for p in got if p.startswith(b"forged")], got


def test_system_link_publishes_for_its_own_system_only(secured: SecuredBroker,
                                                       clients: list[Client]) -> None:
    a, b, c = _two_devices(secured.city)
    edge = Client(secured, auth.EDGE_USER)
    clients.append(edge)
    edge.subscribe(topics.device_filter())
    link = Client(secured, a.system.system_id, v5=True)
    clients.append(link)
    assert link.publish(_device_topic(a), b"sys-a") == 0
    assert link.publish(_device_topic(b, "death"), b"sys-b") == 0
    assert link.publish(_device_topic(c), b"forged-c") == NOT_AUTHORIZED
    other_district = next(d.code for d in secured.city.districts if d.code != a.district_code)
    wrong = f"cb/v1/dev/{other_district}/{a.domain}/{a.system.system_id}/{a.device_id}/data"
    assert link.publish(wrong, b"forged-district") == NOT_AUTHORIZED
    link.publish(_device_topic(a), b"marker-sys")
    edge.wait_for(b"marker-sys")
    got = edge.payloads()
    assert b"sys-a" in got and b"sys-b" in got
    assert not [p for p in got if p.startswith(b"forged")]


def test_device_cannot_read_frames_or_other_devices(secured: SecuredBroker,
                                                    clients: list[Client]) -> None:
    a, b, _ = _two_devices(secured.city)
    spy = Client(secured, a.device_id)
    clients.append(spy)
    spy.subscribe("#", "cb/v1/#", topics.FRAMES_FILTER, topics.device_filter())
    hub = Client(secured, auth.HUB_USER)
    clients.append(hub)
    hub.subscribe(topics.FRAMES_FILTER)
    edge = Client(secured, auth.EDGE_USER, v5=True)
    clients.append(edge)
    assert edge.publish(topics.frames_topic(a.district_code), b"frame-bytes") == 0
    hub.wait_for(b"frame-bytes")
    neighbour = Client(secured, b.device_id)
    clients.append(neighbour)
    neighbour.publish(_device_topic(b), b"b-reading")
    # Anything routed to the spy before its own PUBACK would have arrived before it.
    spy.publish(_device_topic(a), b"spy-own")
    assert spy.payloads() == []


def test_edge_hub_and_ops_can_do_their_jobs_and_no_more(secured: SecuredBroker,
                                                        clients: list[Client]) -> None:
    a, _, _ = _two_devices(secured.city)
    d = a.district_code
    edge = Client(secured, auth.EDGE_USER, v5=True)
    hub = Client(secured, auth.HUB_USER, v5=True)
    ops = Client(secured, auth.OPS_USER, v5=True)
    clients.extend([edge, hub, ops])
    hub.subscribe(topics.FRAMES_FILTER, topics.EVENTS_FILTER, topics.DLQ_FILTER,
                  "cb/v1/edge/+/state")
    ops.subscribe("cb/v1/alarms/+", topics.DLQ_FILTER, topics.EVENTS_FILTER, "cb/v1/edge/+/state",
                  topics.FRAMES_FILTER, topics.device_filter())
    for topic in (topics.frames_topic(d), topics.dlq_topic(d), topics.events_topic(d),
                  topics.alarms_topic(d), topics.edge_state_topic("citybrain-edge-0")):
        assert edge.publish(topic, f"edge:{topic}".encode()) == 0, topic
    assert hub.publish(topics.alarms_topic(d), b"hub-alarm") == 0
    for who, topic in ((edge, _device_topic(a)), (hub, topics.frames_topic(d)),
                       (hub, _device_topic(a)), (ops, topics.alarms_topic(d)),
                       (ops, topics.dlq_topic(d))):
        assert who.publish(topic, b"forged") == NOT_AUTHORIZED, topic
    edge.publish(topics.edge_state_topic("citybrain-edge-0"), b"marker-edge")
    hub.wait_for(b"marker-edge")
    ops.wait_for(b"marker-edge")
    hub.publish(topics.alarms_topic(d), b"marker-hub")
    ops.wait_for(b"marker-hub")
    assert sorted(t for t, p in hub.received if p != b"marker-edge") == sorted(
        [topics.frames_topic(d), topics.dlq_topic(d), topics.events_topic(d),
         topics.edge_state_topic("citybrain-edge-0")])
    ops_topics = {t for t, _ in ops.received}
    assert topics.frames_topic(d) not in ops_topics  # frames are the hub's alone
    assert ops_topics == {topics.dlq_topic(d), topics.events_topic(d), topics.alarms_topic(d),
                          topics.edge_state_topic("citybrain-edge-0")}
    assert b"forged" not in ops.payloads() + hub.payloads()


def test_pattern_acl_refuses_a_client_id_with_wildcards(secured: SecuredBroker,
                                                        clients: list[Client]) -> None:
    a, _, _ = _two_devices(secured.city)
    sneaky = Client(secured, a.device_id, v5=True, client_id="x/+/#")
    clients.append(sneaky)
    assert sneaky.publish(_device_topic(a), b"x") == NOT_AUTHORIZED


def test_sim_links_log_in_with_derived_passwords(secured: SecuredBroker,
                                                 clients: list[Client]) -> None:
    from firmware_sim import FaultConfig, SimConfig, run_sim
    district = next(iter(sorted(d.code for d in secured.city.districts)))
    for per_link in (None, 1, 2):
        cfg = SimConfig(mqtt_port=secured.port,
                        secret=secured.secret, scale=SCALE, districts={district},
                        devices_per_link=per_link, faults=FaultConfig.none(), speed=600,
                        duration_s=1.0, mqtt_version="5",
                        client_id_prefix=f"authsim{per_link}")
        stats = run_sim(cfg)
        assert stats.messages_published > 0 and stats.births >= stats.devices
        assert stats.rejected == 0 and stats.unacked == 0, (per_link, stats)
    with pytest.raises(ConnectionError, match="ot authori"):
        run_sim(SimConfig(mqtt_port=secured.port,
                          secret=b"not-the-fleet-secret-000", scale=SCALE, districts={district},
                          duration_s=0.5, client_id_prefix="authsim-wrong"))


def test_sim_config_hides_its_secret() -> None:
    from firmware_sim import SimConfig
    cfg = SimConfig(secret=b"very-secret-fleet-key-1", tls_ca="/ca.crt")
    assert "very-secret" not in repr(cfg)
    assert "pw123" not in repr(BrokerConfig(username="u", password="pw123"))
    with pytest.raises(ValueError, match="not both"):
        SimConfig(secret=b"x" * 20, username="u").validate()


# -- TLS --------------------------------------------------------------------------------------
def _make_ca(directory: Path) -> TlsFiles:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing: apt-get install openssl")
    subprocess.run(["bash", str(ROOT / "scripts" / "make_ca.sh"), str(directory)], check=True,
                   capture_output=True, timeout=60)
    return TlsFiles.in_dir(directory)


def test_make_ca_writes_a_private_ca_and_a_loopback_server_certificate(tmp_path: Path) -> None:
    tls = _make_ca(tmp_path / "tls")
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls" / "ca.key").stat().st_mode) == 0o600
    text = subprocess.run(["openssl", "x509", "-in", str(tls.cert), "-noout", "-ext",
                           "subjectAltName"], check=True, capture_output=True,
                          text=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:mosquitto" in text
    before = tls.ca.read_bytes()
    _make_ca(tmp_path / "tls")  # idempotent: the CA clients trust is kept
    assert tls.ca.read_bytes() == before


def test_tls_listener_accepts_clients_trusting_the_ca_only(tmp_path: Path) -> None:
    tls = _make_ca(tmp_path / "tls")
    broker = _start_secured(tmp_path, auth.new_secret().encode(), tls=tls)
    try:
        assert broker.server is not None and broker.server.url.startswith("mqtts://")
        a, _, _ = _two_devices(broker.city)
        edge = Client(broker, auth.EDGE_USER)
        edge.subscribe(topics.device_filter())
        dev = Client(broker, a.device_id)
        dev.publish(_device_topic(a), b"over-tls")
        edge.wait_for(b"over-tls")
        edge.close()
        dev.close()
        # No TLS, or TLS trusting another CA: no session.
        plain_cfg = broker.config("edge")
        plain_cfg = BrokerConfig(port=broker.port, username="edge", password=plain_cfg.password)
        plain = make_client("plain", plain_cfg)
        with pytest.raises((ConnectionError, TimeoutError)):
            connect_and_wait(plain, plain_cfg, timeout_s=3)
        plain.loop_stop()
        other = _make_ca(tmp_path / "other")
        stranger_cfg = BrokerConfig(port=broker.port, username="edge",
                                    password=plain_cfg.password, tls_ca=str(other.ca))
        stranger = make_client("stranger", stranger_cfg)
        with pytest.raises(OSError):  # ssl.SSLCertVerificationError
            connect_and_wait(stranger, stranger_cfg, timeout_s=3)
    finally:
        broker.stop()


# -- the compose broker config, run by a real Mosquitto -------------------------------------------
def test_compose_auth_script_and_broker_config_work_with_mosquitto(tmp_path: Path) -> None:
    """deploy/mosquitto/make-auth.sh and mosquitto.conf as docker-compose uses them, with the
    container paths moved under tmp_path and the listeners onto free loopback ports."""
    root = tmp_path / "c"
    certs = root / "certs"
    _make_ca(certs)
    for d in ("auth/secret", "auth/broker", "auth/hub", "auth/edge", "auth/sim", "bin", "data"):
        (root / d).mkdir(parents=True)
    # `citybrain` from this venv; chown is a no-op (the test need not run as root).
    (root / "bin" / "citybrain").symlink_to(Path(sys.executable).parent / "citybrain")
    (root / "bin" / "chown").write_text("#!/bin/sh\nexit 0\n")
    (root / "bin" / "chown").chmod(0o755)
    script = (ROOT / "deploy/mosquitto/make-auth.sh").read_text()
    script = re.sub(r"(?<![\w/])/auth/", f"{root}/auth/", script)
    script = re.sub(r"(?<![\w/])/certs/", f"{certs}/", script)
    (root / "make-auth.sh").write_text(script)
    env = {**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}", "CITYBRAIN_SCALE": "0.05"}
    env.pop(auth.SECRET_ENV, None)
    env.pop(auth.SECRET_FILE_ENV, None)
    run = subprocess.run(["sh", str(root / "make-auth.sh")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "TLS listener on 8883" in run.stdout
    broker_dir = root / "auth" / "broker"
    plain_port, tls_port = free_port(), free_port()
    tls_conf = broker_dir / "conf.d" / "tls.conf"
    tls_conf.write_text(tls_conf.read_text().replace("/mosquitto/auth", str(broker_dir))
                        .replace("listener 8883 0.0.0.0", f"listener {tls_port} 127.0.0.1"))
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    conf = (conf.replace("/mosquitto/auth", str(broker_dir))
            .replace("/mosquitto/data/", f"{root / 'data'}/")
            .replace("listener 1883 0.0.0.0", f"listener {plain_port} 127.0.0.1"))
    if os.geteuid() == 0:
        conf += "user root\n"
    server = MosquittoServer(root / "data", port=plain_port, config_body=conf)
    server.start()
    try:
        secret = (root / "auth" / "sim" / "mqtt-secret").read_bytes().strip()
        assert secret == (root / "auth" / "secret" / "mqtt-secret").read_bytes().strip()
        hub_pw = (root / "auth" / "hub" / "mqtt-password").read_text().strip()
        assert hub_pw == auth.derive_password(secret, "hub")
        assert (root / "auth" / "edge" / "ca.crt").exists()
        broker = SecuredBroker(plain_port, secret, City(0.05))
        anonymous = make_client("anon", BrokerConfig(port=plain_port))
        with pytest.raises(ConnectionError):
            connect_and_wait(anonymous, BrokerConfig(port=plain_port), timeout_s=WAIT_S)
        hub = Client(broker, "hub", password=hub_pw)
        hub.subscribe(topics.FRAMES_FILTER)
        tls_broker = SecuredBroker(tls_port, secret, broker.city, TlsFiles.in_dir(certs))
        edge_pw = (root / "auth" / "edge" / "mqtt-password").read_text().strip()
        edge = Client(tls_broker, "edge", password=edge_pw)
        edge.publish(topics.frames_topic("500103"), b"frame-over-tls")
        hub.wait_for(b"frame-over-tls")
        hub.close()
        edge.close()
    finally:
        server.stop()


# -- HTTP endpoints -------------------------------------------------------------------------------
def test_http_endpoints_bind_to_loopback_unless_told_otherwise() -> None:
    from citybrain.cli import build_parser
    from edge.gateway import EdgeConfig
    from hub.service import HubConfig
    env = {k: os.environ.pop(k) for k in ("CITYBRAIN_HTTP_HOST", "CITYBRAIN_METRICS_HOST")
           if k in os.environ}
    try:
        parser = build_parser()
        assert parser.parse_args(["hub"]).http_host == "127.0.0.1"
        assert parser.parse_args(["edge"]).metrics_host == "127.0.0.1"
    finally:
        os.environ.update(env)
    assert HubConfig().http_host == "127.0.0.1"
    assert EdgeConfig().metrics_host == "127.0.0.1"


# -- `citybrain up`: the whole city with accounts, ACL and TLS -------------------------------------
@pytest.mark.integration
@pytest.mark.slow
def test_citybrain_up_runs_the_city_with_accounts_acl_and_tls(tmp_path: Path) -> None:
    var, report = tmp_path / "var", tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    proc = subprocess.run([sys.executable, "-m", "citybrain.cli", "up", "--duration", "15",
                           "--speed", "60", "--seed", "3", "--tls", "--var-dir", str(var),
                           "--report", str(report), "--http-port", str(free_port())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(report.read_text())
    assert doc["lost"] == 0 and doc["published"] > 1000  # a denied publish would be lost
    assert doc["mqtt"]["tls"] and doc["mqtt"]["accounts"]
    conf = (var / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert "allow_anonymous false" in conf
    assert f"password_file {var / 'auth' / 'passwd'}" in conf
    assert f"acl_file {var / 'auth' / 'acl'}" in conf
    assert f"certfile {var / 'tls' / 'server.crt'}" in conf
    assert stat.S_IMODE((var / "mqtt-secret").stat().st_mode) == 0o600
    secret = (var / "mqtt-secret").read_bytes().strip()
    for tier in ("hub", "edge"):
        assert (var / "auth" / f"{tier}.password").read_text().strip() == \
            auth.derive_password(secret, tier)
    # The tiers logged in with their own accounts, the sim with its systems'.
    log = (var / "log" / "mosquitto.log").read_text()
    assert "u'hub'" in log and "u'edge'" in log
    system = City(1).systems[0].system_id
    assert f"u'{system}'" in log
    # No password or secret on any command line or in any log.
    logs = "".join(p.read_text(errors="replace") for p in (var / "log").iterdir())
    assert secret.decode() not in logs + proc.stdout + proc.stderr
    assert auth.derive_password(secret, "hub") not in logs + proc.stdout
