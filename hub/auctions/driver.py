"""Auction orchestration: runs the trading flow of shared_etp/README.md against live batteries.

Per auction: Query (with `auc`) -> QueryResponse -> rounds in which the in-process aggregators
decide (hub/market strategies) and the best new bid is put to the battery (Bid signed with the
device key, src = aggregator id) -> BidAccept/BidReject (a reject moves on to the next
candidate) -> when bidding stops the winning trade is recorded durably -> BidConfirm -> the
battery's BidAccept. Many auctions run at once, one asyncio task each. The engine also
publishes the signed reputation and clearing-price notices the batteries read.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from hub.auctions.rules import Auction, BidRecord, Mechanism, Offer, new_auction
from hub.buyers.aggregator import Aggregator
from hub.buyers.bidding import collect_bids, record_outcome
from hub.buyers.history import MarketHistory, demand_wh
from hub.devices import Device, Registry, SenderPool
from hub.metrics import Metrics
from shared_etp.compat import now_ms, ticks_ms
from shared_etp.frame import NOTICE_CLEARING, NOTICE_REPUTATION, encode_notice
from shared_etp.schema import (
    BID,
    BID_ACCEPT,
    BID_CONFIRM,
    QUERY,
    QUERY_RESPONSE,
    REASON_AUCTION_CLOSED,
    REASON_DEVICE_FAULT,
    REASON_NAMES,
    REASON_NOT_HOLDER,
    REASON_SHUTDOWN,
    TERMINATE,
    TYPE_NAMES,
)
from shared_etp.topics import CLEARING, REPUTATION, REQUEST, device_topic, market_topic

__all__ = ["AuctionRun", "Engine", "EngineConfig"]

log = structlog.get_logger(__name__)


class Publisher(Protocol):
    """What the engine needs from the transport."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue one publish."""


@dataclass
class EngineConfig:
    """Auction cadence and timing (from Settings)."""

    site: str
    mechanism: str = "ascending"
    auction_interval_ms: int = 1500
    max_parallel_auctions: int = 1000
    round_ms: int = 0
    max_rounds: int = 12
    response_timeout_ms: int = 1000
    lot_wh: int = 1000
    min_lot_wh: int = 100
    hold_timeout_ms: int = 3000
    store_concurrency: int = 64  # auctions opening at once (their rows share group commits)
    notice_interval_ms: int = 2000
    scheduler_tick_ms: int = 20
    trading_period_ms: int = 0  # aggregators' budgets/requirements renew each period; 0 = never


@dataclass
class AuctionRun:
    """A live auction: its task and whether the trade is being committed (not cancellable)."""

    auction_id: int
    device_id: int
    opened_ms: int
    task: asyncio.Task[None] | None = None
    committing: bool = False
    terminated: bool = False
    held: bool = False  # some bid was accepted (the battery holds energy for it)


@dataclass
class _Pending:
    request_type: int
    started: float
    future: asyncio.Future[dict[str, int]]


@dataclass
class EngineTotals:
    """Counters for the status line and the gateway."""

    auctions_opened: int = 0
    auctions_cleared: int = 0
    auctions_no_sale: int = 0
    auctions_terminated: int = 0
    trades: int = 0
    trades_voided: int = 0
    revenue_mc: int = 0
    premium_bp_sum: int = 0  # sum over trades of (price - reserve) / reserve in basis points
    price_sum_mc: int = 0
    reserve_sum_mc: int = 0
    failure_reaction_ms: list[float] = field(default_factory=list)


