"""Shared pieces of the benchmark harness: processes, load generator, statistics, report."""
