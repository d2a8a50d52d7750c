"""Benchmarks of the live stack: run with `make bench` (see README, "Benchmarks")."""
