"""Benchmarks behind ``equimol bench``."""
