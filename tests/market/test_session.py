"""The pure auction session, by tables of event traces: what it is told -> what it does.

No broker, no clock: each trace feeds events and compares the exact commands. The buyers are a
scripted stand-in (`ScriptedBuyers`: each round's bids are given by the test) so a trace pins
the session's protocol, not the strategies (tests/market/test_strategies.py covers those).
The first trace was recorded from a live hub trading with simulated batteries.
"""

from __future__ import annotations

from typing import Any

import pytest

from hub.auctions.messages import (
    AwaitConfirm,
    BidAnswered,
    BidOutcome,
    Cancelled,
    Close,
    ConfirmAnswered,
    NextRound,
    Outcome,
    QueryAnswered,
    RecordBid,
    RecordFailed,
    RecordOffer,
    RecordTrade,
    RoundStarted,
    SendBid,
    SendConfirm,
    SendQuery,
    SendTerminate,
    SessionRules,
    TimedOut,
    TradeRecorded,
    TradeTerms,
)
from hub.auctions.rules import Auction, AuctionError, BidRecord, Mechanism, Offer
from hub.auctions.session import AuctionSession, SessionError
from hub.buyers.bidding import Buyers
from shared_etp.schema import (
    REASON_AUCTION_CLOSED,
    REASON_BELOW_MARKET,
    REASON_BELOW_RESERVE,
    REASON_DEVICE_FAULT,
    REASON_HOLD_EXPIRED,
    REASON_NOT_HOLDER,
    REASON_SHUTDOWN,
)

A, B, C = 100001, 100002, 100003
RULES = SessionRules(
    mechanism=Mechanism.ASCENDING,
    max_lot_wh=1000,
    min_lot_wh=100,
    response_timeout_ms=1000,
    hold_timeout_ms=3000,
    auction_rules={"max_rounds": 12},
)
SEALED = SessionRules(
    mechanism=Mechanism.SECOND_PRICE,
    max_lot_wh=1000,
    min_lot_wh=100,
    response_timeout_ms=1000,
    hold_timeout_ms=3000,
)
OFFER = Offer(device_id=1, auction_id=1, lot_wh=1000, reserve_mc=19000)


class ScriptedBuyers(Buyers):
    """Test double of the aggregators: round n submits script[n-1] (bidder, price, energy)."""

    def __init__(self, script: list[list[tuple[int, int, int]]]) -> None:
        super().__init__([])
        self.script = script
        self.held_by: list[int] = []
        self.closed_with: list[int | None] = []
        self.released: list[int] = []

    def collect(self, auction: Auction) -> list[BidRecord]:
        bids = self.script[auction.round - 1] if auction.round <= len(self.script) else []
        records = []
        for bidder, price, energy in bids:
            try:
                records.append(auction.submit(bidder, price, energy))
            except AuctionError:
                continue
        return records

    def held(self, auction: Auction, record: BidRecord) -> None:
        self.held_by.append(record.bidder_id)

    def closed(self, auction: Auction) -> None:
        self.closed_with.append(auction.winner.bidder_id if auction.winner else None)

    def abandoned(self, auction: Auction) -> None:
        self.released.append(auction.auction_id)


def play(session: AuctionSession, trace: list[tuple[Any, list[Any]]]) -> None:
    """Feed each event (None: start) and check the session answers exactly these commands."""
    for step, (event, expected) in enumerate(trace):
        got = session.start() if event is None else session.handle(event)
        assert got == expected, f"step {step}: {event!r}"


def terms(bidder: int, price: int, energy: int = 1000, reserve: int = 19000) -> TradeTerms:
    return TradeTerms(bidder, price, energy, reserve)


def bid(bidder: int, price: int, rnd: int, energy: int = 1000) -> SendBid:
    return SendBid(bidder, price, energy, rnd)


def noted(bidder: int, price: int, rnd: int, outcome: BidOutcome, reason: int | None = None,
          energy: int = 1000) -> RecordBid:
    return RecordBid(bidder, price, energy, rnd, outcome, reason)


