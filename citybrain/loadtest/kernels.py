"""numba loops of the load generator's hot path: one pass per frame instead of a dozen numpy
temporaries, and one pass per publish for the tallies.

Every kernel here reproduces a numpy reference *bit for bit* (no fastmath: each operation in
the reference's order, IEEE rounding, numpy's ``clip``/``maximum`` tie rules), and
``tests/loadtest/test_fastpath.py`` holds them to it:

* ``item_times`` -- ``Stream.intended`` via ``RateProfile.time_of`` (``profiles.py``), and
  the ns timestamps ``start_ns + rint(t * 1e9)`` the generator stamps readings with;
* ``fill_frame`` -- the columns of a load frame (``devices.build_frame``'s original numpy
  code, ``jittered`` included);
* ``tally`` -- ``_Tally.published`` + ``report.hdr_record_many``: readings per second and
  the publish lag of each reading in HDR buckets.

Kernels compile on first call and are cached on disk next to this module (``cache=True``,
as the hub's); ``warm_up`` compiles (or loads) them all before a worker starts its clock.
Callers validate shapes and dtypes: the kernels do not bounds-check. ``error_model="numpy"``:
a float division by zero is inf/NaN as in numpy (the references never divide by zero where
it matters) instead of a per-division test for ZeroDivisionError.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_INT64_MIN = np.iinfo(np.int64).min


@njit(cache=True, nogil=True, error_model="numpy")
def _clip(x: float, lo: float, hi: float) -> float:
    # numpy's clip loop for floats: MIN(MAX(x, lo), hi) with MAX(a, b) = a > b ? a : b (NaN
    # kept), so signed zeros come out as np.clip gives them.
    if x != x:
        return x
    y = x if x > lo else lo
    return y if y < hi else hi


@njit(cache=True, nogil=True, error_model="numpy")
def _time_of(x: float, t0: float, length: float, rate0: float, a: float, cum0: float,
             total: float) -> float:
    """``RateProfile.time_of`` of one value in the segment starting at ``t0`` with readings
    ``cum0`` by then, ``length`` seconds long, rate ``rate0`` at its start and slope ``a``
    (``(r1 - r0) / length``); ``total``: the profile's readings."""
    d = x - cum0
    m = d if d >= 0.0 or d != d else 0.0  # np.maximum(x - cum, 0.0)
    q = rate0 * rate0 + 2.0 * a * m
    disc = math.sqrt(q if q >= 0.0 or q != q else 0.0)
    denom = rate0 + disc
    dt = 2.0 * m / denom if denom > 0.0 else 0.0
    t = t0 + _clip(dt, 0.0, length)
    if x > total:
        return math.inf
    if x <= 0.0:
        return 0.0
    return t


@njit(cache=True, nogil=True, error_model="numpy")
def item_times(j0: int, ends: np.ndarray, share: float, t0: np.ndarray, t1: np.ndarray,
               r0: np.ndarray, r1: np.ndarray, cum: np.ndarray, start_ns: int,
               out_s: np.ndarray, out_ns: np.ndarray) -> None:
    """Intended times of items ``j0 .. j0 + len(out_s) - 1`` of a round-robin stream.

    ``ends``: int64 cumulative readings of one cycle's items (``Stream.ends``); ``share``:
    the stream's fraction of the profile; ``t0 .. cum``: the profile's segments
    (``RateProfile.segment_arrays``). Writes seconds since the start into ``out_s``
    (float64) and ``start_ns + rint(t * 1e9)`` into ``out_ns`` (int64; ``INT64_MIN`` for an
    item the profile never reaches, whose time is ``inf``).
    """
    d = ends.shape[0]
    w = ends[d - 1]
    cyc = j0 // d
    pos = j0 - cyc * d
    last_seg = t0.shape[0] - 1
    total = cum[cum.shape[0] - 1]
    seg = -1
    seg_end = -math.inf  # cum[seg + 1]: items past it belong to a later segment
    length = rate0 = a = 0.0
    for i in range(out_s.shape[0]):
        x = (cyc * w + ends[pos]) / share
        # np.searchsorted(cum[1:], x, "left") clipped to the last segment; items only move
        # forward in time, so the segment only moves forward too. Its constants are the
        # same numbers time_of computes per value, computed once.
        if seg < 0 or (x > seg_end and seg < last_seg):
            seg = max(seg, 0)
            while seg < last_seg and cum[seg + 1] < x:
                seg += 1
            seg_end = cum[seg + 1]
            length = t1[seg] - t0[seg]
            rate0 = r0[seg]
            a = (r1[seg] - rate0) / length
        t = _time_of(x, t0[seg], length, rate0, a, cum[seg], total)
        out_s[i] = t
        out_ns[i] = start_ns + np.int64(np.rint(t * 1e9)) if math.isfinite(t) else _INT64_MIN
        pos += 1
        if pos == d:
            pos = 0
            cyc += 1


