"""Benchmarks: `python -m bench` (see README, Benchmarks). Not tests: nothing here asserts a time."""
