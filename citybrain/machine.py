"""The machine a measurement ran on, for reports (benchmarks, load tests)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def describe() -> dict[str, Any]:
    """Python and library versions, CPUs, memory, and the load average at the time (a busy
    machine explains a slow figure)."""
    import numba
    import numpy as np
    mem_total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "cpus": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "memory_bytes": mem_total, "load_average": list(os.getloadavg())}
