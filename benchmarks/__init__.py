"""Benchmarks for subsetgrad; run them with ``python -m benchmarks [NAME] [ARGS...]``."""
