"""The in-process bus: order, kind filter, a slow subscriber told it lagged, and catch-up."""

import asyncio

import pytest

from hub.events import (
    Event,
    EventKind,
    EventLog,
    EventLogClosedError,
    EventLogNotStartedError,
    Lagged,
    UnknownEventKindError,
)
from hub.store import InvalidValueError, Store


async def test_subscribers_get_every_event_in_seq_order(events: EventLog):
    subscription = events.subscribe()
    emitted = [events.emit(EventKind.BID_PLACED, auction_id=7, price_mc=n) for n in range(50)]
    received = [await subscription.get() for _ in range(50)]
    assert received == emitted
    assert [event.seq for event in received] == sorted({event.seq for event in received})
    assert received[3].payload == {"price_mc": 3} and received[3].auction_id == 7
    assert subscription.get_nowait() is None


async def test_a_kind_filter_delivers_only_those_kinds(events: EventLog):
    devices = events.subscribe([EventKind.DEVICE_ONLINE, EventKind.DEVICE_OFFLINE])
    everything = events.subscribe()
    events.emit(EventKind.DEVICE_ONLINE, device_id=1)
    events.emit(EventKind.BID_PLACED, auction_id=1)
    events.emit(EventKind.DEVICE_OFFLINE, device_id=1)
    kinds = [(await devices.get()).kind for _ in range(2)]
    assert kinds == [EventKind.DEVICE_ONLINE, EventKind.DEVICE_OFFLINE]
    assert devices.get_nowait() is None
    assert everything.pending == 3


async def test_an_async_for_reader_ends_when_the_log_stops(store: Store):
    log = EventLog(store)
    await log.start()
    subscription = log.subscribe()

    async def read_all() -> list[Event | Lagged]:
        return [item async for item in subscription]

    reader = asyncio.create_task(read_all())
    log.emit(EventKind.TRADING_PERIOD, period=1)
    await asyncio.sleep(0)
    log.emit(EventKind.TRADING_PERIOD, period=2)
    await log.stop()
    items = await asyncio.wait_for(reader, 5)
    assert [item.payload["period"] for item in items if isinstance(item, Event)] == [1, 2]
    assert log.subscribers == 0
    with pytest.raises(EventLogClosedError):
        log.emit(EventKind.TRADING_PERIOD, period=3)


async def test_a_slow_subscriber_is_told_it_lagged_and_catches_up_from_the_store(
    events: EventLog,
):
    slow = events.subscribe(maxsize=10)
    fast = events.subscribe()
    emitted = [events.emit(EventKind.BATTERY_STATUS, device_id=n) for n in range(25)]
    assert fast.pending == 25  # the emitter never waited for the slow one

    queued = [slow.get_nowait() for _ in range(10)]
    assert queued == emitted[:10]
    lagged = slow.get_nowait()
    assert lagged == Lagged(after_seq=emitted[9].seq, dropped=15)

    emitted.append(events.emit(EventKind.BATTERY_STATUS, device_id=25))  # after the signal
    missed = await events.catch_up(slow, lagged)
    assert missed == emitted[10:]  # read from the store, including the one queued again
    assert slow.get_nowait() is None  # ... so the subscription does not repeat it
    emitted.append(events.emit(EventKind.BATTERY_STATUS, device_id=26))
    assert slow.get_nowait() == emitted[-1]


async def test_catch_up_respects_the_subscription_kinds(events: EventLog):
    trades = events.subscribe([EventKind.TRADE_RECORDED], maxsize=1)
    committed = []
    for auction_id in range(1, 4):
        events.emit(EventKind.BID_ACCEPTED, auction_id=auction_id)
        committed.append(events.emit(EventKind.TRADE_RECORDED, auction_id=auction_id))
    assert trades.get_nowait() == committed[0]
    lagged = trades.get_nowait()
    assert isinstance(lagged, Lagged) and lagged.dropped == 2
    assert await events.catch_up(trades, lagged) == committed[1:]


async def test_emit_refuses_what_cannot_be_logged(store: Store):
    log = EventLog(store)
    with pytest.raises(EventLogNotStartedError):
        log.emit(EventKind.OPERATOR_ACTION)
    await log.start()
    with pytest.raises(UnknownEventKindError, match="not an EventKind"):
        log.emit("auction_exploded")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="JSON"):
        log.emit(EventKind.OPERATOR_ACTION, who=object())
    assert log.emit(EventKind("operator_action"), action="pause").kind is EventKind.OPERATOR_ACTION
    await log.stop()


async def test_the_event_log_needs_a_started_store(database_url: str):
    store = Store(database_url)
    with pytest.raises(EventLogNotStartedError, match="start the Store"):
        await EventLog(store).start()
