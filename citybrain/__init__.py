"""citybrain: edge-IoT telemetry pipeline for smart-city operations centres."""

__version__ = "0.1.0"
