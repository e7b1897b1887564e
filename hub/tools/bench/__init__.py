"""Benchmarks: commands that print measured numbers (tables and JSON)."""
