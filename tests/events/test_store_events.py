"""Reading the log back: events after a seq, by kind, through the seq index; migration 0002."""

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from hub.events import EventKind, EventLog
from hub.store import Store, head_revision
from hub.store.migrate import upgrade_database


async def test_events_after_a_seq_are_exactly_the_later_ones_in_order(events: EventLog):
    emitted = [
        events.emit(kind, device_id=n)
        for n, kind in enumerate([EventKind.DEVICE_ONLINE, EventKind.BID_PLACED] * 30)
    ]
    assert await events.read(limit=1000) == emitted
    for cut in (0, 1, 29, 58, 59):
        assert await events.read(emitted[cut].seq, limit=1000) == emitted[cut + 1 :]
    assert await events.read(emitted[-1].seq) == []
    assert await events.read(emitted[9].seq, limit=5) == emitted[10:15]
    online = await events.read(emitted[9].seq, kinds=[EventKind.DEVICE_ONLINE], limit=1000)
    assert online == [e for e in emitted[10:] if e.kind is EventKind.DEVICE_ONLINE]


async def _plan(store: Store, after_seq: int, kinds: list[str] | None) -> str:
    statement = store.events_after_statement(after_seq, limit=100, kinds=kinds)
    compiled = statement.compile(store.sql.sync_engine, compile_kwargs={"literal_binds": True})
    async with store.sql.connect() as connection:
        if store.dialect == "sqlite":
            rows = await connection.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))
            return " ".join(str(row[-1]) for row in rows)
        # On a table this small PostgreSQL prefers other plans; forbid them to see that an
        # index serves both the range and the order (on a large table it picks it by itself).
        await connection.execute(sa.text("ANALYZE events"))
        await connection.execute(sa.text("SET enable_seqscan = off"))
        await connection.execute(sa.text("SET enable_bitmapscan = off"))
        rows = await connection.execute(sa.text(f"EXPLAIN {compiled}"))
        return " ".join(str(row[0]) for row in rows)


@pytest.mark.parametrize(
    ("kinds", "index"), [(None, "ix_events_seq"), (["bid_placed"], "ix_events_kind_seq")]
)
async def test_events_after_a_seq_are_read_through_an_index_without_sorting(
    events: EventLog, store: Store, kinds: list[str] | None, index: str
):
    for n in range(200):
        events.emit(EventKind.BATTERY_STATUS if n % 2 else EventKind.BID_PLACED, device_id=n)
    await store.flush()
    plan = await _plan(store, events.last_seq - 10, kinds)
    if store.dialect == "sqlite":
        assert f"USING INDEX {index}" in plan, plan
    else:
        assert "Index Scan using ix_events_" in plan, plan
    assert "TEMP B-TREE" not in plan.upper() and "Sort" not in plan, plan


async def test_migration_0002_numbers_existing_events_by_their_id(database_url: str):
    engine = create_async_engine(database_url)
    try:
        await upgrade_database(engine, "0001_initial")
        async with engine.begin() as connection:
            await connection.execute(
                sa.text(
                    "INSERT INTO events (kind, device_id, payload, ts_ms) "
                    "VALUES ('device_online', 7, '{\"health\": 0}', 1000), "
                    "('trade_void', 8, NULL, 2000), ('device_offline', 7, NULL, 3000)"
                )
            )
            await connection.execute(sa.text("DELETE FROM events WHERE kind = 'trade_void'"))
    finally:
        await engine.dispose()

    async with Store(database_url) as store:
        assert (store.migrated_from, store.revision) == ("0001_initial", head_revision())
        old = await store.list_events()
        assert [(e.seq, e.id, e.kind, e.payload) for e in old] == [
            (1, 1, "device_online", {"health": 0}),
            (3, 3, "device_offline", {}),
        ]
        log = EventLog(store)
        await log.start()
        new = log.emit(EventKind.DEVICE_ONLINE, device_id=7)
        await log.stop()
        assert new.seq > 3
        assert [e.seq for e in await log.read()] == [1, 3, new.seq]
        assert await store.last_event_seq() == new.seq
