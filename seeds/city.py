"""The city model as data: districts, the 201 systems, the sensor catalogue, and devices.

Everything here is pure and deterministic: the same ``scale`` gives the same devices on the
simulator, every edge and the hub, so the tiers agree on which devices exist without talking.
Devices are enumerated lazily (``City.devices_of``) because at ``scale`` ~270 there are 1M.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

SEEDS_DIR = Path(__file__).parent

DOMAINS = ("environment", "parking", "kitchen")
KINDS = ("air", "water", "noise", "bay", "lot", "kitchen")

#: AI-camera event codes (明厨亮灶). The JSON payload carries the name (``vs``), frames the code.
AI_EVENTS: dict[str, int] = {
    "no_hat_mask": 1,
    "no_work_clothes": 2,
    "smoking": 3,
    "phone_use": 4,
    "rodent": 5,
    "unattended_flame": 6,
}


@dataclass(frozen=True, slots=True)
class District:
    code: str
    name_zh: str
    name_pinyin: str
    kind: str  # district | county | autonomous_county


@dataclass(frozen=True, slots=True)
class Measurement:
    """One entry of the sensor catalogue: what a device kind may report, in which unit."""

    kind: str
    name: str
    unit: str
    min: float
    max: float
    dtype: str  # float | int | bool | enum
    resolution: float  # the smallest step the instrument reports, in ``unit`` (1: counts)
    hj212: str
    label_zh: str
    label_en: str


@dataclass(frozen=True, slots=True)
class System:
    system_id: str
    district_code: str
    domain: str
    kind: str
    name_zh: str
    name_en: str
    base_devices: int
    interval_s: float

    def device_count(self, scale: float) -> int:
        """Devices of this system at ``scale`` (at least one: a system always exists)."""
        return max(1, round(self.base_devices * scale))

    def device_id(self, n: int) -> str:
        """Stable id of the system's ``n``-th device (0-based), e.g. ``500103-air-01-00017``."""
        return f"{self.system_id}-{n:05d}"


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    system: System
    index: int

    @property
    def district_code(self) -> str:
        return self.system.district_code

    @property
    def kind(self) -> str:
        return self.system.kind

    @property
    def domain(self) -> str:
        return self.system.domain


@cache
def load_districts() -> tuple[District, ...]:
    with (SEEDS_DIR / "districts.csv").open(encoding="utf-8") as fh:
        return tuple(District(r["code"], r["name_zh"], r["name_pinyin"], r["kind"])
                     for r in csv.DictReader(fh))


@cache
def load_systems() -> tuple[System, ...]:
    with (SEEDS_DIR / "systems.csv").open(encoding="utf-8") as fh:
        return tuple(
            System(r["system_id"], r["district_code"], r["domain"], r["kind"], r["name_zh"],
                   r["name_en"], int(r["devices"]), float(r["interval_s"]))
            for r in csv.DictReader(fh))


@cache
def load_catalogue() -> tuple[Measurement, ...]:
    with (SEEDS_DIR / "catalogue.csv").open(encoding="utf-8") as fh:
        return tuple(
            Measurement(r["kind"], r["name"], r["unit"], float(r["min"]), float(r["max"]),
                        r["dtype"], float(r["resolution"]), r["hj212"], r["label_zh"],
                        r["label_en"])
            for r in csv.DictReader(fh))



@dataclass(frozen=True)
class City:
    """The seeded city at a device ``scale`` (1.0 ≈ 3.7k devices; 270 ≈ 1M)."""

    scale: float = 1.0
    districts: tuple[District, ...] = field(default_factory=load_districts)
    systems: tuple[System, ...] = field(default_factory=load_systems)

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"scale must be a positive number, got {self.scale!r}")

    @property
    def device_total(self) -> int:
        return sum(s.device_count(self.scale) for s in self.systems)

    def systems_in(self, district_code: str) -> list[System]:
        return [s for s in self.systems if s.district_code == district_code]

    def devices_of(self, system: System) -> Iterator[Device]:
        for n in range(system.device_count(self.scale)):
            yield Device(system.device_id(n), system, n)

    def devices(self, districts: set[str] | None = None) -> Iterator[Device]:
        """All devices, optionally only those of ``districts`` (codes)."""
        for s in self.systems:
            if districts is None or s.district_code in districts:
                yield from self.devices_of(s)

    def system(self, system_id: str) -> System:
        return self._system_index[system_id]

    @cached_property
    def _system_index(self) -> dict[str, System]:
        # Kept per instance: a module-level cache keyed by ``self.systems`` hashed all 201
        # systems on every lookup (most of the edge's time per message).
        return {s.system_id: s for s in self.systems}

    def lookup_device(self, device_id: str) -> Device | None:
        """Resolve a device id to its device, or None if this city has no such device.

        Ids are ``{system_id}-{nnnnn}``; the lookup is O(1) and never enumerates devices.
        """
        system_id, sep, num = device_id.rpartition("-")
        # ASCII digits only: str.isdigit() also accepts '²' (int() raises) and other scripts'
        # digits ('٠٠٠٠١' would alias device 00001 under another id).
        if not sep or len(num) != 5 or not (num.isascii() and num.isdigit()):
            return None
        system = self._system_index.get(system_id)
        if system is None:
            return None
        n = int(num)
        if n >= system.device_count(self.scale):
            return None
        return Device(device_id, system, n)


@cache
def catalogue_by_kind() -> dict[str, dict[str, Measurement]]:
    """``{kind: {measurement name: Measurement}}``."""
    out: dict[str, dict[str, Measurement]] = {k: {} for k in KINDS}
    for m in load_catalogue():
        out[m.kind][m.name] = m
    return out


@cache
def measurement_names() -> tuple[str, ...]:
    """Every distinct measurement name, in catalogue order: the global measurement code table.

    A measurement's code is its index here; frames carry names, so codes never cross the wire.
    """
    seen: dict[str, None] = {}
    for m in load_catalogue():
        seen.setdefault(m.name, None)
    return tuple(seen)
