"""InfluxDB line protocol (1.x and 2.x), escaped correctly and rendered without Python per
point.

A line is ``measurement[,tag=value...] field=value[,field=value...] timestamp_ns\\n``. Each
series' escaped ``measurement,tags `` prefix is built once, in Python, by
``series_prefix`` and stored in a ``PrefixTable``; numba renderers then write whole batches
of lines into one preallocated buffer.

Escaping rules (InfluxDB 1.x/2.x):

* measurement: ``,`` and space are escaped with a backslash;
* tag keys, tag values, field keys: ``,``, ``=`` and space are escaped;
* string field values (``escape_string_field``): ``"`` and ``\\`` are escaped; the caller
  wraps the result in double quotes.

What is rejected, with ``LineProtocolError`` (a ``ValueError``), and why:

* empty names (InfluxDB rejects empty measurements, keys and tag values);
* any control character, U+0000-U+001F and U+007F: a newline would start a new line (line
  injection), a tab or NUL is whitespace to the parser;
* measurement, tag keys and field keys starting with ``_`` (reserved by InfluxDB); tag
  *values* may start with ``_``;
* tag and field keys equal to ``time`` (InfluxDB 1.x drops such tags and fields);
* a measurement starting with ``#`` (the line would be a comment);
* in names, a backslash directly before ``,``, ``=``, space or ``"``, or at the end. InfluxDB
  does not escape backslashes in names: its tag scanner treats any character after a
  backslash as escaped (so a trailing ``\\`` swallows the following delimiter), its field
  scanner skips backslash pairs, and its measurement/field-key unescaper also turns ``\\=``
  and ``\\"`` into ``=`` and ``"``. A backslash anywhere else (``C:\\temp``, ``a\\\\b``) is
  read back literally by every one of those code paths, as is any Unicode.
* strings that are not valid UTF-8 (lone surrogates).

Number formatting (the renderers): float fields are decimal with no exponent below 1e9 in
magnitude (up to 9 fractional digits, correctly rounded half-to-even, trailing zeros
trimmed but at least one digit after the point: ``35.2``, ``3.0``, ``-0.001``, ``0.0``; the
absolute error is at most 5e-10); from 1e9 to 9.2e18 the value rounded (half-to-even) to an
integer followed by ``.0`` (absolute error at most 0.5); above, scientific notation with 15
significant digits (``1.23456789012345e+20``; relative error below 2e-14: the scaling is done
in floating point, so the last digit may differ from a correctly rounded one), capped at
``1.79769313486231e+308`` so the text never rounds past the float range. Anything that
rounds to zero, including ``-0.0``, is ``0.0``. NaN and ±inf are never written (InfluxDB
rejects them). Integer fields given as float64 (``render_multi``'s ``is_int``): the value
truncated to int64, then ``i``; NaN, ±inf and values outside int64 are not written. Exact
integer fields (``render_multi``'s ``int64_values``): the int64 in decimal, then ``i``, always
written. Timestamps: int64 nanoseconds, decimal, may be negative.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import overload

from hub.kernel_config import CACHE, EXACT, NOGIL

__all__ = [
    "LineProtocolError",
    "PrefixTable",
    "SplicedPrefixes",
    "escape_key",
    "escape_measurement",
    "escape_string_field",
    "escape_tag_value",
    "render_merged",
    "render_multi",
    "render_single",
    "series_prefix",
]


class LineProtocolError(ValueError):
    """A name or value that cannot be written as line protocol without changing meaning."""


# --------------------------------------------------------------------------------------------
# Escaping (Python, once per series)
# --------------------------------------------------------------------------------------------

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_CONTROL_BYTES = re.compile(b"[\x00-\x1f\x7f]")
_BAD_BACKSLASH = re.compile(r'\\(?=[,= "]|\Z)')
_MEAS_TABLE = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_TABLE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_TABLE = str.maketrans({'"': '\\"', "\\": "\\\\"})


def _check(s: object, what: str, *, name: bool, underscore_ok: bool = False) -> str:
    if not isinstance(s, str):
        raise LineProtocolError(f"{what} must be a str, got {type(s).__name__}")
    if name and not s:
        raise LineProtocolError(f"{what} must not be empty")
    m = _CONTROL.search(s)
    if m:
        raise LineProtocolError(
            f"{what} {s!r} contains control character U+{ord(m.group()):04X} at index "
            f"{m.start()}; remove it (a newline would inject a line)")
    if name and not underscore_ok and s.startswith("_"):
        raise LineProtocolError(f"{what} {s!r} starts with '_', which InfluxDB reserves")
    if name:
        m = _BAD_BACKSLASH.search(s)
        if m:
            where = "at the end" if m.start() == len(s) - 1 else (
                f"before {s[m.start() + 1]!r} at index {m.start()}")
            raise LineProtocolError(
                f"{what} {s!r} has a backslash {where}: InfluxDB would read it as an escape "
                "sequence; drop or replace that backslash")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LineProtocolError(f"{what} {s!r} is not valid UTF-8: {exc.reason}") from None
    return s


def escape_measurement(s: str) -> str:
    """Escape a measurement name (``,`` and space). Raises ``LineProtocolError`` for empty,
    control characters, a leading ``_`` or ``#``, or a backslash before ``,=" `` or last."""
    _check(s, "measurement", name=True)
    if s.startswith("#"):
        raise LineProtocolError(f"measurement {s!r} starts with '#': the line would be a "
                                "comment")
    return s.translate(_MEAS_TABLE)


