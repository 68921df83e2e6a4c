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
    """The string section of ``strings`` (see the module doc)."""
    offsets = np.zeros(len(strings) + 1, dtype="<u4")
    np.cumsum(_utf8_lengths(strings), out=offsets[1:])
    return struct.pack("<I", len(strings)) + offsets.tobytes() + "".join(strings).encode("utf-8")


def _utf8_lengths(strings: list[str]) -> np.ndarray:
    """Byte length of each string once utf-8 encoded (int64). One ``encode`` per string only
    when some string is not ASCII: for ASCII text characters are bytes."""
    if all(map(str.isascii, strings)):
        return np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    return np.fromiter((len(x.encode("utf-8")) for x in strings), dtype=np.int64,
                       count=len(strings))


#: String sections remembered per thread (``_decode_strings``): at most this many, oldest
#: forgotten first. A hub serving the 38 districts of the city keeps each one's table.
STRINGS_CACHE_SIZE = 64
#: Separator ``_split_strings`` puts between the strings (NUL: the zeros it starts from);
#: sections holding it are sliced instead.
_SEP = 0


def _decode_strings(buf: memoryview, expected: int) -> tuple[str, ...]:
    """The ``expected`` strings of a frame's string section, as a tuple (shared: the same
    object is returned for the same section bytes, so it must not be -- and, a tuple, cannot
    be -- changed by callers).

    Each thread keeps the last ``STRINGS_CACHE_SIZE`` sections' strings keyed by the
    section's bytes: a frame repeating a table seen shortly before (an edge keeping its
    district's device table from frame to frame) costs one copy and hash of the section
    (~1 GB/s) instead of ~100 ns a string. A new table costs that hash on top (~3 us for a
    district's 500 strings) -- edges that list devices in arrival order send a new table
    with nearly every frame."""
    if len(buf) < 4:
        raise FrameError("truncated", "string section missing")
    (k,) = struct.unpack_from("<I", buf, 0)
    if k != expected:
        raise FrameError("bad_strings", f"{k} strings, header implies {expected}")
    cache: dict[bytes, tuple[str, ...]] | None = getattr(_tls, "strings", None)
    if cache is None:
        cache = _tls.strings = {}
    key = bytes(buf)
    strings = cache.get(key)
    if strings is not None:
        return strings
    strings = _parse_strings(buf, k)
    if len(cache) >= STRINGS_CACHE_SIZE:
        del cache[next(iter(cache))]  # the oldest (dicts keep insertion order)
    cache[key] = strings
    return strings


def _parse_strings(buf: memoryview, k: int) -> tuple[str, ...]:
    """Validate and decode a string section of ``k`` strings (count already checked)."""
    end_off = 4 + 4 * (k + 1)
    if len(buf) < end_off:
        raise FrameError("truncated", "string offsets cut short")
    offsets = np.frombuffer(buf, dtype="<u4", count=k + 1, offset=4)
    blob = bytes(buf[end_off:])
    if offsets[0] != 0 or (offsets[1:] < offsets[:-1]).any() or offsets[-1] != len(blob):
        raise FrameError("bad_strings", "string offsets are not monotonic or do not fit")
    if k > 1 and blob.find(_SEP) < 0:
        try:
            return _split_strings(blob, offsets)
        except UnicodeDecodeError:
            pass  # the slicing below raises with the message of the first bad string
    bounds = offsets.tolist()  # plain ints: numpy scalar indexing per string is ~10x slower
    if blob.isascii():  # one decode, then str slices (byte = char offsets)
        text = blob.decode("ascii")
        return tuple([text[a:b] for a, b in pairwise(bounds)])
    try:
        return tuple([blob[bounds[i]:bounds[i + 1]].decode("utf-8") for i in range(k)])
    except UnicodeDecodeError as exc:
        raise FrameError("bad_strings", f"invalid utf-8: {exc}") from None


