"""`Store`: the one object callers use; lifecycle here, each table's API in its own mixin.

Layout of hub/store: database.py (engine, migration, transactions) · group_commit.py
(durable writes sharing commits) · write_behind.py (batched rows) · sequence.py (event
numbers) · devices.py, auctions.py, trades.py, batched.py, apikeys.py, alerts.py, wallets.py
(the API per table) · queries.py (the API's filtered, keyset-paged list reads) ·
history.py (trades per time bucket) · urls.py (the default database URL) · errors.py ·
validate.py · models.py · migrate.py.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine

from hub.store.alerts import AlertStore
from hub.store.apikeys import ApiKeyStore
from hub.store.auctions import AuctionStore, bulk_insert_auctions
from hub.store.batched import BatchedRows
from hub.store.cluster import ClusterStore
from hub.store.credentials import CredentialStore
from hub.store.database import Database
from hub.store.devices import DeviceStore
from hub.store.errors import StoreClosedError
from hub.store.group_commit import GroupCommit
from hub.store.history import TradeHistory
from hub.store.migrate import current_revision
from hub.store.models import BIDS, EVENTS, METRICS
from hub.store.queries import ListQueries
from hub.store.sequence import EventSequence, number_events
from hub.store.trades import TradeLedger, bulk_insert_trades
from hub.store.wallets import WalletStore
from hub.store.write_behind import WriteBehind

__all__ = ["Store"]

log = logging.getLogger("hub.store")


class Store(
    DeviceStore, AuctionStore, TradeLedger, BatchedRows, ApiKeyStore, AlertStore, ListQueries,
    TradeHistory, WalletStore, CredentialStore, ClusterStore,
):
    """Async persistence of devices, auctions, bids, trades, settlement outbox, events, metrics
    the gateway's API keys (hashed) and operators' alerts.

    SQLite (`sqlite+aiosqlite:///path`) or PostgreSQL (`postgresql+psycopg://...`). Trades are
    committed and fsynced before `record_trade` returns; bids, events and metrics are queued
    in memory and written in batches every `flush_interval_s` (and on `flush`/`close`).
    Events get a site-wide sequence number from blocks of `event_seq_block` numbers reserved
    durably in advance.
    """

    def __init__(
        self,
        database_url: str,
        *,
        echo: bool = False,
        flush_interval_s: float = 0.2,
        flush_batch_rows: int = 5000,
        max_pending_rows: int = 200_000,
        busy_timeout_ms: int = 10_000,
        group_commit_max: int = 500,
        event_seq_block: int = 100_000,
        shared_event_seq: bool = False,
    ) -> None:
        self.stats: dict[str, int] = {}
        # shared_event_seq (hub workers sharing a site): events are numbered when written,
        # under one database-wide lock, so seq order is commit order across every process
        # (hub.store.sequence.number_events); record_event then returns 0.
        self.shared_event_seq = shared_event_seq
        self._db = Database(database_url, echo=echo, busy_timeout_ms=busy_timeout_ms)
        self._group = GroupCommit(
            self._db,
            self.stats,
            max_batch=group_commit_max,
            bulk_handlers={  # auctions first: trades refer to them
                "auctions": bulk_insert_auctions,
                "trades": bulk_insert_trades(self._db.insert),
            },
        )
        self._writes = WriteBehind(
            self._db,
            (BIDS, EVENTS, METRICS),
            self.stats,
            flush_interval_s=flush_interval_s,
            flush_batch_rows=flush_batch_rows,
            max_pending_rows=max_pending_rows,
            before_insert={"events": number_events} if shared_event_seq else None,
        )
        self._sequence = EventSequence(self._db, self.stats, block_size=event_seq_block)
        self._orphan_closes: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def safe_url(self) -> str:
        """The database URL with any password hidden (for logs and messages)."""
        return self._db.safe_url

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._db.dialect

    @property
    def revision(self) -> str | None:
        """Alembic revision the database was at after `start()`."""
        return self._db.revision

    @property
    def migrated_from(self) -> str | None:
        """Revision found by `start()` before migrating (None: the database was empty)."""
        return self._db.migrated_from

    @property
    def sql(self) -> AsyncEngine:
        """The SQLAlchemy async engine (for read-only queries the API does not cover)."""
        return self._db.engine

    @property
    def started(self) -> bool:
        """True between `start()` and `close()`."""
        return self._db.opened and not self._closed

    async def start(self) -> None:
        """Open and migrate the database, reserve event numbers, start the background writers."""
        if self._closed:
            raise StoreClosedError("this Store was closed; create a new one")
        if self._db.opened:
            return
        await self._db.open()
        try:
            if not self.shared_event_seq:
                await self._sequence.start()
        except BaseException:
            await self._db.dispose()
            raise
        self._writes.start()
        self._group.start()
        log.info("store ready: %s at revision %s", self.safe_url, self.revision)

    async def close(self) -> None:
        """Flush queued writes, stop the background writers and close the database.

        Safe to call twice; the store cannot be started again."""
        if self._closed:
            return
        self._closed = True
        self._writes.closed = True  # refuse new rows from now on
        await self._group.stop()  # runs every durable write already requested
        while self._orphan_closes:
            await asyncio.gather(*self._orphan_closes, return_exceptions=True)
        await self._sequence.stop()
        await self._writes.stop()
        try:
            if self._db.opened:
                await self._writes.flush()
        finally:
            await self._db.dispose()

    async def __aenter__(self) -> Store:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def current_revision(self) -> str | None:
        """The Alembic revision the database is at now."""
        return await current_revision(self.sql)
