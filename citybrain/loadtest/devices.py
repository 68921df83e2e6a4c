"""Which real devices a load test plays, and the readings it makes them send (pure, no I/O).

The hub resolves every reading against the city model, so the load uses real device ids of
``seeds.city.City(scale)``: a ``DevicePlan`` takes the first ``k`` devices of every system,
``k`` proportional to the system's size, so ``devices`` of them in all, spread over the
city like the real fleet (half parking bays, a third kitchens, ...). The hub must run with
``--scale`` at least ``plan.scale``.

Per district, ``DistrictDevices`` holds the ids and the *slots* of the district: one slot per
(device, numeric measurement of its kind), device after device. A stream of readings visits
the slots round-robin, so reading ``k`` of a district is slot ``k mod S`` in cycle
``k // S``, and a device's readings are numbered ``0, 1, 2, ...`` (its ``seq`` column):
``seq = cycle * m_device + position of the measurement``. Everything about reading ``k``
follows from ``k``: a frame of readings ``k0 .. k0 + n - 1`` is one compiled pass over
per-slot tables (``FrameBuilder``, ``kernels.fill_frame``), no Python per reading; its devices
are one or two runs of the district's devices (slots are device-major), so its device table
is a slice of the district's, encoded once.

Enumeration cost (2-core dev VM): ``City(270)`` (997,650 devices) counts its devices in 3 ms;
``City.devices()`` yields all of them in 2.1 s and their id strings alone take 0.8 s, so
each generator process builds the ids of its own districts only, once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

from citybrain.frame import DeviceStrings, FrameBody, StringSection
from citybrain.loadtest import kernels
from citybrain.payload import encode_data, record
from citybrain.topics import DeviceTopic
from firmware_sim.signals import Channel, channels
from seeds.city import KINDS, City, System, measurement_names

#: Quiet values per measurement: what a healthy city reports, so the load raises no kitchen
#: alarm (gas < 10 %LEL, fume < 1 mg/m³, chiller 0-10 °C) and no water or noise exceedance
#: flood. Values jitter by ``JITTER`` (relative) and are clamped to the catalogue range.
NOMINAL: dict[tuple[str, str], float] = {
    ("air", "pm2_5"): 35.0, ("air", "pm10"): 60.0, ("air", "so2"): 8.0, ("air", "no2"): 30.0,
    ("air", "co"): 0.8, ("air", "o3"): 80.0, ("air", "temp"): 20.0, ("air", "humidity"): 65.0,
    ("water", "ph"): 7.5, ("water", "do"): 8.0, ("water", "codmn"): 2.5, ("water", "nh3n"): 0.3,
    ("water", "tp"): 0.05, ("water", "turbidity"): 10.0, ("water", "water_temp"): 18.0,
    ("noise", "laeq"): 52.0, ("noise", "lmax"): 68.0,
    ("bay", "battery"): 3.3,
    ("lot", "entries"): 200.0, ("lot", "exits"): 180.0, ("lot", "free"): 120.0,
    ("kitchen", "cold_temp"): 4.0, ("kitchen", "prep_temp"): 20.0,
    ("kitchen", "humidity"): 55.0, ("kitchen", "gas"): 2.0, ("kitchen", "co"): 5.0,
    ("kitchen", "fume"): 0.4, ("kitchen", "uv_minutes"): 30.0,
}
JITTER = 0.05


def kind_channels(kind: str) -> tuple[Channel, ...]:
    """The numeric measurements of ``kind`` a load reading can be (catalogue float/int)."""
    return channels(kind)


@cache
def _name_code() -> dict[str, int]:
    return {n: i for i, n in enumerate(measurement_names())}


# -- the plan -------------------------------------------------------------------------------

def choose_scale(devices: int) -> float:
    """Smallest city scale, rounded up to 3 significant digits, with at least ``devices``."""
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    base = City(1.0).device_total
    s = _round_up(devices / base)
    while City(s).device_total < devices:
        s = _round_up(s * 1.001)
    return s


def _round_up(x: float, digits: int = 3) -> float:
    e = math.floor(math.log10(x)) - digits + 1
    return math.ceil(x / 10.0 ** e - 1e-9) * 10.0 ** e


def allocate(counts: Sequence[int], n: int) -> list[int]:
    """Split ``n`` over bins of capacity ``counts`` in proportion (largest remainders).

    Requires ``0 <= n <= sum(counts)``; every share is at most its bin's capacity.
    """
    total = sum(counts)
    if not 0 <= n <= total:
        raise ValueError(f"cannot take {n} of {total}")
    quota = [n * c / total for c in counts] if total else [0.0] * len(counts)
    out = [min(int(q), c) for q, c in zip(quota, counts, strict=True)]
    order = sorted(range(len(counts)), key=lambda i: (out[i] - quota[i], i))
    for i in order[: n - sum(out)]:
        out[i] += 1  # quota[i] > out[i] here, so out[i] <= counts[i] still holds
    return out


@dataclass(frozen=True)
class DevicePlan:
    """``per_system[i]`` devices (the first ones) of ``City(scale).systems[i]``. Small and
    picklable: processes rebuild ids from it (``district``)."""

    scale: float
    per_system: tuple[int, ...]

    @classmethod
    def build(cls, devices: int, scale: float | None = None) -> DevicePlan:
        """``devices`` devices from ``City(scale)`` (``None``: ``choose_scale(devices)``)."""
        s = choose_scale(devices) if scale is None else float(scale)
        city = City(s)
        if devices < 1 or devices > city.device_total:
            raise ValueError(f"devices must be in [1, {city.device_total}] at scale {s}, got "
                             f"{devices}: raise the scale or use fewer devices")
        counts = [sy.device_count(s) for sy in city.systems]
        return cls(s, tuple(allocate(counts, devices)))

    @cached_property
    def city(self) -> City:
        return City(self.scale)

    @property
    def devices(self) -> int:
        return sum(self.per_system)

    def districts(self) -> list[str]:
        """Districts with at least one device in the plan, in the city's order."""
        used = {s.district_code for s, k in zip(self.city.systems, self.per_system,
                                                strict=True) if k}
        return [d.code for d in self.city.districts if d.code in used]

    def systems_in(self, district: str) -> list[tuple[System, int]]:
        return [(s, k) for s, k in zip(self.city.systems, self.per_system, strict=True)
                if k and s.district_code == district]

    def weight(self, district: str, readings_per_message: int | None = None) -> int:
        """Readings of one round-robin cycle over the district: slots (frames mode) or
        readings per message summed over devices (messages mode)."""
        return sum(k * _per_device(s.kind, readings_per_message)
                   for s, k in self.systems_in(district))

    def district(self, code: str) -> DistrictDevices:
        """The district's devices and slots (builds its id strings: ~1 µs per device)."""
        ids: list[str] = []
        sys_ids: list[str] = []
        kinds: list[int] = []
        domains: list[str] = []
        for s, k in self.systems_in(code):
            ids.extend(s.device_id(n) for n in range(k))
            sys_ids.extend([s.system_id] * k)
            kinds.extend([KINDS.index(s.kind)] * k)
            domains.extend([s.domain] * k)
        return DistrictDevices(code, ids, sys_ids, domains, np.array(kinds, dtype=np.int64))

    def device_ids(self, district: str) -> list[str]:
        """Ids of the district's devices in plan order (the order of per-device counts)."""
        return [s.device_id(n) for s, k in self.systems_in(district) for n in range(k)]


