"""Auction engine: orchestrates auctions between live batteries and in-process aggregators."""

from hub.engine.engine import AuctionRun, Engine, EngineConfig

__all__ = ["AuctionRun", "Engine", "EngineConfig"]
