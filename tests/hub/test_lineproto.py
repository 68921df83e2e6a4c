"""hub.lineproto: escaping, float formatting and the numba renderers, against the plain
Python references and parser in tests/naive.py (and once against a real influxd)."""

from __future__ import annotations

import math
import re
import urllib.parse
import urllib.request
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from citybrain.localstack import InfluxV1Server
from hub.lineproto import (
    LineProtocolError,
    PrefixTable,
    escape_key,
    escape_measurement,
    escape_string_field,
    escape_tag_value,
    render_multi,
    render_single,
    series_prefix,
)
from hub.points import EntityPoints
from tests import naive

# --------------------------------------------------------------------------------------------
# escaping
# --------------------------------------------------------------------------------------------


def test_escape_examples() -> None:
    assert escape_measurement("raw air,x=1") == "raw\\ air\\,x=1"
    assert escape_key("a b,c=d") == "a\\ b\\,c\\=d"
    assert escape_tag_value("_v a=1") == "_v\\ a\\=1"
    assert escape_string_field('say "hi" \\o/') == 'say \\"hi\\" \\\\o/'
    assert escape_string_field("") == ""
    assert escape_key('q"uote') == 'q"uote'
    assert escape_key("C:\\temp") == "C:\\temp"  # a backslash before a plain char is literal
    assert escape_key("a\\\\b") == "a\\\\b"
    assert escape_tag_value("中文 🙂") == "中文\\ 🙂"


@pytest.mark.parametrize("fn", [escape_measurement, escape_key, escape_tag_value])
@pytest.mark.parametrize("bad, why", [
    ("", "empty"),
    ("a\nb", "U\\+000A"),
    ("a\rb", "U\\+000D"),
    ("a\tb", "U\\+0009"),
    ("\x00", "U\\+0000"),
    ("x\x1f", "U\\+001F"),
    ("x\x7f", "U\\+007F"),
    ("ab\\", "backslash at the end"),
    ("a\\,b", "backslash before ','"),
    ("a\\ b", "backslash before ' '"),
    ("a\\=b", "backslash before '='"),
    ('a\\"b', "backslash before '\"'"),
    ("a\ud800", "UTF-8"),
])
def test_escape_rejects(fn: Any, bad: str, why: str) -> None:
    with pytest.raises(LineProtocolError, match=why):
        fn(bad)


def test_reserved_names() -> None:
    for fn in (escape_measurement, escape_key):
        with pytest.raises(LineProtocolError, match="reserves"):
            fn("_internal")
    assert escape_tag_value("_internal") == "_internal"
    with pytest.raises(LineProtocolError, match="comment"):
        escape_measurement("#m")
    with pytest.raises(LineProtocolError, match="'time'"):
        escape_key("time")
    assert escape_tag_value("time") == "time"
    with pytest.raises(LineProtocolError, match="U\\+000A"):
        escape_string_field("two\nlines")
    with pytest.raises(LineProtocolError, match="must be a str"):
        escape_key(b"bytes")  # type: ignore[arg-type]


def test_series_prefix() -> None:
    assert series_prefix("m", {"b": "2", "a": "1"}, "f") == b"m,a=1,b=2 f="
    assert series_prefix("m", [("k", "v w")], None) == b"m,k=v\\ w "
    assert series_prefix("m", {}, None) == b"m "
    # sorted by escaped key bytes, as InfluxDB compares them ("\\" > "!")
    assert series_prefix("m", {"a!": "1", "a b": "2"}) == b"m,a!=1,a\\ b=2 "
    with pytest.raises(LineProtocolError, match="duplicate"):
        series_prefix("m", [("k", "1"), ("k", "2")])
    with pytest.raises(LineProtocolError):
        series_prefix("m", {"k": "v\n"}, "f")
    with pytest.raises(LineProtocolError):
        series_prefix("m", {"k": "v"}, "_f")


def test_prefix_table_grows_and_round_trips() -> None:
    t = PrefixTable(initial_bytes=1, initial_rows=1)
    prefixes = [series_prefix("m", {"k": f"v{i}" * (i % 7 + 1)}, "f") for i in range(500)]
    assert [t.add(p) for p in prefixes] == list(range(500))
    assert len(t) == 500 and [t[i] for i in range(500)] == prefixes
    assert t.offsets[-1] == len(t.blob) == sum(map(len, prefixes))
    assert t.max_len == max(map(len, prefixes))
    for bad in (b"", b"m k=v", b"m,k=v\n f=", "m f="):
        with pytest.raises(LineProtocolError):
            t.add(bad)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        t[500]


