"""Benchmarks, one module per part (``dw bench PART``)."""
