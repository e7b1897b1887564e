"""One auction as a pure state machine: events in, commands out; no I/O, no clock, no task.

The trading flow of shared_etp/README.md for one battery offer: Query -> QueryResponse ->
rounds in which the aggregators bid and the best new bid is put to the battery (BidAccept /
BidReject) -> when bidding stops the winning trade is recorded durably -> BidConfirm (re-sent
while unanswered) -> the battery's answer decides. A trade whose answer never comes closes
UNVERIFIED: it does not count until the battery, asked later, says it committed it
(hub/auctions/reconcile.py). The live hub (hub/auctions/driver.py) and the
simulation (hub/auctions/simulation.py) drive this same session, so a round exists once.

A driver feeds `start()` and then `handle(event)` with what happened (an answer, a timeout, a
cancellation) and carries out the commands returned, in order. Time enters only as data: the
waits a command asks for (`wait_ms`) and how long a wait had run when an answer came.
"""

from __future__ import annotations

from hub.auctions.messages import (
    AwaitConfirm,
    BidAnswered,
    BidOutcome,
    Cancelled,
    Close,
    Command,
    ConfirmAnswered,
    Event,
    NextRound,
    Outcome,
    Phase,
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
from hub.auctions.rules import Auction, BidRecord, Offer, new_auction
from hub.buyers.bidding import Buyers
from shared_etp.schema import HEALTH_FAULT, REASON_AUCTION_CLOSED, REASON_NOT_HOLDER

__all__ = ["AuctionSession", "SessionError"]


class SessionError(RuntimeError):
    """A driver fed an event the session cannot be waiting for (a driver bug)."""


class AuctionSession:
    """One battery offer from Query to Close. `offer` holds what the auction was opened with
    (the battery's last known lot and reserve); the QueryResponse decides the real offer."""

    def __init__(self, offer: Offer, rules: SessionRules, buyers: Buyers | None) -> None:
        self.offer = offer
        self.rules = rules
        self.buyers = buyers
        self.phase = Phase.NEW
        self.auction: Auction | None = None
        self.outcome: Outcome | None = None
        self.terms: TradeTerms | None = None
        self.held = False  # some bid was accepted: the battery holds energy for this auction
        self._in_flight: BidRecord | None = None
        self._copies_sent = 0
        self._copies_refused: set[int] = set()
        self._wait_ms = 0

    @property
    def auction_id(self) -> int:
        """The auction's id (from the store)."""
        return self.offer.auction_id

    @property
    def cancellable(self) -> bool:
        """False once a trade is being recorded or confirmed: that always runs to its end."""
        return self.phase not in (Phase.RECORDING, Phase.CONFIRMING, Phase.CLOSED)

    # ---- driving ---------------------------------------------------------------------------

    def start(self) -> list[Command]:
        """The first commands: Query the battery."""
        if self.phase is not Phase.NEW:
            raise SessionError(f"auction {self.auction_id}: started twice")
        self.phase = Phase.QUERYING
        return [SendQuery()]

    def handle(self, event: Event) -> list[Command]:
        """Feed what happened; returns what to do now (empty: keep waiting)."""
        phase = self.phase
        if phase is Phase.CLOSED:
            return []  # late news of an auction that is over
        if isinstance(event, Cancelled):
            if not self.cancellable:
                return []
            return self._terminate(event.reason, abandoned=True)
        if phase is Phase.QUERYING and isinstance(event, QueryAnswered):
            return self._offer(event)
        if phase is Phase.QUERYING and isinstance(event, TimedOut):
            return self._terminate(REASON_AUCTION_CLOSED, abandoned=False)
        if phase is Phase.BETWEEN_ROUNDS and isinstance(event, RoundStarted):
            return self._round()
        if phase is Phase.BIDDING and isinstance(event, BidAnswered):
            return self._bid_answered(event)
        if phase is Phase.BIDDING and isinstance(event, TimedOut):
            # The battery went silent (died, or the link did): no further bid is put to it.
            # The Terminate is re-sent until the battery answers it, also after it comes back.
            return self._terminate(REASON_AUCTION_CLOSED, abandoned=True)
        if phase is Phase.RECORDING and isinstance(event, TradeRecorded):
            self.phase = Phase.CONFIRMING
            return [self._send_confirm()]
        if phase is Phase.RECORDING and isinstance(event, RecordFailed):
            self.terms = None
            return self._terminate(REASON_AUCTION_CLOSED, abandoned=True)
        if phase is Phase.CONFIRMING and isinstance(event, ConfirmAnswered):
            return self._confirm_answered(event)
        if phase is Phase.CONFIRMING and isinstance(event, TimedOut):
            if self._copies_sent < self.rules.confirm_copies:
                return [self._send_confirm()]
            return self._settle(Outcome.UNVERIFIED)
        raise SessionError(f"auction {self.auction_id}: {event!r} while {phase}")

    # ---- steps -----------------------------------------------------------------------------

    def _offer(self, answer: QueryAnswered) -> list[Command]:
        rules = self.rules
        lot_wh = answer.sellable_wh
        if rules.max_lot_wh is not None:
            lot_wh = min(lot_wh, rules.max_lot_wh)
        commands: list[Command] = []
        if lot_wh != self.offer.lot_wh or answer.reserve_mc != self.offer.reserve_mc:
            commands.append(RecordOffer(lot_wh, answer.reserve_mc))
        if lot_wh < max(1, rules.min_lot_wh) or answer.health >= HEALTH_FAULT:
            return [*commands, *self._close(Outcome.NO_SALE)]
        self.offer = Offer(
            device_id=self.offer.device_id,
            auction_id=self.auction_id,
            lot_wh=lot_wh,
            reserve_mc=answer.reserve_mc,
            opened_ms=self.offer.opened_ms,
        )
        if self.buyers is not None:
            self.buyers.offered(lot_wh)
        self.auction = new_auction(rules.mechanism, self.offer, **rules.auction_rules)
        self.phase = Phase.BETWEEN_ROUNDS
        return [*commands, NextRound(pause=False)]

    def _round(self) -> list[Command]:
        auction = self._auction()
        if self.buyers is not None:
            self.buyers.collect(auction)
        auction.bids_collected()
        return self._next_bid()

    def _next_bid(self) -> list[Command]:
        auction = self._auction()
        candidates = auction.candidates()
        if candidates:
            record = candidates[0]
            self._in_flight = record
            self.phase = Phase.BIDDING
            return [SendBid(record.bidder_id, record.price_mc, record.energy_wh, record.round)]
        self._in_flight = None
        if not auction.end_round():
            self.phase = Phase.BETWEEN_ROUNDS
            return [NextRound(pause=True)]
        winner = auction.winner
        if winner is None:
            if self.buyers is not None:
                self.buyers.closed(auction)
            commands: list[Command] = []
            if self.held:  # a hold the battery must release now
                commands.append(SendTerminate(REASON_AUCTION_CLOSED))
            return [*commands, *self._close(Outcome.NO_SALE)]
        self.terms = TradeTerms(
            winner.bidder_id, winner.price_mc, winner.energy_wh, self.offer.reserve_mc
        )
        self.phase = Phase.RECORDING
        return [RecordTrade(self.terms)]

    def _bid_answered(self, answer: BidAnswered) -> list[Command]:
        auction = self._auction()
        record = self._in_flight
        assert record is not None  # BIDDING always has a bid in flight
        noted = RecordBid(
            record.bidder_id,
            record.price_mc,
            record.energy_wh,
            record.round,
            BidOutcome.ACCEPTED if answer.accepted else BidOutcome.REJECTED,
            None if answer.accepted else answer.reason,
        )
        if answer.accepted:
            self.held = True
            if self.buyers is not None:
                self.buyers.held(auction, record)
            auction.battery_accepted(record)
        else:
            auction.battery_rejected(record, answer.reason)
        return [noted, *self._next_bid()]

    def _send_confirm(self) -> SendConfirm:
        assert self.terms is not None
        self._copies_sent += 1
        self._wait_ms = self.rules.confirm_wait_ms(self._copies_sent)
        return SendConfirm(self.terms, self._copies_sent, self._wait_ms)

    def _confirm_answered(self, answer: ConfirmAnswered) -> list[Command]:
        if answer.accepted:
            return self._settle(Outcome.CLEARED)
        if answer.reason == REASON_NOT_HOLDER:
            if answer.copy > 1:
                # The battery answers a repeat of a trade it committed with BidAccept: not_holder
                # to a repeat means it no longer held the auction in memory (a reboot) and may
                # have committed an earlier copy: unverified, until its record says.
                return self._settle(Outcome.UNVERIFIED)
            self._copies_refused.add(answer.copy)
            if self._copies_sent > len(self._copies_refused):
                # The first copy may have been refused only because a later copy had already
                # committed: wait for the other copies' answers.
                return [AwaitConfirm(max(0, self._wait_ms - answer.waited_ms))]
        return self._settle(Outcome.VOID, answer.reason)

    def _settle(self, outcome: Outcome, reason: int | None = None) -> list[Command]:
        """The battery's answer (or its silence) decided the recorded trade."""
        terms = self.terms
        assert terms is not None
        auction, buyers = self.auction, self.buyers
        commands: list[Command] = []
        if outcome is Outcome.VOID:
            if auction is not None and buyers is not None:
                auction.winner = None
                buyers.closed(auction)
                buyers.trade_refused(terms.bidder_id)
            commands.append(SendTerminate(REASON_AUCTION_CLOSED))
        else:
            if auction is not None:
                winner = auction.winner
                assert winner is not None
                commands.append(
                    RecordBid(
                        terms.bidder_id,
                        terms.price_mc,
                        terms.energy_wh,
                        winner.round,
                        BidOutcome.CONFIRMED,
                    )
                )
                if buyers is not None:
                    buyers.closed(auction)
                    buyers.trade_confirmed(terms.bidder_id)
        return [*commands, *self._close(outcome, terms, reason)]

    def _terminate(self, reason: int, *, abandoned: bool) -> list[Command]:
        if abandoned and self.auction is not None and self.buyers is not None:
            self.buyers.abandoned(self.auction)
        return [SendTerminate(reason), *self._close(Outcome.TERMINATED)]

    def _close(
        self, outcome: Outcome, terms: TradeTerms | None = None, reason: int | None = None
    ) -> list[Command]:
        self.phase = Phase.CLOSED
        self.outcome = outcome
        self._in_flight = None
        return [Close(outcome, terms, reason)]

    def _auction(self) -> Auction:
        auction = self.auction
        if auction is None:
            raise SessionError(f"auction {self.auction_id}: no offer yet")
        return auction