def escape_key(s: str) -> str:
    """Escape a tag key or field key (``,``, ``=``, space). Raises ``LineProtocolError`` for
    empty, control characters, a leading ``_``, ``time``, or a backslash before ``,=" `` or
    last."""
    _check(s, "key", name=True)
    if s == "time":
        raise LineProtocolError("'time' cannot be a tag or field key: InfluxDB drops it")
    return s.translate(_KEY_TABLE)


def escape_tag_value(s: str) -> str:
    """Escape a tag value like a key; unlike keys it may start with ``_`` or be ``time``."""
    _check(s, "tag value", name=True, underscore_ok=True)
    return s.translate(_KEY_TABLE)


def escape_string_field(s: str) -> str:
    """Escape a string field value (``"`` and ``\\``), without the surrounding quotes.

    The empty string is valid (``f=""``). Control characters raise ``LineProtocolError``."""
    _check(s, "string field value", name=False)
    return s.translate(_STRING_TABLE)


def series_prefix(measurement: str,
                  tags: Mapping[str, str] | Sequence[tuple[str, str]],
                  field_key: str | None = None) -> bytes:
    """``measurement,k1=v1,k2=v2 `` escaped and UTF-8 encoded, tags sorted by escaped key
    bytes (InfluxDB's own order, so the server skips re-sorting), then ``field_key=`` if a
    field key is given (the prefix ``render_single`` wants; ``render_multi`` wants none).

    Raises ``LineProtocolError`` for anything ``escape_*`` rejects and duplicate tag keys.
    """
    items = list(tags.items()) if isinstance(tags, Mapping) else list(tags)
    parts = sorted((_escaped(escape_key, k), _escaped(escape_tag_value, v)) for k, v in items)
    for (a, _), (b, _) in itertools.pairwise(parts):
        if a == b:
            raise LineProtocolError(f"duplicate tag key {a.decode()!r}")
    out = bytearray(_escaped(escape_measurement, measurement))
    for key, val in parts:
        out += b"," + key + b"=" + val
    out += b" "
    if field_key is not None:
        out += _escaped(escape_key, field_key) + b"="
    return bytes(out)


def _escaped(escape: Callable[[str], str], s: str) -> bytes:
    """``escape(s)`` UTF-8 encoded; for a str, remembered (``_escaped_str``): the same names
    and tag values (districts, systems, measurement names) recur in every prefix built, and
    each escape is a dozen checks. Anything else goes to ``escape`` to be rejected."""
    if type(s) is str:
        return _escaped_str(escape, s)
    return escape(s).encode("utf-8")


@functools.lru_cache(maxsize=1 << 16)
def _escaped_str(escape: Callable[[str], str], s: str) -> bytes:
    return escape(s).encode("utf-8")


