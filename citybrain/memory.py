"""Allocator tuning for long-running numeric processes (the hub).

numpy allocates large arrays with ``malloc``; glibc serves allocations above its mmap
threshold with fresh ``mmap`` pages and returns them to the OS on ``free``. A hub that emits
a window of 100k rows every few seconds then pays a page fault for every page of every
output array, every time: measured here ~2.4 µs per 4 KiB page, 80 ns per emitted window row
against 10 ns for the kernel itself.

``keep_freed_memory()`` raises the mmap and trim thresholds (``mallopt``) so freed arrays stay
in the process heap and are reused warm. Resident memory then stays at the working set's
high-water mark instead of shrinking — the right trade for a service with a bounded working
set. A no-op where glibc is not the C library.

``release_freed_memory()`` (``malloc_trim(0)``) hands what the heap holds free back to the
OS. The hub calls it once a minute: at a million devices the heap held ~300 MB of freed
transients (bench/README.md), and the pages it gives back cost a fault each (~2.4 µs) only
when reused, a few hundred ms of CPU a minute at most.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger("citybrain.memory")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (``find_library`` may run a subprocess)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Return the heap's free memory to the OS (glibc ``malloc_trim(0)``). True if done."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


def keep_freed_memory(mmap_threshold: int = 512 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Keep freed memory for reuse (see the module doc). Returns True if applied."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(min(mmap_threshold, 2**31 - 1))))
    ok &= bool(mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(trim_threshold, 2**31 - 1))))
    if not ok:
        log.debug("mallopt refused the thresholds; allocator left as it is")
    return ok
