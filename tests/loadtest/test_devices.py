"""The devices a load plays and what they send: real ids, exact seqs, valid values."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from citybrain.frame import decode_frame
from citybrain.loadtest.devices import (
    DevicePlan,
    MessageTable,
    allocate,
    assign,
    build_frame,
    choose_scale,
    encode_message,
    kind_channels,
)
from citybrain.topics import DeviceTopic
from edge.validate import check_envelope, check_records
from hub.series import SeriesRegistry
from seeds.city import KINDS, City, catalogue_by_kind


def test_allocate_is_proportional_and_capped() -> None:
    assert allocate([10, 10, 0, 5], 5) == [2, 2, 0, 1]
    assert allocate([3, 1], 4) == [3, 1]
    out = allocate([7, 13, 2, 40], 31)
    assert sum(out) == 31 and all(0 <= o <= c for o, c in zip(out, [7, 13, 2, 40], strict=True))
    with pytest.raises(ValueError):
        allocate([1, 2], 4)


def test_choose_scale_is_the_smallest_that_holds() -> None:
    for n in (1, 500, 3695, 10_000, 1_000_000):
        s = choose_scale(n)
        assert City(s).device_total >= n
    assert choose_scale(1_000_000) == 271.0  # City(270) has 997,650


def test_plan_uses_real_devices_spread_over_the_city() -> None:
    plan = DevicePlan.build(2_000)
    assert plan.devices == 2_000 and len(plan.districts()) == 38
    city = City(plan.scale)
    ids = [i for d in plan.districts() for i in plan.device_ids(d)]
    assert len(set(ids)) == 2_000
    assert all(city.lookup_device(i) is not None for i in ids)
    d = plan.district(plan.districts()[0])
    assert d.ids == plan.device_ids(d.code)
    with pytest.raises(ValueError, match="raise the scale"):
        DevicePlan.build(5_000, scale=1.0)


def test_assign_balances_and_covers() -> None:
    weights = {"a": 10, "b": 9, "c": 5, "d": 4, "e": 1}
    bins = assign(weights, 2)
    assert sorted(x for b in bins for x in b) == sorted(weights)
    loads = [sum(weights[x] for x in b) for b in bins]
    assert max(loads) - min(loads) <= 1
    assert len(assign(weights, 10)) == 5


def test_frames_decode_to_real_devices_with_exact_seqs() -> None:
    plan = DevicePlan.build(600)
    district = plan.district(plan.districts()[3])
    slots = district.slots
    s = len(slots)
    rng = np.random.default_rng(1)
    seen_seq: dict[str, list[int]] = {}
    k0 = 0
    for n in (7, s, 2 * s + 3):  # a partial cycle, a whole one, and wrapping ones
        ts = 1_763_712_000_000_000_000 + np.arange(k0, k0 + n, dtype=np.int64) * 1_000_000
        batch = build_frame(district, k0, n, (5 << 32) | k0, ts, rng, 42)
        f = decode_frame(batch.payload)
        assert (f.district, f.frame_seq, f.created_ns, len(f)) == (district.code,
                                                                   (5 << 32) | k0, 42, n)
        assert np.array_equal(f.ts_ns, ts)
        devs = np.array(f.devices)[f.device]
        assert np.array_equal(devs, np.array(district.ids)[batch.device])
        assert f.systems == [district.systems[district.ids.index(x)] for x in f.devices]
        names = np.array(f.names)[f.name]
        cat = catalogue_by_kind()
        kinds = [KINDS[int(district.kind[i])] for i in batch.device]
        for kind, name, v in zip(kinds, names, f.value, strict=True):
            m = cat[kind][str(name)]
            assert m.dtype in ("float", "int") and m.min <= v <= m.max
            assert m.dtype == "float" or v == int(v)
        for dev, q in zip(devs.tolist(), f.seq.tolist(), strict=True):
            seen_seq.setdefault(dev, []).append(q)
        k0 += n
        # The hub resolves every reading: no unknown device or measurement.
        assert SeriesRegistry(City(plan.scale)).resolve(f).invalid == 0
    # Per device: seq 0, 1, 2, ... without gaps, and the count the formula predicts.
    expected = slots.published_per_device(k0)
    for i, dev in enumerate(district.ids):
        assert seen_seq[dev] == list(range(int(expected[i])))


def test_messages_pass_the_edge_validation() -> None:
    plan = DevicePlan.build(300)
    district = plan.district(plan.districts()[0])
    table = MessageTable.of(district.kind, readings_per_message=3)
    topics = district.topics("")
    u = np.random.default_rng(2).random((len(district), table.width))
    values = table.values(np.arange(len(district)), u)
    city = City(plan.scale)
    for d in range(len(district)):
        kind = KINDS[int(district.kind[d])]
        payload = encode_message(district.ids[d], int(district.kind[d]), table, 7,
                                 1_763_712_000.5, values[d])
        env = check_envelope(city, DeviceTopic.parse(topics[d]), orjson.loads(payload))
        good, bad = check_records(env)
        assert not bad
        assert len(good) == table.readings[d] == min(3, len(kind_channels(kind)))
        assert env.seq == 7 and env.t == 1_763_712_000.5
