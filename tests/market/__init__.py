"""Tests of the market logic (auctions, strategies, aggregators, simulation, report)."""
