"""EventLog: the site's one event log, numbered, stored behind the trading path, published."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from hub.events.bus import EventBus, Lagged, Subscription
from hub.events.kinds import Event, EventKind, kind_of
from hub.store import EventRow, Store
from shared_etp.compat import now_ms

log = structlog.get_logger(__name__)

__all__ = [
    "EventLog",
    "EventLogClosedError",
    "EventLogError",
    "EventLogNotStartedError",
    "UnknownEventKindError",
]


class EventLogError(Exception):
    """Base class of the event log's errors."""


class EventLogNotStartedError(EventLogError):
    """The log was used before `await event_log.start()` (which needs a started Store)."""


class EventLogClosedError(EventLogError):
    """`emit` after `await event_log.stop()`: stop the components that emit first."""


class UnknownEventKindError(EventLogError, ValueError):
    """`emit` got a kind that is not an EventKind."""


def _event(row: EventRow) -> Event:
    return Event(
        seq=row.seq,
        kind=kind_of(row.kind),
        ts_ms=row.ts_ms,
        device_id=row.device_id,
        auction_id=row.auction_id,
        payload=row.payload,
    )


class EventLog:
    """Emit typed events; subscribers get them at once, the store writes them in batches.

    Sequence numbers come from the store (blocks reserved durably before use): strictly
    increasing in emit order within this process, never reused after a restart or a crash,
    with gaps where a crash lost unwritten events or a block was left unused. Call `emit` and
    `subscribe` from the event loop's thread only.
    """

    def __init__(
        self,
        store: Store,
        *,
        default_backlog: int = 10_000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._bus = EventBus()
        self._clock = clock
        self._default_backlog = default_backlog
        self._started = False
        self._stopped = False
        # hub workers sharing a site: events are numbered when stored, and published here
        # from the store (every worker's, in seq order) by `follow()`
        self.shared = store.shared_event_seq
        self._cursor = 0  # shared: seq of the last event published from the store
        self._follower: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        """True between `start()` and `stop()`."""
        return self._started and not self._stopped

    @property
    def last_seq(self) -> int:
        """The seq of the last event numbered by this process (before the first: just below
        the first one it will hand out). Subscriptions start after it. Shared: the last
        event of any worker published here."""
        return self._cursor if self.shared else self._store.issued_event_seq

    @property
    def subscribers(self) -> int:
        """Open subscriptions."""
        return len(self._bus)

    async def start(self) -> None:
        """Begin accepting events; the Store must be started (it holds the reservation)."""
        if self._stopped:
            raise EventLogClosedError("this EventLog was stopped; create a new one")
        if not self._store.started:
            raise EventLogNotStartedError(
                "start the Store before the EventLog: `await store.start()` reserves the "
                "event sequence numbers"
            )
        self._started = True
        if self.shared:
            self._cursor = await self._store.last_event_seq()
            self._follower = asyncio.create_task(self._follow(), name="event-follower")

    async def stop(self) -> None:
        """Refuse new events, end every subscription, write queued events to the store."""
        if self._stopped:
            return
        self._stopped = True
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        self._bus.close_all()
        if self._store.started:
            await self._store.flush()

    def emit(
        self,
        kind: EventKind,
        /,
        *,
        device_id: int | None = None,
        auction_id: int | None = None,
        **payload: Any,
    ) -> Event:
        """Number, publish and queue for storage one event; returns it. No await, no I/O.

        `payload` values must be JSON-encodable (hub.store.InvalidValueError otherwise, as
        for ids that do not fit 64 bits). Raises EventLogNotStartedError before `start()` and
        EventLogClosedError after `stop()`.
        """
        if not self._started:
            raise EventLogNotStartedError("await EventLog.start() before emitting events")
        if self._stopped:
            raise EventLogClosedError(f"event {kind!s} emitted after EventLog.stop()")
        if not isinstance(kind, EventKind):
            try:
                kind = EventKind(kind)
            except ValueError:
                raise UnknownEventKindError(
                    f"{kind!r} is not an EventKind; add it to hub.events.EventKind first"
                ) from None
        ts_ms = self._clock()
        seq = self._store.record_event(
            kind.value,
            device_id=device_id,
            auction_id=auction_id,
            payload=payload or None,
            ts_ms=ts_ms,
        )
        event = Event(seq, kind, ts_ms, device_id, auction_id, payload)
        if not self.shared:  # shared: numbered when stored, then published by _follow
            self._bus.publish(event)
        return event

    async def _follow(self, interval_s: float = 0.05, page: int = 1000) -> None:
        """Shared: publish every worker's stored events in seq order (polls the store)."""
        while True:
            try:
                rows = await self._store.list_events(self._cursor, limit=page, flush=False)
            except Exception as exc:  # the database is away: try again, nothing is lost
                log.warning("cannot read the site's events (will retry)", error=str(exc))
                await asyncio.sleep(1.0)
                continue
            for row in rows:
                self._bus.publish(_event(row))
            if rows:
                self._cursor = rows[-1].seq
            if len(rows) < page:
                await asyncio.sleep(interval_s)

    def subscribe(
        self, kinds: Iterable[EventKind] | None = None, *, maxsize: int | None = None
    ) -> Subscription:
        """Events emitted from now on (of `kinds`, default all), in seq order.

        At most `maxsize` events wait in the subscription (default 10,000); past that the
        emitter does not wait: the subscription yields `Lagged(after_seq, dropped)` once its
        backlog is taken, and the missed events are in the store (see `catch_up`).
        """
        if self._stopped:
            raise EventLogClosedError("cannot subscribe to a stopped EventLog")
        return self._bus.subscribe(kinds, maxsize or self._default_backlog, after_seq=self.last_seq)

    async def read(
        self,
        after_seq: int = 0,
        *,
        limit: int = 500,
        kinds: Iterable[EventKind | str] | None = None,
    ) -> list[Event]:
        """Stored events with seq > after_seq (of `kinds`), oldest first, at most `limit`.

        Includes every event emitted so far (queued ones are written first). Page with the
        seq of the last event returned.
        """
        kind_names = None if kinds is None else [str(kind) for kind in kinds]
        rows = await self._store.list_events(after_seq, limit=limit, kinds=kind_names)
        return [_event(row) for row in rows]

    async def catch_up(
        self, subscription: Subscription, lagged: Lagged, *, page: int = 1000
    ) -> list[Event]:
        """The events `subscription` missed after `lagged`, from the store, in seq order.

        Afterwards the subscription skips the events returned here, so reading on from it
        neither repeats nor misses any.
        """
        missed: list[Event] = []
        after_seq = lagged.after_seq
        kinds = subscription.kinds
        while True:
            batch = await self.read(after_seq, limit=page, kinds=kinds)
            missed.extend(batch)
            if len(batch) < page:
                break
            after_seq = batch[-1].seq
        if missed:
            subscription.skip_through(missed[-1].seq)
        return missed
