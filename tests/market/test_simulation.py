"""Scenario simulation: competition clears above reserve and beats a single buyer."""

import pytest

from hub.auctions.rules import Mechanism, Offer
from hub.auctions.simulation import (
    Scenario,
    best_funded,
    counterfactual,
    default_scenario,
    simulate,
)
from hub.buyers.aggregator import AggregatorConfig, default_aggregators


@pytest.mark.parametrize("mechanism", list(Mechanism))
def test_three_aggregators_clear_above_reserve_and_beat_the_single_buyer(
    mechanism: Mechanism,
) -> None:
    seed = 42
    scenario = default_scenario(seed, mechanism=mechanism)
    aggregators = default_aggregators(3, seed)
    competitive = simulate(scenario, aggregators)
    single = counterfactual(scenario, aggregators)

    assert competitive.sold, "nothing cleared"
    assert all(o.clearing_price_mc >= o.reserve_mc for o in competitive.sold)  # type: ignore[operator]
    assert competitive.mean_premium_pct > 5.0
    # battery owners earn more per kWh and more in total with competition
    assert competitive.revenue_per_kwh_mc > single.revenue_per_kwh_mc
    assert competitive.mean_premium_pct > single.mean_premium_pct
    assert competitive.revenue_mc > single.revenue_mc
    assert single.aggregator_ids == [best_funded(aggregators).aggregator_id]


def test_simulation_is_deterministic_for_a_seed() -> None:
    scenario = default_scenario(7)
    first = simulate(scenario, default_aggregators(3, 7))
    again = simulate(default_scenario(7), default_aggregators(3, 7))
    assert first.outcomes == again.outcomes
    other = simulate(default_scenario(8), default_aggregators(3, 8))
    assert other.outcomes != first.outcomes


@pytest.mark.parametrize("seed", range(6))
def test_aggregators_never_overspend_or_overbuy(seed: int) -> None:
    aggregators = default_aggregators(4, seed)
    result = simulate(default_scenario(seed, batteries=12, auctions_per_battery=4), aggregators)
    for summary in result.aggregators:
        assert summary["spent_mc"] <= summary["budget_mc"]
        assert summary["energy_bought_wh"] <= summary["energy_requirement_wh"]
    by_winner: dict[int, int] = {}
    for outcome in result.sold:
        assert outcome.energy_wh <= outcome.lot_wh
        assert outcome.winner_id is not None
        by_winner[outcome.winner_id] = by_winner.get(outcome.winner_id, 0) + outcome.revenue_mc
    for summary in result.aggregators:
        assert by_winner.get(summary["aggregator_id"], 0) == summary["spent_mc"]


def test_explicit_offers_are_replayed_and_the_best_funded_is_chosen() -> None:
    offers = [
        Offer(device_id=3, auction_id=101, lot_wh=2_000, reserve_mc=18_000, opened_ms=5_000),
        Offer(device_id=4, auction_id=100, lot_wh=3_000, reserve_mc=19_000, opened_ms=0),
    ]
    scenario = Scenario(seed=1, offers=offers)
    rich = AggregatorConfig(100_002, "rich", "fixed", 900_000, 10_000, 30_000)
    poor = AggregatorConfig(100_001, "poor", "fixed", 500_000, 10_000, 30_000)
    assert best_funded([poor, rich]) is rich
    result = simulate(scenario, [poor, rich])
    assert [o.auction_id for o in result.outcomes] == [100, 101]  # time order
    assert [o.reserve_mc for o in result.outcomes] == [19_000, 18_000]
    single = counterfactual(scenario, [poor, rich])
    assert {o.winner_id for o in single.sold} == {100_002}
    # alone, the fixed-margin buyer pays reserve + 5 %
    assert [o.clearing_price_mc for o in single.sold] == [19_950, 18_900]


def test_no_buyers_means_no_sales() -> None:
    scenario = default_scenario(3, batteries=2, auctions_per_battery=1)
    expensive = AggregatorConfig(100_001, "cheap", "fixed", 1_000_000, 50_000, max_price_mc=1_000)
    result = simulate(scenario, [expensive])
    assert result.sold == [] and result.cleared_share == 0.0 and result.revenue_mc == 0


def test_concurrent_auctions_share_one_budget_through_holds() -> None:
    # two batteries sell at the same moment; the buyer's budget pays for one lot only
    offers = [
        Offer(device_id=1, auction_id=1, lot_wh=4_000, reserve_mc=20_000, opened_ms=0),
        Offer(device_id=2, auction_id=2, lot_wh=4_000, reserve_mc=20_000, opened_ms=0),
    ]
    buyer = AggregatorConfig(
        100_001,
        "tight",
        "fixed",
        budget_mc=90_000,
        energy_requirement_wh=8_000,
        max_price_mc=22_000,
    )
    result = simulate(Scenario(seed=1, offers=offers), [buyer])
    (summary,) = result.aggregators
    assert summary["spent_mc"] <= 90_000
    sold = sorted(o.energy_wh for o in result.sold)
    # 4 kWh at 21 c = 84_000 mc; what is left (6_000 mc) buys only 285 Wh in the other lot
    assert sold == [285, 4_000]


def test_private_floor_above_the_reserve_is_enforced_by_the_simulated_battery() -> None:
    offers = [Offer(device_id=1, auction_id=1, lot_wh=1_000, reserve_mc=20_000, opened_ms=0)]
    buyers = default_aggregators(3, 4)
    floor = 27_000
    result = simulate(Scenario(seed=4, offers=offers, private_reserve_mc={1: floor}), buyers)
    (outcome,) = result.outcomes
    assert outcome.clearing_price_mc is not None and outcome.clearing_price_mc >= floor
    unreachable = {1: max(c.max_price_mc for c in buyers) + 1}
    result = simulate(Scenario(seed=4, offers=offers, private_reserve_mc=unreachable), buyers)
    assert result.sold == []


def test_trading_periods_renew_demand_in_the_replay() -> None:
    # one 1 kWh lot a minute for five minutes; the buyer wants 2 kWh per period
    offers = [
        Offer(device_id=1, auction_id=n, lot_wh=1_000, reserve_mc=20_000, opened_ms=n * 60_000)
        for n in range(1, 6)
    ]
    buyer = AggregatorConfig(100_001, "b", "fixed", 10_000_000, 2_000, 30_000)
    once = simulate(Scenario(seed=1, offers=offers), [buyer])
    assert len(once.sold) == 2  # demand met after two lots, then nobody buys
    renewed = simulate(Scenario(seed=1, offers=offers, trading_period_ms=120_000), [buyer])
    assert len(renewed.sold) == 5  # each two-minute period buys again
    # Paced demand: at a period's start one pacing step (1 kWh) is due, half way through the
    # rest of its 2 kWh (periods start at 60 s, 180 s, 300 s).
    assert renewed.aggregators[0]["total_bought_wh"] == 5_000
