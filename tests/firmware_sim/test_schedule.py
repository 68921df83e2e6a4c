"""The scheduler: simulated-time order, independent of how the caller advances the clock."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import numpy as np

from firmware_sim.devices import make_model
from firmware_sim.faults import FaultConfig
from firmware_sim.schedule import DATA, DUPLICATE, Outgoing, Scheduler
from seeds.city import City

START = datetime(2025, 11, 17, 6, 0, tzinfo=UTC).timestamp() - 8 * 3600
END = START + 3 * 3600
FAULTY = FaultConfig(dropout_rate=0.02, duplicate_rate=0.02, spike_rate=0.01, stuck_rate=0.01)


def scheduler(seed: int = 1) -> Scheduler:
    return Scheduler([make_model(d, seed, FAULTY, START) for d in City(0.05).devices()])


def drain(s: Scheduler, steps: list[float]) -> list[Outgoing]:
    out = []
    for until in steps:
        while (o := s.pop(until)) is not None:
            out.append(o)
    return out


def test_output_does_not_depend_on_how_time_advances() -> None:
    end = START + 5400.0
    one_step = drain(scheduler(), [end])
    rng = np.random.default_rng(0)
    ragged = list(np.cumsum(rng.exponential(3.0, size=2000)) + START)
    ragged = [t for t in ragged if t < end] + [end]
    many_steps = drain(scheduler(), ragged)
    assert len(one_step) > 1000
    assert one_step == many_steps


def test_messages_come_in_time_order_and_never_early() -> None:
    s = scheduler()
    prev = -1.0
    for until in (START + 60.0, START + 61.0, START + 3600.0):
        while (o := s.pop(until)) is not None:
            assert prev <= o.t <= until
            prev = o.t
        assert s.next_time() > until


def test_duplicates_repeat_earlier_bytes_and_dropouts_leave_seq_gaps() -> None:
    s = scheduler()
    out = drain(s, [END])
    sent: dict[tuple[int, int], Outgoing] = {}
    seqs: dict[int, list[int]] = defaultdict(list)
    n_dups = 0
    for o in out:
        if o.kind == DATA:
            assert (o.model, o.seq) not in sent
            sent[(o.model, o.seq)] = o
            seqs[o.model].append(o.seq)
        else:
            assert o.kind == DUPLICATE
            n_dups += 1
            original = sent[(o.model, o.seq)]
            assert o.payload == original.payload and o.t > original.t
    assert n_dups == s.faults.duplicates - s.pending_duplicates() > 0
    missing = 0
    for i, m in enumerate(s.models):
        got = seqs[i]
        assert got == sorted(got)
        missing += m.seq - len(got)  # every seq used, sent or dropped
    assert missing == s.faults.dropouts > 0


def test_an_empty_window_yields_nothing() -> None:
    s = scheduler()
    assert s.pop(START - 1.0) is None
    assert START <= s.next_time() < START + 600.0
