"""Aggregators pace their buying across a trading period: the market trades steadily instead of
selling the whole period's requirement in its first seconds."""

from hub.auctions.rules import Offer
from hub.auctions.simulation import AuctionOutcome, Scenario, simulate
from hub.buyers.aggregator import Aggregator, AggregatorConfig, default_aggregators
from hub.buyers.strategies import MarketView

PERIOD_MS = 60_000


def buyer(requirement_wh: int = 20_000) -> AggregatorConfig:
    return AggregatorConfig(
        100_001,
        "steady",
        "fixed",
        budget_mc=requirement_wh * 30,
        energy_requirement_wh=requirement_wh,
        max_price_mc=30_000,
    )


def offers_every(interval_ms: int, start_ms: int = 0, end_ms: int = PERIOD_MS) -> list[Offer]:
    """1 kWh lots from several batteries, one every `interval_ms` in [start, end)."""
    return [
        Offer(
            device_id=1 + n % 5, auction_id=n + 1, lot_wh=1_000, reserve_mc=20_000, opened_ms=opened
        )
        for n, opened in enumerate(range(start_ms, end_ms, interval_ms))
    ]


def bought_by(outcomes: list[AuctionOutcome], until_ms: int, bidder: int = 100_001) -> int:
    return sum(o.energy_wh for o in outcomes if o.winner_id == bidder and o.opened_ms < until_ms)


def test_a_quarter_into_the_period_it_has_bought_about_a_quarter() -> None:
    config = buyer(20_000)
    scenario = Scenario(seed=1, offers=offers_every(500), trading_period_ms=PERIOD_MS)
    outcomes = simulate(scenario, [config]).outcomes
    quarter = bought_by(outcomes, PERIOD_MS // 4 + 1)
    # at most the quarter plus the one pacing step (about a lot) bought ahead
    assert quarter <= 20_000 // 4 + config.pace_step_wh
    assert quarter >= 20_000 // 4 - 1_000  # and it did keep up (lots were there)
    # by the end, the whole requirement
    assert bought_by(outcomes, PERIOD_MS) >= 20_000 - config.min_purchase_wh


def test_it_catches_up_when_supply_returns() -> None:
    # no lots at all in the first half of the period
    scenario = Scenario(
        seed=1,
        offers=offers_every(500, start_ms=PERIOD_MS // 2),
        trading_period_ms=PERIOD_MS,
    )
    # the period starts at the first offer the replay sees: give it one at 0 that nobody buys
    scenario.offers = [
        Offer(device_id=9, auction_id=10_000, lot_wh=1_000, reserve_mc=99_000, opened_ms=0),
        *(scenario.offers or []),
    ]
    config = buyer(20_000)
    outcomes = simulate(scenario, [config]).outcomes
    first_lots = [o for o in outcomes if o.opened_ms == PERIOD_MS // 2]
    assert first_lots[0].energy_wh == 1_000  # behind by half a period: buys whole lots
    assert bought_by(outcomes, 3 * PERIOD_MS // 4 + 1) >= 3 * 20_000 // 4 - 1_000
    assert bought_by(outcomes, PERIOD_MS) >= 20_000 - config.min_purchase_wh


def test_three_default_aggregators_trade_in_every_ten_seconds_of_the_period() -> None:
    # the default demo's shape: 10 batteries, one auction each every 1.5 s
    offers = [
        Offer(
            device_id=device,
            auction_id=slot * 10 + device,
            lot_wh=1_000,
            reserve_mc=20_000,
            opened_ms=slot * 1_500 + device * 37,
        )
        for slot in range(40)
        for device in range(1, 11)
    ]
    configs = default_aggregators(3, seed=1)
    result = simulate(Scenario(seed=1, offers=offers, trading_period_ms=PERIOD_MS), configs)
    per_bucket = [0] * 6
    for outcome in result.sold:
        per_bucket[outcome.opened_ms // 10_000] += 1
    assert min(per_bucket) > 0, per_bucket
    # steady: no ten seconds sells more than twice the average
    assert max(per_bucket) <= 2 * sum(per_bucket) / len(per_bucket), per_bucket


def test_paced_budget_and_demand_in_a_single_decision() -> None:
    agg = Aggregator(buyer(20_000))
    view = MarketView(
        reserve_mc=20_000, standing_price_mc=None, standing_is_mine=False, round=1, lot_wh=50_000
    )
    agg.pace(PERIOD_MS // 4, PERIOD_MS)
    price, energy = agg.decide(view) or (0, 0)
    assert 0 < energy <= 20_000 // 4 + agg.config.pace_step_wh
    assert agg.state.available_mc() <= agg.config.budget_mc * 6_000 // 20_000
    agg.on_held(1, price, energy)
    agg.on_won(1, price, energy)
    assert agg.decide(view) is None  # nothing more is due a quarter into the period
    agg.pace(PERIOD_MS // 2, PERIOD_MS)
    later = agg.decide(view)
    assert later is not None and later[1] >= 20_000 // 4 - agg.config.pace_step_wh
    agg.pace(0, 0)  # no trading periods: everything is due at once
    unpaced = agg.decide(view)
    assert unpaced is not None and unpaced[1] == 20_000 - energy
