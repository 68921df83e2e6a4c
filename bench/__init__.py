"""Benchmarks: ``citybrain bench --out PATH`` writes JSON results."""
