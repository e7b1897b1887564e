"""The store's list queries on SQLite and PostgreSQL: filters, time ranges, sorting, keyset
pages that visit every row exactly once (also while rows are added), refused cursors, paged
reads for exports."""

from __future__ import annotations

import pytest

from hub.store import InvalidQueryError, ListQuery, Store
from hub.tools.bench.seed import add_trades


async def walk(store: Store, name: str, query: ListQuery) -> list[dict]:
    """Every row of `query`, following next_cursor page by page."""
    rows: list[dict] = []
    cursor = None
    while True:
        page = await store.list_page(name, ListQuery(**{**query.__dict__, "cursor": cursor}))
        assert len(page.items) <= query.limit
        rows.extend(page.items)
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


async def test_filters_and_time_range_select_the_right_trades(store: Store) -> None:
    await add_trades(store, 200)
    verified = await walk(store, "trades", ListQuery(filters={"status": ["verified"]}, limit=7))
    assert [row["id"] for row in verified] == [n for n in range(1, 201) if n % 4 == 0]
    both = await walk(
        store, "trades",
        ListQuery(filters={"device_id": [3], "bidder_id": [1001]}, limit=1000),
    )
    assert [row["id"] for row in both] == [n for n in range(1, 201) if n % 7 == 3 and n % 3 == 1]
    in_range = await walk(
        store, "trades", ListQuery(from_ms=1_000_010, to_ms=1_000_020, limit=3)
    )
    # from_ms inclusive, to_ms exclusive, on confirmed_ms
    assert [row["id"] for row in in_range] == list(range(20, 40))
    several = await walk(store, "trades", ListQuery(filters={"status": ["void", "recorded"]}))
    assert len(several) == 100 and {row["status"] for row in several} == {"void", "recorded"}
    assert set(several[0]) == {
        "id", "auction_id", "device_id", "bidder_id", "price_mc", "energy_wh", "reserve_mc",
        "confirmed_ms", "status",
    }


@pytest.mark.parametrize("sort", ["id", "time"])
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_pages_visit_every_row_once_in_order(store: Store, sort: str, order: str) -> None:
    await add_trades(store, 101)
    rows = await walk(store, "trades", ListQuery(sort=sort, order=order, limit=10))
    keys = [
        (row["id"],) if sort == "id" else (row["confirmed_ms"], row["id"]) for row in rows
    ]
    assert len(keys) == 101 and len(set(keys)) == 101
    assert keys == sorted(keys, reverse=order == "desc")
    auctions = await walk(store, "auctions", ListQuery(sort=sort, order=order, limit=9))
    assert sorted(row["id"] for row in auctions) == list(range(1, 102))


async def test_a_walk_sees_every_row_once_while_new_rows_arrive(store: Store) -> None:
    await add_trades(store, 50)
    seen: list[int] = []
    cursor = None
    next_id = 51
    while True:
        page = await store.list_page("trades", ListQuery(limit=8, cursor=cursor))
        seen.extend(row["id"] for row in page.items)
        if next_id <= 80:  # rows keep arriving between pages
            await add_trades(store, 5, first_id=next_id)
            next_id += 5
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen))
    assert set(range(1, 51)) <= set(seen)  # every row there at the start
    assert seen == sorted(seen)


async def test_events_and_metrics_pages(store: Store) -> None:
    for n in range(30):
        store.record_event("trade" if n % 2 else "auction_open", ts_ms=5_000 + n, device_id=n % 3)
        store.record_metric("latency_ms", float(n), ts_ms=5_000 + n, labels={"n": n})
        store.record_metric("other", 1.0, ts_ms=5_000 + n)
    # written behind: a list read flushes the queue first
    trades = await walk(store, "events", ListQuery(filters={"kind": ["trade"]}, limit=4))
    assert len(trades) == 15 and all(row["kind"] == "trade" for row in trades)
    seqs = [row["seq"] for row in trades]
    assert seqs == sorted(seqs)
    ranged = await walk(store, "events", ListQuery(from_ms=5_010, to_ms=5_015, sort="time"))
    assert [row["ts_ms"] for row in ranged] == list(range(5_010, 5_015))
    every = await walk(store, "events", ListQuery(limit=100))
    after = await store.list_page("events", ListQuery(after_key=every[9]["seq"]))
    assert after.items == every[10:]  # after_key: events after a seq (as after_seq does)
    latency = await walk(
        store, "metrics", ListQuery(filters={"name": ["latency_ms"]}, order="desc", limit=7)
    )
    assert [row["value"] for row in latency] == [float(n) for n in reversed(range(30))]
    assert latency[0]["labels"] == {"n": 29}