def _split_strings(blob: bytes, offsets: np.ndarray) -> tuple[str, ...]:
    """The strings of ``blob`` at monotonic ``offsets`` (``k + 1`` of them, ``k > 1``, the
    last ``len(blob)``), which holds no ``_SEP`` byte: ``_SEP`` is put between them (numpy)
    and the text split on it, so the ``k`` string objects are made in C instead of a slice
    each in Python (~2x faster for a district's table). UnicodeDecodeError if a string is
    not utf-8 (a ``_SEP`` between two strings neither completes nor hides a broken
    sequence)."""
    k = offsets.shape[0] - 1
    joined = np.zeros(len(blob) + k - 1, dtype=np.uint8)  # zeros: _SEP
    is_sep = np.zeros(joined.shape[0], dtype=np.bool_)
    is_sep[offsets[1:-1] + np.arange(k - 1)] = True  # separator i follows string i
    joined[~is_sep] = np.frombuffer(blob, dtype=np.uint8)
    return tuple(joined.tobytes().decode("utf-8").split("\0"))


def encode_frame(district: str, frame_seq: int, created_ns: int,
                 devices: list[str], systems: list[str], names: list[str],
                 ts_ns: np.ndarray, value: np.ndarray, seq: np.ndarray,
                 device: np.ndarray, name: np.ndarray, *, compress: bool = True,
                 level: int = 1) -> bytes:
    """Pack columns into a frame. Columns are cast to their wire dtypes; lengths must match.

    ``devices[i]`` and ``systems[i]`` describe device index ``i``; ``names[j]`` name index ``j``.
    """
    return encode_frame_with(encode_string_section(district, devices, systems, names),
                             frame_seq, created_ns, ts_ns, value, seq, device, name,
                             compress=compress, level=level)


def encode_frame_with(strings: StringSection, frame_seq: int, created_ns: int,
                      ts_ns: np.ndarray, value: np.ndarray, seq: np.ndarray,
                      device: np.ndarray, name: np.ndarray, *, compress: bool = True,
                      level: int = 1) -> bytes:
    """``encode_frame`` with the string section already encoded (``encode_string_section``
    or ``DeviceStrings.section``): the same bytes, without re-encoding a table that repeats
    frame after frame. Columns are cast to their wire dtypes; lengths must match."""
    n = len(ts_ns)
    if not (len(value) == len(seq) == len(device) == len(name) == n):
        raise ValueError("all reading columns must have the same length")
    body = FrameBody(n, strings)
    body.ts_ns[:] = np.ascontiguousarray(ts_ns, dtype="<i8")
    body.value[:] = np.ascontiguousarray(value, dtype="<f8")
    body.seq[:] = np.ascontiguousarray(seq, dtype="<u4")
    body.device[:] = np.ascontiguousarray(device, dtype="<u4")
    body.name[:] = np.ascontiguousarray(name, dtype="<u2")
    return body.seal(frame_seq, created_ns, compress=compress, level=level)


@dataclass(frozen=True, slots=True)
class StringSection:
    """An encoded string section (see the module doc) and the table sizes it holds:
    ``1 + 2 * n_devices + n_names`` strings."""

    data: bytes
    n_devices: int
    n_names: int


def encode_string_section(district: str, devices: list[str], systems: list[str],
                          names: list[str]) -> StringSection:
    """The string section of a frame of ``district`` whose device ``i`` is
    ``(devices[i], systems[i])`` and name ``j`` is ``names[j]``."""
    if len(devices) != len(systems):
        raise ValueError("devices and systems must have the same length")
    pairs: list[str] = [""] * (2 * len(devices))
    pairs[0::2] = devices
    pairs[1::2] = systems
    return StringSection(_encode_strings([district, *pairs, *names]), len(devices), len(names))