def _per_device(kind: str, readings_per_message: int | None) -> int:
    m = len(kind_channels(kind))
    return m if readings_per_message is None else min(m, readings_per_message)


def assign(weights: dict[str, int], workers: int) -> list[list[str]]:
    """Districts to ``workers`` bins, heaviest first into the lightest bin (balanced load).

    Returns at most ``workers`` non-empty lists; each district in exactly one.
    """
    bins: list[list[str]] = [[] for _ in range(max(1, min(workers, len(weights))))]
    load = [0] * len(bins)
    for d in sorted(weights, key=lambda d: (-weights[d], d)):
        i = load.index(min(load))
        bins[i].append(d)
        load[i] += weights[d]
    return bins


# -- one district ---------------------------------------------------------------------------

@dataclass
class DistrictDevices:
    """A district's devices in plan order; ``kind`` is the index into ``seeds.city.KINDS``."""

    code: str
    ids: list[str]
    systems: list[str]
    domains: list[str]
    kind: np.ndarray  # int64[n_devices]

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def slots(self) -> Slots:
        return Slots.of(self.kind)

    @cached_property
    def frames(self) -> FrameBuilder:
        """This district's frame builder (``build_frame``), made on first use."""
        return FrameBuilder(self)

    def topics(self, prefix: str = "") -> list[str]:
        """Each device's data topic (validated by ``DeviceTopic``), with an optional root."""
        root = f"{prefix}/" if prefix else ""
        return [root + str(DeviceTopic(self.code, dom, sy, dev, "data"))
                for dev, sy, dom in zip(self.ids, self.systems, self.domains, strict=True)]


