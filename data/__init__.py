"""Preparing the benchmarks from their publishers' distributions: `python -m data.prepare <dataset>`."""