class DeviceStrings:
    """A district's whole device table, encoded once, from which the string section of a
    frame naming any *ranges* of it is sliced (no per-string work per frame).

    ``section(ranges)`` is byte-identical to ``encode_string_section(district,
    devices[a:b] + ..., systems[a:b] + ..., names)`` for the half-open device index ranges
    ``(a, b)`` in order. A frame's readings then index devices by their rank in the
    concatenated ranges.
    """

    def __init__(self, district: str, devices: list[str], systems: list[str],
                 names: list[str]) -> None:
        if len(devices) != len(systems):
            raise ValueError("devices and systems must have the same length")
        pairs: list[str] = [""] * (2 * len(devices))
        pairs[0::2] = devices
        pairs[1::2] = systems
        self.n_devices = len(devices)
        self.n_names = len(names)
        self._district = district.encode("utf-8")
        self._pairs = "".join(pairs).encode("utf-8")
        #: Byte offset in ``_pairs`` where string ``j`` (device ``j // 2``: id, system) starts;
        #: ``2 * n_devices + 1`` entries, the last one the blob's length.
        self._pair_at = np.zeros(2 * len(devices) + 1, dtype=np.int64)
        np.cumsum(_utf8_lengths(pairs), out=self._pair_at[1:])
        self._names = "".join(names).encode("utf-8")
        self._name_at = np.zeros(len(names) + 1, dtype=np.int64)
        np.cumsum(_utf8_lengths(names), out=self._name_at[1:])

    def section(self, ranges: tuple[tuple[int, int], ...]) -> StringSection:
        """The string section naming devices ``a .. b - 1`` of each ``(a, b)`` in ``ranges``,
        in that order (each ``0 <= a <= b <= n_devices``), then every name."""
        for a, b in ranges:
            if not 0 <= a <= b <= self.n_devices:
                raise ValueError(f"device range ({a}, {b}) is outside [0, {self.n_devices}]")
        d = sum(b - a for a, b in ranges)
        # Offsets: the district, each range's pair strings shifted to where its bytes land,
        # then the names; blobs are plain slices of the blobs built once.
        parts: list[np.ndarray] = [np.array([0, len(self._district)], dtype=np.int64)]
        blobs: list[bytes] = [self._district]
        at = len(self._district)
        for a, b in ranges:
            ends = self._pair_at[2 * a + 1:2 * b + 1]
            parts.append(ends + (at - self._pair_at[2 * a]))
            blobs.append(self._pairs[self._pair_at[2 * a]:self._pair_at[2 * b]])
            at += int(self._pair_at[2 * b] - self._pair_at[2 * a])
        parts.append(self._name_at[1:] + at)
        blobs.append(self._names)
        offsets = np.concatenate(parts).astype("<u4")
        k = 1 + 2 * d + self.n_names
        return StringSection(struct.pack("<I", k) + offsets.tobytes() + b"".join(blobs), d,
                             self.n_names)


class FrameBody:
    """A writable frame body of ``n`` readings with ``strings`` already in place: fill the
    column views (wire dtypes, little-endian) and ``seal``. Reusable: sealing copies (or
    compresses) the body, so the same buffer can carry the next frame of this ``n`` and
    table; bytes nobody writes (the padding) stay zero."""

    def __init__(self, n: int, strings: StringSection) -> None:
        o_ts, o_val, o_seq, o_dev, o_name, o_str = _column_layout(n)
        self.n = n
        self.strings = strings
        self.buffer = bytearray(o_str + len(strings.data))
        self.buffer[o_str:] = strings.data
        self.ts_ns = np.frombuffer(self.buffer, dtype="<i8", count=n, offset=o_ts)
        self.value = np.frombuffer(self.buffer, dtype="<f8", count=n, offset=o_val)
        self.seq = np.frombuffer(self.buffer, dtype="<u4", count=n, offset=o_seq)
        self.device = np.frombuffer(self.buffer, dtype="<u4", count=n, offset=o_dev)
        self.name = np.frombuffer(self.buffer, dtype="<u2", count=n, offset=o_name)

    def seal(self, frame_seq: int, created_ns: int, *, compress: bool = True,
             level: int = 1) -> bytes:
        """The frame (header + body as sent), zstd ``level`` if ``compress``."""
        flags = 0
        sent: bytes
        if compress:
            sent = _compressor(level).compress(self.buffer)
            flags |= FLAG_ZSTD
        else:
            sent = bytes(self.buffer)
        header = HEADER.pack(MAGIC, VERSION, flags, HEADER_LEN, self.n, self.strings.n_devices,
                             self.strings.n_names, frame_seq, created_ns, len(sent),
                             len(self.buffer), zlib.crc32(sent))
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
    # ufunc.reduce: the reduction without ndarray.max's Python-level wrapper
    if n and (int(np.maximum.reduce(device)) >= d or int(np.maximum.reduce(name)) >= m):
        raise FrameError("bad_index", "a reading refers past the device or name table")
    return Frame(
        district=strings[0], frame_seq=frame_seq, created_ns=created_ns,
        devices=list(strings[1:1 + 2 * d:2]), systems=list(strings[2:2 + 2 * d:2]),
        names=list(strings[1 + 2 * d:]),
        ts_ns=np.frombuffer(rv, dtype="<i8", count=n, offset=o_ts),
        value=np.frombuffer(rv, dtype="<f8", count=n, offset=o_val),
        seq=np.frombuffer(rv, dtype="<u4", count=n, offset=o_seq),
        device=device, name=name)
