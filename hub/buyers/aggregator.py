"""Aggregators: configuration, bookkeeping (budget, energy, success rate) and bid decisions.

Pure state, no I/O: the runtime (or the simulation) tells an `Aggregator` what happened in an
auction (`on_held`, `on_outbid`, `on_won`, `on_lost`) and asks it for its next bid (`decide`).
With trading periods, it is also told how far the period has run (`pace`): its energy
requirement and its budget accrue across the period, so it buys steadily instead of spending
its whole period's budget in the first auctions.
Money: a price in mc/kWh times energy in Wh / 1000 is a cost in milli-cents (`cost_mc`).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hub.buyers.strategies import STRATEGY_NAMES, MarketView, Strategy, make_strategy

__all__ = [
    "Aggregator",
    "AggregatorConfig",
    "AggregatorConfigError",
    "AggregatorState",
    "cost_mc",
    "default_aggregators",
]

# Bidder ids sit above every device id (devices are 1..65535, the 16-bit key-id space).
FIRST_AGGREGATOR_ID = 100_000
OUTCOME_HISTORY = 200  # outcomes kept for success-rate windows


class AggregatorConfigError(ValueError):
    """An aggregator configuration value is out of range."""


def cost_mc(price_mc_per_kwh: int, energy_wh: int) -> int:
    """Cost in milli-cents of `energy_wh` at `price_mc_per_kwh`, rounded up (never under-
    counts spending against a budget)."""
    return -(-price_mc_per_kwh * energy_wh // 1000)


@dataclass
class AggregatorConfig:
    """One aggregator (a buyer): who it is, how much money and energy, how it bids."""

    aggregator_id: int
    name: str
    strategy: str
    budget_mc: int
    energy_requirement_wh: int
    max_price_mc: int
    strategy_params: dict[str, Any] = field(default_factory=dict)
    min_purchase_wh: int = 100  # smallest useful purchase; budget caps price for at least this
    # paced demand accrues in steps of this much (about one lot): each win buys a useful
    # amount, so a few aggregators need few auctions and none is starved of them
    pace_step_wh: int = 1000

    def __post_init__(self) -> None:
        if self.aggregator_id < FIRST_AGGREGATOR_ID:
            raise AggregatorConfigError(
                f"aggregator {self.name!r}: id must be >= {FIRST_AGGREGATOR_ID} "
                f"(device ids are 1..65535), got {self.aggregator_id}"
            )
        if self.strategy not in STRATEGY_NAMES:
            raise AggregatorConfigError(
                f"aggregator {self.name!r}: strategy must be one of {STRATEGY_NAMES}, "
                f"got {self.strategy!r}"
            )
        for label in (
            "budget_mc",
            "energy_requirement_wh",
            "max_price_mc",
            "min_purchase_wh",
            "pace_step_wh",
        ):
            if getattr(self, label) <= 0:
                raise AggregatorConfigError(
                    f"aggregator {self.name!r}: {label} must be > 0, got {getattr(self, label)}"
                )


class AggregatorState:
    """Running totals of one aggregator plus what it currently holds in open auctions."""

    def __init__(self, config: AggregatorConfig) -> None:
        self.config = config
        self.spent_mc = 0  # in the current trading period
        self.energy_bought_wh = 0  # in the current trading period
        self.total_spent_mc = 0  # over finished periods (see start_period)
        self.total_bought_wh = 0
        self.periods = 0
        self.wins = 0
        self.losses = 0
        self.outcomes: deque[bool] = deque(maxlen=OUTCOME_HISTORY)  # True = won, newest last
        # auction id -> (price mc/kWh, energy Wh) of the bid the battery holds for us there
        self.holds: dict[int, tuple[int, int]] = {}
        self._held_cost_mc = 0  # running totals over `holds` (O(1) budget checks)
        self._held_wh = 0
        # what of the period's requirement and budget is due so far (see pace): kept as
        # values, set when the clock moves, because every bidding decision reads them
        self.paced = False  # True while only part of the period's requirement is due
        self.due_requirement_wh = config.energy_requirement_wh
        self.due_budget_mc = config.budget_mc

    # -- derived figures ------------------------------------------------------------------
    @property
    def success_rate(self) -> float:
        """Share of auctions it bid in that it won (0.0 before any outcome)."""
        total = self.wins + self.losses
        return self.wins / total if total else 0.0

    def recent_outcomes(self, window: int) -> list[bool]:
        """The last `window` outcomes, oldest first."""
        items = list(self.outcomes)
        return items[-window:] if window > 0 else []

    # -- pacing across a trading period ---------------------------------------------------
    def pace(self, elapsed_ms: int, period_ms: int) -> None:
        """`elapsed_ms` of a `period_ms` trading period have passed: from now on it wants the
        requirement accrued so far (requirement x elapsed / period, rounded up to the next
        `pace_step_wh` so the whole requirement is due before the period ends) minus what it
        already bought, and may spend the same share of its budget. `period_ms` <= 0 turns
        pacing off (everything due)."""
        config = self.config
        requirement = config.energy_requirement_wh
        if period_ms <= 0 or elapsed_ms >= period_ms:
            self.paced = False
            self.due_requirement_wh, self.due_budget_mc = requirement, config.budget_mc
            return
        self.paced = True
        accrued = requirement * max(0, elapsed_ms) // period_ms
        step = config.pace_step_wh
        self.due_requirement_wh = min(requirement, (accrued // step + 1) * step)
        self.due_budget_mc = config.budget_mc * self.due_requirement_wh // requirement

    @property
    def remaining_requirement_wh(self) -> int:
        """Energy still to buy now (of the requirement due so far)."""
        return max(0, self.due_requirement_wh - self.energy_bought_wh)

    @property
    def period_remaining_wh(self) -> int:
        """Energy still to buy before the period ends (paced or not)."""
        return max(0, self.config.energy_requirement_wh - self.energy_bought_wh)

    @property
    def satisfied(self) -> bool:
        """True when nothing is to be bought now: the requirement due is met (while paced:
        less than a minimum purchase is due yet), or no useful purchase is affordable."""
        remaining = self.remaining_requirement_wh
        if remaining <= 0:
            return True
        if self.paced and remaining < min(self.config.min_purchase_wh, self.period_remaining_wh):
            return True  # wait until a useful amount has accrued
        return self.available_mc() < cost_mc(1, self.config.min_purchase_wh)

    def committed_mc(self, exclude_auction: int | None = None) -> int:
        """Money tied up in bids the batteries hold (other than in `exclude_auction`)."""
        held = self.holds.get(exclude_auction) if exclude_auction is not None else None
        return self._held_cost_mc - (cost_mc(*held) if held else 0)

    def held_wh(self, exclude_auction: int | None = None) -> int:
        """Energy held for us in open auctions (other than `exclude_auction`)."""
        held = self.holds.get(exclude_auction) if exclude_auction is not None else None
        return self._held_wh - (held[1] if held else 0)

    def available_mc(self, exclude_auction: int | None = None) -> int:
        """Budget due so far left after spending and after what open holds would cost."""
        return self.due_budget_mc - self.spent_mc - self.committed_mc(exclude_auction)

    def can_afford(self, price_mc: int, energy_wh: int, auction_id: int | None = None) -> bool:
        """True when buying `energy_wh` at `price_mc` fits the remaining budget."""
        return cost_mc(price_mc, energy_wh) <= self.available_mc(auction_id)

    def price_cap_mc(self, lot_wh: int, auction_id: int | None = None) -> int:
        """Highest price it may bid in an auction: max price, lowered when the budget cannot
        pay even the smallest useful purchase at it."""
        need = min(
            self.remaining_requirement_wh - self.held_wh(auction_id),
            lot_wh,
            self.config.min_purchase_wh,
        )
        if need <= 0:
            return 0
        budget_cap = max(0, self.available_mc(auction_id)) * 1000 // need
        return min(self.config.max_price_mc, budget_cap)

    def wants_energy_wh(
        self, lot_wh: int, price_mc: int | None = None, auction_id: int | None = None
    ) -> int:
        """Energy to ask for: remaining requirement (minus energy held elsewhere), capped by the
        lot and by what the budget pays at `price_mc` (default: its max price)."""
        price = price_mc if price_mc is not None else self.config.max_price_mc
        need = self.remaining_requirement_wh - self.held_wh(auction_id)
        want = min(need, lot_wh)
        if price > 0:
            want = min(want, max(0, self.available_mc(auction_id)) * 1000 // price)
        return max(0, want)

    # -- outcomes -------------------------------------------------------------------------
    def hold(self, auction_id: int, price_mc: int, energy_wh: int) -> None:
        """A battery now holds energy for our bid in `auction_id`."""
        self.release(auction_id)
        self.holds[auction_id] = (price_mc, energy_wh)
        self._held_cost_mc += cost_mc(price_mc, energy_wh)
        self._held_wh += energy_wh

    def release(self, auction_id: int) -> None:
        """Our hold in `auction_id` is gone (outbid, expired, auction ended)."""
        held = self.holds.pop(auction_id, None)
        if held is not None:
            self._held_cost_mc -= cost_mc(*held)
            self._held_wh -= held[1]

    def record_win(self, price_mc: int, energy_wh: int, auction_id: int | None = None) -> None:
        """We bought `energy_wh` at `price_mc`."""
        if auction_id is not None:
            self.release(auction_id)
        self.spent_mc += cost_mc(price_mc, energy_wh)
        self.energy_bought_wh += energy_wh
        self.wins += 1
        self.outcomes.append(True)

    def record_loss(self, auction_id: int | None = None) -> None:
        """We bid in an auction and did not win it."""
        if auction_id is not None:
            self.release(auction_id)
        self.losses += 1
        self.outcomes.append(False)

    def start_period(self) -> None:
        """A new trading period: the budget and the energy requirement apply afresh (an
        aggregator buys for each delivery period); holds, wins, losses and history carry on."""
        self.total_spent_mc += self.spent_mc
        self.total_bought_wh += self.energy_bought_wh
        self.spent_mc = 0
        self.energy_bought_wh = 0
        self.periods += 1

    def snapshot(self) -> dict[str, Any]:
        """Plain-data summary (for logs, the API, reports)."""
        return {
            "aggregator_id": self.config.aggregator_id,
            "name": self.config.name,
            "strategy": self.config.strategy,
            "budget_mc": self.config.budget_mc,
            "spent_mc": self.spent_mc,
            "energy_requirement_wh": self.config.energy_requirement_wh,
            "energy_bought_wh": self.energy_bought_wh,
            "energy_due_wh": self.due_requirement_wh,
            "total_spent_mc": self.total_spent_mc + self.spent_mc,
            "total_bought_wh": self.total_bought_wh + self.energy_bought_wh,
            "periods": self.periods,
            "wins": self.wins,
            "losses": self.losses,
            "success_rate": round(self.success_rate, 4),
            "satisfied": self.satisfied,
        }


class Aggregator:
    """An aggregator: configuration, running state and its bidding strategy."""

    def __init__(self, config: AggregatorConfig, strategy: Strategy | None = None) -> None:
        self.config = config
        self.state = AggregatorState(config)
        self.strategy = strategy or make_strategy(config.strategy, **config.strategy_params)

    @property
    def aggregator_id(self) -> int:
        """The bidder id used on the wire (src of its Bids)."""
        return self.config.aggregator_id

    def decide(self, view: MarketView) -> tuple[int, int] | None:
        """(price mc/kWh, energy Wh) to bid now in the auction seen through `view`, or None.

        The price never exceeds the max price; the energy is cut so the cost fits the budget
        (and sized by the strategy when it has a `size_wh` rule)."""
        if self.state.satisfied:
            return None
        price = self.strategy.price(view, self.state)
        if price is None or price <= 0 or price > self.config.max_price_mc:
            return None
        energy = self.state.wants_energy_wh(view.lot_wh, price, view.auction_id)
        size = getattr(self.strategy, "size_wh", None)
        if size is not None and energy > 0:
            energy = max(0, min(energy, int(size(view, self.state, energy))))
        if energy <= 0 or not self.state.can_afford(price, energy, view.auction_id):
            return None
        return price, energy

    # Convenience hooks for the runtime, mirroring the battery's answers.
    def on_held(self, auction_id: int, price_mc: int, energy_wh: int) -> None:
        """The battery accepted (holds) our bid."""
        self.state.hold(auction_id, price_mc, energy_wh)

    def on_outbid(self, auction_id: int) -> None:
        """Another bid replaced ours as the held one."""
        self.state.release(auction_id)

    def on_won(self, auction_id: int, price_mc: int, energy_wh: int) -> None:
        """The trade is final (confirmed): count spend and energy."""
        self.state.record_win(price_mc, energy_wh, auction_id)

    def on_lost(self, auction_id: int) -> None:
        """The auction ended and we (having bid) did not win."""
        self.state.record_loss(auction_id)

    def pace(self, elapsed_ms: int, period_ms: int) -> None:
        """How far the trading period has run (see `AggregatorState.pace`)."""
        self.state.pace(elapsed_ms, period_ms)


def default_aggregators(
    count: int = 3, seed: int = 0, demand_scale: int = 1
) -> list[AggregatorConfig]:
    """`count` aggregators with different strategies (fixed, adaptive, market, then cycling),
    ids FIRST_AGGREGATOR_ID + 1.., budgets / requirements / max prices varied by `seed`;
    `demand_scale` multiplies every budget and requirement (a bigger fleet, a bench)."""
    if count < 1:
        raise AggregatorConfigError(f"need at least one aggregator, got {count}")
    rng = random.Random(seed)
    configs = []
    for index in range(count):
        strategy = STRATEGY_NAMES[index % len(STRATEGY_NAMES)]
        requirement_wh = 40_000 + rng.randrange(0, 21) * 1_000  # 40..60 kWh
        max_price_mc = 28_000 + rng.randrange(0, 9) * 500  # 28..32 c/kWh
        budget_mc = cost_mc(max_price_mc, requirement_wh) * (90 + rng.randrange(0, 21)) // 100
        requirement_wh *= demand_scale
        budget_mc *= demand_scale
        configs.append(
            AggregatorConfig(
                aggregator_id=FIRST_AGGREGATOR_ID + 1 + index,
                name=f"{strategy}-{index + 1}",
                strategy=strategy,
                budget_mc=budget_mc,
                energy_requirement_wh=requirement_wh,
                max_price_mc=max_price_mc,
            )
        )
    return configs
