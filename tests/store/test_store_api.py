"""The Store API on SQLite and PostgreSQL: migrations, trades, outbox, auctions, batched rows."""

import asyncio

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hub.store import (
    AuctionStateError,
    InvalidValueError,
    Store,
    StoreClosedError,
    UnknownAuctionError,
    UnknownTradeError,
    head_revision,
)
from hub.store.models import StoreModel

TABLES = {
    "devices", "auctions", "bids", "trades", "settlements", "events", "metrics", "api_keys"
}


async def _open(store: Store, device_id: int = 7, opened_ms: int = 1_000) -> int:
    return await store.open_auction(
        device_id=device_id,
        site="site1",
        mechanism="ascending",
        lot_wh=2_000,
        reserve_mc=15_000,
        opened_ms=opened_ms,
    )


async def _trade(store: Store, auction_id: int, bidder_id: int = 1001, price_mc: int = 21_500):
    return await store.record_trade(
        auction_id=auction_id,
        device_id=7,
        bidder_id=bidder_id,
        price_mc=price_mc,
        energy_wh=2_000,
        reserve_mc=15_000,
        confirmed_ms=5_000,
    )


async def _closed_trade(store: Store, auction_id: int, trade_status: str = "verified"):
    """A trade recorded, then decided as its auction closes (verified: its battery
    acknowledged it)."""
    trade, created = await _trade(store, auction_id)
    await store.close_auction(
        auction_id,
        status="cleared",
        clearing_price_mc=trade.price_mc,
        winner_id=trade.bidder_id,
        energy_wh=trade.energy_wh,
        closed_ms=6_000,
        trade_status=trade_status,
    )
    return trade, created


async def _count(store: Store, table: str) -> int:
    async with store.sql.connect() as connection:
        result = await connection.execute(sa.text(f"SELECT count(*) FROM {table}"))
        return int(result.scalar_one())


async def test_migrations_from_empty_create_the_model_schema(database_url: str):
    store = Store(database_url)
    await store.start()
    try:
        assert store.revision == head_revision()
        assert await store.current_revision() == head_revision()

        def inspect(connection: sa.Connection) -> tuple[set[str], list]:
            tables = set(sa.inspect(connection).get_table_names())
            diff = compare_metadata(MigrationContext.configure(connection), StoreModel.metadata)
            return tables, diff

        async with store.sql.connect() as connection:
            tables, diff = await connection.run_sync(inspect)
        assert tables >= TABLES | {"alembic_version"}
        assert diff == [], f"migrations and models disagree: {diff}"
    finally:
        await store.close()

    # Starting again on the migrated database changes nothing and keeps the data path working.
    async with Store(database_url) as again:
        assert again.revision == head_revision()
        assert await _open(again) == 1


async def test_record_trade_is_idempotent_per_auction(store: Store):
    auction_id = await _open(store)
    trade, created = await _trade(store, auction_id)
    assert created is True
    assert (trade.auction_id, trade.bidder_id, trade.price_mc) == (auction_id, 1001, 21_500)

    # A retry (e.g. after a crash before BidConfirm) returns the stored trade, even with
    # different numbers: the first confirmed trade wins.
    again, created_again = await _trade(store, auction_id, bidder_id=1002, price_mc=30_000)
    assert created_again is False
    assert again == trade
    assert await store.list_trades() == [trade]


async def test_a_trade_is_settled_only_once_its_battery_proved_it(store: Store):
    """Recorded before its confirm leaves: no settlement. Verified when its auction closes:
    one outbox row, in the same transaction; a second verification adds none."""
    auction_id = await _open(store)
    trade, _ = await _trade(store, auction_id)
    assert trade.status == "recorded"
    assert await store.list_settlements() == []

    await _trade(store, auction_id)  # a retry
    await store.close_auction(
        auction_id,
        status="cleared",
        clearing_price_mc=trade.price_mc,
        winner_id=trade.bidder_id,
        energy_wh=trade.energy_wh,
        closed_ms=6_000,
        trade_status="verified",
    )
    (outbox,) = await store.pending_settlements()
    assert (outbox.trade_id, outbox.status, outbox.attempts) == (trade.id, "pending", 0)
    assert outbox.signature is None and outbox.error is None
    assert not await store.resolve_trade(trade.id, "verified")  # already decided
    assert not await store.resolve_trade(trade.id, "void")
    assert len(await store.list_settlements()) == 1
    assert [t.status for t in await store.list_trades()] == ["verified"]


