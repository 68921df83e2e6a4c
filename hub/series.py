"""Dense series ids for (device, measurement), and their escaped line-protocol prefixes.

The hub aggregates into arrays indexed by series id, so ids must be small dense integers.
Each device gets a block of consecutive ids, one per measurement its kind reports (from the
catalogue): ``series = base[device] + local_code[kind, measurement]``. Resolving a frame is a
dictionary lookup per *device in the frame* plus numpy fancy indexing per reading.

Each series' escaped line-protocol prefix is spliced at render time from pieces escaped once
(``hub.lineproto.SplicedPrefixes``): two per device, written when it is first seen, and three
per (kind, measurement) per table:

* raw:        ``raw_{kind},device=…,district=…,system=… {measurement}=``
* aggregates: ``agg_{label},device=…,district=…,kind=…,m={measurement},system=… `` for
  each resolution label (``10s``, ``1m``, ``1h``)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat

import numpy as np
from numba import njit

from citybrain.frame import Frame
from hub.arrays import Column
from hub.kernel_config import CACHE
from hub.lineproto import (
    LineProtocolError,
    PrefixTable,
    SplicedPrefixes,
    escape_key,
    escape_tag_value,
)
from seeds.city import KINDS, City, catalogue_by_kind, measurement_names

GLOBAL_NAMES = measurement_names()
GLOBAL_CODE = {name: i for i, name in enumerate(GLOBAL_NAMES)}
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
KIND_NAMES: dict[str, tuple[str, ...]] = {k: tuple(catalogue_by_kind()[k]) for k in KINDS}


#: Largest state capacity sized up front from the city model (``presized``), in series: 8.4M
#: (10 s ring ~3.4 GB and spike records ~2.4 GB of address space, resident only where used).
PRESIZE_MAX = 1 << 23


def city_series(city: City, keep: frozenset[str] | None = None) -> int:
    """Series the whole city can have: every device's catalogue measurements (only those
    named in ``keep``, if given). A registry never holds more."""
    total = 0
    for system in city.systems:
        names = KIND_NAMES[system.kind]
        m = len(names) if keep is None else sum(1 for n in names if n in keep)
        total += system.device_count(city.scale) * m
    return total


def presized(expected: int, floor: int = 1024) -> int:
    """Initial capacity for state indexed by series: ``expected`` clamped to ``[floor,
    PRESIZE_MAX]``. State allocated zeroed at its final size costs address space, not RAM:
    pages nobody writes are never resident. Growing by doubling instead copies every record
    and holds old and new at once: at a million devices the ring and the spike records went
    through 4.2M -> 8.4M with ~2.2 GB of both alive, and a second or more of copying while
    frames waited (measured, bench/README.md)."""
    return max(floor, min(int(expected), PRESIZE_MAX))


def _kind_lut() -> np.ndarray:
    """``lut[kind, global name code]`` = the name's code within the kind, or -1."""
    lut = np.full((len(KINDS), len(GLOBAL_NAMES)), -1, dtype=np.int64)
    for k, names in KIND_NAMES.items():
        for local, name in enumerate(names):
            lut[KIND_CODE[k], GLOBAL_CODE[name]] = local
    return lut


KIND_LUT = _kind_lut()


@njit(cache=CACHE)
def _resolve_readings(frame_gid, gid_base, gid_kind, name_code, device, name, lut, series_out,
                      device_out):
    """Series and device id of each reading, -1 where it cannot be placed; returns
    (readings placed, whether an unknown device caused a -1). ``frame_gid[d]`` is the gid
    of the frame's device ``d`` (< 0: unknown), ``gid_base``/``gid_kind`` its first series
    id and kind code;
    ``name_code[j]`` the global code of the frame's name ``j`` (< 0: unknown measurement);
    ``lut[kind, code] < 0``: a measurement its kind lacks. ``device``/``name`` index the
    frame's tables (checked by the decoder)."""
    placed = 0
    unknown_device = False
    for i in range(device.shape[0]):
        d = device[i]
        gid = frame_gid[d]
        g = name_code[name[i]]
        local = -1
        if gid < 0:
            unknown_device = True
        elif g >= 0:
            local = lut[gid_kind[gid], g]
        if local >= 0:
            series_out[i] = gid_base[gid] + local
            device_out[i] = gid
            placed += 1
        else:
            series_out[i] = -1
            device_out[i] = -1
    return placed, unknown_device


@dataclass(frozen=True, slots=True)
class Resolved:
    """Series and device ids per reading; ``-1`` where a reading cannot be placed."""

    series: np.ndarray  # int64[n]
    device: np.ndarray  # int64[n], dense device id (registration order)
    invalid: int  # readings with series == -1
    reason: str  # why, when invalid > 0 (first cause seen)


