"""Who may publish: MQTT accounts, their passwords and the broker's ACL.

Accounts (one Mosquitto user each)
----------------------------------
* every **device**: username = device id (``500103-air-01-00017``); it may publish its own
  ``data``, ``birth`` and ``death`` topics and nothing else, and read nothing;
* every **system** (the 201 platforms): username = system id (``500103-air-01``), used by a
  platform link that carries many of the system's devices (the simulator's default: one
  connection per system); it may publish the device topics under its own system only;
* ``edge``: reads every device topic, publishes frames, dead letters, lifecycle events,
  alarms it raises itself while the hub is out of reach, and edge state;
* ``hub``: reads frames, events, dead letters and edge state, publishes kitchen alarms;
* ``ops``: operators' read-only view — alarms, dead letters, events and edge state.

No account may read the device topics but ``edge``, and none may read the edge → hub frames
but ``hub``. Anonymous clients are refused (``allow_anonymous false``).

Passwords
---------
A fleet has one provisioning secret (``var/mqtt-secret`` under ``citybrain up``, or
``CITYBRAIN_MQTT_SECRET`` / ``CITYBRAIN_MQTT_SECRET_FILE``). Each account's password is
``base64url(HMAC-SHA256(secret, "citybrain/mqtt/v1:" + username))`` (43 characters, 256
bits): unique per device, reproducible by whoever provisions the fleet, and never stored in
clear on the broker. The edge and the hub get only their own password (a file), never the
secret; the simulator, which plays every device, derives each link's password itself, so no
list of a million passwords travels anywhere.

The broker stores Mosquitto 2.x hashes, ``user:$7$<iterations>$<base64 salt>$<base64
hash>`` with PBKDF2-HMAC-SHA512, a 12-byte random salt and 101 iterations by default (the
format ``mosquitto_passwd`` writes, computed here with ``hashlib``). Hashing costs about
0.1 ms per account; big fleets are hashed on every core and the file is reused while the
secret and the account list are unchanged (``<file>.stamp``).

ACL
---
Devices are covered by one Mosquitto ``pattern`` line, ``cb/v1/dev/+/+/+/%u/+`` (``%u`` is
the username; Mosquitto denies pattern ACLs to usernames and client ids containing ``+``,
``#`` or ``/``). Pattern lines apply to every user, so a system, ``edge`` or ``hub`` account
could also publish as a device of its own name — no device has such a name (device ids are
``{system}-{nnnnn}``), and the edge rejects unknown devices. Systems, ``edge`` and ``hub``
get ``user`` blocks with their topics spelled out.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from citybrain import topics
from seeds.city import City

SECRET_ENV = "CITYBRAIN_MQTT_SECRET"
SECRET_FILE_ENV = "CITYBRAIN_MQTT_SECRET_FILE"
EDGE_USER = "edge"
HUB_USER = "hub"
OPS_USER = "ops"
SERVICE_USERS = (EDGE_USER, HUB_USER, OPS_USER)

#: Mosquitto 2.x ``mosquitto_passwd`` defaults for ``-H sha512-pbkdf2`` (hash type 7).
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
#: A provisioning secret shorter than this is refused (bytes).
MIN_SECRET_BYTES = 16
_LABEL = b"citybrain/mqtt/v1:"
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
#: Accounts per worker task when hashing in parallel.
_CHUNK = 8192
#: Below this many accounts hashing stays in this process.
_PARALLEL_FROM = 20_000


class SecretError(ValueError):
    """The provisioning secret is missing or unusable (the message never contains it)."""


# -- the secret ------------------------------------------------------------------------------
def new_secret() -> str:
    """A fresh random provisioning secret (64 hex characters, 256 bits)."""
    return secrets.token_hex(32)


def _check_secret(secret: bytes, origin: str) -> bytes:
    secret = secret.strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(f"MQTT secret from {origin} is shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def read_secret_file(path: Path) -> bytes:
    """The secret stored in ``path`` (surrounding whitespace dropped)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecretError(f"cannot read MQTT secret file {path}: {exc.strerror}") from None
    return _check_secret(data, str(path))