@dataclass(frozen=True)
class Slots:
    """One slot per (device, numeric measurement), device-major. Arrays of length ``S``
    unless noted."""

    device: np.ndarray    # int64: device index in the district
    position: np.ndarray  # int64: measurement position within the device's kind
    name: np.ndarray      # uint16: code in ``measurement_names()`` (the frame name table)
    nominal: np.ndarray   # float64
    lo: np.ndarray        # float64: catalogue min
    hi: np.ndarray        # float64: catalogue max
    scale: np.ndarray     # float64: 10**decimals the firmware reports (1: integers)
    per_device: np.ndarray  # int64[n_devices]: measurements m of each device

    @classmethod
    def of(cls, kind: np.ndarray) -> Slots:
        codes = _name_code()
        per_kind = [kind_channels(k) for k in KINDS]
        m = np.array([len(c) for c in per_kind], dtype=np.int64)[kind]
        device = np.repeat(np.arange(len(kind), dtype=np.int64), m)
        start = np.repeat(np.cumsum(m) - m, m)
        position = np.arange(len(device), dtype=np.int64) - start
        # Per (kind, position) tables, then one gather per column.
        width = max(len(c) for c in per_kind)
        tab = np.zeros((5, len(KINDS), width))
        tab[4] = 1.0  # scale of the padding (never gathered)
        for ki, (kname, chans) in enumerate(zip(KINDS, per_kind, strict=True)):
            for j, c in enumerate(chans):
                tab[:, ki, j] = (codes[c.name], NOMINAL.get((kname, c.name), (c.lo + c.hi) / 2),
                                 c.lo, c.hi, reported_scale(c))
        k = kind[device]
        return cls(device, position, tab[0, k, position].astype(np.uint16), tab[1, k, position],
                   tab[2, k, position], tab[3, k, position], tab[4, k, position], m)

    def __len__(self) -> int:
        return int(self.device.shape[0])

    def published_per_device(self, n: int) -> np.ndarray:
        """Readings per device after the first ``n`` readings of the round-robin stream."""
        s = len(self)
        cycles, rest = divmod(n, s)
        first = np.cumsum(self.per_device) - self.per_device
        return cycles * self.per_device + np.clip(rest - first, 0, self.per_device)

    def readings_per_device(self, k0: int, n: int) -> np.ndarray:
        """Readings per device among readings ``k0 .. k0 + n - 1`` of the stream (int64)."""
        return self.published_per_device(k0 + n) - self.published_per_device(k0)


def reported_scale(c: Channel) -> float:
    """``10**decimals`` of what the firmware reports for ``c`` (``Channel.clean``: 1 for
    integers): a load reading is rounded as a device's is, e.g. PM2.5 to 0.1 µg/m³."""
    return 1.0 if c.is_int else 10.0 ** c.decimals


def jittered(nominal: np.ndarray, lo: np.ndarray, hi: np.ndarray, scale: np.ndarray,
             u: np.ndarray) -> np.ndarray:
    """``nominal * (1 ± JITTER)`` by uniforms ``u`` in [0, 1), rounded to the reported
    precision (``reported_scale``) and clamped to ``[lo, hi]``. Always inside the catalogue
    range (the edge and hub accept it)."""
    v = nominal * (1.0 + JITTER * (2.0 * u - 1.0))
    v = np.rint(v * scale) / scale
    return np.clip(v, lo, hi)


# -- frames ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameBatch:
    """One encoded frame and what the generator needs to account for it."""

    payload: bytes
    device: np.ndarray   # int64[n]: device index in the district of each reading
    ts_ns: np.ndarray    # int64[n]: intended time of each reading


def build_frame(district: DistrictDevices, k0: int, n: int, frame_seq: int,
                ts_ns: np.ndarray, rng: np.random.Generator, created_ns: int) -> FrameBatch:
    """Frame of the district's readings ``k0 .. k0 + n - 1`` (see the module doc), stamped
    ``ts_ns`` (int64[n], the intended send times), zstd level 1 like an edge's.

    The generator calls ``district.frames.build`` (the payload alone); this also returns
    each reading's device, for callers that check frames reading by reading."""
    payload = district.frames.build(k0, n, frame_seq, ts_ns, rng, created_ns)
    sl = district.slots
    dev = sl.device[np.arange(k0, k0 + n, dtype=np.int64) % len(sl)]
    return FrameBatch(payload, dev, np.asarray(ts_ns))


