"""Series registration: the prefixes spliced from escaped parts are exactly
``series_prefix``'s, for every kind and resolution, and render the same lines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.frame import decode_frame, encode_frame
from hub.lineproto import (
    PrefixTable,
    render_merged,
    render_multi,
    render_single,
    series_prefix,
)
from hub.series import PRESIZE_MAX, SeriesRegistry, city_series, presized
from seeds.city import City
from tests import naive


def test_registered_prefixes_equal_series_prefix() -> None:
    city = City(1.0)
    reg = SeriesRegistry(city, agg_labels=("10s", "1m", "1h"))
    for d in city.districts[:6]:
        devs = list(city.devices({d.code}))
        n = len(devs)
        frame = decode_frame(encode_frame(
            d.code, 1, 0, [x.device_id for x in devs], [x.system.system_id for x in devs],
            ["battery"], np.arange(n), np.ones(n), np.zeros(n), np.arange(n), np.zeros(n)))
        reg.resolve(frame)
    kinds = set()
    for i in range(reg.n_series):
        lab = reg.labels(i)
        dev, name, kind, district, system = lab.device, lab.name, lab.kind, lab.district, \
            lab.system
        kinds.add(kind)
        assert reg.raw_prefixes[i] == series_prefix(
            f"raw_{kind}", {"device": dev, "district": district, "system": system}, name)
        for label, table in reg.agg_prefixes.items():
            assert table[i] == series_prefix(
                f"agg_{label}", {"device": dev, "district": district, "kind": kind, "m": name,
                                 "system": system}, None)
    assert kinds == {"air", "water", "noise", "bay", "lot", "kitchen"}


def _register(reg: SeriesRegistry, city: City, ids: list[str], n_systems: int) -> None:
    """Register ``ids`` as devices of the first ``n_systems`` systems of one district."""
    d = city.districts[0].code
    systems = [s for s in city.systems if s.district_code == d][:n_systems]
    sys_ids = [systems[i % len(systems)].system_id for i in range(len(ids))]
    n = len(ids)
    reg.resolve(decode_frame(encode_frame(
        d, 1, 0, ids, sys_ids, ["battery"], np.arange(n), np.ones(n), np.zeros(n),
        np.arange(n), np.zeros(n))))


# device ids needing escapes (space, comma, equals, backslash, non-ASCII) among plain ones
_IDS = st.lists(st.text(st.sampled_from(list("ab9 ,=\\é区-_")), min_size=1, max_size=12)
                .filter(lambda s: not s.endswith("\\") and "\\ " not in s
                        and "\\," not in s and "\\=" not in s),
                min_size=1, max_size=30, unique=True)


@settings(max_examples=40, deadline=None)
@given(ids=_IDS, data=st.data())
def test_spliced_prefixes_render_what_whole_prefixes_render(ids: list[str],
                                                            data: st.DataObject) -> None:
    city = City(1.0)
    reg = SeriesRegistry(city, agg_labels=("10s", "1h"))
    _register(reg, city, ids, n_systems=12)
    n = reg.n_series
    whole = {"": PrefixTable()}
    whole[""].add_many([reg.raw_prefixes[i] for i in range(n)])
    for label, table in reg.agg_prefixes.items():
        whole[label] = PrefixTable()
        whole[label].add_many([table[i] for i in range(n)])
    rows = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=60))
    idx = np.array(rows, dtype=np.int64)
    value = np.linspace(-5.5, 1e6, len(rows))
    ts = np.arange(len(rows), dtype=np.int64) * 10**9
    assert render_single(reg.raw_prefixes, idx, value, ts) == render_single(
        whole[""], idx, value, ts)
    vals = np.column_stack([value, value * 2])
    for label, table in reg.agg_prefixes.items():
        assert render_multi(table, idx, ["count", "mean"], vals, [True, False], ts) == \
            render_multi(whole[label], idx, ["count", "mean"], vals, [True, False], ts)


def test_spliced_prefixes_check_indices_and_endings() -> None:
    city = City(1.0)
    reg = SeriesRegistry(city, agg_labels=("10s",))
    _register(reg, city, ["a", "b"], n_systems=2)
    n = reg.n_series
    one = np.ones(1)
    with pytest.raises(IndexError, match="is not a prefix"):
        render_single(reg.raw_prefixes, np.array([n]), one, np.zeros(1, np.int64))
    with pytest.raises(IndexError):
        reg.raw_prefixes[n]
    with pytest.raises(IndexError):
        reg.labels(n)
    # a raw prefix ends with "field=", an aggregate one with a space: not interchangeable
    with pytest.raises(ValueError, match="must end with"):
        render_multi(reg.raw_prefixes, np.array([0]), ["f"], one[:, None], [False],
                     np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="must end with"):
        render_single(reg.agg_prefixes["10s"], np.array([0]), one, np.zeros(1, np.int64))


def test_registry_keeps_a_few_bytes_per_series() -> None:
    """Per series: its device gid and key (6 bytes), not its prefixes."""
    city = City(1.0)
    reg = SeriesRegistry(city, agg_labels=("10s", "1m", "1h"))
    devs = list(city.devices({city.districts[0].code}))
    _register(reg, city, [x.device_id for x in devs], n_systems=10**6)
    assert reg.series_gid.dtype == np.int32 and reg.series_key.dtype == np.int16
    assert len(reg.series_gid) == len(reg.series_key) == reg.n_series


def _points(body: bytes) -> list[tuple[str, tuple[tuple[str, str], ...], str, float, int]]:
    """Every (measurement, tags, field, value, ts) a body stores, one per field."""
    out = []
    for p in naive.parse_lines(body):
        assert p.ts is not None
        tags = tuple(sorted(p.tags.items()))
        out += [(p.measurement, tags, k, float(v), p.ts) for k, v in p.fields.items()]
    return out


@settings(max_examples=60, deadline=None)
@given(ids=_IDS, data=st.data())
def test_merged_raw_lines_store_the_points_single_lines_store(ids: list[str],
                                                              data: st.DataObject) -> None:
    """A device's readings of one timestamp in one line: the same points, no field twice in
    a line, fewer lines when readings come a message at a time."""
    city = City(1.0)
    reg = SeriesRegistry(city, agg_labels=("10s",))
    _register(reg, city, ids, n_systems=12)
    gid = reg.series_gid
    # messages: a device and a timestamp, then some of its series (any order, repeats)
    rows, ts = [], []
    for _ in range(data.draw(st.integers(1, 25), label="messages")):
        s0 = data.draw(st.integers(0, reg.n_series - 1))
        mine = np.flatnonzero(gid == gid[s0]).tolist()
        picked = data.draw(st.lists(st.sampled_from(mine), min_size=1, max_size=6))
        t = data.draw(st.integers(0, 3)) * 10**9
        rows += picked
        ts += [t] * len(picked)
    idx = np.array(rows, dtype=np.int64)
    t_ns = np.array(ts, dtype=np.int64)
    value = np.array(data.draw(st.lists(
        st.floats(-1e6, 1e6) | st.sampled_from([np.nan, np.inf]), min_size=len(rows),
        max_size=len(rows))), dtype=np.float64)
    single, n_single = render_single(reg.raw_prefixes, idx, value, t_ns)
    merged, n_merged = render_merged(reg.raw_prefixes, idx, value, t_ns)
    assert n_merged == n_single == int(np.isfinite(value).sum())
    got, want = _points(merged), _points(single)
    assert len(got) == n_merged  # no field written twice in one line
    assert sorted(got) == sorted(want)
    assert merged.count(b"\n") <= single.count(b"\n")


def test_merged_lines_join_a_message_and_refuse_aggregate_tables() -> None:
    city = City(1.0)
    reg = SeriesRegistry(city, agg_labels=("10s",))
    _register(reg, city, ["a"], n_systems=1)  # an air station: 8 series, 0..7
    idx = np.array([0, 1, 5, 5, 2], dtype=np.int64)
    ts = np.array([7, 7, 7, 7, 7], dtype=np.int64)
    body, n = render_merged(reg.raw_prefixes, idx, np.arange(5.0), ts)
    # 0, 1, 5 in one line; 5 again starts a line (a field never repeats in a line), and so
    # does 2 after it (indices must increase within a line)
    assert n == 5 and body.split(b"\n")[:3] == [
        b"raw_air,device=a,district=500101,system=500101-air-01 pm2_5=0.0,pm10=1.0,o3=2.0 7",
        b"raw_air,device=a,district=500101,system=500101-air-01 o3=3.0 7",
        b"raw_air,device=a,district=500101,system=500101-air-01 so2=4.0 7"]
    with pytest.raises(TypeError, match="SplicedPrefixes"):
        render_merged(PrefixTable(), idx, np.arange(5.0), ts)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must end with '='"):
        render_merged(reg.agg_prefixes["10s"], idx, np.arange(5.0), ts)


def test_city_series_counts_what_a_registry_of_the_whole_city_holds() -> None:
    """``city_series`` (what the hub sizes its per-series state for up front) is exactly the
    series a registry holds once every device of the city has been seen; ``presized`` clamps
    it to ``[floor, PRESIZE_MAX]``."""
    city = City(1.0)
    reg = SeriesRegistry(city)
    for d in city.districts:
        devs = list(city.devices({d.code}))
        n = len(devs)
        reg.resolve(decode_frame(encode_frame(
            d.code, 1, 0, [x.device_id for x in devs], [x.system.system_id for x in devs],
            ["battery"], np.arange(n), np.ones(n), np.zeros(n), np.arange(n), np.zeros(n))))
    assert reg.n_devices == city.device_total
    assert reg.n_series == city_series(city)
    assert 0 < city_series(city, frozenset({"battery"})) == sum(
        1 for i in range(reg.n_series) if reg.labels(i).name == "battery")
    assert presized(10) == 1024 and presized(5000) == 5000
    assert presized(10**12) == PRESIZE_MAX
