"""Auction rows written off the trading path: closes as they come, offers in batches.

The trade itself is always written durably BEFORE its BidConfirm (RecordTrade); what is queued
here only completes an auction's row. A crash before a close is written leaves the auction
open, and the next start resolves it (AuctionDriver.recover).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import structlog

from hub.metrics import Metrics
from shared_etp.compat import now_ms

__all__ = ["AuctionWrites"]

log = structlog.get_logger(__name__)


class AuctionWrites:
    """Queues auction closes and offer updates and writes them in the background."""

    def __init__(
        self,
        store: Any,
        metrics: Metrics,
        *,
        offer_interval_s: float = 0.2,
        offer_batch: int = 200,
        close_batch: int = 500,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.offer_interval_s = offer_interval_s
        self.offer_batch = offer_batch
        self.close_batch = close_batch
        self._closes: deque[tuple[int, dict[str, Any]]] = deque()
        self._offers: list[tuple[int, int, int]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

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
            closed_ms = now_ms()
            outcomes = await asyncio.gather(
                *(
                    self.store.close_auction(auction_id, closed_ms=closed_ms, **fields)
                    for auction_id, fields in closes
                ),
                return_exceptions=True,
            )
            for (auction_id, _fields), outcome in zip(closes, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    self.metrics.counters["store_write_errors"] += 1
                    log.warning("could not close auction", auction=auction_id, error=str(outcome))
        if offers and self._offers:
            batch, self._offers = self._offers, []
            try:
                await self.store.update_auction_offers(batch)
            except Exception as exc:
                self.metrics.counters["store_write_errors"] += 1
                log.warning("could not record auction offers", count=len(batch), error=str(exc))
