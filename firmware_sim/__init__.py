"""Simulated device firmware for the citybrain city: realistic readings, misbehaviour, MQTT.

``run_sim(SimConfig(...))`` publishes every device of the seeded city (``seeds.city``) to an
MQTT broker on ``cb/v1/dev/{district}/{domain}/{system}/{device}/{data|birth|death}`` and
returns :class:`SimStats`. Modules: ``signals`` (pure daily/seasonal signal models),
``devices`` (one firmware model per device kind), ``faults`` (fault injection),
``schedule`` (simulated-time ordering), ``runner`` (MQTT I/O).
"""

from firmware_sim.faults import FaultConfig
from firmware_sim.runner import SimConfig, SimStats, run_sim

__all__ = ["FaultConfig", "SimConfig", "SimStats", "run_sim"]