class PrefixTable:
    """Append-only table of escaped series prefixes: one uint8 blob plus int64 offsets
    (``offsets[i]:offsets[i+1]`` is prefix ``i``). Capacity doubles as it fills."""

    def __init__(self, initial_bytes: int = 1 << 16, initial_rows: int = 1 << 10) -> None:
        self._blob = np.empty(max(16, int(initial_bytes)), dtype=np.uint8)
        self._offsets = np.zeros(max(2, int(initial_rows) + 1), dtype=np.int64)
        self._n = 0
        self._max_len = 0

    def add(self, prefix: bytes) -> int:
        """Append ``prefix`` (from ``series_prefix``) and return its index."""
        return self.add_many([prefix])

    def add_many(self, prefixes: list[bytes], *, validate: bool = True) -> int:
        """Append several prefixes in one copy; returns the index of the first. Validates
        all before appending any (LineProtocolError), unless the caller built them from
        escaped parts (``validate=False``)."""
        for prefix in prefixes if validate else ():
            if not isinstance(prefix, bytes | bytearray) or not prefix:
                raise LineProtocolError("a prefix must be non-empty bytes from series_prefix()")
            if prefix[-1:] not in (b" ", b"=") or _CONTROL_BYTES.search(prefix):
                raise LineProtocolError(
                    f"{bytes(prefix)!r} is not a series prefix: it must end with ' ' or '=' "
                    "and hold no control bytes; build it with series_prefix()")
        n, end = self._n, int(self._offsets[self._n])
        joined = b"".join(prefixes)
        need = end + len(joined)
        if need > self._blob.shape[0]:
            blob = np.empty(max(need, 2 * self._blob.shape[0]), dtype=np.uint8)
            blob[:end] = self._blob[:end]
            self._blob = blob
        k = len(prefixes)
        if n + k + 1 > self._offsets.shape[0]:
            offsets = np.zeros(max(n + k + 1, 2 * self._offsets.shape[0]), dtype=np.int64)
            offsets[: n + 1] = self._offsets[: n + 1]
            self._offsets = offsets
        self._blob[end:need] = np.frombuffer(joined, dtype=np.uint8)
        lengths = [len(p) for p in prefixes]
        self._offsets[n + 1:n + k + 1] = list(itertools.accumulate(lengths, initial=end))[1:]
        self._n = n + k
        self._max_len = max(self._max_len, *lengths)
        return n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> bytes:
        if not 0 <= i < self._n:
            raise IndexError(f"prefix {i} out of range 0..{self._n - 1}")
        return self._blob[self._offsets[i]:self._offsets[i + 1]].tobytes()

    @property
    def blob(self) -> np.ndarray:
        """The used part of the byte blob (a view; do not modify)."""
        return self._blob[: self._offsets[self._n]]

    @property
    def offsets(self) -> np.ndarray:
        """int64[len + 1] start offsets (a view; do not modify)."""
        return self._offsets[: self._n + 1]

    @property
    def max_len(self) -> int:
        return self._max_len

    def kernel_source(self) -> tuple[np.ndarray, np.ndarray]:
        """What the renderers' kernels read: ``(blob, offsets)``."""
        return self.blob, self.offsets


class SplicedPrefixes:
    """Series prefixes spliced at render time from shared parts, not stored whole.

    A city's series prefixes repeat the same device tags in every measurement of the device
    and in every table (raw, each aggregate resolution): stored whole they were ~180 bytes
    per series per table, ~0.7 KB per series in all. Here prefix ``i`` is the five pieces::

        fixed[3k] + parts[2d] + fixed[3k + 1] + parts[2d + 1] + fixed[3k + 2]

    with ``k = key[i]`` (which measurement of which kind: ``fixed`` holds its three
    pieces, a handful of rows per table) and ``d = device[i]`` (``parts`` holds two pieces
    per device, shared by every table). E.g. ``agg_10s,`` + ``device=D,district=X`` +
    ``,kind=air,m=pm2_5`` + ``,system=S`` + `` ``. ``device`` and ``key`` are views the owner
    refreshes as it registers series; all pieces are escaped line protocol, built by the
    owner (``hub.series``), and the renderers copy them as they are. Every ``fixed[3k + 2]``
    is non-empty (it ends the prefix: ``' '`` or ``'field='``).
    """

    def __init__(self, fixed: PrefixTable, parts: PrefixTable,
                 device: Callable[[], np.ndarray], key: Callable[[], np.ndarray]) -> None:
        self._fixed = fixed
        self._parts = parts
        self._device = device
        self._key = key

    def __len__(self) -> int:
        return len(self._device())

    def __getitem__(self, i: int) -> bytes:
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"prefix {i} out of range 0..{n - 1}")
        k, d = 3 * int(self._key()[i]), 2 * int(self._device()[i])
        f, p = self._fixed, self._parts
        return b"".join((f[k], p[d], f[k + 1], p[d + 1], f[k + 2]))

    def kernel_source(self) -> tuple[np.ndarray, ...]:
        """What the renderers' kernels read: ``(fixed blob, fixed offsets, parts blob, parts
        offsets, device, key)``."""
        f, p = self._fixed, self._parts
        return f.blob, f.offsets, p.blob, p.offsets, self._device(), self._key()


PrefixSource = PrefixTable | SplicedPrefixes


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------

#: Widest rendered float field (``-1000000000.0`` .. ``-9199999999999999999.0``: 22 bytes;
#: scientific ``-1.23456789012345e+308``: 22 bytes).
FLOAT_MAX_WIDTH = 22
#: Widest integer field: ``-9223372036854775808i``.
INT_MAX_WIDTH = 21
#: Widest timestamp: ``-9223372036854775808``.
TS_MAX_WIDTH = 20

