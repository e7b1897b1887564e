"""The async driver of auction sessions against live batteries.

Each auction is an AuctionSession (hub/auctions/session.py, pure); this module carries out its
commands: it signs and publishes requests, matches the batteries' responses to them, runs the
waits the session asks for, writes to the store, and feeds the session what happened. Nothing
here decides a round, a winner or what a battery's answer means. Sessions are driven by
callbacks and timers, not one task each, so a cancellation can never race a reply.

Longer than 400 lines for a reason: request matching, the waits and the auction's life in
flight share one piece of per-auction state (LiveAuction) and are only clear read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from hub.auctions.clock import publish_time_forever
from hub.auctions.config import AuctionConfig
from hub.auctions.control import ControlError, Operator, TradingControls
from hub.auctions.messages import (
    AwaitConfirm,
    BidAnswered,
    Cancelled,
    Close,
    Command,
    ConfirmAnswered,
    Event,
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
    TimedOut,
    TradeRecorded,
    TradeTerms,
)
from hub.auctions.notices import NoticeSigner, Publisher, ReputationView, publish_notices
from hub.auctions.reconcile import Reconciler
from hub.auctions.records import AuctionRecords
from hub.auctions.rules import Offer
from hub.auctions.scheduler import Scheduler
from hub.auctions.session import AuctionSession
from hub.buyers.bidding import Buyers
from hub.devices import Device, Registry, SenderPool
from hub.events import EventKind, EventLog
from hub.metrics import Metrics
from hub.store import Store
from hub.transport import codec
from shared_etp.compat import now_ms, ticks_ms
from shared_etp.schema import (
    BID,
    BID_ACCEPT,
    BID_CONFIRM,
    QUERY,
    QUERY_RESPONSE,
    REASON_DEVICE_FAULT,
    REASON_SHUTDOWN,
    TERMINATE,
    TYPE_NAMES,
)
from shared_etp.topics import REQUEST, device_topic

__all__ = ["AuctionDriver", "LiveAuction"]

log = structlog.get_logger(__name__)


@dataclass
class LiveAuction:
    """One auction in flight at a battery: its session once its row exists, and its waits."""

    device_id: int
    opened_ms: int
    auction_id: int = 0
    session: AuctionSession | None = None
    cancel_reason: int | None = None  # cancelled while its row was being opened
    trade_id: int | None = None
    timer: asyncio.TimerHandle | None = None
    wait_started: float = 0.0
    requests: list[tuple[int, int, int]] = field(default_factory=list)  # keys in flight
    task: asyncio.Task[None] | None = None  # a store write in progress
    evidence: tuple[bytes, bytes] | None = None  # the BidConfirm and its BidAccept, signed


@dataclass
class _Request:
    live: LiveAuction
    request_type: int
    started: float
    copy: int = 0
    frame: bytes = b""  # a BidConfirm as sent: with the battery's answer, the trade's evidence


class AuctionDriver:
    """Runs auction sessions for every online battery at the site."""

    def __init__(
        self,
        config: AuctionConfig,
        *,
        link: Publisher,
        registry: Registry,
        senders: SenderPool,
        notice_key: bytes,
        store: Store,
        metrics: Metrics,
        events: EventLog,
        buyers: Buyers,
        link_up: Callable[[], bool] = lambda: True,
        shared: bool = False,
    ) -> None:
        # shared (hub workers): auctions left open are recovered per battery when this worker
        # takes it over (`acquire`), not all at start; trading periods follow the wall clock
        self.shared = shared
        self.config = config
        self.rules = config.session_rules()
        self.link = link
        self.link_up = link_up
        self.registry = registry
        self.senders = senders
        self.notices = NoticeSigner(notice_key)  # notice_key: the root, derive_key(master, 0)
        # what the reputation notice publishes (None: the hub's own figures); the settlement
        # service sets it to the ledger's view (hub.settlement.reputation)
        self.reputation_view: ReputationView | None = None
        # provisioned batteries (the runtime sets it to the keyring's): they get the hub's time
        # before they are seen, as a board without a clock publishes nothing until it has it
        self.provisioned: Callable[[], Iterable[int]] = lambda: ()
        self.store = store
        self.metrics = metrics
        self.buyers = buyers
        self.runs: dict[int, LiveAuction] = {}  # device id -> auction in flight
        self.controls = TradingControls()
        self.scheduler = Scheduler(
            config, registry, buyers, self._new_period, self.controls,
            aligned=now_ms if shared else None,
        )
        self.on_new_period: Callable[[], None] | None = None  # hub workers: shares restart
        self.records = AuctionRecords(store, metrics, events)
        self.operator = Operator(self.controls, buyers, registry, self._operator_action)
        self.totals = self.records.totals
        self.reconciler = Reconciler(
            send=self._send_terminate,
            registry=registry,
            records=self.records,
            wait_ms=config.ask_wait_ms,
            backoff_max_ms=config.ask_backoff_max_ms,
        )
        self._requests: dict[tuple[int, int, int], _Request] = {}
        self._probes: set[tuple[int, int, int]] = set()  # Queries asking only "are you there?"
        self._to_probe: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._store_slots = asyncio.Semaphore(config.store_concurrency)
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self.leads = True  # hub workers: whether this one announces site-wide facts

    @property
    def aggregators(self) -> list[Any]:
        """The site's aggregators (for status lines)."""
        return self.buyers.aggregators

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve auctions a previous run left open, then schedule auctions and notices."""
        self.records.start()
        await self.restore_controls()
        self._aggregator_updates()
        if not self.shared:
            await self.recover()
        self._tasks.append(asyncio.create_task(self._schedule(), name="auction-scheduler"))
        self._tasks.append(asyncio.create_task(self._notices(), name="market-notices"))
        self._tasks.append(asyncio.create_task(publish_time_forever(
            self.link, self.config.site, self.notices, self._time_boards, self.link_up),
            name="time-notices"))

    async def restore_controls(self, page: int = 1000) -> None:
        """Replay the stored operator_action events, oldest first, so the operators' controls
        survive a restart; one that no longer applies is logged and skipped."""
        events = self.records.events
        after, restored = 0, 0
        while True:
            batch = await events.read(after, limit=page, kinds=[EventKind.OPERATOR_ACTION])
            for event in batch:
                payload = event.payload
                try:
                    self.operator.restore(
                        str(payload.get("action")), event.device_id, payload.get("by") or {},
                        payload.get("params") or {}, event.ts_ms,
                    )
                    restored += 1
                except (ControlError, TypeError, ValueError) as exc:
                    log.warning("operator action not restored", seq=event.seq,
                                action=payload.get("action"), error=str(exc))
            if len(batch) < page:
                break
            after = batch[-1].seq
        if restored:
            log.info("operator controls restored", actions=restored,
                     trading_paused=self.controls.paused is not None,
                     aggregators_paused=sorted(self.buyers.paused),
                     out_of_service=sorted(self.controls.out_of_service))

    async def stop(self) -> None:
        """Stop opening auctions; terminate open ones (trades being confirmed finish)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for live in list(self.runs.values()):
            self.cancel(live.device_id, REASON_SHUTDOWN)
        # Trades being confirmed get their answers' time; with the link down none can come:
        # they stay open in the store and the next start asks their batteries.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 5 if self.link_up() else 0)
        for live in self.runs.values():  # left open in the store: asked about at next start
            if live.timer is not None:
                live.timer.cancel()
        await self.reconciler.stop()
        await self.records.stop()

    async def recover(self, device_ids: set[int] | None = None) -> None:
        """Resolve what a previous run left undecided. An auction left open without a trade is
        closed, and its battery told. One with a recorded trade (the hub stopped before the
        battery's answer to the confirm came, or before the confirm left) closes with that trade
        unverified; then every unverified trade is put to its battery (the reconciler).
        `device_ids`: only these batteries' (a worker taking batteries over from another)."""
        open_auctions = [
            row for row in await self.store.open_auctions()
            if device_ids is None
            or (row.device_id in device_ids and row.device_id not in self.runs)
        ]
        trades = {
            trade.auction_id: trade
            for trade in await self.store.list_trades(status=("recorded", "unverified"))
            if device_ids is None
            or (trade.device_id in device_ids and (trade.device_id, trade.auction_id)
                not in self.reconciler.questions)
        }
        closed_ms = now_ms()
        for row in open_auctions:
            trade = trades.get(row.id)
            if trade is None:
                await self.store.close_auction(row.id, status="terminated", closed_ms=closed_ms)
                self.reconciler.tell(row.device_id, row.id, REASON_SHUTDOWN)
                self.totals.auctions_terminated += 1
                outcome = "terminated"
            else:
                await self.store.close_auction(
                    row.id,
                    status="cleared",
                    clearing_price_mc=trade.price_mc,
                    winner_id=trade.bidder_id,
                    energy_wh=trade.energy_wh,
                    closed_ms=closed_ms,
                    trade_status="unverified",
                )
                outcome = "unverified"
            self.records.event(EventKind.AUCTION_RECOVERED, row.device_id, row.id, outcome=outcome)
            log.info("auction left open by the last run closed", auction=row.id, outcome=outcome)
        for trade in trades.values():
            terms = TradeTerms(trade.bidder_id, trade.price_mc, trade.energy_wh, trade.reserve_mc)
            self.reconciler.ask(trade.device_id, trade.auction_id, trade.id, terms)
        if trades:
            log.warning(
                "unverified trades from the last run: asking their batteries", count=len(trades)
            )

    # ---- opening ---------------------------------------------------------------------------

    async def _schedule(self) -> None:
        tick_s = self.config.scheduler_tick_ms / 1000.0
        link_was_up = True
        while not self._stopping:
            await asyncio.sleep(tick_s)
            if not self.link_up():
                link_was_up = False
                continue
            if not link_was_up:
                link_was_up = True
                self.reconciler.wake()  # questions to batteries: at once after an outage
            self.reconciler.due()
            if self._to_probe:
                self._send_probes()
            try:
                for device in self.scheduler.due(ticks_ms(), self.runs, len(self.runs)):
                    self._open(device)
            except Exception:
                log.exception("auction scheduling failed")

    def release(self, device_ids: set[int]) -> None:
        """Hub workers: these batteries moved to another worker (or this one lost its
        leases): end their auctions here and stop asking them; the new owner recovers what is
        left open from the store."""
        for device_id in device_ids:
            self.cancel(device_id, REASON_SHUTDOWN)
            self.reconciler.forget(device_id)
            self._to_probe.discard(device_id)

    def _new_period(self, period: int) -> None:
        if self.on_new_period is not None:
            self.on_new_period()
        if self.shared and not self.leads:
            return  # one worker (the leader) tells the site a period began
        self.records.event(EventKind.TRADING_PERIOD, None, None, period=period)
        self._aggregator_updates()
        log.info("new trading period: aggregator budgets and requirements renewed")

    def _aggregator_updates(self) -> None:
        """Each aggregator's configuration and standing (at start and each new period): what
        the site's buyers are, for operators and for the report's counterfactual."""
        for agg in self.buyers.aggregators:
            self.records.event(
                EventKind.AGGREGATOR_UPDATE,
                None,
                None,
                aggregator_id=agg.aggregator_id,
                config=asdict(agg.config),
                state=agg.state.snapshot(),
            )

    def _operator_action(
        self, action: str, device_id: int | None, by: dict[str, Any], params: dict[str, Any]
    ) -> None:
        """An operator command carried out: who, what and with which parameters."""
        self.records.event(
            EventKind.OPERATOR_ACTION, device_id, None, action=action, by=by, params=params
        )
        log.info("operator action", action=action, by=by, params=params)

    def _track(self, live: LiveAuction) -> None:
        self.runs[live.device_id] = live
        self._idle.clear()

    def _open(self, device: Device) -> None:
        live = LiveAuction(device.device_id, now_ms())
        self._track(live)
        live.task = asyncio.create_task(
            self._open_row(live, min(device.sellable_wh, self.config.lot_wh), device.reserve_mc),
            name=f"auction-{device.device_id}",
        )

    async def _open_row(self, live: LiveAuction, lot_wh: int, reserve_mc: int) -> None:
        started = time.perf_counter()
        try:
            async with self._store_slots:  # opens beyond it wait here, not in the store
                live.auction_id = await self.store.open_auction(
                    device_id=live.device_id,
                    site=self.config.site,
                    mechanism=self.config.mechanism.value,
                    lot_wh=lot_wh,
                    reserve_mc=reserve_mc,
                    opened_ms=live.opened_ms,
                )
        except Exception as exc:
            self.metrics.counters["store_write_errors"] += 1
            log.warning("could not open an auction", device=live.device_id, error=str(exc))
            self._untrack(live)
            return
        self.metrics.observe_store("open_auction", (time.perf_counter() - started) * 1000.0)
        self.totals.auctions_opened += 1
        self.records.event(
            EventKind.AUCTION_OPENED,
            live.device_id,
            live.auction_id,
            mechanism=self.config.mechanism.value,
            lot_wh=lot_wh,
            reserve_mc=reserve_mc,
        )
        offer = Offer(live.device_id, live.auction_id, max(1, lot_wh), reserve_mc, live.opened_ms)
        live.session = AuctionSession(offer, self.rules, self.buyers)
        if live.cancel_reason is not None:  # failed or shut down while the row was written
            self._run(live, live.session.start())
            self._feed(live, Cancelled(live.cancel_reason))
            return
        self._run(live, live.session.start())

    # ---- carrying out commands -------------------------------------------------------------

    def _feed(self, live: LiveAuction, event: Event) -> None:
        assert live.session is not None
        self._run(live, live.session.handle(event))

    def _run(self, live: LiveAuction, commands: list[Command]) -> None:
        session = live.session
        assert session is not None
        todo = deque(commands)
        while todo:
            command = todo.popleft()
            if isinstance(command, SendQuery):
                self._request(live, 0, QUERY, self.config.response_timeout_ms, auc=live.auction_id)
            elif isinstance(command, SendBid):
                self.records.event(
                    EventKind.BID_PLACED,
                    live.device_id,
                    live.auction_id,
                    bidder_id=command.bidder_id,
                    price_mc=command.price_mc,
                    energy_wh=command.energy_wh,
                    round=command.round,
                )
                self._request(
                    live,
                    command.bidder_id,
                    BID,
                    self.config.response_timeout_ms,
                    auc=live.auction_id,
                    price=command.price_mc,
                    ereq=command.energy_wh,
                    round=command.round,
                )
            elif isinstance(command, RecordBid):
                self.records.bid(live.auction_id, live.device_id, command)
            elif isinstance(command, RecordOffer):
                self.records.offer(live.auction_id, command.lot_wh, command.reserve_mc)
            elif isinstance(command, NextRound):
                if command.pause and self.config.round_ms:
                    self._wait(live, self.config.round_ms, RoundStarted())
                else:
                    todo.extend(session.handle(RoundStarted()))
            elif isinstance(command, RecordTrade):
                live.task = asyncio.create_task(self._record_trade(live, command.terms))
            elif isinstance(command, SendConfirm):
                terms = command.terms
                self._request(
                    live,
                    terms.bidder_id,
                    BID_CONFIRM,
                    command.wait_ms,
                    copy=command.copy,
                    auc=live.auction_id,
                    price=terms.price_mc,
                    ereq=terms.energy_wh,
                )
            elif isinstance(command, AwaitConfirm):
                self._wait(live, command.wait_ms, TimedOut())
            elif isinstance(command, SendTerminate):
                self.reconciler.tell(live.device_id, live.auction_id, command.reason)
            elif isinstance(command, Close):
                self._closed(live, command)

    def _send(self, src: int, device_id: int, msg_type: int, **fields: int) -> int:
        """Sign and publish one request; returns its message id (raises if the link is down)."""
        frame, msg_id = self._sign(src, device_id, msg_type, **fields)
        self._publish(device_id, msg_type, frame)
        return msg_id

    def _send_terminate(self, src: int, device_id: int, term: int, auction_id: int
                        ) -> tuple[int, bytes]:
        frame, msg_id = self._sign(src, device_id, TERMINATE, term=term, auc=auction_id)
        self._publish(device_id, TERMINATE, frame)
        return msg_id, frame

    def _sign(self, src: int, device_id: int, msg_type: int, **fields: int) -> tuple[bytes, int]:
        frame, msg = self.senders.get(src, device_id).frame(msg_type, dst=device_id, **fields)
        return frame, int(msg["id"])

    def _publish(self, device_id: int, msg_type: int, frame: bytes) -> None:
        self.link.publish(device_topic(self.config.site, device_id, REQUEST), frame, 1)
        self.metrics.messages_out[TYPE_NAMES[msg_type]] += 1

    def _request(
        self, live: LiveAuction, src: int, msg_type: int, wait_ms: int, copy: int = 0, **fields: int
    ) -> None:
        """Send a request and wait `wait_ms` for its answer (on_response) or a timeout. A
        publish that fails (link down) is answered by the timeout like a lost frame."""
        frame, msg_id = self._sign(src, live.device_id, msg_type, **fields)
        key = (live.device_id, src, msg_id)
        kept = frame if msg_type == BID_CONFIRM else b""
        self._requests[key] = _Request(live, msg_type, time.perf_counter(), copy, kept)
        live.requests.append(key)
        try:
            self._publish(live.device_id, msg_type, frame)
        except Exception as exc:
            self.metrics.counters["publish_failures"] += 1
            log.debug("request not sent", device=live.device_id, error=str(exc))
        self._wait(live, wait_ms, TimedOut())

    def _wait(self, live: LiveAuction, wait_ms: int, event: Event) -> None:
        if live.timer is not None:
            live.timer.cancel()
        loop = asyncio.get_running_loop()
        live.wait_started = loop.time()
        live.timer = loop.call_later(wait_ms / 1000.0, self._waited, live, event)

    def _waited(self, live: LiveAuction, event: Event) -> None:
        live.timer = None
        if isinstance(event, TimedOut) and live.requests:
            waited_ms = (asyncio.get_running_loop().time() - live.wait_started) * 1000.0
            latest = self._requests[live.requests[-1]]
            self.metrics.observe_timeout(latest.request_type, waited_ms)
            for key in list(live.requests):
                if self._requests[key].request_type != BID_CONFIRM:  # copies stay answerable
                    self._forget(live, key)
        self._feed(live, event)

    def _forget(self, live: LiveAuction, key: tuple[int, int, int]) -> None:
        self._requests.pop(key, None)
        with contextlib.suppress(ValueError):
            live.requests.remove(key)

    def probe(self, device_id: int) -> None:
        """Ask a battery known from before (a retained birth) for its state now, with a Query
        outside any auction: its answer shows it alive at once, instead of after its next
        status, so trading resumes right after a hub restart. Sent by the scheduler's next
        tick with the link up; unanswered, nothing happens."""
        self._to_probe.add(device_id)

    def _send_probes(self) -> None:
        if len(self._probes) > 100_000:
            self._probes.clear()  # answers that never came
        devices, self._to_probe = self._to_probe, set()
        for device_id in sorted(devices):
            try:
                msg_id = self._send(0, device_id, QUERY)
            except Exception as exc:
                log.debug("probe not sent", device=device_id, error=str(exc))
                continue
            self._probes.add((device_id, 0, msg_id))

    # ---- inbound ---------------------------------------------------------------------------

    def on_response(self, device_id: int, msg: dict[str, int], frame: bytes = b"") -> None:
        """An authenticated frame from a device's resp topic (`msg`, as received: `frame`):
        the answer to a request."""
        key = (device_id, msg["dst"], msg["id"])
        request = self._requests.get(key)
        if request is None and self.reconciler.on_answer(device_id, msg, frame):
            return
        if request is None and key in self._probes:
            self._probes.discard(key)
            if msg["t"] == QUERY_RESPONSE:
                self.registry.on_state(codec.battery_state(msg))
            return
        if request is None:
            self.metrics.counters["unmatched_responses"] += 1
            return
        live = request.live
        self._forget(live, key)
        self.metrics.observe_response(
            request.request_type, (time.perf_counter() - request.started) * 1000.0
        )
        if live.timer is not None:
            live.timer.cancel()
            live.timer = None
        msg_type = msg["t"]
        event: Event
        if request.request_type == QUERY:
            if msg_type == QUERY_RESPONSE:
                state = codec.battery_state(msg)
                self.registry.on_state(state)
                event = QueryAnswered(state.sellable_wh, state.reserve_mc or 0, state.health)
                self.records.event(
                    EventKind.QUERY_ANSWERED,
                    device_id,
                    live.auction_id,
                    sellable_wh=event.sellable_wh,
                    reserve_mc=event.reserve_mc,
                    health=event.health,
                )
            else:
                event = TimedOut()  # no usable offer
        elif request.request_type == BID:
            event = BidAnswered(msg_type == BID_ACCEPT, msg.get("reason", 0))
        else:
            waited_ms = int((asyncio.get_running_loop().time() - live.wait_started) * 1000.0)
            event = ConfirmAnswered(
                request.copy, msg_type == BID_ACCEPT, msg.get("reason", 0), waited_ms
            )
            if event.accepted and request.frame and frame:
                live.evidence = (request.frame, frame)
            self.records.event(
                EventKind.CONFIRM_ANSWERED,
                device_id,
                live.auction_id,
                copy=event.copy,
                accepted=event.accepted,
                reason=event.reason,
            )
        self._feed(live, event)

    def cancel(self, device_id: int, reason: int) -> None:
        """End the device's auction now, unless its recorded trade is being confirmed."""
        live = self.runs.get(device_id)
        if live is None:
            return
        if live.session is None:
            live.cancel_reason = reason  # its row is being opened: cancelled right after
        else:
            self._feed(live, Cancelled(reason))

    def on_device_failure(self, device: Device, reason: int, source: str) -> None:
        """Registry callback: end the device's auction now (well inside the 200 ms deadline)."""
        started = time.perf_counter()
        self.cancel(device.device_id, REASON_DEVICE_FAULT)
        self.totals.failure_reaction_ms.append((time.perf_counter() - started) * 1000.0)
        self.metrics.counters["device_failures"] += 1

    # ---- store -----------------------------------------------------------------------------

    async def _record_trade(self, live: LiveAuction, terms: TradeTerms) -> None:
        """Write the trade durably; only then may its BidConfirm leave."""
        started = time.perf_counter()
        try:
            trade, _created = await self.store.record_trade(
                auction_id=live.auction_id,
                device_id=live.device_id,
                bidder_id=terms.bidder_id,
                price_mc=terms.price_mc,
                energy_wh=terms.energy_wh,
                reserve_mc=terms.reserve_mc,
                confirmed_ms=now_ms(),
            )
        except Exception as exc:
            self.metrics.counters["store_write_errors"] += 1
            log.error(
                "could not record a trade; auction terminated",
                auction=live.auction_id,
                error=str(exc),
            )
            self._feed(live, RecordFailed())
            return
        self.metrics.observe_store("record_trade", (time.perf_counter() - started) * 1000.0)
        live.trade_id = trade.id
        self.records.event(
            EventKind.TRADE_RECORDED,
            live.device_id,
            live.auction_id,
            trade_id=trade.id,
            bidder_id=terms.bidder_id,
            price_mc=terms.price_mc,
            energy_wh=terms.energy_wh,
            reserve_mc=terms.reserve_mc,
        )
        self._feed(live, TradeRecorded())

    def _closed(self, live: LiveAuction, close: Close) -> None:
        """The session is over: book it and let the device auction again."""
        if live.timer is not None:
            live.timer.cancel()
            live.timer = None
        for key in list(live.requests):
            self._forget(live, key)
        self._untrack(live)
        self.records.closed(live.auction_id, live.device_id, close, evidence=live.evidence)
        if close.outcome is Outcome.UNVERIFIED and close.terms is not None:
            assert live.trade_id is not None  # UNVERIFIED: its trade was recorded
            self.reconciler.ask(live.device_id, live.auction_id, live.trade_id, close.terms)

    def _untrack(self, live: LiveAuction) -> None:
        if self.runs.get(live.device_id) is live:
            del self.runs[live.device_id]
        if not self.runs:
            self._idle.set()

    # ---- notices and status ----------------------------------------------------------------

    async def _notices(self) -> None:
        interval_s = self.config.notice_interval_ms / 1000.0
        while not self._stopping:
            if self.link_up():
                try:
                    boards = self.registry.devices  # every board seen, online or not (retained)
                    publish_notices(
                        self.link, self.config.site, self.notices, self.buyers, boards,
                        self.reputation_view,
                    )
                except Exception as exc:
                    log.warning("could not publish market notices", error=str(exc))
            await asyncio.sleep(interval_s)

    def _time_boards(self) -> set[int]:
        """The boards given the hub's time: every one seen, every one provisioned (hub
        workers: each its own batteries, the leader the provisioned ones too)."""
        return set(self.registry.devices).union(self.provisioned() if self.leads else ())

    def summary(self) -> dict[str, Any]:
        """Counts and prices for the status line and /api/v1/status, and (at most 50) trades
        without their battery's word: the ones it could not decide first, then those asked."""
        summary = self.totals.summary(self.buyers, open_now=len(self.runs))
        waiting = [(q, None) for q in self.reconciler.unverified]
        summary["unverified_trades"] = [
            {
                "auction_id": q.auction_id,
                "device_id": q.device_id,
                "trade_id": q.trade_id,
                "bidder_id": q.sender,
                "asked": q.attempts,
                "problem": problem,  # None: still asking; else what an operator must look at
            }
            for q, problem in [*self.reconciler.unresolvable, *waiting][:50]
        ]
        return summary
