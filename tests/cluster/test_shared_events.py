"""The event log of hub workers sharing one PostgreSQL: events are numbered when written, so a
reader paging by seq never skips one committed late, and every worker publishes every worker's
events in the same order (what each gateway's /ws sends)."""

from __future__ import annotations

import asyncio

import pytest

from hub.events import Event, EventKind, EventLog
from hub.store import Store
from hub.tools.pg import postgres_missing_reason, postgres_server

pytestmark = pytest.mark.skipif(postgres_missing_reason() is not None,
                                reason=str(postgres_missing_reason()))


async def _collect(log: EventLog, count: int, out: list[Event]) -> None:
    with log.subscribe() as subscription:
        async for item in subscription:
            if isinstance(item, Event):
                out.append(item)
                if len(out) == count:
                    return


async def test_two_workers_publish_the_same_events_in_one_order() -> None:
    with postgres_server() as url:
        stores = [Store(url, shared_event_seq=True, flush_interval_s=0.02) for _ in range(2)]
        for store in stores:
            await store.start()
        logs = [EventLog(store) for store in stores]
        for log in logs:
            await log.start()
        seen: list[list[Event]] = [[], []]
        per_worker = 300
        readers = [asyncio.create_task(_collect(log, 2 * per_worker, out))
                   for log, out in zip(logs, seen, strict=True)]
        await asyncio.sleep(0.1)
        for index in range(per_worker):  # both emit at once, writes interleave
            for worker, log in enumerate(logs):
                event = log.emit(EventKind.TRADING_PERIOD, period=index, worker=worker)
                assert event.seq == 0  # numbered when written, not here
            if index % 50 == 0:
                await asyncio.sleep(0.03)
        await asyncio.wait_for(asyncio.gather(*readers), 30)
        for log in logs:
            await log.stop()
        stored = await stores[0].list_events(0, limit=10_000)
        for store in stores:
            await store.close()
    order = [[(e.seq, e.payload["worker"], e.payload["period"]) for e in s] for s in seen]
    assert order[0] == order[1]  # the same events, in the same order, at both workers
    seqs = [seq for seq, _, _ in order[0]]
    assert seqs == list(range(seqs[0], seqs[0] + 2 * per_worker))  # no gap, no repeat
    assert [row.seq for row in stored] == seqs
    for worker in (0, 1):  # each worker's events keep their emit order
        periods = [period for _, w, period in order[0] if w == worker]
        assert periods == list(range(per_worker))
