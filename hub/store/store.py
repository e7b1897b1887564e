"""The hub's persistent store: durable trades, write-behind bids/events/metrics, one async API."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from hub.store.migrate import current_revision, upgrade_database
from hub.store.models import (
    AUCTION_CLOSED_STATUSES,
    BID_OUTCOMES,
    SETTLEMENT_STATUSES,
    AuctionRow,
    BidRow,
    DeviceRow,
    EventRow,
    MetricRow,
    SettlementRow,
    StoreModel,
    TradeRow,
)

__all__ = [
    "AuctionStateError",
    "InvalidValueError",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreNotStartedError",
    "StoreWriteError",
    "UnknownAuctionError",
    "UnknownTradeError",
    "database_url_for",
]

log = logging.getLogger(__name__)

DEVICES = StoreModel.metadata.tables["devices"]
AUCTIONS = StoreModel.metadata.tables["auctions"]
BIDS = StoreModel.metadata.tables["bids"]
TRADES = StoreModel.metadata.tables["trades"]
SETTLEMENTS = StoreModel.metadata.tables["settlements"]
EVENTS = StoreModel.metadata.tables["events"]
METRICS = StoreModel.metadata.tables["metrics"]

_INT64 = 1 << 63
_INT32 = 1 << 31

_T = TypeVar("_T")
_WriteOp = Callable[[AsyncConnection], Awaitable[Any]]
# (op run alone, (table, row) for a shared multi-row INSERT or None, the caller's future)
_Request = tuple[_WriteOp, tuple[str, dict[str, Any]] | None, asyncio.Future[Any]]
_MISSING = object()


_CLOSE_STATEMENTS: dict[tuple[str, ...], sa.Update] = {}


def _close_statement(columns: tuple[str, ...]) -> sa.Update:
    """UPDATE closing one auction, setting `columns`; built once per column set (an auction
    closes at every step of the market, so its statement is reused, not rebuilt)."""
    statement = _CLOSE_STATEMENTS.get(columns)
    if statement is None:
        statement = (
            sa.update(AUCTIONS)
            .where(
                AUCTIONS.c.id == sa.bindparam("target_id"),
                sa.or_(
                    AUCTIONS.c.status == "open", AUCTIONS.c.status == sa.bindparam("new_status")
                ),
            )
            .values({name: sa.bindparam(f"new_{name}") for name in columns})
        )
        _CLOSE_STATEMENTS[columns] = statement
    return statement


class StoreError(Exception):
    """Base class of every error the store raises."""


class StoreNotStartedError(StoreError):
    """A database method was called before `await store.start()`."""


class StoreClosedError(StoreError):
    """The store was used after `await store.close()`."""


class StoreWriteError(StoreError):
    """A write could not be committed (database unreachable, locked too long, disk full...).

    Nothing of that transaction was written; queued bids/events/metrics stay queued and the
    flusher retries them.
    """


class InvalidValueError(StoreError, ValueError):
    """A caller passed a value the store does not accept (unknown status, bad payload)."""


class UnknownAuctionError(StoreError, LookupError):
    """No auction has the given id."""


class UnknownTradeError(StoreError, LookupError):
    """No trade (settlement outbox row) has the given id."""


class AuctionStateError(StoreError):
    """The auction is already closed with a different status."""


class _AlreadyTraded(Exception):
    """Internal: record_trade found the auction's trade already stored."""

    def __init__(self, auction_id: int) -> None:
        super().__init__(f"auction {auction_id} already has a trade")


def database_url_for(data_dir: Path) -> str:
    """The default database of a data directory: SQLite file `<data_dir>/etp.db` via aiosqlite."""
    return f"sqlite+aiosqlite:///{Path(data_dir).expanduser().resolve() / 'etp.db'}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _row(cls: Any, row: sa.Row[Any]) -> Any:
    return cls(**row._mapping)


def _check_ints(bits: int = 64, **values: int | None) -> None:
    """Refuse a value that is not an int or does not fit its column (at the call, not later
    in a batch where one bad row would fail the whole write)."""
    limit = _INT64 if bits == 64 else _INT32
    for name, value in values.items():
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidValueError(f"{name} must be an int, not {type(value).__name__}")
        if not -limit <= value < limit:
            raise InvalidValueError(f"{name}={value} does not fit a {bits}-bit column")


def _check_text(name: str, value: object, max_length: int) -> None:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise InvalidValueError(f"{name} must be a non-empty str of at most {max_length} chars")


