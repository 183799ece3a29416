"""Embedded mode: everything on one machine with real processes (``tokenfab up``, tests, benchmarks)."""