def load_secret(value: str | None = None, path: Path | str | None = None) -> bytes | None:
    """The secret given as ``value`` or in the file ``path``; else from the environment
    (``CITYBRAIN_MQTT_SECRET``, then ``CITYBRAIN_MQTT_SECRET_FILE``); None if nowhere."""
    if value:
        return _check_secret(value.encode(), "the command line or environment")
    if path:
        return read_secret_file(Path(path))
    if os.environ.get(SECRET_ENV):
        return _check_secret(os.environ[SECRET_ENV].encode(), SECRET_ENV)
    if os.environ.get(SECRET_FILE_ENV):
        return read_secret_file(Path(os.environ[SECRET_FILE_ENV]))
    return None


def read_first_line(path: Path | str, what: str = "secret file") -> str:
    """The first line of ``path``, stripped: how passwords and tokens come from files.
    Errors name the file (as ``what``), never its contents."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(f"cannot read {what} {path}: {exc.strerror}") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise SecretError(f"{what} {path} is empty")
    return lines[0].strip()


def read_password_file(path: Path) -> str:
    """The password in the first line of ``path`` (for ``--mqtt-password-file``)."""
    return read_first_line(path, "MQTT password file")


def write_private(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def ensure_secret_file(path: Path, value: str | None = None) -> bytes:
    """The secret in ``path``, created (0600, random, or ``value``) if missing.

    With ``value`` the file is (re)written with it, so a secret handed in through the
    environment wins over one left from an earlier run.
    """
    path = Path(path)
    if value:
        secret = _check_secret(value.encode(), "the command line or environment")
        write_private(path, secret + b"\n")
        return secret
    if not path.exists():
        write_private(path, new_secret() + "\n")
    return read_secret_file(path)


# -- passwords ----------------------------------------------------------------------------------
def check_username(username: str) -> str:
    """``username`` if it is usable as a Mosquitto user and in a ``%u`` pattern, else raise."""
    if not _USERNAME.match(username):
        raise ValueError(f"invalid MQTT username {username!r}: use letters, digits, '.', '_' "
                         "and '-' (no ':', whitespace or MQTT wildcards)")
    return username


def derive_password(secret: bytes, username: str) -> str:
    """The password of ``username`` in the fleet of ``secret`` (base64url, 43 characters)."""
    mac = hmac.new(secret, _LABEL + username.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def mosquitto_hash(password: str, *, salt: bytes | None = None,
                   iterations: int = PBKDF2_ITERATIONS) -> str:
    """``$7$<iterations>$<salt>$<hash>``: Mosquitto 2.x's PBKDF2-HMAC-SHA512 password hash."""
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def verify_mosquitto_hash(password: str, encoded: str) -> bool:
    """True if ``password`` matches a ``$7$`` hash (as Mosquitto would check it)."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7":
        raise ValueError("not a Mosquitto $7$ (sha512-pbkdf2) hash")
    salt = base64.b64decode(parts[3])
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(digest, base64.b64decode(parts[4]))


def _hash_lines(secret: bytes, usernames: Sequence[str], iterations: int) -> str:
    return "".join(f"{u}:{mosquitto_hash(derive_password(secret, u), iterations=iterations)}\n"
                   for u in usernames)


def password_file_text(secret: bytes, usernames: Sequence[str], *,
                       iterations: int = PBKDF2_ITERATIONS, workers: int | None = None) -> str:
    """Mosquitto password file lines for ``usernames`` (derived passwords, hashed).

    ``workers`` processes share the hashing (default: every core, for big lists only).
    """
    for u in usernames:
        check_username(u)
    n = len(usernames)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers <= 1 or n < _PARALLEL_FROM:
        return _hash_lines(secret, usernames, iterations)
    chunks = [usernames[i:i + _CHUNK] for i in range(0, n, _CHUNK)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        parts = pool.map(_hash_lines, [secret] * len(chunks), chunks,
                         [iterations] * len(chunks))
        return "".join(parts)


# -- accounts of a city --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SystemAccount:
    """A system's platform-link account and the topic level it may publish under."""

    username: str
    district: str
    domain: str

    @property
    def publish_filter(self) -> str:
        return f"{topics.PREFIX}/dev/{self.district}/{self.domain}/{self.username}/+/+"


