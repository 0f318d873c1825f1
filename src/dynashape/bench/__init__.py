"""Benchmarks: generation side by side (``generate``), forward latency per backend (``backends``)."""
