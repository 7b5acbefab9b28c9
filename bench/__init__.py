"""Benchmarks of the three services against a seed-style baseline (`python -m bench`).

Never part of the test suite: the figures depend on the machine, so each one is reported
next to the same figure for the baseline (`bench.seed_servers`) measured in the same run,
and only their ratio is meant to be compared across machines and runs.
"""
