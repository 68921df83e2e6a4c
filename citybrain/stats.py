"""Counters a process keeps about itself, and the stats file it writes them to.

Each tier owns a ``Counters``; one thread updates it (the processing thread), others only
read snapshots. ``StatsWriter`` writes the snapshot as JSON atomically (write + rename) every
``interval_s`` and once more at exit, so a supervisor (``citybrain up``) or an operator can
read a consistent file at any time.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


class Counters:
    """Monotonic integer counters, flat (``readings_in``) or labelled (``rejected[reason]``)."""

    def __init__(self) -> None:
        self.flat: Counter[str] = Counter()
        self.labelled: dict[str, Counter[str]] = {}
        self._lock = threading.Lock()

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.flat[name] += n

    def inc_label(self, name: str, label: str, n: int = 1) -> None:
        with self._lock:
            self.labelled.setdefault(name, Counter())[label] += n

    def get(self, name: str) -> int:
        return self.flat.get(name, 0)

    def restore(self, doc: dict[str, Any]) -> None:
        """Continue from a ``snapshot()`` persisted by an earlier run of the process."""
        with self._lock:
            for name, v in doc.items():
                if isinstance(v, int):
                    self.flat[name] = v
                elif isinstance(v, dict):
                    self.labelled[name] = Counter(
                        {str(k): n for k, n in v.items() if isinstance(n, int)})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self.flat)
            for name, c in self.labelled.items():
                out[name] = dict(sorted(c.items()))
            return out


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """Read a stats file; None if it does not exist yet."""
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return doc if isinstance(doc, dict) else None


class StatsWriter:
    """Writes ``snapshot()`` to ``path`` every ``interval_s`` in a daemon thread."""

    def __init__(self, path: Path | None, snapshot: Callable[[], dict[str, Any]],
                 interval_s: float = 1.0) -> None:
        self.path = path
        self.snapshot = snapshot
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="stats-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write()

    def write(self) -> None:
        if self.path is not None:
            write_json_atomic(self.path, self.snapshot())

    def stop(self) -> None:
        """Stop the thread and write the final snapshot."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.write()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, bytes (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0
