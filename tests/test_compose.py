"""docker-compose.yml is valid and configures the tiers with options the CLI really has.

No Docker engine runs here; ``docker-compose config`` validates and resolves the file without
one (Debian package ``docker-compose``). The default stack (Mosquitto, one hub) and the
opt-in ``cluster`` profile (three EMQX nodes, three hubs sharing partitions) are both checked.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from citybrain import auth
from citybrain.cli import ENV_PREFIX, build_parser
from seeds.city import City

ROOT = Path(__file__).parents[1]
EMQX_CONF = ROOT / "deploy" / "emqx" / "emqx.conf"

#: The default stack: what `docker compose up` starts. Nothing of the cluster may join it.
DEFAULT_SERVICES = {"mqtt-auth", "mosquitto", "influxdb", "hub", "edge", "sim", "grafana",
                    "influxdb-dbrp"}
CLUSTER_HUBS = ("hub-1", "hub-2", "hub-3")
EMQX_NODES = ("emqx-1", "emqx-2", "emqx-3")
#: Services running `citybrain X` and checked against X's options: service -> command.
CITYBRAIN_SERVICES = {"hub": "hub", "edge": "edge", "sim": "sim",
                      **{h: "hub" for h in CLUSTER_HUBS},
                      "edge-cluster": "edge", "sim-cluster": "sim"}


@functools.cache
def resolved_config(*profiles: str) -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: run `make setup` (apt-get install docker-compose)")
    args = [exe, *(a for p in profiles for a in ("--profile", p)),
            "-f", str(ROOT / "docker-compose.yml"), "config"]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60, cwd=ROOT)
    return yaml.safe_load(out.stdout)


def cli_env_names(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    names = set()
    for action in sub.choices[command]._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt != "--help":
                names.add(ENV_PREFIX + opt[2:].replace("-", "_").upper())
    return names


def cli_default(command: str, dest: str) -> int:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return int(sub.choices[command].get_default(dest))


def test_compose_is_valid_and_has_the_stack() -> None:
    cfg = resolved_config()
    assert {"mosquitto", "influxdb", "hub", "edge", "sim"} <= set(cfg["services"])
    assert cfg["services"]["influxdb"]["image"].startswith("influxdb:2.7")
    init = cfg["services"]["influxdb"]["environment"]
    assert init["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("ORG", "BUCKET", "ADMIN_TOKEN"):
        assert init[f"DOCKER_INFLUXDB_INIT_{key}"]


@pytest.mark.parametrize("service", sorted(CITYBRAIN_SERVICES))
def test_environment_matches_cli_options(service: str) -> None:
    svc = resolved_config("cluster")["services"][service]
    command = svc["command"][0]
    assert command == CITYBRAIN_SERVICES[service]
    env = {k for k in svc["environment"] if k.startswith(ENV_PREFIX)}
    unknown = env - cli_env_names(command)
    assert not unknown, f"{service} sets variables no `citybrain {command}` option reads: {unknown}"


@pytest.mark.parametrize("hub", ["hub", *CLUSTER_HUBS])
def test_hub_token_matches_influx_init_token(hub: str) -> None:
    cfg = resolved_config("cluster")["services"]
    assert cfg[hub]["environment"]["CITYBRAIN_INFLUX_TOKEN"] == \
        cfg["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]


# -- profile `cluster` ------------------------------------------------------------------------
def test_cluster_profile_is_opt_in() -> None:
    """`docker compose up` starts exactly the default stack: every other service is `cluster`."""
    services = resolved_config("cluster")["services"]
    assert set(services) >= DEFAULT_SERVICES
    for name, svc in services.items():
        if name in DEFAULT_SERVICES:
            assert not svc.get("profiles"), f"{name} must start without a profile"
        else:
            assert svc.get("profiles") == ["cluster"], f"{name} must be in profile cluster only"


def test_published_ports_do_not_clash() -> None:
    seen: dict[str, str] = {}
    for name, svc in resolved_config("cluster")["services"].items():
        for port in svc.get("ports", []):
            host = (str(port).split(":")[1] if isinstance(port, str)
                    else str(port.get("published")))
            assert host not in seen, f"{name} and {seen[host]} both publish port {host}"
            seen[host] = name


def _emqx_seeds() -> list[str]:
    m = re.search(r"static\.seeds\s*=\s*\[(.*?)\]", EMQX_CONF.read_text(), re.S)
    assert m, "deploy/emqx/emqx.conf has no cluster static.seeds"
    return re.findall(r'"([^"]+)"', m.group(1))


def _emqx_setting(name: str) -> str:
    m = re.search(rf"^\s*{re.escape(name)}\s*=\s*(\S+)", EMQX_CONF.read_text(), re.M)
    assert m, f"deploy/emqx/emqx.conf does not set {name}"
    return m.group(1)


def test_emqx_nodes_form_one_static_cluster() -> None:
    services = resolved_config("cluster")["services"]
    assert _emqx_setting("discovery_strategy") == "static"
    names = []
    for node in EMQX_NODES:
        svc = services[node]
        assert re.fullmatch(r"emqx/emqx:5\.\d+\.\d+", svc["image"])
        env = svc["environment"]
        name = env["EMQX_NODE__NAME"]
        host = name.split("@", 1)[1]
        assert "." in host, f"{node}: EMQX node names need a dotted host (long names): {name}"
        assert host in svc["networks"]["default"]["aliases"], f"{node} is not reachable as {host}"
        assert any(v.endswith(":/opt/emqx/etc/emqx.conf:ro") for v in svc["volumes"])
        names.append(name)
    assert sorted(names) == sorted(_emqx_seeds()), "static.seeds must list exactly the nodes"
    cookies = {services[n]["environment"]["EMQX_NODE__COOKIE"] for n in EMQX_NODES}
    assert len(cookies) == 1 and cookies != {""}, "all nodes need the same Erlang cookie"
    data = [v for n in EMQX_NODES for v in services[n]["volumes"]
            if v.endswith("/opt/emqx/data:rw")]
    assert len(set(data)) == len(EMQX_NODES), "each node keeps its own data volume"


def test_emqx_limits_cover_the_edge_and_the_hub() -> None:
    """The edge keeps --ack-window device messages unacknowledged until its commit; the broker
    must allow at least twice that in flight, and queue at least what Mosquitto queues."""
    mosquitto = dict(line.split(None, 1) for line in
                     (ROOT / "deploy/mosquitto/mosquitto.conf").read_text().splitlines()
                     if line.strip() and not line.startswith("#"))
    inflight = int(_emqx_setting("max_inflight"))
    assert inflight >= 2 * cli_default("edge", "ack_window")
    assert inflight >= int(mosquitto["max_inflight_messages"])
    assert int(_emqx_setting("max_mqueue_len")) >= int(mosquitto["max_queued_messages"])
    assert int(_emqx_setting("max_mailbox_size")) >= int(_emqx_setting("max_mqueue_len"))
    assert _emqx_setting("session_expiry_interval") in {"7d", "\"7d\""}
    assert _emqx_setting("no_match") == "deny"


def test_cluster_hubs_share_partitions_and_directory() -> None:
    services = resolved_config("cluster")["services"]
    env = {h: services[h]["environment"] for h in CLUSTER_HUBS}
    node_ids = [e["CITYBRAIN_NODE_ID"] for e in env.values()]
    assert len(set(node_ids)) == len(CLUSTER_HUBS), "each hub needs its own node id"
    partitions = {int(e["CITYBRAIN_PARTITIONS"]) for e in env.values()}
    assert len(partitions) == 1 and partitions.pop() >= len(CLUSTER_HUBS)
    dirs = {e["CITYBRAIN_CLUSTER_DIR"] for e in env.values()}
    assert len(dirs) == 1
    cluster_dir = dirs.pop()
    mounts = {next(v.split(":")[0] for v in services[h]["volumes"]
                   if v.split(":")[1] == cluster_dir) for h in CLUSTER_HUBS}
    assert len(mounts) == 1, f"the hubs must share one volume at {cluster_dir}: {mounts}"
    volume = mounts.pop()
    init = services["hub-cluster-init"]
    assert any(v.startswith(f"{volume}:{cluster_dir}") for v in init["volumes"])
    for h in CLUSTER_HUBS:
        assert services[h]["depends_on"]["hub-cluster-init"]["condition"] == \
            "service_completed_successfully"
    brokers = [e["CITYBRAIN_MQTT_HOST"] for e in env.values()]
    assert sorted(brokers) == sorted(EMQX_NODES), "one hub per EMQX node"
    for name in ("edge-cluster", "sim-cluster"):
        host = services[name]["environment"]["CITYBRAIN_MQTT_HOST"]
        assert all(host in services[n]["networks"]["default"]["aliases"] for n in EMQX_NODES)


# -- deploy/emqx/make-auth.py -------------------------------------------------------------------
@functools.cache
def _make_auth() -> ModuleType:
    path = ROOT / "deploy" / "emqx" / "make-auth.py"
    spec = importlib.util.spec_from_file_location("emqx_make_auth", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_emqx_accounts_are_citybrains_passwords(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret-for-the-compose-test-0123456789\n")
    out = tmp_path / "emqx"
    assert _make_auth().main(["--mqtt-secret-file", str(secret_file), "--out-dir", str(out),
                              "--scale", "0.05"]) == 0
    secret = auth.read_secret_file(secret_file)
    lines = (out / "users.csv").read_text().splitlines()
    assert lines[0] == "user_id,password_hash,salt,is_superuser"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == auth.fleet_usernames(City(0.05))
    for user, digest, salt, superuser in rows:
        # EMQX: password_hash_algorithm {name = sha256, salt_position = prefix}
        password = auth.derive_password(secret, user)
        assert digest == hashlib.sha256((salt + password).encode()).hexdigest()
        assert superuser == "false"
    assert len({r[2] for r in rows}) == len(rows), "salts differ per account"
    assert (out / "users.csv").stat().st_mode & 0o077 == 0
    first = (out / "users.csv").read_bytes()
    _make_auth().main(["--mqtt-secret-file", str(secret_file), "--out-dir", str(out),
                       "--scale", "0.05"])
    assert (out / "users.csv").read_bytes() == first, "EMQX skips only identical users"


def test_emqx_acl_grants_what_the_mosquitto_acl_grants() -> None:
    city = City(1)
    text = _make_auth().acl_text(auth.system_accounts(city))
    rules = [line for line in text.splitlines() if line and not line.startswith("%")]
    for rule in rules:
        assert re.fullmatch(r'\{(allow|deny), .*\}\.', rule), rule
    assert rules[-1] == "{deny, all}."
    assert rules[0] == '{allow, all, publish, ["cb/v1/dev/+/+/+/${username}/+"]}.'
    for user, rights in ((auth.EDGE_USER, auth.EDGE_RIGHTS), (auth.HUB_USER, auth.HUB_RIGHTS),
                         (auth.OPS_USER, auth.OPS_RIGHTS)):
        for access, topic in rights:
            action = {"read": "subscribe", "write": "publish"}[access]
            assert any(r.startswith(f'{{allow, {{username, "{user}"}}, {action}, [')
                       and f'"{topic}"' in r for r in rules), (user, access, topic)
    for account in auth.system_accounts(city):
        assert (f'{{allow, {{username, "{account.username}"}}, publish, '
                f'["{account.publish_filter}"]}}.') in rules
    assert len(rules) == 1 + 2 + 2 + 1 + len(city.systems) + 1
