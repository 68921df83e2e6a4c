"""docker-compose.yml is valid and configures the tiers with options the CLI really has.

No Docker engine runs here; ``docker-compose config`` validates and resolves the file without
one (Debian package ``docker-compose``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from citybrain.cli import ENV_PREFIX, build_parser

ROOT = Path(__file__).parents[1]


def resolved_config() -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: run `make setup` (apt-get install docker-compose)")
    out = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], check=True,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
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


def test_compose_is_valid_and_has_the_stack() -> None:
    cfg = resolved_config()
    assert {"mosquitto", "influxdb", "hub", "edge", "sim"} <= set(cfg["services"])
    assert cfg["services"]["influxdb"]["image"].startswith("influxdb:2.7")
    init = cfg["services"]["influxdb"]["environment"]
    assert init["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("ORG", "BUCKET", "ADMIN_TOKEN"):
        assert init[f"DOCKER_INFLUXDB_INIT_{key}"]


@pytest.mark.parametrize("service", ["hub", "edge", "sim"])
def test_environment_matches_cli_options(service: str) -> None:
    svc = resolved_config()["services"][service]
    command = svc["command"][0]
    assert command == service
    env = {k for k in svc["environment"] if k.startswith(ENV_PREFIX)}
    unknown = env - cli_env_names(command)
    assert not unknown, f"{service} sets variables no `citybrain {command}` option reads: {unknown}"


def test_hub_token_matches_influx_init_token() -> None:
    cfg = resolved_config()["services"]
    assert cfg["hub"]["environment"]["CITYBRAIN_INFLUX_TOKEN"] == \
        cfg["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