# --------------------------------------------------------------------------------------------
# float formatting
# --------------------------------------------------------------------------------------------


def _render_values(values: np.ndarray, ts: np.ndarray | None = None) -> list[str]:
    t = PrefixTable()
    t.add(b"m f=")
    n = len(values)
    ts = np.arange(n, dtype=np.int64) if ts is None else ts
    body, lines = render_single(t, np.zeros(n, np.int64), values, ts)
    out = body.decode().splitlines()
    assert len(out) == lines == int(np.isfinite(values).sum())
    return [line[len("m f="):].split(" ")[0] for line in out]


@pytest.mark.parametrize("v, text", [
    (35.2, "35.2"), (3.0, "3.0"), (-0.001, "-0.001"), (0.0, "0.0"), (-0.0, "0.0"),
    (1e-10, "0.0"), (-4e-10, "0.0"), (5e-10, "0.000000001"), (0.1 + 0.2, "0.3"),
    (123456789.123456789, "123456789.123456791"), (999999999.9999999, "999999999.999999881"),
    (0.9999999996, "1.0"), (-99.9999999999, "-100.0"),
    (1e9, "1000000000.0"), (-1234567890123.7, "-1234567890124.0"), (2.5e9 + 0.5, "2500000000.0"),
    (9.1e18, "9100000000000000000.0"), (1.23456789012345e20, "1.23456789012345e+20"),
    (-1e300, "-1.0e+300"), (1.7976931348623157e308, "1.79769313486231e+308"),
    (9.2e18, "9.2e+18"), (-9.99999999999999999e20, "-1.0e+21"), (1.5e+100, "1.5e+100"),
    (-1.797693134862312e308, "-1.79769313486231e+308"),
    (2**53 + 0.0, "9007199254740992.0"), (0.5, "0.5"), (1.0000000005, "1.000000001"),
    (1.0000000015, "1.000000001"), (1 / 1024, "0.000976562"),
    (3 / 1024, "0.002929688"), (-5 / 1024, "-0.004882812"),
])
def test_float_examples(v: float, text: str) -> None:
    assert _render_values(np.array([v])) == [text]
    assert naive.format_float(v) == text


SCI = re.compile(r"^-?[1-9]\.\d+e\+\d{2,3}$")


def _check_float_texts(vals: np.ndarray) -> None:
    got = _render_values(vals)
    finite = [float(v) for v in vals if math.isfinite(v)]
    for v, text in zip(finite, got, strict=True):
        want = naive.format_float(v)
        assert want is not None
        if abs(v) < 9.2e18:
            assert text == want, (v, text, want)
            if abs(v) < 1e9:
                assert abs(Decimal(text) - Decimal(v)) <= Decimal("5e-10")
            else:
                assert abs(Decimal(text) - Decimal(v)) <= Decimal("0.5")
        else:
            assert SCI.match(text), text
            assert math.isfinite(float(text))
            assert math.isclose(float(text), v, rel_tol=2e-14), (v, text, want)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(width=64), min_size=1, max_size=50))
def test_float_formatting_matches_reference(xs: list[float]) -> None:
    _check_float_texts(np.array(xs, dtype=np.float64))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-10**12, 10**12), min_size=1, max_size=50),
       st.sampled_from([1, 2, 4, 8, 10, 1000, 10**9, 10**10]))
def test_float_formatting_near_decimal_ties(ns: list[int], div: int) -> None:
    """Values that are (nearly) ties at the 9th decimal, or exact decimals."""
    vals = np.array([n / div for n in ns] + [n / div + 5e-10 for n in ns]
                    + [(n + 0.5) / 1e9 for n in ns])
    _check_float_texts(vals)


def test_float_formatting_bulk_random() -> None:
    rng = np.random.default_rng(11)
    vals = np.concatenate([
        rng.normal(0, 1, 20_000), rng.normal(0, 1e6, 20_000) * 1e-3,
        np.round(rng.normal(0, 1e4, 20_000) * 10.0 ** (d := rng.integers(0, 10, 20_000))) / 10.0**d,
        rng.uniform(-1e9, 1e9, 20_000), 10.0 ** rng.uniform(-12, 308, 20_000),
        (rng.integers(-10**9, 10**9, 20_000) + 0.5) * 1e-9,
    ])
    _check_float_texts(vals)


