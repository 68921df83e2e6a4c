"""``up``'s drain waits: they go on while the tier makes progress, and end when it stalls,
after their cap, or on a second Ctrl-C."""

from __future__ import annotations

import itertools
import threading

from citybrain.up import wait_progressing


def test_waits_past_the_stall_limit_while_progressing() -> None:
    """Done at the 8th poll (the wait sleeps 0.2 s between polls: well past the 0.3 s
    stall limit), the tier moving at every poll: progress kept the wait going."""
    polls = itertools.count(1)
    seen = [0]

    def progress() -> int:
        seen[0] = next(polls)
        return seen[0]

    assert wait_progressing(lambda: seen[0] >= 8, progress, stall_s=0.3,
                            what="a moving tier", cap_s=30.0)


def test_gives_up_when_progress_stalls() -> None:
    assert not wait_progressing(lambda: False, lambda: 7, stall_s=0.3, what="a stuck tier",
                                cap_s=30.0)


def test_gives_up_after_the_cap_even_while_progressing() -> None:
    ticks = itertools.count()
    assert not wait_progressing(lambda: False, lambda: next(ticks), stall_s=30.0,
                                what="an endless tier", cap_s=0.5)


def test_a_second_interrupt_ends_the_wait() -> None:
    abort = threading.Event()
    ticks = itertools.count()
    threading.Timer(0.3, abort.set).start()
    assert not wait_progressing(lambda: False, lambda: next(ticks), stall_s=30.0,
                                what="a moving tier", cap_s=30.0, abort=abort)


def test_done_at_once() -> None:
    assert wait_progressing(lambda: True, lambda: 0, stall_s=0.0, what="nothing", cap_s=0.0)
