"""``python -m firmware_sim``: run the simulator from the command line, print SimStats JSON.

A thin wrapper for benchmarks and manual runs (the project CLI is ``citybrain sim``)::

    python -m firmware_sim --port 1883 --scale 1 --speed 600 --duration 10 --faults none
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from typing import Any

from firmware_sim import FaultConfig, SimConfig, run_sim


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware_sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument("--duration", type=float, default=None, help="wall seconds (default: ^C)")
    p.add_argument("--start", type=float, default=None, help="simulated start, UTC epoch s")
    p.add_argument("--districts", default=None, help="comma-separated district codes")
    p.add_argument("--devices-per-link", type=int, default=None)
    p.add_argument("--qos", type=int, default=1, choices=(0, 1))
    p.add_argument("--mqtt-version", default="3.1.1", choices=("3.1.1", "5"))
    p.add_argument("--max-inflight", type=int, default=100)
    p.add_argument("--max-messages", type=int, default=None)
    p.add_argument("--faults", default="default", choices=("default", "none"))
    p.add_argument("--client-id-prefix", default="cbsim")
    p.add_argument("--stock-paho", action="store_true", help="don't use the fast paho client")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = SimConfig(
        mqtt_host=args.host, mqtt_port=args.port, scale=args.scale, seed=args.seed,
        speed=args.speed, duration_s=args.duration, start=args.start,
        districts=set(args.districts.split(",")) if args.districts else None,
        devices_per_link=args.devices_per_link, qos=args.qos, mqtt_version=args.mqtt_version,
        max_inflight=args.max_inflight, max_messages=args.max_messages,
        faults=FaultConfig.none() if args.faults == "none" else FaultConfig(),
        client_id_prefix=args.client_id_prefix, fast_paho=not args.stock_paho)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stats = run_sim(cfg, stop=stop)
    print(json.dumps(stats.to_dict(), indent=1))
    return 0 if stats.unacked == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
