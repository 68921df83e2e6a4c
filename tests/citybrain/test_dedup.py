from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from citybrain.dedup import Deduplicator, Seen


def test_basic() -> None:
    d = Deduplicator(window=8)
    assert d.check("a", 5) is Seen.NEW
    assert d.check("a", 5) is Seen.DUPLICATE
    assert d.check("a", 3) is Seen.NEW  # out of order, inside the window
    assert d.check("a", 3) is Seen.DUPLICATE
    assert d.check("a", 100) is Seen.NEW
    assert d.check("a", 50) is Seen.STALE
    assert d.check("b", 5) is Seen.NEW


@given(st.lists(st.integers(0, 300), max_size=300))
def test_matches_a_set_inside_the_window(seqs: list[int]) -> None:
    d = Deduplicator(window=1024)
    seen: set[int] = set()
    for s in seqs:
        got = d.check("dev", s)
        assert got is (Seen.DUPLICATE if s in seen else Seen.NEW)
        seen.add(s)
