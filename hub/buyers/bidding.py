"""Glue between auctions and aggregators, shared by the hub runtime and the simulation."""

from __future__ import annotations

from collections.abc import Sequence

from hub.auctions.rules import Auction, AuctionError, BidRecord
from hub.buyers.aggregator import Aggregator
from hub.buyers.history import MarketHistory
from hub.buyers.strategies import market_view

__all__ = ["collect_bids", "pace_period", "record_outcome"]


def pace_period(aggregators: Sequence[Aggregator], elapsed_ms: int, period_ms: int) -> None:
    """Tell every aggregator that `elapsed_ms` of the current `period_ms` trading period have
    passed, so each buys toward its requirement accrued so far (period_ms 0: no pacing).

    The live driver calls it as time passes (each scheduling tick) and the simulation before
    each offer, with the same clock origin: the start of the current trading period."""
    for agg in aggregators:
        agg.pace(elapsed_ms, period_ms)


def collect_bids(
    auction: Auction, aggregators: Sequence[Aggregator], history: MarketHistory
) -> list[BidRecord]:
    """Ask every aggregator for its bid in the auction's current round and submit those that
    the rules allow. Returns the submitted records in submission order.

    Aggregators are asked in a rotating order (by round and auction id) so that no aggregator
    always gets the earlier submission, which wins ties."""
    if auction.closed or not aggregators:
        return []
    submitted: list[BidRecord] = []
    start = (auction.round + auction.auction_id) % len(aggregators)
    ordered = list(aggregators[start:]) + list(aggregators[:start])
    scarcity = history.scarcity()
    clearing = history.recent_clearing_mc
    for agg in ordered:
        if agg.aggregator_id in auction.excluded:
            continue
        view = market_view(auction, agg.aggregator_id, clearing, scarcity)
        decision = agg.decide(view)
        if decision is None:
            continue
        price_mc, energy_wh = decision
        try:
            record = auction.submit(agg.aggregator_id, price_mc, energy_wh)
        except AuctionError:
            continue  # e.g. already bid this round (second price): the rules say no
        submitted.append(record)
    return submitted


def record_outcome(
    auction: Auction, aggregators: Sequence[Aggregator], history: MarketHistory
) -> None:
    """After an auction closed: book the win for the winner, a loss for every other bidder,
    and the clearing price into the history."""
    winner = auction.winner
    bidders = auction.bidders()
    for agg in aggregators:
        if winner is not None and agg.aggregator_id == winner.bidder_id:
            agg.on_won(auction.auction_id, winner.price_mc, winner.energy_wh)
        elif agg.aggregator_id in bidders:
            agg.on_lost(auction.auction_id)
        else:
            agg.state.release(auction.auction_id)
    if winner is not None:
        history.record_clearing(winner.price_mc)
