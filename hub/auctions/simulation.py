"""Seeded, pure scenario simulation: batteries offer lots, aggregators compete, auctions clear.

Runs the live hub's own AuctionSession (hub/auctions/session.py: the same rounds, strategies
and aggregator bookkeeping) with a simple in-memory battery (accepts a bid at or above its
reserve, rejects below it), so the same scenario and seed always give the same result. Used
by the competitive-pricing report's counterfactual and tests.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from hub.auctions.messages import (
    BidAnswered,
    Close,
    Command,
    ConfirmAnswered,
    Event,
    NextRound,
    QueryAnswered,
    RecordTrade,
    RoundStarted,
    SendBid,
    SendConfirm,
    SendQuery,
    SessionRules,
    TradeRecorded,
)
from hub.auctions.rules import Mechanism, Offer
from hub.auctions.session import AuctionSession
from hub.buyers.aggregator import Aggregator, AggregatorConfig, cost_mc
from hub.buyers.bidding import Buyers
from hub.buyers.history import MarketHistory
from shared_etp import schema

__all__ = [
    "AuctionOutcome",
    "BatterySpec",
    "Scenario",
    "SimResult",
    "best_funded",
    "counterfactual",
    "default_scenario",
    "simulate",
]


@dataclass(frozen=True)
class BatterySpec:
    """One battery of a scenario: capacity, announced reserve (mc/kWh), share for sale (1/100 %)."""

    device_id: int
    capacity_wh: int
    reserve_mc: int
    pct_for_sale: int  # 1/100 % (4000 = 40 %)


@dataclass
class Scenario:
    """A reproducible market: batteries and how often they sell, or explicit recorded offers.

    With `offers` set (e.g. rebuilt from the store) those exact lots, reserves and times are
    used; otherwise `auctions_per_battery` auctions per battery are generated from `seed`, one
    slot every `interval_ms`, every battery selling in each slot (concurrent auctions)."""

    seed: int
    batteries: list[BatterySpec] = field(default_factory=list)
    auctions_per_battery: int = 3
    mechanism: Mechanism = Mechanism.ASCENDING
    interval_ms: int = 60_000
    offers: list[Offer] | None = None
    history_window: int = 20
    rules: dict[str, int] = field(default_factory=dict)  # auction rule overrides
    # auction id -> the battery's private (dynamic) floor, above the announced reserve
    private_reserve_mc: dict[int, int] = field(default_factory=dict)
    # aggregators' budgets and requirements renew every period (as the hub's engine does)
    trading_period_ms: int = 0

    def build_offers(self) -> list[Offer]:
        """The scenario's offers in time order (deterministic for a seed)."""
        if self.offers is not None:
            return sorted(self.offers, key=lambda offer: (offer.opened_ms, offer.auction_id))
        rng = random.Random(self.seed * 7919 + 17)
        offers: list[Offer] = []
        auction_id = 1
        for slot in range(self.auctions_per_battery):
            for battery in self.batteries:
                nominal = battery.capacity_wh * battery.pct_for_sale // 10_000
                lot_wh = max(1, nominal * (80 + rng.randrange(0, 21)) // 100)
                reserve_mc = battery.reserve_mc * (95 + rng.randrange(0, 11)) // 100
                offers.append(
                    Offer(
                        device_id=battery.device_id,
                        auction_id=auction_id,
                        lot_wh=lot_wh,
                        reserve_mc=reserve_mc,
                        opened_ms=slot * self.interval_ms,
                    )
                )
                auction_id += 1
        return offers


def default_scenario(
    seed: int = 42,
    batteries: int = 10,
    auctions_per_battery: int = 3,
    mechanism: Mechanism | str = Mechanism.ASCENDING,
) -> Scenario:
    """Home batteries of 10-15 kWh selling 30-50 % each slot at reserves of 16-20 c/kWh,
    sized so three default aggregators roughly absorb the supply."""
    rng = random.Random(seed)
    specs = [
        BatterySpec(
            device_id=index + 1,
            capacity_wh=10_000 + rng.randrange(0, 11) * 500,
            reserve_mc=16_000 + rng.randrange(0, 9) * 500,
            pct_for_sale=3_000 + rng.randrange(0, 5) * 500,
        )
        for index in range(batteries)
    ]
    return Scenario(
        seed=seed,
        batteries=specs,
        auctions_per_battery=auctions_per_battery,
        mechanism=Mechanism(mechanism),
    )


@dataclass(frozen=True)
class AuctionOutcome:
    """How one simulated auction ended."""

    auction_id: int
    device_id: int
    opened_ms: int
    lot_wh: int
    reserve_mc: int
    clearing_price_mc: int | None
    winner_id: int | None
    energy_wh: int
    rounds: int
    bidders: int
    bidder_ids: tuple[int, ...] = ()

    @property
    def sold(self) -> bool:
        """True when the lot (or part of it) sold."""
        return self.clearing_price_mc is not None

    @property
    def revenue_mc(self) -> int:
        """What the battery owner earned (milli-cents)."""
        if self.clearing_price_mc is None:
            return 0
        return cost_mc(self.clearing_price_mc, self.energy_wh)

    @property
    def premium_pct(self) -> float | None:
        """Clearing price over reserve, in percent (None when unsold)."""
        if self.clearing_price_mc is None or self.reserve_mc <= 0:
            return None
        return (self.clearing_price_mc - self.reserve_mc) * 100.0 / self.reserve_mc


@dataclass
class SimResult:
    """Per-auction outcomes and totals of one simulation run."""

    seed: int
    mechanism: Mechanism
    aggregator_ids: list[int]
    outcomes: list[AuctionOutcome]
    aggregators: list[dict[str, Any]]

    @property
    def sold(self) -> list[AuctionOutcome]:
        """Auctions that cleared."""
        return [outcome for outcome in self.outcomes if outcome.sold]

    @property
    def cleared_share(self) -> float:
        """Share of auctions that cleared (0..1)."""
        return len(self.sold) / len(self.outcomes) if self.outcomes else 0.0

    @property
    def revenue_mc(self) -> int:
        """Total paid to battery owners (milli-cents)."""
        return sum(outcome.revenue_mc for outcome in self.outcomes)

    @property
    def energy_sold_wh(self) -> int:
        """Total energy sold."""
        return sum(outcome.energy_wh for outcome in self.sold)

    @property
    def mean_clearing_mc(self) -> float:
        """Mean clearing price of cleared auctions (0.0 if none)."""
        sold = self.sold
        return sum(o.clearing_price_mc or 0 for o in sold) / len(sold) if sold else 0.0

    @property
    def mean_reserve_mc(self) -> float:
        """Mean reserve of cleared auctions (0.0 if none)."""
        sold = self.sold
        return sum(o.reserve_mc for o in sold) / len(sold) if sold else 0.0

    @property
    def mean_premium_pct(self) -> float:
        """Mean premium of clearing price over reserve on cleared auctions, percent."""
        premiums = [o.premium_pct for o in self.sold if o.premium_pct is not None]
        return sum(premiums) / len(premiums) if premiums else 0.0

    @property
    def median_premium_pct(self) -> float:
        """Median premium over reserve on cleared auctions, percent."""
        premiums = [o.premium_pct for o in self.sold if o.premium_pct is not None]
        return float(median(premiums)) if premiums else 0.0

    @property
    def revenue_per_kwh_mc(self) -> float:
        """Energy-weighted average price paid, mc/kWh."""
        energy = self.energy_sold_wh
        return self.revenue_mc * 1000 / energy if energy else 0.0

    def summary(self) -> dict[str, Any]:
        """Totals as plain data (JSON-friendly)."""
        return {
            "seed": self.seed,
            "mechanism": self.mechanism.value,
            "aggregator_ids": self.aggregator_ids,
            "auctions": len(self.outcomes),
            "cleared": len(self.sold),
            "cleared_share": round(self.cleared_share, 4),
            "energy_sold_wh": self.energy_sold_wh,
            "revenue_mc": self.revenue_mc,
            "mean_clearing_mc": round(self.mean_clearing_mc, 1),
            "mean_reserve_mc": round(self.mean_reserve_mc, 1),
            "mean_premium_pct": round(self.mean_premium_pct, 3),
            "median_premium_pct": round(self.median_premium_pct, 3),
            "revenue_per_kwh_mc": round(self.revenue_per_kwh_mc, 1),
        }


class _Battery:
    """The battery side of a simulated auction: enforces its announced reserve, an optional
    private floor above it (answered `below_market`, as the firmware's dynamic reserve) and
    its lot; it answers at once and always commits the trade it is asked to confirm."""

    def __init__(self, offer: Offer, private_floor_mc: int = 0) -> None:
        self.offer = offer
        self.private_floor_mc = private_floor_mc

    def bid_answer(self, bid: SendBid) -> BidAnswered:
        """BidAccept, or BidReject with its reason."""
        if bid.price_mc < self.offer.reserve_mc:
            return BidAnswered(False, schema.REASON_BELOW_RESERVE)
        if bid.price_mc < self.private_floor_mc:
            return BidAnswered(False, schema.REASON_BELOW_MARKET)
        if bid.energy_wh > self.offer.lot_wh:
            return BidAnswered(False, schema.REASON_INSUFFICIENT_ENERGY)
        return BidAnswered(True)

    def answer(self, command: Command) -> Event | None:
        """What the battery (or the instant store) answers to one command of the session."""
        if isinstance(command, SendQuery):
            return QueryAnswered(self.offer.lot_wh, self.offer.reserve_mc, schema.HEALTH_OK)
        if isinstance(command, SendBid):
            return self.bid_answer(command)
        if isinstance(command, RecordTrade):
            return TradeRecorded()
        if isinstance(command, SendConfirm):
            return ConfirmAnswered(command.copy, True)
        return None


def _run_until_round_ends(
    session: AuctionSession, battery: _Battery, commands: list[Command]
) -> bool:
    """Carry out `commands` (and those they lead to) until the session closes (True) or waits
    for its next round (False): concurrent auctions then advance round by round in lockstep."""
    pending = deque(commands)
    while pending:
        command = pending.popleft()
        if isinstance(command, Close):
            return True
        if isinstance(command, NextRound):
            return False
        event = battery.answer(command)
        if event is not None:
            pending.extend(session.handle(event))
    raise AssertionError(f"auction {session.auction_id}: session stopped without closing")


def simulate(scenario: Scenario, aggregators: Sequence[AggregatorConfig]) -> SimResult:
    """Run every offer of `scenario` with these aggregators; deterministic for a scenario.

    Offers opened at the same time run concurrently, round by round in lockstep, so an
    aggregator's holds in one auction limit what it bids in the others. Each auction is the
    same AuctionSession the live hub drives, answered by an in-memory battery."""
    agents = [Aggregator(config) for config in aggregators]
    buyers = Buyers(agents, MarketHistory(scenario.history_window))
    rules = SessionRules(
        mechanism=Mechanism(scenario.mechanism),
        max_lot_wh=None,
        min_lot_wh=1,
        response_timeout_ms=0,
        hold_timeout_ms=0,
        auction_rules=dict(scenario.rules),
    )
    offers = scenario.build_offers()
    outcomes: dict[int, AuctionOutcome] = {}
    slots: dict[int, list[Offer]] = {}
    for offer in offers:
        slots.setdefault(offer.opened_ms, []).append(offer)
    period_started: int | None = None
    for opened_ms in sorted(slots):
        if period_started is None:
            period_started = opened_ms
        elif (
            scenario.trading_period_ms and opened_ms - period_started >= scenario.trading_period_ms
        ):
            period_started = opened_ms
            buyers.start_period()
        buyers.pace(opened_ms - period_started, scenario.trading_period_ms)
        running: list[tuple[AuctionSession, _Battery]] = []
        for offer in slots[opened_ms]:
            session = AuctionSession(offer, rules, buyers)
            battery = _Battery(offer, scenario.private_reserve_mc.get(offer.auction_id, 0))
            if not _run_until_round_ends(session, battery, session.start()):
                running.append((session, battery))
        while running:
            still: list[tuple[AuctionSession, _Battery]] = []
            for session, battery in running:
                if _run_until_round_ends(session, battery, session.handle(RoundStarted())):
                    outcomes[session.auction_id] = _outcome(session)
                else:
                    still.append((session, battery))
            running = still
    ordered = [outcomes[offer.auction_id] for offer in offers]
    return SimResult(
        seed=scenario.seed,
        mechanism=Mechanism(scenario.mechanism),
        aggregator_ids=[agent.aggregator_id for agent in agents],
        outcomes=ordered,
        aggregators=[agent.state.snapshot() for agent in agents],
    )


def _outcome(session: AuctionSession) -> AuctionOutcome:
    auction = session.auction
    assert auction is not None  # every simulated battery answers its query with a lot
    winner = auction.winner
    return AuctionOutcome(
        auction_id=auction.auction_id,
        device_id=auction.offer.device_id,
        opened_ms=auction.offer.opened_ms,
        lot_wh=auction.offer.lot_wh,
        reserve_mc=auction.offer.reserve_mc,
        clearing_price_mc=winner.price_mc if winner else None,
        winner_id=winner.bidder_id if winner else None,
        energy_wh=winner.energy_wh if winner else 0,
        rounds=auction.round,
        bidders=len(auction.bidders()),
        bidder_ids=tuple(sorted(auction.bidders())),
    )


def best_funded(aggregators: Sequence[AggregatorConfig]) -> AggregatorConfig:
    """The aggregator with the largest budget (ties: the lower id) — the counterfactual's
    monopsonist: the single buyer most able to buy the whole supply on its own."""
    if not aggregators:
        raise ValueError("best_funded needs at least one aggregator")
    return min(aggregators, key=lambda config: (-config.budget_mc, config.aggregator_id))


def counterfactual(scenario: Scenario, aggregators: Sequence[AggregatorConfig]) -> SimResult:
    """Same scenario and seed with only the best-funded aggregator bidding (no competition)."""
    return simulate(scenario, [best_funded(aggregators)])
