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

import numpy as np

from citybrain.frame import Frame
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
        self._devices: dict[str, tuple[int, int, int]] = {}  # id -> (base, kind, device gid)
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
        entry = self._devices.get(device)
        return None if entry is None else entry[2]

    def _register(self, device: str, system_id: str, district: str) -> tuple[int, int, int]:
        """Allocate the device's block of series ids; -1s if the device is not valid."""
        invalid = (-1, -1, -1)
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
        entry = (base, KIND_CODE[kind], len(self.device_ids))
        self._devices[device] = entry
        self.device_ids.append(device)
        self.device_system.append(self.system_index[system_id])
        return entry

    def _flush_prefixes(self) -> None:
        # Built from escaped parts only: no need to re-validate every byte.
        self.raw_prefixes.add_many(self._new_prefixes[""], validate=False)
        for label, table in self.agg_prefixes.items():
            table.add_many(self._new_prefixes[label], validate=False)
        for pending in self._new_prefixes.values():
            pending.clear()

    def resolve(self, frame: Frame) -> Resolved:
        """Series id of every reading in ``frame`` (vectorised after per-device lookups)."""
        get = self._devices.get
        # One list, one array: per-device numpy element writes cost ~3x the dict lookup.
        entries = [get(dev) or self._register(dev, sys_id, frame.district)
                   for dev, sys_id in zip(frame.devices, frame.systems, strict=True)]
        if self._new_prefixes[""]:
            self._flush_prefixes()
        table = np.array(entries, dtype=np.int64).reshape(-1, 3)
        base, kind, gid = table[:, 0], table[:, 1], table[:, 2]
        gcode = np.array([GLOBAL_CODE.get(n, -1) for n in frame.names], dtype=np.int64)
        b = base[frame.device]
        k = kind[frame.device]
        g = gcode[frame.name]
        ok = (b >= 0) & (g >= 0)
        local = np.where(ok, KIND_LUT[np.maximum(k, 0), np.maximum(g, 0)], -1)
        ok &= local >= 0
        series = np.where(ok, b + local, -1)
        device = np.where(ok, gid[frame.device], -1)
        invalid = int(len(series) - np.count_nonzero(ok))
        reason = ""
        if invalid:
            reason = "unknown_device" if np.any(b < 0) else "unknown_measurement"
        return Resolved(series, device, invalid, reason)