ACCEPT = BidAnswered(True)
ACC = BidOutcome.ACCEPTED
REJ = BidOutcome.REJECTED


def test_live_trace_seven_rounds_then_a_confirmed_trade() -> None:
    """Recorded from a live hub: two aggregators raise in turn for 7 rounds, then nobody does."""
    prices = [(C, 25935), (A, 26194), (C, 26716), (A, 26983), (C, 27521), (A, 27796), (C, 28350)]
    buyers = ScriptedBuyers([[(who, price, 1000)] for who, price in prices])
    session = AuctionSession(OFFER, RULES, buyers)
    trace: list[tuple[Any, list[Any]]] = [
        (None, [SendQuery()]),
        (QueryAnswered(5291, 19000, 0), [NextRound(pause=False)]),
    ]
    for rnd, (who, price) in enumerate(prices, start=1):
        trace.append((RoundStarted(), [bid(who, price, rnd)]))
        trace.append((ACCEPT, [noted(who, price, rnd, ACC), NextRound(pause=True)]))
    won = terms(C, 28350)
    trace += [
        (RoundStarted(), [RecordTrade(won)]),
        (TradeRecorded(), [SendConfirm(won, 1, 1000)]),
        (ConfirmAnswered(1, True, 0, 1), [
            noted(C, 28350, 7, BidOutcome.CONFIRMED), Close(Outcome.CLEARED, won)]),
    ]
    play(session, trace)
    assert session.outcome is Outcome.CLEARED
    assert buyers.held_by == [who for who, _ in prices] and buyers.closed_with == [C]


def test_rejections_raise_the_floor_and_the_next_candidate_is_tried() -> None:
    """Below-reserve teaches everyone the floor; the next-best bid of the round goes next."""
    buyers = ScriptedBuyers([[(A, 20000, 800), (B, 19500, 1000)], [(A, 21000, 800)]])
    session = AuctionSession(OFFER, RULES, buyers)
    won = terms(A, 21000, 800)
    play(session, [
        (None, [SendQuery()]),
        (QueryAnswered(1000, 19000, 0), [NextRound(pause=False)]),
        (RoundStarted(), [bid(A, 20000, 1, 800)]),
        (BidAnswered(False, REASON_BELOW_MARKET),
         # 20,000 refused: 19,500 is below the learned floor now, so round 1 ends
         [noted(A, 20000, 1, REJ, REASON_BELOW_MARKET, 800), NextRound(pause=True)]),
        (RoundStarted(), [bid(A, 21000, 2, 800)]),
        (ACCEPT, [noted(A, 21000, 2, ACC, energy=800), NextRound(pause=True)]),
        (RoundStarted(), [RecordTrade(won)]),
    ])


def test_a_battery_silent_to_a_bid_gets_no_further_bid_and_is_told_the_auction_is_over() -> None:
    """A board that died mid-auction must not be sent bid after bid (each waiting its timeout),
    and must learn the auction closed when it is back (the driver re-sends the Terminate until
    the battery answers it)."""
    buyers = ScriptedBuyers([[(A, 22000, 1000), (B, 21000, 1000)]])
    session = AuctionSession(OFFER, RULES, buyers)
    play(session, [
        (None, [SendQuery()]),
        (QueryAnswered(1000, 19000, 0), [NextRound(pause=False)]),
        (RoundStarted(), [bid(A, 22000, 1)]),
        (TimedOut(), [SendTerminate(REASON_AUCTION_CLOSED), Close(Outcome.TERMINATED)]),
    ])


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (TimedOut(), [SendTerminate(REASON_AUCTION_CLOSED), Close(Outcome.TERMINATED)]),
        (QueryAnswered(99, 19000, 0), [RecordOffer(99, 19000), Close(Outcome.NO_SALE)]),
        (QueryAnswered(5000, 19000, 2), [Close(Outcome.NO_SALE)]),  # a faulted battery
        (QueryAnswered(600, 21000, 0), [RecordOffer(600, 21000), NextRound(pause=False)]),
    ],
)
def test_what_the_query_answer_decides(answer: Any, expected: list[Any]) -> None:
    session = AuctionSession(OFFER, RULES, ScriptedBuyers([]))
    play(session, [(None, [SendQuery()]), (answer, expected)])


