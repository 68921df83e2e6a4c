"""Input checks shared by the public wrappers of the hub's numba kernels.

Kernels trust their inputs (no bounds or dtype checks in the hot loops); the wrappers check
once per call and say how to fix a bad argument.
"""

from __future__ import annotations

import mmap

import numpy as np


def check_1d(name: str, a: object, dtype: type[np.generic]) -> np.ndarray:
    """``a`` as a 1-D, C-contiguous array of ``dtype``; otherwise a TypeError/ValueError that
    names the argument and the fix."""
    dt = np.dtype(dtype)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}; "
                        f"pass np.asarray({name}, dtype=np.{dt.name})")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}; pass {name}.ravel()")
    if a.dtype != dt:
        raise TypeError(f"{name} must be {dt.name}, got {a.dtype}; "
                        f"pass {name}.astype(np.{dt.name})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be contiguous (it is a strided view); "
                         f"pass np.ascontiguousarray({name})")
    return a


def doubled_capacity(capacity: int, needed: int) -> int:
    """The smallest ``max(capacity, 1) * 2**k`` that is ``>= needed``: amortised O(1) growth
    for state arrays indexed by dense ids."""
    cap = max(capacity, 1)
    while cap < needed:
        cap *= 2
    return cap


def grown(a: np.ndarray, n: int, fill: float | int | bool) -> np.ndarray:
    """``a`` with its first axis extended to ``n`` rows of ``fill`` (a copy). With ``fill``
    0 the new rows are the allocator's zeroed pages, not written: rows never used then stay
    out of RAM (capacity doubles; a hub of a million devices grows to millions of rows)."""
    shape = (n, *a.shape[1:])
    out = np.zeros(shape, dtype=a.dtype) if fill == 0 else np.full(shape, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


class Column:
    """An append-only 1-D array with amortised O(1) growth (capacity doubles).

    ``extend`` returns the filled part as a view; writes through it land in the column. A view
    taken before a later ``extend`` may point at a replaced buffer: re-read it after extending.
    """

    def __init__(self, dtype: type[np.generic], fill: float | int | bool = 0,
                 capacity: int = 16) -> None:
        """``capacity``: elements held before the first growth (size it for the expected
        count: doubling copies, and leaves up to half the final buffer unused)."""
        self._fill = fill
        self._buf = grown(np.empty(0, dtype=dtype), max(int(capacity), 16), fill)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def values(self) -> np.ndarray:
        """The filled part, as a view (see the class note on views)."""
        return self._buf[: self._n]

    def extend(self, values: np.ndarray | list[float] | list[int]) -> np.ndarray:
        """Append ``values``; integers outside a narrower integer column's range are an
        OverflowError, not wrapped."""
        add = np.asarray(values)
        dt = self._buf.dtype
        if (add.dtype.kind in "iu" and dt.kind in "iu" and len(add)
                and not np.can_cast(add.dtype, dt)):
            lo, hi, info = int(add.min()), int(add.max()), np.iinfo(dt)
            if lo < info.min or hi > info.max:
                raise OverflowError(f"values {lo}..{hi} do not fit this {dt.name} column "
                                    f"({info.min}..{info.max}): widen its dtype")
        add = add.astype(dt, copy=False)
        need = self._n + len(add)
        if need > len(self._buf):
            self._buf = grown(self._buf[: self._n], doubled_capacity(len(self._buf), need),
                              self._fill)
        self._buf[self._n:need] = add
        self._n = need
        return self._buf[:need]


def lazy_zeros(shape: tuple[int, ...], dtype: type[np.generic]) -> np.ndarray:
    """Zeros in a private anonymous mapping: the OS zeroes a page when it is first touched,
    so untouched pages are never resident, and the mapping is unmapped (RSS returned) when
    the array is freed. ``np.zeros`` gives neither for sizes the allocator serves from its
    heap (``citybrain.memory`` raises that limit to 512 MiB): it clears reused memory, all
    of it resident, and keeps it after ``free``."""
    count = int(np.prod(shape))
    nbytes = max(count * np.dtype(dtype).itemsize, 1)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)
