"""The peer baselines alone (``citybrain bench`` includes them).

``python -m bench.peers [--quick] [--qos 0|1] [--messages N] [--passes P] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.peers import QOS, bench_peers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--qos", type=int, choices=(0, 1), default=QOS)
    ap.add_argument("--messages", type=int, default=None)
    ap.add_argument("--passes", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    figures = bench_peers(args.quick, qos=args.qos, messages=args.messages,
                          passes=args.passes)
    figures["peers_total_s"] = round(time.perf_counter() - t0, 2)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
