"""Device message payloads: human-readable, SenML-like JSON (RFC 8428 in spirit).

A data message, published on ``cb/v1/dev/.../{device}/data``::

    {"dev": "500103-air-01-00017",      # device id; must match the topic's device segment
     "seq": 1234,                        # per-device sequence number, 0 ≤ seq < 2**32, +1 per
                                         # message, kept across reconnects (like Sparkplug's)
     "t": 1763712000.125,                # device time: UTC seconds since the epoch (float)
     "e": [{"n": "pm2_5", "u": "ug/m3", "v": 35.2},      # numeric value
           {"n": "occupied", "u": "bool", "vb": true},    # boolean value
           {"n": "ai_event", "u": "enum", "vs": "smoking"}]}  # enumerated value, by name

Every record of ``e`` is one *reading*; accounting counts readings. Names and units come from
the sensor catalogue (``seeds/catalogue.csv``) for the device's kind.

A birth message (``.../birth``), sent on every (re)connect::

    {"dev": ..., "seq": <next seq>, "t": ..., "fw": "2.3.1", "reset": "power_on",
     "link": "<connection id>", "interval_s": 60, "attrs": {"capacity": 420}}

``attrs`` (optional) is what the device declares about where it is installed, as real
platforms register device metadata: ``capacity`` (parking lot spaces), ``zone`` (noise
monitor functional zone, GB 3096: ``0 1 2 3 4a 4b``), ``frozen`` (kitchen cold room is a
freezer, −20…−1 °C, instead of a chiller, 0…10 °C).

A death message (``.../death``): the connection's MQTT Will, ``{"link": ..., "t": ...}``; the
edge marks every device born on that link offline.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

#: Largest payload an edge accepts (bytes); larger ones are dead-lettered as ``oversized``.
MAX_PAYLOAD_BYTES = 16 * 1024

Record = dict[str, Any]


def record(name: str, unit: str, value: float | bool | str) -> Record:
    """One SenML-like record; picks ``v``, ``vb`` or ``vs`` from the value's type."""
    if isinstance(value, bool):
        return {"n": name, "u": unit, "vb": value}
    if isinstance(value, str):
        return {"n": name, "u": unit, "vs": value}
    return {"n": name, "u": unit, "v": value}


def encode_data(device: str, seq: int, t: float, records: Iterable[Record]) -> bytes:
    """Serialise a data message to JSON bytes."""
    return orjson.dumps({"dev": device, "seq": seq, "t": t, "e": list(records)})


def encode_birth(device: str, seq: int, t: float, *, firmware: str, reset_cause: str,
                 link: str, interval_s: float, attrs: dict[str, Any] | None = None) -> bytes:
    doc: dict[str, Any] = {"dev": device, "seq": seq, "t": t, "fw": firmware,
                           "reset": reset_cause, "link": link, "interval_s": interval_s}
    if attrs:
        doc["attrs"] = attrs
    return orjson.dumps(doc)


def encode_death(link: str, t: float) -> bytes:
    return orjson.dumps({"link": link, "t": t})
