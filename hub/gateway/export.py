"""CSV export of a list query, streamed: the store is read one keyset page at a time and each
page is written out before the next is read, so an export of any size holds one page."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog

from hub.store import ListQuery, Store

__all__ = ["EXPORT_PAGE_ROWS", "csv_export"]

log = structlog.get_logger(__name__)

EXPORT_PAGE_ROWS = 500


def _cell(value: Any) -> Any:
    """A CSV cell: JSON objects (payloads, labels) as compact JSON, None as empty."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return value


def _csv_text(rows: Sequence[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 line ends, quoting as needed
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


async def csv_export(
    store: Store, listing: str, query: ListQuery, *, page_rows: int = EXPORT_PAGE_ROWS
) -> AsyncIterator[bytes]:
    """The CSV of every row of `query` as a byte stream: the header, then one chunk per page.

    The first page is read before this returns, so a bad filter raises InvalidQueryError here
    (the caller answers 400) instead of breaking a response already under way.
    """
    columns = store.listing(listing).columns
    pages = store.iter_pages(listing, query, page_rows=page_rows)
    first = await anext(pages, None)

    async def chunks() -> AsyncIterator[bytes]:
        yield _csv_text([columns])
        if first is None:
            return
        yield _csv_text([[_cell(row[name]) for name in columns] for row in first])
        try:
            async for rows in pages:
                yield _csv_text([[_cell(row[name]) for name in columns] for row in rows])
        except Exception:
            # headers are sent: the client sees a short file (no final chunk); say why here
            log.exception("CSV export stopped early", listing=listing)
            raise

    return chunks()