# Kernel arithmetic on positions and digits is uint64 on purpose: numba adds a negative-index
# wraparound test to every signed index, which blocks vectorisation (a 10x slower prefix
# copy), and unsigned division by a constant is a multiply. Never mix uint64 with int64 in
# one expression (numba's rule makes that float64): every constant below is typed.
_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)
_U9 = np.uint64(9)
_U10 = np.uint64(10)
_U14 = np.uint64(14)
_U20 = np.uint64(20)
_U100 = np.uint64(100)
_U1E9 = np.uint64(1_000_000_000)
_U1E14 = np.uint64(100_000_000_000_000)
_MANT_MAX = np.uint64(179_769_313_486_231)  # 1.79769313486232e308 would parse as +inf
_DIGITS2 = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype=np.uint8)
_POW10U = np.array([10**i for i in range(20)], dtype=np.uint64)
_POW10F = np.array([10.0**i for i in range(23)], dtype=np.float64)  # exact up to 1e22
_TWO63 = 9223372036854775808.0
_CH_MINUS = 45
_CH_DOT = 46
_CH_ZERO = 48
_CH_SPACE = 32
_CH_COMMA = 44
_CH_EQ = 61
_CH_NL = 10
_CH_I = 105
_CH_E = 101
_CH_PLUS = 43


# The writers below are inlined into the renderers (``inline="always"``): called, each of
# them cost reference-count updates of ``buf`` per field written -- a third of the time to
# render a window row, measured (200 against 300 ns for eight fields). Same code, same bytes.


@njit(cache=CACHE, fastmath=EXACT, inline="always")
def _write_fixed(buf, pos, x, nd):
    """Write exactly ``nd`` decimal digits of ``x < 10**nd`` (zero-padded) at ``pos``; all
    three uint64. Returns the position after them."""
    end = pos + nd
    p = end
    while p - pos >= _U2:
        q = x // _U100
        r = (x - q * _U100) * _U2
        buf[p - _U1] = _DIGITS2[r + _U1]
        buf[p - _U2] = _DIGITS2[r]
        p -= _U2
        x = q
    if p > pos:
        buf[p - _U1] = _DIGITS2[x * _U2 + _U1]
    return end


@njit(cache=CACHE, fastmath=EXACT, inline="always")
def _write_uint(buf, pos, x):
    """Write uint64 ``x`` in decimal."""
    nd = _U1
    while nd < _U20 and x >= _POW10U[nd]:
        nd += _U1
    return _write_fixed(buf, pos, x, nd)


@njit(cache=CACHE, fastmath=EXACT, inline="always")
def _write_int(buf, pos, x):
    """Write int64 ``x`` in decimal (``INT64_MIN`` included)."""
    if x < 0:
        buf[pos] = _CH_MINUS
        return _write_uint(buf, pos + _U1, np.uint64(-(x + 1)) + _U1)
    return _write_uint(buf, pos, np.uint64(x))


@njit(cache=CACHE, fastmath=EXACT, inline="always")
def _round_frac9(frac):
    """``round_half_even(frac * 1e9)`` exactly, as uint64, for ``0 <= frac < 1``.

    The product is formed without error: a Veltkamp split ``frac = hi + lo`` (26 + 26 bits)
    makes ``hi * 1e9`` and ``lo * 1e9`` exact (1e9 has 21 significant bits), Fast2Sum gives
    ``p + err`` = the exact product, and the tie/near-tie is decided on ``err``. Needs strict
    IEEE arithmetic (``EXACT``: no reassociation, no contraction).
    """
    if frac < 1e-10:  # frac * 1e9 < 0.1
        return _U0
    c = 134217729.0 * frac  # 2**27 + 1
    hi = c - (c - frac)
    lo = frac - hi
    a = hi * 1e9
    b = lo * 1e9
    p = a + b
    err = (a - p) + b
    f = np.floor(p)
    d = p - f
    r = np.uint64(f)
    if d > 0.5 or (d == 0.5 and (err > 0.0 or (err == 0.0 and (r & _U1) == _U1))):
        r += _U1
    return r


@njit(cache=CACHE, fastmath=EXACT, inline="always")
def _write_float(buf, pos, v):
    """Write a finite float64 as documented in the module docstring; returns the new pos."""
    a = abs(v)
    if a < 1e9:
        ip = np.floor(a)
        f9 = _round_frac9(a - ip)
        ipu = np.uint64(ip)
        if f9 >= _U1E9:
            ipu += _U1
            f9 -= _U1E9
        if ipu == _U0 and f9 == _U0:
            buf[pos] = _CH_ZERO
            buf[pos + _U1] = _CH_DOT
            buf[pos + _U2] = _CH_ZERO
            return pos + _U3
        if v < 0.0:
            buf[pos] = _CH_MINUS
            pos += _U1
        pos = _write_uint(buf, pos, ipu)
        buf[pos] = _CH_DOT
        pos += _U1
        if f9 == _U0:
            buf[pos] = _CH_ZERO
            return pos + _U1
        nd = _U9
        while f9 % _U10 == _U0:
            f9 //= _U10
            nd -= _U1
        return _write_fixed(buf, pos, f9, nd)
    if v < 0.0:
        buf[pos] = _CH_MINUS
        pos += _U1
    if a < 9.2e18:
        pos = _write_uint(buf, pos, np.uint64(np.rint(a)))
        buf[pos] = _CH_DOT
        buf[pos + _U1] = _CH_ZERO
        return pos + _U2
    # scientific: 15 significant digits, mantissa m in [1e14, 1e15)
    e10 = np.int64(np.floor(np.log10(a)))
    m = 0.0
    for _ in range(3):  # log10 may be off by one near powers of ten: renormalise
        k = e10 - 14  # >= 4
        m = a
        while k > 22:
            m /= 1e22
            k -= 22
        m = np.rint(m / _POW10F[k])
        if m >= 1e15:
            e10 += 1
        elif m < 1e14:
            e10 -= 1
        else:
            break
    mu = np.uint64(m)
    if e10 == 308 and mu > _MANT_MAX:
        mu = _MANT_MAX
    lead = mu // _U1E14
    rest = mu - lead * _U1E14
    buf[pos] = _DIGITS2[lead * _U2 + _U1]
    buf[pos + _U1] = _CH_DOT
    pos += _U2
    if rest == _U0:
        buf[pos] = _CH_ZERO
        pos += _U1
    else:
        nd = _U14
        while rest % _U10 == _U0:
            rest //= _U10
            nd -= _U1
        pos = _write_fixed(buf, pos, rest, nd)
    buf[pos] = _CH_E
    buf[pos + _U1] = _CH_PLUS
    pos += _U2
    eu = np.uint64(e10)
    return _write_fixed(buf, pos, eu, _U3 if eu >= _U100 else _U2)