def test_nobody_bids_no_sale_after_the_opening_rounds_and_no_terminate_without_a_hold() -> None:
    buyers = ScriptedBuyers([])
    session = AuctionSession(OFFER, RULES, buyers)
    play(session, [
        (None, [SendQuery()]),
        (QueryAnswered(1000, 19000, 0), [NextRound(pause=False)]),
        (RoundStarted(), [NextRound(pause=True)]),
        (RoundStarted(), [NextRound(pause=True)]),
        (RoundStarted(), [Close(Outcome.NO_SALE)]),
    ])
    assert buyers.closed_with == [None]


@pytest.mark.parametrize(
    ("answers", "outcome", "copies"),
    [
        ([ConfirmAnswered(1, True)], Outcome.CLEARED, 1),
        ([ConfirmAnswered(1, False, REASON_HOLD_EXPIRED)], Outcome.VOID, 1),
        # not_holder to the only copy sent: the battery never held this bidder's bid
        ([ConfirmAnswered(1, False, REASON_NOT_HOLDER)], Outcome.VOID, 1),
        # not_holder to a RE-SENT copy: the battery answers a repeat of a committed trade with
        # BidAccept, so it forgot the auction (a reboot) and may have committed copy 1
        ([TimedOut(), ConfirmAnswered(2, False, REASON_NOT_HOLDER)], Outcome.UNVERIFIED, 2),
        ([TimedOut(), TimedOut(), TimedOut()], Outcome.UNVERIFIED, 3),
        # a late answer to copy 1 still counts while copy 2 is out
        ([TimedOut(), ConfirmAnswered(1, True, 0, 300)], Outcome.CLEARED, 2),
    ],
)
def test_the_batterys_answer_to_the_confirm_decides(
    answers: list[Any], outcome: Outcome, copies: int
) -> None:
    buyers = ScriptedBuyers([[(A, 22000, 1000)]])
    session = AuctionSession(OFFER, RULES, buyers)
    session.start()
    session.handle(QueryAnswered(1000, 19000, 0))
    session.handle(RoundStarted())
    session.handle(ACCEPT)
    assert session.handle(RoundStarted()) == [RecordTrade(terms(A, 22000))]
    sent = session.handle(TradeRecorded())
    for answer in answers:
        sent += session.handle(answer)
    confirms = [command for command in sent if isinstance(command, SendConfirm)]
    assert [c.copy for c in confirms] == list(range(1, copies + 1))
    assert [c.wait_ms for c in confirms] == [1000, 1000, 4000][:copies]  # last: + hold time
    close = sent[-1]
    assert isinstance(close, Close) and close.outcome is outcome and session.outcome is outcome
    if outcome is Outcome.VOID:
        assert SendTerminate(REASON_AUCTION_CLOSED) in sent and buyers.closed_with == [None]
        assert buyers.abandoned_by_bidder == {A: 1}
    else:
        assert buyers.closed_with == [A] and buyers.confirmed_by_bidder == {A: 1}


def test_not_holder_to_the_first_copy_waits_for_the_later_copies() -> None:
    session = AuctionSession(OFFER, RULES, ScriptedBuyers([[(A, 22000, 1000)]]))
    for event in (None, QueryAnswered(1000, 19000, 0), RoundStarted(), ACCEPT, RoundStarted()):
        session.start() if event is None else session.handle(event)
    won = terms(A, 22000)
    play(session, [
        (TradeRecorded(), [SendConfirm(won, 1, 1000)]),
        (TimedOut(), [SendConfirm(won, 2, 1000)]),
        (ConfirmAnswered(1, False, REASON_NOT_HOLDER, 200), [AwaitConfirm(800)]),
        (ConfirmAnswered(2, True, 0, 500),
         [noted(A, 22000, 1, BidOutcome.CONFIRMED), Close(Outcome.CLEARED, won)]),
    ])


