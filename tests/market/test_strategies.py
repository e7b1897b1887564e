"""Bidding strategies: caps, fixed margin, adaptive aggressiveness, market awareness."""

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.auctions.rules import Mechanism
from hub.buyers.aggregator import Aggregator, AggregatorConfig, AggregatorState, cost_mc
from hub.buyers.strategies import (
    AdaptiveStrategy,
    FixedMarginStrategy,
    MarketAwareStrategy,
    MarketView,
    UnknownStrategyError,
    make_strategy,
)


def config(strategy: str = "fixed", **over: int) -> AggregatorConfig:
    values = {
        "budget_mc": 5_000_000,
        "energy_requirement_wh": 100_000,
        "max_price_mc": 30_000,
    }
    values.update(over)
    return AggregatorConfig(
        aggregator_id=100_001,
        name="a",
        strategy=strategy,
        budget_mc=values["budget_mc"],
        energy_requirement_wh=values["energy_requirement_wh"],
        max_price_mc=values["max_price_mc"],
    )


def view(**over: object) -> MarketView:
    base: dict[str, object] = {
        "reserve_mc": 20_000,
        "standing_price_mc": None,
        "standing_is_mine": False,
        "round": 1,
        "lot_wh": 5_000,
        "recent_clearing_mc": [],
        "scarcity": 1.0,
        "mechanism": Mechanism.ASCENDING,
        "min_increment_mc": 200,
    }
    base.update(over)
    return MarketView(**base)  # type: ignore[arg-type]


def test_fixed_margin_opens_at_margin_raises_by_increment_and_stops_at_value() -> None:
    strategy = FixedMarginStrategy(margin_bp=500)
    state = AggregatorState(config())
    assert strategy.price(view(), state) == 21_000
    assert strategy.price(view(standing_price_mc=25_000, min_increment_mc=250), state) == 25_250
    assert strategy.price(view(standing_price_mc=29_800, min_increment_mc=298), state) is None
    assert strategy.price(view(standing_price_mc=25_000, standing_is_mine=True), state) is None
    assert strategy.price(view(mechanism=Mechanism.SECOND_PRICE), state) == 30_000
    # reserve above its value: it does not bid at all
    assert strategy.price(view(reserve_mc=31_000), state) is None


def test_adaptive_gets_more_aggressive_after_losses_and_calmer_after_wins() -> None:
    strategy = AdaptiveStrategy()
    losing = AggregatorState(config("adaptive"))
    winning = AggregatorState(config("adaptive"))
    neutral = AggregatorState(config("adaptive"))
    for _ in range(6):
        losing.record_loss()
        winning.record_win(21_000, 100)
    assert strategy.aggressiveness(losing) > strategy.aggressiveness(neutral)
    assert strategy.aggressiveness(neutral) > strategy.aggressiveness(winning)
    # the effect on prices: higher opening bids, bigger raises, a higher limit
    assert strategy.price(view(), losing) > strategy.price(view(), winning)  # type: ignore[operator]
    sealed = view(mechanism=Mechanism.SECOND_PRICE)
    assert strategy.price(sealed, losing) > strategy.price(sealed, winning)  # type: ignore[operator]
    high = view(standing_price_mc=26_000, min_increment_mc=260)
    assert strategy.price(high, losing) is not None
    assert strategy.price(high, winning) is None  # a satisfied bidder drops out earlier
    # one more loss moves aggressiveness up again
    before = strategy.aggressiveness(neutral)
    neutral.record_loss()
    assert strategy.aggressiveness(neutral) > before


def test_market_aware_waits_when_supply_is_ample() -> None:
    strategy = MarketAwareStrategy(patience_rounds=1)
    state = AggregatorState(config("market"))
    ample = view(scarcity=0.5, recent_clearing_mc=[22_000, 22_000, 22_000])
    assert strategy.price(ample, state) is None  # round 1: waits
    history = [22_000] * 3
    later = strategy.price(view(scarcity=0.5, round=2, recent_clearing_mc=history), state)
    assert later == 21_000  # then opens near the reserve (reserve + 5 %)
    challenged = view(scarcity=0.5, round=3, recent_clearing_mc=history, standing_price_mc=21_800)
    assert strategy.price(challenged, state) == 22_000  # raises up to the market price...
    beyond = view(scarcity=0.5, round=4, recent_clearing_mc=history, standing_price_mc=22_000)
    assert strategy.price(beyond, state) is None  # ...and no further, though its value is 30_000


