"""Benchmarks: scripts that print figures (see README.md)."""