async def test_bad_filters_and_tampered_cursors_are_refused(store: Store) -> None:
    await add_trades(store, 30)
    page = await store.list_page("trades", ListQuery(limit=5, filters={"status": ["verified"]}))
    cursor = page.next_cursor
    assert cursor is not None
    body, _, digest = cursor.partition(".")
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    bad_cursors = [
        f"{flipped}.{digest}", cursor[:-2], "garbage", "", f"{body}.", cursor + "x",
    ]
    for bad in bad_cursors:
        with pytest.raises(InvalidQueryError, match="cursor"):
            await store.list_page(
                "trades", ListQuery(limit=5, filters={"status": ["verified"]}, cursor=bad)
            )
    # a genuine cursor used with other filters or another sort
    with pytest.raises(InvalidQueryError, match="another query"):
        await store.list_page("trades", ListQuery(limit=5, cursor=cursor))
    with pytest.raises(InvalidQueryError, match="another query"):
        await store.list_page(
            "trades", ListQuery(limit=5, filters={"status": ["verified"]}, sort="time",
                                cursor=cursor)
        )
    with pytest.raises(InvalidQueryError, match="another query"):
        await store.list_page("auctions", ListQuery(limit=5, cursor=cursor))
    for bad_query, message in (
        (ListQuery(filters={"status": ["settled"]}), "status must be one of"),
        (ListQuery(filters={"colour": ["red"]}), "cannot be filtered by 'colour'"),
        (ListQuery(filters={"device_id": ["x"]}), "device_id must be an integer"),
        (ListQuery(sort="price_mc"), "sort must be one of"),
        (ListQuery(order="up"), "order must be one of"),
        (ListQuery(limit=0), "limit must be"),
        (ListQuery(limit=1001), "limit must be"),
        (ListQuery(from_ms=-1), "from_ms"),
        (ListQuery(to_ms=2**63), "to_ms"),
        (ListQuery(filters={"device_id": [2**63]}), "device_id must be an integer"),
        (ListQuery(filters={"status": []}), "list of 1..100 values"),
        (ListQuery(filters={"status": "verified"}), "list of 1..100 values"),
        (ListQuery(filters={"device_id": list(range(101))}), "list of 1..100 values"),
    ):
        with pytest.raises(InvalidQueryError, match=message):
            await store.list_page("trades", bad_query)
    with pytest.raises(InvalidQueryError, match="no listing"):
        await store.list_page("users", ListQuery())


async def test_an_export_reads_the_store_in_pages(store: Store) -> None:
    await add_trades(store, 10_000)
    before = store.stats.get("list_page_reads", 0)
    count = 0
    largest_page = 0
    previous = 0
    async for rows in store.iter_pages("trades", ListQuery(), page_rows=500):
        largest_page = max(largest_page, len(rows))
        assert rows[0]["id"] == previous + 1
        previous = rows[-1]["id"]
        count += len(rows)
    reads = store.stats["list_page_reads"] - before
    assert count == 10_000 and previous == 10_000
    assert largest_page == 500 and reads == 20  # 20 pages; the last one says there is no more


async def test_settlements_list_and_auction_bids(store: Store) -> None:
    assert (await store.list_page("settlements", ListQuery())).as_dict() == {
        "items": [], "next_cursor": None
    }
    await add_trades(store, 3)
    await store.resolve_trade(1, "verified")  # trade 1 is 'unverified': it can still be decided
    page = await store.list_page("settlements", ListQuery(filters={"status": ["pending"]}))
    assert [row["trade_id"] for row in page.items] == [1]
    store.record_bid(auction_id=1, bidder_id=1001, price_mc=11_000, energy_wh=1000, round=1,
                     outcome="sent", reason=None, ts_ms=7)
    store.record_bid(auction_id=2, bidder_id=1002, price_mc=11_000, energy_wh=1000, round=1,
                     outcome="sent", reason=None, ts_ms=8)
    bids = await store.auction_bids(1)
    assert [(bid["auction_id"], bid["bidder_id"]) for bid in bids] == [(1, 1001)]
    auction = await store.get_auction_row(1)
    assert auction is not None and auction["status"] == "cleared"
    assert await store.get_auction_row(99) is None
