"""Tooling apart from the runtime: benchmarks, load simulators, firmware build/flash/sim."""
