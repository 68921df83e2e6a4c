"""The one compilation policy for every numba kernel in the hub.

Every ``@njit`` in ``hub/`` takes its flags from here, so a change of policy (or a bisect of a
numerical discrepancy) is a one-line edit.

Policy
------
* ``FASTMATH`` is for numeric kernels (aggregation, merging). Telemetry carries NaN (sensor
  faults) and ±inf (overflowing counters), and the kernels test for them explicitly
  (``v != v``), so the ``nnan`` and ``ninf`` flags -- which let LLVM assume those values never
  occur and delete the tests -- are never allowed. The flags kept only permit reordering,
  contraction into FMA, reciprocal-multiplication and cheaper libm calls: each may change a
  result by a few ulps, never its NaN-ness.
* ``EXACT`` (no fastmath at all) is for kernels whose output must be bit-for-bit what a plain
  Python reference produces, e.g. the line-protocol float formatter, which relies on
  error-free transformations (Veltkamp split, Fast2Sum) that reassociation would destroy.
* ``CACHE``: kernels are compiled lazily, on first call, and cached on disk next to the module
  (``__pycache__``), so importing the hub compiles nothing and a restarted hub starts fast.
* ``NOGIL``: batch kernels release the GIL.
* Bounds checking stays at numba's default (off); each public wrapper validates dtype, shape,
  contiguity and index ranges *before* calling a kernel, which is what makes that safe.

``FASTMATH`` must be a ``set`` (numba rejects ``frozenset``): never mutate it at run time.
"""

from __future__ import annotations

from typing import Final

#: Fastmath flags for numeric kernels. Never add "nnan", "ninf" or "fast".
FASTMATH: Final[set[str]] = {"nsz", "arcp", "contract", "afn", "reassoc"}

#: Fastmath setting for kernels that must be exactly reproducible (formatting).
EXACT: Final[bool] = False

#: Cache compiled kernels on disk (``numba.njit(cache=...)``).
CACHE: Final[bool] = True

#: Release the GIL in the heavy kernels (they touch no Python objects), so the hub's writer
#: and network threads keep running while a batch is aggregated or rendered.
NOGIL: Final[bool] = True

_FORBIDDEN = {"nnan", "ninf", "fast"}
assert not (FASTMATH & _FORBIDDEN), "telemetry has NaN and gaps: nnan/ninf are forbidden"
