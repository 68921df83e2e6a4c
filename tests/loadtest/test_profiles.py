"""Rate profiles: exact integrals, their inverse, and the command-line form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.loadtest.profiles import (
    DEFAULT_SOAK_DURATION_S,
    RateProfile,
    parse_profile,
)

rates = st.floats(1.0, 1e6)
durations = st.floats(1.0, 600.0)


@st.composite
def profiles(draw: st.DrawFn) -> RateProfile:
    kind = draw(st.sampled_from(["constant", "step", "ramp", "soak", "burst"]))
    rate, duration = draw(rates), draw(durations)
    if kind == "step":
        return RateProfile(kind, rate, duration, steps=draw(st.integers(1, 20)))
    if kind == "ramp":
        return RateProfile(kind, rate, duration, start_rate=draw(st.floats(0.0, 2e6)))
    if kind == "burst":
        period = draw(st.floats(0.5, 60.0))
        burst = draw(st.floats(0.01, 1.0)) * period
        return RateProfile(kind, rate, duration, base=draw(st.floats(0.0, 1.0)),
                           burst_s=burst, period_s=period)
    return RateProfile(kind, rate, duration)


def _breakpoints(p: RateProfile) -> np.ndarray:
    s = p._segments
    return np.unique(np.concatenate([s.t0, s.t1]))


@given(profiles(), st.lists(st.floats(-10.0, 700.0), min_size=2, max_size=50))
@settings(max_examples=200, deadline=None)
def test_expected_by_is_monotone_and_bounded(p: RateProfile, ts: list[float]) -> None:
    t = np.sort(np.array(ts))
    e = p.expected_by(t)
    assert np.all(np.diff(e) >= 0)
    assert np.all(e >= 0) and np.all(e <= p.total * (1 + 1e-12))
    assert p.expected_by(-1.0) == 0.0
    assert p.expected_by(p.duration_s + 5) == pytest.approx(p.total, rel=1e-12)


@given(profiles())
@settings(max_examples=150, deadline=None)
def test_expected_by_is_the_integral_of_rate_at(p: RateProfile) -> None:
    # The rate is linear between breakpoints, so the midpoint rule on a grid refined at
    # every breakpoint is exact up to rounding.
    edges = np.union1d(_breakpoints(p), np.linspace(0.0, p.duration_s, 257))
    mids = (edges[:-1] + edges[1:]) / 2
    rate = np.array([p.rate_at(float(m)) for m in mids])
    numeric = np.concatenate([[0.0], np.cumsum(rate * np.diff(edges))])
    exact = p.expected_by(edges)
    assert exact == pytest.approx(numeric, rel=1e-9, abs=1e-6 * p.peak)


@given(profiles(), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50))
@settings(max_examples=200, deadline=None)
def test_time_of_inverts_expected_by(p: RateProfile, fracs: list[float]) -> None:
    n = np.array(fracs) * p.total
    t = p.time_of(n)
    assert np.all((t >= 0) & (t <= p.duration_s))
    assert p.expected_by(t) == pytest.approx(n, rel=1e-9, abs=1e-6)
    # Earliest such time: a moment earlier, fewer readings were expected (unless at 0).
    earlier = p.expected_by(np.maximum(t - 1e-3 * p.duration_s, 0.0))
    assert np.all((earlier < n) | (n <= 0) | (t == 0))


def test_time_of_outside_the_profile() -> None:
    p = RateProfile("constant", 100.0, 10.0)
    assert p.time_of(np.array([-5.0, 0.0, 1.0, 1000.0, 1000.1])) == pytest.approx(
        [0.0, 0.0, 0.01, 10.0, math.inf])


def test_kinds_shape() -> None:
    step = RateProfile("step", 1000.0, 50.0, steps=5)
    assert [step.rate_at(t) for t in (0, 9.99, 10, 25, 49.9, 50)] == pytest.approx(
        [200, 200, 400, 600, 1000, 0])
    assert step.total == pytest.approx(10 * (200 + 400 + 600 + 800 + 1000))
    ramp = RateProfile("ramp", 1000.0, 10.0, start_rate=100.0)
    assert ramp.rate_at(5.0) == pytest.approx(550.0)
    assert ramp.total == pytest.approx(5500.0)
    burst = RateProfile("burst", 1000.0, 20.0, base=0.2, burst_s=2.0, period_s=10.0)
    assert [burst.rate_at(t) for t in (0, 7.9, 8, 9.9, 10, 18.5)] == pytest.approx(
        [200, 200, 1000, 1000, 200, 1000])
    assert burst.total == pytest.approx(2 * (8 * 200 + 2 * 1000))
    soak = parse_profile("soak", rate=50.0)
    assert soak.duration_s == DEFAULT_SOAK_DURATION_S and soak.rate_at(3000) == 50.0


def test_parse_profile() -> None:
    p = parse_profile("burst:period=10,burst=2,base=0.2", rate=500.0, duration_s=30.0)
    assert (p.kind, p.period_s, p.burst_s, p.base, p.rate, p.duration_s) == (
        "burst", 10.0, 2.0, 0.2, 500.0, 30.0)
    assert parse_profile("step:steps=3,rate=10,duration=6").describe() == {
        "kind": "step", "rate": 10.0, "duration_s": 6.0, "steps": 3}
    assert parse_profile(" Ramp:start=5 ").start_rate == 5.0


@pytest.mark.parametrize(("spec", "message"), [
    ("warp", "unknown kind 'warp'"),
    ("step:steps=two", "steps='two' is not an integer"),
    ("step:steps=0", "steps must be an integer >= 1"),
    ("constant:steps=3", "constant takes no parameter 'steps'"),
    ("burst:period", "'period' is not key=value"),
    ("burst:period=1,burst=2", "burst_s must be in (0, period_s=1.0]"),
    ("burst:base=1.5", "base is a fraction"),
    ("ramp:start=1,start=2", "'start' given twice"),
    ("constant:rate=-1", "rate must be a positive finite number"),
])
def test_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_profile(spec)
    assert message in str(err.value) and repr(spec) in str(err.value)


def test_rate_given_twice() -> None:
    with pytest.raises(ValueError, match="rate given both"):
        parse_profile("constant:rate=5", rate=6.0)
