"""What became of an auction, from the battery's own record: closing auctions the battery may
not know are closed, and deciding trades whose confirm went unanswered.

A Terminate carrying `auc` closes that auction on the battery and is answered
(shared_etp/README.md, "The trading flow"): BidAccept if the battery committed the auction's
trade to the Terminate's sender (at the price and energy it echoes), BidReject with a reason if
not, `unknown_auction` if it has no record left. The hub sends such a Terminate

- to *tell* a battery an auction is over (a session ended without the battery's word: a
  timeout, a failure, a refused confirm): re-sent until the battery answers anything, so a
  board that was away learns it when it is back; and
- to *ask*, as the recorded winner, about an unverified trade (its BidConfirm went unanswered,
  or the hub restarted before the answer came): re-sent until the battery answers, after every
  reconnect and restart (unverified trades are loaded from the store at start). Committed at
  the recorded terms: the trade is verified (it counts from now on, its settlement is queued);
  not committed: void; no record, or other terms: it stays unverified and an operator is
  alerted (logged as an error, an event, a counter).

Questions go only to a battery seen alive; each waits `ask_wait_ms` for its answer, then the
wait doubles up to `ask_backoff_max_ms`, and starts again at once when the link or the battery
comes back. Nothing here blocks a session: an auction is closed before it is reconciled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from hub.auctions.messages import TradeTerms
from hub.devices import Registry
from hub.events import EventKind
from shared_etp.schema import (
    BID_ACCEPT,
    REASON_AUCTION_CLOSED,
    REASON_NAMES,
    REASON_UNKNOWN_AUCTION,
)

__all__ = ["Question", "Reconciler"]

log = structlog.get_logger(__name__)

# (sender, device id, term code, auction id) -> the message id and the frame of the Terminate
SendTerminate = Callable[[int, int, int, int], tuple[int, bytes]]


@dataclass
class Question:
    """One auction a battery must hear about: a tell (no trade) or an ask (its trade)."""

    device_id: int
    auction_id: int
    term: int
    trade_id: int | None = None
    terms: TradeTerms | None = None
    attempts: int = 0
    due: float = 0.0  # loop time of the next send
    away: bool = False  # the battery was not reachable at the last look
    msg_id: int | None = None  # the Terminate in flight
    frame: bytes = b""  # as sent: with a committed answer, the trade's evidence

    @property
    def sender(self) -> int:
        """Who asks: the recorded winner for a trade (the battery answers about its trade with
        that bidder), the hub for a plain tell."""
        return self.terms.bidder_id if self.terms is not None else 0


class Reconciler:
    """Open questions to batteries, by (device, auction); answers decide trades."""

    def __init__(
        self,
        *,
        send: SendTerminate,
        registry: Registry,
        records: Any,  # AuctionRecords (events, totals, store writes)
        wait_ms: int,
        backoff_max_ms: int,
        max_sends_per_tick: int = 200,
    ) -> None:
        self.send = send
        self.registry = registry
        self.records = records
        self.wait_s = wait_ms / 1000.0
        self.backoff_max_s = backoff_max_ms / 1000.0
        self.max_sends_per_tick = max_sends_per_tick
        self.questions: dict[tuple[int, int], Question] = {}
        self.unresolvable: list[tuple[Question, str]] = []  # kept unverified, for an operator
        self._in_flight: dict[tuple[int, int, int], Question] = {}  # (device, sender, msg id)
        self._background: set[asyncio.Task[None]] = set()

    # ---- questions -------------------------------------------------------------------------

    def tell(self, device_id: int, auction_id: int, term: int) -> None:
        """The battery must learn that the auction is over (sent now, re-sent until answered)."""
        key = (device_id, auction_id)
        if key not in self.questions:
            self.questions[key] = Question(device_id, auction_id, term)
            self._send(self.questions[key], time.monotonic())

    def forget(self, device_id: int) -> None:
        """Stop asking a battery (hub workers: its new owner asks it from the store)."""
        for key in [key for key in self.questions if key[0] == device_id]:
            del self.questions[key]

    def ask(self, device_id: int, auction_id: int, trade_id: int, terms: TradeTerms) -> None:
        """The trade of this auction is unverified: ask its battery until it says."""
        question = Question(device_id, auction_id, REASON_AUCTION_CLOSED, trade_id, terms)
        self.questions[(device_id, auction_id)] = question
        self.records.totals.trades_unverified += 1
        self._send(question, time.monotonic())

    @property
    def unverified(self) -> list[Question]:
        """Trades still waiting for their battery's word, oldest auction first."""
        return sorted(
            (q for q in self.questions.values() if q.terms is not None),
            key=lambda q: q.auction_id,
        )

    # ---- sending ---------------------------------------------------------------------------

    def wake(self, device_id: int | None = None) -> None:
        """The link (device_id None) or one battery is back: ask again at the next tick."""
        for question in self.questions.values():
            if device_id is None or question.device_id == device_id:
                question.due = 0.0
                question.attempts = min(question.attempts, 1)

    def due(self) -> None:
        """Send the questions whose time came to batteries seen alive (the scheduler's tick,
        with the link up)."""
        now = time.monotonic()
        sent = 0
        for question in list(self.questions.values()):
            if sent >= self.max_sends_per_tick:
                break
            reachable = self._reachable(question.device_id)
            if not reachable:
                question.away = True
                continue
            if question.away:  # back since the last look: at once
                question.away = False
                question.due = 0.0
            if now >= question.due:
                self._send(question, now)
                sent += 1

    def _reachable(self, device_id: int) -> bool:
        device = self.registry.devices.get(device_id)
        if device is None:
            return False
        recent_ms = (
            (self.registry.clock() - device.last_seen_ticks) if device.last_seen_ticks else None
        )
        return device.online or (
            recent_ms is not None and recent_ms < self.registry.silence_limit_ms
        )

    def _send(self, question: Question, now: float) -> None:
        if question.msg_id is not None:
            self._in_flight.pop((question.device_id, question.sender, question.msg_id), None)
            question.msg_id = None
        question.due = now + min(self.backoff_max_s, self.wait_s * (2**question.attempts))
        question.attempts += 1
        try:
            msg_id, frame = self.send(
                question.sender, question.device_id, question.term, question.auction_id
            )
        except Exception as exc:  # the link is down: the next tick after it is back
            log.debug("terminate not sent", device=question.device_id, error=str(exc))
            return
        question.msg_id = msg_id
        question.frame = frame
        self._in_flight[(question.device_id, question.sender, msg_id)] = question

    # ---- answers ---------------------------------------------------------------------------

    def on_answer(self, device_id: int, msg: dict[str, int], frame: bytes = b"") -> bool:
        """A response from a device (`frame` as received): True if it answered one of our
        Terminates."""
        question = self._in_flight.pop((device_id, msg["dst"], msg["id"]), None)
        if question is None:
            return False
        self.questions.pop((question.device_id, question.auction_id), None)
        if question.terms is None:
            return True  # told: any answer shows the battery knows the auction is over
        committed = msg["t"] == BID_ACCEPT
        reason = msg.get("reason", 0)
        terms = question.terms
        if committed and (msg.get("price"), msg.get("ereq")) == (terms.price_mc, terms.energy_wh):
            evidence = (question.frame, frame) if question.frame and frame else None
            self._decide(question, "verified", evidence=evidence)
        elif committed:
            self._alert(
                question,
                "battery committed other terms",
                committed_price_mc=msg.get("price"),
                committed_energy_wh=msg.get("ereq"),
            )
        elif reason == REASON_UNKNOWN_AUCTION:
            self._alert(question, "battery has no record of the auction")
        else:
            self._decide(question, "void", reason)
        return True

    def _decide(self, question: Question, status: str, reason: int | None = None, *,
                evidence: tuple[bytes, bytes] | None = None) -> None:
        """The battery's record decided the trade: store it, count it, say it."""
        assert question.trade_id is not None and question.terms is not None
        self.records.totals.resolved(status, question.terms)
        task = asyncio.get_running_loop().create_task(
            self._store(question.trade_id, status, evidence), name=f"resolve-{question.trade_id}"
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        terms = question.terms
        if status == "verified":
            self.records.event(
                EventKind.TRADE_VERIFIED,
                question.device_id,
                question.auction_id,
                trade_id=question.trade_id,
                bidder_id=terms.bidder_id,
                price_mc=terms.price_mc,
                energy_wh=terms.energy_wh,
                source="asked",
            )
            log.info(
                "unverified trade verified: the battery committed it",
                auction=question.auction_id,
                device=question.device_id,
            )
        else:
            self.records.event(
                EventKind.TRADE_VOID,
                question.device_id,
                question.auction_id,
                trade_id=question.trade_id,
                reason=reason or 0,
                source="asked",
            )
            log.warning(
                "unverified trade void: the battery did not commit it",
                auction=question.auction_id,
                device=question.device_id,
                reason=REASON_NAMES.get(reason or 0, str(reason)),
            )

    async def _store(self, trade_id: int, status: str,
                     evidence: tuple[bytes, bytes] | None) -> None:
        try:
            await self.records.store.resolve_trade(trade_id, status, evidence)
        except Exception as exc:
            self.records.metrics.counters["store_write_errors"] += 1
            log.error(
                "could not store a trade's resolution",
                trade=trade_id,
                status=status,
                error=str(exc),
            )

    def _alert(self, question: Question, problem: str, **detail: Any) -> None:
        """The battery's answer cannot decide the trade: it stays unverified for an operator."""
        assert question.terms is not None
        self.unresolvable = [*self.unresolvable[-999:], (question, problem)]
        self.records.totals.trades_unresolvable += 1
        self.records.metrics.counters["trades_unresolvable"] += 1
        self.records.event(
            EventKind.TRADE_UNRESOLVABLE,
            question.device_id,
            question.auction_id,
            trade_id=question.trade_id,
            problem=problem,
            bidder_id=question.terms.bidder_id,
            price_mc=question.terms.price_mc,
            energy_wh=question.terms.energy_wh,
            **detail,
        )
        log.error(
            "unverified trade cannot be decided by its battery; an operator must",
            auction=question.auction_id,
            device=question.device_id,
            trade=question.trade_id,
            problem=problem,
            **detail,
        )

    async def stop(self) -> None:
        """Let resolutions being written finish."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
