"""Districts → partitions → hubs: which hub process serves which district (pure functions).

Several hubs share a city by *district-affine partitioning*: every district belongs to one
partition, and every partition is served by one hub at a time (``hub.cluster``), so all the
readings of a district meet in one process and its aggregates are exactly those a single hub
computes. A partition is the unit that moves between hubs: its MQTT session, its
write-ahead log and its window state travel together.

* ``assign_districts`` packs districts into ``n`` partitions, heaviest first onto the
  lightest partition (longest-processing-time greedy), weighed by the city model's
  device count at scale 1. The result depends only on the seeds, so every hub computes the
  same map without talking to the others.
* ``assign_partitions`` gives each live member its share of partitions by rendezvous
  (highest-random-weight) hashing with bounded loads: partition ``p`` goes to the
  highest-ranked member for ``p`` that holds fewer than ``ceil(n / members)``. When a member
  leaves, mostly its own partitions move; when one joins, it takes about its share.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping


def assign_districts(weights: Mapping[str, float], n: int) -> dict[str, int]:
    """District code → partition in ``[0, n)``; ties broken by district code (deterministic).

    ``weights`` are each district's expected load (e.g. devices at scale 1). Raises
    ``ValueError`` if ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"partitions must be >= 1, got {n}")
    load = [0.0] * n
    out: dict[str, int] = {}
    for code in sorted(weights, key=lambda c: (-weights[c], c)):
        p = min(range(n), key=lambda i: (load[i], i))
        out[code] = p
        load[p] += weights[code]
    return out


def districts_of(assignment: Mapping[str, int], partition: int) -> list[str]:
    """The districts of one partition, sorted."""
    return sorted(code for code, p in assignment.items() if p == partition)


def _rank(partition: int, member: str) -> bytes:
    return hashlib.blake2b(f"{partition}\x00{member}".encode(), digest_size=8).digest()


def assign_partitions(n: int, members: Iterable[str]) -> dict[int, str]:
    """Partition → member for ``n`` partitions over the live ``members`` (any order).

    Each member gets at most ``ceil(n / len(members))`` partitions. Empty ``members``:
    an empty map.
    """
    live = sorted(set(members))
    if not live:
        return {}
    cap = math.ceil(n / len(live))
    held = dict.fromkeys(live, 0)
    out: dict[int, str] = {}
    for p in range(n):
        for member in sorted(live, key=lambda m: _rank(p, m), reverse=True):
            if held[member] < cap:
                out[p] = member
                held[member] += 1
                break
    return out
