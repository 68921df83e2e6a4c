"""The raw-storage limit's lines (``bench.hub_load.hub_raw_lines``) are the hub's own."""

from __future__ import annotations

from bench.hub_load import _first_rate, hub_raw_lines


def test_limit_lines_are_the_load_generators_readings_as_the_hub_renders_them() -> None:
    bodies = hub_raw_lines(300, 25_000, batch_lines=10_000)
    lines = [line for body in bodies for line in body.splitlines()]
    assert [len(body.splitlines()) for body in bodies] == [10_000, 10_000, 5_000]
    assert len(lines) == 25_000  # one reading per line: every reading has its own time
    measurements = {line.split(b",", 1)[0] for line in lines}
    assert len(measurements) > 2  # every kind of device, not one field of one kind
    series = set()
    for line in lines:
        head, field, ts = line.rsplit(b" ", 2)
        key, value = field.split(b"=", 1)
        series.add((head, key))
        assert b",device=" in head and int(ts) > 0
        float(value.rstrip(b"i"))
    devices = {head for head, _ in series}
    assert len(series) > 2 * len(devices)  # several series per device


def test_first_rate_counts_until_the_given_lines() -> None:
    done = [(2.0, 10), (1.0, 10), (4.0, 10)]
    assert _first_rate(done, 20) == 10.0  # 20 lines by 2 s
    assert _first_rate(done, 100) == 7.5  # fewer than asked: all of them
    assert _first_rate([], 5) == 0.0
