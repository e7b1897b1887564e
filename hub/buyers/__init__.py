"""Buyers: aggregators, their bidding strategies and the market history they read (pure)."""