@njit(cache=CACHE, fastmath=EXACT, inline="always")
def _copy(buf, pos, src, a, b):
    """Copy ``src[a:b]`` to ``buf[pos:]`` (uint64 positions); returns the new pos."""
    n = b - a
    k = _U0
    while k < n:
        buf[pos + k] = src[a + k]
        k += _U1
    return pos + n


# A prefix source is a ``PrefixTable``'s ``(blob, offsets)`` or a ``SplicedPrefixes``'
# six arrays (``kernel_source()``). The three helpers below are specialised on which one at
# compile time (numba ``overload`` on the tuple's length), so each renderer is compiled once
# per kind of table and neither pays for the other. ``inline="never"`` at numba's level on
# purpose: inlining these overloads into the renderers' IR miscompiled the number writers
# after them in numba 0.68 (wrong digits, caught by the float examples test); LLVM still
# inlines them, and the renderers run as fast as with the plain copy (measured).


def _prefix_count(src):  # compiled only (overload below)
    raise NotImplementedError


def _prefix_size(src, j):
    raise NotImplementedError


def _put_prefix(buf, pos, src, j):
    raise NotImplementedError


def _is_plain(src: object) -> bool:
    return isinstance(src, types.BaseTuple) and len(src) == 2


@overload(_prefix_count, inline="never")
def _ol_prefix_count(src):
    if _is_plain(src):
        return lambda src: src[1].shape[0] - 1
    return lambda src: src[4].shape[0]


@overload(_prefix_size, inline="never")
def _ol_prefix_size(src, j):
    """(length in bytes, last byte) of prefix ``j``."""
    if _is_plain(src):
        def plain(src, j):
            blob, offsets = src[0], src[1]
            return offsets[j + 1] - offsets[j], blob[offsets[j + 1] - 1]
        return plain

    def spliced(src, j):
        fblob, foff, _, poff, device, key = src
        k = 3 * np.int64(key[j])
        d = 2 * np.int64(device[j])
        size = foff[k + 3] - foff[k] + poff[d + 2] - poff[d]
        return size, fblob[foff[k + 3] - 1]
    return spliced


@overload(_put_prefix, inline="never")
def _ol_put_prefix(buf, pos, src, j):
    """Copy prefix ``j`` to ``buf[pos:]``; returns the new pos (uint64)."""
    if _is_plain(src):
        def plain(buf, pos, src, j):
            blob = src[0]
            a = np.uint64(src[1][j])
            n = np.uint64(src[1][j + 1]) - a
            q = _U0
            while q < n:
                buf[pos + q] = blob[a + q]
                q += _U1
            return pos + n
        return plain

    def spliced(buf, pos, src, j):
        fblob, foff, pblob, poff, device, key = src
        k = 3 * np.int64(key[j])
        d = 2 * np.int64(device[j])
        pos = _copy(buf, pos, fblob, np.uint64(foff[k]), np.uint64(foff[k + 1]))
        pos = _copy(buf, pos, pblob, np.uint64(poff[d]), np.uint64(poff[d + 1]))
        pos = _copy(buf, pos, fblob, np.uint64(foff[k + 1]), np.uint64(foff[k + 2]))
        pos = _copy(buf, pos, pblob, np.uint64(poff[d + 1]), np.uint64(poff[d + 2]))
        return _copy(buf, pos, fblob, np.uint64(foff[k + 2]), np.uint64(foff[k + 3]))
    return spliced


