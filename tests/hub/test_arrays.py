"""hub.arrays: the append-only Column."""

from __future__ import annotations

import numpy as np
import pytest

from hub.arrays import Column


def test_a_narrow_column_refuses_values_it_cannot_hold() -> None:
    """Values past a narrower integer column's range raise, not wrap (the analytics'
    per-series columns are int8/int32 fed from int64 arrays); in range they are kept."""
    col = Column(np.int8, 0, 4)
    assert col.extend(np.array([-128, 127], dtype=np.int64)).tolist() == [-128, 127]
    with pytest.raises(OverflowError, match=r"128\.\.128 do not fit this int8 column"):
        col.extend(np.array([128], dtype=np.int64))
    with pytest.raises(OverflowError, match="int32"):
        Column(np.int32, -1).extend([2**31])
    assert len(col) == 2  # nothing appended by a refused call
    assert col.extend([]).dtype == np.int8
