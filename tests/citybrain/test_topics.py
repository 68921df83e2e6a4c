from __future__ import annotations

import pytest

from citybrain.topics import DeviceTopic, device_filter, frames_topic


def test_round_trip() -> None:
    t = DeviceTopic("500103", "environment", "500103-air-01", "500103-air-01-00001", "data")
    assert str(t) == "cb/v1/dev/500103/environment/500103-air-01/500103-air-01-00001/data"
    assert DeviceTopic.parse(str(t)) == t


@pytest.mark.parametrize("bad", ["", "cb/v1/dev/1/2/3/4", "cb/v2/dev/a/b/c/d/data",
                                 "cb/v1/dev/a/b/c/d/e/data", "cb/v1/dev/a/b/c/d/other",
                                 "cb/v1/dev/a/b//d/data", "cb/v1/dev/a/+/c/d/data"])
def test_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        DeviceTopic.parse(bad)


def test_filters_validate() -> None:
    assert device_filter("500103") == "cb/v1/dev/500103/#"
    assert device_filter() == "cb/v1/dev/+/#"
    with pytest.raises(ValueError):
        frames_topic("a/#")