async def test_an_unverified_trade_is_decided_later_by_its_battery(store: Store):
    """Closed unverified: it neither counts nor settles; the battery's word decides it once."""
    kept, voided = await _open(store, device_id=1), await _open(store, device_id=2)
    for auction_id in (kept, voided):
        await _closed_trade(store, auction_id, "unverified")
    first, second = await store.list_trades(status="unverified")
    assert await store.list_settlements() == []

    assert await store.resolve_trade(first.id, "verified")
    assert await store.resolve_trade(second.id, "void")
    assert [row.trade_id for row in await store.pending_settlements()] == [first.id]
    assert [t.id for t in await store.list_trades(status="verified")] == [first.id]
    assert [t.id for t in await store.list_trades(status="void")] == [second.id]
    voided_auction = await store.get_auction(voided)
    assert voided_auction is not None
    assert (voided_auction.status, voided_auction.winner_id) == ("terminated", None)
    with pytest.raises(InvalidValueError, match="trade status"):
        await store.resolve_trade(first.id, "paid")


async def test_an_auction_with_a_trade_stays_open_until_closed(store: Store):
    """A restart sees which open auctions already traded (their BidConfirm must be resent)."""
    traded = await _open(store, device_id=1)
    untraded = await _open(store, device_id=2)
    trade, _ = await _trade(store, traded)

    assert [a.id for a in await store.open_auctions()] == [traded, untraded]
    assert await store.get_trade(traded) == trade
    assert await store.get_trade(untraded) is None

    await store.close_auction(
        traded,
        status="cleared",
        clearing_price_mc=trade.price_mc,
        winner_id=trade.bidder_id,
        energy_wh=trade.energy_wh,
        closed_ms=6_000,
    )
    auction = await store.get_auction(traded)
    assert auction is not None
    assert (auction.status, auction.clearing_price_mc, auction.winner_id) == (
        "cleared",
        21_500,
        1001,
    )
    assert [a.id for a in await store.open_auctions()] == [untraded]


async def test_trade_for_unknown_auction_is_refused(store: Store):
    with pytest.raises(UnknownAuctionError, match="auction 4242"):
        await _trade(store, 4242)
    assert await store.list_trades() == []
    assert await store.list_settlements() == []


async def test_settlement_progress(store: Store):
    first, _ = await _closed_trade(store, await _open(store))
    second, _ = await _closed_trade(store, await _open(store))

    await store.mark_settlement(first.id, status="submitted", signature="5igSig", updated_ms=9)
    assert [row.trade_id for row in await store.pending_settlements()] == [second.id]
    resumable = await store.pending_settlements(statuses=("pending", "submitted"))
    assert [row.trade_id for row in resumable] == [first.id, second.id]

    await store.mark_settlement(first.id, status="settled", updated_ms=10)
    await store.mark_settlement(second.id, status="failed", error="ledger unreachable")
    rows = {row.trade_id: row for row in await store.list_settlements()}
    assert (rows[first.id].status, rows[first.id].attempts, rows[first.id].signature) == (
        "settled",
        1,
        "5igSig",
    )
    assert (rows[second.id].status, rows[second.id].error) == ("failed", "ledger unreachable")
    assert await store.pending_settlements() == []

    with pytest.raises(UnknownTradeError):
        await store.mark_settlement(999, status="settled")
    with pytest.raises(InvalidValueError, match="settlement status"):
        await store.mark_settlement(first.id, status="done")


async def test_open_and_close_auctions(store: Store):
    first = await _open(store, device_id=1, opened_ms=100)
    second = await _open(store, device_id=2, opened_ms=200)
    third = await _open(store, device_id=3, opened_ms=300)
    assert first < second < third and third < 2**32
    assert [a.id for a in await store.open_auctions()] == [first, second, third]

    await store.close_auction(first, status="no_sale", closed_ms=150)
    await store.close_auction(
        second,
        status="cleared",
        clearing_price_mc=20_000,
        winner_id=1003,
        energy_wh=500,
        closed_ms=250,
    )
    assert [a.id for a in await store.open_auctions()] == [third]

    closed = await store.get_auction(second)
    assert closed is not None
    assert (closed.status, closed.clearing_price_mc, closed.winner_id, closed.energy_wh) == (
        "cleared",
        20_000,
        1003,
        500,
    )
    assert closed.closed_ms == 250

    # Same status again is allowed and keeps what it does not mention; another is refused.
    await store.close_auction(second, status="cleared", closed_ms=260)
    closed = await store.get_auction(second)
    assert closed is not None and closed.clearing_price_mc == 20_000
    with pytest.raises(AuctionStateError, match="already 'no_sale'"):
        await store.close_auction(first, status="terminated", closed_ms=400)
    with pytest.raises(UnknownAuctionError):
        await store.close_auction(9999, status="no_sale", closed_ms=400)
    with pytest.raises(InvalidValueError):
        await store.close_auction(third, status="open", closed_ms=400)

    # A restarting hub terminates what was left open.
    assert await store.terminate_open_auctions(closed_ms=500) == [third]
    assert await store.open_auctions() == []
    newest_first = await store.list_auctions()
    assert [a.id for a in newest_first] == [third, second, first]
    assert [a.status for a in newest_first] == ["terminated", "cleared", "no_sale"]
    assert [a.id for a in await store.list_auctions(limit=1)] == [third]


