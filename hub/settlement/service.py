"""SettlementService: the hub task that pays verified trades on the ledger, from the store's
settlement outbox (pending -> submitted -> settled | failed), batching trades into
transactions, and never paying a trade twice (see hub/settlement/README.md)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.compute_budget import ID as COMPUTE_BUDGET_PROGRAM
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from hub.events import EventKind
from hub.settlement.cluster import Cluster, ClusterUnavailableError, SignatureState
from hub.settlement.disputes import Disputes
from hub.settlement.ledger import SYSTEM_PROGRAM, Party, PartyNotReady, SiteSetupError
from hub.settlement.program import TradeInput
from hub.settlement.reputation import ChainReputation
from hub.settlement.site import MarketSite
from hub.settlement.tables import LookupTables
from hub.store import Store, TradeRow
from hub.store.models import SETTLEMENT_STATUSES, SETTLEMENTS, TRADES
from hub.store.validate import now_ms, to_row

__all__ = ["SettlementConfig", "SettlementService", "custom_error_code", "trade_evidence_hash"]

log = structlog.get_logger(__name__)

TRANSACTION_SIZE_LIMIT = 1232  # bytes of a serialized transaction
MAX_TRADES_PER_INSTRUCTION = 9  # 5 fixed + 6 per trade accounts <= 64 (the program's bound)
FULL_BATCH = 4  # trades a legacy transaction always holds (different sellers): "full enough"
MAX_COMPUTE_UNITS = 1_400_000  # per transaction (the runtime's cap): the simulation's limit
LAMPORTS_PER_SIGNATURE = 5000
ALREADY_INITIALIZED = 6006  # the trade's record exists: it was settled already
_FINAL = ("confirmed", "finalized")
_PLACEHOLDER_HASH = Hash.default()


class _TransientError(Exception):
    """A failure that is not a trade's fault (e.g. the settler cannot pay fees): back off."""


@dataclass(frozen=True)
class SettlementConfig:
    """How the service works (from ETP_SETTLEMENT_* settings)."""

    max_priority_fee_micro_lamports: int = 1_000_000
    compute_unit_margin_pct: int = 10
    rows_per_round: int = 500
    max_in_flight: int = 64
    poll_interval_s: float = 0.25
    rebroadcast_s: float = 2.0
    # a batch smaller than FULL_BATCH waits this long for more trades (fewer fees per trade)
    linger_ms: int = 1000
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    # accounts repeated by settlements go into address lookup tables (v0 transactions)
    lookup_tables: bool = True
    reputation_interval_s: float = 3.0  # aggregators' Reputation accounts read this often


@dataclass
class _Item:
    """One trade to settle, with its ledger accounts."""

    trade: TradeRow
    record: Pubkey
    buyer: Party
    seller: Party
    trade_input: TradeInput

    @property
    def trade_id(self) -> int:
        return self.trade.id


@dataclass
class _Flight:
    """A sent transaction being tracked until it lands or its blockhash expires."""

    signature: Signature
    items: list[_Item]
    transaction: VersionedTransaction | None  # None: sent before a restart (bytes unknown)
    last_valid_block_height: int
    sent_at: float = field(default_factory=time.monotonic)


def trade_evidence_hash(site: str, trade: TradeRow) -> bytes:
    """The 32-byte evidence stored in the trade's record: sha256 of the signed frames that
    verified the trade, as sent and received (the hub's BidConfirm, or the Terminate that
    asked, then the battery's BidAccept; both CBOR, so the concatenation is unambiguous).
    A trade verified before the hub kept frames: sha256 of the trade as the hub recorded it
    (site, ids, device, buyer, price, energy, confirmation time)."""
    if trade.evidence_request and trade.evidence_answer:
        return hashlib.sha256(trade.evidence_request + trade.evidence_answer).digest()
    text = (
        f"etp-trade|{site}|{trade.id}|{trade.auction_id}|{trade.device_id}|{trade.bidder_id}|"
        f"{trade.price_mc}|{trade.energy_wh}|{trade.confirmed_ms}"
    )
    return hashlib.sha256(text.encode()).digest()


