"""The command line: options come from the command line, else the environment, else defaults,
and no subcommand offers an option it then ignores."""

from __future__ import annotations

import argparse

import pytest

from citybrain.cli import LOADTEST_DURATION_S, LOADTEST_RATE, build_parser
from citybrain.loadtest.profiles import DEFAULT_SOAK_DURATION_S, parse_profile


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _options(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {o for a in sub.choices[command]._actions for o in a.option_strings}


def test_hub_urls_come_from_the_environment_as_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYBRAIN_HUB_URL", "http://10.0.0.1:8080, http://10.0.0.2:8080")
    assert _parse(["loadtest"]).hub_url == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
    # the command line replaces the environment's list (it used to crash appending to a str)
    args = _parse(["loadtest", "--hub-url", "http://a:1", "--hub-url", "http://b:2"])
    assert args.hub_url == ["http://a:1", "http://b:2"]


def test_hub_urls_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITYBRAIN_HUB_URL", raising=False)
    assert _parse(["loadtest"]).hub_url is None
    assert _parse(["loadtest", "--hub-url", "http://a:1"]).hub_url == ["http://a:1"]


def _profile(argv: list[str]) -> tuple[float, float]:
    args = _parse(["loadtest", *argv])
    p = parse_profile(args.profile, rate=args.rate, duration_s=args.duration,
                      default_rate=LOADTEST_RATE, default_duration_s=LOADTEST_DURATION_S)
    return p.rate, p.duration_s


def test_loadtest_profile_defaults_and_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CITYBRAIN_RATE", "CITYBRAIN_DURATION", "CITYBRAIN_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    assert _profile([]) == (LOADTEST_RATE, LOADTEST_DURATION_S)
    # a soak lasts an hour unless told otherwise (it used to get the 30 s default)
    assert _profile(["--profile", "soak"]) == (LOADTEST_RATE, DEFAULT_SOAK_DURATION_S)
    assert _profile(["--profile", "soak", "--duration", "600"])[1] == 600.0
    # rate= and duration= in the spec (they used to clash with the options' defaults)
    assert _profile(["--profile", "soak:rate=2000,duration=900"]) == (2000.0, 900.0)
    assert _profile(["--rate", "1000", "--duration", "5"]) == (1000.0, 5.0)
    with pytest.raises(ValueError, match="given both"):
        _profile(["--profile", "constant:rate=5", "--rate", "6"])


def test_no_subcommand_offers_an_option_it_ignores() -> None:
    # loadtest: the scale follows --devices; loss is counted through InfluxDB's v1 /query
    # (credentials for it, but no v2 write settings)
    loadtest = _options("loadtest")
    assert {"--influx-url", "--influx-db", "--influx-username", "--influx-password",
            "--influx-token", "--influx-token-file", "--hub-url", "--devices"} <= loadtest
    assert not {"--scale", "--stats-file", "--influx-api", "--influx-bucket", "--influx-org",
                "--influx-rp"} & loadtest
    assert "--stats-file" not in _options("up") and "--scale" in _options("up")
    assert not {"--scale", "--stats-file"} & _options("bench")
    for service in ("sim", "edge", "hub"):
        assert {"--scale", "--stats-file"} <= _options(service)