async def test_upsert_device_keeps_fields_not_given(store: Store):
    await store.upsert_device(
        7, "site1", online=True, health=0, energy_total_wh=10_000, soc=8_000, seen_ms=10
    )
    await store.upsert_device(7, "site1", soc=7_500, voltage_mv=51_200, seen_ms=20)
    await store.upsert_device(8, "site1", seen_ms=30)
    await store.upsert_device(7, "site1", online=False, seen_ms=40)
    seven, eight = await store.list_devices()
    assert (seven.device_id, seven.online, seven.health, seven.energy_total_wh) == (
        7,
        False,
        0,
        10_000,
    )
    assert (seven.soc, seven.voltage_mv, seven.first_seen_ms, seven.last_seen_ms) == (
        7_500,
        51_200,
        10,
        40,
    )
    assert (eight.device_id, eight.online, eight.soc) == (8, False, None)


async def test_batched_bids_events_metrics_are_visible_after_flush(store: Store):
    auction_id = await _open(store)
    for number in range(250):
        store.record_bid(
            auction_id=auction_id,
            bidder_id=1000 + number % 5,
            price_mc=15_000 + number,
            energy_wh=2_000,
            round=number // 5,
            outcome="rejected" if number % 2 else "sent",
            reason=3 if number % 2 else None,
            ts_ms=2_000 + number,
        )
    store.record_event("auction_opened", device_id=7, auction_id=auction_id, ts_ms=1_000)
    store.record_event("trade", auction_id=auction_id, payload={"price": 21_500}, ts_ms=5_000)
    store.record_metric("bids_per_s", 812.5, labels={"site": "site1"}, ts_ms=6_000)

    # Queued, not yet written (this store's flusher waits an hour).
    assert store.pending_writes == 253
    assert await _count(store, "bids") == 0
    await store.flush()
    assert store.pending_writes == 0
    assert await _count(store, "bids") == 250

    bids = await store.list_bids(auction_id)
    assert [bid.price_mc for bid in bids] == [15_000 + number for number in range(250)]
    assert (bids[1].outcome, bids[1].reason, bids[0].reason) == ("rejected", 3, None)
    assert await store.list_bids(auction_id + 1) == []

    events = await store.list_events()
    assert [(e.kind, e.payload) for e in events] == [
        ("auction_opened", {}),
        ("trade", {"price": 21_500}),
    ]
    assert await store.list_events(since_id=events[0].id) == events[1:]
    assert await store.list_events(limit=1) == events[:1]

    (metric,) = await store.list_metrics("bids_per_s")
    assert (metric.value, metric.labels, metric.ts_ms) == (812.5, {"site": "site1"}, 6_000)


async def test_reads_of_batched_tables_see_queued_rows(store: Store):
    store.record_event("device_online", device_id=3, ts_ms=1)
    (event,) = await store.list_events()
    assert (event.kind, event.device_id) == ("device_online", 3)


async def test_background_flusher_writes_without_being_asked(database_url: str):
    async with Store(database_url, flush_interval_s=0.05) as store:
        store.record_event("heartbeat", device_id=1, ts_ms=1)
        for _ in range(100):
            if await _count(store, "events") == 1:
                break
            await asyncio.sleep(0.05)
        assert await _count(store, "events") == 1


async def test_close_flushes_queued_rows(database_url: str):
    store = Store(database_url, flush_interval_s=3600)
    await store.start()
    auction_id = await _open(store)
    store.record_bid(
        auction_id=auction_id,
        bidder_id=1001,
        price_mc=1,
        energy_wh=1,
        round=0,
        outcome="sent",
        reason=None,
        ts_ms=1,
    )
    store.record_event("shutdown", ts_ms=2)
    await store.close()
    with pytest.raises(StoreClosedError):
        store.record_event("late", ts_ms=3)

    async with Store(database_url) as reopened:
        assert len(await reopened.list_bids()) == 1
        assert [e.kind for e in await reopened.list_events()] == ["shutdown"]


