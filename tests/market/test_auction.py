"""Auction mechanism rules: ascending rounds, second-price clearing, ties, floors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.auctions.rules import (
    AscendingAuction,
    AuctionClosedError,
    BidStatus,
    InvalidBidError,
    Mechanism,
    Offer,
    SecondPriceAuction,
    new_auction,
)
from shared_etp import schema

OFFER = Offer(device_id=7, auction_id=42, lot_wh=5_000, reserve_mc=20_000, opened_ms=1_000)


def ascending(**rules: int) -> AscendingAuction:
    auction = new_auction(Mechanism.ASCENDING, OFFER, **rules)
    assert isinstance(auction, AscendingAuction)
    return auction


def accept_best(auction: AscendingAuction) -> None:
    best = auction.candidates()[0]
    auction.battery_accepted(best)


def test_ascending_stops_when_nobody_raises_and_best_bid_wins() -> None:
    auction = ascending()
    auction.submit(1001, 21_000, 5_000)
    auction.submit(1002, 22_000, 4_000)
    assert [bid.bidder_id for bid in auction.candidates()] == [1002, 1001]
    accept_best(auction)
    assert auction.candidates() == []  # 1001's lower bid no longer beats the standing bid
    assert auction.end_round() is False
    # round 2: 1001 raises over the standing 22_000
    auction.submit(1001, 22_000 + auction.min_increment_mc, 5_000)
    accept_best(auction)
    assert auction.end_round() is False
    # round 3: nobody raises -> bidding stops, the standing bid wins
    assert auction.end_round() is True
    assert auction.closed
    assert auction.winner is not None
    assert (auction.winner.bidder_id, auction.winner.price_mc) == (1001, 22_220)
    assert auction.clearing_price_mc == 22_220
    assert auction.winner.status is BidStatus.WON
    with pytest.raises(AuctionClosedError):
        auction.submit(1002, 30_000, 1_000)


def test_minimum_raise_and_floor_are_enforced() -> None:
    auction = ascending()
    with pytest.raises(InvalidBidError, match="below the minimum"):
        auction.submit(1001, 19_999, 1_000)
    with pytest.raises(InvalidBidError, match="energy_wh"):
        auction.submit(1001, 20_000, 5_001)
    record = auction.submit(1001, 20_000, 1_000)
    with pytest.raises(InvalidBidError, match="already bid"):
        auction.submit(1001, 21_000, 1_000)
    auction.battery_accepted(record)
    auction.end_round()
    # 1 % of the standing 20_000 mc/kWh = 200 mc minimum raise
    assert auction.min_increment_mc == 200
    with pytest.raises(InvalidBidError):
        auction.submit(1002, 20_199, 1_000)
    with pytest.raises(InvalidBidError, match="standing"):
        auction.submit(1001, 25_000, 1_000)
    auction.submit(1002, 20_200, 1_000)


def test_minimum_increment_has_a_floor() -> None:
    cheap = AscendingAuction(Offer(1, 1, 1_000, 500))
    assert cheap.min_increment_mc == 100  # 1 % of 500 would be 5 mc


def test_below_reserve_rejection_teaches_everyone_the_floor() -> None:
    auction = ascending()
    record = auction.submit(1001, 20_000, 1_000)
    auction.battery_rejected(record, schema.REASON_BELOW_MARKET)
    assert record.status is BidStatus.REJECTED
    assert auction.known_floor_mc > 20_000
    assert auction.standing is None
    assert auction.end_round() is False  # someone tried: bidding goes on
    with pytest.raises(InvalidBidError):
        auction.submit(1002, 20_100, 1_000)
    auction.submit(1002, auction.known_floor_mc, 1_000)


def test_low_reputation_excludes_the_bidder() -> None:
    auction = ascending()
    record = auction.submit(1003, 25_000, 1_000)
    auction.battery_rejected(record, schema.REASON_LOW_REPUTATION)
    auction.end_round()
    with pytest.raises(InvalidBidError, match="excluded"):
        auction.submit(1003, 26_000, 1_000)
    assert auction.known_floor_mc == OFFER.reserve_mc  # not a price signal


def test_opening_rounds_wait_for_a_first_bid_then_close_unsold() -> None:
    auction = ascending(opening_rounds=3)
    assert auction.end_round() is False
    assert auction.end_round() is False
    assert auction.end_round() is True
    assert auction.winner is None and auction.clearing_price_mc is None


def test_max_rounds_stops_a_bidding_war() -> None:
    auction = ascending(max_rounds=4)
    bidders = [1001, 1002]
    stopped = False
    for turn in range(10):
        bidder = bidders[turn % 2]
        auction.submit(bidder, auction.min_acceptable_mc(), 1_000)
        accept_best(auction)
        stopped = auction.end_round()
        if stopped:
            break
    assert stopped and auction.round == 4
    assert auction.winner is not None and auction.winner.bidder_id == 1002


def test_ascending_tie_goes_to_the_earlier_submission() -> None:
    auction = ascending()
    auction.submit(1005, 21_000, 1_000)
    auction.submit(1002, 21_000, 1_000)
    assert [bid.bidder_id for bid in auction.candidates()] == [1005, 1002]
    accept_best(auction)
    # the later equal bid cannot displace the standing one
    auction.battery_accepted(auction.bids[1])
    assert auction.standing is not None and auction.standing.bidder_id == 1005


def sealed() -> SecondPriceAuction:
    auction = new_auction("second_price", OFFER)
    assert isinstance(auction, SecondPriceAuction)
    return auction


def test_second_price_winner_pays_the_second_highest_bid() -> None:
    auction = sealed()
    auction.submit(1001, 30_000, 5_000)
    auction.submit(1002, 26_000, 5_000)
    auction.submit(1003, 24_000, 5_000)
    winner, price = auction.close()
    assert winner is not None and winner.bidder_id == 1001
    assert price == 26_000
    (to_battery,) = auction.candidates()
    assert (to_battery.bidder_id, to_battery.price_mc, to_battery.energy_wh) == (
        1001,
        26_000,
        5_000,
    )
    auction.battery_accepted(to_battery)
    assert auction.closed and auction.clearing_price_mc == 26_000
    assert auction.candidates() == []


def test_second_price_single_bidder_pays_the_reserve() -> None:
    auction = sealed()
    auction.submit(1001, 31_000, 2_000)
    winner, price = auction.close()
    assert winner is not None and price == OFFER.reserve_mc


def test_second_price_rules() -> None:
    auction = sealed()
    with pytest.raises(InvalidBidError, match="below the reserve"):
        auction.submit(1001, 19_000, 1_000)
    auction.submit(1001, 25_000, 1_000)
    with pytest.raises(InvalidBidError, match="already submitted"):
        auction.submit(1001, 26_000, 1_000)
    auction.close()
    with pytest.raises(AuctionClosedError):
        auction.submit(1002, 27_000, 1_000)


def test_second_price_tie_goes_to_the_earlier_submission_at_the_tied_price() -> None:
    auction = sealed()
    auction.submit(1009, 28_000, 1_000)
    auction.submit(1001, 28_000, 1_000)
    winner, price = auction.close()
    assert winner is not None and winner.bidder_id == 1009
    assert price == 28_000


def test_second_price_with_no_bids_closes_unsold() -> None:
    auction = sealed()
    assert auction.close() == (None, 0)
    assert auction.closed and auction.winner is None and auction.candidates() == []


def test_second_price_reprices_against_a_private_floor() -> None:
    auction = sealed()
    auction.submit(1001, 30_000, 1_000)
    auction.submit(1002, 25_000, 1_000)
    auction.close()
    (first,) = auction.candidates()
    assert first.price_mc == 25_000
    auction.battery_rejected(first, schema.REASON_BELOW_MARKET)
    (second,) = auction.candidates()
    # the learned floor (25_000 + 1 %) is now the price; 1002's bid fell below it
    assert (second.bidder_id, second.price_mc) == (1001, 25_250)
    auction.battery_rejected(second, schema.REASON_BELOW_MARKET)
    auction.battery_rejected(auction.candidates()[0], schema.REASON_BELOW_MARKET)
    while auction.candidates():
        auction.battery_rejected(auction.candidates()[0], schema.REASON_BELOW_MARKET)
    assert auction.closed and auction.winner is None  # floor passed the best bid: no sale


def test_offer_and_rules_validation() -> None:
    with pytest.raises(ValueError, match="lot_wh"):
        Offer(1, 1, 0, 10_000)
    with pytest.raises(ValueError, match="second-price auctions take no rules"):
        new_auction("second_price", OFFER, max_rounds=3)
    with pytest.raises(ValueError):
        new_auction("dutch", OFFER)


@pytest.mark.parametrize(
    "reason", [schema.REASON_NONE, schema.REASON_INSUFFICIENT_ENERGY, schema.REASON_LOW_REPUTATION]
)
def test_second_price_non_price_rejection_passes_to_the_next_bidder(reason: int) -> None:
    auction = sealed()
    auction.submit(1001, 30_000, 1_000)
    auction.submit(1002, 27_000, 1_000)
    auction.submit(1003, 22_000, 1_000)
    auction.close()
    (first,) = auction.candidates()
    auction.battery_rejected(first, reason)  # e.g. no answer in time (reason 0)
    (second,) = auction.candidates()
    assert (second.bidder_id, second.price_mc) == (1002, 22_000)
    auction.battery_rejected(second, reason)
    (third,) = auction.candidates()
    assert (third.bidder_id, third.price_mc) == (1003, 20_000)  # alone now: pays the reserve
    auction.battery_rejected(third, reason)
    assert auction.candidates() == [] and auction.closed and auction.winner is None


def test_insufficient_energy_shrinks_the_lot_for_everyone() -> None:
    from hub.buyers.aggregator import Aggregator, AggregatorConfig
    from hub.buyers.strategies import market_view

    auction = ascending()
    big = auction.submit(1001, 21_000, 5_000)
    other = auction.submit(1002, 20_500, 4_000)
    auction.battery_rejected(big, schema.REASON_INSUFFICIENT_ENERGY)
    assert auction.available_wh == 4_999
    assert auction.candidates() == [other]
    auction.battery_accepted(other)
    auction.end_round()
    with pytest.raises(InvalidBidError, match=r"1\.\.4999"):
        auction.submit(1001, 22_000, 5_000)
    # aggregators see the smaller lot and size their bids to it
    agg = Aggregator(AggregatorConfig(100_001, "a", "fixed", 10_000_000, 50_000, 30_000))
    decision = agg.decide(market_view(auction, 1001, [], 1.0))
    assert decision is not None and decision[1] == 4_999


@settings(max_examples=200, deadline=None)
@given(prices=st.lists(st.integers(20_000, 40_000), min_size=1, max_size=8))
def test_second_price_clears_between_reserve_and_the_winning_bid(prices: list[int]) -> None:
    auction = sealed()
    for index, price in enumerate(prices):
        auction.submit(1001 + index, price, 1_000)
    winner, clearing = auction.close()
    assert winner is not None
    ranked = sorted(prices, reverse=True)
    assert winner.price_mc == ranked[0]
    assert winner.bidder_id == 1001 + prices.index(ranked[0])  # earliest of the top bids
    expected = max(ranked[1] if len(ranked) > 1 else 0, OFFER.reserve_mc)
    assert clearing == expected and OFFER.reserve_mc <= clearing <= winner.price_mc


@settings(max_examples=200, deadline=None)
@given(
    ceilings=st.lists(st.integers(15_000, 40_000), min_size=1, max_size=5),
    max_rounds=st.integers(1, 30),
)
def test_ascending_ends_within_max_rounds_at_a_price_nobody_topped(
    ceilings: list[int], max_rounds: int
) -> None:
    # each bidder raises by the minimum while it can; the battery accepts everything it gets
    auction = ascending(max_rounds=max_rounds)
    standing_prices = []
    while not auction.closed:
        for index, ceiling in enumerate(ceilings):
            bidder = 1001 + index
            if auction.standing and auction.standing.bidder_id == bidder:
                continue
            price = auction.min_acceptable_mc()
            if price <= ceiling:
                auction.submit(bidder, price, 1_000)
        for record in auction.candidates()[:1]:
            auction.battery_accepted(record)
        if auction.standing:
            standing_prices.append(auction.standing.price_mc)
        auction.end_round()
    assert auction.round <= max_rounds
    assert standing_prices == sorted(standing_prices)
    if auction.winner is None:
        assert max(ceilings) < OFFER.reserve_mc
    else:
        assert auction.winner.price_mc >= OFFER.reserve_mc
        assert auction.winner.price_mc <= ceilings[auction.winner.bidder_id - 1001]
        if auction.round < max_rounds:  # stopped because nobody else could top it
            others = [c for i, c in enumerate(ceilings) if 1001 + i != auction.winner.bidder_id]
            assert all(c < auction.min_acceptable_mc() for c in others)
