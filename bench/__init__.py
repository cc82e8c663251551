"""Benchmarks: each prints one JSON document, with ratios to a baseline of the same run."""