@lru_cache(maxsize=65536)
def _tag(value: str) -> bytes:
    """An escaped tag value as bytes (validated; LineProtocolError if it cannot be one)."""
    return escape_tag_value(value).encode("utf-8")


@lru_cache(maxsize=256)
def _key(name: str) -> bytes:
    return escape_key(name).encode("utf-8")


#: Series keys: one per (kind, measurement of the kind), kinds in ``KINDS`` order. A series'
#: key says what it measures; its device says where (``SeriesRegistry``).
KEY_BASE = {k: b for k, b in zip(
    KINDS, itertools.accumulate((len(KIND_NAMES[k]) for k in KINDS), initial=0),
    strict=False)}
KEY_KIND = tuple(k for k in KINDS for _ in KIND_NAMES[k])
KEY_NAME = tuple(name for k in KINDS for name in KIND_NAMES[k])
#: per key: ``KIND_CODE`` of its kind and ``GLOBAL_CODE`` of its measurement
KEY_KIND_CODE = np.array([KIND_CODE[k] for k in KEY_KIND], dtype=np.int64)
KEY_GLOBAL_CODE = np.array([GLOBAL_CODE[n] for n in KEY_NAME], dtype=np.int64)


def _fixed_pieces(table: str) -> PrefixTable:
    """The three fixed pieces of every key's prefix in one table ("" raw, else an aggregate
    label), around the device's two (``device=…,district=…`` and ``,system=…``): the bytes
    ``series_prefix`` builds, tags sorted device, district, kind, m, system."""
    pieces: list[bytes] = []
    for kind, name in zip(KEY_KIND, KEY_NAME, strict=True):
        if table == "":
            pieces += [b"raw_%s," % _tag(kind), b"", b" %s=" % _key(name)]
        else:
            pieces += [b"agg_%s," % _tag(table), b",kind=%s,m=%s" % (_tag(kind), _tag(name)),
                       b" "]
    fixed = PrefixTable()
    fixed.add_many(pieces, validate=False)
    return fixed


@dataclass(frozen=True, slots=True)
class SeriesLabels:
    """What a series is, as its line-protocol tags name it."""

    device: str
    district: str
    system: str
    kind: str
    name: str