# --------------------------------------------------------------------------------------------
# names, rendering and parsing back
# --------------------------------------------------------------------------------------------

_PLAIN = st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"],
                       exclude_characters="\\\x7f")
_SPECIAL = st.sampled_from([" ", ",", "=", '"', "中文", "🙂", "é", "\u2028"])
# a run of backslashes always followed by a character that is not special to InfluxDB
_BACKSLASH = st.builds(lambda run, c: "\\" * run + c, st.integers(1, 3),
                       st.sampled_from(list("abzAZ09_-./:ü中")))


@st.composite
def names(draw: st.DrawFn, value: bool = False) -> str:
    """Valid names by construction: plain and special characters, and literal backslashes
    (never directly before a special character nor at the end)."""
    s = "".join(draw(st.lists(st.one_of(_PLAIN, _SPECIAL, _BACKSLASH), min_size=1,
                              max_size=8)))
    if not value:
        assume(not s.startswith("_") and s != "time")
    return s


@st.composite
def series_specs(draw: st.DrawFn) -> tuple[str, dict[str, str], str]:
    meas = draw(names())
    assume(not meas.startswith("#"))
    tags = draw(st.dictionaries(names(), names(value=True), max_size=4))
    field = draw(names())
    return meas, tags, field


@settings(max_examples=150, deadline=None)
@given(st.lists(series_specs(), min_size=1, max_size=6), st.data())
def test_render_single_round_trips_through_parser(specs: list, data: st.DataObject) -> None:
    table = PrefixTable(initial_bytes=8, initial_rows=1)
    prefixes = [series_prefix(m, tags, f) for m, tags, f in specs]
    for prefix in prefixes:
        table.add(prefix)
    n = data.draw(st.integers(0, 40))
    idx = np.array(data.draw(st.lists(st.integers(0, len(specs) - 1), min_size=n,
                                      max_size=n)), dtype=np.int64)
    vals = np.array(data.draw(st.lists(st.floats(-1e12, 1e12) | st.just(np.nan)
                                       | st.just(np.inf), min_size=n, max_size=n)),
                    dtype=np.float64)
    ts = np.array(data.draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n,
                                     max_size=n)), dtype=np.int64)
    body, lines = render_single(table, idx, vals, ts)
    want_body, want_lines = naive.render_single(prefixes, idx.tolist(), vals.tolist(),
                                                ts.tolist())
    assert (body, lines) == (want_body, want_lines)
    assert body.count(b"\n") == lines <= n
    points = naive.parse_lines(body)
    assert len(points) == lines
    rows = [r for r in range(n) if math.isfinite(vals[r])]
    for p, r in zip(points, rows, strict=True):
        meas, tags, field = specs[idx[r]]
        assert p.measurement == meas
        assert p.tags == tags
        assert list(p.fields) == [field]
        assert p.fields[field] == float(naive.format_float(float(vals[r])) or "nan")
        assert p.ts == ts[r]


@settings(max_examples=100, deadline=None)
@given(st.lists(series_specs(), min_size=1, max_size=4),
       st.lists(names(), min_size=1, max_size=4, unique=True), st.data())
def test_render_multi_round_trips_through_parser(specs: list, keys: list[str],
                                                 data: st.DataObject) -> None:
    table = PrefixTable()
    prefixes = [series_prefix(m, tags, None) for m, tags, _ in specs]
    for prefix in prefixes:
        table.add(prefix)
    n = data.draw(st.integers(0, 30))
    k = len(keys)
    idx = np.array(data.draw(st.lists(st.integers(0, len(specs) - 1), min_size=n,
                                      max_size=n)), dtype=np.int64)
    cell = st.floats(-1e15, 1e15) | st.just(np.nan) | st.just(-np.inf) | st.just(1e30)
    vals = np.array(data.draw(st.lists(st.lists(cell, min_size=k, max_size=k), min_size=n,
                                       max_size=n)), dtype=np.float64).reshape(n, k)
    is_int = np.array(data.draw(st.lists(st.booleans(), min_size=k, max_size=k)), dtype=bool)
    ts = np.array(data.draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n)),
                  dtype=np.int64)
    body, lines = render_multi(table, idx, keys, vals, is_int, ts)
    esc = [escape_key(x) for x in keys]
    assert (body, lines) == naive.render_multi(prefixes, idx.tolist(), esc, vals,
                                               is_int.tolist(), ts.tolist())
    assert body.count(b"\n") == lines <= n
    points = naive.parse_lines(body)
    kept = [r for r in range(n)
            if any((naive.format_int(v) if is_int[j] else naive.format_float(v)) is not None
                   for j, v in enumerate(vals[r].tolist()))]
    assert len(points) == len(kept) == lines
    for p, r in zip(points, kept, strict=True):
        meas, tags, _ = specs[idx[r]]
        assert (p.measurement, p.tags, p.ts) == (meas, tags, ts[r])
        for j, key in enumerate(keys):
            v = float(vals[r, j])
            want: float | int | None
            if is_int[j]:
                want = None if naive.format_int(v) is None else int(v)
            else:
                text = naive.format_float(v)
                want = None if text is None else float(text)
            assert p.fields.get(key) == want


