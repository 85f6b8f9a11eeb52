"""Benchmarks: scripts that print numbers and write JSON; `make bench` runs bench.py."""