@njit(cache=True, nogil=True, error_model="numpy")
def fill_frame(k0: int, rank: np.ndarray, position: np.ndarray, per_slot: np.ndarray,
               name: np.ndarray, nominal: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               scale: np.ndarray, jitter: float, split: int, lo_shift: int, hi_shift: int,
               u: np.ndarray, ts_in: np.ndarray, ts_out: np.ndarray, value_out: np.ndarray,
               seq_out: np.ndarray, device_out: np.ndarray, name_out: np.ndarray) -> int:
    """Columns of a district's readings ``k0 .. k0 + len(u) - 1`` (``devices`` module doc).

    Per slot (length ``S``): ``rank`` of its device, measurement ``position``, ``per_slot``
    measurements of its device, ``name`` code and the value model (``nominal``, ``lo``,
    ``hi``, ``scale``; ``jitter`` relative, as ``devices.jittered``). A reading's device
    column is ``rank - (lo_shift if rank < split else hi_shift)`` (its index in the frame's
    device table). ``u``: uniforms in [0, 1), one per reading; ``ts_in``: timestamps,
    copied. Returns the largest seq (int64) so the caller can refuse one past the u32
    column.
    """
    s = rank.shape[0]
    cycle = k0 // s
    slot = k0 - cycle * s
    top = 0
    for i in range(u.shape[0]):
        q = cycle * per_slot[slot] + position[slot]
        top = max(top, q)
        seq_out[i] = q
        # devices.jittered, operation for operation.
        v = nominal[slot] * (1.0 + jitter * (2.0 * u[i] - 1.0))
        v = np.rint(v * scale[slot]) / scale[slot]  # the precision the firmware reports
        value_out[i] = _clip(v, lo[slot], hi[slot])
        r = rank[slot]
        device_out[i] = r - (lo_shift if r < split else hi_shift)
        name_out[i] = name[slot]
        ts_out[i] = ts_in[i]
        slot += 1
        if slot == s:
            slot = 0
            cycle += 1
    return top


@njit(cache=True, nogil=True, error_model="numpy")
def _second(t: float, last: int) -> int:
    # np.clip(t, 0, last).astype(np.int64); NaN (numpy: a negative index bincount refuses)
    # counts at 0 here rather than writing out of bounds.
    return int(_clip(t, 0.0, float(last))) if t == t else 0


@njit(cache=True, nogil=True, error_model="numpy")
def _lag_bucket(iv: int, sub_mask: int, half_magnitude: int, unit_magnitude: int,
                sub_count: int) -> tuple[int, int, int]:
    """HDR bucket of ``iv >= 0``: ``(index, lowest value, lowest value of the next)``, as
    ``report.lowest_equivalent``."""
    bits = math.frexp(float(iv | sub_mask))[1]  # bit length (exact below 2**53)
    shift = max(bits - (half_magnitude + 1), unit_magnitude)
    sub = iv >> shift
    return (shift - unit_magnitude) * sub_count + sub, sub << shift, (sub + 1) << shift


