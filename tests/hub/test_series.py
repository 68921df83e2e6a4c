"""Series registration: the prefixes assembled from escaped parts are exactly
``series_prefix``'s, for every kind and resolution."""

from __future__ import annotations

import numpy as np

from citybrain.frame import decode_frame, encode_frame
from hub.lineproto import series_prefix
from hub.series import SeriesRegistry
from seeds.city import City


def test_registered_prefixes_equal_series_prefix() -> None:
    city = City(1.0)
    reg = SeriesRegistry(city, agg_labels=("10s", "1m", "1h"))
    for d in city.districts[:6]:
        devs = list(city.devices({d.code}))
        n = len(devs)
        frame = decode_frame(encode_frame(
            d.code, 1, 0, [x.device_id for x in devs], [x.system.system_id for x in devs],
            ["battery"], np.arange(n), np.ones(n), np.zeros(n), np.arange(n), np.zeros(n)))
        reg.resolve(frame)
    kinds = set()
    for i in range(reg.n_series):
        dev, name, kind = reg.series_device[i], reg.series_name[i], reg.series_kind[i]
        district, system = reg.series_district[i], reg.series_system[i]
        kinds.add(kind)
        assert reg.raw_prefixes[i] == series_prefix(
            f"raw_{kind}", {"device": dev, "district": district, "system": system}, name)
        for label, table in reg.agg_prefixes.items():
            assert table[i] == series_prefix(
                f"agg_{label}", {"device": dev, "district": district, "kind": kind, "m": name,
                                 "system": system}, None)
    assert kinds == {"air", "water", "noise", "bay", "lot", "kitchen"}
