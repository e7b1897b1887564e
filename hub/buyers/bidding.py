"""The buyers' side of every auction: who bids, who holds, who won, and bidder reputation.

`Buyers` is what an auction session talks to (pure, no I/O): the live hub and the simulation
hand the same object type to the same session, so the aggregators see one market either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.auctions.rules import Auction, AuctionError, BidRecord
from hub.buyers.aggregator import Aggregator
from hub.buyers.history import MarketHistory, demand_wh
from hub.buyers.strategies import market_view

__all__ = ["Buyers", "collect_bids", "record_outcome"]


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


class Buyers:
    """The site's aggregators, the market history they read, and what batteries learn of them
    (reputation: trades a bidder confirmed against holds it left unconfirmed)."""

    def __init__(self, aggregators: Sequence[Aggregator], history: MarketHistory | None = None):
        self.aggregators = list(aggregators)
        self.by_id = {agg.aggregator_id: agg for agg in self.aggregators}
        self.history = history if history is not None else MarketHistory()
        self.confirmed_by_bidder: dict[int, int] = {}
        self.abandoned_by_bidder: dict[int, int] = {}
        self.paused: set[int] = set()  # aggregator ids an operator paused: they place no bids

    @property
    def active(self) -> list[Aggregator]:
        """The aggregators that bid (not paused by an operator)."""
        if not self.paused:
            return self.aggregators
        return [agg for agg in self.aggregators if agg.aggregator_id not in self.paused]

    @property
    def satisfied(self) -> bool:
        """True when no aggregator that bids wants to buy more this trading period."""
        return all(agg.state.satisfied for agg in self.active)

    def start_period(self) -> None:
        """A new trading period: every budget and energy requirement applies afresh."""
        for agg in self.aggregators:
            agg.state.start_period()

    def pace(self, elapsed_ms: int, period_ms: int) -> None:
        """`elapsed_ms` of the current `period_ms` trading period have passed: each aggregator
        buys toward the requirement accrued so far (period_ms 0: no pacing). The live scheduler
        calls it every tick and the simulation before each slot, from the same origin: the
        start of the current trading period."""
        for agg in self.aggregators:
            agg.pace(elapsed_ms, period_ms)

    def offered(self, lot_wh: int) -> None:
        """A battery put `lot_wh` up for sale (feeds the scarcity the strategies read)."""
        self.history.record_offer(lot_wh, demand_wh(self.aggregators, lot_wh))

    def collect(self, auction: Auction) -> list[BidRecord]:
        """This round's bids from every aggregator not paused, submitted to `auction`."""
        return collect_bids(auction, self.active, self.history)

    def held(self, auction: Auction, record: BidRecord) -> None:
        """The battery holds energy for `record` (call before the auction learns it): the
        previous holder is outbid, the new one commits budget to it."""
        previous = auction.standing
        if previous is not None and previous.bidder_id != record.bidder_id:
            outbid = self.by_id.get(previous.bidder_id)
            if outbid is not None:
                outbid.on_outbid(auction.auction_id)
        holder = self.by_id.get(record.bidder_id)
        if holder is not None:
            holder.on_held(auction.auction_id, record.price_mc, record.energy_wh)

    def closed(self, auction: Auction) -> None:
        """The auction is over with `auction.winner` (None: nothing sold)."""
        record_outcome(auction, self.aggregators, self.history)

    def abandoned(self, auction: Auction) -> None:
        """The auction was cut short (device failure, shutdown): release every hold on it
        without booking a win or a loss."""
        for agg in self.aggregators:
            agg.state.release(auction.auction_id)

    def trade_confirmed(self, bidder_id: int) -> None:
        """The winning bidder's trade went through (counts toward its reputation)."""
        self.confirmed_by_bidder[bidder_id] = self.confirmed_by_bidder.get(bidder_id, 0) + 1

    def trade_refused(self, bidder_id: int) -> None:
        """The battery never committed the bidder's trade (its hold was left unconfirmed)."""
        self.abandoned_by_bidder[bidder_id] = self.abandoned_by_bidder.get(bidder_id, 0) + 1

    def reputation(self) -> dict[int, int]:
        """Bidder reputation 0..10000: confirmed trades vs. holds left unconfirmed."""
        scores = {}
        for bidder in self.by_id:
            confirmed = self.confirmed_by_bidder.get(bidder, 0)
            abandoned = self.abandoned_by_bidder.get(bidder, 0)
            scores[bidder] = 10000 * (confirmed + 1) // (confirmed + abandoned + 1)
        return scores
