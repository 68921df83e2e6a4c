"""citybrain.memory: the trim the hub relies on (``keep_freed_memory`` is left out: it would
change the allocator of the whole test process)."""

from __future__ import annotations

import platform

import numpy as np

from citybrain.memory import release_freed_memory


def test_freed_memory_is_released_on_glibc() -> None:
    np.ones(8 << 20).sum()  # 64 MB allocated and freed
    assert release_freed_memory() is (platform.libc_ver()[0] == "glibc")