def system_accounts(city: City) -> list[SystemAccount]:
    """One account per system of ``city``."""
    return [SystemAccount(check_username(s.system_id), s.district_code, s.domain)
            for s in city.systems]


def device_usernames(city: City) -> Iterator[str]:
    """Every device id of ``city`` at its scale."""
    for s in city.systems:
        for n in range(s.device_count(city.scale)):
            yield s.device_id(n)


def fleet_usernames(city: City, *, devices: bool = True) -> list[str]:
    """Usernames of every account: services, systems and (unless ``devices`` is false) devices."""
    names = [*SERVICE_USERS, *(a.username for a in system_accounts(city))]
    if devices:
        names.extend(device_usernames(city))
    return names


DEVICE_PATTERN = f"{topics.PREFIX}/dev/+/+/+/%u/+"
EDGE_RIGHTS = (
    ("read", f"{topics.PREFIX}/dev/#"),
    ("write", topics.FRAMES_FILTER),
    ("write", topics.DLQ_FILTER),
    ("write", topics.EVENTS_FILTER),
    ("write", f"{topics.PREFIX}/alarms/+"),
    ("write", f"{topics.PREFIX}/edge/+/state"),
)
HUB_RIGHTS = (
    ("read", topics.FRAMES_FILTER),
    ("read", topics.EVENTS_FILTER),
    ("read", topics.DLQ_FILTER),
    ("read", f"{topics.PREFIX}/edge/+/state"),
    ("write", f"{topics.PREFIX}/alarms/+"),
)
OPS_RIGHTS = (
    ("read", f"{topics.PREFIX}/alarms/+"),
    ("read", topics.DLQ_FILTER),
    ("read", topics.EVENTS_FILTER),
    ("read", f"{topics.PREFIX}/edge/+/state"),
)


def acl_text(systems: Iterable[SystemAccount]) -> str:
    """The Mosquitto ``acl_file`` for the fleet (see the module docstring)."""
    out = [
        "# citybrain MQTT ACL, generated by `citybrain auth` (citybrain/auth.py); edits are",
        "# overwritten. Whatever no line grants is denied.",
        "#",
        "# Devices (username = device id): publish their own data/birth/death; read nothing.",
        f"pattern write {DEVICE_PATTERN}",
        "",
        "# District edges: device topics in; frames, dead letters, events, local alarms and",
        "# edge state out.",
        f"user {EDGE_USER}",
        *(f"topic {access} {topic}" for access, topic in EDGE_RIGHTS),
        "",
        "# The city hub: frames, events, dead letters and edge state in; kitchen alarms out.",
        f"user {HUB_USER}",
        *(f"topic {access} {topic}" for access, topic in HUB_RIGHTS),
        "",
        "# Operators (read-only): alarms, dead letters, device events, edge state.",
        f"user {OPS_USER}",
        *(f"topic {access} {topic}" for access, topic in OPS_RIGHTS),
        "",
        "# System platform links (username = system id): their own system's devices only.",
    ]
    for account in systems:
        out += [f"user {account.username}", f"topic write {account.publish_filter}"]
    return "\n".join(out) + "\n"


# -- files for a broker ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BrokerAuthFiles:
    password_file: Path
    acl_file: Path
    accounts: int
    #: True if the password file was reused (same secret and accounts as last time)
    reused: bool
    seconds: float


def _stamp(secret: bytes, usernames: Sequence[str], iterations: int) -> str:
    names = hashlib.sha256("\n".join(usernames).encode()).hexdigest()
    key_id = hmac.new(secret, b"citybrain/mqtt/stamp", hashlib.sha256).hexdigest()[:32]
    return json.dumps({"format": 1, "key_id": key_id, "accounts": len(usernames),
                       "usernames_sha256": names, "iterations": iterations}, sort_keys=True)


