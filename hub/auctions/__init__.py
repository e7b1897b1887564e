"""Auctions: the rules of both mechanisms, the pure auction session, its async driver,
the scheduler and the market notices; the seeded simulation drives the same session."""