@settings(max_examples=100, deadline=None)
@given(names(), st.sampled_from(["\n", "\r", "\x00", "\x1b", "\x7f", "\\", "\\,", "\\ "]),
       st.sampled_from(["measurement", "tag key", "tag value", "field key"]))
def test_injection_attempts_raise(name: str, bad: str, where: str) -> None:
    s = name + bad
    meas, tags, field = "m", {"k": "v"}, "f"
    if where == "measurement":
        meas = s
    elif where == "tag key":
        tags = {s: "v"}
    elif where == "tag value":
        tags = {"k": s}
    else:
        field = s
    with pytest.raises(LineProtocolError):
        series_prefix(meas, tags, field)


def test_timestamps_and_integer_fields() -> None:
    t = PrefixTable()
    t.add(b"m ")
    ts = np.array([0, -1, 2**63 - 1, -(2**63), 1_700_000_000_123_456_789], dtype=np.int64)
    vals = np.array([[3.9], [-3.9], [2.0**63], [-(2.0**63)], [np.nan]])
    body, lines = render_multi(t, np.zeros(5, np.int64), ["n"], vals, [True], ts)
    assert body == (b"m n=3i 0\nm n=-3i -1\nm n=-9223372036854775808i -9223372036854775808\n")
    assert lines == 3


# int64 fields float64 cannot carry: near the ends of int64, and ns timestamps whose low
# digits float64 rounds away (1_700_000_000_123_456_789 -> ...456_768)
INT64_EDGES = [0, 1, -1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, 2**63 - 2, 2**63 - 513,
               -(2**63), -(2**63) + 1, -(2**63) + 513, 1_700_000_000_123_456_789,
               1_763_850_000_000_000_001, -1_700_000_000_123_456_789]
ns_times = st.integers(1_500_000_000 * 10**9, 2_100_000_000 * 10**9)


def int64s() -> st.SearchStrategy[int]:
    """Any int64, weighted to the values float64 mangles: the ends of the range, just
    past 2**53, and ns timestamps."""
    near_ends = st.integers(0, 4096).flatmap(
        lambda d: st.sampled_from([2**63 - 1 - d, -(2**63) + d, 2**53 + d, -(2**53) - d]))
    return (st.integers(-(2**63), 2**63 - 1) | near_ends | ns_times
            | st.sampled_from(INT64_EDGES))


def test_int64_fields_are_exact() -> None:
    """``int64_values`` are written digit for digit, after the float fields, on every row
    (an int64 is never NaN, so a row whose float fields are all NaN still has a line)."""
    assert any(int(float(v)) != v for v in INT64_EDGES)  # float64 would have lost these
    t = PrefixTable()
    t.add(b"m,k=v ")
    n = len(INT64_EDGES)
    vals = np.full((n, 2), np.nan)
    vals[0] = [1.5, 7.0]
    exact = np.array([INT64_EDGES, INT64_EDGES[::-1]], dtype=np.int64).T.copy()
    ts = np.arange(n, dtype=np.int64)
    body, lines = render_multi(t, np.zeros(n, np.int64), ["a", "c"], vals, [False, True], ts,
                               int64_keys=["r", "s t"], int64_values=exact)
    want = [b"m,k=v a=1.5,c=7i,r=0i,s\\ t=-1700000000123456789i 0\n"]
    want += [b"m,k=v r=%di,s\\ t=%di %d\n" % (a, b, r)
             for r, (a, b) in enumerate(zip(INT64_EDGES, INT64_EDGES[::-1], strict=True))
             if r]
    assert (body, lines) == (b"".join(want), n)
    assert b"r=9223372036854775807i," in body and b"r=-9223372036854775808i," in body
    assert b"t=9223372036854775807i " in body and b"t=-9223372036854775808i " in body
    # int64 fields alone (no float field at all)
    assert render_multi(t, np.array([0]), [], np.zeros((1, 0)), np.zeros(0, bool),
                        np.array([5]), int64_keys=["r"],
                        int64_values=np.array([[2**63 - 1]])) == (
        b"m,k=v r=9223372036854775807i 5\n", 1)


