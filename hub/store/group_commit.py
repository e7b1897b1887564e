"""Group commit: durable writes requested concurrently share one transaction (one fsync).

A request is an `op` (statements on the connection it is given) and, optionally, a
(table, row) for a plain INSERT: a shared transaction inserts all rows of one table with a
single multi-row INSERT through that table's bulk handler instead of running each op.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from hub.store.database import Database
from hub.store.errors import StoreClosedError, StoreWriteError

__all__ = ["BulkHandler", "GroupCommit"]

log = logging.getLogger("hub.store")

_T = TypeVar("_T")
_WriteOp = Callable[[AsyncConnection], Awaitable[Any]]
# (op run alone, (table, row) for a shared multi-row INSERT or None, the caller's future)
_Request = tuple[_WriteOp, tuple[str, dict[str, Any]] | None, asyncio.Future[Any]]
# Inserts the rows of one table for a shared transaction: gets [(request index, row)] and
# the results list, sets results[index] for each row it inserted.
BulkHandler = Callable[
    [AsyncConnection, list[tuple[int, dict[str, Any]]], list[Any]], Awaitable[None]
]


class GroupCommit:
    """Runs durable writes in shared transactions from one background task.

    Every request queued while the previous commit was in flight joins the next transaction
    (at most `max_batch` requests). If a shared transaction fails because of one request, each
    request runs again alone so that each caller gets its own result or error.
    """

    def __init__(
        self,
        database: Database,
        stats: dict[str, int],
        *,
        max_batch: int = 500,
        bulk_handlers: dict[str, BulkHandler] | None = None,
    ) -> None:
        self._db = database
        self._stats = stats
        self._max_batch = max_batch
        self._bulk_handlers = dict(bulk_handlers or {})  # run in this order (FK dependencies)
        self._queue: deque[_Request] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = False
        for key in ("group_commits", "group_requests", "group_fallbacks"):
            stats.setdefault(key, 0)

    def start(self) -> None:
        """Start the writer task (the database must be open)."""
        if self._writer is None and not self._stopped:
            self._writer = asyncio.create_task(self._loop(), name="store-group-commit")

    async def stop(self) -> None:
        """Run every write already requested, then stop the writer."""
        if self._writer is not None:
            self._stopping = True
            self._wake.set()
            await self._writer
            self._writer = None
        self._stopped = True

    async def write(
        self,
        op: Callable[[AsyncConnection], Awaitable[_T]],
        bulk: tuple[str, dict[str, Any]] | None = None,
        on_orphan: Callable[[_T], None] | None = None,
    ) -> _T:
        """Run `op` in a transaction shared with concurrent callers; returns after the commit.

        `op` must only execute statements on the connection it gets and return its result
        (no side effects outside the transaction): if a shared transaction fails, it is rolled
        back and every op of it runs again in its own transaction. `bulk`: (table, row) when
        `op` only inserts that row into a table that has a bulk handler.

        A caller cancelled before its transaction starts writes nothing; one cancelled while
        its transaction is in flight may still be committed: `on_orphan(result)` then runs.
        """
        if self._stopped:
            raise StoreClosedError("the Store is closed")
        if self._writer is None or self._writer.done():
            async with self._db.transaction() as connection:  # not started (or writer gone)
                return await op(connection)
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        request: _Request = (op, bulk, future)
        self._queue.append(request)
        self._wake.set()
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if any(queued is request for queued in self._queue):
                self._queue.remove(request)  # not started: nothing is written
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

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                await self._wake.wait()
                self._wake.clear()
                # Let callers woken in the same loop iteration join this transaction.
                await asyncio.sleep(0)
                continue
            batch: list[_Request] = []
            while self._queue and len(batch) < self._max_batch:
                batch.append(self._queue.popleft())
            try:
                await self._run(batch)
            except BaseException as err:  # cancelled: nobody may wait forever
                for _op, _bulk, future in batch:
                    if not future.done():
                        future.set_exception(
                            StoreWriteError(f"write to {self._db.safe_url} interrupted: {err!r}")
                        )
                if not isinstance(err, Exception):
                    raise
                log.exception("store group commit: unexpected error")

    async def _run(self, batch: list[_Request]) -> None:
        live = [request for request in batch if not request[2].cancelled()]
        if not live:
            return
        self._stats["group_requests"] += len(live)
        if len(live) > 1 and await self._run_shared(live):
            return
        for op, _bulk, future in live:
            try:
                async with self._db.transaction() as connection:
                    outcome = await op(connection)
            except Exception as err:
                if not future.done():
                    future.set_exception(err)
                continue
            self._stats["group_commits"] += 1
            if not future.done():
                future.set_result(outcome)

    async def _run_shared(self, live: list[_Request]) -> bool:
        """One transaction for every request; False when they must run one by one."""
        results: list[Any] = [None] * len(live)
        try:
            async with self._db.transaction() as connection:
                for table, handler in self._bulk_handlers.items():
                    rows = [(n, b[1]) for n, (_, b, _) in enumerate(live) if b and b[0] == table]
                    if rows:
                        await handler(connection, rows, results)
                for n, (op, bulk, _future) in enumerate(live):
                    if bulk is None or bulk[0] not in self._bulk_handlers:
                        results[n] = await op(connection)
        except StoreWriteError as err:
            # The database failed (unreachable, locked, disk full), not a request: one by one
            # would wait the busy timeout once per request. Each caller gets the error.
            for _op, _bulk, future in live:
                if not future.done():
                    own = StoreWriteError(str(err))
                    own.__cause__ = err.__cause__
                    future.set_exception(own)
            return True
        except Exception as err:
            # One request spoiled the shared transaction (nothing of it was committed).
            self._stats["group_fallbacks"] += 1
            log.debug("group of %d writes failed (%s); retrying one by one", len(live), err)
            return False
        self._stats["group_commits"] += 1
        for (_op, _bulk, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)
        return True
