"""The writer cuts what it stores into request bodies InfluxDB accepts (pure functions)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub.writer import Chunk, request_bodies, split_lines

line = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b"x") + b"\n")
chunk_lines = st.lists(line, min_size=1, max_size=30)


@given(st.lists(line, max_size=60), st.integers(1, 200))
def test_split_lines_cuts_only_at_line_ends(lines: list[bytes], max_bytes: int) -> None:
    body = b"".join(lines)
    pieces = split_lines(body, max_bytes)
    assert b"".join(pieces) == body
    for p in pieces:
        assert p.endswith(b"\n") or not body
        # over the limit only when a single line is
        assert len(p) <= max_bytes or p.count(b"\n") == 1


@given(st.lists(st.tuples(st.sampled_from(["raw", "agg"]), chunk_lines), min_size=1,
                max_size=8), st.integers(1, 300))
def test_request_bodies_keep_order_and_count_lines_per_kind(
        spec: list[tuple[str, list[bytes]]], max_bytes: int) -> None:
    chunks = [Chunk(kind, b"".join(ls), len(ls), i + 1) for i, (kind, ls) in enumerate(spec)]
    out = request_bodies(chunks, max_bytes)
    assert b"".join(body for body, _ in out) == b"".join(c.body for c in chunks)
    for body, kinds in out:
        assert sum(kinds.values()) == body.count(b"\n")
        assert len(body) <= max_bytes or body.count(b"\n") == 1
    for kind in ("raw", "agg"):
        assert sum(k.get(kind, 0) for _, k in out) == sum(c.lines for c in chunks
                                                          if c.kind == kind)


def test_small_chunks_share_one_body() -> None:
    chunks = [Chunk("raw", b"a 1\n", 1, 1), Chunk("agg", b"b 2\nc 3\n", 2, 2)]
    assert request_bodies(chunks, 1024) == [(b"a 1\nb 2\nc 3\n", {"raw": 1, "agg": 2})]
