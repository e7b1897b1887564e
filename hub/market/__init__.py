"""Market logic (pure, no I/O): auction mechanisms, bidding strategies, aggregators, simulation."""

from hub.market.agent import (
    Aggregator,
    AggregatorConfig,
    AggregatorState,
    cost_mc,
    default_aggregators,
)
from hub.market.auction import (
    AscendingAuction,
    Auction,
    BidRecord,
    Mechanism,
    Offer,
    SecondPriceAuction,
    new_auction,
)
from hub.market.engine import collect_bids, record_outcome
from hub.market.history import MarketHistory, demand_wh
from hub.market.strategies import MarketView, Strategy, make_strategy, market_view

__all__ = [
    "Aggregator",
    "AggregatorConfig",
    "AggregatorState",
    "AscendingAuction",
    "Auction",
    "BidRecord",
    "MarketHistory",
    "MarketView",
    "Mechanism",
    "Offer",
    "SecondPriceAuction",
    "Strategy",
    "collect_bids",
    "cost_mc",
    "default_aggregators",
    "demand_wh",
    "make_strategy",
    "market_view",
    "new_auction",
    "record_outcome",
]
