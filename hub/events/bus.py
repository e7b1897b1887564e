"""In-process publication of events: subscriptions with a bounded backlog that never block
the emitter; a subscriber that falls behind is told from which seq to re-read the store."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from hub.events.kinds import Event, EventKind

__all__ = ["EventBus", "Lagged", "Subscription", "SubscriptionClosedError"]


class SubscriptionClosedError(Exception):
    """`get()` on a subscription that was closed (by its owner or by EventLog.stop)."""


@dataclass(frozen=True, slots=True)
class Lagged:
    """The subscriber's backlog overflowed and `dropped` events were not queued for it.

    Every event it missed has seq > `after_seq`: re-read them from the store
    (`EventLog.catch_up` or `Store.list_events(after_seq=...)`). Events queued after this
    marker follow it; skip any whose seq you already read from the store.
    """

    after_seq: int
    dropped: int


class Subscription:
    """Events of the chosen kinds, in seq order: `async for item in subscription` yields
    Event, or Lagged after an overflow. Close it (or use `with`) to unsubscribe."""

    def __init__(
        self, bus: EventBus, kinds: frozenset[str] | None, maxsize: int, after_seq: int
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"a subscription backlog holds at least 1 event, not {maxsize}")
        self._bus = bus
        self.kinds = kinds
        self.maxsize = maxsize
        self._backlog: deque[Event] = deque()
        self._last_queued = after_seq  # seq of the last event queued (or start point)
        self._skip_through = after_seq
        self._lag_after: int | None = None
        self._dropped = 0
        self._ready = asyncio.Event()
        self.closed = False

    def wants(self, event: Event) -> bool:
        """True if this subscription takes events of the event's kind."""
        return self.kinds is None or event.kind in self.kinds

    def offer(self, event: Event) -> None:
        """Queue `event` (called by the bus; never blocks, never raises)."""
        if self.closed or event.seq <= self._skip_through:
            return
        if self._lag_after is not None:
            self._dropped += 1
        elif len(self._backlog) >= self.maxsize:
            self._lag_after = self._last_queued
            self._dropped = 1
        else:
            self._backlog.append(event)
            self._last_queued = event.seq
        self._ready.set()

    def skip_through(self, seq: int) -> None:
        """Drop queued and future events with seq <= `seq` (already read from the store)."""
        self._skip_through = max(self._skip_through, seq)
        while self._backlog and self._backlog[0].seq <= seq:
            self._backlog.popleft()

    @property
    def pending(self) -> int:
        """Events queued, not yet taken."""
        return len(self._backlog)

    def get_nowait(self) -> Event | Lagged | None:
        """The next item, or None when nothing is queued."""
        if self._backlog:
            return self._backlog.popleft()
        if self._lag_after is not None:
            lagged = Lagged(after_seq=self._lag_after, dropped=self._dropped)
            self._lag_after, self._dropped = None, 0
            return lagged
        return None

    async def get(self) -> Event | Lagged:
        """Wait for the next item; raises SubscriptionClosedError once closed and drained."""
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self.closed:
                raise SubscriptionClosedError("this subscription is closed")
            self._ready.clear()
            await self._ready.wait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event | Lagged:
        try:
            return await self.get()
        except SubscriptionClosedError:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe; items already queued can still be taken, then iteration ends."""
        if not self.closed:
            self.closed = True
            self._bus.remove(self)
            self._ready.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus:
    """Delivers each published event to every open subscription that wants its kind."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []

    def subscribe(
        self, kinds: Iterable[EventKind | str] | None, maxsize: int, after_seq: int
    ) -> Subscription:
        """A new subscription receiving events published from now on."""
        wanted = None if kinds is None else frozenset(str(kind) for kind in kinds)
        subscription = Subscription(self, wanted, maxsize, after_seq)
        self._subscriptions.append(subscription)
        return subscription

    def remove(self, subscription: Subscription) -> None:
        """Stop delivering to `subscription` (no error if already removed)."""
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def publish(self, event: Event) -> None:
        """Queue `event` for its subscribers (synchronous; a full backlog marks a lag)."""
        for subscription in self._subscriptions:
            if subscription.kinds is None or event.kind in subscription.kinds:
                subscription.offer(event)

    def close_all(self) -> None:
        """Close every subscription (their iterations end after what they had queued)."""
        for subscription in list(self._subscriptions):
            subscription.close()

    def __len__(self) -> int:
        return len(self._subscriptions)