async def test_bad_batched_rows_are_refused_at_the_call(store: Store):
    with pytest.raises(InvalidValueError, match="bid outcome"):
        store.record_bid(
            auction_id=1,
            bidder_id=1,
            price_mc=1,
            energy_wh=1,
            round=0,
            outcome="won",
            reason=None,
            ts_ms=1,
        )
    with pytest.raises(InvalidValueError, match="JSON"):
        store.record_event("x", payload={"when": object()}, ts_ms=1)
    assert store.pending_writes == 0


async def test_two_stores_racing_on_one_database_record_each_trade_once(database_url: str):
    """Two hub workers (or a retry racing the original) never duplicate a trade."""
    async with Store(database_url) as first, Store(database_url) as second:
        auctions = [await _open(first, device_id=n) for n in range(1, 21)]

        async def confirm_all(store: Store, bidder_id: int) -> int:
            created = 0
            for auction_id in auctions:
                _, was_created = await _trade(store, auction_id, bidder_id=bidder_id)
                created += was_created
            return created

        made = await asyncio.gather(confirm_all(first, 1001), confirm_all(second, 1002))
        assert sum(made) == len(auctions)
        trades = await second.list_trades()
        assert sorted(t.auction_id for t in trades) == auctions
        assert await first.list_settlements() == []


def test_bad_database_url_is_explained():
    with pytest.raises(InvalidValueError, match="unsupported database 'mysql'"):
        Store("mysql://localhost/etp")