def write_broker_files(out_dir: Path, secret: bytes, city: City, *, devices: bool = True,
                       iterations: int = PBKDF2_ITERATIONS,
                       workers: int | None = None) -> BrokerAuthFiles:
    """Write ``passwd`` and ``acl`` for ``city``'s fleet into ``out_dir`` (both 0600).

    The password file is reused when its stamp shows the same secret, accounts and
    iterations; the ACL is always rewritten (it is small).
    """
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    passwd, acl, stamp_path = out_dir / "passwd", out_dir / "acl", out_dir / "passwd.stamp"
    usernames = fleet_usernames(city, devices=devices)
    stamp = _stamp(secret, usernames, iterations)
    reused = (passwd.exists() and stamp_path.exists()
              and stamp_path.read_text(encoding="utf-8") == stamp)
    if not reused:
        stamp_path.unlink(missing_ok=True)
        write_private(passwd, password_file_text(secret, usernames, iterations=iterations,
                                                 workers=workers))
        write_private(stamp_path, stamp)
    write_private(acl, acl_text(system_accounts(city)))
    return BrokerAuthFiles(passwd, acl, len(usernames), reused, time.monotonic() - t0)


# -- `citybrain auth` ----------------------------------------------------------------------------
def _secret_from(args: argparse.Namespace) -> bytes:
    secret = load_secret(args.mqtt_secret, args.mqtt_secret_file)
    if secret is None:
        raise SecretError(f"no MQTT secret: pass --mqtt-secret-file or set {SECRET_FILE_ENV} "
                          f"(or {SECRET_ENV})")
    return secret


def _user_errors(func: Callable[[argparse.Namespace], int]
                 ) -> Callable[[argparse.Namespace], int]:
    """Bad input (a missing secret, a bad username) ends the command with its message."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ValueError as exc:
            raise SystemExit(f"citybrain auth: {exc}") from None
    return run


@_user_errors
def cmd_auth_secret(args: argparse.Namespace) -> int:
    ensure_secret_file(args.path, args.mqtt_secret)
    print(f"MQTT secret in {args.path} (0600)", file=sys.stderr)
    return 0


@_user_errors
def cmd_auth_broker_files(args: argparse.Namespace) -> int:
    files = write_broker_files(args.out_dir, _secret_from(args), City(args.scale),
                               devices=not args.no_device_accounts)
    how = "reused" if files.reused else "written"
    print(f"{files.accounts} accounts: {files.password_file} ({how}), {files.acl_file}; "
          f"{files.seconds:.1f} s", file=sys.stderr)
    return 0


@_user_errors
def cmd_auth_password(args: argparse.Namespace) -> int:
    password = derive_password(_secret_from(args), check_username(args.username))
    if args.out:
        write_private(args.out, password + "\n")
    else:
        print(password)
    return 0


def add_auth_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``citybrain auth secret|broker-files|password`` (secrets from options or environment)."""
    from citybrain.cli import add_common, env_option

    def secret_options(p: argparse.ArgumentParser) -> None:
        env_option(p, "--mqtt-secret", help="the fleet's provisioning secret "
                   "(prefer --mqtt-secret-file)")
        env_option(p, "--mqtt-secret-file", type=Path, help="file holding the secret")

    p = sub.add_parser("auth", help="MQTT accounts: secret, broker password/ACL files, "
                       "passwords")
    asub = p.add_subparsers(dest="auth_command", required=True)

    q = asub.add_parser("secret", help="create the provisioning secret file (0600) if missing; "
                        "with --mqtt-secret, (re)write it with that value")
    q.add_argument("path", type=Path)
    env_option(q, "--mqtt-secret", help="use this secret instead of a random one")
    q.set_defaults(func=cmd_auth_secret)

    q = asub.add_parser("broker-files", help="write Mosquitto's passwd and acl for the fleet")
    q.add_argument("out_dir", type=Path)
    add_common(q)
    secret_options(q)
    q.add_argument("--no-device-accounts", action="store_true",
                   help="system, edge and hub accounts only (devices then connect through "
                        "their system's platform link)")
    q.set_defaults(func=cmd_auth_broker_files)

    q = asub.add_parser("password", help="print (or --out: write, 0600) an account's password")
    q.add_argument("username")
    secret_options(q)
    q.add_argument("--out", type=Path, help="write it to this file instead of stdout")
    q.set_defaults(func=cmd_auth_password)
