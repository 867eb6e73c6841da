"""Runnable benchmarks: each prints its figures and takes --json FILE."""