def custom_error_code(err: object) -> int | None:
    """The program's error code in a runtime error (JSON-RPC form
    {"InstructionError": [i, {"Custom": n}]}, or its text), else None."""
    if isinstance(err, dict):
        detail = err.get("InstructionError")
        if isinstance(detail, list) and len(detail) == 2 and isinstance(detail[1], dict):
            code = detail[1].get("Custom")
            return code if isinstance(code, int) else None
        return None
    match = re.search(r"Custom\D{0,4}(\d+)", str(err))
    return int(match.group(1)) if match else None


class SettlementService:
    """Drains the settlement outbox onto a cluster. start() launches the task, stop() ends it.

    Each round: track sent transactions (settled, refused, expired), then sign and send new
    batches of pending rows. A cluster that does not answer leaves rows pending and the
    service backs off (exponentially, capped) until it answers again; trading is unaffected.
    """

    def __init__(
        self,
        store: Store,
        cluster: Cluster,
        site: MarketSite,
        *,
        site_name: str,
        aggregator_ids: Iterable[int] = (),
        config: SettlementConfig | None = None,
        emit: Callable[..., None] | None = None,
        tables_file: Path | None = None,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.site = site
        self.site_name = site_name
        self.config = config or SettlementConfig()
        self._aggregator_ids = list(aggregator_ids)
        self._emit = emit or (lambda *_a, **_k: None)
        self.tables = (LookupTables(cluster, site.settler, tables_file)
                       if self.config.lookup_tables else None)
        self._tables_now: list[AddressLookupTableAccount] = []
        self.disputes = Disputes(store, cluster, site, self._emit)
        self.reputation = ChainReputation(cluster, site, bidder_ids=self._aggregator_ids,
                                          interval_s=self.config.reputation_interval_s)
        self._flights: dict[Signature, _Flight] = {}
        self._busy_ids: set[int] = set()
        self._recovered = False
        self._task: asyncio.Task[None] | None = None
        self._counts_at = 0.0
        self.available = True
        self.last_error: str | None = None
        self.waiting: dict[str, int] = {}  # why trades wait for a party -> how many
        self._scan_from = 0
        self._told: set[str] = set()  # reasons to wait already logged
        self.counts: dict[str, int] = dict.fromkeys(SETTLEMENT_STATUSES, 0)
        self.stats: dict[str, int] = {
            "transactions": 0,
            "trades_sent": 0,
            "trades_settled": 0,
            "trades_failed": 0,
            "compute_units": 0,
            "fee_lamports": 0,
            "resigned": 0,
            "outages": 0,
        }

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start draining the outbox in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="settlement")
        await self.reputation.start()

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until nothing is pending or submitted, while the ledger
        is usable: a hub that stops after its market stopped pays what it traded first."""
        deadline = time.monotonic() + timeout_s
        while self._task is not None and self.available and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await self._refresh_counts(force=True)
            if self.counts.get("pending", 0) == 0 and self.counts.get("submitted", 0) == 0:
                return
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Stop the task (rows in flight stay 'submitted' with their signature: the next
        start checks them before sending anything again) and close the cluster."""
        await self.reputation.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._flights:  # one last look: what landed is recorded as settled now
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._track(), 2.0)
        with contextlib.suppress(Exception):
            await self.cluster.close()

    def summary(self) -> dict[str, Any]:
        """Counts by status (refreshed about once a second) and the last error."""
        return {**self.counts, "last_error": self.last_error, "available": self.available,
                "waiting": dict(self.waiting)}

    async def _run(self) -> None:
        backoff = self.config.backoff_initial_s
        while True:
            try:
                busy = await self.settle_round()
            except (ClusterUnavailableError, SiteSetupError, _TransientError) as exc:
                if self.available:
                    self.stats["outages"] += 1
                    log.warning("settlement paused: ledger not usable", error=str(exc),
                                retry_s=backoff)
                self.available = False
                self.last_error = str(exc)
                await self._refresh_counts(force=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.backoff_max_s)
                continue
            except Exception as exc:  # a bug or a store failure: say so, keep the hub up
                log.exception("settlement round failed", error=str(exc))
                self.last_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.backoff_max_s)
                continue
            if not self.available:
                log.info("settlement resumed: the ledger answers again")
            self.available = True
            backoff = self.config.backoff_initial_s
            await asyncio.sleep(0 if busy else self.config.poll_interval_s)

    # ---- one round -------------------------------------------------------------------------

    async def settle_round(self) -> bool:
        """Track, then send; True if there is more to do at once."""
        if not self.site.ready:
            await self.site.set_up(self._aggregator_ids)
        if not self._recovered:
            await self._recover()
            self._recovered = True
        await self._track()
        sent = 0
        if len(self._flights) < self.config.max_in_flight:
            sent = await self._submit()
        await self._refresh_counts()
        return sent > 0 or bool(self._flights)

    async def _recover(self) -> None:
        """Rows 'submitted' before a restart: tracked under their stored signature (as if
        sent just now: re-signed only after a blockhash lifetime, unless they landed)."""
        rows = await self.store.pending_settlements(100_000, statuses=("submitted",))
        if not rows:
            return
        trades = await self._load_trades([row.trade_id for row in rows])
        height = await self.cluster.block_height()
        # a new embedded ledger never saw them: no need to wait for them to expire
        lifetime = -1 if self.cluster.name == "embedded" else 151
        by_signature: dict[str, list[_Item]] = {}
        for row in rows:
            trade = trades.get(row.trade_id)
            if trade is None or row.signature is None:
                await self._mark([row.trade_id], "pending", error="resending: no signature kept")
                continue
            by_signature.setdefault(row.signature, []).append(await self._item(trade))
        for text, items in by_signature.items():
            signature = Signature.from_string(text)
            self._flights[signature] = _Flight(signature, items, None, height + lifetime)
            self._busy_ids.update(item.trade_id for item in items)
        log.info("settlement: checking transactions sent before the restart",
                 transactions=len(by_signature))

    async def _track(self) -> None:
        """Sent transactions: landed -> settled; refused -> find the trade at fault; expired
        without landing -> back to pending after checking the trades' records."""
        if not self._flights:
            return
        signatures = list(self._flights)
        states = await self.cluster.signature_states(signatures)
        height = await self.cluster.block_height()
        now = time.monotonic()
        for signature, state in zip(signatures, states, strict=True):
            flight = self._flights[signature]
            # a flight is forgotten only once handled: an outage half-way leaves it tracked
            if state.confirmation in _FINAL:
                if state.err is None:
                    await self._settled(flight.items, signature)
                else:
                    await self._refused(flight.items, state.err)
                self._forget(flight)
            elif height > flight.last_valid_block_height:
                await self._expired(flight, state)
                self._forget(flight)
            elif (flight.transaction is not None
                  and now - flight.sent_at > self.config.rebroadcast_s):
                flight.sent_at = now
                await self.cluster.send(flight.transaction)  # same bytes: lands at most once

    async def _expired(self, flight: _Flight, state: SignatureState) -> None:
        """The blockhash expired and the signature was not seen: a trade whose record exists
        was paid (by this or an earlier transaction); the others are re-signed later."""
        exist = await self.cluster.accounts_exist([item.record for item in flight.items])
        landed = [item for item, found in zip(flight.items, exist, strict=True) if found]
        again = [item for item, found in zip(flight.items, exist, strict=True) if not found]
        if landed:
            await self._settled(landed, None)
        if again:
            self.stats["resigned"] += len(again)
            await self._mark([i.trade_id for i in again], "pending",
                             error="transaction expired before it landed; re-signing", items=again)

    async def _submit(self) -> int:
        """Sign and send batches of pending rows; returns how many trades were sent."""
        limit = self.config.rows_per_round
        if self._scan_from == 0:  # a pass over the whole outbox starts
            self.waiting = {}
        rows = await self.store.pending_settlements(limit, after_trade_id=self._scan_from)
        # page on through the outbox next round: rows that wait for a party (or in flight)
        # never hold back the ones after them
        self._scan_from = rows[-1].trade_id if len(rows) == limit else 0
        rows = [row for row in rows if row.trade_id not in self._busy_ids]
        if not rows:
            return 0
        waited_since = {row.trade_id: row.updated_ms for row in rows}
        trades = await self._load_trades([row.trade_id for row in rows])
        items = []
        for row in rows:
            trade = trades.get(row.trade_id)
            if trade is None or trade.status != "verified":
                status = "missing" if trade is None else trade.status
                await self._mark([row.trade_id], "failed",
                                 error=f"trade is {status}, not verified: never settled")
                continue
            try:
                items.append(await self._item(trade))
            except PartyNotReady as exc:  # stays pending; settles once the party is ready
                reason = str(exc)
                if reason not in self._told:
                    self._told.add(reason)
                    log.warning("settlement waits for a party", trade_id=trade.id, reason=reason)
                self.waiting[reason] = self.waiting.get(reason, 0) + 1
            except SiteSetupError as exc:
                if exc.err is None or custom_error_code(exc.err) is None:
                    raise  # the ledger, not the trade: back off and try again
                await self._mark([row.trade_id], "failed",
                                 error=f"a party of the trade cannot be set up: {exc}")
        await self._use_tables(items)
        items.sort(key=lambda item: (bytes(item.buyer.pubkey), bytes(item.seller.pubkey)))
        sent = 0
        free = self.config.max_in_flight - len(self._flights)
        young = now_ms() - self.config.linger_ms
        for batch in self._pack(items):
            if free <= 0:
                break
            if len(batch) < FULL_BATCH and min(waited_since[i.trade_id] for i in batch) > young:
                continue  # a small batch of fresh trades: wait a little for company
            sent += await self._send_batch(batch)
            free -= 1
        return sent

    async def _send_batch(self, batch: list[_Item], isolate: bool = True) -> int:
        """Simulate (for the compute units and to catch a refused trade), sign, record
        'submitted' with the signature, send. Returns the trades sent."""
        writable = [item.buyer.escrow or item.buyer.reputation for item in batch]
        price = min(await self.cluster.priority_fee(writable),
                    self.config.max_priority_fee_micro_lamports)
        recent = await self.cluster.latest_blockhash()
        probe = self._transaction(batch, recent.blockhash, MAX_COMPUTE_UNITS, price)
        err, units = await self.cluster.simulate(probe)
        if err is not None:
            if isolate:
                await self._refused(batch, err)
                return 0
            raise _TransientError(f"simulation refused a batch: {err}")
        limit = units * (100 + self.config.compute_unit_margin_pct) // 100 + 300
        transaction = self._transaction(batch, recent.blockhash, limit, price)
        signature = transaction.signatures[0]
        # tracked, and its signature stored, before the transaction leaves: a crash in between
        # leaves a 'submitted' row the next start checks (it never sends blindly); a store
        # failure leaves a tracked flight that expires unsent and goes back to pending
        self._flights[signature] = _Flight(signature, batch, transaction,
                                           recent.last_valid_block_height)
        self._busy_ids.update(item.trade_id for item in batch)
        await self._mark([i.trade_id for i in batch], "submitted", signature=str(signature),
                         items=batch)
        self.stats["transactions"] += 1
        self.stats["trades_sent"] += len(batch)
        self.stats["compute_units"] += units
        self.stats["fee_lamports"] += LAMPORTS_PER_SIGNATURE + -(-price * limit // 10**6)
        await self.cluster.send(transaction)
        return len(batch)

    async def _refused(self, batch: list[_Item], err: object) -> None:
        """A batch the program refused: find the trades at fault (each simulated alone).
        AlreadyInitialized with an existing record = settled before; another program error =
        failed with its name; the rest go back to pending (re-sent in the next batch)."""
        if custom_error_code(err) is None:
            await self._mark([i.trade_id for i in batch], "pending", error=str(err), items=batch)
            raise _TransientError(f"the ledger refused a settlement transaction: {err}")
        recent = await self.cluster.latest_blockhash()
        good: list[_Item] = []
        for item in batch:
            single_err = err
            if len(batch) > 1:
                single_err, _ = await self.cluster.simulate(
                    self._transaction([item], recent.blockhash, MAX_COMPUTE_UNITS, 0)
                )
            code = None if single_err is None else custom_error_code(single_err)
            if single_err is None:
                good.append(item)
            elif code == ALREADY_INITIALIZED:
                (exists,) = await self.cluster.accounts_exist([item.record])
                if exists:
                    await self._settled([item], None)
                else:
                    await self._failed(item, single_err)
            elif code is not None:
                await self._failed(item, single_err)
            else:
                await self._mark([item.trade_id], "pending", error=str(single_err), items=[item])
        if good:
            await self._mark([i.trade_id for i in good], "pending", error=None, items=good)

    # ---- outcomes --------------------------------------------------------------------------

    async def _settled(self, items: Sequence[_Item], signature: Signature | None) -> None:
        self.stats["trades_settled"] += len(items)
        await self._mark([i.trade_id for i in items], "settled",
                         signature=None if signature is None else str(signature), items=items)

    async def _failed(self, item: _Item, err: object) -> None:
        code = custom_error_code(err)
        name = self.site.idl.errors.get(code) if code is not None else None
        if name:
            text = f"{name} ({code})"
        else:
            text = json.dumps(err) if isinstance(err, (dict, list)) else str(err)
        self.stats["trades_failed"] += 1
        log.warning("settlement failed", trade_id=item.trade_id, error=text)
        await self._mark([item.trade_id], "failed", error=f"program refused the trade: {text}",
                         items=[item])

    async def _mark(
        self,
        trade_ids: Sequence[int],
        status: str,
        *,
        signature: str | None = None,
        error: str | None = None,
        items: Sequence[_Item] = (),
    ) -> None:
        """Store each row's new status, then emit settlement_changed for it."""
        by_id = {item.trade_id: item for item in items}
        await self.store.mark_settlements(trade_ids, status=status, signature=signature,
                                          error=error)
        for trade_id in trade_ids:
            item = by_id.get(trade_id)
            self._emit(
                EventKind.SETTLEMENT_CHANGED,
                device_id=item.trade.device_id if item else None,
                auction_id=item.trade.auction_id if item else None,
                trade_id=trade_id,
                status=status,
                signature=signature,
                error=error,
            )
        if error is not None and status in ("failed", "pending"):
            self.last_error = error

    def _forget(self, flight: _Flight) -> None:
        del self._flights[flight.signature]
        self._busy_ids.difference_update(item.trade_id for item in flight.items)

    # ---- building --------------------------------------------------------------------------

    async def _item(self, trade: TradeRow) -> _Item:
        buyer = await self.site.ensure_aggregator(trade.bidder_id)
        seller = await self.site.ensure_battery(trade.device_id)
        return _Item(
            trade,
            self.site.idl.trade_record_address(self.site.market, trade.auction_id, trade.id),
            buyer,
            seller,
            TradeInput(
                auction_id=trade.auction_id,
                trade_id=trade.id,
                device_id=trade.device_id,
                price_per_kwh=trade.price_mc * self.site.price_scale,
                energy_wh=trade.energy_wh,
                evidence_hash=trade_evidence_hash(self.site_name, trade),
            ),
        )

    async def _use_tables(self, items: Sequence[_Item]) -> None:
        """Put the accounts these trades repeat into lookup tables (once each), and pick the
        tables this round's transactions can use."""
        if self.tables is None or not items:
            return
        site = self.site
        common = [site.idl.program_id, site.market, site.mint, site.token_program,
                  SYSTEM_PROGRAM, COMPUTE_BUDGET_PROGRAM]
        per_item = [account for item in items for account in (
            item.buyer.escrow, item.buyer.vault, item.buyer.reputation,
            item.seller.reputation, item.seller.token_account) if account is not None]
        if self.tables.missing([*common, *per_item]):
            await self.tables.include([*common, *per_item])
        self._tables_now = self.tables.usable(await self.cluster.slot())

    def _instruction(self, batch: Sequence[_Item]) -> Instruction:
        remaining = []
        for item in batch:
            for key in (
                item.record,
                item.buyer.escrow or item.buyer.reputation,
                item.buyer.vault or item.buyer.reputation,
                item.buyer.reputation,
                item.seller.reputation,
                item.seller.token_account,
            ):
                remaining.append(AccountMeta(key, False, True))
        return self.site.idl.instruction(
            "settle_trades",
            {
                "settler": self.site.settler.pubkey(),
                "market": self.site.market,
                "payment_mint": self.site.mint,
                "token_program": self.site.token_program,
            },
            {"trades": [item.trade_input.as_args() for item in batch]},
            remaining,
        )

    def _message(self, batch: Sequence[_Item], blockhash: Hash, limit: int, price: int
                 ) -> Message | MessageV0:
        budget = [set_compute_unit_limit(limit)]
        if price > 0:
            budget.append(set_compute_unit_price(price))
        instructions = [*budget, self._instruction(batch)]
        payer = self.site.settler.pubkey()
        if self._tables_now:
            return MessageV0.try_compile(payer, instructions, self._tables_now, blockhash)
        return Message.new_with_blockhash(instructions, payer, blockhash)

    def _transaction(self, batch: Sequence[_Item], blockhash: Hash, limit: int, price: int
                     ) -> VersionedTransaction:
        return VersionedTransaction(self._message(batch, blockhash, limit, price),
                                    [self.site.settler])

    def _size(self, batch: Sequence[_Item]) -> int:
        """Serialized size of the batch's transaction (limit and price included: the
        largest form), one signature."""
        message = self._message(batch, _PLACEHOLDER_HASH, MAX_COMPUTE_UNITS, 1)
        return len(bytes(VersionedTransaction.populate(message, [Signature.default()])))

    def _pack(self, items: list[_Item]) -> list[list[_Item]]:
        """Consecutive items into as few transactions as fit (size and account limits)."""
        batches: list[list[_Item]] = []
        current: list[_Item] = []
        for item in items:
            candidate = [*current, item]
            if current and (
                len(candidate) > MAX_TRADES_PER_INSTRUCTION
                or self._size(candidate) > TRANSACTION_SIZE_LIMIT
            ):
                batches.append(current)
                candidate = [item]
            current = candidate
        if current:
            batches.append(current)
        return batches

    # ---- store reads -----------------------------------------------------------------------

    async def _load_trades(self, trade_ids: Sequence[int]) -> dict[int, TradeRow]:
        """The trades of these outbox rows (a read the store's API does not cover)."""
        found: dict[int, TradeRow] = {}
        for start in range(0, len(trade_ids), 500):
            chunk = list(trade_ids[start : start + 500])
            async with self.store.sql.connect() as connection:
                result = await connection.execute(sa.select(TRADES).where(TRADES.c.id.in_(chunk)))
                for row in result.all():
                    trade = to_row(TradeRow, row)
                    found[trade.id] = trade
        return found

    async def _refresh_counts(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._counts_at < 1.0:
            return
        self._counts_at = time.monotonic()
        async with self.store.sql.connect() as connection:
            result = await connection.execute(
                sa.select(SETTLEMENTS.c.status, sa.func.count()).group_by(SETTLEMENTS.c.status)
            )
            counts = dict.fromkeys(SETTLEMENT_STATUSES, 0)
            counts.update({status: int(n) for status, n in result.all()})
        self.counts = counts
