"""The edge → hub frame codec: round trips, and every corruption is a FrameError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.frame import HEADER_LEN, FrameError, decode_frame, encode_frame

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
