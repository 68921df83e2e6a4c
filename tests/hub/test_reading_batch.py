"""``_ReadingBatch``: the frames' readings joined, in order, always as writeable arrays."""

from __future__ import annotations

import numpy as np

from hub.service import _ReadingBatch


def _readonly(a: np.ndarray) -> np.ndarray:
    out = np.frombuffer(a.tobytes(), dtype=a.dtype)  # as a decoded frame's columns are
    assert not out.flags.writeable
    return out


def test_a_lone_frames_read_only_columns_come_back_writeable_and_equal() -> None:
    batch = _ReadingBatch()
    s, d = np.array([3, 1], dtype=np.int64), np.array([0, 0], dtype=np.int64)
    t = _readonly(np.array([10, 20], dtype=np.int64))
    v = _readonly(np.array([1.5, np.nan]))
    batch.add(s, d, t, v)
    assert (batch.n, batch.frames) == (2, 1)
    out = batch.take()
    assert all(a.flags.writeable and a.flags.c_contiguous for a in out)
    assert out[0] is s and out[1] is d  # already writeable: not copied
    np.testing.assert_array_equal(out[2], t)
    np.testing.assert_array_equal(out[3], v)
    assert (batch.n, batch.frames) == (0, 0)


def test_several_frames_are_joined_in_arrival_order() -> None:
    batch = _ReadingBatch()
    batch.add(np.array([1]), np.array([7]), _readonly(np.array([5], dtype=np.int64)),
              _readonly(np.array([0.5])))
    batch.add(np.array([2, 3]), np.array([8, 9]), _readonly(np.array([6, 4], dtype=np.int64)),
              _readonly(np.array([1.0, 2.0])))
    s, d, t, v = batch.take()
    assert s.tolist() == [1, 2, 3] and d.tolist() == [7, 8, 9]
    assert t.tolist() == [5, 6, 4] and v.tolist() == [0.5, 1.0, 2.0]
    assert all(a.flags.writeable for a in (s, d, t, v))
