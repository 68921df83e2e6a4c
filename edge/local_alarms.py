"""Life-safety alarms an edge raises by itself, so they do not wait for the uplink.

A gas leak or a failing cold room must be known at the district even while the city hub is
unreachable: the edge raises these two on its own (logged, counted, exposed on its
``/metrics``) and puts an alarm message into its spool, which delivers it to
``cb/v1/alarms/{district}`` when the uplink is back. The hub's kitchen analytics remain the
full, authoritative alarm lifecycle (``hub.kitchen``); these are the edge's early warning,
marked ``"source": "edge"``.

Rules (defaults as ``hub.kitchen.KitchenConfig``; ``../shared/reference/domain.md``):
  * ``gas_leak``: combustible gas above ``gas_max_lel_pct`` (10 %LEL) — raised on the first
    reading.
  * ``cold_room_temperature``: cold-room temperature outside the device's range (chilled
    0..10 °C; frozen −20..−1 °C when its birth says ``frozen``) continuously for
    ``cold_min_duration_s`` (30 min) of device time.
  * Both clear once the readings have been back within the limit for
    ``clear_min_duration_s`` (5 min) of device time, so that a value hovering around the
    limit does not raise and clear over and over; a violating reading restarts that wait.

Pure state machine: ``observe`` takes one reading and returns an alarm document or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LocalAlarmConfig:
    gas_max_lel_pct: float = 10.0
    chilled_c: tuple[float, float] = (0.0, 10.0)
    frozen_c: tuple[float, float] = (-20.0, -1.0)
    cold_min_duration_s: float = 1800.0
    clear_min_duration_s: float = 300.0  #: as hub.kitchen; 0 = the first good reading clears


class LocalAlarms:
    """Not thread-safe: owned by the edge's processing thread."""

    def __init__(self, cfg: LocalAlarmConfig | None = None) -> None:
        self.cfg = cfg or LocalAlarmConfig()
        self.frozen: set[str] = set()
        self._raised: set[tuple[str, str]] = set()  # (device, alarm)
        self._cold_since: dict[str, float] = {}  # device -> device time it left its range
        #: raised (device, alarm) -> device time its readings came back within the limit
        self._good_since: dict[tuple[str, str], float] = {}

    @property
    def active(self) -> int:
        return len(self._raised)

    def set_frozen(self, device: str, frozen: bool) -> None:
        (self.frozen.add if frozen else self.frozen.discard)(device)

    def observe(self, device: str, name: str, t: float, value: float) -> dict[str, Any] | None:
        """One accepted reading (device time ``t`` in s); an alarm document if its state
        changed (``state`` "raised" or "cleared"), else None."""
        if name == "gas":
            return self._set(device, "gas_leak", t, value, value > self.cfg.gas_max_lel_pct)
        if name == "cold_temp":
            lo, hi = self.cfg.frozen_c if device in self.frozen else self.cfg.chilled_c
            if lo <= value <= hi:
                self._cold_since.pop(device, None)
                return self._set(device, "cold_room_temperature", t, value, False)
            # out of range: an alarm already raised must wait its clear time again
            self._good_since.pop((device, "cold_room_temperature"), None)
            since = self._cold_since.setdefault(device, t)
            if t - since >= self.cfg.cold_min_duration_s:
                return self._set(device, "cold_room_temperature", t, value, True)
        return None

    def _set(self, device: str, alarm: str, t: float, value: float,
             on: bool) -> dict[str, Any] | None:
        key = (device, alarm)
        if on:
            self._good_since.pop(key, None)
        elif key in self._raised:
            since = self._good_since.setdefault(key, t)
            if t - since < self.cfg.clear_min_duration_s:
                return None  # back within the limit, not yet for long enough
            del self._good_since[key]
        if on == (key in self._raised):
            return None
        (self._raised.add if on else self._raised.discard)(key)
        return {"alarm": alarm, "state": "raised" if on else "cleared", "device": device,
                "t": t, "value": value, "source": "edge"}
