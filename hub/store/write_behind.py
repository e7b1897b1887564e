"""Write-behind buffers: rows queued in memory and written in batches by a background task.

For rows whose loss in a crash is acceptable (bids, events, metrics): queueing costs
microseconds and never waits on the database; one transaction writes every queued row.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DataError, IntegrityError

from hub.store.database import Database
from hub.store.errors import StoreClosedError, StoreNotStartedError, StoreWriteError

__all__ = ["BeforeInsert", "WriteBehind"]

# called in the writing transaction with a table's rows, before they are inserted
BeforeInsert = Callable[[Any, list[dict[str, Any]]], Awaitable[None]]

log = logging.getLogger("hub.store")


class WriteBehind:
    """Queues of rows per table, flushed every `flush_interval_s`, at `flush_batch_rows`
    queued rows, or on `flush()`. A failed write keeps the rows queued (retried with back-off);
    past `max_pending_rows` per table the oldest rows are dropped and counted."""

    def __init__(
        self,
        database: Database,
        tables: Sequence[sa.Table],
        stats: dict[str, int],
        *,
        flush_interval_s: float = 0.2,
        flush_batch_rows: int = 5000,
        max_pending_rows: int = 200_000,
        before_insert: dict[str, BeforeInsert] | None = None,
    ) -> None:
        self._db = database
        self._before_insert = before_insert or {}
        self._tables = {table.name: table for table in tables}
        self._queues: dict[str, deque[dict[str, Any]]] = {
            name: deque(maxlen=max_pending_rows) for name in self._tables
        }
        self._stats = stats
        for name in self._tables:
            stats.setdefault(f"{name}_written", 0)
        stats.setdefault("rows_dropped", 0)
        stats.setdefault("flush_errors", 0)
        self._flush_interval_s = flush_interval_s
        self._flush_batch_rows = flush_batch_rows
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = False
        self.closed = False

    @property
    def pending(self) -> int:
        """Rows queued in memory, not yet committed (all tables)."""
        return sum(len(queue) for queue in self._queues.values())

    def check_writable(self) -> None:
        """Raise StoreClosedError once the store is closing (queued rows would be lost)."""
        if self.closed:
            raise StoreClosedError("the Store is closed; queued rows would never be written")

    def enqueue(self, table: str, row: dict[str, Any]) -> None:
        """Queue one (already validated) row of `table` for the next batch."""
        self._append(self._queues[table], row)

    def _append(self, queue: deque[dict[str, Any]], row: dict[str, Any]) -> None:
        if len(queue) == queue.maxlen:
            self._stats["rows_dropped"] += 1
            dropped = self._stats["rows_dropped"]
            if dropped in (1, 1000) or dropped % 100_000 == 0:
                log.error(
                    "store write queue full (%d rows): dropping the oldest; %d dropped so far",
                    queue.maxlen,
                    dropped,
                )
        queue.append(row)
        if len(queue) >= self._flush_batch_rows:
            self._wake.set()

    def start(self) -> None:
        """Start the background flusher."""
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="store-flusher")

    async def stop(self) -> None:
        """Refuse new rows and stop the flusher after a flush in progress (the caller then
        flushes what is left: cancelling mid-commit could write rows twice)."""
        self.closed = True
        if self._flusher is not None:
            self._stopping = True
            self._wake.set()
            await self._flusher
            self._flusher = None

    async def flush(self) -> None:
        """Commit every queued row now (one transaction)."""
        async with self._lock:
            if self.pending == 0:
                return
            if not self._db.opened:
                raise StoreNotStartedError("Store.start() was not awaited yet; rows stay queued")
            taken = {name: list(queue) for name, queue in self._queues.items()}
            for queue in self._queues.values():
                queue.clear()
            counts = ", ".join(f"{len(rows)} {name}" for name, rows in taken.items())
            try:
                async with self._db.transaction() as connection:
                    for name, rows in taken.items():
                        if rows:
                            prepare = self._before_insert.get(name)
                            if prepare is not None:
                                await prepare(connection, rows)
                            await connection.execute(sa.insert(self._tables[name]), rows)
            except (IntegrityError, DataError) as err:
                # Rows are validated when queued, so this is a bug; retrying cannot help.
                self._stats["flush_errors"] += 1
                self._stats["rows_dropped"] += sum(len(rows) for rows in taken.values())
                raise StoreWriteError(
                    f"dropped a batch of {counts} that {self._db.safe_url} refused: {err}"
                ) from err
            except StoreWriteError as err:
                self._stats["flush_errors"] += 1
                for name, rows in taken.items():
                    queue = self._queues[name]
                    newer = list(queue)
                    queue.clear()
                    queue.extend(rows)  # oldest first; a full queue drops the oldest
                    for row in newer:
                        self._append(queue, row)
                raise StoreWriteError(
                    f"could not write {counts} (kept queued, will retry): {err}"
                ) from err
            except BaseException:
                # Cancelled mid-write: the transaction rolled back; keep the rows.
                for name, rows in taken.items():
                    self._queues[name].extendleft(reversed(rows))
                raise
            for name, rows in taken.items():
                self._stats[f"{name}_written"] += len(rows)

    async def flush_before_read(self) -> None:
        """Read-your-writes when possible; a failed flush must not make reads fail too."""
        if not self._db.opened:
            return
        try:
            await self.flush()
        except StoreWriteError as err:
            log.warning("reading without the queued rows: %s", err)

    async def _flush_loop(self) -> None:
        delay_s = self._flush_interval_s
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay_s)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                return  # the store's close() writes what is left
            try:
                await self.flush()
                delay_s = self._flush_interval_s
            except StoreWriteError as err:
                log.error("%s", err)
                delay_s = min(5.0, max(delay_s * 2, 0.05))  # back off while the database is away
            except Exception:
                self._stats["flush_errors"] += 1
                log.exception("store flusher: unexpected error (will retry)")
                delay_s = min(5.0, max(delay_s * 2, 0.05))