@njit(cache=True, nogil=True, error_model="numpy")
def tally(intended: np.ndarray, sent: np.ndarray, weights: np.ndarray,
          by_intended: np.ndarray, by_sent: np.ndarray, lag_counts: np.ndarray,
          sub_mask: int, half_magnitude: int, unit_magnitude: int, sub_count: int,
          highest: int) -> int:
    """Account items intended at ``intended`` and sent at ``sent`` (seconds since the start;
    ``sent`` of length 1 applies to all), carrying ``weights`` readings each (length 0: one).

    Adds readings to ``by_intended`` / ``by_sent`` (per second, clamped to the last) and the
    publish lag ``max(sent - intended, 0)`` in microseconds to ``lag_counts``, indexed by
    HDR bucket: ``b * sub_count + (v >> shift)`` with ``shift = b + unit_magnitude`` -- the
    bucket ``report.hdr_record_many`` puts ``v`` in (values truncated to integers, clamped
    to ``[0, highest]``). Returns the readings accounted.

    Items in time order (a frame's) fall in runs of the same second and the same bucket:
    counts are added once per run, and a value inside the current bucket skips the bucket
    arithmetic.
    """
    last = by_intended.shape[0] - 1
    one_sent = sent.shape[0] == 1
    unweighted = weights.shape[0] == 0
    total = 0
    sec_i, run_i = 0, 0  # by_intended: current second and its pending readings
    sec_s, run_s = 0, 0
    idx, b_lo, b_hi, run_b = 0, 0, -1, 0  # lag: current bucket, its values [b_lo, b_hi)
    for i in range(intended.shape[0]):
        w = 1 if unweighted else weights[i]
        s = sent[0] if one_sent else sent[i]
        x = intended[i]
        k = _second(x, last)
        if k != sec_i:
            by_intended[sec_i] += run_i
            sec_i, run_i = k, 0
        run_i += w
        k = _second(s, last)
        if k != sec_s:
            by_sent[sec_s] += run_s
            sec_s, run_s = k, 0
        run_s += w
        lag = s - x
        lag = lag if lag >= 0.0 or lag != lag else 0.0  # np.maximum(sent - intended, 0.0)
        us = lag * 1e6
        if us != us:
            us = 0.0  # nan_to_num
        iv = int(_clip(us, 0.0, float(highest)))
        if not b_lo <= iv < b_hi:
            lag_counts[idx] += run_b
            idx, b_lo, b_hi = _lag_bucket(iv, sub_mask, half_magnitude, unit_magnitude,
                                          sub_count)
            run_b = 0
        run_b += w
        total += w
    by_intended[sec_i] += run_i
    by_sent[sec_s] += run_s
    lag_counts[idx] += run_b
    return total


def warm_up() -> None:
    """Compile (or load from the disk cache) every kernel with the argument types the
    generator passes, so the first frame does not stall behind the compiler."""
    f8, i8 = np.zeros(2), np.zeros(2, dtype=np.int64)
    seg = np.array([0.0]), np.array([1.0]), np.array([1.0]), np.array([1.0])
    item_times(0, np.array([1, 2], dtype=np.int64), 1.0, *seg, np.array([0.0, 1.0]), 0, f8, i8)
    fill_frame(0, i8, i8, np.ones(2, dtype=np.int64), np.zeros(2, dtype=np.uint16), f8, f8,
               np.ones(2), np.zeros(2, dtype=bool), 0.05, 2, 0, 0, f8, i8,
               np.zeros(2, dtype="<i8"), np.zeros(2, dtype="<f8"), np.zeros(2, dtype="<u4"),
               np.zeros(2, dtype="<u4"), np.zeros(2, dtype="<u2"))
    counts = np.zeros(4096, dtype=np.int64)
    for weights in (np.zeros(0, dtype=np.int64), np.ones(2, dtype=np.int64)):
        tally(f8, f8, weights, i8.copy(), i8.copy(), counts, 2047, 10, 0, 2048, 3_600_000_000)