class SeriesRegistry:
    """Owned by the hub's processing thread.

    Per series it keeps 6 bytes (its device's gid and its key); per device, its id, system and
    the two escaped pieces of its prefixes. Line-protocol prefixes are spliced from those at
    render time (``SplicedPrefixes``), not stored per series: a city of a million devices
    has ~3.7M series, and whole prefixes cost ~0.7 KB per series.
    """

    def __init__(self, city: City, agg_labels: tuple[str, ...] = ("10s",)) -> None:
        self.city = city
        self.agg_labels = agg_labels
        # sized for the city up front: grown by doubling, a million devices' columns ended
        # at 8.4M series and 2M devices, every entry written
        n_s, n_d = presized(city_series(city)), presized(city.device_total)
        self._series_gid = Column(np.int32, 0, n_s)  # series id -> device gid
        self._series_key = Column(np.int16, 0, n_s)  # series id -> key (KEY_KIND, KEY_NAME)
        #: two escaped pieces per device gid: ``device=…,district=…`` and ``,system=…``
        self._device_parts = PrefixTable()
        self.raw_prefixes = self._spliced("")
        self.agg_prefixes = {label: self._spliced(label) for label in agg_labels}
        #: registered while resolving a frame, not yet in the columns: (gid, key base,
        #: measurements), kind code, and the device's two pieces
        self._new_series: list[tuple[int, int, int]] = []
        self._new_devices: list[tuple[int, int, int]] = []  # (base, kind, system index)
        self._new_parts: list[bytes] = []
        self._n_series = 0
        self._devices: dict[str, int] = {}  # device id -> device gid
        self._device_base = Column(np.int64, 0, n_d)  # device gid -> its first series id
        self._device_kind = Column(np.int8, 0, n_d)  # device gid -> KIND_CODE
        self._device_system = Column(np.int16, 0, n_d)  # device gid -> city.systems index
        self.system_index = {sys.system_id: i for i, sys in enumerate(city.systems)}
        self.device_ids: list[str] = []  # device gid -> device id

    def _spliced(self, table: str) -> SplicedPrefixes:
        return SplicedPrefixes(_fixed_pieces(table), self._device_parts,
                               lambda: self._series_gid.values,
                               lambda: self._series_key.values)

    @property
    def n_series(self) -> int:
        return self._n_series

    @property
    def n_devices(self) -> int:
        return len(self._devices)

    @property
    def series_gid(self) -> np.ndarray:
        """int32[n_series]: each series' device gid (a view: re-read after resolving)."""
        return self._series_gid.values

    @property
    def series_key(self) -> np.ndarray:
        """int16[n_series]: each series' key, an index into ``KEY_KIND``/``KEY_NAME`` (a
        view: re-read after resolving)."""
        return self._series_key.values

    @property
    def device_system(self) -> np.ndarray:
        """int16[n_devices]: each device's index into ``city.systems`` (a view: re-read
        after resolving)."""
        return self._device_system.values

    def labels(self, series: int) -> SeriesLabels:
        """Device, district, system, kind and measurement of a registered series."""
        if not 0 <= series < self._n_series:
            raise IndexError(f"series {series} out of range 0..{self._n_series - 1}")
        gid = int(self._series_gid.values[series])
        key = int(self._series_key.values[series])
        system = self.city.systems[self.device_system[gid]]
        return SeriesLabels(self.device_ids[gid], system.district_code, system.system_id,
                            KEY_KIND[key], KEY_NAME[key])

    def device_gid(self, device: str) -> int | None:
        """Dense id of a registered device, None if it has not been seen yet."""
        return self._devices.get(device)

    def _register(self, device: str, system_id: str, district: str) -> int:
        """Allocate the device's block of series ids; its gid, or -1 if it is not valid."""
        invalid = -1
        try:
            system = self.city.system(system_id)
        except KeyError:
            return invalid
        if system.district_code != district:
            return invalid
        kind = system.kind
        try:
            # the device's pieces of every prefix (tags sorted: device, district, kind, m,
            # system), escaped once: registration is on the path of a device's first
            # frame, and a city has a million devices (tests check they splice into what
            # series_prefix() builds)
            head = b"device=%s,district=%s" % (_tag(device), _tag(district))
            tail = b",system=%s" % _tag(system_id)
        except LineProtocolError:
            return invalid
        m = len(KIND_NAMES[kind])
        base = self._n_series
        gid = len(self.device_ids)
        self._new_series.append((gid, KEY_BASE[kind], m))
        self._new_parts += (head, tail)
        self._n_series += m
        self._devices[device] = gid
        self._new_devices.append((base, KIND_CODE[kind], self.system_index[system_id]))
        self.device_ids.append(device)
        return gid

    def _flush_new_devices(self) -> None:
        """Append what ``_register`` queued to the columns, in one copy each, before any
        kernel or renderer reads them."""
        bases, kinds, systems = zip(*self._new_devices, strict=True)
        self._device_base.extend(list(bases))
        self._device_kind.extend(list(kinds))
        self._device_system.extend(list(systems))
        gid, key0, m = (np.array(c, dtype=np.int64) for c in zip(*self._new_series,
                                                                  strict=True))
        # series j of the new block belongs to device gid[d] and has key key0[d] + (its
        # position within the device): a repeat and a ramp, no Python per series
        within = np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
        self._series_gid.extend(np.repeat(gid, m))
        self._series_key.extend(np.repeat(key0, m) + within)
        # built from escaped parts only: no need to re-validate every byte
        self._device_parts.add_many(self._new_parts, validate=False)
        self._new_devices.clear()
        self._new_series.clear()
        self._new_parts.clear()

    def resolve(self, frame: Frame) -> Resolved:
        """Series id of every reading in ``frame``: a lookup per device in the frame, then one
        compiled pass over the readings."""
        get = self._devices.get
        devices = frame.devices
        # map/fromiter: the per-device lookups run in C, no Python frame per device
        gids = np.fromiter(map(get, devices, repeat(-1)), dtype=np.int64, count=len(devices))
        if len(gids) and int(np.minimum.reduce(gids)) < 0:
            # new (or invalid) devices: register them, in frame order
            gids = np.array([
                g if g >= 0 else get(dev, -1) if dev in self._devices  # listed twice
                else self._register(dev, sys_id, frame.district)
                for g, dev, sys_id in zip(gids.tolist(), devices, frame.systems, strict=True)],
                dtype=np.int64)
            if self._new_devices:
                self._flush_new_devices()
        gcode = np.fromiter(map(GLOBAL_CODE.get, frame.names, repeat(-1)), dtype=np.int64,
                            count=len(frame.names))
        n = len(frame.device)
        series = np.empty(n, dtype=np.int64)
        device = np.empty(n, dtype=np.int64)
        placed, unknown_device = _resolve_readings(
            gids, self._device_base.values, self._device_kind.values,
            gcode, frame.device, frame.name, KIND_LUT, series, device)
        invalid = n - int(placed)
        reason = ""
        if invalid:
            reason = "unknown_device" if unknown_device else "unknown_measurement"
        return Resolved(series, device, invalid, reason)
