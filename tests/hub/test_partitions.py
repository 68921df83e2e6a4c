"""Districts → partitions → hubs (``hub.partitions``) and the cluster's file locks."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from hub.cluster import FileLock, live_members, partition_city
from hub.partitions import assign_districts, assign_partitions, districts_of
from seeds.city import City

CITY = City(1.0)
WEIGHTS = {d.code: float(sum(s.base_devices for s in CITY.systems_in(d.code)))
           for d in CITY.districts}


def test_every_district_in_exactly_one_partition_and_balanced() -> None:
    a = assign_districts(WEIGHTS, 12)
    assert set(a) == set(WEIGHTS) and set(a.values()) == set(range(12))
    load = Counter[int]()
    for code, p in a.items():
        load[p] += int(WEIGHTS[code])
    # greedy LPT: no partition exceeds the mean by more than the heaviest district
    assert max(load.values()) <= sum(WEIGHTS.values()) / 12 + max(WEIGHTS.values())
    assert sorted(c for p in range(12) for c in districts_of(a, p)) == sorted(WEIGHTS)


def test_district_assignment_is_deterministic() -> None:
    assert assign_districts(WEIGHTS, 6) == assign_districts(dict(reversed(WEIGHTS.items())), 6)


@given(n=st.integers(1, 40), members=st.sets(st.text("abcdefgh", min_size=1, max_size=4),
                                              min_size=1, max_size=8))
def test_partitions_cover_all_with_bounded_load(n: int, members: set[str]) -> None:
    out = assign_partitions(n, members)
    assert sorted(out) == list(range(n))
    assert set(out.values()) <= members
    assert max(Counter(out.values()).values()) <= math.ceil(n / len(members))
    assert assign_partitions(n, sorted(members, reverse=True)) == out  # order-free


def test_a_member_leaving_moves_mostly_its_own_partitions() -> None:
    three = assign_partitions(12, ["hub-0", "hub-1", "hub-2"])
    two = assign_partitions(12, ["hub-0", "hub-2"])
    moved = [p for p in range(12) if three[p] != "hub-1" and two[p] != three[p]]
    assert len(moved) <= 2  # bounded loads may shift one or two to even out
    assert all(two[p] in ("hub-0", "hub-2") for p in range(12))


def test_partition_city_knows_only_its_districts() -> None:
    sub = partition_city(CITY, ["500103", "500104"])
    assert {d.code for d in sub.districts} == {"500103", "500104"}
    assert {s.district_code for s in sub.systems} == {"500103", "500104"}
    other = next(s for s in CITY.systems if s.district_code == "500105")
    assert sub.lookup_device(other.device_id(0)) is None


def test_file_lock_excludes_and_is_released(tmp_path: Path) -> None:
    a, b = FileLock(tmp_path / "p0.lock"), FileLock(tmp_path / "p0.lock")
    assert a.try_acquire() and not b.try_acquire()
    a.release()
    assert b.try_acquire()
    b.release()


def test_live_members_sees_holders_and_removes_the_dead(tmp_path: Path) -> None:
    alive = FileLock(tmp_path / "hub-1.lock")
    assert alive.try_acquire()
    (tmp_path / "hub-2.lock").touch()  # a node that died: its lock is free
    assert live_members(tmp_path, "hub-0") == ["hub-0", "hub-1"]
    assert not (tmp_path / "hub-2.lock").exists()
    assert alive.still_linked()
    alive.release()