@settings(max_examples=150, deadline=None)
@given(st.lists(series_specs(), min_size=1, max_size=4),
       st.lists(names(), min_size=1, max_size=5, unique=True), st.data())
def test_render_multi_int64_fields_match_reference(specs: list, all_keys: list[str],
                                                   data: st.DataObject) -> None:
    """Float and exact int64 fields together, against ``naive.render_multi`` (plain Python
    ints: no float64 anywhere) and back through the parser, every int64 exact."""
    table = PrefixTable()
    prefixes = [series_prefix(m, tags, None) for m, tags, _ in specs]
    table.add_many(prefixes)
    m = data.draw(st.integers(1, len(all_keys)))
    keys, ikeys = all_keys[m:], all_keys[:m]
    k = len(keys)
    n = data.draw(st.integers(0, 20))
    idx = np.array(data.draw(st.lists(st.integers(0, len(specs) - 1), min_size=n,
                                      max_size=n)), dtype=np.int64)
    cell = st.floats(-1e15, 1e15) | st.just(np.nan) | st.just(np.inf)
    vals = np.array(data.draw(st.lists(st.lists(cell, min_size=k, max_size=k), min_size=n,
                                       max_size=n)), dtype=np.float64).reshape(n, k)
    is_int = np.array(data.draw(st.lists(st.booleans(), min_size=k, max_size=k)), dtype=bool)
    exact = data.draw(st.lists(st.lists(int64s(), min_size=m, max_size=m), min_size=n,
                               max_size=n))
    ts = np.array(data.draw(st.lists(ns_times, min_size=n, max_size=n)), dtype=np.int64)
    body, lines = render_multi(table, idx, keys, vals, is_int, ts, int64_keys=ikeys,
                               int64_values=np.array(exact, dtype=np.int64).reshape(n, m))
    assert (body, lines) == naive.render_multi(
        prefixes, idx.tolist(), [escape_key(x) for x in keys], vals, is_int.tolist(),
        ts.tolist(), [escape_key(x) for x in ikeys], exact)
    points = naive.parse_lines(body)
    assert len(points) == lines == n  # the int64 fields give every row a line
    for p, r in zip(points, range(n), strict=True):
        assert list(p.fields)[-m:] == ikeys  # after the float fields, in their order
        assert [p.fields[key] for key in ikeys] == exact[r]
        assert p.ts == ts[r]


