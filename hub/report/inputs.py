"""Report inputs: recorded auctions, trades and bids, from the store or from a simulation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hub.buyers.aggregator import AggregatorConfig, cost_mc

if TYPE_CHECKING:
    from hub.auctions.simulation import SimResult

__all__ = ["ReportAuction", "ReportBid", "ReportInput", "from_simulation", "load_report_input"]


@dataclass(frozen=True)
class ReportAuction:
    """One recorded auction (the store's AuctionRow fields the report needs)."""

    id: int
    device_id: int
    mechanism: str
    lot_wh: int
    reserve_mc: int
    status: str  # open | cleared | unverified (not proved by its battery) | no_sale | terminated
    clearing_price_mc: int | None
    winner_id: int | None
    energy_wh: int | None
    opened_ms: int
    closed_ms: int | None = None

    @property
    def cleared(self) -> bool:
        """True when the auction ended in a confirmed sale with a price."""
        return self.status == "cleared" and self.clearing_price_mc is not None

    @property
    def revenue_mc(self) -> int:
        """What the battery owner earned in this auction (milli-cents)."""
        if not self.cleared or self.clearing_price_mc is None:
            return 0
        return cost_mc(self.clearing_price_mc, self.energy_wh or 0)

    @property
    def premium_pct(self) -> float | None:
        """Clearing price over reserve in percent (None when not cleared or reserve 0)."""
        if not self.cleared or self.clearing_price_mc is None or self.reserve_mc <= 0:
            return None
        return (self.clearing_price_mc - self.reserve_mc) * 100.0 / self.reserve_mc


@dataclass(frozen=True)
class ReportBid:
    """One bid put to a battery (only who bid in which auction matters to the report)."""

    auction_id: int
    bidder_id: int
    price_mc: int
    outcome: str
    reason: int | None = None  # the battery's REASON_* code when rejected


@dataclass
class ReportInput:
    """Everything the report is computed from; `source` says where it came from."""

    auctions: list[ReportAuction]
    bids: list[ReportBid] = field(default_factory=list)
    source: str = "store"
    # the aggregators the hub ran, as its event log recorded them (None: not recorded)
    aggregators: list[AggregatorConfig] | None = None

    def bidder_ids(self) -> list[int]:
        """Every aggregator seen bidding or winning, ascending."""
        ids = {bid.bidder_id for bid in self.bids}
        ids.update(a.winner_id for a in self.auctions if a.winner_id is not None)
        return sorted(ids)


def from_simulation(result: SimResult, source: str = "simulation") -> ReportInput:
    """Turn a simulation result into report input (every simulated auction closes)."""
    auctions = [
        ReportAuction(
            id=o.auction_id,
            device_id=o.device_id,
            mechanism=result.mechanism.value,
            lot_wh=o.lot_wh,
            reserve_mc=o.reserve_mc,
            status="cleared" if o.sold else "no_sale",
            clearing_price_mc=o.clearing_price_mc,
            winner_id=o.winner_id,
            energy_wh=o.energy_wh if o.sold else None,
            opened_ms=o.opened_ms,
            closed_ms=o.opened_ms,
        )
        for o in result.outcomes
    ]
    bids = [
        ReportBid(
            o.auction_id,
            bidder,
            o.clearing_price_mc or 0 if bidder == o.winner_id else 0,
            "confirmed" if bidder == o.winner_id else "sent",
        )
        for o in result.outcomes
        for bidder in o.bidder_ids
    ]
    return ReportInput(auctions=auctions, bids=bids, source=source)


async def load_report_input(store: Any, last_auctions: int | None = None) -> ReportInput:
    """Read auctions and bids through the store's public API (`list_auctions`, `list_bids`):
    all of them, or the `last_auctions` newest auctions with their trades and bids.

    A cleared auction missing its price/energy is completed from its trade; one whose trade its
    battery has not proved (unverified) is reported as such and counts as no sale."""
    auction_rows = await store.list_auctions(limit=last_auctions)
    since = min((row.id for row in auction_rows), default=None) if last_auctions else None
    trades = {
        trade.auction_id: trade for trade in await store.list_trades(min_auction_id=since)
    }
    auctions = []
    for row in auction_rows:
        price, winner, energy = row.clearing_price_mc, row.winner_id, row.energy_wh
        trade = trades.get(row.id)
        status = row.status
        if status == "cleared" and trade is not None and trade.status != "verified":
            status = "unverified"
        elif status == "cleared" and trade is not None:
            price = price if price is not None else trade.price_mc
            winner = winner if winner is not None else trade.bidder_id
            energy = energy if energy is not None else trade.energy_wh
        auctions.append(
            ReportAuction(
                id=row.id,
                device_id=row.device_id,
                mechanism=row.mechanism,
                lot_wh=row.lot_wh,
                reserve_mc=row.reserve_mc,
                status=status,
                clearing_price_mc=price,
                winner_id=winner,
                energy_wh=energy,
                opened_ms=row.opened_ms,
                closed_ms=row.closed_ms,
            )
        )
    auctions.sort(key=lambda a: (a.opened_ms, a.id))
    bids = [
        ReportBid(row.auction_id, row.bidder_id, row.price_mc, row.outcome, row.reason)
        for row in await store.list_bids(min_auction_id=since)
    ]
    return ReportInput(
        auctions=auctions, bids=bids, source="store", aggregators=await _recorded_aggregators(store)
    )


async def _recorded_aggregators(store: Any, page: int = 1000) -> list[AggregatorConfig] | None:
    """The configuration of each aggregator the hub last ran (its aggregator_update events),
    so the counterfactual replays the buyers that really traded (budgets, requirements)."""
    configs: dict[int, AggregatorConfig] = {}
    after = 0
    while True:
        rows = await store.list_events(after_seq=after, limit=page, kinds=["aggregator_update"])
        for row in rows:
            config = row.payload.get("config")
            if isinstance(config, dict):
                try:
                    configs[int(config["aggregator_id"])] = AggregatorConfig(**config)
                except (KeyError, TypeError, ValueError):
                    continue  # written by another version of the hub: not replayable
        if len(rows) < page:
            break
        after = rows[-1].seq
    return [configs[key] for key in sorted(configs)] or None
