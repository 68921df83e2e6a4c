"""The edge → hub frame: a compact, versioned, columnar binary format.

One frame carries many readings of one district. The hub turns it into numpy arrays with
``np.frombuffer`` on aligned slices: no Python work per reading.

Layout (all integers little-endian)::

    header, 48 bytes:
      0  magic        4s   b"CBFR"
      4  version      u8   1
      5  flags        u8   bit 0: body is zstd-compressed
      6  header_len   u16  48
      8  n_readings   u32  n
     12  n_devices    u32  d   (device table entries)
     16  n_names      u32  m   (measurement-name table entries)
     20  frame_seq    u64  edge spool epoch (high 32 bits) | per-district counter (low 32);
                           with the district it names a frame (the hub de-duplicates by it)
     28  created_ns   i64  edge clock when the frame was sealed, ns since the epoch (UTC)
     36  body_len     u32  bytes of body as sent (compressed or not)
     40  raw_len      u32  bytes of body once decompressed
     44  crc32        u32  zlib.crc32 of the body as sent
    body (after decompression), every column starting on an 8-byte boundary:
      ts_ns    i64[n]   device time of each reading, ns since the epoch (UTC)
      value    f64[n]   reading value (bool → 0/1, enum → its code)
      seq      u32[n]   device sequence number of the message the reading came in
      device   u32[n]   index into the device table
      name     u16[n]   index into the name table
      (zero padding to 8 bytes)
      strings: u32 count k, u32 offsets[k+1], utf-8 bytes; the k = 1 + 2d + m strings are
               district, then (device_id, system_id) per device, then the measurement names.

Bump ``VERSION`` for any change; decoders reject versions they do not know.
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import zstandard

MAGIC = b"CBFR"
VERSION = 1
FLAG_ZSTD = 0x01
HEADER = struct.Struct("<4sBBHIIIQqIII")
HEADER_LEN = HEADER.size  # 48
#: Upper bound on a decompressed body, so a corrupt or hostile frame cannot exhaust memory.
MAX_RAW_LEN = 256 * 1024 * 1024

assert HEADER_LEN == 48

_tls = threading.local()


class FrameError(ValueError):
    """A frame that cannot be decoded; ``reason`` is a short stable code for counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame. Arrays are read-only views of the decoded body."""

    district: str
    frame_seq: int
    created_ns: int
    devices: list[str]
    systems: list[str]
    names: list[str]
    ts_ns: np.ndarray  # int64[n]
    value: np.ndarray  # float64[n]
    seq: np.ndarray  # uint32[n]
    device: np.ndarray  # uint32[n], index into devices/systems
    name: np.ndarray  # uint16[n], index into names

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _column_layout(n: int) -> tuple[int, int, int, int, int, int]:
    """Byte offsets of the five columns and of the string section for ``n`` readings."""
    o_ts = 0
    o_val = o_ts + 8 * n
    o_seq = o_val + 8 * n
    o_dev = o_seq + 4 * n
    o_name = o_dev + 4 * n
    o_str = _pad8(o_name + 2 * n)
    return o_ts, o_val, o_seq, o_dev, o_name, o_str


def _encode_strings(strings: list[str]) -> bytes:
    blobs = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(blobs) + 1, dtype="<u4")
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    return struct.pack("<I", len(blobs)) + offsets.tobytes() + b"".join(blobs)


def _decode_strings(buf: memoryview, expected: int) -> list[str]:
    if len(buf) < 4:
        raise FrameError("truncated", "string section missing")
    (k,) = struct.unpack_from("<I", buf, 0)
    if k != expected:
        raise FrameError("bad_strings", f"{k} strings, header implies {expected}")
    end_off = 4 + 4 * (k + 1)
    if len(buf) < end_off:
        raise FrameError("truncated", "string offsets cut short")
    offsets = np.frombuffer(buf, dtype="<u4", count=k + 1, offset=4)
    blob = bytes(buf[end_off:])
    if offsets[0] != 0 or np.any(np.diff(offsets.astype(np.int64)) < 0) or offsets[-1] != len(blob):
        raise FrameError("bad_strings", "string offsets are not monotonic or do not fit")
    bounds = offsets.tolist()  # plain ints: numpy scalar indexing per string is ~10x slower
    if blob.isascii():  # the usual case: one decode, then str slices (byte = char offsets)
        text = blob.decode("ascii")
        return [text[a:b] for a, b in pairwise(bounds)]
    try:
        return [blob[bounds[i]:bounds[i + 1]].decode("utf-8") for i in range(k)]
    except UnicodeDecodeError as exc:
        raise FrameError("bad_strings", f"invalid utf-8: {exc}") from None


def encode_frame(district: str, frame_seq: int, created_ns: int,
                 devices: list[str], systems: list[str], names: list[str],
                 ts_ns: np.ndarray, value: np.ndarray, seq: np.ndarray,
                 device: np.ndarray, name: np.ndarray, *, compress: bool = True,
                 level: int = 1) -> bytes:
    """Pack columns into a frame. Columns are cast to their wire dtypes; lengths must match.

    ``devices[i]`` and ``systems[i]`` describe device index ``i``; ``names[j]`` name index ``j``.
    """
    n = len(ts_ns)
    if not (len(value) == len(seq) == len(device) == len(name) == n):
        raise ValueError("all reading columns must have the same length")
    if len(devices) != len(systems):
        raise ValueError("devices and systems must have the same length")
    o_ts, o_val, o_seq, o_dev, o_name, o_str = _column_layout(n)
    strings = _encode_strings([district, *[x for pair in zip(devices, systems, strict=True)
                                           for x in pair], *names])
    body = bytearray(o_str + len(strings))
    body[o_ts:o_val] = np.ascontiguousarray(ts_ns, dtype="<i8").tobytes()
    body[o_val:o_seq] = np.ascontiguousarray(value, dtype="<f8").tobytes()
    body[o_seq:o_dev] = np.ascontiguousarray(seq, dtype="<u4").tobytes()
    body[o_dev:o_name] = np.ascontiguousarray(device, dtype="<u4").tobytes()
    body[o_name:o_name + 2 * n] = np.ascontiguousarray(name, dtype="<u2").tobytes()
    body[o_str:] = strings
    raw_len = len(body)
    flags = 0
    sent: bytes = bytes(body)
    if compress:
        sent = _compressor(level).compress(sent)
        flags |= FLAG_ZSTD
    header = HEADER.pack(MAGIC, VERSION, flags, HEADER_LEN, n, len(devices), len(names),
                         frame_seq, created_ns, len(sent), raw_len, zlib.crc32(sent))
    return header + sent


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # zstandard (de)compressors are not safe to share between threads: one per thread.
    cache: dict[int, zstandard.ZstdCompressor] = _tls.__dict__.setdefault("c", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_tls, "d", None)
    if d is None:
        d = _tls.d = zstandard.ZstdDecompressor()
    return d


def decode_frame(data: bytes | bytearray | memoryview) -> Frame:
    """Decode a frame; raises ``FrameError`` (with a ``reason`` code) on anything invalid."""
    mv = memoryview(data)
    if len(mv) < HEADER_LEN:
        raise FrameError("truncated", f"{len(mv)} bytes is shorter than the header")
    (magic, version, flags, header_len, n, d, m, frame_seq, created_ns, body_len, raw_len,
     crc) = HEADER.unpack_from(mv, 0)
    if magic != MAGIC:
        raise FrameError("bad_magic", f"magic {magic!r} is not {MAGIC!r}")
    if version != VERSION:
        raise FrameError("bad_version", f"frame version {version}, this hub reads {VERSION}")
    if header_len != HEADER_LEN or flags & ~FLAG_ZSTD:
        raise FrameError("bad_header", f"header_len={header_len} flags={flags:#x}")
    body = mv[HEADER_LEN:]
    if len(body) != body_len:
        raise FrameError("truncated", f"body is {len(body)} bytes, header says {body_len}")
    if zlib.crc32(body) != crc:
        raise FrameError("bad_crc", "body checksum mismatch")
    if raw_len > MAX_RAW_LEN:
        raise FrameError("oversized", f"raw body {raw_len} bytes exceeds {MAX_RAW_LEN}")
    if flags & FLAG_ZSTD:
        # zstandard sizes its output by the content size the zstd frame header states and
        # ignores max_output_size then: a hostile header claiming 2**40 bytes would be a
        # MemoryError (or a huge allocation). Only raw_len (bounded above) or "unknown" pass.
        try:
            stated = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise FrameError("bad_compression", str(exc)) from None
        if stated not in (-1, raw_len):
            raise FrameError("bad_compression",
                             f"zstd frame states {stated} bytes, header says {raw_len}")
        try:
            raw = _decompressor().decompress(body, max_output_size=raw_len)
        except zstandard.ZstdError as exc:
            raise FrameError("bad_compression", str(exc)) from None
        if len(raw) != raw_len:
            raise FrameError("bad_compression", f"{len(raw)} bytes after zstd, expected {raw_len}")
        rv = memoryview(raw)
    else:
        rv = body
        if raw_len != body_len:
            raise FrameError("bad_header", "uncompressed body with raw_len != body_len")
    o_ts, o_val, o_seq, o_dev, o_name, o_str = _column_layout(n)
    if len(rv) < o_str:
        raise FrameError("truncated", f"body {len(rv)} bytes cannot hold {n} readings")
    strings = _decode_strings(rv[o_str:], 1 + 2 * d + m)
    device = np.frombuffer(rv, dtype="<u4", count=n, offset=o_dev)
    name = np.frombuffer(rv, dtype="<u2", count=n, offset=o_name)
    if n and (int(device.max()) >= d or int(name.max()) >= m):
        raise FrameError("bad_index", "a reading refers past the device or name table")
    return Frame(
        district=strings[0], frame_seq=frame_seq, created_ns=created_ns,
        devices=strings[1:1 + 2 * d:2], systems=strings[2:2 + 2 * d:2],
        names=strings[1 + 2 * d:],
        ts_ns=np.frombuffer(rv, dtype="<i8", count=n, offset=o_ts),
        value=np.frombuffer(rv, dtype="<f8", count=n, offset=o_val),
        seq=np.frombuffer(rv, dtype="<u4", count=n, offset=o_seq),
        device=device, name=name)
