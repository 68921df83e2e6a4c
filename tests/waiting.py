"""Bounded waiting for tests: a deadline fails the test with what it was waiting for."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_for(cond: Callable[[], bool], timeout: float = 20.0,
             what: Callable[[], object] | None = None) -> None:
    """Poll ``cond`` every 20 ms; ``pytest.fail`` after ``timeout`` s, showing ``what()``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            detail = f": {what()}" if what is not None else ""
            pytest.fail(f"condition not met within {timeout} s{detail}")
        time.sleep(0.02)
