"""Event sequence numbers: handed out synchronously from blocks reserved durably beforehand.

The reservation (table `event_sequence`) is committed before any number of its block is used,
so after a restart, even a kill -9 that lost queued events, numbering resumes above every
number handed out before: gaps are allowed, repeats never. The next block is reserved in the
background when half of the current one is used, so `next()` never waits on the database.

If the database stays unwritable until a block is used up, numbering goes on past the
reservation (counted in stats["event_seq_overdraft"], logged) rather than stopping the trading
path; a start therefore skips one whole block above the reservation, so a crashed run's
overdraft of up to `block_size` numbers is never reused either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import sqlalchemy as sa

from hub.store.database import Database
from hub.store.errors import StoreError, StoreNotStartedError, StoreWriteError
from hub.store.models import EVENT_SEQUENCE, EVENTS

__all__ = ["EventSequence", "number_events"]

log = logging.getLogger("hub.store")

SEQUENCE_NAME = "events"

# pg_advisory_xact_lock key of event numbering when hub workers share a site ("etp-evts")
EVENTS_LOCK_KEY = 0x6574702D65767473


async def number_events(connection: Any, rows: list[dict[str, Any]]) -> None:
    """Number queued events inside the transaction that writes them (hub workers sharing one
    database): one lock held to commit serialises every writer, so a reader paging by seq
    never sees a number committed after a higher one (no event is skipped by `after_seq`)."""
    if connection.dialect.name == "postgresql":
        await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(EVENTS_LOCK_KEY)))
    result = await connection.execute(sa.select(sa.func.max(EVENTS.c.seq)))
    last = int(result.scalar() or 0)
    for row in rows:
        last += 1
        row["seq"] = last


class EventSequence:
    """Strictly increasing event numbers of this process, unique across processes sharing the
    database (each reserves its own blocks with one atomic UPDATE)."""

    def __init__(self, database: Database, stats: dict[str, int], *, block_size: int) -> None:
        if block_size < 2:
            raise ValueError(f"event sequence block_size must be at least 2, not {block_size}")
        self._db = database
        self._stats = stats
        stats.setdefault("event_seq_reservations", 0)
        stats.setdefault("event_seq_overdraft", 0)
        self._block_size = block_size
        self._last = 0  # last number handed out (0: none yet)
        self._end = 0  # last number of the current block
        self._spare: tuple[int, int] | None = None  # next block, reserved ahead
        self._refill: asyncio.Task[None] | None = None
        self._started = False

    @property
    def last(self) -> int:
        """The last number handed out by this process (0 before the first)."""
        return self._last

    @property
    def reserved_through(self) -> int:
        """The highest number this process may hand out without a new reservation."""
        return self._spare[1] if self._spare else self._end

    async def start(self) -> None:
        """Reserve the first block above every number reserved or stored before."""
        if self._started:
            return
        stored = await self._db.fetch(sa.select(sa.func.max(EVENTS.c.seq)))
        self._last = int(stored[0][0] or 0)
        first, self._end = await self._reserve(skip=self._block_size)
        self._last = first - 1
        self._started = True

    async def stop(self) -> None:
        """Wait for a reservation in flight (so that it is not cut mid-commit)."""
        refill = self._refill
        if refill is not None and not refill.done():
            refill.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await refill
        self._started = False

    def next(self) -> int:
        """The next number (no I/O). Raises StoreNotStartedError before `start()`."""
        if not self._started:
            raise StoreNotStartedError("Store.start() has not been awaited yet: no event seq")
        seq = self._last + 1
        if seq > self._end:
            if self._spare is not None and self._spare[1] >= seq:
                first, self._end = self._spare
                self._spare = None
                seq = max(seq, first)
            else:
                self._overdraft(seq)
        self._last = seq
        if self._spare is None and self._end - seq < self._block_size // 2:
            self._start_refill()
        return seq

    def _overdraft(self, seq: int) -> None:
        """No reserved number left (the database has been unwritable for a while): keep
        numbering, as the trading path must not stop; the next reservation covers these."""
        self._stats["event_seq_overdraft"] += 1
        if self._stats["event_seq_overdraft"] == 1:
            log.error(
                "event seq %d is beyond the reservation %d (database not writable?): a crash "
                "before the next reservation commits could reuse such numbers",
                seq,
                self._end,
            )
        self._end = seq

    def _start_refill(self) -> None:
        if self._refill is None or self._refill.done():
            self._refill = asyncio.get_running_loop().create_task(
                self._refill_loop(), name="store-event-seq"
            )

    async def _refill_loop(self) -> None:
        delay_s = 0.05
        while True:
            try:
                first, last = await self._reserve()
            except StoreError as err:
                log.error("cannot reserve event sequence numbers (will retry): %s", err)
                await asyncio.sleep(delay_s)
                delay_s = min(5.0, delay_s * 2)
                continue
            first = max(first, self._last + 1)  # numbers overdrawn while this was in flight
            if first > last:
                continue
            if self._last >= self._end:  # overdrawn: switch now
                self._end = last
            else:
                self._spare = (first, last)
            return

    async def _reserve(self, skip: int = 0) -> tuple[int, int]:
        """Atomically move the reservation to max(reserved, last handed out) + skip +
        block_size; returns the new block (its last `block_size` numbers)."""
        floor = self._last
        current = EVENT_SEQUENCE.c.reserved_through
        statement = (
            sa.update(EVENT_SEQUENCE)
            .where(EVENT_SEQUENCE.c.name == SEQUENCE_NAME)
            .values(
                reserved_through=sa.case((current > floor, current), else_=floor)
                + (skip + self._block_size)
            )
            .returning(current)
        )
        async with self._db.transaction() as connection:
            reserved = (await connection.execute(statement)).scalar_one_or_none()
        if reserved is None:
            raise StoreWriteError(
                f"{self._db.safe_url} has no '{SEQUENCE_NAME}' row in event_sequence: "
                "run `etp db upgrade`"
            )
        self._stats["event_seq_reservations"] += 1
        return int(reserved) - self._block_size + 1, int(reserved)
