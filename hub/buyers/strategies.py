"""Bidding strategies of the aggregators: fixed margin, adaptive, market-aware (deterministic).

A strategy answers one question: what price (mc/kWh) to bid now in this auction, or None to
not bid / not raise. It sees a `MarketView` (public auction and market facts) and the
aggregator's own `AggregatorState`. No randomness: the same inputs give the same price.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import TYPE_CHECKING, Any, Protocol

from hub.auctions.rules import Auction, Mechanism

if TYPE_CHECKING:
    from hub.buyers.aggregator import AggregatorState

__all__ = [
    "AdaptiveStrategy",
    "FixedMarginStrategy",
    "MarketAwareStrategy",
    "MarketView",
    "Strategy",
    "UnknownStrategyError",
    "make_strategy",
    "market_view",
]


class UnknownStrategyError(ValueError):
    """The strategy name in a configuration is not one of `STRATEGY_NAMES`."""


@dataclass
class MarketView:
    """What one bidder can see when deciding: the auction's public state plus market history.

    `scarcity` = energy demanded by all aggregators / energy offered over a recent window
    (1.0 = balanced, above = scarce, below = ample supply)."""

    reserve_mc: int
    standing_price_mc: int | None
    standing_is_mine: bool
    round: int
    lot_wh: int
    recent_clearing_mc: list[int] = field(default_factory=list)  # newest last
    scarcity: float = 1.0
    mechanism: Mechanism = Mechanism.ASCENDING
    min_increment_mc: int = 100
    known_floor_mc: int | None = None  # reserve raised by public below-reserve rejections
    auction_id: int = 0

    def floor_mc(self) -> int:
        """Lowest price the auction accepts from this bidder now."""
        floor = max(self.reserve_mc, self.known_floor_mc or 0)
        if self.mechanism is Mechanism.ASCENDING and self.standing_price_mc is not None:
            floor = max(floor, self.standing_price_mc + self.min_increment_mc)
        return floor


def market_view(
    auction: Auction, bidder_id: int, recent_clearing_mc: list[int], scarcity: float
) -> MarketView:
    """Build `bidder_id`'s view of `auction` (helper for the runtime and the simulation)."""
    standing = auction.standing
    return MarketView(
        reserve_mc=auction.offer.reserve_mc,
        standing_price_mc=standing.price_mc if standing else None,
        standing_is_mine=bool(standing and standing.bidder_id == bidder_id),
        round=auction.round,
        lot_wh=auction.available_wh,
        recent_clearing_mc=list(recent_clearing_mc),
        scarcity=scarcity,
        mechanism=auction.mechanism,
        min_increment_mc=auction.min_increment_mc,
        known_floor_mc=auction.known_floor_mc,
        auction_id=auction.auction_id,
    )


class Strategy(Protocol):
    """A bidding strategy. `price` returns None to not bid (or not raise). A strategy may also
    define `size_wh(view, state, want_wh) -> int` to ask for less energy than it could."""

    name: str

    def price(self, view: MarketView, state: AggregatorState) -> int | None:
        """Price to bid now in mc/kWh, never above the aggregator's max price or budget."""
        ...


def _ascending_step(
    view: MarketView, opening_mc: int, ceiling_mc: int, raise_mc: int
) -> int | None:
    """Common ascending logic: open at `opening_mc`, else raise the standing bid by `raise_mc`;
    always at least the floor, never above the ceiling."""
    if view.standing_is_mine:
        return None
    floor = view.floor_mc()
    if view.standing_price_mc is None:
        want = max(floor, opening_mc)
    else:
        want = max(floor, view.standing_price_mc + raise_mc)
    if want > ceiling_mc:
        # Cannot make the preferred raise: the floor itself may still fit under the ceiling.
        want = floor
    return want if want <= ceiling_mc else None


@dataclass
class FixedMarginStrategy:
    """Opens at reserve * (1 + margin) and raises by the minimum increment while the price stays
    at or below its value (the aggregator's max price). Second price: bids its value."""

    margin_bp: int = 500
    name: str = "fixed"

    def price(self, view: MarketView, state: AggregatorState) -> int | None:
        """See the class docstring."""
        ceiling = state.price_cap_mc(view.lot_wh, view.auction_id)
        if ceiling < view.floor_mc():
            return None
        if view.mechanism is Mechanism.SECOND_PRICE:
            return ceiling
        opening = view.reserve_mc * (10_000 + self.margin_bp) // 10_000
        return _ascending_step(view, min(opening, ceiling), ceiling, view.min_increment_mc)


