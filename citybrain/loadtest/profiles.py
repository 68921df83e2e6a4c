"""Rate schedules for a load test: how many readings per second, when.

A ``RateProfile`` is a rate ``r(t)`` in readings/s over ``[0, duration_s)`` (0 outside it).
Every kind is piecewise linear in ``t``, so the profile is stored as segments and both
``expected_by(t)`` (the integral of ``r`` from 0 to ``t``) and its inverse ``time_of(n)`` are
exact and cheap, for one value or for a numpy array of them.

Pacing contract: a generator that started at ``t = 0`` has published
``floor(expected_by(now))`` readings by ``now``; its reading number ``k`` (0-based) is *due*
at ``time_of(k + 1)``, and that instant (not the moment it was actually sent) is its
timestamp, so a stalled generator shows its stall as latency downstream (no coordinated
omission).

Kinds (``rate`` is always the peak / target rate):

* ``constant`` -- ``rate`` throughout.
* ``soak`` -- the same as constant, reported as a soak; its default duration is an hour.
* ``step`` -- ``steps`` equal stretches at ``rate * k / steps``, ``k = 1 .. steps``.
* ``ramp`` -- linear from ``start_rate`` (default 0) to ``rate`` over the duration.
* ``burst`` -- ``base * rate`` with bursts at ``rate`` lasting ``burst_s`` at the end of
  every ``period_s`` (so each period starts at the base rate).

``parse_profile("burst:period=10,burst=2,base=0.2", rate=..., duration_s=...)`` reads the
command-line form.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from functools import cached_property
from typing import overload

import numpy as np

KINDS = ("constant", "step", "ramp", "soak", "burst")
DEFAULT_RATE = 10_000.0
#: Default durations, seconds: a soak is long by definition.
DEFAULT_DURATION_S = 60.0
DEFAULT_SOAK_DURATION_S = 3600.0
#: More segments than this (a burst profile with a tiny period over a long run) is refused:
#: the segment arrays would take hundreds of MB.
MAX_SEGMENTS = 10_000_000


@dataclass(frozen=True, slots=True)
class _Segments:
    """``r(t)`` linear from ``r0[i]`` at ``t0[i]`` to ``r1[i]`` at ``t1[i]``; ``cum[i]`` =
    readings expected by ``t0[i]``, ``cum[-1]`` (one longer than the others) the total."""

    t0: np.ndarray
    t1: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    cum: np.ndarray


@dataclass(frozen=True)
class RateProfile:
    """A rate schedule (see the module doc). Times in seconds, rates in readings/s."""

    kind: str = "constant"
    rate: float = DEFAULT_RATE
    duration_s: float = DEFAULT_DURATION_S
    steps: int = 5            # step: number of stretches
    start_rate: float = 0.0   # ramp: rate at t = 0
    base: float = 0.2         # burst: rate between bursts, as a fraction of ``rate``
    burst_s: float = 2.0      # burst: length of each burst
    period_s: float = 10.0    # burst: one burst per period

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown profile kind {self.kind!r}; expected one of {KINDS}")
        _positive("rate", self.rate)
        _positive("duration_s", self.duration_s)
        if self.kind == "step" and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"step: steps must be an integer >= 1, got {self.steps!r}")
        if self.kind == "ramp" and not (0.0 <= self.start_rate < math.inf):
            raise ValueError(f"ramp: start_rate must be >= 0 readings/s, got {self.start_rate}")
        if self.kind == "burst":
            if not 0.0 <= self.base <= 1.0:
                raise ValueError(f"burst: base is a fraction of rate in [0, 1], got {self.base}")
            _positive("burst: period_s", self.period_s)
            if not 0.0 < self.burst_s <= self.period_s:
                raise ValueError(f"burst: burst_s must be in (0, period_s={self.period_s}], "
                                 f"got {self.burst_s}")
            if 2 * math.ceil(self.duration_s / self.period_s) > MAX_SEGMENTS:
                raise ValueError(f"burst: {self.duration_s} s / period {self.period_s} s is too "
                                 "many periods; use a longer period")

    # -- queries ---------------------------------------------------------------------------
    @property
    def total(self) -> float:
        """Readings expected over the whole profile, ``expected_by(duration_s)``."""
        return float(self._segments.cum[-1])

    @property
    def peak(self) -> float:
        """Highest rate the profile reaches, readings/s."""
        s = self._segments
        return float(max(s.r0.max(), s.r1.max()))

    def rate_at(self, t_s: float) -> float:
        """Rate at ``t_s`` seconds after the start, readings/s (0 before 0 and from the end).

        Segments are half-open ``[t0, t1)``: at a step boundary the later rate applies.
        """
        if not 0.0 <= t_s < self.duration_s:
            return 0.0
        s = self._segments
        i = int(np.searchsorted(s.t0, t_s, side="right")) - 1
        frac = (t_s - s.t0[i]) / (s.t1[i] - s.t0[i])
        return float(s.r0[i] + (s.r1[i] - s.r0[i]) * frac)

    @overload
    def expected_by(self, t_s: float) -> float: ...
    @overload
    def expected_by(self, t_s: np.ndarray) -> np.ndarray: ...

    def expected_by(self, t_s: float | np.ndarray) -> float | np.ndarray:
        """Readings expected from 0 to ``t_s`` (the exact integral of ``rate_at``).

        Non-decreasing; 0 for ``t_s <= 0``, ``total`` for ``t_s >= duration_s``.
        Accepts a float or a float64 array (returns the same shape).
        """
        if isinstance(t_s, float | int) and t_s == t_s:
            return self._expected_by_one(float(t_s))
        t = np.clip(np.asarray(t_s, dtype=np.float64), 0.0, self.duration_s)
        s = self._segments
        i = np.clip(np.searchsorted(s.t0, t, side="right") - 1, 0, len(s.t0) - 1)
        dt = t - s.t0[i]
        slope = (s.r1[i] - s.r0[i]) / (s.t1[i] - s.t0[i])
        out = s.cum[i] + s.r0[i] * dt + 0.5 * slope * dt * dt
        # Rounding inside a segment must not step below the segment's start (monotone).
        out = np.maximum(out, s.cum[i])
        return float(out) if np.ndim(out) == 0 else out

    def _expected_by_one(self, t: float) -> float:
        """``expected_by`` of one number (not NaN) in plain Python floats: the operations of
        the array path in its order, so the same bits, without a dozen numpy calls on 0-d
        arrays (the load generator asks on every loop pass)."""
        t0, t1, r0, r1, cum = self._segment_lists
        t = t if t > 0.0 else 0.0  # np.clip's MIN(MAX(t, 0), duration)
        t = t if t < self.duration_s else self.duration_s
        i = min(max(bisect.bisect_right(t0, t) - 1, 0), len(t0) - 1)
        dt = t - t0[i]
        slope = (r1[i] - r0[i]) / (t1[i] - t0[i])
        out = cum[i] + r0[i] * dt + 0.5 * slope * dt * dt
        return out if out >= cum[i] else cum[i]

    def time_of(self, n: np.ndarray) -> np.ndarray:
        """Earliest ``t`` with ``expected_by(t) >= n[j]`` for each ``j``, seconds (float64).

        The inverse used for pacing: reading ``k`` of a stream with share ``f`` of the
        profile is due at ``time_of((k + 1) / f)``. ``n <= 0`` gives 0; ``n`` above ``total``
        gives ``inf`` (never due).
        """
        x = np.asarray(n, dtype=np.float64)
        s = self._segments
        ends = s.cum[1:]
        # First segment whose end reaches n: skipping zero-rate stretches before it.
        i = np.clip(np.searchsorted(ends, x, side="left"), 0, len(ends) - 1)
        m = np.maximum(x - s.cum[i], 0.0)
        length = s.t1[i] - s.t0[i]
        r0 = s.r0[i]
        a = (s.r1[i] - r0) / length
        # Solve r0*dt + a*dt²/2 = m for the smallest dt >= 0; this form has no cancellation
        # for a > 0 or a < 0 and reduces to m / r0 for a = 0.
        disc = np.sqrt(np.maximum(r0 * r0 + 2.0 * a * m, 0.0))
        denom = r0 + disc
        with np.errstate(divide="ignore", invalid="ignore"):
            dt = np.where(denom > 0.0, 2.0 * m / denom, 0.0)
        t = s.t0[i] + np.clip(dt, 0.0, length)
        t = np.where(x > s.cum[-1], np.inf, np.where(x <= 0.0, 0.0, t))
        return t

    def segment_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                      np.ndarray]:
        """``(t0, t1, r0, r1, cum)``, float64: the rate is linear from ``r0[i]`` at ``t0[i]``
        to ``r1[i]`` at ``t1[i]`` (seconds, readings/s), ``cum[i]`` readings are expected by
        ``t0[i]`` and ``cum[-1]`` (one entry longer) is ``total``. What ``time_of`` solves
        over, for compiled loops that mirror it (``loadtest.kernels.item_times``)."""
        s = self._segments
        return s.t0, s.t1, s.r0, s.r1, s.cum

    def describe(self) -> dict[str, float | int | str]:
        """The parameters that matter for this kind, for reports."""
        out: dict[str, float | int | str] = {"kind": self.kind, "rate": self.rate,
                                              "duration_s": self.duration_s}
        if self.kind == "step":
            out["steps"] = self.steps
        elif self.kind == "ramp":
            out["start_rate"] = self.start_rate
        elif self.kind == "burst":
            out.update(base=self.base, burst_s=self.burst_s, period_s=self.period_s)
        return out

    # -- segments --------------------------------------------------------------------------
    @cached_property
    def _segment_lists(self) -> tuple[list[float], list[float], list[float], list[float],
                                      list[float]]:
        s = self._segments
        return s.t0.tolist(), s.t1.tolist(), s.r0.tolist(), s.r1.tolist(), s.cum.tolist()

    @cached_property
    def _segments(self) -> _Segments:
        t0, t1, r0, r1 = _build_segments(self)
        keep = t1 > t0  # zero-length pieces (a burst as long as the period) carry nothing
        t0, t1, r0, r1 = t0[keep], t1[keep], r0[keep], r1[keep]
        cum = np.zeros(len(t0) + 1)
        np.cumsum(0.5 * (r0 + r1) * (t1 - t0), out=cum[1:])
        return _Segments(t0, t1, r0, r1, cum)


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 < value < math.inf):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _build_segments(p: RateProfile) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = p.duration_s
    if p.kind in ("constant", "soak"):
        return np.array([0.0]), np.array([d]), np.array([p.rate]), np.array([p.rate])
    if p.kind == "ramp":
        return np.array([0.0]), np.array([d]), np.array([p.start_rate]), np.array([p.rate])
    if p.kind == "step":
        k = np.arange(p.steps, dtype=np.float64)
        r = p.rate * (k + 1.0) / p.steps
        return d * k / p.steps, d * (k + 1.0) / p.steps, r, r
    # burst: per period [start, start + period - burst) at base, then the burst
    starts = np.arange(0.0, d, p.period_s)
    split = np.minimum(starts + (p.period_s - p.burst_s), d)
    ends = np.minimum(starts + p.period_s, d)
    t0 = np.column_stack([starts, split]).ravel()
    t1 = np.column_stack([split, ends]).ravel()
    r = np.tile([p.base * p.rate, p.rate], len(starts))
    return t0, t1, r, r.copy()


# -- parsing ---------------------------------------------------------------------------------

#: Spec key -> (field, type) per kind; ``rate`` and ``duration`` are accepted for every kind.
_PARAMS: dict[str, dict[str, tuple[str, type]]] = {
    "constant": {},
    "soak": {},
    "step": {"steps": ("steps", int)},
    "ramp": {"start": ("start_rate", float), "start_rate": ("start_rate", float)},
    "burst": {"period": ("period_s", float), "burst": ("burst_s", float),
              "base": ("base", float)},
}
_COMMON: dict[str, tuple[str, type]] = {"rate": ("rate", float),
                                        "duration": ("duration_s", float)}


def parse_profile(spec: str, *, rate: float | None = None,
                  duration_s: float | None = None, default_rate: float = DEFAULT_RATE,
                  default_duration_s: float = DEFAULT_DURATION_S) -> RateProfile:
    """Parse ``KIND[:key=value,...]``, e.g. ``constant``, ``step:steps=5``,
    ``ramp:start=100``, ``burst:period=10,burst=2,base=0.2``.

    ``rate`` (readings/s) and ``duration_s`` may come from the spec (``rate=``,
    ``duration=``) or from the keyword arguments (command-line options), not both.
    Missing ones take ``default_rate`` and ``default_duration_s``; a soak's duration
    ``DEFAULT_SOAK_DURATION_S`` (an hour). Raises ValueError naming the bad part and what is
    accepted.
    """
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ValueError(f"profile {spec!r}: unknown kind {kind!r}; expected one of "
                         f"{', '.join(KINDS)}")
    allowed = {**_COMMON, **_PARAMS[kind]}
    fields: dict[str, float | int] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip().lower()
        if not eq:
            raise ValueError(f"profile {spec!r}: {item!r} is not key=value")
        if key not in allowed:
            raise ValueError(f"profile {spec!r}: {kind} takes no parameter {key!r}; "
                             f"accepted: {', '.join(sorted(allowed)) or 'none'}")
        field_name, typ = allowed[key]
        if field_name in fields:
            raise ValueError(f"profile {spec!r}: {key!r} given twice")
        try:
            fields[field_name] = typ(raw.strip())
        except ValueError:
            raise ValueError(f"profile {spec!r}: {key}={raw.strip()!r} is not "
                             f"{'an integer' if typ is int else 'a number'}") from None
    for name, value in (("rate", rate), ("duration_s", duration_s)):
        if value is None:
            continue
        if name in fields:
            raise ValueError(f"profile {spec!r}: {name} given both in the spec and as an option")
        fields[name] = value
    fields.setdefault("rate", default_rate)
    fields.setdefault("duration_s",
                      DEFAULT_SOAK_DURATION_S if kind == "soak" else default_duration_s)
    try:
        return RateProfile(kind=kind, **fields)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"profile {spec!r}: {exc}") from None
