"""The viewer's REST resources under /api/v1: batteries, aggregators, auctions (with bids),
trades, settlements, metrics, and CSV exports of trades, auctions and events — filtered, sorted
and cursor-paged by the store's list queries (hub.store.queries)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from litestar import get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException, ServiceUnavailableException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, Parameter
from litestar.response import Stream
from litestar.types import Guard

from hub.gateway.auth import SECURITY
from hub.gateway.export import csv_export
from hub.store import InvalidQueryError, ListQuery, Store
from hub.store.queries import MAX_PAGE_ROWS

__all__ = ["ResourceSource", "Window", "events_in_range", "ids", "resource_handlers"]


class ResourceSource(Protocol):
    """What the resources read from the running hub."""

    @property
    def store(self) -> Store | None:
        """The hub's store (None only before it started)."""

    def devices(self) -> list[dict[str, Any]]:
        """Known batteries with their last state, by device id."""

    def aggregators(self) -> list[dict[str, Any]]:
        """The site's aggregators: configuration and standing."""


@dataclass(frozen=True)
class Window:
    """Time range, sort and page of a list request (query parameters shared by the lists)."""

    from_ms: int | None
    to_ms: int | None
    sort: str
    order: str
    limit: int
    cursor: str | None

    def query(self, filters: Mapping[str, Sequence[int | str] | None]) -> ListQuery:
        """The store query for this window and these filters (None: not filtered)."""
        return ListQuery(
            filters={name: values for name, values in filters.items() if values},
            from_ms=self.from_ms,
            to_ms=self.to_ms,
            sort=self.sort,
            order=self.order,
            limit=self.limit,
            cursor=self.cursor,
        )


FromMs = Annotated[
    int | None,
    Parameter(ge=0, description="only rows at or after this time (ms since the epoch, UTC) "
              "on the list's time column"),
]
ToMs = Annotated[
    int | None, Parameter(ge=0, description="only rows before this time (ms, exclusive)")
]
Sort = Annotated[
    Literal["id", "time"],
    Parameter(description="id: by the row's key; time: by its time column, then key"),
]
Order = Annotated[Literal["asc", "desc"], Parameter(description="sort direction")]
Limit = Annotated[int, Parameter(ge=1, le=MAX_PAGE_ROWS, description="rows per page")]
Cursor = Annotated[
    str | None,
    Parameter(max_length=512, description="next_cursor of the previous page (opaque; only "
              "valid with the same filters, time range and sort)"),
]