@dataclass
class AdaptiveStrategy:
    """Aggressiveness in [0, 1] follows the recent success rate: below `target_success` (more
    losses) it rises, above it falls. The aggregator's limit in an auction is
    reserve + aggressiveness * (value - reserve); opening bids and raises scale with it."""

    target_success: float = 0.5
    window: int = 10
    initial: float = 0.5
    gain: float = 1.0
    max_raise_steps: int = 4
    name: str = "adaptive"

    def aggressiveness(self, state: AggregatorState) -> float:
        """Current aggressiveness from the success rate over the last `window` auctions."""
        recent = state.recent_outcomes(self.window)
        if not recent:
            return self.initial
        rate = sum(recent) / len(recent)
        return min(1.0, max(0.0, self.initial + self.gain * (self.target_success - rate)))

    def price(self, view: MarketView, state: AggregatorState) -> int | None:
        """See the class docstring."""
        value = state.price_cap_mc(view.lot_wh, view.auction_id)
        if value < view.floor_mc():
            return None
        aggr = self.aggressiveness(state)
        headroom = max(0, value - view.reserve_mc)
        limit = view.reserve_mc + int(aggr * headroom)
        limit = min(value, max(limit, view.reserve_mc))
        if view.mechanism is Mechanism.SECOND_PRICE:
            return limit if limit >= view.floor_mc() else None
        opening = view.reserve_mc + int(aggr * headroom / 2)
        raise_mc = view.min_increment_mc * (1 + int(aggr * self.max_raise_steps))
        return _ascending_step(view, opening, limit, raise_mc)


@dataclass
class MarketAwareStrategy:
    """Anchors on recent clearing prices (median plus trend) and on scarcity.

    Scarce market (scarcity above `scarce_above`): bids early and high, at the anchor lifted by
    `scarcity_gain` per unit of excess demand, up to its value. Ample supply (scarcity at or
    below `ample_below`): waits `patience_rounds` rounds, opens near the reserve and raises at
    most to the anchor. In between it opens at the anchor.
    Sizing: buys only part of what it wants while prices fall in a market that is not scarce."""

    window: int = 10
    patience_rounds: int = 1
    ample_below: float = 1.0
    scarce_above: float = 1.2
    scarcity_gain: float = 0.15
    default_margin_bp: int = 500
    falling_share_bp: int = 5_000
    name: str = "market"

    def trend_mc(self, view: MarketView) -> int:
        """Average change of the clearing price per sale over the window (0 without history)."""
        recent = view.recent_clearing_mc[-self.window :]
        if len(recent) < 2:
            return 0
        return (recent[-1] - recent[0]) // (len(recent) - 1)

    def anchor_mc(self, view: MarketView) -> int:
        """Expected clearing price now: the window's median carried forward by the trend
        (the median sits mid-window), never below the reserve."""
        recent = view.recent_clearing_mc[-self.window :]
        if not recent:
            return view.reserve_mc * (10_000 + self.default_margin_bp) // 10_000
        mid = int(median(recent))
        projected = mid + self.trend_mc(view) * (len(recent) - 1) // 2
        # A projection never leaves the range actually seen: no runaway extrapolation.
        return max(view.reserve_mc, min(max(recent), max(min(recent), projected)))

    def target_mc(self, view: MarketView) -> int:
        """Price it is willing to reach in this auction before capping at its value."""
        anchor = self.anchor_mc(view)
        if view.scarcity > self.ample_below:
            excess = min(view.scarcity - 1.0, 3.0)
            return int(anchor * (1.0 + self.scarcity_gain * max(0.0, excess)))
        return anchor

    def price(self, view: MarketView, state: AggregatorState) -> int | None:
        """See the class docstring."""
        value = state.price_cap_mc(view.lot_wh, view.auction_id)
        floor = view.floor_mc()
        if value < floor:
            return None
        ample = view.scarcity <= self.ample_below
        scarce = view.scarcity > self.scarce_above
        limit = min(value, self.target_mc(view))
        if scarce:
            limit = value if view.standing_price_mc is not None else limit
        if view.mechanism is Mechanism.SECOND_PRICE:
            return limit if limit >= floor else None
        if ample and view.round <= self.patience_rounds:
            return None  # let the market show its hand first
        if scarce:
            opening = self.target_mc(view)  # jump bid: take the lot before others do
        elif ample:
            # no pressure: open near the reserve, raise up to the market price if challenged
            opening = view.reserve_mc * (10_000 + self.default_margin_bp) // 10_000
        else:
            opening = self.anchor_mc(view)
        raise_mc = view.min_increment_mc * (2 if scarce else 1)
        return _ascending_step(view, min(opening, limit), limit, raise_mc)

    def size_wh(self, view: MarketView, state: AggregatorState, want_wh: int) -> int:
        """Energy to ask for out of `want_wh`: all of it when supply is scarce or prices are
        flat or rising; only `falling_share_bp` of it (at least the minimum purchase) when
        prices are falling and supply is not scarce, since cheaper lots are expected."""
        if view.scarcity > self.scarce_above or self.trend_mc(view) >= 0:
            return want_wh
        part = want_wh * self.falling_share_bp // 10_000
        return min(want_wh, max(part, state.config.min_purchase_wh))


STRATEGY_NAMES = ("fixed", "adaptive", "market")


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build a strategy by its configuration name: "fixed", "adaptive" or "market"."""
    factories: dict[str, Any] = {
        "fixed": FixedMarginStrategy,
        "adaptive": AdaptiveStrategy,
        "market": MarketAwareStrategy,
    }
    try:
        factory = factories[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}"
        )
    try:
        strategy: Strategy = factory(**params)
    except TypeError as exc:
        raise UnknownStrategyError(f"bad parameters for strategy {name!r}: {exc}")
    return strategy