def test_market_aware_bids_early_and_higher_when_scarce() -> None:
    strategy = MarketAwareStrategy()
    state = AggregatorState(config("market"))
    history = [22_000, 22_000, 22_000]
    scarce = strategy.price(view(scarcity=2.5, recent_clearing_mc=history), state)
    balanced = strategy.price(view(scarcity=1.1, round=2, recent_clearing_mc=history), state)
    assert scarce is not None and balanced is not None
    assert scarce > balanced > 20_000
    sealed_scarce = strategy.price(
        view(scarcity=2.5, recent_clearing_mc=history, mechanism=Mechanism.SECOND_PRICE), state
    )
    sealed_ample = strategy.price(
        view(scarcity=0.5, recent_clearing_mc=history, mechanism=Mechanism.SECOND_PRICE), state
    )
    assert sealed_scarce is not None and sealed_ample is not None
    assert sealed_scarce > sealed_ample


def test_market_aware_follows_the_clearing_price_trend() -> None:
    strategy = MarketAwareStrategy()
    rising = view(round=2, recent_clearing_mc=[21_000, 22_000, 23_000, 24_000])
    falling = view(round=2, recent_clearing_mc=[24_000, 23_000, 22_000, 21_000])
    assert strategy.anchor_mc(rising) > strategy.anchor_mc(falling)
    assert strategy.anchor_mc(rising) == 24_000  # median 22_500 carried forward by the trend
    assert strategy.anchor_mc(view()) == 21_000  # no history: reserve + default margin


def test_market_aware_buys_less_while_prices_fall_unless_scarce() -> None:
    agg = Aggregator(config("market"))
    falling = [26_000, 25_000, 24_000, 23_000]
    rising = list(reversed(falling))
    _, energy_falling = agg.decide(view(round=2, recent_clearing_mc=falling))  # type: ignore[misc]
    _, energy_rising = agg.decide(view(round=2, recent_clearing_mc=rising))  # type: ignore[misc]
    _, energy_scarce = agg.decide(  # type: ignore[misc]
        view(round=2, scarcity=2.0, recent_clearing_mc=falling)
    )
    assert energy_rising == energy_scarce == 5_000  # the whole lot
    assert energy_falling == 2_500


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["fixed", "adaptive", "market"]),
    mechanism=st.sampled_from(list(Mechanism)),
    reserve=st.integers(0, 60_000),
    standing=st.none() | st.integers(0, 60_000),
    rnd=st.integers(1, 50),
    lot=st.integers(1, 20_000),
    scarcity=st.floats(0, 10),
    history=st.lists(st.integers(0, 80_000), max_size=12),
    budget=st.integers(1, 3_000_000),
    max_price=st.integers(1, 50_000),
    outcomes=st.lists(st.booleans(), max_size=15),
)
def test_no_strategy_bids_above_max_price_or_budget(
    name: str,
    mechanism: Mechanism,
    reserve: int,
    standing: int | None,
    rnd: int,
    lot: int,
    scarcity: float,
    history: list[int],
    budget: int,
    max_price: int,
    outcomes: list[bool],
) -> None:
    agg = Aggregator(config(name, budget_mc=budget, max_price_mc=max_price))
    for won in outcomes:
        if won:
            agg.state.record_win(1, 1)
        else:
            agg.state.record_loss()
    market = view(
        reserve_mc=reserve,
        standing_price_mc=standing,
        round=rnd,
        lot_wh=lot,
        scarcity=scarcity,
        recent_clearing_mc=history,
        mechanism=mechanism,
        min_increment_mc=max(100, (standing or reserve) // 100),
    )
    price = agg.strategy.price(market, agg.state)
    assert price is None or price <= max_price
    decision = agg.decide(market)
    if decision is not None:
        bid_price, energy = decision
        assert bid_price <= max_price
        assert bid_price >= market.floor_mc()
        assert 0 < energy <= lot
        assert cost_mc(bid_price, energy) <= agg.state.available_mc()
    # deterministic: asking again gives the same answer
    assert agg.decide(market) == decision


def test_make_strategy_names_and_errors() -> None:
    assert make_strategy("fixed", margin_bp=100).name == "fixed"
    assert make_strategy("adaptive").name == "adaptive"
    assert make_strategy("market").name == "market"
    try:
        make_strategy("random")
    except UnknownStrategyError as exc:
        assert "choose one of" in str(exc)
    else:
        raise AssertionError("unknown strategy accepted")
    try:
        make_strategy("fixed", nonsense=1)
    except UnknownStrategyError as exc:
        assert "bad parameters" in str(exc)
    else:
        raise AssertionError("bad parameter accepted")