async def test_workers_starting_together_migrate_once(database_url: str):
    """Several hub workers sharing one database may start at the same moment."""
    workers = [Store(database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(worker.start() for worker in workers))
        assert {worker.revision for worker in workers} == {head_revision()}
        ids = await asyncio.gather(*(_open(worker) for worker in workers))
        assert sorted(ids) == [1, 2, 3]
    finally:
        for worker in workers:
            await worker.close()


async def test_u32_ids_from_the_wire_are_stored_exactly(store: Store):
    """Device, bidder and auction ids are u32 on the wire: the largest must round-trip."""
    u32_max = 2**32 - 1
    await store.upsert_device(u32_max, "site1", online=True, seen_ms=1)
    auction_id = await _open(store, device_id=u32_max)
    trade, _ = await store.record_trade(
        auction_id=auction_id,
        device_id=u32_max,
        bidder_id=u32_max,
        price_mc=2**31 - 1,
        energy_wh=2**40 - 1,
        reserve_mc=0,
        confirmed_ms=2**53 - 1,
    )
    store.record_bid(
        auction_id=u32_max,
        bidder_id=u32_max,
        price_mc=2**31 - 1,
        energy_wh=2**40 - 1,
        round=0xFFFF,
        outcome="rejected",
        reason=255,
        ts_ms=2**53 - 1,
    )
    store.record_event("bid_unknown_auction", device_id=u32_max, auction_id=u32_max, ts_ms=1)
    (device,) = await store.list_devices()
    (bid,) = await store.list_bids(u32_max)
    (event,) = await store.list_events()
    assert device.device_id == u32_max
    assert (trade.bidder_id, trade.energy_wh) == (u32_max, 2**40 - 1)
    assert (await store.list_trades())[0] == trade
    assert (bid.auction_id, bid.bidder_id, bid.energy_wh, bid.ts_ms) == (
        u32_max,
        u32_max,
        2**40 - 1,
        2**53 - 1,
    )
    assert (event.device_id, event.auction_id) == (u32_max, u32_max)

    with pytest.raises(UnknownAuctionError):
        await _trade(store, u32_max)  # no auction the store allocated can be that large


async def test_values_that_cannot_be_stored_are_refused_at_the_call(store: Store):
    with pytest.raises(InvalidValueError, match="price_mc must be an int"):
        store.record_bid(
            auction_id=1,
            bidder_id=1,
            price_mc=21.5,  # type: ignore[arg-type]
            energy_wh=1,
            round=0,
            outcome="sent",
            reason=None,
            ts_ms=1,
        )
    with pytest.raises(InvalidValueError, match="64-bit"):
        store.record_event("x", device_id=2**64, ts_ms=1)
    with pytest.raises(InvalidValueError, match="event kind"):
        store.record_event("", ts_ms=1)
    with pytest.raises(InvalidValueError, match="metric name"):
        store.record_metric("m" * 200, 1.0, ts_ms=1)
    with pytest.raises(InvalidValueError, match="site"):
        await store.open_auction(
            device_id=1, site="", mechanism="ascending", lot_wh=1, reserve_mc=1, opened_ms=1
        )
    assert store.pending_writes == 0
    assert await store.list_auctions() == []


async def test_migrations_revert_cleanly_and_apply_again(database_url: str):
    from sqlalchemy.ext.asyncio import create_async_engine

    from hub.store.migrate import current_revision, downgrade_database, upgrade_database

    engine = create_async_engine(database_url)
    try:
        assert await upgrade_database(engine) == (None, head_revision())
        assert await downgrade_database(engine, "base") is None

        def table_names(connection: sa.Connection) -> set[str]:
            return set(sa.inspect(connection).get_table_names())

        async with engine.connect() as connection:
            assert not (await connection.run_sync(table_names)) & TABLES
        assert await upgrade_database(engine) == (None, head_revision())
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_close_during_background_flushes_writes_every_row_once(database_url: str):
    store = Store(database_url, flush_interval_s=0.001, flush_batch_rows=50)
    await store.start()
    for number in range(3000):
        store.record_event("tick", device_id=number, ts_ms=number)
        if number % 100 == 0:
            await asyncio.sleep(0)  # the flusher runs in between, as in the hub
    await store.close()
    async with Store(database_url) as reopened:
        assert await _count(reopened, "events") == 3000
        events = await reopened.list_events(limit=5000)
        assert [e.device_id for e in events] == list(range(3000))


async def test_auction_offer_is_updated_to_what_the_battery_answered(store: Store):
    first = await _open(store, device_id=1, opened_ms=100)
    second = await _open(store, device_id=2, opened_ms=200)
    await store.close_auction(second, status="no_sale", closed_ms=250)
    found = await store.update_auction_offers([(first, 750, 21_500), (second, 300, 19_000)])
    assert found == 2
    rows = {a.id: a for a in await store.list_auctions()}
    assert (rows[first].lot_wh, rows[first].reserve_mc, rows[first].status) == (750, 21_500, "open")
    assert (rows[second].lot_wh, rows[second].reserve_mc, rows[second].status) == (
        300,
        19_000,
        "no_sale",
    )
    assert await store.update_auction_offers([]) == 0
    assert await store.update_auction_offers([(9999, 1, 1)]) == 0
    with pytest.raises(InvalidValueError):
        await store.update_auction_offers([(first, 2**70, 20_000)])


async def test_trade_status_migration_classifies_existing_trades(database_url: str):
    """0003 on a database of the previous version: a trade whose settlement failed is void,
    one whose auction is still open is recorded, one the hub logged unverified is unverified,
    the rest verified; only verified trades keep their settlement outbox row."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from hub.store.migrate import upgrade_database

    engine = create_async_engine(database_url)
    try:
        await upgrade_database(engine, "0002_event_seq")
        async with engine.begin() as connection:
            for auction_id, status in ((1, "cleared"), (2, "terminated"), (3, "open"),
                                       (4, "cleared")):
                await connection.execute(sa.text(
                    "INSERT INTO auctions (id, device_id, site, mechanism, lot_wh, reserve_mc,"
                    " status, opened_ms) VALUES (:id, 7, 's', 'ascending', 1000, 1, :status, 1)"
                ), {"id": auction_id, "status": status})
                await connection.execute(sa.text(
                    "INSERT INTO trades (id, auction_id, device_id, bidder_id, price_mc,"
                    " energy_wh, reserve_mc, confirmed_ms) VALUES (:id, :id, 7, 1001, 2, 3, 1, 1)"
                ), {"id": auction_id})
                await connection.execute(sa.text(
                    "INSERT INTO settlements (trade_id, status, attempts, updated_ms)"
                    " VALUES (:id, :status, 0, 1)"
                ), {"id": auction_id, "status": "failed" if auction_id == 2 else "pending"})
            await connection.execute(sa.text(
                "INSERT INTO events (seq, kind, auction_id, ts_ms) VALUES (1, 'trade_unverified',"
                " 4, 1)"
            ))
        await upgrade_database(engine)
    finally:
        await engine.dispose()
    async with Store(database_url) as store:
        assert {t.auction_id: t.status for t in await store.list_trades()} == {
            1: "verified", 2: "void", 3: "recorded", 4: "unverified",
        }
        assert [row.trade_id for row in await store.list_settlements()] == [1]
