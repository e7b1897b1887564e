"""Running counts and prices of the site's auctions, for status lines and /api/v1/status."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from hub.auctions.messages import (
    Outcome,
    TradeTerms,
)
from hub.buyers.bidding import Buyers

__all__ = ["AuctionTotals"]


@dataclass
class AuctionTotals:
    """What the site's auctions came to since the hub started."""

    auctions_opened: int = 0
    auctions_cleared: int = 0
    auctions_no_sale: int = 0
    auctions_terminated: int = 0
    trades: int = 0  # verified: the battery acknowledged the confirm, or said so when asked
    trades_unverified: int = 0  # recorded, the battery's word still awaited (they do not count)
    trades_unresolvable: int = 0  # of those, ones the battery's answer cannot decide
    trades_voided: int = 0
    revenue_mc: int = 0
    premium_bp_sum: int = 0  # sum over trades of (price - reserve) / reserve in basis points
    price_sum_mc: int = 0
    reserve_sum_mc: int = 0
    failure_reaction_ms: list[float] = field(default_factory=list)

    def closed(self, outcome: Outcome, terms: TradeTerms | None) -> None:
        """Count one auction that ended with `outcome` (and its trade, if the battery proved
        it; an unverified one is counted by the reconciler when it asks, see resolved())."""
        if outcome is Outcome.NO_SALE:
            self.auctions_no_sale += 1
        elif outcome is Outcome.TERMINATED:
            self.auctions_terminated += 1
        elif outcome is Outcome.VOID:
            self.auctions_terminated += 1
            self.trades_voided += 1
        elif outcome is Outcome.UNVERIFIED:
            self.auctions_cleared += 1
        elif terms is not None:  # CLEARED: the battery acknowledged the confirm
            self.auctions_cleared += 1
            self._count_trade(terms)

    def resolved(self, status: str, terms: TradeTerms) -> None:
        """An unverified trade was decided by its battery: 'verified' (it counts now) or
        'void'."""
        self.trades_unverified -= 1
        if status == "verified":
            self._count_trade(terms)
        else:
            self.trades_voided += 1

    def _count_trade(self, terms: TradeTerms) -> None:
        self.trades += 1
        self.revenue_mc += terms.price_mc * terms.energy_wh // 1000
        self.price_sum_mc += terms.price_mc
        self.reserve_sum_mc += terms.reserve_mc
        if terms.reserve_mc:
            self.premium_bp_sum += (terms.price_mc - terms.reserve_mc) * 10000 // terms.reserve_mc

    def summary(self, buyers: Buyers, open_now: int) -> dict[str, Any]:
        """Counts, prices and each aggregator's standing as plain data."""
        trades = self.trades
        clearing = buyers.history.recent_clearing_mc
        return {
            "auctions_opened": self.auctions_opened,
            "auctions_open": open_now,
            "auctions_cleared": self.auctions_cleared,
            "auctions_no_sale": self.auctions_no_sale,
            "auctions_terminated": self.auctions_terminated,
            "trades": trades,
            "trades_unverified": self.trades_unverified,
            "trades_unresolvable": self.trades_unresolvable,
            "trades_voided": self.trades_voided,
            "revenue_mc": self.revenue_mc,
            "mean_price_mc": round(self.price_sum_mc / trades) if trades else None,
            "mean_reserve_mc": round(self.reserve_sum_mc / trades) if trades else None,
            "mean_premium_pct": round(self.premium_bp_sum / trades / 100, 2) if trades else None,
            "median_clearing_mc": statistics.median(clearing) if clearing else None,
            "last_clearing_mc": clearing[-1] if clearing else None,
            "failure_reaction_ms_max": (
                round(max(self.failure_reaction_ms), 3) if self.failure_reaction_ms else None
            ),
            "aggregators": [
                {
                    "id": agg.config.aggregator_id,
                    "name": agg.config.name,
                    "strategy": agg.config.strategy,
                    "wins": agg.state.wins,
                    "losses": agg.state.losses,
                    "success_rate": round(agg.state.success_rate, 3),
                    "spent_mc": agg.state.total_spent_mc + agg.state.spent_mc,
                    "energy_bought_wh": agg.state.total_bought_wh + agg.state.energy_bought_wh,
                    "period_spent_mc": agg.state.spent_mc,
                    "period_bought_wh": agg.state.energy_bought_wh,
                }
                for agg in buyers.aggregators
            ],
        }