def test_cancel_ends_a_bidding_auction_but_never_a_trade_being_confirmed() -> None:
    buyers = ScriptedBuyers([[(A, 22000, 1000)]])
    session = AuctionSession(OFFER, RULES, buyers)
    session.start()
    session.handle(QueryAnswered(1000, 19000, 0))
    session.handle(RoundStarted())
    session.handle(ACCEPT)
    won = terms(A, 22000)
    play(session, [
        (RoundStarted(), [RecordTrade(won)]),
        (Cancelled(REASON_DEVICE_FAULT), []),  # the trade is being written: it finishes
        (TradeRecorded(), [SendConfirm(won, 1, 1000)]),
        (Cancelled(REASON_SHUTDOWN), []),
        (ConfirmAnswered(1, True), [noted(A, 22000, 1, BidOutcome.CONFIRMED),
                                    Close(Outcome.CLEARED, won)]),
        (ConfirmAnswered(2, True), []),  # late news of a closed auction
    ])

    bidding = AuctionSession(OFFER, RULES, buyers)
    bidding.start()
    bidding.handle(QueryAnswered(1000, 19000, 0))
    assert bidding.handle(RoundStarted()) == [bid(A, 22000, 1)]
    assert bidding.handle(Cancelled(REASON_DEVICE_FAULT)) == [
        SendTerminate(REASON_DEVICE_FAULT), Close(Outcome.TERMINATED)]
    # the reply that raced the cancellation changes nothing: no trade is ever recorded
    assert bidding.handle(ACCEPT) == [] and bidding.outcome is Outcome.TERMINATED
    assert buyers.released == [OFFER.auction_id]


def test_a_trade_that_could_not_be_written_is_never_confirmed() -> None:
    session = AuctionSession(OFFER, RULES, ScriptedBuyers([[(A, 22000, 1000)]]))
    for event in (None, QueryAnswered(1000, 19000, 0), RoundStarted(), ACCEPT):
        session.start() if event is None else session.handle(event)
    play(session, [
        (RoundStarted(), [RecordTrade(terms(A, 22000))]),
        (RecordFailed(), [SendTerminate(REASON_AUCTION_CLOSED), Close(Outcome.TERMINATED)]),
    ])


def test_second_price_clears_at_the_second_bid_and_reprices_after_a_floor_refusal() -> None:
    buyers = ScriptedBuyers([[(A, 30000, 1000), (B, 24000, 1000), (C, 20000, 1000)]])
    session = AuctionSession(OFFER, SEALED, buyers)
    won = terms(A, 24000 + 240)
    play(session, [
        (None, [SendQuery()]),
        (QueryAnswered(1000, 19000, 0), [NextRound(pause=False)]),
        (RoundStarted(), [bid(A, 24000, 1)]),  # the winner, at the second price
        (BidAnswered(False, REASON_BELOW_RESERVE),
         [noted(A, 24000, 1, REJ, REASON_BELOW_RESERVE), bid(A, 24240, 1)]),
        (ACCEPT, [noted(A, 24240, 1, ACC), RecordTrade(won)]),
    ])


def test_events_a_session_cannot_be_waiting_for_are_a_driver_bug() -> None:
    session = AuctionSession(OFFER, RULES, ScriptedBuyers([]))
    with pytest.raises(SessionError):
        session.handle(ACCEPT)  # not started
    session.start()
    with pytest.raises(SessionError):
        session.handle(TradeRecorded())
    with pytest.raises(SessionError):
        session.start()