def window(
    from_ms: FromMs = None,
    to_ms: ToMs = None,
    sort: Sort = "id",
    order: Order = "asc",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Window:
    """The shared list parameters of a request."""
    return Window(from_ms, to_ms, sort, order, limit, cursor)


def export_window(
    from_ms: FromMs = None, to_ms: ToMs = None, sort: Sort = "id", order: Order = "asc"
) -> Window:
    """The shared parameters of a CSV export (every matching row: no page size, no cursor)."""
    return Window(from_ms, to_ms, sort, order, MAX_PAGE_ROWS, None)


def ids(description: str) -> Any:
    """A list query parameter's description (repeat it for several values)."""
    return Parameter(description=f"{description} (repeat for several)")


DeviceIds = Annotated[list[int] | None, ids("only these batteries")]
BidderIds = Annotated[list[int] | None, ids("only these bidders (aggregator ids)")]
AuctionIds = Annotated[list[int] | None, ids("only these auctions")]
TradeStatuses = Annotated[
    list[Literal["recorded", "verified", "unverified", "void"]] | None,
    ids("only trades in these states"),
]
AuctionStatuses = Annotated[
    list[Literal["open", "cleared", "no_sale", "terminated"]] | None,
    ids("only auctions in these states"),
]
SettlementStatuses = Annotated[
    list[Literal["pending", "submitted", "settled", "failed"]] | None,
    ids("only settlements in these states"),
]
Kinds = Annotated[list[str] | None, ids("only events of these kinds")]


def resource_handlers(source: ResourceSource, guards: list[Guard]) -> list[HTTPRouteHandler]:
    """The resource routes, each behind `guards` (the viewer guard)."""
    def store() -> Store:
        current = source.store
        if current is None or not current.started:
            raise ServiceUnavailableException(detail="the hub's store is not running")
        return current

    async def page(listing: str, query: ListQuery) -> dict[str, Any]:
        try:
            return (await store().list_page(listing, query)).as_dict()
        except InvalidQueryError as exc:
            raise ValidationException(detail=str(exc)) from None

    async def export(listing: str, query: ListQuery) -> Stream:
        try:
            chunks = await csv_export(store(), listing, query)
        except InvalidQueryError as exc:
            raise ValidationException(detail=str(exc)) from None
        return Stream(
            chunks,
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{listing}.csv"'},
        )

    lists = {"window": Provide(window, sync_to_thread=False)}
    exports = {"window": Provide(export_window, sync_to_thread=False)}
    common: dict[str, Any] = {"guards": guards, "security": SECURITY}

    @get("/api/v1/batteries", sync_to_thread=False, **common)
    def batteries(
        online: Annotated[bool | None, Parameter(description="only online (or offline) "
                                                 "batteries")] = None,
        health: Annotated[list[int] | None, ids("only these health codes")] = None,
        limit: Limit = 100,
        cursor: Annotated[str | None, Parameter(max_length=32, description="next_cursor "
                                                "of the previous page")] = None,
    ) -> dict[str, Any]:
        """The registry's batteries with their last reported state, by device id; `online` is
        null while the broker is out of reach (their last known state, not a live one)."""
        after = -1
        if cursor is not None:
            if not (cursor.startswith("d") and cursor[1:].isdigit() and len(cursor) <= 12):
                raise ValidationException(detail="cursor is not valid: pass the next_cursor "
                                          "of a previous page unchanged")
            after = int(cursor[1:])
        rows = [
            row for row in source.devices()
            if row["device_id"] > after
            and (online is None or row["online"] is online)
            and (not health or row["health"] in health)
        ]
        items = rows[:limit]
        more = len(rows) > limit
        return {"items": items, "next_cursor": f"d{items[-1]['device_id']}" if more else None}

    @get("/api/v1/aggregators", sync_to_thread=False, **common)
    def aggregators() -> dict[str, Any]:
        """Every aggregator (buyer) of the site: its configuration and its standing (spent,
        bought, wins, losses, success rate) in the current trading period and in total."""
        return {"items": source.aggregators(), "next_cursor": None}

    @get("/api/v1/auctions", dependencies=lists, **common)
    async def auctions(
        window: NamedDependency[Window],
        device_id: DeviceIds = None,
        status: AuctionStatuses = None,
        winner_id: BidderIds = None,
        mechanism: Annotated[list[str] | None, ids("only these mechanisms")] = None,
    ) -> dict[str, Any]:
        """Auctions, paged: `{"items": [...], "next_cursor": "..." | null}`; time is
        `opened_ms`."""
        return await page("auctions", window.query({
            "device_id": device_id, "status": status, "winner_id": winner_id,
            "mechanism": mechanism,
        }))

    @get("/api/v1/auctions/{auction_id:int}", **common)
    async def auction(auction_id: FromPath[int]) -> dict[str, Any]:
        """One auction with its bids (in the order recorded) and its trade (or null)."""
        current = store()
        row = await current.get_auction_row(auction_id)
        if row is None:
            raise NotFoundException(detail=f"no auction {auction_id}")
        trade = await current.get_trade(auction_id)
        return {
            **row,
            "bids": await current.auction_bids(auction_id),
            "trade": None if trade is None else {
                name: getattr(trade, name) for name in trade.__dataclass_fields__
            },
        }

    @get("/api/v1/trades", dependencies=lists, **common)
    async def trades(
        window: NamedDependency[Window],
        status: TradeStatuses = None,
        device_id: DeviceIds = None,
        bidder_id: BidderIds = None,
        auction_id: AuctionIds = None,
    ) -> dict[str, Any]:
        """Trades, paged; time is `confirmed_ms`. Only `verified` trades count (see status)."""
        return await page("trades", window.query({
            "status": status, "device_id": device_id, "bidder_id": bidder_id,
            "auction_id": auction_id,
        }))

    @get("/api/v1/settlements", dependencies=lists, **common)
    async def settlements(
        window: NamedDependency[Window],
        status: SettlementStatuses = None,
        trade_id: Annotated[list[int] | None, ids("only these trades")] = None,
    ) -> dict[str, Any]:
        """The settlement outbox, paged (one row per verified trade); time is `updated_ms`."""
        return await page("settlements", window.query({"status": status, "trade_id": trade_id}))

    @get("/api/v1/metrics", dependencies=lists, **common)
    async def metrics(
        window: NamedDependency[Window],
        name: Annotated[list[str] | None, ids("only these metrics")] = None,
    ) -> dict[str, Any]:
        """Stored metric samples, paged; time is `ts_ms`."""
        return await page("metrics", window.query({"name": name}))

    @get("/api/v1/trades.csv", dependencies=exports, **common)
    async def trades_csv(
        window: NamedDependency[Window],
        status: TradeStatuses = None,
        device_id: DeviceIds = None,
        bidder_id: BidderIds = None,
        auction_id: AuctionIds = None,
    ) -> Stream:
        """Every matching trade as CSV, streamed (the store is read a page at a time)."""
        return await export("trades", window.query({
            "status": status, "device_id": device_id, "bidder_id": bidder_id,
            "auction_id": auction_id,
        }))

    @get("/api/v1/auctions.csv", dependencies=exports, **common)
    async def auctions_csv(
        window: NamedDependency[Window],
        device_id: DeviceIds = None,
        status: AuctionStatuses = None,
        winner_id: BidderIds = None,
        mechanism: Annotated[list[str] | None, ids("only these mechanisms")] = None,
    ) -> Stream:
        """Every matching auction as CSV, streamed."""
        return await export("auctions", window.query({
            "device_id": device_id, "status": status, "winner_id": winner_id,
            "mechanism": mechanism,
        }))

    @get("/api/v1/events.csv", dependencies=exports, **common)
    async def events_csv(
        window: NamedDependency[Window],
        kind: Kinds = None,
        device_id: DeviceIds = None,
        auction_id: AuctionIds = None,
    ) -> Stream:
        """Every matching event as CSV, streamed (payload as JSON); time is `ts_ms`."""
        return await export("events", window.query({
            "kind": kind, "device_id": device_id, "auction_id": auction_id,
        }))

    return [
        batteries, aggregators, auctions, auction, trades, settlements, metrics, trades_csv,
        auctions_csv, events_csv,
    ]


async def events_in_range(
    source: ResourceSource,
    after_seq: int,
    limit: int,
    kinds: list[str] | None,
    from_ms: int | None,
    to_ms: int | None,
) -> list[dict[str, Any]]:
    """/api/v1/events with a time range: the same rows and shape as without one (seq order
    after `after_seq`), from the store's list query on `ts_ms`."""
    current = source.store
    if current is None or not current.started:
        raise ServiceUnavailableException(detail="the hub's store is not running")
    try:
        page = await current.list_page("events", ListQuery(
            filters={"kind": kinds} if kinds else {}, from_ms=from_ms, to_ms=to_ms,
            limit=limit, after_key=after_seq,
        ))
    except InvalidQueryError as exc:
        raise ValidationException(detail=str(exc)) from None
    return page.items
