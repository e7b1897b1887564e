"""What auctions leave behind: totals, events, bids, and rows written off the trading path.

Closes are written as they come and offers in batches. The trade itself is always written
durably BEFORE its BidConfirm (the driver's RecordTrade); what is queued here only completes an
auction's row. A crash before a close is written leaves the auction open, and the next start
resolves it (AuctionDriver.recover).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import structlog

from hub.auctions.messages import BidOutcome, Close, Outcome, RecordBid
from hub.auctions.totals import AuctionTotals
from hub.events import EventKind, EventLog
from hub.metrics import Metrics
from hub.store import Store
from shared_etp.compat import now_ms
from shared_etp.schema import REASON_NAMES

__all__ = ["AuctionRecords"]

log = structlog.get_logger(__name__)


class AuctionRecords:
    """Books what auctions did: bids, closes with their trade's status (queued, written in
    the background), offers (batched), totals and events."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        events: EventLog,
        *,
        offer_interval_s: float = 0.2,
        offer_batch: int = 200,
        close_batch: int = 500,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.events = events
        self.offer_interval_s = offer_interval_s
        self.offer_batch = offer_batch
        self.close_batch = close_batch
        self._closes: deque[tuple[int, dict[str, Any]]] = deque()
        self._offers: list[tuple[int, int, int]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.totals = AuctionTotals()

    def event(
        self, kind: EventKind, device_id: int | None, auction_id: int | None, **payload: Any
    ) -> None:
        """Publish one event and queue it for the store (never raises into the trading path:
        a value the log refuses is a bug to log)."""
        if not self.events.started:
            return
        try:
            self.events.emit(kind, device_id=device_id, auction_id=auction_id, **payload)
        except Exception as exc:
            log.error("event refused by the log", kind=str(kind), error=str(exc))

    def bid(self, auction_id: int, device_id: int, bid: RecordBid) -> None:
        """What the battery made of one bid (a confirmed one: see the confirm's own event)."""
        if bid.outcome is BidOutcome.REJECTED:
            reason = bid.reason or 0
            self.metrics.bid_rejections[REASON_NAMES.get(reason, str(reason))] += 1
        if bid.outcome is not BidOutcome.CONFIRMED:
            kind = EventKind.BID_ACCEPTED
            extra: dict[str, Any] = {}
            if bid.outcome is BidOutcome.REJECTED:
                kind, extra = EventKind.BID_REJECTED, {"reason": bid.reason or 0}
            self.event(
                kind,
                device_id,
                auction_id,
                bidder_id=bid.bidder_id,
                price_mc=bid.price_mc,
                energy_wh=bid.energy_wh,
                round=bid.round,
                **extra,
            )
        self.store.record_bid(
            auction_id=auction_id,
            bidder_id=bid.bidder_id,
            price_mc=bid.price_mc,
            energy_wh=bid.energy_wh,
            round=bid.round,
            outcome=bid.outcome.value,
            reason=bid.reason,
            ts_ms=now_ms(),
        )

    def closed(self, auction_id: int, device_id: int, close: Close, *,
               evidence: tuple[bytes, bytes] | None = None) -> None:
        """An auction is over: count it, queue its row's close (with its trade's status and,
        verified, the frames that proved it, in the same transaction) and say what became of
        its trade."""
        outcome, terms = close.outcome, close.terms
        self.totals.closed(outcome, terms)
        detail: dict[str, Any] = {}
        if terms is not None:
            detail = {
                "bidder_id": terms.bidder_id,
                "price_mc": terms.price_mc,
                "energy_wh": terms.energy_wh,
                "reserve_mc": terms.reserve_mc,
            }
        if close.reason is not None:
            detail["reason"] = close.reason
        self.event(EventKind.AUCTION_CLOSED, device_id, auction_id, outcome=outcome.value, **detail)
        if terms is not None and outcome in (Outcome.CLEARED, Outcome.UNVERIFIED):
            self.close(
                auction_id,
                status=outcome.store_status,
                clearing_price_mc=terms.price_mc,
                winner_id=terms.bidder_id,
                energy_wh=terms.energy_wh,
                trade_status=outcome.trade_status,
                evidence=evidence if outcome is Outcome.CLEARED else None,
            )
        elif auction_id:
            trade = {"trade_status": outcome.trade_status} if terms is not None else {}
            self.close(auction_id, status=outcome.store_status, **trade)
        if outcome is Outcome.CLEARED and terms is not None:
            self.event(
                EventKind.TRADE_VERIFIED,
                device_id,
                auction_id,
                bidder_id=terms.bidder_id,
                price_mc=terms.price_mc,
                energy_wh=terms.energy_wh,
                source="confirm",
            )
        elif outcome is Outcome.UNVERIFIED:
            self.metrics.counters["trades_unverified"] += 1
            self.event(EventKind.TRADE_UNVERIFIED, device_id, auction_id)
            log.warning(
                "battery did not answer the confirm: trade unverified, it does not count "
                "until the battery says it committed it",
                auction=auction_id,
                device=device_id,
            )
        elif outcome is Outcome.VOID:
            reason = REASON_NAMES.get(close.reason or 0, str(close.reason))
            self.event(
                EventKind.TRADE_VOID,
                device_id,
                auction_id,
                reason=close.reason or 0,
                source="confirm",
            )
            log.warning(
                "battery did not commit a confirmed bid: trade void",
                auction=auction_id,
                device=device_id,
                reason=reason,
            )

    def close(self, auction_id: int, **fields: Any) -> None:
        """Close an auction (status and, when cleared, price, winner, energy)."""
        self._closes.append((auction_id, fields))
        self._wake.set()

    def offer(self, auction_id: int, lot_wh: int, reserve_mc: int) -> None:
        """The battery's own offer differs from what the auction was opened with."""
        self._offers.append((auction_id, lot_wh, reserve_mc))

    def start(self) -> None:
        """Start the background writer."""
        self._task = asyncio.create_task(self._run(), name="auction-writes")

    async def stop(self) -> None:
        """Write everything queued, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        offers_due = loop.time() + self.offer_interval_s
        while not (self._stopping and not self._closes):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.offer_interval_s)
            self._wake.clear()
            flush_offers = len(self._offers) >= self.offer_batch or loop.time() >= offers_due
            if flush_offers:
                offers_due = loop.time() + self.offer_interval_s
            await self.flush(offers=flush_offers)

    async def flush(self, offers: bool = True) -> None:
        """Write every queued close (the store commits them together) and, with `offers`,
        the queued offers. A failed write is counted and logged, never raised."""
        while self._closes:
            count = min(len(self._closes), self.close_batch)
            closes = [self._closes.popleft() for _ in range(count)]
            try:
                refused = await self.store.close_auctions(closes, closed_ms=now_ms())
            except Exception as exc:
                self.metrics.counters["store_write_errors"] += count
                log.warning("could not close auctions", count=count, error=str(exc))
                continue
            for auction_id in refused:
                self.metrics.counters["store_write_errors"] += 1
                log.warning(
                    "could not close auction: unknown, or closed otherwise", auction=auction_id
                )
        if offers and self._offers:
            batch, self._offers = self._offers, []
            try:
                await self.store.update_auction_offers(batch)
            except Exception as exc:
                self.metrics.counters["store_write_errors"] += 1
                log.warning("could not record auction offers", count=len(batch), error=str(exc))