@dataclass(frozen=True)
class FrameSpan:
    """Which devices a frame names, by *rank* (index among the district's devices that have
    slots, in plan order): ``ranges`` of ranks in table order, and how a reading's rank
    becomes its index in the frame's device table: ``rank - (lo_shift if rank < split else
    hi_shift)``. The table is ascending, as ``np.unique`` of the readings' devices gives it."""

    ranges: tuple[tuple[int, int], ...]
    split: int
    lo_shift: int
    hi_shift: int


def frame_span(slot_rank: np.ndarray, n_ranks: int, k0: int, n: int) -> FrameSpan:
    """The devices of readings ``k0 .. k0 + n - 1`` of a round-robin stream over slots whose
    device ranks are ``slot_rank`` (non-decreasing, from 0 to ``n_ranks - 1``, every rank
    present). Slots are device-major, so the readings cover one run of slots, or two when
    they wrap past the last slot: one or two runs of ranks, no sort needed (none for
    ``n = 0``)."""
    s = len(slot_rank)
    full = FrameSpan(((0, n_ranks),), n_ranks, 0, 0)
    if n >= s:
        return full
    if n <= 0:
        return FrameSpan((), n_ranks, 0, 0)
    s0 = k0 % s
    if s0 + n <= s:
        a, b = int(slot_rank[s0]), int(slot_rank[s0 + n - 1]) + 1
        return FrameSpan(((a, b),), n_ranks, a, 0)
    # Wrapped: ranks a .. n_ranks - 1 (to the last slot) and 0 .. b - 1 (from the first).
    a, b = int(slot_rank[s0]), int(slot_rank[s0 + n - s - 1]) + 1
    if b >= a:
        return full
    return FrameSpan(((0, b), (a, n_ranks)), b, 0, a - b)


class FrameBuilder:
    """Builds one district's load frames with what repeats from frame to frame done once.

    Per slot, the columns a reading needs (device rank, seq step, name code, value model)
    are gathered once; the device table's strings are encoded once and each frame's string
    section is sliced from them (``frame.DeviceStrings``), the whole district's kept, so a
    frame that covers the whole district -- the usual case when frames are longer than a
    cycle of slots -- costs no string work at all; the last few frame bodies (with their
    sections) and the uniforms are reused buffers; one compiled pass
    (``kernels.fill_frame``) writes the columns in place. The bytes are those of
    ``encode_frame`` with the table of the devices present (ascending) and every
    measurement name.
    """

    #: Frame bodies kept, by (readings, device ranges). Few: with a million devices a
    #: body is ~0.4 MB and a frame's ranges rarely come back before the next cycle.
    KEEP_BODIES = 4

    def __init__(self, district: DistrictDevices) -> None:
        sl = district.slots
        if len(sl) == 0:
            raise ValueError(f"district {district.code} has no numeric measurement to send")
        has = sl.per_device > 0
        # A device of a kind with no numeric measurement has no slot: it never appears in a
        # frame, so the ranks (frame-table order) skip it.
        ranked = np.flatnonzero(has).tolist()
        self.rank = np.ascontiguousarray((np.cumsum(has) - 1)[sl.device], dtype=np.int64)
        self.n_ranks = len(ranked)
        self.per_slot = np.ascontiguousarray(sl.per_device[sl.device], dtype=np.int64)
        self.position = np.ascontiguousarray(sl.position, dtype=np.int64)
        self.name = np.ascontiguousarray(sl.name, dtype=np.uint16)
        self.nominal = np.ascontiguousarray(sl.nominal, dtype=np.float64)
        self.lo = np.ascontiguousarray(sl.lo, dtype=np.float64)
        self.hi = np.ascontiguousarray(sl.hi, dtype=np.float64)
        self.scale = np.ascontiguousarray(sl.scale, dtype=np.float64)
        self.strings = DeviceStrings(district.code, [district.ids[i] for i in ranked],
                                     [district.systems[i] for i in ranked],
                                     list(measurement_names()))
        self._everyone = ((0, self.n_ranks),)
        self._everyone_section = self.strings.section(self._everyone)
        self._bodies: dict[tuple[int, tuple[tuple[int, int], ...]], FrameBody] = {}
        self._u = np.empty(0)

    def build(self, k0: int, n: int, frame_seq: int, ts_ns: np.ndarray,
              rng: np.random.Generator, created_ns: int) -> bytes:
        """The frame of readings ``k0 .. k0 + n - 1`` stamped ``ts_ns`` (int64[n]): ``n``
        uniforms drawn from ``rng`` (as ``rng.random(n)``) make the values. Raises
        OverflowError once a device's seq passes the frame's u32 column."""
        ts = np.ascontiguousarray(ts_ns, dtype=np.int64)
        if k0 < 0 or n < 0 or ts.shape != (n,):
            raise ValueError(f"need k0 >= 0, n >= 0 and n timestamps; got k0={k0}, n={n}, "
                             f"timestamps of shape {ts.shape}")
        span = frame_span(self.rank, self.n_ranks, k0, n)
        body = self._body(n, span.ranges)
        if len(self._u) < n:
            self._u = np.empty(n)
        u = self._u[:n]
        rng.random(out=u)
        top = kernels.fill_frame(k0, self.rank, self.position, self.per_slot, self.name,
                                 self.nominal, self.lo, self.hi, self.scale, JITTER,
                                 span.split, span.lo_shift, span.hi_shift, u, ts, body.ts_ns,
                                 body.value, body.seq, body.device, body.name)
        if top >= 1 << 32:
            raise OverflowError("a device's reading seq passed 2**32 (the frame's u32 column)")
        return body.seal(frame_seq, created_ns, compress=True, level=1)

    def _body(self, n: int, ranges: tuple[tuple[int, int], ...]) -> FrameBody:
        """A body for ``n`` readings naming ``ranges``: the kept one, or a new one."""
        body = self._bodies.get((n, ranges))
        if body is None:
            if len(self._bodies) >= self.KEEP_BODIES:
                self._bodies.clear()
            body = self._bodies[n, ranges] = FrameBody(n, self._section(ranges))
        return body

    def _section(self, ranges: tuple[tuple[int, int], ...]) -> StringSection:
        if ranges == self._everyone:
            return self._everyone_section
        return self.strings.section(ranges)