@njit(cache=CACHE, fastmath=EXACT, nogil=NOGIL)
def _bound(src, idx, last_char, per_row):
    """Validate prefix indices and bound the output size. Returns (bound, bad_row, code):
    code 0 ok, 1 index out of range, 2 prefix not ending with ``last_char``."""
    n_prefix = _prefix_count(src)
    bound = 0
    for i in range(idx.shape[0]):
        j = idx[i]
        if j < 0 or j >= n_prefix:
            return 0, i, 1
        size, last = _prefix_size(src, j)
        if last != last_char:
            return 0, i, 2
        bound += size + per_row
    return bound, -1, 0


@njit(cache=CACHE, fastmath=EXACT, nogil=NOGIL)
def _render_single(src, idx, value, ts_ns, buf):
    """Write one line per finite value into ``buf`` (sized by ``_bound``); returns
    (bytes used, lines written)."""
    pos = _U0
    lines = 0
    for i in range(idx.shape[0]):
        v = value[i]
        if not np.isfinite(v):
            continue
        pos = _put_prefix(buf, pos, src, idx[i])
        pos = _write_float(buf, pos, v)
        buf[pos] = _CH_SPACE
        pos = _write_int(buf, pos + _U1, ts_ns[i])
        buf[pos] = _CH_NL
        pos += _U1
        lines += 1
    return pos, lines


@njit(cache=CACHE, fastmath=EXACT, nogil=NOGIL)
def _render_multi(src, idx, values, is_int, kblob, koffsets, ts_ns, buf, exact):
    """Like ``_render_single`` for k fields per row; ``kblob`` holds ``key=`` per field,
    the k float fields' then the m exact integer fields' (``koffsets``: k + m + 1).

    ``exact`` is None (no exact integer fields) or int64[n, m], each written as is with
    ``i`` after the float fields (so every row gives a line). None is a compile-time
    constant here: numba prunes the ``exact`` branch from the float-only specialisation
    (every caller without exact integers), whose loop thus compiles to the same code as
    before they existed (compared on the assembly): the hot aggregate path pays nothing."""
    k = values.shape[1]
    pos = _U0
    lines = 0
    for i in range(idx.shape[0]):
        start = pos
        pos = _put_prefix(buf, pos, src, idx[i])
        written = 0
        for f in range(k):
            v = values[i, f]
            if not np.isfinite(v):
                continue
            if is_int[f] and not (-_TWO63 <= v < _TWO63):
                continue
            if written:
                buf[pos] = _CH_COMMA
                pos += _U1
            pos = _copy(buf, pos, kblob, np.uint64(koffsets[f]), np.uint64(koffsets[f + 1]))
            if is_int[f]:
                pos = _write_int(buf, pos, np.int64(v))
                buf[pos] = _CH_I
                pos += _U1
            else:
                pos = _write_float(buf, pos, v)
            written += 1
        if exact is not None:
            for g in range(exact.shape[1]):
                if written:
                    buf[pos] = _CH_COMMA
                    pos += _U1
                pos = _copy(buf, pos, kblob, np.uint64(koffsets[k + g]),
                            np.uint64(koffsets[k + g + 1]))
                pos = _write_int(buf, pos, exact[i, g])
                buf[pos] = _CH_I
                pos += _U1
                written += 1
        if written == 0:
            pos = start
            continue
        buf[pos] = _CH_SPACE
        pos = _write_int(buf, pos + _U1, ts_ns[i])
        buf[pos] = _CH_NL
        pos += _U1
        lines += 1
    return pos, lines


@njit(cache=CACHE, fastmath=EXACT, nogil=NOGIL)
def _render_merged(src, idx, value, ts_ns, buf):
    """``_render_single`` for a ``SplicedPrefixes`` source whose last piece is `` field=``,
    with consecutive rows of one device and one timestamp in one line, while their prefix
    indices increase (so no field repeats in a line): ``head f1=v1,f2=v2 ts``. Returns
    (bytes used, values written, lines written), or (0, -1 - i, 0) if row ``i``'s last
    piece does not start with a space."""
    fblob, foff, _pblob, _poff, device, key = src
    pos = _U0
    values = 0
    lines = 0
    open_dev = -1  # the open line's device, -1: no line open
    open_ts = 0
    last_j = -1
    for i in range(idx.shape[0]):
        v = value[i]
        if not np.isfinite(v):
            continue
        j = idx[i]
        k = 3 * int(key[j])
        d = int(device[j])
        t = ts_ns[i]
        if fblob[foff[k + 2]] != _CH_SPACE:
            return 0, -1 - i, 0
        if d == open_dev and t == open_ts and j > last_j:
            buf[pos] = _CH_COMMA  # another field of the open line: ",field="
            pos = _copy(buf, pos + _U1, fblob, np.uint64(foff[k + 2] + 1),
                        np.uint64(foff[k + 3]))
        else:
            if open_dev >= 0:  # close the open line
                buf[pos] = _CH_SPACE
                pos = _write_int(buf, pos + _U1, open_ts)
                buf[pos] = _CH_NL
                pos += _U1
            pos = _put_prefix(buf, pos, src, j)
            open_dev = d
            open_ts = t
            lines += 1
        pos = _write_float(buf, pos, v)
        last_j = j
        values += 1
    if open_dev >= 0:
        buf[pos] = _CH_SPACE
        pos = _write_int(buf, pos + _U1, open_ts)
        buf[pos] = _CH_NL
        pos += _U1
    return pos, values, lines