class Store:
    """Async persistence of devices, auctions, bids, trades, settlement outbox, events, metrics.

    SQLite (`sqlite+aiosqlite:///path`) or PostgreSQL (`postgresql+psycopg://...`). Trades are
    committed and fsynced before `record_trade` returns; bids, events and metrics are queued
    in memory and written in batches every `flush_interval_s` (and on `flush`/`close`).
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
    ) -> None:
        try:
            self._url = make_url(database_url)
        except ArgumentError as err:
            raise InvalidValueError(
                f"not a database URL: {database_url!r} (expected e.g. "
                "sqlite+aiosqlite:///path/etp.db or postgresql+psycopg://user@host:port/db)"
            ) from err
        self._backend = self._url.get_backend_name()
        if self._backend not in ("sqlite", "postgresql"):
            raise InvalidValueError(
                f"unsupported database {self._backend!r} in {self.safe_url}: "
                "use sqlite+aiosqlite:// or postgresql+psycopg://"
            )
        self._echo = echo
        self._flush_interval_s = flush_interval_s
        self._flush_batch_rows = flush_batch_rows
        self._max_pending_rows = max_pending_rows
        self._busy_timeout_ms = busy_timeout_ms
        self._engine: AsyncEngine | None = None
        self._closed = False
        self._revision: str | None = None
        self._migrated_from: str | None = None
        self._pending_bids: deque[dict[str, Any]] = deque(maxlen=max_pending_rows)
        self._pending_events: deque[dict[str, Any]] = deque(maxlen=max_pending_rows)
        self._pending_metrics: deque[dict[str, Any]] = deque(maxlen=max_pending_rows)
        self._flush_lock = asyncio.Lock()
        # SQLite allows one writer: queue writers here instead of spinning on busy_timeout.
        self._write_lock: asyncio.Lock | None = (
            asyncio.Lock() if self._backend == "sqlite" else None
        )
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = False
        # Group commit: durable writes (auctions, trades) queue here; one task runs every
        # request queued while the previous commit was in flight in ONE transaction.
        self._group_batch_max = group_commit_max
        self._group_queue: deque[_Request] = deque()
        self._group_wake = asyncio.Event()
        self._group_writer: asyncio.Task[None] | None = None
        self._group_stopping = False
        self._orphan_closes: set[asyncio.Task[None]] = set()
        self.stats: dict[str, int] = {
            "bids_written": 0,
            "events_written": 0,
            "metrics_written": 0,
            "rows_dropped": 0,
            "flush_errors": 0,
            "group_commits": 0,
            "group_requests": 0,
            "group_fallbacks": 0,
        }

    # ------------------------------------------------------------------ lifecycle

    @property
    def safe_url(self) -> str:
        """The database URL with any password hidden (for logs and messages)."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._backend

    @property
    def revision(self) -> str | None:
        """Alembic revision the database was at after `start()`."""
        return self._revision

    @property
    def migrated_from(self) -> str | None:
        """Revision found by `start()` before migrating (None: the database was empty)."""
        return self._migrated_from

    @property
    def pending_writes(self) -> int:
        """Rows queued in memory, not yet committed (bids + events + metrics)."""
        return len(self._pending_bids) + len(self._pending_events) + len(self._pending_metrics)

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy async engine (for read-only queries the API does not cover)."""
        if self._engine is None:
            raise StoreNotStartedError("Store.start() has not been awaited yet")
        return self._engine

    async def start(self) -> None:
        """Create the engine, migrate the schema to the newest revision, start the flusher."""
        if self._closed:
            raise StoreClosedError("this Store was closed; create a new one")
        if self._engine is not None:
            return
        engine_args: dict[str, Any] = {"echo": self._echo}
        if self._backend == "sqlite":
            database = self._url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine_args["connect_args"] = {"timeout": self._busy_timeout_ms / 1000}
        else:
            engine_args["pool_pre_ping"] = True
        engine = create_async_engine(self._url, **engine_args)
        if self._backend == "sqlite":
            sa_event.listen(engine.sync_engine, "connect", self._sqlite_on_connect)
        try:
            self._migrated_from, self._revision = await upgrade_database(engine)
        except (SQLAlchemyError, OSError) as err:
            await engine.dispose()
            raise StoreError(f"cannot open or migrate the database {self.safe_url}: {err}") from err
        self._engine = engine
        self._flusher = asyncio.create_task(self._flush_loop(), name="store-flusher")
        self._group_writer = asyncio.create_task(self._group_loop(), name="store-group-commit")
        log.info("store ready: %s at revision %s", self.safe_url, self._revision)

    def _sqlite_on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    async def close(self) -> None:
        """Flush queued writes, stop the flusher and dispose the engine. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._group_writer is not None:
            # Run every durable write already requested, then stop the writer.
            self._group_stopping = True
            self._group_wake.set()
            await self._group_writer
            self._group_writer = None
        while self._orphan_closes:
            await asyncio.gather(*self._orphan_closes, return_exceptions=True)
        if self._flusher is not None:
            # Let a flush in progress finish (cancelling it mid-commit could write rows twice).
            self._stopping = True
            self._wake.set()
            await self._flusher
            self._flusher = None
        try:
            if self._engine is not None:
                await self.flush()
        finally:
            if self._engine is not None:
                await self._engine.dispose()
                self._engine = None

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
        return await current_revision(self.engine)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """One committed write transaction (serialised in-process on SQLite)."""
        if self._closed and self._engine is None:
            raise StoreClosedError("the Store is closed")
        engine = self.engine
        try:
            if self._write_lock is None:
                async with engine.begin() as connection:
                    yield connection
            else:
                async with self._write_lock, engine.begin() as connection:
                    yield connection
        except (IntegrityError, DataError):
            raise  # the data is wrong, not the database: callers decide
        except (SQLAlchemyError, OSError) as err:
            raise StoreWriteError(f"write to {self.safe_url} failed: {err}") from err

    # ------------------------------------------------------------------ group commit

    async def _group_write(
        self,
        op: Callable[[AsyncConnection], Awaitable[_T]],
        bulk: tuple[str, dict[str, Any]] | None = None,
        on_orphan: Callable[[_T], None] | None = None,
    ) -> _T:
        """Run `op` in a transaction shared with concurrent callers; returns after the commit.

        `op` must only execute statements on the connection it gets and return its result
        (no side effects outside the transaction): if a shared transaction fails, it is rolled
        back and every op of it runs again in its own transaction. `bulk`: ("auctions", row)
        or ("trades", row) when `op` only inserts that row; a shared transaction inserts all
        such rows with one multi-row INSERT per table instead of calling each `op`.

        A caller cancelled before its transaction starts writes nothing; one cancelled while
        its transaction is in flight may still be committed: `on_orphan(result)` then runs.
        """
        if self._closed and self._group_writer is None:
            raise StoreClosedError("the Store is closed")
        if self._group_writer is None or self._group_writer.done():
            async with self._transaction() as connection:  # not started (or writer gone)
                return await op(connection)
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        request: _Request = (op, bulk, future)
        self._group_queue.append(request)
        self._group_wake.set()
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if any(queued is request for queued in self._group_queue):
                self._group_queue.remove(request)  # not started: nothing is written
                future.cancel()
            elif on_orphan is not None:

                def orphaned(done: asyncio.Future[_T]) -> None:
                    if not done.cancelled() and done.exception() is None:
                        on_orphan(done.result())

                if future.done():
                    orphaned(future)
                else:
                    future.add_done_callback(orphaned)
            raise

    async def _group_loop(self) -> None:
        while True:
            if not self._group_queue:
                if self._group_stopping:
                    return
                await self._group_wake.wait()
                self._group_wake.clear()
                # Let callers woken in the same loop iteration join this transaction.
                await asyncio.sleep(0)
                continue
            batch: list[_Request] = []
            while self._group_queue and len(batch) < self._group_batch_max:
                batch.append(self._group_queue.popleft())
            try:
                await self._run_group(batch)
            except BaseException as err:  # cancelled: nobody may wait forever
                for _op, _row_values, future in batch:
                    if not future.done():
                        future.set_exception(
                            StoreWriteError(f"write to {self.safe_url} interrupted: {err!r}")
                        )
                if not isinstance(err, Exception):
                    raise
                log.exception("store group commit: unexpected error")

    async def _run_group(self, batch: list[_Request]) -> None:
        live = [request for request in batch if not request[2].cancelled()]
        if not live:
            return
        self.stats["group_requests"] += len(live)
        if len(live) > 1:
            results: list[Any] = [None] * len(live)
            try:
                async with self._transaction() as connection:
                    await self._bulk_auctions(connection, live, results)
                    await self._bulk_trades(connection, live, results)
                    for n, (op, bulk, _future) in enumerate(live):
                        if bulk is None:
                            results[n] = await op(connection)
            except StoreWriteError as err:
                # The database failed (unreachable, locked, disk full), not a request: one by
                # one would wait the busy timeout once per request. Each caller gets the error.
                for _op, _row_values, future in live:
                    if not future.done():
                        own = StoreWriteError(str(err))
                        own.__cause__ = err.__cause__
                        future.set_exception(own)
                return
            except Exception as err:
                # One request spoiled the shared transaction (nothing of it was committed):
                # run each on its own so that each caller gets its own result or error.
                self.stats["group_fallbacks"] += 1
                log.debug("group of %d writes failed (%s); retrying one by one", len(live), err)
            else:
                self.stats["group_commits"] += 1
                for (_op, _row_values, future), result in zip(live, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                return
        for op, _row_values, future in live:
            try:
                async with self._transaction() as connection:
                    outcome = await op(connection)
            except Exception as err:
                if not future.done():
                    future.set_exception(err)
                continue
            self.stats["group_commits"] += 1
            if not future.done():
                future.set_result(outcome)

    @staticmethod
    async def _bulk_auctions(
        connection: AsyncConnection, live: list[_Request], results: list[Any]
    ) -> None:
        """New auctions depend on nothing else in the batch: one INSERT for all; ids in order."""
        opening = [(n, b[1]) for n, (_, b, _) in enumerate(live) if b and b[0] == "auctions"]
        if not opening:
            return
        inserted = await connection.execute(
            sa.insert(AUCTIONS).returning(AUCTIONS.c.id, sort_by_parameter_order=True),
            [row for _, row in opening],
        )
        ids = inserted.scalars().all()
        if len(ids) != len(opening):
            raise StoreError(f"{len(opening)} auctions inserted but {len(ids)} ids returned")
        for (n, _opened), auction_id in zip(opening, ids, strict=True):
            results[n] = auction_id

    async def _bulk_trades(
        self, connection: AsyncConnection, live: list[_Request], results: list[Any]
    ) -> None:
        """All trades of the batch in one INSERT (ON CONFLICT DO NOTHING: a trade already
        stored, or a second request for the same auction, gets None), then their outbox rows."""
        first: dict[int, tuple[int, dict[str, Any]]] = {}
        for n, (_, bulk, _) in enumerate(live):
            if bulk and bulk[0] == "trades":
                first.setdefault(bulk[1]["auction_id"], (n, bulk[1]))
        if not first:
            return
        insert = pg_dialect.insert if self._backend == "postgresql" else sqlite_dialect.insert
        inserted = await connection.execute(
            insert(TRADES)
            .on_conflict_do_nothing(index_elements=["auction_id"])
            .returning(TRADES.c.id, TRADES.c.auction_id),
            [row for _, row in first.values()],
        )
        created = {auction_id: trade_id for trade_id, auction_id in inserted.all()}
        outbox = []
        for auction_id, (n, row) in first.items():
            trade_id = created.get(auction_id)
            results[n] = trade_id  # None for the others: already traded
            if trade_id is not None:
                outbox.append(
                    {
                        "trade_id": trade_id,
                        "status": "pending",
                        "attempts": 0,
                        "updated_ms": row["confirmed_ms"],
                    }
                )
        if outbox:
            await connection.execute(sa.insert(SETTLEMENTS), outbox)

    async def _fetch(self, statement: sa.Executable) -> Sequence[sa.Row[Any]]:
        async with self.engine.connect() as connection:
            result = await connection.execute(statement)
            return result.fetchall()

    # ------------------------------------------------------------------ devices

    async def upsert_device(
        self,
        device_id: int,
        site: str,
        *,
        online: bool | None = None,
        health: int | None = None,
        energy_total_wh: int | None = None,
        energy_remaining_wh: int | None = None,
        reserve_mc: int | None = None,
        pct_for_sale: int | None = None,
        soc: int | None = None,
        voltage_mv: int | None = None,
        seen_ms: int,
    ) -> None:
        """Insert or update a device; fields left as None keep their stored value."""
        _check_text("site", site, 64)
        _check_ints(
            device_id=device_id,
            energy_total_wh=energy_total_wh,
            energy_remaining_wh=energy_remaining_wh,
            reserve_mc=reserve_mc,
            seen_ms=seen_ms,
        )
        _check_ints(32, health=health, pct_for_sale=pct_for_sale, soc=soc, voltage_mv=voltage_mv)
        given = {
            "online": online,
            "health": health,
            "energy_total_wh": energy_total_wh,
            "energy_remaining_wh": energy_remaining_wh,
            "reserve_mc": reserve_mc,
            "pct_for_sale": pct_for_sale,
            "soc": soc,
            "voltage_mv": voltage_mv,
        }
        changed = {name: value for name, value in given.items() if value is not None}
        values: dict[str, Any] = {
            "site": site,
            "device_id": device_id,
            "first_seen_ms": seen_ms,
            "last_seen_ms": seen_ms,
            **given,
            "online": bool(online),
        }
        insert = pg_dialect.insert if self._backend == "postgresql" else sqlite_dialect.insert
        statement = insert(DEVICES).values(values)
        update = {name: statement.excluded[name] for name in (*changed, "last_seen_ms")}
        statement = statement.on_conflict_do_update(
            index_elements=["site", "device_id"], set_=update
        )
        async with self._transaction() as connection:
            await connection.execute(statement)

    async def list_devices(self) -> list[DeviceRow]:
        """Every known device, by site then id."""
        rows = await self._fetch(sa.select(DEVICES).order_by(DEVICES.c.site, DEVICES.c.device_id))
        return [_row(DeviceRow, row) for row in rows]

    # ------------------------------------------------------------------ auctions

    async def open_auction(
        self,
        *,
        device_id: int,
        site: str,
        mechanism: str,
        lot_wh: int,
        reserve_mc: int,
        opened_ms: int,
    ) -> int:
        """Record a new open auction; returns its id (unique in this database, fits u32)."""
        _check_text("site", site, 64)
        _check_text("mechanism", mechanism, 32)
        _check_ints(device_id=device_id, lot_wh=lot_wh, reserve_mc=reserve_mc, opened_ms=opened_ms)
        new_auction = {
            "device_id": device_id,
            "site": site,
            "mechanism": mechanism,
            "lot_wh": lot_wh,
            "reserve_mc": reserve_mc,
            "status": "open",
            "opened_ms": opened_ms,
        }

        async def insert_auction(connection: AsyncConnection) -> Any:  # only when run alone
            result = await connection.execute(sa.insert(AUCTIONS).values(new_auction))
            return result.inserted_primary_key[0] if result.inserted_primary_key else None

        auction_id = await self._group_write(
            insert_auction, ("auctions", new_auction), on_orphan=self._close_orphan
        )
        if not isinstance(auction_id, int):
            raise StoreError(f"the database returned no id for the new auction ({self.safe_url})")
        return auction_id

    def _close_orphan(self, auction_id: int) -> None:
        """open_auction's caller was cancelled after its row was committed: close it."""

        async def terminate() -> None:
            try:
                await self.close_auction(auction_id, status="terminated", closed_ms=_now_ms())
            except StoreError as err:
                log.warning("could not terminate orphaned auction %d: %s", auction_id, err)

        task = asyncio.get_running_loop().create_task(terminate())
        self._orphan_closes.add(task)
        task.add_done_callback(self._orphan_closes.discard)

    async def close_auction(
        self,
        auction_id: int,
        *,
        status: str,
        clearing_price_mc: int | None = None,
        winner_id: int | None = None,
        energy_wh: int | None = None,
        closed_ms: int,
    ) -> None:
        """Close an open auction as cleared, no_sale or terminated.

        Closing again with the same status is allowed (fields given replace stored ones);
        closing an auction already closed with another status raises AuctionStateError.
        """
        if status not in AUCTION_CLOSED_STATUSES:
            raise InvalidValueError(
                f"auction status must be one of {AUCTION_CLOSED_STATUSES}, not {status!r}"
            )
        _check_ints(
            clearing_price_mc=clearing_price_mc,
            winner_id=winner_id,
            energy_wh=energy_wh,
            closed_ms=closed_ms,
        )
        values: dict[str, Any] = {"status": status, "closed_ms": closed_ms}
        for name, value in (
            ("clearing_price_mc", clearing_price_mc),
            ("winner_id", winner_id),
            ("energy_wh", energy_wh),
        ):
            if value is not None:
                values[name] = value
        statement = _close_statement(tuple(values))
        parameters = {f"new_{name}": value for name, value in values.items()}
        parameters["target_id"] = auction_id

        async def update_auction(connection: AsyncConnection) -> Any:
            result = await connection.execute(statement, parameters)
            if result.rowcount == 1:
                return _MISSING  # closed
            found = await connection.execute(
                sa.select(AUCTIONS.c.status).where(AUCTIONS.c.id == auction_id)
            )
            return found.scalar_one_or_none()

        # Errors are raised here, not inside the shared transaction (which they would spoil).
        current = await self._group_write(update_auction)
        if current is _MISSING:
            return
        if current is None:
            raise UnknownAuctionError(f"no auction with id {auction_id}")
        raise AuctionStateError(
            f"auction {auction_id} is already {current!r}; it cannot be closed as {status!r}"
        )

    async def update_auction_offers(self, offers: Iterable[tuple[int, int, int]]) -> int:
        """Record the offer each battery actually made: (auction_id, lot_wh, reserve_mc) rows.

        The auction row is opened before the battery's QueryResponse arrives; this sets its
        lot and reserve to the ones the battery answered with (whatever the auction's status
        by now). All rows in one transaction; returns how many auctions were found."""
        rows = []
        for auction_id, lot_wh, reserve_mc in offers:
            _check_ints(auction_id=auction_id, lot_wh=lot_wh, reserve_mc=reserve_mc)
            rows.append({"target_id": auction_id, "lot_wh": lot_wh, "reserve_mc": reserve_mc})
        if not rows:
            return 0
        statement = (
            sa.update(AUCTIONS)
            .where(AUCTIONS.c.id == sa.bindparam("target_id"))
            .values(lot_wh=sa.bindparam("lot_wh"), reserve_mc=sa.bindparam("reserve_mc"))
        )

        async def update_offers(connection: AsyncConnection) -> int:
            result = await connection.execute(statement, rows)
            return max(0, result.rowcount)

        return await self._group_write(update_offers)

    async def get_auction(self, auction_id: int) -> AuctionRow | None:
        """One auction by id, or None."""
        rows = await self._fetch(sa.select(AUCTIONS).where(AUCTIONS.c.id == auction_id))
        return _row(AuctionRow, rows[0]) if rows else None

    async def open_auctions(self) -> list[AuctionRow]:
        """Auctions still open (status 'open'), oldest first: resume or terminate on restart."""
        rows = await self._fetch(
            sa.select(AUCTIONS).where(AUCTIONS.c.status == "open").order_by(AUCTIONS.c.id)
        )
        return [_row(AuctionRow, row) for row in rows]

    async def terminate_open_auctions(
        self, *, closed_ms: int, site: str | None = None
    ) -> list[int]:
        """Mark every open auction (of one site, if given) terminated; returns their ids."""
        condition = AUCTIONS.c.status == "open"
        if site is not None:
            condition = sa.and_(condition, AUCTIONS.c.site == site)
        async with self._transaction() as connection:
            found = await connection.execute(
                sa.update(AUCTIONS)
                .where(condition)
                .values(status="terminated", closed_ms=closed_ms)
                .returning(AUCTIONS.c.id)
            )
            return sorted(found.scalars().all())

    async def list_auctions(self, limit: int | None = None) -> list[AuctionRow]:
        """Auctions, newest first (at most `limit`)."""
        statement = sa.select(AUCTIONS).order_by(AUCTIONS.c.id.desc())
        if limit is not None:
            statement = statement.limit(limit)
        return [_row(AuctionRow, row) for row in await self._fetch(statement)]

    # ------------------------------------------------------------------ trades + outbox

    async def record_trade(
        self,
        *,
        auction_id: int,
        device_id: int,
        bidder_id: int,
        price_mc: int,
        energy_wh: int,
        reserve_mc: int,
        confirmed_ms: int,
    ) -> tuple[TradeRow, bool]:
        """Durably record the trade of an auction; returns (trade, created).

        Committed (fsynced) before it returns, so BidConfirm may leave the hub afterwards. One
        trade per auction: a retry (e.g. after a crash) returns the stored trade and False. The
        same transaction queues a 'pending' settlement. The auction stays open until
        close_auction: after a crash, an open auction that has a trade is one whose BidConfirm
        may not have gone out (resend it, then close the auction as cleared).
        """
        _check_ints(
            device_id=device_id,
            bidder_id=bidder_id,
            price_mc=price_mc,
            energy_wh=energy_wh,
            reserve_mc=reserve_mc,
            confirmed_ms=confirmed_ms,
        )
        if not isinstance(auction_id, int) or not 0 < auction_id < _INT32:
            raise UnknownAuctionError(
                f"cannot record a trade for auction {auction_id!r}: no such auction"
            )

        new_trade = {
            "auction_id": auction_id,
            "device_id": device_id,
            "bidder_id": bidder_id,
            "price_mc": price_mc,
            "energy_wh": energy_wh,
            "reserve_mc": reserve_mc,
            "confirmed_ms": confirmed_ms,
        }

        async def insert_trade(connection: AsyncConnection) -> int | None:
            # A retry must not spoil a shared transaction with a UNIQUE violation.
            insert = pg_dialect.insert if self._backend == "postgresql" else sqlite_dialect.insert
            result = await connection.execute(
                insert(TRADES)
                .values(new_trade)
                .on_conflict_do_nothing(index_elements=["auction_id"])
                .returning(TRADES.c.id)
            )
            trade_id = result.scalar_one_or_none()
            if trade_id is None:
                return None  # the auction already has its trade
            if not isinstance(trade_id, int):
                raise StoreError(f"the database returned no id for the trade ({self.safe_url})")
            await connection.execute(
                sa.insert(SETTLEMENTS).values(
                    trade_id=trade_id, status="pending", attempts=0, updated_ms=confirmed_ms
                )
            )
            return trade_id

        try:
            trade_id = await self._group_write(insert_trade, ("trades", new_trade))
            if trade_id is None:
                raise _AlreadyTraded(auction_id)
        except (IntegrityError, _AlreadyTraded) as err:
            # Already traded (a retry), or the auction does not exist (foreign key).
            existing = await self._trade_for_auction(auction_id)
            if existing is None:
                raise UnknownAuctionError(
                    f"cannot record a trade for auction {auction_id}: no such auction"
                ) from err
            if (existing.bidder_id, existing.price_mc, existing.energy_wh) != (
                bidder_id,
                price_mc,
                energy_wh,
            ):
                log.warning(
                    "auction %d already traded with bidder %d at %d mc/kWh for %d Wh; "
                    "kept it, ignored bidder %d at %d for %d",
                    auction_id,
                    existing.bidder_id,
                    existing.price_mc,
                    existing.energy_wh,
                    bidder_id,
                    price_mc,
                    energy_wh,
                )
            return existing, False
        trade = TradeRow(
            id=trade_id,
            auction_id=auction_id,
            device_id=device_id,
            bidder_id=bidder_id,
            price_mc=price_mc,
            energy_wh=energy_wh,
            reserve_mc=reserve_mc,
            confirmed_ms=confirmed_ms,
        )
        return trade, True

    async def _trade_for_auction(self, auction_id: int) -> TradeRow | None:
        rows = await self._fetch(sa.select(TRADES).where(TRADES.c.auction_id == auction_id))
        return _row(TradeRow, rows[0]) if rows else None

    async def list_trades(self) -> list[TradeRow]:
        """Every trade, oldest first."""
        rows = await self._fetch(sa.select(TRADES).order_by(TRADES.c.id))
        return [_row(TradeRow, row) for row in rows]

    async def get_trade(self, auction_id: int) -> TradeRow | None:
        """The trade of one auction, or None (e.g. to resume an auction left open by a crash)."""
        return await self._trade_for_auction(auction_id)

    async def pending_settlements(
        self, limit: int = 100, *, statuses: Iterable[str] = ("pending",)
    ) -> list[SettlementRow]:
        """Settlement outbox rows to work on, oldest trade first.

        A settlement worker that restarts should also ask for 'submitted' rows (sent to the
        ledger before the restart) and check their signature before sending again.
        """
        wanted = tuple(statuses)
        for status in wanted:
            self._check_settlement_status(status)
        rows = await self._fetch(
            sa.select(SETTLEMENTS)
            .where(SETTLEMENTS.c.status.in_(wanted))
            .order_by(SETTLEMENTS.c.trade_id)
            .limit(limit)
        )
        return [_row(SettlementRow, row) for row in rows]

    async def list_settlements(self) -> list[SettlementRow]:
        """Every settlement outbox row, by trade id."""
        rows = await self._fetch(sa.select(SETTLEMENTS).order_by(SETTLEMENTS.c.trade_id))
        return [_row(SettlementRow, row) for row in rows]

    async def mark_settlement(
        self,
        trade_id: int,
        *,
        status: str,
        signature: str | None = None,
        error: str | None = None,
        updated_ms: int | None = None,
    ) -> None:
        """Record settlement progress; 'submitted' counts one attempt.

        signature is kept unless a new one is given; error is replaced (None clears it).
        """
        self._check_settlement_status(status)
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "updated_ms": _now_ms() if updated_ms is None else updated_ms,
        }
        if signature is not None:
            values["signature"] = signature
        if status == "submitted":
            values["attempts"] = SETTLEMENTS.c.attempts + 1
        async with self._transaction() as connection:
            result = await connection.execute(
                sa.update(SETTLEMENTS).where(SETTLEMENTS.c.trade_id == trade_id).values(values)
            )
            if result.rowcount != 1:
                raise UnknownTradeError(f"no settlement outbox row for trade {trade_id}")

    @staticmethod
    def _check_settlement_status(status: str) -> None:
        if status not in SETTLEMENT_STATUSES:
            raise InvalidValueError(
                f"settlement status must be one of {SETTLEMENT_STATUSES}, not {status!r}"
            )

    # ------------------------------------------------------------------ batched writes

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreClosedError("the Store is closed; queued rows would never be written")

    def _enqueue(self, queue: deque[dict[str, Any]], row: dict[str, Any]) -> None:
        if len(queue) == queue.maxlen:
            self.stats["rows_dropped"] += 1
            if self.stats["rows_dropped"] in (1, 1000) or self.stats["rows_dropped"] % 100_000 == 0:
                log.error(
                    "store write queue full (%d rows): dropping the oldest; %d dropped so far",
                    queue.maxlen,
                    self.stats["rows_dropped"],
                )
        queue.append(row)
        if len(queue) >= self._flush_batch_rows:
            self._wake.set()

    def record_bid(
        self,
        *,
        auction_id: int,
        bidder_id: int,
        price_mc: int,
        energy_wh: int,
        round: int,
        outcome: str,
        reason: int | None,
        ts_ms: int,
    ) -> None:
        """Queue a bid for the next batched write (outcome: sent|accepted|rejected|confirmed)."""
        self._check_writable()
        if outcome not in BID_OUTCOMES:
            raise InvalidValueError(f"bid outcome must be one of {BID_OUTCOMES}, not {outcome!r}")
        _check_ints(
            auction_id=auction_id,
            bidder_id=bidder_id,
            price_mc=price_mc,
            energy_wh=energy_wh,
            ts_ms=ts_ms,
        )
        _check_ints(32, round=round, reason=reason)
        if ts_ms is None:
            raise InvalidValueError("ts_ms is required")
        self._enqueue(
            self._pending_bids,
            {
                "auction_id": auction_id,
                "bidder_id": bidder_id,
                "price_mc": price_mc,
                "energy_wh": energy_wh,
                "round": round,
                "outcome": outcome,
                "reason": reason,
                "ts_ms": ts_ms,
            },
        )

    def record_event(
        self,
        kind: str,
        *,
        device_id: int | None = None,
        auction_id: int | None = None,
        payload: dict[str, Any] | None = None,
        ts_ms: int,
    ) -> None:
        """Queue an audit event for the next batched write; payload must be JSON-encodable."""
        self._check_writable()
        _check_text("event kind", kind, 64)
        _check_ints(device_id=device_id, auction_id=auction_id, ts_ms=ts_ms)
        if ts_ms is None:
            raise InvalidValueError("ts_ms is required")
        self._check_json("event payload", payload)
        self._enqueue(
            self._pending_events,
            {
                "kind": kind,
                "device_id": device_id,
                "auction_id": auction_id,
                "payload": payload,
                "ts_ms": ts_ms,
            },
        )

    def record_metric(
        self, name: str, value: float, *, labels: dict[str, Any] | None = None, ts_ms: int
    ) -> None:
        """Queue a metric sample for the next batched write."""
        self._check_writable()
        _check_text("metric name", name, 128)
        _check_ints(ts_ms=ts_ms)
        if ts_ms is None or not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidValueError(f"metric {name}: value must be a number and ts_ms an int")
        self._check_json("metric labels", labels)
        self._enqueue(
            self._pending_metrics,
            {"name": name, "value": float(value), "labels": labels, "ts_ms": ts_ms},
        )

    @staticmethod
    def _check_json(what: str, value: dict[str, Any] | None) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise InvalidValueError(f"{what} must be a dict, not {type(value).__name__}")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise InvalidValueError(f"{what} is not JSON-encodable: {err}") from err

    async def flush(self) -> None:
        """Commit every queued bid, event and metric now (one transaction)."""
        async with self._flush_lock:
            if self.pending_writes == 0:
                return
            if self._engine is None:
                raise StoreNotStartedError("Store.start() was not awaited yet; rows stay queued")
            bids = list(self._pending_bids)
            events = list(self._pending_events)
            metrics = list(self._pending_metrics)
            self._pending_bids.clear()
            self._pending_events.clear()
            self._pending_metrics.clear()
            try:
                async with self._transaction() as connection:
                    for table, rows in ((BIDS, bids), (EVENTS, events), (METRICS, metrics)):
                        if rows:
                            await connection.execute(sa.insert(table), rows)
            except (IntegrityError, DataError) as err:
                # Rows are validated when queued, so this is a bug; retrying cannot help.
                self.stats["flush_errors"] += 1
                self.stats["rows_dropped"] += len(bids) + len(events) + len(metrics)
                raise StoreWriteError(
                    f"dropped a batch of {len(bids)} bids, {len(events)} events, {len(metrics)} "
                    f"metrics that {self.safe_url} refused: {err}"
                ) from err
            except StoreWriteError as err:
                self.stats["flush_errors"] += 1
                for queue, rows in (
                    (self._pending_bids, bids),
                    (self._pending_events, events),
                    (self._pending_metrics, metrics),
                ):
                    newer = list(queue)
                    queue.clear()
                    queue.extend(rows)  # oldest first; a full queue drops the oldest
                    for row in newer:
                        self._enqueue(queue, row)
                raise StoreWriteError(
                    f"could not write {len(bids)} bids, {len(events)} events, {len(metrics)} "
                    f"metrics (kept queued, will retry): {err}"
                ) from err
            except BaseException:
                # Cancelled mid-write: the transaction rolled back; keep the rows.
                self._pending_bids.extendleft(reversed(bids))
                self._pending_events.extendleft(reversed(events))
                self._pending_metrics.extendleft(reversed(metrics))
                raise
            self.stats["bids_written"] += len(bids)
            self.stats["events_written"] += len(events)
            self.stats["metrics_written"] += len(metrics)

    async def _flush_loop(self) -> None:
        delay_s = self._flush_interval_s
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay_s)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                return  # close() writes what is left
            try:
                await self.flush()
                delay_s = self._flush_interval_s
            except StoreWriteError as err:
                log.error("%s", err)
                delay_s = min(5.0, max(delay_s * 2, 0.05))  # back off while the database is away
            except Exception:
                self.stats["flush_errors"] += 1
                log.exception("store flusher: unexpected error (will retry)")
                delay_s = min(5.0, max(delay_s * 2, 0.05))

    # ------------------------------------------------------------------ reads of batched tables

    async def _flush_before_read(self) -> None:
        """Read-your-writes when possible; a failed flush must not make reads fail too."""
        if self._engine is None:
            return
        try:
            await self.flush()
        except StoreWriteError as err:
            log.warning("reading without the queued rows: %s", err)

    async def list_bids(self, auction_id: int | None = None) -> list[BidRow]:
        """Bids (of one auction, if given), in the order recorded; flushes queued writes first."""
        await self._flush_before_read()
        statement = sa.select(BIDS).order_by(BIDS.c.id)
        if auction_id is not None:
            statement = statement.where(BIDS.c.auction_id == auction_id)
        return [_row(BidRow, row) for row in await self._fetch(statement)]

    async def list_events(self, since_id: int = 0, limit: int = 500) -> list[EventRow]:
        """Events with id > since_id, oldest first (page with the last id); flushes first."""
        await self._flush_before_read()
        rows = await self._fetch(
            sa.select(EVENTS).where(EVENTS.c.id > since_id).order_by(EVENTS.c.id).limit(limit)
        )
        return [
            EventRow(
                id=row.id,
                kind=row.kind,
                device_id=row.device_id,
                auction_id=row.auction_id,
                payload=row.payload or {},
                ts_ms=row.ts_ms,
            )
            for row in rows
        ]

    async def list_metrics(
        self, name: str | None = None, *, since_ms: int = 0, limit: int = 1000
    ) -> list[MetricRow]:
        """Metric samples (of one name, if given) at or after since_ms, oldest first."""
        await self._flush_before_read()
        statement = sa.select(METRICS).where(METRICS.c.ts_ms >= since_ms)
        if name is not None:
            statement = statement.where(METRICS.c.name == name)
        rows = await self._fetch(statement.order_by(METRICS.c.id).limit(limit))
        return [
            MetricRow(
                id=row.id, name=row.name, value=row.value, labels=row.labels or {}, ts_ms=row.ts_ms
            )
            for row in rows
        ]