class Engine:
    """Runs auctions for every online battery at the site with the configured mechanism."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        link: Publisher,
        registry: Registry,
        senders: SenderPool,
        notice_key: bytes,
        store: Any,
        metrics: Metrics,
        aggregators: list[Aggregator],
    ) -> None:
        self.config = config
        self.link = link
        self.registry = registry
        self.senders = senders
        self.notice_key = notice_key
        self.store = store
        self.metrics = metrics
        self.aggregators = aggregators
        self.by_id = {agg.config.aggregator_id: agg for agg in aggregators}
        self._period_started: int | None = None  # ticks_ms when the trading period began
        self.mechanism = Mechanism(config.mechanism)
        self.runs: dict[int, AuctionRun] = {}  # device id -> live auction
        self.totals = EngineTotals()
        self.history = MarketHistory()
        self.confirmed_by_bidder: dict[int, int] = {}
        self.abandoned_by_bidder: dict[int, int] = {}
        self._pending: dict[tuple[int, int, int], _Pending] = {}
        self._next_auction_at: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._store_slots = asyncio.Semaphore(config.store_concurrency)
        self.trade_listeners: list[Callable[[dict[str, Any]], None]] = []
        # Writes off the auction's critical path: auction closes and the offers batteries
        # answered with. The trade itself is always written (durably) before BidConfirm.
        self._closes: deque[tuple[int, dict[str, Any]]] = deque()
        self._offers: list[tuple[int, int, int]] = []
        self._writes_wake = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None
        self._writer_stopping = False

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve auctions a previous run left open, then start scheduling and notices."""
        await self.recover()
        self._writer_task = asyncio.create_task(self._writer(), name="engine-store-writer")
        self._tasks.append(asyncio.create_task(self._scheduler(), name="engine-scheduler"))
        self._tasks.append(asyncio.create_task(self._notices(), name="engine-notices"))

    async def stop(self) -> None:
        """Stop opening auctions; terminate open ones cleanly (trades being committed finish)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        runs = list(self.runs.values())
        for run in runs:
            if not run.committing:
                self._terminate(run, REASON_SHUTDOWN)
        tasks = [run.task for run in runs if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self._writer_stopping = True
        self._writes_wake.set()
        if self._writer_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
        await self._flush_writes()

    # ---- background store writes -------------------------------------------------------------

    def _queue_close(self, auction_id: int, **fields: Any) -> None:
        """Close an auction in the store without holding up the auction (see _writer)."""
        self._closes.append((auction_id, fields))
        self._writes_wake.set()

    async def _writer(self, offer_interval_s: float = 0.2, offer_batch: int = 200) -> None:
        """Write queued closes as they come and offers in batches. A crash before a close is
        written leaves the auction open: the next start resolves it (see recover)."""
        loop = asyncio.get_running_loop()
        offers_due = loop.time() + offer_interval_s
        while not (self._writer_stopping and not self._closes):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._writes_wake.wait(), offer_interval_s)
            self._writes_wake.clear()
            flush_offers = len(self._offers) >= offer_batch or loop.time() >= offers_due
            if flush_offers:
                offers_due = loop.time() + offer_interval_s
            await self._flush_writes(offers=flush_offers)

    async def _flush_writes(self, offers: bool = True) -> None:
        while self._closes:
            # Every queued close at once: the store commits them together.
            closes = [self._closes.popleft() for _ in range(min(len(self._closes), 500))]
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

    async def recover(self) -> None:
        """Resolve auctions a crash left open. Without a recorded trade they are terminated.
        With one, the hub may have crashed before or after its BidConfirm left: the confirm is
        sent again once the battery is back, and its answer decides (see _reconfirm)."""
        open_auctions = await self.store.open_auctions()
        if not open_auctions:
            return
        trades = {trade.auction_id: trade for trade in await self.store.list_trades()}
        for row in open_auctions:
            trade = trades.get(row.id)
            if trade is not None:
                if row.reserve_mc != trade.reserve_mc:  # the offer batch was lost in the crash
                    self._offers.append((row.id, row.lot_wh, trade.reserve_mc))
                self._tasks.append(
                    asyncio.create_task(self._reconfirm(trade), name=f"reconfirm-{row.id}")
                )
                continue
            with contextlib.suppress(Exception):
                self._publish_request(0, row.device_id, TERMINATE, term=REASON_SHUTDOWN, auc=row.id)
            await self.store.close_auction(row.id, status="terminated", closed_ms=now_ms())
            self.totals.auctions_terminated += 1
            self.store.record_event(
                "auction_recovered",
                device_id=row.device_id,
                auction_id=row.id,
                payload={"outcome": "terminated"},
                ts_ms=now_ms(),
            )
            log.info("open auction terminated after restart", auction=row.id)

    async def _reconfirm(self, trade: Any, wait_online_s: float = 10.0) -> None:
        """Re-send the BidConfirm of a trade recorded before a crash. BidAccept (committed now,
        or committed before the crash: a battery answers a repeat of a trade it remembers
        again) -> cleared; hold_expired, auction_closed or a fault -> the battery never
        committed: the trade is void. With no answer, or not_holder (the battery no longer
        knows the auction: it rebooted, or the trade is older than the releases it remembers),
        the durable trade stands and is marked cleared_unverified."""
        device = self.registry.get(trade.device_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_online_s
        while not device.online and loop.time() < deadline:
            await asyncio.sleep(0.05)
        outcome, reason = "unknown", None
        if device.online:
            outcome, reason = await self._send_confirm(
                trade.bidder_id,
                trade.device_id,
                trade.auction_id,
                trade.price_mc,
                trade.energy_wh,
                duplicate_possible=True,
            )
        if outcome != "refused":
            await self.store.close_auction(
                trade.auction_id,
                status="cleared",
                clearing_price_mc=trade.price_mc,
                winner_id=trade.bidder_id,
                energy_wh=trade.energy_wh,
                closed_ms=now_ms(),
            )
            outcome = "cleared" if outcome == "committed" else "cleared_unverified"
        else:
            await self.store.mark_settlement(
                trade.id,
                status="failed",
                error="battery did not commit (after hub restart): "
                + REASON_NAMES.get(reason or 0, str(reason)),
            )
            await self.store.close_auction(
                trade.auction_id, status="terminated", closed_ms=now_ms()
            )
            self.totals.trades_voided += 1
            outcome = "void"
        self.store.record_event(
            "auction_recovered",
            device_id=trade.device_id,
            auction_id=trade.auction_id,
            payload={"outcome": outcome},
            ts_ms=now_ms(),
        )
        log.info(
            "auction with a recorded trade resolved after restart",
            auction=trade.auction_id,
            outcome=outcome,
        )

    async def _send_confirm(
        self,
        bidder_id: int,
        device_id: int,
        auction_id: int,
        price_mc: int,
        energy_wh: int,
        *,
        attempts: int = 3,
        duplicate_possible: bool = False,
    ) -> tuple[str, int | None]:
        """Send BidConfirm, re-sent while unanswered, and listen for an answer to ANY copy
        until the battery's hold has surely been decided (hold timeout + margin), so a late
        answer still counts. Returns ("committed"|"refused"|"unknown", reason). not_holder to
        a re-sent confirm is "unknown": a battery answers a repeat of a trade it committed with
        BidAccept, so it no longer knows the auction (a reboot) and may have committed an
        earlier copy; the caller keeps the trade and marks it unverified."""
        loop = asyncio.get_running_loop()
        timeout_s = self.config.response_timeout_ms / 1000.0
        final = loop.time() + timeout_s * attempts + self.config.hold_timeout_ms / 1000.0
        keys: list[tuple[int, int, int]] = []
        futures: list[asyncio.Future[dict[str, int]]] = []
        first_future: asyncio.Future[dict[str, int]] | None = None
        try:
            sent = 0
            while True:
                if sent < attempts:
                    sender = self.senders.get(bidder_id, device_id)
                    frame, msg = sender.frame(
                        BID_CONFIRM, dst=device_id, auc=auction_id, price=price_mc, ereq=energy_wh
                    )
                    key = (device_id, bidder_id, msg["id"])
                    future: asyncio.Future[dict[str, int]] = loop.create_future()
                    self._pending[key] = _Pending(BID_CONFIRM, time.perf_counter(), future)
                    keys.append(key)
                    futures.append(future)
                    if sent == 0:
                        first_future = future
                    with contextlib.suppress(Exception):
                        self.link.publish(
                            device_topic(self.config.site, device_id, REQUEST), frame, 1
                        )
                    self.metrics.messages_out[TYPE_NAMES[BID_CONFIRM]] += 1
                    sent += 1
                    if sent > 1:
                        self.metrics.observe_timeout(BID_CONFIRM, timeout_s * 1000.0)
                remaining = final - loop.time()
                if remaining <= 0:
                    return "unknown", None
                wait_s = timeout_s if sent < attempts else remaining
                done, _ = await asyncio.wait(
                    futures, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    continue
                answered = next(iter(done))
                reply = answered.result()
                if reply["t"] == BID_ACCEPT:
                    return "committed", None
                reason = reply.get("reason", 0)
                first_copy = answered is first_future
                if reason == REASON_NOT_HOLDER and (not first_copy or duplicate_possible):
                    return "unknown", reason
                if reason == REASON_NOT_HOLDER and len(futures) > 1:
                    # the first copy may have been refused only because a later copy had
                    # already committed; wait for the other copies' answers
                    futures.remove(answered)
                    continue
                return "refused", reason
        finally:
            for key in keys:
                self._pending.pop(key, None)

    # ---- inbound ---------------------------------------------------------------------------

    def on_response(self, device_id: int, msg: dict[str, int]) -> None:
        """An authenticated frame from a device's resp topic: complete the matching request."""
        pending = self._pending.get((device_id, msg["dst"], msg["id"]))
        if pending is None or pending.future.done():
            self.metrics.counters["unmatched_responses"] += 1
            return
        latency_ms = (time.perf_counter() - pending.started) * 1000.0
        self.metrics.observe_response(pending.request_type, latency_ms)
        pending.future.set_result(msg)

    def on_device_failure(self, device: Device, reason: int, source: str) -> None:
        """Registry callback: end the device's auction now (well inside the 200 ms deadline)."""
        started = time.perf_counter()
        run = self.runs.get(device.device_id)
        if run is not None and not run.committing:
            self._terminate(run, REASON_DEVICE_FAULT)
        self.totals.failure_reaction_ms.append((time.perf_counter() - started) * 1000.0)
        self.metrics.counters["device_failures"] += 1
        self.store.record_event(
            "device_failure",
            device_id=device.device_id,
            payload={"reason": reason, "source": source},
            ts_ms=now_ms(),
        )

    def _terminate(self, run: AuctionRun, term: int) -> None:
        """Cancel a live auction: Terminate to the battery; the task records 'terminated'."""
        if run.terminated:
            return
        run.terminated = True
        with contextlib.suppress(Exception):
            self._publish_request(0, run.device_id, TERMINATE, term=term, auc=run.auction_id)
        if run.task is not None:
            run.task.cancel()

    # ---- requests --------------------------------------------------------------------------

    def _publish_request(
        self, src: int, device_id: int, msg_type: int, **fields: int
    ) -> dict[str, int]:
        sender = self.senders.get(src, device_id)
        frame, msg = sender.frame(msg_type, dst=device_id, **fields)
        self.link.publish(device_topic(self.config.site, device_id, REQUEST), frame, 1)
        self.metrics.messages_out[TYPE_NAMES[msg_type]] += 1
        return msg

    async def request(
        self, src: int, device_id: int, msg_type: int, **fields: int
    ) -> dict[str, int] | None:
        """Send a request to a device as src and wait for its response (None on timeout)."""
        sender = self.senders.get(src, device_id)
        frame, msg = sender.frame(msg_type, dst=device_id, **fields)
        key = (device_id, src, msg["id"])
        future: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        pending = _Pending(msg_type, time.perf_counter(), future)
        self._pending[key] = pending
        try:
            self.link.publish(device_topic(self.config.site, device_id, REQUEST), frame, 1)
            self.metrics.messages_out[TYPE_NAMES[msg_type]] += 1
            return await asyncio.wait_for(future, self.config.response_timeout_ms / 1000.0)
        except TimeoutError:
            self.metrics.observe_timeout(msg_type, (time.perf_counter() - pending.started) * 1e3)
            return None
        finally:
            self._pending.pop(key, None)

    # ---- scheduling ------------------------------------------------------------------------

    async def _scheduler(self) -> None:
        tick_s = self.config.scheduler_tick_ms / 1000.0
        while not self._stopping:
            await asyncio.sleep(tick_s)
            try:
                self._schedule_once()
            except Exception:
                log.exception("auction scheduling failed")

    def _schedule_once(self) -> None:
        now = ticks_ms()
        self._maybe_start_period(now)
        if all(agg.state.satisfied for agg in self.aggregators):
            return  # nobody is buying this trading period
        limit = self.config.max_parallel_auctions
        for device in self.registry.online():
            if len(self.runs) >= limit:
                break
            device_id = device.device_id
            if device_id in self.runs:
                continue
            due = self._next_auction_at.get(device_id)
            if due is None:
                # stagger first auctions so a fleet coming up does not open all at once
                due = now + (device_id * 37) % max(1, self.config.auction_interval_ms)
                self._next_auction_at[device_id] = due
            if now < due:
                continue
            if min(device.sellable_wh, self.config.lot_wh) < self.config.min_lot_wh:
                continue
            self._next_auction_at[device_id] = now + self.config.auction_interval_ms
            run = AuctionRun(auction_id=0, device_id=device_id, opened_ms=now_ms())
            self.runs[device_id] = run
            run.task = asyncio.create_task(self._auction(run, device), name=f"auction-{device_id}")

    def _maybe_start_period(self, now: int) -> None:
        """Start a new trading period when the current one is over: every aggregator's budget
        and energy requirement apply afresh (they buy for each delivery period)."""
        period = self.config.trading_period_ms
        if period <= 0:
            return
        started = self._period_started
        if started is None:
            self._period_started = now
            return
        if now - started < period:
            return
        self._period_started = now
        for agg in self.aggregators:
            agg.state.start_period()
        self.store.record_event(
            "trading_period",
            payload={"period": self.aggregators[0].state.periods if self.aggregators else 0},
            ts_ms=now_ms(),
        )
        log.info("new trading period: aggregator budgets and requirements renewed")

    # ---- one auction -----------------------------------------------------------------------

    async def _auction(self, run: AuctionRun, device: Device) -> None:
        status = "terminated"
        try:
            status = await self._auction_flow(run, device)
        except asyncio.CancelledError:
            status = "terminated"
        except Exception:
            log.exception("auction failed", device=run.device_id, auction=run.auction_id)
            status = "terminated"
            if run.auction_id and not run.terminated:
                self._terminate(run, REASON_AUCTION_CLOSED)
        finally:
            self.runs.pop(run.device_id, None)
            if run.auction_id and status == "terminated":
                self._queue_close(run.auction_id, status="terminated")
                self.totals.auctions_terminated += 1

    async def _auction_flow(self, run: AuctionRun, device: Device) -> str:
        opened_lot_wh = min(device.sellable_wh, self.config.lot_wh)
        opened_reserve_mc = device.reserve_mc
        started = time.perf_counter()
        async with self._store_slots:  # bounded: opens beyond it wait here, not in the store
            run.auction_id = await self.store.open_auction(
                device_id=device.device_id,
                site=self.config.site,
                mechanism=self.mechanism.value,
                lot_wh=opened_lot_wh,
                reserve_mc=opened_reserve_mc,
                opened_ms=run.opened_ms,
            )
        self.metrics.observe_store("open_auction", (time.perf_counter() - started) * 1000.0)
        self.totals.auctions_opened += 1
        if run.terminated:  # failed while the row was being written
            return "terminated"
        reply = await self.request(0, device.device_id, QUERY, auc=run.auction_id)
        if reply is None or reply["t"] != QUERY_RESPONSE:
            return await self._finish_without_sale(run, "terminated", REASON_AUCTION_CLOSED)
        self.registry.on_state(reply)
        sellable_wh = reply.get("ereq", reply["erem"] * reply["pct"] // 10000)
        lot_wh = min(sellable_wh, self.config.lot_wh)
        if lot_wh != opened_lot_wh or reply["sale"] != opened_reserve_mc:
            self._offers.append((run.auction_id, lot_wh, reply["sale"]))
        if lot_wh < self.config.min_lot_wh or reply["health"] >= 2:
            return await self._finish_without_sale(run, "no_sale", None)
        offer = Offer(
            device_id=device.device_id,
            auction_id=run.auction_id,
            lot_wh=lot_wh,
            reserve_mc=reply["sale"],
            opened_ms=run.opened_ms,
        )
        self.history.record_offer(lot_wh, demand_wh(self.aggregators, lot_wh))
        rules: dict[str, int] = {}
        if self.mechanism == Mechanism.ASCENDING:
            rules["max_rounds"] = self.config.max_rounds
        auction = new_auction(self.mechanism, offer, **rules)
        if self.mechanism == Mechanism.ASCENDING:
            winner = await self._ascending(run, auction)
        else:
            winner = await self._second_price(run, auction)
        if winner is None:
            record_outcome(auction, self.aggregators, self.history)
            return await self._finish_without_sale(
                run, "no_sale", REASON_AUCTION_CLOSED if run.held else None
            )
        return await self._commit(run, auction, offer, winner)

    def _collect_bids(self, auction: Auction) -> None:
        """Ask every aggregator for its bid in this round (hub/market decides the prices)."""
        collect_bids(auction, self.aggregators, self.history)

    async def _put_bid(
        self, run: AuctionRun, record: BidRecord, price_mc: int | None = None
    ) -> tuple[bool, int]:
        """Put one bid to the battery; returns (accepted, reject reason)."""
        price = record.price_mc if price_mc is None else price_mc
        reply = await self.request(
            record.bidder_id,
            run.device_id,
            BID,
            auc=run.auction_id,
            price=price,
            ereq=record.energy_wh,
            round=record.round,
        )
        accepted = reply is not None and reply["t"] == BID_ACCEPT
        reason = 0 if accepted or reply is None else reply.get("reason", 0)
        if reply is not None and not accepted:
            self.metrics.bid_rejections[REASON_NAMES.get(reason, str(reason))] += 1
        self.store.record_bid(
            auction_id=run.auction_id,
            bidder_id=record.bidder_id,
            price_mc=price,
            energy_wh=record.energy_wh,
            round=record.round,
            outcome="accepted" if accepted else "rejected",
            reason=None if accepted else reason,
            ts_ms=now_ms(),
        )
        if accepted:
            run.held = True
        return accepted, reason

    def _held(self, auction: Auction, record: BidRecord) -> None:
        previous = auction.standing
        if previous is not None and previous.bidder_id != record.bidder_id:
            self.by_id[previous.bidder_id].on_outbid(auction.auction_id)
        self.by_id[record.bidder_id].on_held(auction.auction_id, record.price_mc, record.energy_wh)

    async def _ascending(self, run: AuctionRun, auction: Any) -> BidRecord | None:
        while True:
            self._collect_bids(auction)
            for record in auction.candidates():
                accepted, reason = await self._put_bid(run, record)
                if accepted:
                    self._held(auction, record)
                    auction.battery_accepted(record)
                    break
                auction.battery_rejected(record, reason)
            if auction.end_round():
                return auction.winner  # type: ignore[no-any-return]
            if self.config.round_ms:
                await asyncio.sleep(self.config.round_ms / 1000.0)

    async def _second_price(self, run: AuctionRun, auction: Any) -> BidRecord | None:
        self._collect_bids(auction)
        auction.close()
        while True:
            candidates = auction.candidates()
            if not candidates:
                return auction.winner  # type: ignore[no-any-return]
            record = candidates[0]
            accepted, reason = await self._put_bid(run, record)
            if accepted:
                self._held(auction, record)
                auction.battery_accepted(record)
            else:
                auction.battery_rejected(record, reason)

    async def _commit(
        self, run: AuctionRun, auction: Auction, offer: Offer, winner: BidRecord
    ) -> str:
        """Record the trade durably, then send BidConfirm; the battery's BidAccept completes it."""
        if run.terminated:
            # Terminated (shutdown, device failure) while its task was cancelled: on Python 3.11
            # asyncio.wait_for returns a reply that arrived together with the cancellation and
            # drops the cancel, so the flow can get here. The battery has closed the auction.
            return "terminated"
        run.committing = True
        started = time.perf_counter()
        trade, _created = await self.store.record_trade(
            auction_id=run.auction_id,
            device_id=run.device_id,
            bidder_id=winner.bidder_id,
            price_mc=winner.price_mc,
            energy_wh=winner.energy_wh,
            reserve_mc=offer.reserve_mc,
            confirmed_ms=now_ms(),
        )
        self.metrics.observe_store("record_trade", (time.perf_counter() - started) * 1000.0)
        outcome, reason = await self._send_confirm(
            winner.bidder_id, run.device_id, run.auction_id, winner.price_mc, winner.energy_wh
        )
        if outcome == "unknown":
            # No answer: the battery may have committed. The durable trade stands.
            self.metrics.counters["trades_unverified"] += 1
            self.store.record_event(
                "trade_unverified",
                device_id=run.device_id,
                auction_id=run.auction_id,
                payload={},
                ts_ms=now_ms(),
            )
            log.warning(
                "battery did not confirm the trade (no answer, or it forgot the auction); kept",
                auction=run.auction_id,
                reason=reason,
            )
        if outcome != "refused":
            self._queue_close(
                run.auction_id,
                status="cleared",
                clearing_price_mc=winner.price_mc,
                winner_id=winner.bidder_id,
                energy_wh=winner.energy_wh,
            )
            self.store.record_bid(
                auction_id=run.auction_id,
                bidder_id=winner.bidder_id,
                price_mc=winner.price_mc,
                energy_wh=winner.energy_wh,
                round=winner.round,
                outcome="confirmed",
                reason=None,
                ts_ms=now_ms(),
            )
            auction.winner = winner
            record_outcome(auction, self.aggregators, self.history)
            self.confirmed_by_bidder[winner.bidder_id] = (
                self.confirmed_by_bidder.get(winner.bidder_id, 0) + 1
            )
            totals = self.totals
            totals.auctions_cleared += 1
            totals.trades += 1
            totals.revenue_mc += winner.price_mc * winner.energy_wh // 1000
            totals.price_sum_mc += winner.price_mc
            totals.reserve_sum_mc += offer.reserve_mc
            if offer.reserve_mc:
                totals.premium_bp_sum += (
                    (winner.price_mc - offer.reserve_mc) * 10000 // offer.reserve_mc
                )
            for listener in self.trade_listeners:
                listener(
                    {
                        "auction_id": run.auction_id,
                        "device_id": run.device_id,
                        "bidder_id": winner.bidder_id,
                        "price_mc": winner.price_mc,
                        "energy_wh": winner.energy_wh,
                        "reserve_mc": offer.reserve_mc,
                    }
                )
            return "cleared"
        # The battery refused the confirmation: it never committed, the recorded trade is void.
        auction.winner = None
        record_outcome(auction, self.aggregators, self.history)
        self.abandoned_by_bidder[winner.bidder_id] = (
            self.abandoned_by_bidder.get(winner.bidder_id, 0) + 1
        )
        self.totals.trades_voided += 1
        await self.store.mark_settlement(
            trade.id,
            status="failed",
            error="battery did not commit: " + REASON_NAMES.get(reason or 0, str(reason)),
        )
        self.store.record_event(
            "trade_void",
            device_id=run.device_id,
            auction_id=run.auction_id,
            payload={"reason": reason},
            ts_ms=now_ms(),
        )
        log.warning(
            "battery did not commit a confirmed bid",
            auction=run.auction_id,
            device=run.device_id,
            reason=reason,
        )
        self._publish_request(
            0, run.device_id, TERMINATE, term=REASON_AUCTION_CLOSED, auc=run.auction_id
        )
        await self.store.close_auction(run.auction_id, status="terminated", closed_ms=now_ms())
        self.totals.auctions_terminated += 1
        return "void"

    async def _finish_without_sale(
        self, run: AuctionRun, status: str, terminate_reason: int | None
    ) -> str:
        if terminate_reason is not None:
            with contextlib.suppress(Exception):
                self._publish_request(
                    0, run.device_id, TERMINATE, term=terminate_reason, auc=run.auction_id
                )
        if status == "terminated":
            return status  # the task's finally block closes it
        self._queue_close(run.auction_id, status=status)
        self.totals.auctions_no_sale += 1
        return status

    # ---- market notices --------------------------------------------------------------------

    def reputation(self) -> dict[int, int]:
        """Bidder reputation 0..10000: confirmed trades vs. holds left unconfirmed."""
        scores = {}
        for bidder in self.by_id:
            confirmed = self.confirmed_by_bidder.get(bidder, 0)
            abandoned = self.abandoned_by_bidder.get(bidder, 0)
            scores[bidder] = 10000 * (confirmed + 1) // (confirmed + abandoned + 1)
        return scores

    async def _notices(self) -> None:
        interval_s = self.config.notice_interval_ms / 1000.0
        failing = False  # while the broker link is down, say so once, not every interval
        while not self._stopping:
            try:
                self.publish_notices()
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("could not publish market notices; retrying", error=str(exc))
                failing = True
            await asyncio.sleep(interval_s)

    def publish_notices(self) -> None:
        """Publish the retained, signed reputation and clearing-price notices."""
        site = self.config.site
        reputation = encode_notice(NOTICE_REPUTATION, self.reputation(), 0, 0, self.notice_key)
        self.link.publish(market_topic(site, REPUTATION), reputation, 1, True)
        clearing = encode_notice(
            NOTICE_CLEARING, self.history.recent_clearing_mc, 0, 0, self.notice_key
        )
        self.link.publish(market_topic(site, CLEARING), clearing, 1, True)

    # ---- reporting -------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts and prices for the status line and /api/v1/status."""
        totals = self.totals
        trades = totals.trades
        return {
            "auctions_opened": totals.auctions_opened,
            "auctions_open": len(self.runs),
            "auctions_cleared": totals.auctions_cleared,
            "auctions_no_sale": totals.auctions_no_sale,
            "auctions_terminated": totals.auctions_terminated,
            "trades": trades,
            "trades_voided": totals.trades_voided,
            "revenue_mc": totals.revenue_mc,
            "mean_price_mc": round(totals.price_sum_mc / trades) if trades else None,
            "mean_reserve_mc": round(totals.reserve_sum_mc / trades) if trades else None,
            "mean_premium_pct": round(totals.premium_bp_sum / trades / 100, 2) if trades else None,
            "median_clearing_mc": (
                statistics.median(self.history.recent_clearing_mc)
                if self.history.recent_clearing_mc
                else None
            ),
            "failure_reaction_ms_max": (
                round(max(totals.failure_reaction_ms), 3) if totals.failure_reaction_ms else None
            ),
            "aggregators": [
                {
                    "id": agg.config.aggregator_id,
                    "name": agg.config.name,
                    "strategy": agg.config.strategy,
                    "wins": agg.state.wins,
                    "losses": agg.state.losses,
                    "success_rate": round(agg.state.success_rate, 3),
                    "spent_mc": agg.state.total_spent_mc + agg.state.spent_mc,
                    "energy_bought_wh": agg.state.total_bought_wh + agg.state.energy_bought_wh,
                    "period_spent_mc": agg.state.spent_mc,
                    "period_bought_wh": agg.state.energy_bought_wh,
                }
                for agg in self.aggregators
            ],
        }