# --------------------------------------------------------------------------------------------
# Public renderers
# --------------------------------------------------------------------------------------------


def _check_array(name: str, a: object, dtype: type[np.generic], ndim: int = 1) -> np.ndarray:
    dt = np.dtype(dtype)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}; "
                        f"pass np.asarray({name}, dtype=np.{dt.name})")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype != dt:
        raise TypeError(f"{name} must be {dt.name}, got {a.dtype}; "
                        f"pass {name}.astype(np.{dt.name})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    return a


def _raise_kernel_error(table: PrefixSource, idx: np.ndarray, row: int, code: int,
                        want_end: str) -> None:
    if code == 1:
        raise IndexError(f"idx[{row}] = {int(idx[row])} is not a prefix of the table "
                         f"(0..{len(table) - 1})")
    raise LineProtocolError(
        f"prefix {int(idx[row])} ({table[int(idx[row])]!r}, used by row {row}) must end "
        f"with {want_end!r}; build it with series_prefix("
        f"{'..., field_key' if want_end == '=' else '..., None'})")


def _single_setup(table: PrefixSource, idx: np.ndarray, value: np.ndarray,
                  ts_ns: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray,
                                              np.ndarray, np.ndarray] | None:
    """What ``render_single`` and ``render_merged`` check and allocate before their kernel:
    ``(source, idx, value, ts_ns, buf)`` with the rows checked (int64 idx, float64 value,
    int64 ts_ns, 1-D, C-contiguous, equal lengths: TypeError / ValueError), every prefix
    index valid and ending in ``=`` (IndexError / LineProtocolError), and ``buf`` big
    enough for one line per row; None for no rows."""
    i = _check_array("idx", idx, np.int64)
    v = _check_array("value", value, np.float64)
    t = _check_array("ts_ns", ts_ns, np.int64)
    if not (i.shape[0] == v.shape[0] == t.shape[0]):
        raise ValueError(f"idx, value and ts_ns must have equal lengths, got "
                         f"{i.shape[0]}, {v.shape[0]}, {t.shape[0]}")
    if i.shape[0] == 0:
        return None
    src = table.kernel_source()
    bound, row, code = _bound(src, i, _CH_EQ, FLOAT_MAX_WIDTH + TS_MAX_WIDTH + 2)
    if code:
        _raise_kernel_error(table, i, int(row), int(code), "=")
    # allocated here, not in the kernel: numpy's allocations reuse freed pages, numba's
    # come back fresh and page faults would cost more than the rendering
    return src, i, v, t, np.empty(int(bound), dtype=np.uint8)


def render_single(table: PrefixSource, idx: np.ndarray, value: np.ndarray,
                  ts_ns: np.ndarray) -> tuple[bytes, int]:
    """Render one line per row: ``prefix[idx] + value + " " + ts_ns + "\\n"``.

    ``idx`` int64[n] (prefix indices, each prefix ending in ``field=``), ``value``
    float64[n], ``ts_ns`` int64[n] (ns since the epoch), all 1-D C-contiguous. Rows whose
    value is NaN or ±inf are skipped. Returns ``(body, lines_written)``; ``lines_written
    <= n`` and ``body`` holds exactly that many ``\\n``.
    """
    setup = _single_setup(table, idx, value, ts_ns)
    if setup is None:
        return b"", 0
    src, i, v, t, buf = setup
    used, lines = _render_single(src, i, v, t, buf)
    return buf[: int(used)].tobytes(), int(lines)


def render_merged(table: SplicedPrefixes, idx: np.ndarray, value: np.ndarray,
                  ts_ns: np.ndarray) -> tuple[bytes, int]:
    """What ``render_single`` writes, with the consecutive rows of one device and one
    timestamp written as one line of several fields while their prefix indices increase
    (a device message's readings, in catalogue order): InfluxDB stores the very same points,
    and parses a few multi-field lines for less than as many single-field ones.

    ``table``: a ``SplicedPrefixes`` whose prefixes end with `` field=`` (raw readings);
    arguments as ``render_single``. Returns ``(body, values_written)``: rows whose value is
    NaN or ±inf are skipped, so ``values_written <= n``."""
    if not isinstance(table, SplicedPrefixes):
        raise TypeError(f"table must be SplicedPrefixes, got {type(table).__name__}")
    setup = _single_setup(table, idx, value, ts_ns)
    if setup is None:
        return b"", 0
    src, i, v, t, buf = setup
    used, values, _ = _render_merged(src, i, v, t, buf)
    if values < 0:
        bad = -1 - int(values)
        raise LineProtocolError(f"prefix {int(i[bad])} ({table[int(i[bad])]!r}, row {bad}) "
                                "has no ' field=' to merge on")
    return buf[: int(used)].tobytes(), int(values)


@functools.lru_cache(maxsize=256)
def _field_keys(keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(kblob, koffsets)`` of ``_render_multi`` for these (distinct) field keys: ``key=``
    each, escaped, concatenated, and their start offsets (``k + 1``). Cached, so shared:
    never modify them (a hub renders the same few field lists over and over: escaping them
    per call was a few dozen Python calls). LineProtocolError for an invalid key."""
    enc = [escape_key(key).encode("utf-8") + b"=" for key in keys]
    kblob = np.frombuffer(b"".join(enc), dtype=np.uint8)
    koffsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in enc], out=koffsets[1:])
    return kblob, koffsets


def render_multi(table: PrefixSource, idx: np.ndarray, field_keys: Sequence[str],
                 values: np.ndarray, is_int: np.ndarray | Sequence[bool],
                 ts_ns: np.ndarray, *, int64_keys: Sequence[str] = (),
                 int64_values: np.ndarray | None = None) -> tuple[bytes, int]:
    """Render one line per row: ``prefix[idx] + "k1=v1,k2=v2i,..." + " " + ts + "\\n"``.

    ``idx`` int64[n] (prefixes ending in a space: ``series_prefix(..., None)``), ``values``
    float64[n, k] C-contiguous, ``field_keys`` k unescaped names, ``is_int`` k booleans
    (integer fields: value truncated to int64 + ``i``), ``ts_ns`` int64[n]. Fields that are
    NaN/±inf (or, for integers, outside int64) are left out; a row with none left is
    skipped. Returns ``(body, lines_written)``.

    Exact integer fields, for integers float64 cannot carry (a ns timestamp: its 53-bit
    mantissa loses the low digits): ``int64_keys`` m more unescaped names and
    ``int64_values`` int64[n, m] C-contiguous, each value written as it is with ``i``
    (``INT64_MIN`` to ``INT64_MAX``), after the k float fields, in ``int64_keys`` order.
    An int64 is never NaN, so with m > 0 every row gives a line. Pass both or neither
    (ValueError); k may be 0 if m is not (``values`` float64[n, 0], ``is_int`` bool[0]).
    Keys must be distinct across both lists (LineProtocolError).
    """
    keys = list(field_keys)
    k = len(keys)
    ikeys = list(int64_keys)
    m = len(ikeys)
    if k == 0 and m == 0:
        raise ValueError("field_keys (or int64_keys) must name at least one field")
    i = _check_array("idx", idx, np.int64)
    vals = _check_array("values", values, np.float64, ndim=2)
    t = _check_array("ts_ns", ts_ns, np.int64)
    ints = np.asarray(is_int)
    if ints.dtype != np.bool_ or ints.shape != (k,):
        raise TypeError(f"is_int must be {k} booleans (one per field key), got "
                        f"{ints.dtype} shape {ints.shape}")
    if vals.shape[1] != k:
        raise ValueError(f"values has {vals.shape[1]} columns for {k} field keys")
    if not (i.shape[0] == vals.shape[0] == t.shape[0]):
        raise ValueError(f"idx, values and ts_ns must have equal lengths, got "
                         f"{i.shape[0]}, {vals.shape[0]}, {t.shape[0]}")
    exact = None
    if int64_values is not None or m:
        if int64_values is None or m == 0:
            raise ValueError("int64_keys and int64_values go together: pass both or neither")
        exact = _check_array("int64_values", int64_values, np.int64, ndim=2)
        if exact.shape != (i.shape[0], m):
            raise ValueError(f"int64_values must be shape ({i.shape[0]}, {m}) (rows, "
                             f"int64 keys), got {exact.shape}")
    if len(set(keys + ikeys)) != k + m:
        raise LineProtocolError(f"duplicate field keys in {keys + ikeys}")
    if i.shape[0] == 0:
        return b"", 0
    kblob, koffsets = _field_keys(tuple(keys + ikeys))
    src = table.kernel_source()
    per_row = (int(koffsets[k + m]) + k * (FLOAT_MAX_WIDTH + 1) + m * (INT_MAX_WIDTH + 1)
               + TS_MAX_WIDTH + 2)
    bound, row, code = _bound(src, i, _CH_SPACE, per_row)
    if code:
        _raise_kernel_error(table, i, int(row), int(code), " ")
    buf = np.empty(int(bound), dtype=np.uint8)
    used, lines = _render_multi(src, i, vals, np.ascontiguousarray(ints), kblob, koffsets,
                                t, buf, exact)
    return buf[: int(used)].tobytes(), int(lines)
