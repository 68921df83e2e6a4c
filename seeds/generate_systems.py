"""Regenerate ``systems.csv``: the 201 systems of the simulated Chongqing city hub.

The file is data, committed to the repository; this script documents how it was laid out
and can rebuild it byte for byte (``python -m seeds.generate_systems``).

Allocation (201 in all):
  * environment: an air network and a noise network in each of the 38 districts (76),
    and a water network in the 25 districts on the Yangtze, Jialing and Wu rivers (25);
  * parking: a bay-sensor network and a lot/garage platform in each of the 26 districts (52);
  * kitchen (明厨亮灶): a restaurant-monitoring platform in each of the 38 districts, and a
    second one in the 10 core urban districts (48).
Device counts are for ``--scale 1``: a laptop-sized city of a few thousand devices.
"""

from __future__ import annotations

import csv
from pathlib import Path

HERE = Path(__file__).parent
CORE = {"500103", "500104", "500105", "500106", "500107", "500108", "500109", "500112",
        "500113", "500101"}
# Districts without a river water-quality station network of their own in this model.
NO_WATER = {"500111", "500120", "500151", "500152", "500153", "500155", "500229", "500231",
            "500240", "500241", "500242", "500243", "500110"}

# kind -> (domain, zh name, en name, devices core, devices other, interval s)
KINDS = {
    "air": ("environment", "空气质量自动监测网", "air quality network", 12, 4, 60),
    "noise": ("environment", "声环境自动监测网", "noise monitoring network", 8, 3, 60),
    "water": ("environment", "水质自动监测站网", "water quality stations", 3, 3, 600),
    "bay": ("parking", "路内泊位地磁网", "on-street bay sensors", 120, 40, 600),
    "lot": ("parking", "停车场库平台", "parking lots and garages", 10, 4, 60),
    "kitchen": ("kitchen", "明厨亮灶监管平台", "open-kitchen monitoring", 40, 15, 60),
}


def rows() -> list[dict[str, str]]:
    """Return the 201 system rows in a stable order."""
    with (HERE / "districts.csv").open(encoding="utf-8") as fh:
        districts = list(csv.DictReader(fh))
    out: list[dict[str, str]] = []

    def add(d: dict[str, str], kind: str, ordinal: int) -> None:
        domain, zh, en, n_core, n_other, interval = KINDS[kind]
        code = d["code"]
        out.append({
            "system_id": f"{code}-{kind}-{ordinal:02d}",
            "district_code": code,
            "domain": domain,
            "kind": kind,
            "name_zh": f"{d['name_zh']}{zh}" + (f"({ordinal})" if ordinal > 1 else ""),
            "name_en": f"{d['name_pinyin']} {en}" + (f" ({ordinal})" if ordinal > 1 else ""),
            "devices": str(n_core if code in CORE else n_other),
            "interval_s": str(interval),
        })

    for d in districts:
        add(d, "air", 1)
        add(d, "noise", 1)
        if d["code"] not in NO_WATER:
            add(d, "water", 1)
        if d["kind"] == "district":
            add(d, "bay", 1)
            add(d, "lot", 1)
        add(d, "kitchen", 1)
        if d["code"] in CORE:
            add(d, "kitchen", 2)
    return out


def main() -> None:
    data = rows()
    with (HERE / "systems.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(data[0]))
        w.writeheader()
        w.writerows(data)
    print(f"wrote {len(data)} systems")


if __name__ == "__main__":
    main()
