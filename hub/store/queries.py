"""Read-only list queries for the API: filters, sorting and keyset (cursor) pagination over
auctions, trades, settlements, events and metrics, and paged reads for streamed exports."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from hub.store.errors import InvalidValueError
from hub.store.models import (
    ALERT_KINDS,
    ALERT_SEVERITIES,
    ALERT_STATES,
    ALERTS,
    AUCTION_STATUSES,
    AUCTIONS,
    BIDS,
    EVENTS,
    METRICS,
    SETTLEMENT_STATUSES,
    SETTLEMENTS,
    TRADE_STATUSES,
    TRADES,
)
from hub.store.parts import StoreParts

__all__ = [
    "LISTINGS",
    "MAX_FILTER_VALUES",
    "MAX_PAGE_ROWS",
    "SORT_KEYS",
    "SORT_ORDERS",
    "InvalidQueryError",
    "ListQueries",
    "ListQuery",
    "Listing",
    "Page",
]

MAX_PAGE_ROWS = 1000
MAX_FILTER_VALUES = 100  # values of one filter (an IN list): a query stays one index probe each
SORT_KEYS = ("id", "time")  # id: the listing's unique key; time: (time column, key)
SORT_ORDERS = ("asc", "desc")
_CURSOR_VERSION = 1
# Cursors carry a digest so a changed or truncated one is refused (400), not silently read as
# another position. It is not a secret: a cursor grants nothing the filters do not.
_CURSOR_DIGEST_KEY = b"etp-list-cursor-v1"
_INT64 = 2**63


class InvalidQueryError(InvalidValueError):
    """A filter, sort or cursor of a list query is not acceptable (the message says which)."""


@dataclass(frozen=True)
class Listing:
    """One listable table: its unique, increasing key, its time column, what may be filtered
    (column -> int or str, with the allowed values when the set is closed) and the columns
    a row shows, in order (the CSV header)."""

    name: str
    table: sa.Table
    key: str
    time: str
    filters: Mapping[str, tuple[type, tuple[str, ...] | None]]
    columns: tuple[str, ...]
    written_behind: bool = False  # queued rows are flushed before a read (read-your-writes)


LISTINGS: dict[str, Listing] = {
    listing.name: listing
    for listing in (
        Listing(
            "auctions",
            AUCTIONS,
            key="id",
            time="opened_ms",
            filters={
                "device_id": (int, None),
                "status": (str, AUCTION_STATUSES),
                "mechanism": (str, None),
                "winner_id": (int, None),
            },
            columns=tuple(AUCTIONS.c.keys()),
        ),
        Listing(
            "trades",
            TRADES,
            key="id",
            time="confirmed_ms",
            filters={
                "device_id": (int, None),
                "bidder_id": (int, None),
                "status": (str, TRADE_STATUSES),
                "auction_id": (int, None),
            },
            # the evidence frames are bytes for disputes, not for listing
            columns=tuple(c.name for c in TRADES.c if not c.name.startswith("evidence_")),
        ),
        Listing(
            "settlements",
            SETTLEMENTS,
            key="trade_id",
            time="updated_ms",
            filters={"status": (str, SETTLEMENT_STATUSES), "trade_id": (int, None)},
            columns=tuple(SETTLEMENTS.c.keys()),
        ),
        Listing(
            "events",
            EVENTS,
            key="seq",
            time="ts_ms",
            filters={"kind": (str, None), "device_id": (int, None), "auction_id": (int, None)},
            columns=("seq", "kind", "ts_ms", "device_id", "auction_id", "payload"),
            written_behind=True,
        ),
        Listing(
            "metrics",
            METRICS,
            key="id",
            time="ts_ms",
            filters={"name": (str, None)},
            columns=("id", "name", "value", "labels", "ts_ms"),
            written_behind=True,
        ),
        Listing(
            "alerts",
            ALERTS,
            key="id",
            time="raised_ms",
            filters={
                "state": (str, ALERT_STATES),
                "kind": (str, ALERT_KINDS),
                "severity": (str, ALERT_SEVERITIES),
                "device_id": (int, None),
            },
            columns=tuple(ALERTS.c.keys()),
        ),
    )
}


@dataclass(frozen=True)
class ListQuery:
    """What a client asked for: equality filters (each column one of several values), a time
    range on the listing's time column (`from_ms` inclusive, `to_ms` exclusive), the sort,
    the page size and where to resume (the `next_cursor` of the previous page)."""

    filters: Mapping[str, Sequence[int | str]] = field(default_factory=dict)
    from_ms: int | None = None
    to_ms: int | None = None
    sort: str = "id"
    order: str = "asc"
    limit: int = 100
    cursor: str | None = None
    after_key: int | None = None  # e.g. events' after_seq: start after this key (sort by id)


@dataclass(frozen=True)
class Page:
    """One page: its rows (JSON-ready dicts) and the cursor of the next page, None at the end
    (more rows may arrive later: resume from the last page's cursor then)."""

    items: list[dict[str, Any]]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        """The API's response body."""
        return {"items": self.items, "next_cursor": self.next_cursor}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digest(body: bytes) -> str:
    return _b64(hmac.new(_CURSOR_DIGEST_KEY, body, hashlib.blake2b).digest()[:12])


def _filters_fingerprint(listing: Listing, query: ListQuery) -> str:
    """Short hash of everything that selects rows: a cursor only resumes the same query."""
    shape = {
        "listing": listing.name,
        "filters": {name: sorted(map(str, values)) for name, values in query.filters.items()},
        "from_ms": query.from_ms,
        "to_ms": query.to_ms,
        "sort": query.sort,
        "order": query.order,
    }
    return hashlib.blake2b(json.dumps(shape, sort_keys=True).encode(), digest_size=6).hexdigest()


def encode_cursor(listing: Listing, query: ListQuery, position: list[int]) -> str:
    """An opaque cursor resuming `query` after `position` ([key] or [time, key])."""
    body = json.dumps(
        {"v": _CURSOR_VERSION, "q": _filters_fingerprint(listing, query), "p": position},
        separators=(",", ":"),
    ).encode()
    return f"{_b64(body)}.{_digest(body)}"


def decode_cursor(listing: Listing, query: ListQuery, cursor: str) -> list[int]:
    """The position in `cursor`; InvalidQueryError if it was altered, is not one of ours, or
    was made for another listing, other filters or another sort."""
    body_text, dot, digest = cursor.partition(".")
    try:
        body = _unb64(body_text)
        valid = bool(dot) and hmac.compare_digest(digest, _digest(body))
        content = json.loads(body) if valid else None
    except (ValueError, UnicodeDecodeError):
        content = None
    if not isinstance(content, dict) or content.get("v") != _CURSOR_VERSION:
        raise InvalidQueryError(
            "cursor is not valid: pass the next_cursor of a previous page unchanged"
        )
    if content.get("q") != _filters_fingerprint(listing, query):
        raise InvalidQueryError(
            "cursor belongs to another query: keep the filters, time range and sort of the "
            "request that returned it"
        )
    position = content.get("p")
    size = 1 if query.sort == "id" else 2
    if (
        not isinstance(position, list)
        or len(position) != size
        or not all(type(value) is int and -_INT64 <= value < _INT64 for value in position)
    ):
        raise InvalidQueryError("cursor is not valid: its position is malformed")
    return position


def _check_query(listing: Listing, query: ListQuery) -> None:
    if query.sort not in SORT_KEYS:
        raise InvalidQueryError(f"sort must be one of {SORT_KEYS}, not {query.sort!r}")
    if query.order not in SORT_ORDERS:
        raise InvalidQueryError(f"order must be one of {SORT_ORDERS}, not {query.order!r}")
    if not 1 <= query.limit <= MAX_PAGE_ROWS:
        raise InvalidQueryError(f"limit must be 1..{MAX_PAGE_ROWS}, not {query.limit}")
    for name in ("from_ms", "to_ms", "after_key"):
        value = getattr(query, name)
        if value is not None and not (type(value) is int and 0 <= value < _INT64):
            raise InvalidQueryError(f"{name} must be an integer >= 0, not {value!r}")
    if query.after_key is not None and (query.sort != "id" or query.order != "asc"):
        raise InvalidQueryError("after_key pages by key ascending only (sort=id, order=asc)")
    for name, values in query.filters.items():
        if name not in listing.filters:
            raise InvalidQueryError(
                f"{listing.name} cannot be filtered by {name!r}: use one of "
                f"{sorted(listing.filters)}"
            )
        kind, choices = listing.filters[name]
        if isinstance(values, str | bytes) or not 1 <= len(values) <= MAX_FILTER_VALUES:
            raise InvalidQueryError(
                f"{name} takes a list of 1..{MAX_FILTER_VALUES} values, not {values!r:.80}"
            )
        for value in values:
            if kind is int and not (type(value) is int and -_INT64 <= value < _INT64):
                raise InvalidQueryError(f"{name} must be an integer, not {value!r}")
            if kind is str and not isinstance(value, str):
                raise InvalidQueryError(f"{name} must be text, not {value!r}")
            if choices is not None and value not in choices:
                raise InvalidQueryError(f"{name} must be one of {choices}, not {value!r}")


def _row_dict(listing: Listing, row: sa.Row[Any]) -> dict[str, Any]:
    values = row._mapping
    item = {name: values[name] for name in listing.columns}
    for json_column in ("payload", "labels", "detail"):
        if json_column in item and item[json_column] is None:
            item[json_column] = {}
    return item


def page_statement(
    listing: Listing, query: ListQuery, position: list[int] | None
) -> sa.Select[Any]:
    """The SELECT of one page (limit + 1 rows: the extra one says whether a next page exists);
    keyset pagination, never OFFSET."""
    table = listing.table
    key = table.c[listing.key]
    time = table.c[listing.time]
    statement = sa.select(table)
    for name, values in query.filters.items():
        distinct = sorted(set(values), key=str)
        column = table.c[name]
        statement = statement.where(
            column == distinct[0] if len(distinct) == 1 else column.in_(distinct)
        )
    if query.from_ms is not None:
        statement = statement.where(time >= query.from_ms)
    if query.to_ms is not None:
        statement = statement.where(time < query.to_ms)
    if query.after_key is not None:
        statement = statement.where(key > query.after_key)
    descending = query.order == "desc"
    if query.sort == "id":
        if position is not None:
            statement = statement.where(key < position[0] if descending else key > position[0])
        order_by: list[Any] = [key.desc() if descending else key.asc()]
    else:
        if position is not None:
            after = sa.tuple_(time, key)
            bound = sa.tuple_(sa.literal(position[0]), sa.literal(position[1]))
            statement = statement.where(after < bound if descending else after > bound)
        order_by = (
            [time.desc(), key.desc()] if descending else [time.asc(), key.asc()]
        )
    return statement.order_by(*order_by).limit(query.limit + 1)


class ListQueries(StoreParts):
    """Pages of the store's tables for the API and its exports (read-only)."""

    def listing(self, name: str) -> Listing:
        """The listing called `name` (auctions, trades, settlements, events, metrics)."""
        try:
            return LISTINGS[name]
        except KeyError:
            raise InvalidQueryError(
                f"no listing {name!r}: use one of {sorted(LISTINGS)}"
            ) from None

    async def list_page(self, name: str, query: ListQuery) -> Page:
        """One page of `name` for `query`; InvalidQueryError for a bad filter, sort or cursor."""
        listing = self.listing(name)
        _check_query(listing, query)
        position = None if query.cursor is None else decode_cursor(listing, query, query.cursor)
        if listing.written_behind:
            await self._writes.flush_before_read()
        rows = await self._db.fetch(page_statement(listing, query, position))
        self.stats["list_page_reads"] = self.stats.get("list_page_reads", 0) + 1
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        next_cursor = None
        if more:
            last = rows[-1]._mapping
            at = (
                [last[listing.key]]
                if query.sort == "id"
                else [last[listing.time], last[listing.key]]
            )
            next_cursor = encode_cursor(listing, query, at)
        return Page([_row_dict(listing, row) for row in rows], next_cursor)

    async def iter_pages(
        self, name: str, query: ListQuery, *, page_rows: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every row of `query` (from its cursor on), `page_rows` at a time: one read per page,
        so an export of any size holds one page in memory."""
        cursor = query.cursor
        while True:
            page = await self.list_page(
                name,
                ListQuery(
                    filters=query.filters,
                    from_ms=query.from_ms,
                    to_ms=query.to_ms,
                    sort=query.sort,
                    order=query.order,
                    limit=page_rows,
                    cursor=cursor,
                    after_key=query.after_key,
                ),
            )
            if page.items:
                yield page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def auction_bids(
        self, auction_id: int, *, limit: int = MAX_PAGE_ROWS
    ) -> list[dict[str, Any]]:
        """The bids of one auction in the order they were recorded (at most `limit`)."""
        await self._writes.flush_before_read()
        rows = await self._db.fetch(
            sa.select(BIDS).where(BIDS.c.auction_id == auction_id).order_by(BIDS.c.id).limit(limit)
        )
        return [dict(row._mapping) for row in rows]

    async def get_auction_row(self, auction_id: int) -> dict[str, Any] | None:
        """One auction as the API shows it, or None."""
        rows = await self._db.fetch(sa.select(AUCTIONS).where(AUCTIONS.c.id == auction_id))
        return dict(rows[0]._mapping) if rows else None
