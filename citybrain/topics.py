"""The MQTT topic scheme, as small validated value objects (no broker needed to test them).

Device → edge (one district's edge subscribes to its district)::

    cb/v1/dev/{district}/{domain}/{system}/{device}/{channel}
        channel: data  — readings (JSON, see ``citybrain.payload``)
                 birth — sent on every (re)connect: firmware, reset cause, link id
                 death — the connection's MQTT Will (also sent on clean disconnect)

Edge → hub and operators::

    cb/v1/frames/{district}        binary columnar frames (``citybrain.frame``), QoS 1
    cb/v1/dlq/{district}           dead letters: JSON {reason, detail, topic, payload}
    cb/v1/events/{district}        device lifecycle events forwarded by the edge (JSON)
    cb/v1/edge/{edge_id}/state     edge birth and Will: JSON {state, edge, districts}, retained

Hub → operators::

    cb/v1/alarms/{district}        kitchen alarm transitions (JSON), QoS 1

Segments are validated: no MQTT wildcards (``+``, ``#``), no ``/``, no NUL, not empty.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "cb/v1"
CHANNELS = ("data", "birth", "death")
_FORBIDDEN = set("+#/\x00")


def _check_segment(name: str, value: str) -> None:
    if not value or _FORBIDDEN & set(value):
        raise ValueError(f"invalid topic segment {name}={value!r}: must be non-empty and "
                         "contain none of '+', '#', '/', NUL")


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    district: str
    domain: str
    system: str
    device: str
    channel: str

    def __post_init__(self) -> None:
        for name in ("district", "domain", "system", "device"):
            _check_segment(name, getattr(self, name))
        if self.channel not in CHANNELS:
            raise ValueError(f"invalid channel {self.channel!r}; expected one of {CHANNELS}")

    def __str__(self) -> str:
        return (f"{PREFIX}/dev/{self.district}/{self.domain}/{self.system}/"
                f"{self.device}/{self.channel}")

    @classmethod
    def parse(cls, topic: str) -> DeviceTopic:
        """Parse a device topic; raises ValueError with the reason if it is not one."""
        parts = topic.split("/")
        if len(parts) != 8 or "/".join(parts[:3]) != f"{PREFIX}/dev":
            raise ValueError(f"not a device topic: {topic!r}")
        return cls(*parts[3:])


def device_filter(district: str | None = None) -> str:
    """Subscription filter for the device topics of one district (or all districts)."""
    if district is not None:
        _check_segment("district", district)
    return f"{PREFIX}/dev/{district or '+'}/#"


def frames_topic(district: str) -> str:
    _check_segment("district", district)
    return f"{PREFIX}/frames/{district}"


FRAMES_FILTER = f"{PREFIX}/frames/+"


def dlq_topic(district: str) -> str:
    _check_segment("district", district)
    return f"{PREFIX}/dlq/{district}"


def events_topic(district: str) -> str:
    _check_segment("district", district)
    return f"{PREFIX}/events/{district}"


EVENTS_FILTER = f"{PREFIX}/events/+"
DLQ_FILTER = f"{PREFIX}/dlq/+"


def alarms_topic(district: str) -> str:
    """Kitchen alarm transitions published by the hub (JSON; raised/ongoing/cleared)."""
    _check_segment("district", district)
    return f"{PREFIX}/alarms/{district}"


def edge_state_topic(edge_id: str) -> str:
    _check_segment("edge_id", edge_id)
    return f"{PREFIX}/edge/{edge_id}/state"