def test_render_multi_int64_bad_input() -> None:
    t = PrefixTable()
    t.add(b"m ")
    idx, one, ts = np.array([0]), np.ones((1, 1)), np.array([1])
    with pytest.raises(ValueError, match="go together"):
        render_multi(t, idx, ["a"], one, [False], ts, int64_keys=["r"])
    with pytest.raises(ValueError, match="go together"):
        render_multi(t, idx, ["a"], one, [False], ts, int64_values=np.ones((1, 1), np.int64))
    with pytest.raises(TypeError, match="int64_values must be int64"):  # no silent cast
        render_multi(t, idx, ["a"], one, [False], ts, int64_keys=["r"],
                     int64_values=np.ones((1, 1)))
    with pytest.raises(ValueError, match=r"shape \(1, 2\)"):
        render_multi(t, idx, ["a"], one, [False], ts, int64_keys=["r", "s"],
                     int64_values=np.ones((1, 1), np.int64))
    with pytest.raises(ValueError, match="2-D"):
        render_multi(t, idx, ["a"], one, [False], ts, int64_keys=["r"],
                     int64_values=np.ones(1, np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        render_multi(t, idx, ["a"], one, [False], ts, int64_keys=["r", "s"],
                     int64_values=np.ones((1, 4), np.int64)[:, ::2])
    with pytest.raises(LineProtocolError, match="duplicate"):
        render_multi(t, idx, ["a"], one, [False], ts, int64_keys=["a"],
                     int64_values=np.ones((1, 1), np.int64))
    with pytest.raises(LineProtocolError, match="reserves"):
        render_multi(t, idx, ["a"], one, [False], ts, int64_keys=["_r"],
                     int64_values=np.ones((1, 1), np.int64))
    with pytest.raises(ValueError, match="at least one field"):
        render_multi(t, idx, [], np.zeros((1, 0)), np.zeros(0, bool), ts)


def test_entity_points_int64_fields() -> None:
    """``EntityPoints`` passes ``int64_fields`` through exactly (1-D for one field), and
    refuses a render without them or with them cast to float."""
    p = EntityPoints("kitchen_alarm", ["restaurant"], ["value", "n"], ["n"],
                     int64_fields=["raised_ts"])
    e = [p.entity(["r 1"]), p.entity(["r2"])]
    rts = np.array([1_700_000_000_123_456_789, 2**63 - 1], dtype=np.int64)
    vals = np.array([[1.25, 3.0], [np.nan, np.nan]])
    assert p.render(e, vals, 9, rts) == (
        b"kitchen_alarm,restaurant=r\\ 1 value=1.25,n=3i,raised_ts=1700000000123456789i 9\n"
        b"kitchen_alarm,restaurant=r2 raised_ts=9223372036854775807i 9\n", 2)
    assert p.render(e, vals, 9, rts[:, None]) == p.render(e, vals, 9, rts)
    with pytest.raises(ValueError, match="go together"):
        p.render(e, vals, 9)
    with pytest.raises(TypeError, match="int64"):
        p.render(e, vals, 9, rts.astype(np.float64))
    plain = EntityPoints("m", ["k"], ["a"])
    assert plain.render([plain.entity(["v"])], np.array([[2.0]]), 1) == (b"m,k=v a=2.0 1\n", 1)
    with pytest.raises(ValueError, match="go together"):
        plain.render([0], np.array([[2.0]]), 1, np.array([5]))


@pytest.mark.parametrize("kwargs, err, match", [
    ({"idx": np.array([0, 1], np.int32)}, TypeError, r"astype\(np.int64\)"),
    ({"idx": np.array([0, 5])}, IndexError, "not a prefix"),
    ({"value": np.zeros(4)[::2]}, ValueError, "ascontiguousarray"),
    ({"ts_ns": np.zeros(3, np.int64)}, ValueError, "equal lengths"),
    ({"value": [1.0, 2.0]}, TypeError, "np.asarray"),
])
def test_render_single_bad_input(kwargs: dict, err: type[Exception], match: str) -> None:
    t = PrefixTable()
    t.add(b"m f=")
    t.add(b"m f=")
    args = {"idx": np.array([0, 1]), "value": np.array([1.0, 2.0]),
            "ts_ns": np.array([1, 2])}
    args.update(kwargs)
    with pytest.raises(err, match=match):
        render_single(t, args["idx"], args["value"], args["ts_ns"])


def test_renderers_check_prefix_kind() -> None:
    t = PrefixTable()
    t.add(series_prefix("m", {"k": "v"}, "f"))
    t.add(series_prefix("m", {"k": "v"}))
    one = np.array([1.0])
    with pytest.raises(LineProtocolError, match="must end with '='"):
        render_single(t, np.array([1]), one, np.array([1]))
    with pytest.raises(LineProtocolError, match="must end with ' '"):
        render_multi(t, np.array([0]), ["a"], one.reshape(1, 1), [False], np.array([1]))
    with pytest.raises(TypeError, match="is_int"):
        render_multi(t, np.array([1]), ["a"], one.reshape(1, 1), [1],  # type: ignore[list-item]
                     np.array([1]))
    with pytest.raises(ValueError, match="columns"):
        render_multi(t, np.array([1]), ["a", "b"], one.reshape(1, 1), [False, False],
                     np.array([1]))
    with pytest.raises(LineProtocolError, match="duplicate"):
        render_multi(t, np.array([1]), ["a", "a"], np.ones((1, 2)), [False, False],
                     np.array([1]))
    assert render_single(t, np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)) == (
        b"", 0)
    # field keys are escaped once per list (cached); an invalid key raises as before, when
    # there is a row to render, and an empty batch renders nothing without looking at keys
    with pytest.raises(LineProtocolError, match="reserves"):
        render_multi(t, np.array([1]), ["_bad"], one.reshape(1, 1), [False], np.array([1]))
    assert render_multi(t, np.zeros(0, np.int64), ["_bad"], np.ones((0, 1)), [False],
                        np.zeros(0, np.int64)) == (b"", 0)
    for _ in range(2):
        assert render_multi(t, np.array([1]), ["a b", "c"], np.ones((1, 2)), [False, True],
                            np.array([7])) == (b"m,k=v a\\ b=1.0,c=1i 7\n", 1)


# --------------------------------------------------------------------------------------------
# against a real influxd 1.x
# --------------------------------------------------------------------------------------------

NASTY_TAGS = [
    "plain", "with space", "com,ma", "eq=ual", 'qu"ote', "C:\\temp\\x", "a\\\\b",
    "中文 🙂", "_underscore", "mix ,=\"\\x end", "tab-free\u2028sep", "trailing space ",
]


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.mark.integration
def test_round_trip_through_influxd(influxd: InfluxV1Server, unique_db: str) -> None:
    db = unique_db
    influxd.create_database(db)
    meas, field = "raw air,x=1", 'f i=e,l"d'
    tag_key = "k ey,=\"x"
    table = PrefixTable()
    for i, value in enumerate(NASTY_TAGS):
        table.add(series_prefix(meas, {tag_key: value, "n": str(i)}, field))
    n_rows = 3 * len(NASTY_TAGS)
    idx = np.arange(n_rows, dtype=np.int64) % len(NASTY_TAGS)
    vals = np.linspace(-1e6, 1e6, n_rows)
    vals[5] = np.nan  # skipped, not written
    ts = 1_700_000_000_000_000_000 + np.arange(n_rows, dtype=np.int64) * 1_000_000_007
    body, lines = render_single(table, idx, vals, ts)
    assert lines == n_rows - 1

    qs = urllib.parse.urlencode({"db": db, "precision": "ns"})
    req = urllib.request.Request(f"{influxd.url}/write?{qs}", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204

    doc = influxd.query(f"SHOW TAG VALUES FROM {_ident(meas)} WITH KEY = {_ident(tag_key)}",
                        db=db)
    got_tags = {v[1] for v in doc["results"][0]["series"][0]["values"]}
    assert got_tags == set(NASTY_TAGS)

    doc = influxd.query(f"SELECT {_ident(field)}, {_ident(tag_key)}, \"n\" FROM {_ident(meas)}",
                        db=db, epoch="ns")
    series = doc["results"][0]["series"][0]
    assert series["name"] == meas
    rows = series["values"]
    assert len(rows) == lines
    want = sorted((int(ts[r]), NASTY_TAGS[idx[r]], float(vals[r])) for r in range(n_rows)
                  if r != 5)
    got = sorted((int(t), tag, float(v)) for t, v, tag, _ in rows)
    assert [(t, tag) for t, tag, _ in got] == [(t, tag) for t, tag, _ in want]
    for (_, _, g), (_, _, w) in zip(got, want, strict=True):
        assert abs(g - w) <= 5e-10 + abs(w) * 1e-15


@pytest.mark.integration
def test_int64_fields_round_trip_through_influxd(influxd: InfluxV1Server,
                                                  unique_db: str) -> None:
    """influxd stores ``int64_values`` exactly, ends of int64 and ns timestamps included
    (its JSON answer carries them as integers, which ``json`` reads back exactly)."""
    db = unique_db
    influxd.create_database(db)
    table = PrefixTable()
    table.add(series_prefix("kitchen_alarm", {"restaurant": "r 1"}))
    n = len(INT64_EDGES)
    ts = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 1_000_000_007
    vals = np.full((n, 1), np.nan)
    vals[0, 0] = 2.5
    body, lines = render_multi(table, np.zeros(n, np.int64), ["value"], vals, [False], ts,
                               int64_keys=["raised_ts"],
                               int64_values=np.array(INT64_EDGES, np.int64).reshape(n, 1))
    assert lines == n
    qs = urllib.parse.urlencode({"db": db, "precision": "ns"})
    req = urllib.request.Request(f"{influxd.url}/write?{qs}", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204
    doc = influxd.query('SELECT "raised_ts", "value" FROM "kitchen_alarm"', db=db, epoch="ns")
    rows = doc["results"][0]["series"][0]["values"]
    assert [(t, r) for t, r, _ in rows] == list(zip(ts.tolist(), INT64_EDGES, strict=True))
    assert [v for _, _, v in rows] == [2.5] + [None] * (n - 1)