# -- messages -------------------------------------------------------------------------------

@dataclass(frozen=True)
class MessageTable:
    """Messages mode: what each device of a district sends, ``readings[d]`` per message.

    Per kind (row = index into ``KINDS``), padded to ``width`` columns: the catalogue names
    and units of the readings a message carries, and the value model, so a whole batch of
    messages gets its values from one vectorised ``jittered`` call.
    """

    readings: np.ndarray  # int64[n_devices]
    kind: np.ndarray      # int64[n_devices]
    names: list[list[tuple[str, str]]]  # per kind: (name, unit) of the readings sent
    is_int: list[list[bool]]            # per kind
    nominal: np.ndarray   # float64[n_kinds, width]
    lo: np.ndarray
    hi: np.ndarray
    scale: np.ndarray     # float64[n_kinds, width]: ``reported_scale``

    @classmethod
    def of(cls, kind: np.ndarray, readings_per_message: int) -> MessageTable:
        chans = [kind_channels(k)[:readings_per_message] for k in KINDS]
        width = max(len(c) for c in chans)
        tab = np.zeros((4, len(KINDS), width))
        tab[3] = 1.0  # scale of the padding: computed for whole rows, never sent
        for ki, (kn, cs) in enumerate(zip(KINDS, chans, strict=True)):
            for j, c in enumerate(cs):
                tab[:, ki, j] = (NOMINAL.get((kn, c.name), (c.lo + c.hi) / 2), c.lo, c.hi,
                                 reported_scale(c))
        r = np.array([len(c) for c in chans], dtype=np.int64)[kind]
        return cls(r, kind, [[(c.name, c.unit) for c in cs] for cs in chans],
                   [[c.is_int for c in cs] for cs in chans], tab[0], tab[1], tab[2],
                   tab[3])

    @property
    def width(self) -> int:
        return int(self.nominal.shape[1])

    def values(self, dev: np.ndarray, u: np.ndarray) -> list[list[float]]:
        """Values of one message per ``dev[i]`` from uniforms ``u`` (float64[n, width]):
        rows padded to ``width`` (only the first ``readings[dev[i]]`` are sent)."""
        k = self.kind[dev]
        v = jittered(self.nominal[k], self.lo[k], self.hi[k], self.scale[k], u)
        out: list[list[float]] = v.tolist()
        return out


def encode_message(device: str, kind: int, table: MessageTable, seq: int, t_s: float,
                   values: list[float]) -> bytes:
    """citybrain's JSON data message for one device: its kind's first readings with
    ``values`` (a row of ``MessageTable.values``); ints as JSON integers."""
    recs = [record(n, unit, int(x) if is_int else x)
            for (n, unit), x, is_int in zip(table.names[kind], values, table.is_int[kind],
                                            strict=False)]
    return encode_data(device, seq, t_s, recs)
