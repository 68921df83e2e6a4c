"""Line protocol for analytics rows: one point per entity (station, system, district …).

Analytics emit few rows (per station per hour, per system per minute), but they go through
the same vectorised renderer as raw readings: each entity's escaped prefix is built once, on
first use, and rows are rendered by ``hub.lineproto.render_multi`` from arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hub.lineproto import PrefixTable, render_multi, series_prefix


class EntityPoints:
    """Points of one measurement with a fixed tag schema and fixed numeric fields.

    ``fields`` are given as float64 (``int_fields`` among them are written as integers,
    truncated); ``int64_fields`` are integers float64 cannot carry exactly (ns timestamps),
    given as int64 and written exactly, after ``fields``."""

    def __init__(self, measurement: str, tag_keys: Sequence[str], fields: Sequence[str],
                 int_fields: Sequence[str] = (), int64_fields: Sequence[str] = ()) -> None:
        self.measurement = measurement
        self.tag_keys = tuple(tag_keys)
        self.fields = list(fields)
        self.is_int = np.array([f in int_fields for f in fields], dtype=np.bool_)
        self.int64_fields = list(int64_fields)
        self._table = PrefixTable()
        self._index: dict[tuple[str, ...], int] = {}

    def entity(self, tags: Sequence[str]) -> int:
        """Prefix index of the entity with these tag values (in ``tag_keys`` order)."""
        key = tuple(tags)
        i = self._index.get(key)
        if i is None:
            prefix = series_prefix(self.measurement, dict(zip(self.tag_keys, key, strict=True)),
                                   None)
            i = self._index[key] = self._table.add(prefix)
        return i

    def render(self, entities: Sequence[int] | np.ndarray, values: np.ndarray,
               ts_ns: np.ndarray | int, int64_values: np.ndarray | None = None
               ) -> tuple[bytes, int]:
        """Render rows: ``values`` float64 ``[n, len(fields)]`` (NaN fields are left out),
        ``ts_ns`` int64 ns (one per row, or one for all), and, iff there are
        ``int64_fields``, ``int64_values`` int64 ``[n, len(int64_fields)]`` (a 1-D int64[n]
        for one such field). Not cast: any other dtype is a TypeError, since a float array
        there has lost the exact value already."""
        idx = np.asarray(entities, dtype=np.int64)
        if len(idx) == 0:
            return b"", 0
        ts = np.broadcast_to(np.asarray(ts_ns, dtype=np.int64), idx.shape).copy()
        vals = np.ascontiguousarray(values, dtype=np.float64).reshape(len(idx), len(self.fields))
        exact = None
        if int64_values is not None:
            exact = np.ascontiguousarray(int64_values)
            if exact.ndim == 1:
                exact = exact.reshape(len(exact), 1)
        # render_multi checks that int64_values come iff there are int64_fields
        return render_multi(self._table, idx, self.fields, vals, self.is_int, ts,
                            int64_keys=self.int64_fields, int64_values=exact)
