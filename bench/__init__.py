"""Benchmarks: each prints a JSON object as its last line (``python -m bench.<name>``)."""
