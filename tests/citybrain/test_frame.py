"""The edge → hub frame codec: round trips, and every corruption is a FrameError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.frame import (
    HEADER,
    HEADER_LEN,
    MAGIC,
    STRINGS_CACHE_SIZE,
    VERSION,
    DeviceStrings,
    FrameBody,
    FrameError,
    _column_layout,
    _decode_strings,
    _parse_strings,
    _tls,
    decode_frame,
    encode_frame,
    encode_frame_with,
    encode_string_section,
)

ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)


@st.composite
def frames(draw: st.DrawFn) -> dict:
    d = draw(st.integers(1, 6))
    m = draw(st.integers(1, 5))
    n = draw(st.integers(0, 200))
    devices = draw(st.lists(ids, min_size=d, max_size=d))
    systems = draw(st.lists(ids, min_size=d, max_size=d))
    names = draw(st.lists(ids, min_size=m, max_size=m))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return dict(
        district=draw(ids), frame_seq=draw(st.integers(0, 2**64 - 1)),
        created_ns=draw(st.integers(-(2**63), 2**63 - 1)), devices=devices, systems=systems,
        names=names,
        ts_ns=rng.integers(-(2**62), 2**62, n), value=rng.normal(0, 1e6, n),
        seq=rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32),
        device=rng.integers(0, d, n).astype(np.uint32),
        name=rng.integers(0, m, n).astype(np.uint16),
        compress=draw(st.booleans()))


@given(frames())
@settings(max_examples=150, deadline=None)
def test_round_trip(f: dict) -> None:
    compress = f.pop("compress")
    out = decode_frame(encode_frame(**f, compress=compress))
    assert (out.district, out.frame_seq, out.created_ns) == (f["district"], f["frame_seq"],
                                                              f["created_ns"])
    assert (out.devices, out.systems, out.names) == (f["devices"], f["systems"], f["names"])
    for col in ("ts_ns", "value", "seq", "device", "name"):
        np.testing.assert_array_equal(getattr(out, col), f[col])
    assert out.ts_ns.dtype == np.int64 and out.value.dtype == np.float64


def _sample(compress: bool = True) -> bytes:
    n = 50
    return encode_frame("500103", 3, 10**18, ["a", "b"], ["s", "s"], ["pm2_5"],
                        np.arange(n) * 10**9, np.linspace(0, 1, n), np.arange(n),
                        np.arange(n) % 2, np.zeros(n), compress=compress)


@pytest.mark.parametrize("compress", [True, False])
def test_every_single_byte_flip_is_detected_or_harmless(compress: bool) -> None:
    good = _sample(compress)
    ref = decode_frame(good)
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0xFF
        try:
            out = decode_frame(bytes(bad))
        except FrameError:
            continue
        # Only header fields that carry no structure (seq, created time) may change silently.
        assert i in range(20, 36), f"flip at byte {i} went unnoticed"
        np.testing.assert_array_equal(out.value, ref.value)


def test_reasons() -> None:
    good = _sample()
    with pytest.raises(FrameError) as e:
        decode_frame(good[:10])
    assert e.value.reason == "truncated"
    with pytest.raises(FrameError) as e:
        decode_frame(b"XXXX" + good[4:])
    assert e.value.reason == "bad_magic"
    with pytest.raises(FrameError) as e:
        decode_frame(good[:4] + bytes([9]) + good[5:])
    assert e.value.reason == "bad_version"
    with pytest.raises(FrameError) as e:
        decode_frame(good[:-1])
    assert e.value.reason == "truncated"


def test_index_past_table_is_rejected() -> None:
    raw = encode_frame("d", 0, 0, ["a"], ["s"], ["x"], np.zeros(1), np.zeros(1), np.zeros(1),
                       np.array([5]), np.zeros(1), compress=False)
    with pytest.raises(FrameError) as e:
        decode_frame(raw)
    assert e.value.reason == "bad_index"


def test_zip_bomb_guard() -> None:
    good = bytearray(_sample())
    struct.pack_into("<I", good, 40, 2**31)  # raw_len absurdly large
    with pytest.raises(FrameError):
        decode_frame(bytes(good))


@pytest.mark.parametrize("claim", [2**40, 2**62, 2**64 - 1, -1, +1])
def test_zstd_frame_stating_another_size_is_rejected(claim: int) -> None:
    """A zstd frame header stating its content size makes zstandard allocate that much,
    whatever max_output_size says: 2**40 was a MemoryError out of decode_frame. A stated
    size other than raw_len is a FrameError now, before decompressing."""
    good = _sample()
    raw_len = struct.unpack_from("<I", good, 40)[0]
    body = good[HEADER_LEN:]
    fhd = body[4]  # frame header descriptor: rewrite it to an 8-byte content size field
    single = (fhd >> 5) & 1
    fcs = {0: single, 1: 2, 2: 4, 3: 8}[fhd >> 6]
    end = 5 + (0 if single else 1) + [0, 1, 2, 4][fhd & 3] + fcs
    stated = claim if claim > 1 else raw_len + claim
    evil = (body[:4] + bytes([0xC0 | (fhd & 0x3F)]) + body[5:end - fcs]
            + struct.pack("<Q", stated) + body[end:])
    header = bytearray(good[:HEADER_LEN])
    struct.pack_into("<I", header, 36, len(evil))
    struct.pack_into("<I", header, 44, zlib.crc32(evil))
    with pytest.raises(FrameError) as e:
        decode_frame(bytes(header) + evil)
    assert e.value.reason == "bad_compression"


def test_header_is_48_bytes() -> None:
    assert HEADER_LEN == 48


# -- encode side: pre-encoded string sections, reusable bodies --------------------------------

def _reference_encode(district: str, frame_seq: int, created_ns: int, devices: list[str],
                      systems: list[str], names: list[str], ts_ns: np.ndarray,
                      value: np.ndarray, seq: np.ndarray, device: np.ndarray,
                      name: np.ndarray, compress: bool) -> bytes:
    """``encode_frame`` as first written (one ``encode`` per string, bytes joined)."""
    n = len(ts_ns)
    o_ts, o_val, o_seq, o_dev, o_name, o_str = _column_layout(n)
    blobs = [x.encode("utf-8") for x in [district, *[x for pair in zip(devices, systems,
                                                                       strict=True)
                                                     for x in pair], *names]]
    offsets = np.zeros(len(blobs) + 1, dtype="<u4")
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    strings = struct.pack("<I", len(blobs)) + offsets.tobytes() + b"".join(blobs)
    body = bytearray(o_str + len(strings))
    body[o_ts:o_val] = np.ascontiguousarray(ts_ns, dtype="<i8").tobytes()
    body[o_val:o_seq] = np.ascontiguousarray(value, dtype="<f8").tobytes()
    body[o_seq:o_dev] = np.ascontiguousarray(seq, dtype="<u4").tobytes()
    body[o_dev:o_name] = np.ascontiguousarray(device, dtype="<u4").tobytes()
    body[o_name:o_name + 2 * n] = np.ascontiguousarray(name, dtype="<u2").tobytes()
    body[o_str:] = strings
    sent = bytes(body)
    flags = 0
    if compress:
        sent = zstandard.ZstdCompressor(level=1).compress(sent)
        flags = 1
    return HEADER.pack(MAGIC, VERSION, flags, HEADER_LEN, n, len(devices), len(names),
                       frame_seq, created_ns, len(sent), len(body), zlib.crc32(sent)) + sent


@given(frames())
@settings(max_examples=150, deadline=None)
def test_encode_is_byte_identical_to_the_first_encoder(f: dict) -> None:
    assert encode_frame(**f) == _reference_encode(**f)


ascii_or_not = st.one_of(st.text(st.sampled_from("abz-_09"), max_size=12), ids)


@given(district=ascii_or_not, devices=st.lists(st.tuples(ascii_or_not, ascii_or_not),
                                                max_size=12),
       names=st.lists(ascii_or_not, max_size=4), data=st.data())
@settings(max_examples=200, deadline=None)
def test_device_strings_slice_the_section_encode_would_build(
        district: str, devices: list[tuple[str, str]], names: list[str],
        data: st.DataObject) -> None:
    ids_, systems = [d for d, _ in devices], [s for _, s in devices]
    table = DeviceStrings(district, ids_, systems, names)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(devices)), min_size=2, max_size=4)))
    ranges = tuple(zip(cuts[0::2], cuts[1::2], strict=False))
    chosen = [i for a, b in ranges for i in range(a, b)]
    want = encode_string_section(district, [ids_[i] for i in chosen],
                                 [systems[i] for i in chosen], names)
    assert table.section(ranges) == want
    with pytest.raises(ValueError):
        table.section(((0, len(devices) + 1),))


def test_a_body_is_reusable_and_frames_match_encode_frame() -> None:
    """``FrameBody`` filled twice in place gives what ``encode_frame`` gives each time."""
    rng = np.random.default_rng(7)
    section = encode_string_section("500103", ["a", "b", "c"], ["s", "t", "s"], ["x", "y"])
    body = FrameBody(9, section)
    for r in range(2):
        cols = (rng.integers(0, 2**62, 9), rng.normal(size=9), rng.integers(0, 2**32, 9),
                rng.integers(0, 3, 9), rng.integers(0, 2, 9))
        for col, view in zip(cols, (body.ts_ns, body.value, body.seq, body.device, body.name),
                             strict=True):
            view[:] = col
        want = encode_frame("500103", r, 5, ["a", "b", "c"], ["s", "t", "s"], ["x", "y"],
                            *cols)
        assert body.seal(r, 5) == want
        assert encode_frame_with(section, r, 5, *cols) == want
        out = decode_frame(want)
        assert out.devices == ["a", "b", "c"] and out.names == ["x", "y"]


def test_strings_cache_returns_the_same_strings_and_stays_bounded() -> None:
    """Frames with the same device table share one decoded tuple of strings (the cache is
    keyed by the section's bytes); a different table is decoded afresh; the cache keeps at
    most STRINGS_CACHE_SIZE sections."""
    def frame(devices: list[str], seq: int) -> bytes:
        k = len(devices)
        return encode_frame("500103", seq, 0, devices, ["s"] * k, ["pm2_5", "no2"],
                            np.zeros(k), np.ones(k), np.zeros(k), np.arange(k), np.zeros(k),
                            compress=False)
    a = decode_frame(frame(["d1", "d2", "d3"], 1))
    b = decode_frame(frame(["d1", "d2", "d3"], 2))
    assert a.devices == b.devices == ["d1", "d2", "d3"] and b.names == ["pm2_5", "no2"]
    assert a.devices is not b.devices  # each frame gets lists of its own
    b.devices.append("x")  # ... so changing one changes no other frame
    assert decode_frame(frame(["d1", "d2", "d3"], 3)).devices == ["d1", "d2", "d3"]
    assert decode_frame(frame(["d3", "d2", "d1"], 4)).devices == ["d3", "d2", "d1"]
    for i in range(STRINGS_CACHE_SIZE + 5):
        decode_frame(frame([f"dev-{i}", "d2"], 10 + i))
    assert len(_tls.strings) == STRINGS_CACHE_SIZE


@pytest.mark.parametrize("strings", [
    ["district", "dev\x00ice", "sys", "name"],  # holds the separator: sliced one by one
    ["区", "设备-1", "系统", "名"],  # utf-8: joined and split
    ["d", "", "", "x"],  # empty strings
    ["only-one"],
])
def test_string_sections_decode_exactly(strings: list[str]) -> None:
    blobs = [s.encode() for s in strings]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype("<u4")
    section = struct.pack("<I", len(blobs)) + offsets.tobytes() + b"".join(blobs)
    assert _decode_strings(memoryview(section), len(strings)) == tuple(strings)
    assert _parse_strings(memoryview(section), len(strings)) == tuple(strings)


def test_invalid_utf8_names_the_first_bad_string() -> None:
    blobs = [b"ok", b"\xff\xfe", b"fine"]
    offsets = np.array([0, 2, 4, 8], dtype="<u4")
    section = memoryview(struct.pack("<I", 3) + offsets.tobytes() + b"".join(blobs))
    with pytest.raises(FrameError) as e:
        _parse_strings(section, 3)
    assert e.value.reason == "bad_strings"
    assert str(e.value) == ("bad_strings: invalid utf-8: 'utf-8' codec can't decode byte "
                            "0xff in position 0: invalid start byte")
    bad = memoryview(struct.pack("<I", 3) + np.array([0, 5, 4, 8], "<u4").tobytes()
                     + b"".join(blobs))
    with pytest.raises(FrameError, match="not monotonic"):
        _parse_strings(bad, 3)
