"""Benchmarks: each script prints a table and writes JSON (see docs/benchmarks.md)."""
