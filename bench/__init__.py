"""Benchmarks: each ``bench_*.py`` measures our code against a peer in the same run and prints a ratio."""
