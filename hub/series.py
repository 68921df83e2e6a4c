"""Dense series ids for (device, measurement), and their escaped line-protocol prefixes.

The hub aggregates into arrays indexed by series id, so ids must be small dense integers.
Each device gets a block of consecutive ids, one per measurement its kind reports (from the
catalogue): ``series = base[device] + local_code[kind, measurement]``. Resolving a frame is a
dictionary lookup per *device in the frame* plus numpy fancy indexing per reading.

Each series' escaped line-protocol prefix is rendered once, when its device is first seen:

* raw:        ``raw_{kind},device=…,district=…,system=… {measurement}=``
* aggregates: ``agg_{label},device=…,district=…,kind=…,m={measurement},system=… `` for
  each resolution label (``10s``, ``1m``, ``1h``)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat

import numpy as np
from numba import njit

from citybrain.frame import Frame
from hub.arrays import Column
from hub.kernel_config import CACHE
from hub.lineproto import LineProtocolError, PrefixTable, escape_key, escape_tag_value
from seeds.city import KINDS, City, catalogue_by_kind, measurement_names

GLOBAL_NAMES = measurement_names()
GLOBAL_CODE = {name: i for i, name in enumerate(GLOBAL_NAMES)}
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
KIND_NAMES: dict[str, tuple[str, ...]] = {k: tuple(catalogue_by_kind()[k]) for k in KINDS}


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


@lru_cache(maxsize=64)
def _templates(kind: str, agg_labels: tuple[str, ...]) -> dict[str, list[bytes]]:
    """Per table ("" raw, else an aggregate label): one ``%``-template per measurement of
    ``kind``, with ``%s`` for the escaped device, district and system."""
    out = {"": [b"raw_%s,device=%%s,district=%%s,system=%%s %s=" % (_tag(kind), _key(name))
                for name in KIND_NAMES[kind]]}
    for label in agg_labels:
        out[label] = [b"agg_%s,device=%%s,district=%%s,kind=%s,m=%s,system=%%s " % (
            _tag(label), _tag(kind), _tag(name)) for name in KIND_NAMES[kind]]
    return out


class SeriesRegistry:
    """Owned by the hub's processing thread."""

    def __init__(self, city: City, agg_labels: tuple[str, ...] = ("10s",)) -> None:
        self.city = city
        self.agg_labels = agg_labels
        self.raw_prefixes = PrefixTable()
        self.agg_prefixes = {label: PrefixTable() for label in agg_labels}
        #: prefixes of devices registered while resolving a frame: "" raw, else agg labels
        self._new_prefixes: dict[str, list[bytes]] = {"": [], **{a: [] for a in agg_labels}}
        self._new_devices: list[tuple[int, int]] = []  # (base, kind) registered, not flushed
        self._devices: dict[str, int] = {}  # device id -> device gid
        self._device_base = Column(np.int64)  # device gid -> its first series id
        self._device_kind = Column(np.int64)  # device gid -> KIND_CODE
        self.system_index = {sys.system_id: i for i, sys in enumerate(city.systems)}
        self.device_system: list[int] = []  # device gid -> index into city.systems
        self.device_ids: list[str] = []  # device gid -> device id
        self.series_device: list[str] = []  # series id -> device id
        self.series_name: list[str] = []  # series id -> measurement
        self.series_kind: list[str] = []
        self.series_district: list[str] = []
        self.series_system: list[str] = []
        self.series_device_gid: list[int] = []

    @property
    def n_series(self) -> int:
        return len(self.series_device)

    @property
    def n_devices(self) -> int:
        return len(self._devices)

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
        base = self.n_series
        try:
            dev = _tag(device)
            dis = _tag(district)
            sys_ = _tag(system_id)
        except LineProtocolError:
            return invalid
        names = KIND_NAMES[kind]
        # The bytes series_prefix() builds (tags sorted: device, district, kind, m, system),
        # assembled from parts escaped once: registration is on the path of a device's
        # first frame, and a city has a million devices (tests check both agree).
        # Appended to the tables in one copy per frame (``_flush_prefixes``), before any
        # rendering needs them.
        parts = (dev, dis, sys_)
        for table, templates in _templates(kind, tuple(self.agg_prefixes)).items():
            self._new_prefixes[table] += [t % parts for t in templates]
        gid = len(self.device_ids)
        self.series_device += [device] * len(names)
        self.series_name += names
        self.series_kind += [kind] * len(names)
        self.series_district += [district] * len(names)
        self.series_system += [system_id] * len(names)
        self.series_device_gid += [gid] * len(names)
        self._devices[device] = gid
        self._new_devices.append((base, KIND_CODE[kind]))
        self.device_ids.append(device)
        self.device_system.append(self.system_index[system_id])
        return gid

    def _flush_new_devices(self) -> None:
        bases, kinds = zip(*self._new_devices, strict=True)
        self._device_base.extend(list(bases))
        self._device_kind.extend(list(kinds))
        self._new_devices.clear()
        self._flush_prefixes()

    def _flush_prefixes(self) -> None:
        # Built from escaped parts only: no need to re-validate every byte.
        self.raw_prefixes.add_many(self._new_prefixes[""], validate=False)
        for label, table in self.agg_prefixes.items():
            table.add_many(self._new_prefixes[label], validate=False)
        for pending in self._new_prefixes.values():
            pending.clear()

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
