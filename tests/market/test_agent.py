"""Aggregator bookkeeping: costs, budget, energy requirement, holds, success rate."""

import pytest

from hub.buyers.aggregator import (
    Aggregator,
    AggregatorConfig,
    AggregatorConfigError,
    AggregatorState,
    cost_mc,
    default_aggregators,
)
from hub.buyers.strategies import MarketView


def make(budget_mc: int = 1_000_000, requirement_wh: int = 20_000) -> AggregatorState:
    return AggregatorState(
        AggregatorConfig(100_001, "a", "fixed", budget_mc, requirement_wh, max_price_mc=30_000)
    )


def test_cost_is_price_times_energy_rounded_up() -> None:
    assert cost_mc(20_000, 5_000) == 100_000  # 20 c/kWh * 5 kWh = 100 c
    assert cost_mc(1, 1) == 1  # never rounds a purchase down to free
    assert cost_mc(0, 5_000) == 0


def test_wins_losses_and_success_rate() -> None:
    state = make()
    assert state.success_rate == 0.0
    state.record_win(25_000, 4_000)
    state.record_loss()
    state.record_loss()
    state.record_win(20_000, 1_000)
    assert (state.wins, state.losses) == (2, 2)
    assert state.success_rate == 0.5
    assert state.spent_mc == 100_000 + 20_000
    assert state.energy_bought_wh == 5_000
    assert state.recent_outcomes(3) == [False, False, True]
    assert state.remaining_requirement_wh == 15_000
    assert not state.satisfied


def test_wants_energy_is_capped_by_requirement_lot_and_budget() -> None:
    state = make(budget_mc=100_000, requirement_wh=6_000)
    assert state.wants_energy_wh(10_000, price_mc=10_000) == 6_000  # requirement
    assert state.wants_energy_wh(3_000, price_mc=10_000) == 3_000  # lot
    assert state.wants_energy_wh(10_000, price_mc=25_000) == 4_000  # budget: 100_000 mc
    assert state.can_afford(25_000, 4_000)
    assert not state.can_afford(25_000, 4_001)


def test_holds_in_open_auctions_reserve_budget_and_energy() -> None:
    state = make(budget_mc=200_000, requirement_wh=8_000)
    state.hold(1, 20_000, 5_000)  # 100_000 mc held in auction 1
    assert state.available_mc() == 100_000
    assert state.available_mc(exclude_auction=1) == 200_000
    assert state.wants_energy_wh(10_000, price_mc=20_000, auction_id=2) == 3_000
    assert state.wants_energy_wh(10_000, price_mc=20_000, auction_id=1) == 8_000
    state.record_win(20_000, 5_000, auction_id=1)  # the hold becomes a purchase
    assert state.holds == {}
    assert state.available_mc() == 100_000
    state.hold(2, 20_000, 3_000)
    state.record_loss(auction_id=2)
    assert state.holds == {} and state.losses == 1


def test_satisfied_when_requirement_met_or_budget_gone() -> None:
    state = make(requirement_wh=1_000)
    state.record_win(20_000, 1_000)
    assert state.satisfied
    poor = make(budget_mc=10)
    poor.record_win(10_000, 1)
    assert poor.satisfied


def test_satisfied_aggregator_does_not_bid() -> None:
    agg = Aggregator(AggregatorConfig(100_001, "a", "fixed", 1_000_000, 1_000, 30_000))
    view = MarketView(20_000, None, False, 1, 5_000)
    assert agg.decide(view) == (21_000, 1_000)
    agg.on_won(9, 21_000, 1_000)
    assert agg.decide(view) is None


def test_a_new_period_renews_budget_and_requirement_and_keeps_totals() -> None:
    agg = Aggregator(AggregatorConfig(100_001, "a", "fixed", 1_000_000, 1_000, 30_000))
    view = MarketView(20_000, None, False, 1, 5_000)
    agg.on_won(9, 21_000, 1_000)
    assert agg.decide(view) is None  # requirement met for this period
    agg.state.start_period()
    assert agg.decide(view) == (21_000, 1_000)  # buying again in the new period
    snapshot = agg.state.snapshot()
    assert snapshot["total_bought_wh"] == 1_000 and snapshot["energy_bought_wh"] == 0
    assert snapshot["total_spent_mc"] == cost_mc(21_000, 1_000) and snapshot["periods"] == 1
    assert agg.state.wins == 1


def test_config_validation_messages() -> None:
    with pytest.raises(AggregatorConfigError, match=">= 100000"):
        AggregatorConfig(7, "x", "fixed", 1, 1, 1)
    with pytest.raises(AggregatorConfigError, match="strategy"):
        AggregatorConfig(100_001, "x", "random", 1, 1, 1)
    with pytest.raises(AggregatorConfigError, match="budget_mc"):
        AggregatorConfig(100_001, "x", "fixed", 0, 1, 1)


def test_default_aggregators_use_three_strategies_and_are_seeded() -> None:
    three = default_aggregators(3, seed=5)
    assert [c.strategy for c in three] == ["fixed", "adaptive", "market"]
    assert len({c.aggregator_id for c in three}) == 3
    assert all(c.aggregator_id >= 100_000 for c in three)
    assert default_aggregators(3, seed=5) == three
    assert default_aggregators(3, seed=6) != three
    five = default_aggregators(5, seed=5)
    assert [c.strategy for c in five] == ["fixed", "adaptive", "market", "fixed", "adaptive"]
    with pytest.raises(AggregatorConfigError):
        default_aggregators(0)
